"""Seconds per candidate for the lm_eval suite reused in place vs lm-eval set up afresh per candidate.

An evaluator rewrites one resident model in place for every candidate. This script does the same to a
tiny Llama (``--candidates`` random weight states) and scores each state three ways on the bundled tasks:

* ``reuse``: one ``lm_eval`` suite, built and prepared once (tasks loaded, one HFLM), called per state;
* ``fresh suite``: a new suite per state (task loading and HFLM construction repeated);
* ``simple_evaluate``: the usual lm-eval recipe per state, a new ``HFLM(pretrained=model)``, a new
  ``TaskManager`` and ``lm_eval.simple_evaluate`` (with ``bootstrap_iters=0``, as the suite uses).

It checks that all three give identical scores, then prints seconds per candidate and the speed-up of
reuse. Run: ``../shared/tools/offline .venv/bin/python benchmarks/fitness_reuse.py`` from the repository.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from evomerge.tiny_models import build_tokenizer, make_tiny_model
from fitness import build_suite
from fitness.tasks import write_absolute_task_yamls

TASKS = ("evomerge_arith", "evomerge_strings", "evomerge_facts")


def simple_evaluate_once(model: Any, tok: Any, task_dir: Path, batch_size: int) -> dict[str, float]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=list(TASKS), task_manager=manager, bootstrap_iters=0)
    assert out is not None
    return {f"{t}/acc": out["results"][t]["acc,none"] for t in TASKS}


def scramble_(model: torch.nn.Module, seed: int) -> None:
    """A new candidate: every weight rewritten in place, as an evaluator's merge does."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    cfg = {"name": "lm_eval", "tasks": list(TASKS), "aggregate": "separate", "batch_size": args.batch_size}
    model, tok = make_tiny_model(arch="llama", seed=0), build_tokenizer()
    task_dir = write_absolute_task_yamls(Path(tempfile.mkdtemp()) / "tasks", TASKS)
    reused = build_suite(cfg)
    _, setup = timed(lambda: reused(model, tok))  # first call: tasks loaded, HFLM built
    times: dict[str, list[float]] = {"reuse": [], "fresh suite": [], "simple_evaluate": []}
    for state in range(args.candidates):
        scramble_(model, seed=state)
        a, t_reuse = timed(lambda: reused(model, tok).objectives)
        b, t_fresh = timed(lambda: build_suite(cfg)(model, tok).objectives)
        c, t_direct = timed(lambda: simple_evaluate_once(model, tok, task_dir, args.batch_size))
        if not (a == b == c):
            raise SystemExit(f"scores differ at state {state}: reuse {a}, fresh {b}, simple_evaluate {c}")
        for name, seconds in zip(times, (t_reuse, t_fresh, t_direct)):
            times[name].append(seconds)

    examples = sum(len(reused.tasks[t].eval_docs) for t in TASKS)  # type: ignore[attr-defined]
    print(f"tiny Llama, {len(TASKS)} bundled tasks, {examples} examples x 4 choices, {args.candidates} weight states")
    print(f"scores identical across all three ways for every state; first-call set-up of the reused suite {setup:.3f} s")
    print("seconds per candidate (median, mean; the median resists other processes' bursts on a shared machine):")
    for name, values in times.items():
        print(f"  {name:16s} median {statistics.median(values):7.3f}   mean {statistics.mean(values):7.3f}")
    for other in ("simple_evaluate", "fresh suite"):
        ratio = statistics.median(times[other]) / statistics.median(times["reuse"])
        print(f"speed-up of reuse vs {other} per candidate: {ratio:.1f}x (medians)")


if __name__ == "__main__":
    main()
