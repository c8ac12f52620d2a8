"""Toy search spaces, objectives and a driver loop for the strategy tests (no models involved).

* :class:`CoefficientSpace`: one weight per source model, decoding to a linear merge; its initial points
  are the sources alone and its start is the uniform merge.
* :class:`MixedSpace`: per layer group an operator choice (categorical), a weight and a log-scaled density.
* :class:`DirectSpace`: the genome *is* a parameter vector (``decode`` gives ``None``), with random-init
  initial points, as for evolution from scratch.

Objectives are computed from genomes directly: a sphere, a two-objective problem whose Pareto set is the
segment between two points (front known in closed form), and a per-example linear classifier for M2N2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evomerge.plan import InputModel, MergePlan
from evomerge.strategies.base import Strategy, get_strategy
from evomerge.types import Candidate, EvalStatus, Evaluation, Genome, Objective
from search_spaces.base import CategoricalDim, FloatDim, SearchSpace

ObjectiveFn = Callable[[Candidate], Evaluation]


class CoefficientSpace(SearchSpace):
    name = "toy_coefficients"

    def __init__(self, n_sources: int = 3, low: float = 0.0, high: float = 1.0) -> None:
        self.n_sources = n_sources
        super().__init__([FloatDim(f"w{i}", low, high, init=1.0 / n_sources) for i in range(n_sources)])

    def decode(self, genome: Genome) -> MergePlan:
        models = [
            InputModel(model=f"m{i}", parameters={"weight": float(w)}) for i, w in enumerate(genome.vector)
        ]
        return MergePlan(merge_method="linear", models=models)

    def encode(self, plan: MergePlan) -> Genome:
        return Genome(np.array([float(m.parameters["weight"]) for m in plan.models or []]))  # type: ignore[index, arg-type]

    def initial_points(self) -> list[Genome]:
        return [Genome(np.eye(self.n_sources)[i]) for i in range(self.n_sources)]


OPERATORS = ("linear", "slerp", "ties")


class MixedSpace(SearchSpace):
    name = "toy_mixed"

    def __init__(self, groups: int = 2) -> None:
        floats: list[FloatDim] = []
        for g in range(groups):
            floats += [FloatDim(f"g{g}.weight", 0.0, 1.0), FloatDim(f"g{g}.density", 0.01, 1.0, log=True)]
        cats = [CategoricalDim(f"g{g}.method", OPERATORS) for g in range(groups)]
        super().__init__(floats, cats)
        self.groups = groups

    def decode(self, genome: Genome) -> MergePlan:
        params: dict[str, Any] = {}
        for g in range(self.groups):
            params[f"g{g}_weight"] = float(genome.vector[2 * g])
            params[f"g{g}_density"] = float(genome.vector[2 * g + 1])
            params[f"g{g}_method"] = OPERATORS[genome.choices[g]]
        return MergePlan(
            merge_method="linear", models=[InputModel(model="a"), InputModel(model="b")], parameters=params
        )

    def encode(self, plan: MergePlan) -> Genome:
        p = plan.parameters or {}
        vec = [float(p[f"g{g}_{k}"]) for g in range(self.groups) for k in ("weight", "density")]  # type: ignore[arg-type]
        return Genome(
            np.array(vec), tuple(OPERATORS.index(str(p[f"g{g}_method"])) for g in range(self.groups))
        )


class DirectSpace(SearchSpace):
    """A flat parameter vector evolved directly (no merge plan)."""

    name = "toy_direct"

    def __init__(self, dimension: int = 8, bound: float = 1.0, n_initial: int = 2, seed: int = 7) -> None:
        super().__init__([FloatDim(f"p{i}", -bound, bound, init=0.0) for i in range(dimension)])
        rng = np.random.default_rng(seed)
        self._initial = [Genome(rng.normal(0.0, 0.1, dimension)) for _ in range(n_initial)]

    def decode(self, genome: Genome) -> None:
        return None

    def encode(self, plan: MergePlan) -> Genome:
        raise TypeError("a direct space has no merge plan to encode")

    def initial_points(self) -> list[Genome]:
        return list(self._initial)


class BoxSpace(SearchSpace):
    """Any given dimensions, decoding to nothing: for tests of how strategies treat a dimension kind."""

    name = "toy_box"

    def decode(self, genome: Genome) -> None:
        return None

    def encode(self, plan: MergePlan) -> Genome:
        raise TypeError("a box space has no merge plan to encode")


# ---------------------------------------------------------------------- objectives
def sphere(space: SearchSpace, center: float | Sequence[float] = 0.3, name: str = "score") -> ObjectiveFn:
    """``−‖u − c‖²`` over the unit cube (plus a small penalty for the categoricals being non-zero)."""

    def fn(c: Candidate) -> Evaluation:
        u = space.to_unit(c.genome)
        value = -float(np.sum((u - np.asarray(center)) ** 2)) - 0.1 * sum(1 for k in c.genome.choices if k)
        return Evaluation(c.uid, EvalStatus.OK, {name: value})

    return fn


BI_OBJECTIVES = [Objective("loss_a", "minimize"), Objective("score_b", "maximize")]


def biobjective(a: Sequence[float], b: Sequence[float]) -> ObjectiveFn:
    """``loss_a = ‖x − a‖²`` (minimised) and ``score_b = −‖x − b‖²`` (maximised).

    The Pareto set is the segment a→b: ``x = a + t(b − a)`` gives ``loss_a = t²L²`` and
    ``−score_b = (1 − t)²L²`` with ``L = ‖b − a‖``.
    """
    pa, pb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)

    def fn(c: Candidate) -> Evaluation:
        x = c.genome.vector
        return Evaluation(
            c.uid,
            EvalStatus.OK,
            {"loss_a": float(np.sum((x - pa) ** 2)), "score_b": -float(np.sum((x - pb) ** 2))},
        )

    return fn


def true_front_hypervolume(length_sq: float, ref: float) -> float:
    """Closed-form hypervolume (in loss space) of the segment front with reference point (ref, ref).

    With g1 = t²L², g2 = (L − √g1)², the dominated area is ∫₀^{L²} (R − g2) dg1 + (R − L²)·R
    = R·L² − L⁴/6 + (R − L²)·R for R ≥ L².
    """
    if ref < length_sq:
        raise ValueError("closed form assumes the reference point lies beyond both extremes")
    return ref * length_sq - length_sq**2 / 6 + (ref - length_sq) * ref


def classifier_data(n: int = 60, dim: int = 4, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = (x @ np.arange(1, dim + 1) > 0).astype(int)
    return x, y


def per_example_accuracy(x: np.ndarray, y: np.ndarray) -> ObjectiveFn:
    """A linear classifier with the genome as weights; per-example scores are correctness 0/1."""

    def fn(c: Candidate) -> Evaluation:
        correct = ((x @ c.genome.vector > 0).astype(int) == y).astype(float)
        return Evaluation(c.uid, EvalStatus.OK, {"accuracy": float(correct.mean())}, per_example=correct)

    return fn


# ---------------------------------------------------------------------- driving a strategy
FAST: dict[str, dict[str, Any]] = {
    "m2n2": {"pop_size": 5},
    "cmaes": {"popsize": 4},
    "optuna": {"n_startup_trials": 3, "population_size": 4},
    "layerwise_zo": {"n_startup_trials": 3},
    "map_pareto": {
        "n_design": 8,
        "n_proposals": 3,
        "rounds": 2,
        "surrogate_trials": 60,
        "surrogate_population": 12,
    },
}
"""Small settings so the conformance suite exercises every phase of a strategy within a few evaluations."""


def make(
    name: str,
    space: SearchSpace,
    objectives: Sequence[Objective] = (Objective("score"),),
    seed: int = 0,
    run_dir: str | None = None,
    fast: bool = True,
    **overrides: Any,
) -> Strategy:
    """Strategy ``name`` with the :data:`FAST` settings (unless ``fast`` is False) and ``overrides``."""
    cls = get_strategy(name)
    fields = cls.Config.model_fields
    options = {k: v for k, v in FAST.get(name, {}).items() if k in fields} if fast else {}
    options.update(overrides)
    return cls(space, objectives, seed=seed, config=cls.Config(name=name, **options), run_dir=run_dir)


def evaluate(candidates: Sequence[Candidate], fn: ObjectiveFn) -> list[Evaluation]:
    return [fn(c) for c in candidates]


def drive(
    strategy: Strategy, fn: ObjectiveFn, budget: int, batch: int = 4
) -> list[tuple[Candidate, Evaluation]]:
    """Ask in batches, evaluate, tell, until ``budget`` evaluations or the strategy has nothing to propose."""
    history: list[tuple[Candidate, Evaluation]] = []
    while len(history) < budget:
        cands = strategy.ask(min(batch, budget - len(history)))
        if not cands:
            break
        evals = evaluate(cands, fn)
        strategy.tell(evals)
        history += list(zip(cands, evals))
    return history


def fingerprint(candidates: Sequence[Candidate]) -> list[tuple[str, str, tuple[int, ...]]]:
    """Exact identity of proposed candidates (bit patterns of the vectors)."""
    return [(c.uid, c.genome.vector.tobytes().hex(), c.genome.choices) for c in candidates]


def digest_run(name: str, seed: int = 11, budget: int = 16) -> str:
    """A hash of everything ``name`` proposes in a short run: equal digests mean identical proposals."""
    import hashlib

    space = MixedSpace()
    history = drive(make(name, space, seed=seed), sphere(space), budget=budget)
    return hashlib.sha256(repr(fingerprint([c for c, _ in history])).encode()).hexdigest()
