"""The archive: every evaluated candidate with its result and lineage, in evaluation order.

It is rebuilt from ``evaluations.jsonl`` on resume, answers the fitness cache (plan content hash → first
successful evaluation), ranks candidates for export and reports, and gives the Pareto front of
multi-objective runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from evomerge.pareto import pareto_mask
from evomerge.types import Candidate, Evaluation, Objective


@dataclass
class Entry:
    candidate: Candidate
    evaluation: Evaluation
    index: int
    cached_from: str | None = None

    def values(self, objectives: Sequence[Objective]) -> np.ndarray | None:
        if not self.evaluation.ok:
            return None
        try:
            return np.array([o.signed(float(self.evaluation.objectives[o.name])) for o in objectives])
        except KeyError:
            return None


class Archive:
    def __init__(self, objectives: Sequence[Objective]) -> None:
        self.objectives = list(objectives)
        self.entries: list[Entry] = []
        self._by_uid: dict[str, Entry] = {}
        self._by_hash: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __contains__(self, uid: object) -> bool:
        return uid in self._by_uid

    def get(self, uid: str) -> Entry | None:
        return self._by_uid.get(uid)

    def add(self, candidate: Candidate, evaluation: Evaluation, cached_from: str | None = None) -> tuple[Entry, bool]:
        """Add a result; a full-fidelity result replaces the subset one of the same candidate.

        Returns the entry and whether it is new (an upgrade from a subset score is not).
        """
        old = self._by_uid.get(candidate.uid)
        if old is not None:
            if old.evaluation.fidelity == "full" or evaluation.fidelity != "full":
                raise ValueError(f"candidate {candidate.uid} already has a {old.evaluation.fidelity} result")
            old.evaluation = evaluation
            if evaluation.ok:
                self._by_hash.setdefault(candidate.plan_hash, old)
            return old, False
        entry = Entry(candidate, evaluation, len(self.entries), cached_from)
        self.entries.append(entry)
        self._by_uid[candidate.uid] = entry
        if evaluation.ok and evaluation.fidelity == "full":
            self._by_hash.setdefault(candidate.plan_hash, entry)
        return entry, True

    def cached(self, plan_hash: str) -> Entry | None:
        """A successful full evaluation of an identical plan, if any (the fitness cache)."""
        return self._by_hash.get(plan_hash)

    # ------------------------------------------------------------------ ranking
    def scalar(self, entry: Entry) -> float | None:
        vals = entry.values(self.objectives)
        return None if vals is None else float(vals[0])

    def ranked(self) -> list[Entry]:
        """Successful full-fidelity entries, best first (by the first objective; ties: earlier first)."""
        ok = [e for e in self.entries if e.evaluation.fidelity == "full" and self.scalar(e) is not None]
        return sorted(ok, key=lambda e: (-(self.scalar(e) or 0.0), e.index))

    def best(self) -> Entry | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def best_value(self) -> float | None:
        best = self.best()
        return None if best is None else self.scalar(best)

    def pareto_front(self) -> list[Entry]:
        ok = [e for e in self.entries if e.evaluation.fidelity == "full" and e.values(self.objectives) is not None]
        if not ok:
            return []
        values = np.stack([e.values(self.objectives) for e in ok])  # type: ignore[misc]
        mask = pareto_mask(values)
        front = [e for e, keep in zip(ok, mask) if keep]
        return sorted(front, key=lambda e: tuple(-v for v in e.values(self.objectives)))  # type: ignore[union-attr]

    def lineage(self, uid: str) -> list[Entry]:
        """The ancestors of ``uid`` (breadth-first, the candidate itself first)."""
        out, queue, seen = [], [uid], set()
        while queue:
            u = queue.pop(0)
            if u in seen or u not in self._by_uid:
                continue
            seen.add(u)
            entry = self._by_uid[u]
            out.append(entry)
            queue.extend(entry.candidate.parents)
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.evaluation.status.value] = out.get(e.evaluation.status.value, 0) + 1
        return out
