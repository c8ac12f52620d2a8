"""The archive's views: Pareto front with two objectives of mixed directions."""

from __future__ import annotations

import numpy as np

from evomerge.population.archive import Archive
from evomerge.types import Candidate, EvalStatus, Evaluation, Genome, Objective


def test_pareto_front_of_two_objectives_in_mixed_directions() -> None:
    objectives = [Objective("acc", "maximize"), Objective("loss", "minimize")]
    archive = Archive(objectives)
    points = {"a": (0.9, 3.0), "b": (0.8, 1.0), "c": (0.7, 2.0), "d": (0.95, 5.0), "e": (0.5, 0.5)}
    for uid, (acc, loss) in points.items():
        archive.add(Candidate(uid, Genome(np.zeros(1)), None),
                    Evaluation(uid, EvalStatus.OK, {"acc": acc, "loss": loss}))
    archive.add(Candidate("f", Genome(np.zeros(1)), None), Evaluation("f", EvalStatus.FAILED, error="boom"))
    front = [e.candidate.uid for e in archive.pareto_front()]
    # c is dominated by b (lower acc, higher loss); the rest trade accuracy against loss
    assert sorted(front) == ["a", "b", "d", "e"]
    assert front[0] == "d"  # ordered by the first objective, best first
