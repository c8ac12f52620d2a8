"""A few hundred steps of next-token training for the zoo's tiny models (CPU, seconds).

Kept apart from :mod:`evomerge.zoo` (which only decides what to build and where) so the cache logic can be
read without the training loop, and so the loop stays a plain, seeded torch loop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from evomerge.progress import progress_bar


def task_texts(task: str, splits: Sequence[str]) -> list[str]:
    """``question answer`` lines of a bundled task's splits: what lm-eval scores as a continuation."""
    from fitness.tasks import TASKS_DIR

    texts: list[str] = []
    for split in splits:
        for line in (TASKS_DIR / f"{task}_{split}.jsonl").read_text().splitlines():
            doc = json.loads(line)
            texts.append(f"{doc['question']} {doc['choices'][doc['label']]}")
    return texts


def _batch(tokenizer: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
            for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
    return ids, labels


def train_lm(model: Any, tokenizer: Any, texts: Sequence[str], *, steps: int, batch_size: int, lr: float,
             seed: int, label: str | None = None) -> float:
    """Train ``model`` in place on ``texts`` with AdamW and a cosine schedule; returns the last loss."""
    if steps == 0 or not texts:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    loss_value = float("nan")
    with progress_bar(label or "training", total=steps, unit="steps", enabled=label is not None) as bar:
        for _ in range(steps):
            loss_value = _step(model, tokenizer, texts, optimizer, gen, batch_size)
            schedule.step()
            bar.advance()
    model.eval()
    return loss_value


def _step(model: Any, tokenizer: Any, texts: Sequence[str], optimizer: Any, gen: torch.Generator,
          batch_size: int) -> float:
    """One optimizer step on a seeded random batch; returns its loss."""
    pick = torch.randint(len(texts), (batch_size,), generator=gen).tolist()
    ids, labels = _batch(tokenizer, [texts[i] for i in pick])
    loss = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long(), labels=labels).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())
