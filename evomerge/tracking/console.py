"""Console progress: evaluations done of the budget, best so far, throughput and ETA.

A live rich progress bar on a terminal; on a plain stream (CI logs, files) one line per generation or
every 10 evaluations, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from evomerge.tracking.base import TRACKERS, Tracker

if TYPE_CHECKING:
    from evomerge.population.archive import Archive, Entry
    from evomerge.population.manager import PopulationManager
    from evomerge.types import Candidate


class ConsoleTracker(Tracker):
    name = "console"

    def __init__(self, stream: object = None) -> None:
        self.console = Console(file=stream or sys.stderr, soft_wrap=True)  # type: ignore[arg-type]
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self._start = time.monotonic()
        self._done_at_start = 0
        self._last_line = 0

    def _status(self, manager: PopulationManager) -> str:
        archive = manager.archive
        best = archive.best()
        best_txt = "-" if best is None else ", ".join(f"{k}={v:.4g}" for k, v in best.evaluation.objectives.items())
        rate = (manager.state.evaluations - self._done_at_start) / max(1e-9, time.monotonic() - self._start)
        failed = sum(v for k, v in archive.counts().items() if k != "ok")
        return f"best {best_txt} ({best.candidate.uid if best else '-'}) | {rate * 60:.1f} eval/min | failed {failed}"

    def on_start(self, manager: PopulationManager) -> None:
        self._start = time.monotonic()
        self._done_at_start = manager.state.evaluations
        total = manager.budget.evaluations
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("search", total=total, completed=manager.state.evaluations, status="")
        else:
            resumed = f" (resuming at {manager.state.evaluations})" if manager.state.evaluations else ""
            self.console.print(f"search: {manager.strategy.name} on {manager.pool.capacity} evaluator(s), "
                               f"budget {total or '-'} evaluations{resumed}")

    def on_evaluation(self, entry: Entry, archive: Archive, manager: PopulationManager) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=manager.state.evaluations, status=self._status(manager))
        elif manager.state.evaluations - self._last_line >= 10:
            self._line(manager)

    def on_generation(self, manager: PopulationManager, batch: Sequence[Candidate]) -> None:
        if self.progress is None and manager.state.evaluations != self._last_line:
            self._line(manager)

    def _line(self, manager: PopulationManager) -> None:
        self._last_line = manager.state.evaluations
        total = manager.budget.evaluations
        self.console.print(f"  {manager.state.evaluations}/{total or '-'} evaluations | {self._status(manager)}")

    def on_finish(self, manager: PopulationManager, reason: str) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(f"search stopped: {reason}; {self._status(manager)}")


TRACKERS.register("console", ConsoleTracker)
