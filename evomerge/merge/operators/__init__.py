"""Built-in merge operators; importing this package registers them all."""

from evomerge.merge.operators import linear  # noqa: F401
