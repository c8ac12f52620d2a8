"""One safetensors tensor as a private memory map whose page tables are filled in a single call.

A streaming merge touches every input byte once. Through an ordinary mapping each 64 KiB of it costs a
page fault (fault-around), and in a virtual machine a fault costs microseconds; a sampled selection that
reads scattered entries faults on nearly every page it reads. ``MADV_POPULATE_READ`` (Linux 5.14+) maps
the whole range from the page cache in one kernel call instead. The mapping is private and writable, so a
stray write lands in a copy-on-write page and never reaches the file; where the advice is not available
the map simply faults as usual.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform.startswith("linux") else None)


@dataclass(frozen=True)
class ByteRange:
    offset: int
    """Absolute offset of the tensor's first byte in the file."""
    nbytes: int


def tensor_ranges(path: Path) -> dict[str, ByteRange]:
    """Where each tensor's bytes lie in a safetensors file (from its JSON header)."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
    data_start = 8 + size
    return {
        name: ByteRange(data_start + info["data_offsets"][0], info["data_offsets"][1] - info["data_offsets"][0])
        for name, info in header.items()
        if name != "__metadata__"
    }


def map_tensor(path: Path, where: ByteRange, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """The tensor at ``where`` in ``path``, mapped (it keeps the mapping alive; dropping it unmaps)."""
    if where.nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    start = where.offset - where.offset % mmap.ALLOCATIONGRANULARITY
    with open(path, "rb") as fh:
        mapping = mmap.mmap(
            fh.fileno(),
            where.offset + where.nbytes - start,
            flags=mmap.MAP_PRIVATE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=start,
        )
    if MADV_POPULATE_READ is not None:
        with contextlib.suppress(OSError):  # older kernel: pages fault in on first touch instead
            mapping.madvise(MADV_POPULATE_READ)
    count = where.nbytes // torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer(mapping, dtype=dtype, count=count, offset=where.offset - start).view(shape)
