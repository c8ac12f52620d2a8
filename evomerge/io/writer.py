"""Writing a checkpoint atomically, streaming tensors straight into sharded safetensors files.

The output layout (names, shapes, dtypes) is known before the first tensor is merged, so every shard's
safetensors header is written up front and each merged tensor goes to its offset as soon as it exists:
no shard is ever accumulated in RAM (safetensors' own ``save_file`` needs the whole shard in memory).
Everything is written into a hidden temporary folder next to the target, which is renamed into place only
after every tensor and file is on disk and fsynced; an interrupted export leaves no folder that looks like
a model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from evomerge.errors import CheckpointError
from evomerge.io.byte_writes import background_writeback, pwrite_tensor

DTYPE_CODES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

AUX_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
)


STAGE_ELEMENTS = 1 << 22
"""Elements converted per step when a tensor is written in another dtype than it is held in."""


def parse_size(size: int | str) -> int:
    """``"5GB"``, ``"500MB"``, ``"2GiB"`` or a byte count → bytes."""
    if isinstance(size, int):
        return size
    text = size.strip().upper().replace(" ", "")
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * factor)
            except ValueError:
                break
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"invalid size {size!r}; use e.g. '5GB', '500MB' or a byte count") from None


@dataclass(frozen=True)
class TensorSlot:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = torch.empty((), dtype=self.dtype).element_size()
        for d in self.shape:
            n *= d
        return n


def main_float_dtype(layout: Iterable[TensorSlot]) -> torch.dtype:
    """The floating dtype most of an output's tensors have (``config.json``'s ``dtype``); float32 if none."""
    floats = Counter(slot.dtype for slot in layout if slot.dtype.is_floating_point)
    return floats.most_common(1)[0][0] if floats else torch.float32


@dataclass
class _Shard:
    path: Path
    slots: list[TensorSlot]
    data_start: int
    offsets: dict[str, int]


class CheckpointWriter:
    """Context manager: ``with CheckpointWriter(out, layout) as w: w.write(name, t) ...`` commits on success."""

    def __init__(
        self,
        out_dir: str | Path,
        layout: Sequence[TensorSlot],
        *,
        max_shard_size: int | str = "5GB",
        overwrite: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir).resolve()
        if self.out_dir.exists() and not overwrite and any(self.out_dir.iterdir()):
            raise CheckpointError(f"{self.out_dir}: output folder exists and is not empty (use --overwrite)")
        self.overwrite = overwrite
        self.layout = list(layout)
        self.max_shard = parse_size(max_shard_size)
        self.metadata = {"format": "pt", **(metadata or {})}
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent))
        self._written: set[str] = set()
        self._fds: dict[Path, int] = {}
        self._stage: dict[torch.dtype, torch.Tensor] = {}
        self._shards = self._plan_shards()
        self._where = {slot.name: shard for shard in self._shards for slot in shard.slots}
        self._slots = {slot.name: slot for slot in self.layout}
        try:
            for shard in self._shards:
                self._write_header(shard)
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------ layout
    def _plan_shards(self) -> list[_Shard]:
        groups: list[list[TensorSlot]] = [[]]
        size = 0
        for slot in self.layout:
            if groups[-1] and size + slot.nbytes > self.max_shard:
                groups.append([])
                size = 0
            groups[-1].append(slot)
            size += slot.nbytes
        n = len(groups)
        names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        return [_Shard(self.tmp / name, slots, 0, {}) for name, slots in zip(names, groups)]

    def _write_header(self, shard: _Shard) -> None:
        header: dict[str, Any] = {"__metadata__": self.metadata}
        offset = 0
        for slot in shard.slots:
            code = DTYPE_CODES.get(slot.dtype)
            if code is None:
                raise CheckpointError(f"cannot write tensor {slot.name!r} of dtype {slot.dtype}")
            header[slot.name] = {"dtype": code, "shape": list(slot.shape), "data_offsets": [offset, offset + slot.nbytes]}
            shard.offsets[slot.name] = offset
            offset += slot.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        fd = os.open(shard.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._fds[shard.path] = fd
        os.pwrite(fd, len(raw).to_bytes(8, "little") + raw, 0)
        shard.data_start = 8 + len(raw)
        os.ftruncate(fd, shard.data_start + offset)

    # ------------------------------------------------------------------ writing
    def write(self, name: str, tensor: torch.Tensor) -> None:
        slot = self._slots.get(name)
        if slot is None:
            raise CheckpointError(f"tensor {name!r} is not part of the output layout")
        if tuple(tensor.shape) != slot.shape:
            raise CheckpointError(f"tensor {name!r}: expected shape {list(slot.shape)}, got {list(tensor.shape)}")
        shard = self._where[name]
        data = tensor.detach()
        if data.device.type != "cpu":
            data = data.to(dtype=slot.dtype).cpu()
        data = data.reshape(-1)
        fd = self._fds[shard.path]
        first = pos = shard.data_start + shard.offsets[name]
        if data.dtype == slot.dtype:
            pos = pwrite_tensor(fd, data, pos)
        else:  # convert through a reused staging buffer: no full-size converted copy per tensor
            stage = self._staging(slot.dtype, data.numel())
            for start in range(0, data.numel(), stage.numel()):
                part = stage[: min(stage.numel(), data.numel() - start)]
                part.copy_(data[start : start + part.numel()])
                pos = pwrite_tensor(fd, part, pos)
        writeback = background_writeback()
        if writeback is not None and pos > first:
            writeback(fd, first, pos - first)
        self._written.add(name)

    def _staging(self, dtype: torch.dtype, numel: int) -> torch.Tensor:
        stage = self._stage.get(dtype)
        if stage is None or stage.numel() < min(numel, STAGE_ELEMENTS):
            stage = torch.empty(min(numel, STAGE_ELEMENTS), dtype=dtype)
            self._stage[dtype] = stage
        return stage

    def write_json(self, filename: str, obj: Any) -> None:
        (self.tmp / filename).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def write_text(self, filename: str, text: str) -> None:
        (self.tmp / filename).write_text(text)

    def copy_files(self, src_dir: Path, names: Iterable[str] = AUX_FILES) -> list[str]:
        copied = []
        for name in names:
            src = Path(src_dir) / name
            if src.is_file():
                shutil.copy2(src, self.tmp / name)
                copied.append(name)
        return copied

    # ------------------------------------------------------------------ commit / abort
    def commit(self) -> Path:
        missing = [s.name for s in self.layout if s.name not in self._written]
        if missing:
            self.abort()
            raise CheckpointError(f"export incomplete: {len(missing)} tensor(s) never written, first {missing[0]!r}")
        for fd in self._fds.values():
            os.fsync(fd)
            os.close(fd)
        self._fds.clear()
        if len(self._shards) > 1:
            total = sum(s.nbytes for s in self.layout)
            weight_map = {slot.name: shard.path.name for shard in self._shards for slot in shard.slots}
            self.write_json("model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
        dir_fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if self.out_dir.exists():
            trash = self.out_dir.parent / f".{self.out_dir.name}.old-{os.getpid()}"
            os.replace(self.out_dir, trash)
            os.replace(self.tmp, self.out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out_dir)
        return self.out_dir

    def abort(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def save_state_dict(
    state: dict[str, torch.Tensor],
    out_dir: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    config: dict[str, Any] | None = None,
    aux_from: Path | None = None,
) -> Path:
    """Write an in-memory state dict as an HF checkpoint folder (atomic, sharded)."""
    layout = [
        TensorSlot(name, tuple(t.shape), dtype if (dtype is not None and t.is_floating_point()) else t.dtype)
        for name, t in state.items()
    ]
    with CheckpointWriter(out_dir, layout, max_shard_size=max_shard_size, overwrite=overwrite) as writer:
        for name, tensor in state.items():
            writer.write(name, tensor)
        if config is not None:
            writer.write_json("config.json", config)
        if aux_from is not None:
            writer.copy_files(aux_from)
    return Path(out_dir)
