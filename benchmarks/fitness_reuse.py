"""Seconds per candidate for the lm_eval suite reused in place vs lm-eval set up afresh per candidate.

An evaluator rewrites one resident model in place for every candidate. This script does the same
(``--candidates`` seeded weight states) and scores each state four ways on bundled tasks, all with the
same batch size and torch thread count:

* ``reuse``: one ``lm_eval`` suite, built and prepared once (tasks loaded, one HFLM), called per state;
* ``reuse, full logits``: the same with ``continuation_logits: false`` (HFLM's own loglikelihood pass),
  to show what computing the output head only at continuation positions buys;
* ``fresh suite``: a new suite per state (task loading and HFLM construction repeated);
* ``simple_evaluate``: the usual lm-eval recipe per state, a new ``HFLM(pretrained=model)``, a new
  ``TaskManager`` and ``lm_eval.simple_evaluate`` (with ``bootstrap_iters=0``, as the suite uses).

It stops if any two ways give different scores, then prints seconds per candidate and the speed-ups of
reuse. Rows: the tiny Llama of the tests (vocabulary 101, where the output head costs nothing) and a tiny
Llama with SmolLM2's vocabulary of 49,152 (character tokenizer, bigger embedding), whose head and
log-softmax dominate the forward as they do in small real LLMs; ``--checkpoint DIR`` adds a row for a
real checkpoint (weights nudged by seeded noise per state). Threads default to 1: on a shared 2-core
machine two OpenMP threads mostly wait on each other. Run from the repository:
``../shared/tools/offline .venv/bin/python benchmarks/fitness_reuse.py``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from evomerge.tiny_models import build_tokenizer, make_tiny_model
from fitness import build_suite
from fitness.tasks import write_absolute_task_yamls

TASKS = ("evomerge_arith", "evomerge_strings", "evomerge_facts")
WAYS = ("reuse", "reuse, full logits", "fresh suite", "simple_evaluate")


@dataclass
class Row:
    label: str
    model: Any
    tokenizer: Any
    new_state: Callable[[int], None]
    tasks: tuple[str, ...]
    limit: int | None


def simple_evaluate_once(row: Row, task_dir: Path, batch_size: int) -> dict[str, float]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=row.model, tokenizer=row.tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=list(row.tasks), task_manager=manager, bootstrap_iters=0, limit=row.limit)
    assert out is not None
    return {f"{t}/acc": out["results"][t]["acc,none"] for t in row.tasks}


def scrambler(model: torch.nn.Module) -> Callable[[int], None]:
    """New candidates for a random model: every weight rewritten in place from a seed."""

    def new_state(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    return new_state


def nudger(model: torch.nn.Module, scale: float = 0.02) -> Callable[[int], None]:
    """New candidates for a trained model: its original weights plus seeded noise (``scale`` x each std)."""
    original = [p.detach().clone() for p in model.parameters()]

    def new_state(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p, base in zip(model.parameters(), original, strict=True):
                p.copy_(base + torch.randn(p.shape, generator=gen) * (scale * float(base.std())))

    return new_state


def tiny_row(vocab_size: int, hidden: int) -> Row:
    model = make_tiny_model(arch="llama", seed=0, vocab_size=vocab_size, hidden=hidden)
    label = f"tiny Llama (hidden {hidden}, 2 layers, vocabulary {vocab_size:,}; random weights)"
    return Row(label, model, build_tokenizer(), scrambler(model), TASKS, None)


def checkpoint_row(path: str, tasks: tuple[str, ...], limit: int | None) -> Row:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    cfg = model.config
    label = f"{Path(path).name} (hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, vocabulary {cfg.vocab_size:,})"
    return Row(label, model, AutoTokenizer.from_pretrained(path), nudger(model), tasks, limit)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(row: Row, candidates: int, batch_size: int) -> tuple[dict[str, list[float]], int]:
    """Seconds per state for each way (after checking that all ways agree), and the number of examples."""
    cfg: dict[str, Any] = {"name": "lm_eval", "tasks": list(row.tasks), "aggregate": "separate",
                           "batch_size": batch_size, "limit": row.limit}
    task_dir = write_absolute_task_yamls(Path(tempfile.mkdtemp()) / "tasks", row.tasks)
    reused, full = build_suite(cfg), build_suite({**cfg, "continuation_logits": False})
    row.new_state(10_000)
    reused(row.model, row.tokenizer)  # first calls: tasks loaded, HFLM built (not timed)
    full(row.model, row.tokenizer)
    ways: dict[str, Callable[[], dict[str, float]]] = {
        "reuse": lambda: reused(row.model, row.tokenizer).objectives,
        "reuse, full logits": lambda: full(row.model, row.tokenizer).objectives,
        "fresh suite": lambda: build_suite(cfg)(row.model, row.tokenizer).objectives,
        "simple_evaluate": lambda: simple_evaluate_once(row, task_dir, batch_size),
    }
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for state in range(candidates):
        row.new_state(state)
        scores = {}
        for way, run in ways.items():
            scores[way], seconds = timed(run)
            times[way].append(seconds)
        if len({tuple(sorted(s.items())) for s in scores.values()}) != 1:
            raise SystemExit(f"{row.label}: scores differ at state {state}: {scores}")
    tasks: dict[str, Any] = reused.tasks  # type: ignore[attr-defined]
    examples = sum(len(tasks[t].eval_docs) for t in row.tasks)
    return times, examples if row.limit is None else min(examples, row.limit * len(row.tasks))


def report(row: Row, times: dict[str, list[float]], examples: int, args: argparse.Namespace) -> None:
    print(f"\n{row.label}")
    print(f"  {len(row.tasks)} task(s), {examples} examples x 4 choices, {args.candidates} weight states, "
          f"batch size {args.batch_size}, {torch.get_num_threads()} torch thread(s); scores identical all ways")
    reuse = statistics.median(times["reuse"])
    print(f"  {'seconds per candidate':28s} {'median':>8s} {'mean':>8s} {'median / reuse':>15s}")
    for way in WAYS:
        median = statistics.median(times[way])
        print(f"  {way:28s} {median:8.3f} {statistics.mean(times[way]):8.3f} {median / reuse:14.1f}x")
    print(f"  speed-up of reuse per candidate (medians): {statistics.median(times['simple_evaluate']) / reuse:.1f}x "
          f"vs simple_evaluate, {statistics.median(times['fresh suite']) / reuse:.1f}x vs fresh suite")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every way (default 1)")
    parser.add_argument("--rows", choices=("tiny", "big-vocab", "none"), nargs="*", default=["tiny", "big-vocab"])
    parser.add_argument("--checkpoint", help="also measure this causal-LM checkpoint directory")
    parser.add_argument("--checkpoint-tasks", nargs="+", default=["evomerge_arith"])
    parser.add_argument("--checkpoint-limit", type=int, default=50)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    builders: list[Callable[[], Row]] = []
    if "tiny" in args.rows:
        builders.append(lambda: tiny_row(101, 32))
    if "big-vocab" in args.rows:
        builders.append(lambda: tiny_row(49_152, 64))
    if args.checkpoint:
        path, tasks, limit = args.checkpoint, tuple(args.checkpoint_tasks), args.checkpoint_limit
        builders.append(lambda: checkpoint_row(path, tasks, limit))
    print("seconds per candidate; the median resists other processes' bursts on a shared machine")
    for build in builders:
        row = build()
        times, examples = measure(row, args.candidates, args.batch_size)
        report(row, times, examples, args)


if __name__ == "__main__":
    main()
