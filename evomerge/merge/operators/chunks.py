"""Cache-sized spans of flat tensors, for operators that make several passes over one weight.

A whole-tensor op per step makes every intermediate a full-size tensor in main memory: fresh pages (page
faults), and a memory round trip per op. Walking the weight in spans of ``CHUNK`` elements keeps the
intermediates in the core's L2 cache, so only the inputs stream from memory and the output is written once.

``CHUNK`` is PyTorch's intra-op grain size: an op on one span runs on the calling thread. On a busy machine a
thread barrier per op costs more than the parallelism gains (measured: 10x slower under load), and a merge
is bound by memory bandwidth, which one core nearly saturates.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

CHUNK = 1 << 15
"""Elements per span (128 KiB of float32): a handful of scratch spans fit in a core's L2 cache."""


def span_size(tensor: torch.Tensor) -> int:
    """``CHUNK`` on the CPU; on an accelerator one span per tensor (a kernel launch per span would dominate)."""
    return CHUNK if tensor.device.type == "cpu" else max(1, tensor.numel())


def flat(tensor: torch.Tensor) -> torch.Tensor:
    """A 1-d view of ``tensor`` (a copy only when it is not contiguous)."""
    return tensor.reshape(-1)


def spans(n: int, chunk: int = CHUNK) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` ranges that cover ``range(n)`` in order, each at most ``chunk`` long."""
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


def scratch(like: torch.Tensor, count: int, chunk: int, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """``count`` reusable span buffers on ``like``'s device (``like``'s dtype unless ``dtype`` is given)."""
    size = min(chunk, max(1, like.numel()))
    return [torch.empty(size, dtype=dtype or like.dtype, device=like.device) for _ in range(count)]
