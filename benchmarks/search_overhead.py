"""What the Ray layer costs: the same candidates through the sequential pool, RayPool with 1 and 2 actors.

Every candidate costs about ``--seconds`` of single-threaded CPU work inside the evaluator (a fixed number of
forward passes of the merged tiny Llama, calibrated once in this process), plus its in-place merge. For each
pool the script times the whole batch (after the pool is up: starting Ray and loading the sources once is
reported apart), sums the seconds the evaluators report spending in merge + fitness, and prints:

* seconds per evaluation (batch wall / candidates);
* overhead: the fraction of the evaluators' wall time not spent in merge + fitness
  (1 - busy / (wall x actors)) — scheduling, serialisation, result transfer;
* the speed-up of 2 actors over 1 on the same candidates.

Targets (issue 5): Ray adds < 5% at ~1 s per evaluation; 2 actors finish the batch >= 1.7x faster than 1 on
a 2-core machine. Run from the repository root:

    ../shared/tools/offline .venv/bin/python benchmarks/search_overhead.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IDS = torch.arange(3, 67).reshape(2, 32)


def busy_fitness(model: Any, tokenizer: Any = None, passes: int = 100) -> dict[str, float]:
    """``passes`` forward passes of the candidate on a fixed batch: a fixed amount of CPU work per candidate."""
    with torch.no_grad():
        loss = 0.0
        for _ in range(passes):
            loss = float(model(input_ids=IDS, labels=IDS).loss)
    return {"score": -loss}


def calibrate(model_dir: Path, seconds: float) -> int:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    busy_fitness(model, passes=5)
    start = time.perf_counter()
    busy_fitness(model, passes=50)
    per_pass = (time.perf_counter() - start) / 50
    return max(1, round(seconds / per_pass))


def config(models: dict[str, Path], passes: int, resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": 0,
        "models": {"base": str(models["base"]), "sources": [str(models[k]) for k in ("ft1", "ft2", "ft3")]},
        "search_space": {"name": "global", "merge_method": "task_arithmetic",
                         "parameters": {"weight": {"low": 0.0, "high": 1.0}}},
        "strategy": {"name": "random"},
        "fitness": {"name": "callable", "function": f"{Path(__file__).resolve()}:busy_fitness",
                    "kwargs": {"passes": passes}},
        "budget": {"evaluations": 1000},
        "evaluation": {"cache": False},
        "resources": {"torch_threads": 1, **resources},
        "tracking": {"console": False},
    }


def measure(cfg: dict[str, Any], work: Path, n: int, label: str) -> dict[str, float]:
    import yaml

    from evomerge.search import assemble, build_pool, evaluator_spec, load_config

    path = work / f"{label}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    search = assemble(load_config(path, []), work / f"run-{label}", work)
    candidates = search.strategy.ask(n)
    spec = evaluator_spec(search.config, search.sources, search.space, search.base_dir)
    start = time.perf_counter()
    with build_pool(search.config, spec) as pool:
        startup = time.perf_counter() - start
        pool.evaluate(candidates[:1])  # warm-up: first-call costs (imports, allocator) are not per-evaluation
        start = time.perf_counter()
        results = pool.evaluate(candidates)
        wall = time.perf_counter() - start
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    actors = search.config.resources.actors if search.config.resources.pool == "ray" else 1
    busy = sum(r.seconds for r in results)
    return {"startup": startup, "wall": wall, "per_eval": wall / n, "busy": busy / n,
            "overhead": 1 - busy / (wall * actors), "scores": sum(r.objectives["score"] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0, help="target CPU seconds of fitness per candidate")
    args = parser.parse_args()
    from evomerge.tiny_models import make_tiny_model, perturbed_copy

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = work / "base"
        make_tiny_model(base, arch="llama", seed=0, hidden=64, layers=2)
        models = {"base": base, **{f"ft{i}": perturbed_copy(base, work / f"ft{i}", seed=i, scale=0.02) for i in (1, 2, 3)}}
        passes = calibrate(base, args.seconds)
        ray = {"pool": "ray", "cpus_per_actor": 1, "object_store_mb": 96}
        rows = {
            "sequential": measure(config(models, passes, {"pool": "sequential"}), work, args.candidates, "seq"),
            "ray, 1 actor": measure(config(models, passes, {**ray, "actors": 1, "num_cpus": 2}), work, args.candidates, "ray1"),
            "ray, 2 actors": measure(config(models, passes, {**ray, "actors": 2}), work, args.candidates, "ray2"),
        }
    print(f"{args.candidates} candidates (task arithmetic over 3 tiny Llamas), fitness = {passes} forward passes "
          f"(~{args.seconds:g} s on one thread)")
    print(f"{'pool':<15} {'start-up s':>10} {'batch s':>8} {'s/eval':>7} {'merge+fitness s/eval':>21} {'overhead':>9}")
    for name, r in rows.items():
        print(f"{name:<15} {r['startup']:>10.2f} {r['wall']:>8.2f} {r['per_eval']:>7.3f} {r['busy']:>21.3f} "
              f"{r['overhead']:>8.1%}")
    same = len({round(r["scores"], 6) for r in rows.values()}) == 1
    speedup = rows["ray, 1 actor"]["wall"] / rows["ray, 2 actors"]["wall"]
    added = rows["ray, 1 actor"]["wall"] / rows["sequential"]["wall"] - 1
    print(f"same scores in all three: {same}")
    print(f"Ray vs sequential, 1 evaluator: {added:+.1%} wall (target < 5%); "
          f"ray overhead fraction {rows['ray, 1 actor']['overhead']:.1%}")
    print(f"2 actors vs 1: {speedup:.2f}x faster (target >= 1.7x)")


if __name__ == "__main__":
    main()
