"""Bookkeeping of proposed-but-not-yet-told candidates, shared by the strategies.

``tell`` may deliver results in any order, in several calls, and (after a resume) results the strategy no
longer expects. :meth:`Pending.take` keeps only the uids it handed out, each once, and returns them in
*proposal* order, so a strategy's state after a tell never depends on the order of the results in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from evomerge.types import Evaluation

T = TypeVar("T")


def check_ask(n: int) -> None:
    """Reject a negative ``ask(n)``: a caller bug, never a user mistake."""
    if n < 0:
        raise ValueError(f"ask(n) needs n >= 0, got {n}")


class Pending(Generic[T]):
    """uid → payload of candidates awaiting their results."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[int, T]] = {}
        self._next = 0

    def add(self, uid: str, payload: T) -> None:
        self._items[uid] = (self._next, payload)
        self._next += 1

    def take(self, evaluations: Sequence[Evaluation]) -> list[tuple[Evaluation, T]]:
        """Remove and return the expected results in proposal order; unknown or repeated uids are ignored."""
        found: dict[str, tuple[int, Evaluation, T]] = {}
        for ev in evaluations:
            if ev.uid in self._items and ev.uid not in found:
                index, payload = self._items[ev.uid]
                found[ev.uid] = (index, ev, payload)
        for uid in found:
            del self._items[uid]
        return [(ev, payload) for _, ev, payload in sorted(found.values(), key=lambda item: item[0])]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, uid: object) -> bool:
        return uid in self._items

    def payloads(self) -> list[T]:
        return [payload for _, payload in sorted(self._items.values(), key=lambda item: item[0])]

    def state_dict(self) -> dict[str, Any]:
        return {"items": dict(self._items), "next": self._next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._items = dict(state["items"])
        self._next = int(state["next"])
