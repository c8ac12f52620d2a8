"""Multi-fidelity end to end: seeded subsets through a fitness suite, successive halving in the manager.

The toy suite has a real per-example fitness: example ``i`` is a target point ``t_i`` and scores a genome
``x`` as ``-‖x - t_i‖²``, so a subset mean is a noisy but unbiased estimate of the full mean and candidates
can swap places on a subset. Candidates come from the real ``random`` strategy, so runs with and without
halving see identical candidates and their bests can be compared uid for uid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from evomerge.config import BudgetConfig, EvaluationConfig, MultiFidelityConfig
from evomerge.distributed.pool import CallablePool
from evomerge.population.halving import promotion_quota, successive_halving
from evomerge.population.manager import PopulationManager
from evomerge.population.run_dir import RunDir
from evomerge.seeding import SeedTree
from evomerge.strategies.random_search import RandomStrategy
from evomerge.types import Candidate, EvalStatus, Evaluation, Genome, Objective
from fitness.base import FitnessConfig, FitnessResult, FitnessSuite
from fitness.fidelity import subset_size
from tests.unit.manager_toys import ToySpace

N_EXAMPLES = 400
SCORE = [Objective("score")]


class TargetsSuite(FitnessSuite):
    """Per-example score ``-‖x - t_i‖²`` of a genome ``x`` (passed as the model) against target ``t_i``."""

    name = "toy_targets"
    Config = FitnessConfig

    def __init__(self, targets: np.ndarray, seed: int) -> None:
        super().__init__(FitnessConfig(name=self.name), SeedTree(seed).child("fitness"))
        self.targets = targets

    def objectives(self) -> list[Objective]:
        return SCORE

    def __call__(self, model: Any, tokenizer: Any = None) -> FitnessResult:
        rows = self.subset("examples", len(self.targets))
        per_example = -np.sum((self.targets[rows] - np.asarray(model)) ** 2, axis=1)
        return FitnessResult({"score": float(per_example.mean())}, per_example, {"rows": rows.tolist()})


def targets(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.6, 0.3, size=(N_EXAMPLES, 3))


def suite_pool(suite: TargetsSuite) -> CallablePool:
    def score(candidate: Candidate, fidelity: float | None) -> Evaluation:
        suite.set_fidelity(fidelity)
        result = suite(candidate.genome.vector)
        return Evaluation(uid=candidate.uid, status=EvalStatus.OK, objectives=result.objectives,
                          per_example=result.per_example, metrics=result.metrics)

    return CallablePool(score)


def run_search(run_dir: Path, seed: int, halving: bool, budget: int = 48) -> PopulationManager:
    mf = MultiFidelityConfig(subset=0.25, promote=0.5) if halving else None
    manager = PopulationManager(RandomStrategy(ToySpace(), SCORE, seed=seed), suite_pool(TargetsSuite(targets(), seed)),
                                RunDir(run_dir), SCORE, BudgetConfig(evaluations=budget),
                                EvaluationConfig(batch_size=8, multi_fidelity=mf))
    manager.run()
    return manager


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------- subsets
def test_subsets_are_fixed_by_seed_and_nested() -> None:
    data = targets()
    first, twin, other = TargetsSuite(data, 7), TargetsSuite(data, 7), TargetsSuite(data, 8)
    twin.set_fidelity(0.5)  # a different history must not move the subset
    twin.subset("examples", N_EXAMPLES)
    quarter = {}
    for name, suite in (("first", first), ("twin", twin), ("other", other)):
        suite.set_fidelity(0.25)
        quarter[name] = suite.subset("examples", N_EXAMPLES)
    assert np.array_equal(quarter["first"], quarter["twin"])  # two evaluators of one run score the same examples
    assert not np.array_equal(quarter["first"], quarter["other"])
    assert len(quarter["first"]) == subset_size(N_EXAMPLES, 0.25) == 100
    first.set_fidelity(0.5)
    half = first.subset("examples", N_EXAMPLES)
    assert set(quarter["first"]) < set(half)
    first.set_fidelity(None)
    full = first(np.full(3, 0.5))
    first.set_fidelity(0.25)
    part = first(np.full(3, 0.5))
    assert part.per_example is not None and full.per_example is not None
    assert np.array_equal(part.per_example, full.per_example[quarter["first"]])


# ---------------------------------------------------------------------- the promotion rule
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200), st.integers(1, 100))
@example(25, 28)  # 0.28 * 25 is 7.000000000000001 in floating point: still 7 places
@example(50, 14)
def test_quota_is_the_fraction_rounded_up(batch: int, percent: int) -> None:
    expected = max(1, -(-batch * percent // 100))  # exact integer ceiling, no floating point
    assert promotion_quota(batch, percent / 100) == expected


def table_manager(run_dir: Path, scores: dict[str, tuple[float | None, float]], promote: float) -> tuple[PopulationManager, list[Candidate], list[str]]:
    """A manager whose pool scores each candidate from ``scores``: uid → (subset score, full score)."""
    calls: list[str] = []

    def score(candidate: Candidate, fidelity: float | None) -> dict[str, float]:
        calls.append(f"{candidate.uid}@{'full' if fidelity is None else 'subset'}")
        value = scores[candidate.uid][fidelity is None]
        if value is None:
            raise ValueError("toy failure")
        return {"score": value}

    space = ToySpace()
    genomes = [Genome(np.full(3, i / 10)) for i in range(len(scores))]
    batch = [Candidate(uid=uid, genome=g, plan=space.decode(g)) for uid, g in zip(scores, genomes)]
    manager = PopulationManager(RandomStrategy(space, SCORE), CallablePool(score), RunDir(run_dir), SCORE,
                                BudgetConfig(evaluations=99),
                                EvaluationConfig(multi_fidelity=MultiFidelityConfig(subset=0.25, promote=promote)))
    manager.state.pending = {c.uid: c for c in batch}
    return manager, batch, calls


SCORES: dict[str, tuple[float | None, float]] = {"a": (0.9, 0.1), "b": (0.8, 0.8), "c": (0.7, 0.7), "d": (0.7, 0.75), "e": (0.2, 0.95), "f": (0.1, 0.1)}


def test_best_subset_scores_are_promoted_ties_by_ask_order(tmp_path: Path) -> None:
    manager, batch, calls = table_manager(tmp_path / "run", SCORES, promote=0.5)
    promoted = successive_halving(manager, batch)
    assert [c.uid for c in promoted] == ["a", "b", "c"]  # c and d tie on the subset: c was asked first
    assert calls == [f"{u}@subset" for u in SCORES] + ["a@full", "b@full", "c@full"]
    full = {e.candidate.uid for e in manager.archive if e.evaluation.fidelity == "full"}
    assert full == {"a", "b", "c"} and manager.archive.best().candidate.uid == "b"  # type: ignore[union-attr]


def test_failed_subset_scores_are_never_promoted(tmp_path: Path) -> None:
    scores: dict[str, tuple[float | None, float]] = {"a": (None, 1.0), "b": (0.5, 0.5), "c": (None, 1.0), "d": (0.1, 0.2)}
    manager, batch, calls = table_manager(tmp_path / "run", scores, promote=0.75)
    assert [c.uid for c in successive_halving(manager, batch)] == ["b", "d"]  # a quota of 3, two contenders
    assert calls[4:] == ["b@full", "d@full"]


@pytest.mark.parametrize("finished", [["a"], ["a", "b"]])
def test_interrupted_promotion_resumes_to_the_same_set(tmp_path: Path, finished: list[str]) -> None:
    """``a`` ranks first on the subset but scores 0.1 on the full set: after a crash that followed its
    promotion, ranking by the archive's (now full) score would promote ``d`` in its place."""
    manager, batch, calls = table_manager(tmp_path / "run", SCORES, promote=0.5)
    by_uid = {c.uid: c for c in batch}
    manager.evaluate(batch, fidelity=0.25)  # the first rung, then part of the promotions, then the crash
    manager.evaluate([by_uid[u] for u in finished])
    del calls[:]
    promoted = successive_halving(manager, batch)
    assert [c.uid for c in promoted] == ["a", "b", "c"]
    assert calls == [f"{u}@full" for u in ("a", "b", "c") if u not in finished]


# ---------------------------------------------------------------------- a whole search
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_halving_keeps_the_best_and_halves_full_evaluations(tmp_path: Path, seed: int) -> None:
    plain = run_search(tmp_path / "plain", seed, halving=False)
    halved = run_search(tmp_path / "halved", seed, halving=True)
    plain_recs, halved_recs = records(tmp_path / "plain"), records(tmp_path / "halved")
    assert [r["uid"] for r in plain_recs] == [r["uid"] for r in halved_recs if r["fidelity"] != "full"]
    assert [r["genome"] for r in plain_recs] == [r["genome"] for r in halved_recs if r["fidelity"] != "full"]
    full = [r for r in halved_recs if r["fidelity"] == "full"]
    subset = [r for r in halved_recs if r["fidelity"] == "subset:0.25"]
    assert len(plain_recs) == 48 and len(subset) == 48 and len(full) == 24  # 50% fewer full-set evaluations
    best_plain, best_halved = plain.archive.best(), halved.archive.best()
    assert best_plain is not None and best_halved is not None
    assert best_halved.candidate.uid == best_plain.candidate.uid
    assert best_halved.evaluation.objectives == best_plain.evaluation.objectives
    # every subset evaluation scored the same 100 examples
    rows = {tuple(r["metrics"]["rows"]) for r in subset}
    assert len(rows) == 1 and len(next(iter(rows))) == 100
    # the promoted are exactly the top half of each batch of 8 by subset score (ask order breaks ties)
    expected: set[str] = set()
    for start in range(0, 48, 8):
        batch = subset[start : start + 8]
        ranked = sorted(range(8), key=lambda i: (-batch[i]["objectives"]["score"], i))
        expected |= {batch[i]["uid"] for i in ranked[:4]}
    assert {r["uid"] for r in full} == expected


def test_subset_scores_are_unbiased_but_noisy() -> None:
    """The toy is a fair test of halving: subset scores scatter around the full ones without a bias."""
    data, rng = targets(), np.random.default_rng(3)
    full = TargetsSuite(data, 0)
    gaps = []
    for seed in range(200):  # each seed draws its own subset
        x = rng.random(3)
        part = TargetsSuite(data, seed)
        part.set_fidelity(0.25)
        gaps.append(part(x).objectives["score"] - full(x).objectives["score"])
    spread = float(np.std(gaps))
    assert spread > 0.005  # subsets do disagree with the full set
    assert abs(float(np.mean(gaps))) < 3 * spread / np.sqrt(len(gaps))
