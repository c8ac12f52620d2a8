"""The tracker protocol: observers of a search (console progress, W&B, ...).

The run directory's JSONL is written by the manager itself and is always on; trackers are optional views
and must never be able to stop a run (the manager calls them through :func:`notify`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evomerge.registry import Registry

if TYPE_CHECKING:
    from evomerge.population.archive import Archive, Entry
    from evomerge.population.manager import PopulationManager
    from evomerge.types import Candidate


class Tracker:
    """Base class with no-op hooks; subclasses override what they need."""

    name = "tracker"

    def on_start(self, manager: PopulationManager) -> None:
        pass

    def on_evaluation(self, entry: Entry, archive: Archive, manager: PopulationManager) -> None:
        pass

    def on_generation(self, manager: PopulationManager, batch: Sequence[Candidate]) -> None:
        pass

    def on_finish(self, manager: PopulationManager, reason: str) -> None:
        pass

    def close(self) -> None:
        pass


TRACKERS: Registry[type[Tracker]] = Registry("tracker", entry_point_group="evomerge.trackers")


def notify(trackers: Sequence[Tracker], hook: str, *args: Any) -> None:
    """Call ``hook`` on every tracker; a tracker that raises is reported once and then dropped."""
    for tracker in list(trackers):
        try:
            getattr(tracker, hook)(*args)
        except Exception as exc:
            print(f"warning: tracker {tracker.name!r} failed in {hook}: {exc}; disabling it", file=sys.stderr)
            if isinstance(trackers, list):
                trackers.remove(tracker)
