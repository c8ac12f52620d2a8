"""Tensor bytes to a file at a given offset, and starting their trip to disk early.

Writing a merged model is ``pwrite`` per tensor into a preallocated shard, then one fsync before the
atomic rename. Asking the kernel to start writing each range back right away lets the disk work while the
next tensors are merged, so the final fsync has little left to wait for.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

import torch

SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def background_writeback() -> Callable[[int, int, int], object] | None:
    """Linux's ``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)``: starts writing a range to disk
    without waiting, so the disk works while the next tensors are merged and the fsync at commit finds
    little left to do. None where the C library lacks it (the fsync then does all the work)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        start = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    start.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    start.restype = ctypes.c_int
    return lambda fd, offset, n: start(fd, offset, n, SYNC_FILE_RANGE_WRITE)


def pwrite_tensor(fd: int, data: torch.Tensor, pos: int) -> int:
    """Write a contiguous CPU tensor's bytes at ``pos``; returns the offset after them."""
    view = memoryview(data.view(torch.uint8).numpy().data) if data.numel() else memoryview(b"")
    while len(view):
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n
    return pos
