"""Sliding-window negative log-likelihood of tokenized documents under a causal LM.

A document longer than the model's window is cut into windows of ``max_length`` tokens that start every
``stride`` tokens; each window scores only the tokens no earlier window scored, so with
``stride < max_length`` every token after the first is scored exactly once, with at least
``max_length - stride`` tokens of context. With non-overlapping windows (``stride == max_length``) the
first token of each window has no context and is not scored, as in the usual chunked evaluation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Window:
    """Tokens ``[begin, end)`` of document ``doc`` go through the model; ``[first, end)`` are scored."""

    doc: int
    begin: int
    end: int
    first: int


def plan_windows(doc: int, length: int, max_length: int, stride: int) -> list[Window]:
    """The windows covering a document of ``length`` tokens (none if it has fewer than 2)."""
    if max_length < 2 or not (0 < stride <= max_length):
        raise ValueError(f"need max_length >= 2 and 0 < stride <= max_length, got {max_length}, {stride}")
    windows: list[Window] = []
    begin, scored_up_to = 0, 0
    while length >= 2:
        end = min(begin + max_length, length)
        first = max(scored_up_to, begin + 1)
        if end > first:
            windows.append(Window(doc, begin, end, first))
        scored_up_to = end
        if end >= length:
            break
        begin += stride
    return windows


def document_nll(
    model: Any, token_ids: Sequence[Sequence[int]], windows: Sequence[Window], batch_size: int
) -> tuple[dict[int, float], dict[int, int]]:
    """Summed NLL (nats) and scored-token count per document, batching windows of similar length."""
    import torch

    from fitness.base import model_device

    device = model_device(model)
    nll: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    order = sorted(range(len(windows)), key=lambda i: (-(windows[i].end - windows[i].begin), i))
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = [windows[i] for i in order[start : start + batch_size]]
                width = max(w.end - w.begin for w in batch)
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, w in enumerate(batch):
                    ids[row, : w.end - w.begin] = torch.tensor(token_ids[w.doc][w.begin : w.end])
                    mask[row, : w.end - w.begin] = 1
                ids, mask = ids.to(device), mask.to(device)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                token_nll = torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2), ids[:, 1:], reduction="none"
                ).double().cpu()
                for row, w in enumerate(batch):
                    nll[w.doc] += float(token_nll[row, w.first - w.begin - 1 : w.end - w.begin - 1].sum())
                    counts[w.doc] += w.end - w.first
    finally:
        if was_training:
            model.train()
    return dict(nll), dict(counts)
