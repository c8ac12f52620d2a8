"""Hypervolume of the fronts found by the multi-objective strategies, as a ratio of the true front's.

The toy problem has a front known in closed form: ``loss_a = ‖x − a‖²`` (minimised) and
``score_b = −‖x − b‖²`` (maximised) over x ∈ [0, 1]^3, whose Pareto set is the segment a→b. The reference
point lies a little beyond both ends of the front (1.2·‖b − a‖² in each loss), and the true hypervolume is
the closed form of ``tests/unit/strategy_toys.true_front_hypervolume`` (checked there against a dense
sample). Each strategy gets the same evaluation budget; MAP stops after its design and one round of
proposals. Hypervolumes are computed with Optuna's own utility.

Run from the repository: ``../shared/tools/offline .venv/bin/python benchmarks/pareto_fronts.py``
(``--seeds 5 --budget 150 --dimension 3`` by default, the acceptance setting, whose threshold is a ratio of
0.9; random search is listed as the floor; ``--dimension 6 --budget 200`` separates the methods more).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from evomerge.strategies.pareto import FrontPoint, front_hypervolume, front_of
from tests.unit.strategy_toys import (
    BI_OBJECTIVES,
    CoefficientSpace,
    biobjective,
    drive,
    make,
    true_front_hypervolume,
)

A3, B3 = [0.2, 0.3, 0.25], [0.8, 0.6, 0.7]
CONTENDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "optuna (NSGA-II, pop 20)": ("optuna", {"sampler": "nsga2", "population_size": 20}),
    "optuna (MOTPE)": ("optuna", {"sampler": "tpe"}),
    "layerwise_zo (NSGA-II + local + relink)": ("layerwise_zo", {}),
    "layerwise_zo (MOTPE + local + relink)": ("layerwise_zo", {"sampler": "tpe"}),
    "map_pareto (1 round)": ("map_pareto", {}),
    "map_pareto (2 rounds)": ("map_pareto", {"rounds": 2}),
    "random": ("random", {}),
}


def endpoints(dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """The ends a, b of the Pareto segment (those of the tests for 3 dimensions)."""
    return np.resize(A3, dimension), np.resize(B3, dimension)


def run(
    name: str, options: dict[str, Any], seed: int, budget: int, dimension: int
) -> tuple[float, int, float]:
    """(hypervolume ratio, evaluations used, seconds) of one strategy run."""
    t0 = time.perf_counter()
    a, b = endpoints(dimension)
    length_sq = float(np.sum((b - a) ** 2))
    ref = 1.2 * length_sq
    strategy = make(name, CoefficientSpace(dimension), BI_OBJECTIVES, seed=seed, fast=False, **options)
    history = drive(strategy, biobjective(a, b), budget=budget, batch=8)
    if hasattr(strategy, "pareto_front"):
        front = strategy.pareto_front()
    else:  # random search keeps no front: take the evaluated points
        front = front_of([FrontPoint(c.genome, e.objectives, c.uid) for c, e in history], BI_OBJECTIVES)
    hv = front_hypervolume(front, BI_OBJECTIVES, [ref, -ref])
    return hv / true_front_hypervolume(length_sq, ref), len(history), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--dimension", type=int, default=3, help="coefficients per candidate (tests use 3)")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    print(
        f"hypervolume / true front hypervolume, {args.dimension} dimensions, "
        f"budget {args.budget} evaluations, seeds {seeds}"
    )
    print(f"{'strategy':40s} {'min':>6s} {'mean':>6s} {'evals':>6s} {'s/run':>6s}  per seed")
    for label, (name, options) in CONTENDERS.items():
        results = [run(name, options, seed, args.budget, args.dimension) for seed in seeds]
        ratios = [r for r, _, _ in results]
        evals = int(np.mean([n for _, n, _ in results]))
        secs = float(np.mean([s for _, _, s in results]))
        per_seed = " ".join(f"{r:.3f}" for r in ratios)
        print(f"{label:40s} {min(ratios):6.3f} {np.mean(ratios):6.3f} {evals:6d} {secs:6.2f}  {per_seed}")


if __name__ == "__main__":
    main()
