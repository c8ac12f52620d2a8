"""Loglikelihoods with the output head and log-softmax applied only where lm-eval reads them.

HFLM's causal path runs the model's output head and a full-vocabulary log-softmax at every position of
every padded row, then keeps only the continuation positions. For a real model that is a large share of
an evaluation (SmolLM2-135M: a 576 x 49,152 head and a 49,152-way softmax per position). Here the
backbone runs on exactly the batches HFLM would build (same order, grouping and padding, through HFLM's
own ``_model_call``), and a forward pre-hook on the model's ``get_output_embeddings()`` hands the head
only the hidden states at continuation positions. The model's forward still runs whatever follows its
head (logit soft-capping, scaling), so no architecture needs a special case.

When the hook cannot be used (no output embeddings module, a model that computes its logits another
way, an output that is not the gathered shape) the batch's full logits are used, which is HFLM's own
computation. Seq2seq models and automatic batch sizes are left to HFLM (see :func:`applies`).

Scores are picked and summed as HFLM does, including lm-eval 0.4's handling of grouped continuations (a
group shares its longest member's window: log-probs from the window's first positions, the greedy check
on its last). What can differ is rounding: the head's matrix product has fewer rows, and a BLAS may pick
another kernel for another row count. With :data:`HEAD_ROWS_MIN` and one thread, MKL gave bitwise
HFLM's log-probs on the test models and SmolLM2-135M; with two threads it can differ by ~1e-6 on a wide
head, and so may other BLAS libraries and GPUs, so an accuracy changes only if two choices tie to that
precision. ``continuation_logits: false`` in the
suite config restores HFLM's path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

Request = tuple[tuple[str, str] | None, list[int], list[int]]
"""What HFLM's ``_loglikelihood_tokens`` takes: (cache key strings, context ids, continuation ids)."""

log = logging.getLogger(__name__)

HEAD_ROWS_MIN = 16
"""The head gets at least this many rows (the gathered ones, the last repeated), and a batch of fewer
positions is not gathered at all: BLAS libraries switch to small-matrix kernels below about 16 rows (MKL:
1, 2 and 3-15 rows each round differently from a big batch), which would make the rounding differ from
HFLM's more often."""


def applies(lm: Any) -> bool:
    """Whether :func:`score_requests` can stand in for HFLM here (causal model, fixed batch size)."""
    return lm.backend == "causal" and isinstance(lm.batch_size, int)


def longest_first(request: Request) -> tuple[int, tuple[int, ...]]:
    """HFLM's batch order: longest input first, ties by token ids (so batches are HFLM's batches)."""
    tokens = request[1] + request[2]
    return -len(tokens), tuple(tokens)


def shared_window(request: Request) -> list[int]:
    """HFLM's grouping key: requests with equal context+continuation[:-1] share one model row."""
    return request[1] + request[2][:-1]


class HeadGather:
    """A one-shot forward pre-hook on the output head that keeps only the hidden states at given positions."""

    def __init__(self, model: Any) -> None:
        get = getattr(model, "get_output_embeddings", None)
        head = get() if callable(get) else None
        self.head: torch.nn.Module | None = head if isinstance(head, torch.nn.Module) else None
        self.broken = False
        self.fired = False

    @property
    def usable(self) -> bool:
        return self.head is not None and not self.broken

    @contextmanager
    def gathering(self, rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]) -> Iterator[None]:
        """While active, the head's first call sees ``hidden[rows, cols]`` as a [1, N, hidden] batch."""
        assert self.head is not None, "gathering needs an output head"
        self.fired = False

        def keep_positions(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            hidden = args[0] if args else None
            if self.fired or not isinstance(hidden, torch.Tensor) or tuple(hidden.shape[:2]) != shape:
                return None
            self.fired = True
            return (hidden[rows, cols].unsqueeze(0), *args[1:])

        handle = self.head.register_forward_pre_hook(keep_positions)
        try:
            yield
        finally:
            handle.remove()


def _inputs(chunk: Sequence[Request], max_length: int) -> tuple[list[list[int]], list[int]]:
    """HFLM's model rows (context+continuation, left-truncated, last token dropped) and continuation lengths."""
    rows, cont_lens = [], []
    for _, context, continuation in chunk:
        if not context or not continuation or len(continuation) > max_length:
            raise ValueError(
                f"lm-eval request with {len(context)} context and {len(continuation)} continuation tokens "
                f"cannot be scored (both must be non-empty, the continuation at most {max_length})"
            )
        tokens = context + continuation
        if len(tokens) > max_length + 1:
            log.warning("context+continuation of %d tokens truncated on the left to %d", len(tokens), max_length)
        rows.append(tokens[-(max_length + 1) :][:-1])
        cont_lens.append(len(continuation))
    return rows, cont_lens


def _model_call_gathered(
    lm: Any, head: HeadGather, batch: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor | None:
    """The model's logits [1, N, vocab] at (rows, cols) only, or None where the hook did not work."""
    if not head.usable:
        return None
    try:
        with head.gathering(rows, cols, (batch.shape[0], batch.shape[1])):
            logits = lm._model_call(batch)
    except Exception:
        if not head.fired:
            raise
        logits = None  # the model could not handle the gathered hidden states
    if not head.fired:
        return None
    if logits is None or tuple(logits.shape[:2]) != (1, len(rows)):
        head.broken = True  # never gather for this model again
        log.warning("%s does not take hidden states gathered at its output head; using full logits",
                    type(lm.model).__name__)
        return None
    return logits


def continuation_logprobs(lm: Any, head: HeadGather, rows: list[list[int]], cont_lens: list[int]) -> torch.Tensor:
    """Log-probabilities [sum(cont_lens), vocab]: each row's last ``cont_len`` positions, rows in order."""
    lengths = [len(r) for r in rows]
    width = max(lengths)
    padded = np.zeros((len(rows), width), dtype=np.int64)  # right-padded with 0, as HFLM pads
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    row_idx = np.repeat(np.arange(len(rows)), cont_lens)
    col_idx = np.concatenate([np.arange(n - c, n) for n, c in zip(lengths, cont_lens, strict=True)])
    wanted = len(row_idx)
    if wanted < HEAD_ROWS_MIN:
        row_idx = np.concatenate([row_idx, np.full(HEAD_ROWS_MIN - wanted, row_idx[-1])])
        col_idx = np.concatenate([col_idx, np.full(HEAD_ROWS_MIN - wanted, col_idx[-1])])
    batch = torch.from_numpy(padded).to(lm.device)
    rows_t, cols_t = torch.from_numpy(row_idx).to(lm.device), torch.from_numpy(col_idx).to(lm.device)
    logits = _model_call_gathered(lm, head, batch, rows_t, cols_t) if padded.size >= HEAD_ROWS_MIN else None
    if logits is not None:
        picked = logits[0, :wanted]
    else:  # full logits; extra leading positions (virtual tokens) shift the window as in HFLM
        logits = lm._model_call(batch)
        picked = logits[rows_t[:wanted], cols_t[:wanted] + (logits.shape[1] - width)]
    return torch.nn.functional.log_softmax(picked, dim=-1, dtype=lm.softmax_dtype)


def is_argmax(logprobs: torch.Tensor, positions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``logprobs[positions].argmax(-1) == tokens``, computing the (slow) argmax only where it can hold.

    A token is the argmax iff it attains the row's maximum (or the maximum is NaN, which argmax picks)
    and no earlier token does; ``amax`` finds the candidates about ten times faster than ``argmax``.
    """
    maxima = logprobs.amax(dim=-1)[positions]
    possible = (logprobs[positions, tokens] == maxima) | maxima.isnan()
    result = torch.zeros_like(tokens, dtype=torch.bool)
    if bool(possible.any()):
        result[possible] = logprobs[positions[possible]].argmax(dim=-1) == tokens[possible]
    return result


def score_requests(lm: Any, requests: Sequence[Request], head: HeadGather) -> list[tuple[float, bool]]:
    """(sum of continuation log-probs, continuation is greedy) per request, in request order, as HFLM.

    ``head`` is kept by the caller for the life of its model, so a model found not to take gathered
    hidden states is found (and warned about) once.
    """
    from lm_eval.models.utils import Collator

    ordered = Collator(
        list(requests), sort_fn=longest_first, group_by="contexts" if lm.logits_cache else None, group_fn=shared_window
    )
    max_length = lm.max_length
    answers: list[tuple[float, bool]] = []
    for chunk in ordered.get_batched(n=lm.batch_size):
        rows, cont_lens = _inputs(chunk, max_length)
        logprobs = continuation_logprobs(lm, head, rows, cont_lens)
        members: list[tuple[tuple[str, str] | None, int]] = []  # (cache key, continuation length)
        picks: list[int] = []  # log-probs are read at a window's first positions ...
        greedy_checks: list[int] = []  # ... the greedy match is checked at its last ones
        tokens: list[int] = []
        start = 0
        for (key, context, continuation), width in zip(chunk, cont_lens, strict=True):
            end = start + width
            for member_key, member_cont, _ in ordered.get_cache(
                req_str=key, cxt_toks=context, cont_toks=continuation, logits=logprobs[start:end].unsqueeze(0)
            ):
                n = len(member_cont)
                picks.extend(range(start, start + n))
                greedy_checks.extend(range(end - n, end))
                tokens.extend(member_cont)
                members.append((member_key, n))
            start = end
        device = logprobs.device
        token_ids = torch.tensor(tokens, device=device)
        picked = logprobs[torch.tensor(picks, device=device), token_ids]
        greedy = is_argmax(logprobs, torch.tensor(greedy_checks, device=device), token_ids).tolist()
        offset = 0
        for member_key, n in members:
            # summed per request, as HFLM sums each request's tensor
            answer = (float(picked[offset : offset + n].sum()), all(greedy[offset : offset + n]))
            offset += n
            answers.append(answer)
            if member_key is not None:
                lm.cache_hook.add_partial("loglikelihood", member_key, answer)
    return ordered.get_original(answers)
