"""Successive halving for one generation: a seeded subset for everyone, the full set for the best.

Subset scores come first; the best ``promote`` fraction (by the first objective) is then scored on the
full set. Candidates that were not promoted keep their subset score (the strategy is told it; reports and
export rank full-fidelity results only). Every step reads what is already in the archive, so a
generation interrupted by a crash resumes without re-running anything.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from evomerge.types import Candidate, Evaluation

if TYPE_CHECKING:
    from evomerge.population.manager import PopulationManager


def successive_halving(manager: PopulationManager, batch: list[Candidate]) -> dict[str, Evaluation]:
    mf = manager.cfg.multi_fidelity
    assert mf is not None
    archive = manager.archive
    manager.evaluate([c for c in batch if c.uid not in archive], fidelity=mf.subset)

    def score(c: Candidate) -> float | None:
        entry = archive.get(c.uid)
        return None if entry is None else archive.scalar(entry)

    scored = [(i, c, score(c)) for i, c in enumerate(batch)]
    ok = sorted(((i, c, s) for i, c, s in scored if s is not None), key=lambda t: (-t[2], t[0]))
    n_promote = max(1, math.ceil(mf.promote * len(batch)))
    promoted = [c for _, c, _ in ok[:n_promote]]
    manager.evaluate([c for c in promoted if (e := archive.get(c.uid)) is not None and e.evaluation.fidelity != "full"])
    out = {}
    for c in batch:
        entry = archive.get(c.uid)
        assert entry is not None
        out[c.uid] = entry.evaluation
    return out
