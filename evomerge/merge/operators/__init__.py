"""Built-in merge operators; importing this package registers them all."""

from evomerge.merge.operators import (  # noqa: F401
    breadcrumbs,
    consensus,
    dare,
    della,
    fisher,
    linear,
    model_stock,
    mwa,
    passthrough,
    regmean,
    slerp,
    spherical,
    task_arithmetic,
    ties,
)
