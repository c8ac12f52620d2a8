"""Successive halving for one generation: a seeded subset for everyone, the full set for the best.

Every candidate of the batch is first scored on the suite's fixed subset of examples (the same examples for
all, so the scores compare); the best ``promote`` fraction by the first objective is then scored on the
full set. Candidates that were not promoted keep their subset score: the strategy is told it, while
reports, export and the run's best rank full-fidelity results only.

Crash safety: every step starts from what the archive already holds. A candidate that already has a
full-set result was promoted before the interruption, so it fills one place of the quota and the rest go
to the best subset scores among the others. The promoted set is therefore the one an uninterrupted run
picks, even though an upgraded candidate's subset score is no longer in the archive (ranking it by its
full score instead would promote a different set after a resume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evomerge.types import Candidate

if TYPE_CHECKING:
    from evomerge.population.archive import Archive
    from evomerge.population.manager import PopulationManager

_ROUNDING_SLACK = 1e-9
"""Keeps ``ceil`` from rounding a product such as 0.28 × 25 = 7.000000000000001 up to 8."""


def promotion_quota(batch_size: int, promote: float) -> int:
    """How many of a batch reach the full set: the ``promote`` fraction rounded up, at least one."""
    return min(batch_size, max(1, math.ceil(promote * batch_size - _ROUNDING_SLACK)))


def already_promoted(archive: Archive, batch: Sequence[Candidate]) -> list[Candidate]:
    """Candidates of ``batch`` that have a full-set result (a failed one included), in batch order."""
    return [c for c in batch if (e := archive.get(c.uid)) is not None and e.evaluation.fidelity == "full"]


def subset_ranking(archive: Archive, batch: Sequence[Candidate]) -> list[Candidate]:
    """Candidates with a successful subset score, best first; ties go to the one asked first."""
    scored: list[tuple[float, int, Candidate]] = []
    for position, c in enumerate(batch):
        entry = archive.get(c.uid)
        if entry is None or entry.evaluation.fidelity == "full":
            continue
        value = archive.scalar(entry)
        if value is not None:
            scored.append((value, position, c))
    return [c for _, _, c in sorted(scored, key=lambda t: (-t[0], t[1]))]


def successive_halving(manager: PopulationManager, batch: list[Candidate]) -> list[Candidate]:
    """Score ``batch`` on the subset, promote the best fraction to the full set; returns the promoted."""
    mf = manager.cfg.multi_fidelity
    assert mf is not None, "successive halving needs evaluation.multi_fidelity"
    archive = manager.archive
    manager.evaluate([c for c in batch if c.uid not in archive], fidelity=mf.subset)
    done = already_promoted(archive, batch)
    places = promotion_quota(len(batch), mf.promote) - len(done)
    chosen = subset_ranking(archive, batch)[: max(0, places)]
    manager.evaluate(chosen)
    promoted = {c.uid for c in done + chosen}
    return [c for c in batch if c.uid in promoted]
