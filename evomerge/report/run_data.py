"""A finished (or running, or crashed) run directory, read back for reporting.

Only the run directory is read: the resolved ``config.yaml`` (for the objectives' names and directions),
``evaluations.jsonl`` (the archive, rebuilt as on resume) and ``status.json``. Nothing is evaluated and no
lock is taken, so a report can be drawn while the search is still running.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.config import SearchConfig, parse_config
from evomerge.errors import RunStateError
from evomerge.population.archive import Archive, Entry
from evomerge.population.records import restore_archive
from evomerge.population.run_dir import RunDir
from evomerge.types import Objective
from evomerge.validation import load_yaml


@dataclass
class RunData:
    run_dir: RunDir
    config: SearchConfig
    archive: Archive
    status: dict[str, Any]
    lines: int
    """Lines of evaluations.jsonl (cache hits and subset-fidelity scores included)."""
    elapsed: float
    """Search wall time (seconds, summed over resumes) at the last recorded evaluation."""

    @property
    def objectives(self) -> list[Objective]:
        return self.archive.objectives

    @property
    def evaluations(self) -> int:
        """Candidates evaluated afresh (cache hits excluded): what the evaluation budget counts."""
        return sum(1 for e in self.archive if e.cached_from is None)

    @property
    def cache_hits(self) -> int:
        return sum(1 for e in self.archive if e.cached_from is not None)

    def best(self) -> Entry | None:
        return self.archive.best()

    def top(self, n: int) -> list[Entry]:
        return self.archive.ranked()[:n]


def load_run(path: str | Path) -> RunData:
    """Read a run directory; a folder that is not one raises :class:`RunStateError` naming it."""
    rd = RunDir(path)
    if not rd.path.is_dir():
        raise RunStateError(f"{path}: no such run directory")
    if not rd.exists():
        raise RunStateError(f"{path}: not a run directory (no config.yaml)")
    config = parse_config(load_yaml(rd.config_file), source=str(rd.config_file))
    archive = Archive(_objectives(config, rd))
    records = list(rd.records())
    restore_archive(archive, records)
    elapsed = max((float(r.get("elapsed") or 0.0) for r in records), default=0.0)
    return RunData(rd, config, archive, rd.status(), len(records), elapsed)


def _objectives(config: SearchConfig, rd: RunDir) -> list[Objective]:
    """The fitness suite's objectives: names and directions, known from its config alone."""
    from evomerge.search import objectives_of

    return objectives_of(config, rd.base_dir)
