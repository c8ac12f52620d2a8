"""Helpers that turn a misspelt or refused option into one clear line.

Suite configs are frozen pydantic models with ``extra="forbid"``; these checks run before pydantic's so the
message can suggest the option the user probably meant, or say why an option that exists upstream
(in lm-eval's ``simple_evaluate``, say) is deliberately not available.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


def suggestion(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown_keys(
    data: Mapping[str, object], known: set[str], kind: str, refused: Mapping[str, str] | None = None
) -> None:
    """Raise ``ValueError`` naming the first key of ``data`` that is neither known nor allowed.

    ``refused`` maps keys that exist upstream but are not accepted to the reason why.
    """
    refused = refused or {}
    for key in data:
        if key in known:
            continue
        if key in refused:
            raise ValueError(f"{kind} {key!r} is not supported: {refused[key]}")
        raise ValueError(f"unknown {kind} {key!r}{suggestion(str(key), known)}; known: {', '.join(sorted(known))}")
