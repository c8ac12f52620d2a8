"""Numbers derived from a run's archive: fitness series, best-so-far curves, rankings, status counts.

Pure functions of :class:`~evomerge.population.archive.Entry` lists, shared by ``evomerge report`` and the
W&B tracker so that both show the same numbers. "Evaluation number" is an entry's position in the archive
plus one (the order candidates were first recorded), which is also the budget's count for fresh results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evomerge.pareto import pareto_mask
from evomerge.population.archive import Entry
from evomerge.types import Objective


def running_best(values: Sequence[float] | np.ndarray, objective: Objective) -> np.ndarray:
    """The best value seen up to each position, in the objective's own direction (NaN before the first)."""
    signed = np.array([objective.signed(float(v)) for v in values], dtype=np.float64)
    if signed.size == 0:
        return signed
    best = np.fmax.accumulate(np.where(np.isnan(signed), -np.inf, signed))
    best = np.where(np.isneginf(best), np.nan, best)
    return best if objective.direction == "maximize" else -best


def is_scored(entry: Entry, objective: Objective) -> bool:
    """A full-fidelity successful result that carries this objective."""
    ev = entry.evaluation
    return ev.ok and ev.fidelity == "full" and objective.name in ev.objectives


@dataclass(frozen=True)
class FitnessSeries:
    """One strategy's scored points of one objective, in order, with their best-so-far curve."""

    strategy: str
    x: np.ndarray
    """Evaluation numbers."""
    y: np.ndarray
    best: np.ndarray


def fitness_series(entries: Sequence[Entry], objective: Objective) -> list[FitnessSeries]:
    """Scored points per strategy, in order of first appearance."""
    points: dict[str, tuple[list[int], list[float]]] = {}
    for entry in entries:
        if is_scored(entry, objective):
            xs, ys = points.setdefault(entry.candidate.strategy or "-", ([], []))
            xs.append(entry.index + 1)
            ys.append(float(entry.evaluation.objectives[objective.name]))
    return [
        FitnessSeries(name, np.array(xs, dtype=np.int64), np.array(ys, dtype=np.float64), running_best(ys, objective))
        for name, (xs, ys) in points.items()
    ]


def unscored_positions(entries: Sequence[Entry]) -> np.ndarray:
    """Evaluation numbers of failed, invalid and timed-out candidates (drawn as a rug under the curve)."""
    return np.array([e.index + 1 for e in entries if not e.evaluation.ok], dtype=np.int64)


def status_counts(entries: Sequence[Entry]) -> dict[str, int]:
    """Candidates per final status, ``ok`` first, then the others alphabetically."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.evaluation.status.value] = counts.get(e.evaluation.status.value, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])))


def scored_entries(entries: Sequence[Entry], objectives: Sequence[Objective]) -> list[Entry]:
    """The entries scored on every objective (the points a Pareto plot can place)."""
    return [e for e in entries if all(is_scored(e, o) for o in objectives)]


def objective_matrix(entries: Sequence[Entry], objectives: Sequence[Objective]) -> np.ndarray:
    """Raw objective values (rows = entries, columns = objectives); entries must all be scored."""
    return np.array([[float(e.evaluation.objectives[o.name]) for o in objectives] for e in entries], dtype=np.float64)


def pareto_front(entries: Sequence[Entry], objectives: Sequence[Objective]) -> list[Entry]:
    """Non-dominated scored candidates, best first on the first objective (then the next ones)."""
    scored = scored_entries(entries, objectives)
    if not scored:
        return []
    signed = np.array([[o.signed(float(e.evaluation.objectives[o.name])) for o in objectives] for e in scored])
    mask = pareto_mask(signed)
    front = [(tuple(-signed[i]), e.index, e) for i, e in enumerate(scored) if mask[i]]
    return [e for _, _, e in sorted(front, key=lambda t: (t[0], t[1]))]
