"""Reading Hugging Face checkpoints lazily, one tensor at a time.

Safetensors files (single ``model.safetensors`` or sharded with ``model.safetensors.index.json``) are opened
with ``safetensors.safe_open``: listing names, shapes and dtypes reads only the headers, and a tensor's
bytes are memory-mapped when it is asked for, so a merge of three 7B models never holds three models in RAM.
Pickle checkpoints (``pytorch_model.bin``) can execute code when loaded; they are refused unless the recipe
opts in, and then loaded with ``torch.load(weights_only=True, mmap=True)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from evomerge.errors import CheckpointError
from evomerge.io.mapped import ByteRange, map_tensor, tensor_ranges

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"

_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.dtype).element_size()


def resolve_model_path(ref: str, allow_download: bool = False) -> Path:
    """A local folder for ``ref``: a path, or (when allowed) a Hugging Face hub id fetched to the cache."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise CheckpointError(f"{ref}: not a folder; a model is a folder with config.json and weight files")
    looks_like_hub_id = ref.count("/") == 1 and not ref.startswith((".", "/", "~"))
    if allow_download and looks_like_hub_id:
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                ref, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
            )
        except Exception as exc:
            raise CheckpointError(f"{ref}: not a local folder, and fetching it from the hub failed: {exc}") from None
        return Path(local)
    raise CheckpointError(f"model folder not found: {ref}")


class Checkpoint:
    """A model folder: its config and lazily read tensors."""

    def __init__(
        self, path: str | Path, *, allow_pickle: bool = False, label: str | None = None, keep_open: bool = True
    ) -> None:
        """``keep_open=False`` maps each tensor's own byte range when it is asked for (page tables filled
        at once, see ``mapped.py``), so that its pages leave this process's resident memory as soon as the
        tensor is dropped (streaming merges); ``True`` keeps one mapping per file (evaluators, which read
        the same tensors for every candidate)."""
        self.path = Path(path)
        self.label = label or str(path)
        self.keep_open = keep_open
        if not self.path.is_dir():
            raise CheckpointError(f"model folder not found: {self.path}")
        self.allow_pickle = allow_pickle
        self._handles: dict[str, Any] = {}
        self._pickled: dict[str, dict[str, torch.Tensor]] = {}
        self._ranges: dict[str, dict[str, ByteRange]] = {}
        self.format, self._weight_map = self._discover()

    # ------------------------------------------------------------------ discovery
    def _discover(self) -> tuple[str, dict[str, str]]:
        p = self.path
        if (p / SAFETENSORS_INDEX).is_file():
            try:
                index = json.loads((p / SAFETENSORS_INDEX).read_text())
                weight_map = dict(index["weight_map"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{p / SAFETENSORS_INDEX}: invalid index file ({exc})") from None
            for shard in sorted(set(weight_map.values())):
                if not (p / shard).is_file():
                    raise CheckpointError(f"{p / shard}: shard listed in {SAFETENSORS_INDEX} is missing")
            return "safetensors", weight_map
        singles = [p / SAFETENSORS_SINGLE] if (p / SAFETENSORS_SINGLE).is_file() else sorted(p.glob("*.safetensors"))
        singles = [f for f in singles if not f.name.startswith(("adapter_", "optimizer", "training_args"))]
        if singles:
            weight_map = {}
            for f in singles:
                for name in self._open(f.name).keys():  # noqa: SIM118 (safe_open is not iterable)
                    weight_map[name] = f.name
            return "safetensors", weight_map
        pickles = [p / PICKLE_INDEX, p / PICKLE_SINGLE, *sorted(p.glob("*.bin")), *sorted(p.glob("*.pt"))]
        found = next((f for f in pickles if f.is_file()), None)
        if found is not None:
            if not self.allow_pickle:
                raise CheckpointError(
                    f"{found}: pickle checkpoint refused (loading pickles can run arbitrary code); convert it to "
                    "safetensors, or set 'allow_pickle: true' in the recipe to load it with torch.load(weights_only=True)"
                )
            return "pickle", self._pickle_map(found)
        raise CheckpointError(f"{p}: no weight files (expected model.safetensors or {SAFETENSORS_INDEX})")

    def _pickle_map(self, found: Path) -> dict[str, str]:
        if found.name.endswith(".index.json"):
            return dict(json.loads(found.read_text())["weight_map"])
        return {name: found.name for name in self._load_pickle(found.name)}

    def _load_pickle(self, file: str) -> dict[str, torch.Tensor]:
        if file not in self._pickled:
            try:
                obj = torch.load(self.path / file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:
                raise CheckpointError(f"{self.path / file}: cannot load with torch.load(weights_only=True): {exc}") from None
            if not isinstance(obj, dict):
                raise CheckpointError(f"{self.path / file}: expected a state dict, got {type(obj).__name__}")
            self._pickled[file] = obj
        return self._pickled[file]

    def _open(self, file: str) -> Any:
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = safe_open(str(self.path / file), framework="pt", device="cpu")
            except Exception as exc:
                raise CheckpointError(f"{self.path / file}: not a readable safetensors file ({exc})") from None
            self._handles[file] = handle
        return handle

    # ------------------------------------------------------------------ metadata (headers only)
    @cached_property
    def config(self) -> dict[str, Any]:
        cfg = self.path / "config.json"
        if not cfg.is_file():
            return {}
        try:
            data = json.loads(cfg.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{cfg}: invalid JSON ({exc})") from None
        return data if isinstance(data, dict) else {}

    def names(self) -> list[str]:
        return list(self._weight_map)

    def __contains__(self, name: object) -> bool:
        return name in self._weight_map

    @cached_property
    def meta(self) -> dict[str, TensorMeta]:
        """Shape, dtype and file of every tensor, read from the headers alone."""
        out: dict[str, TensorMeta] = {}
        for name, file in self._weight_map.items():
            if self.format == "pickle":
                t = self._load_pickle(file)[name]
                out[name] = TensorMeta(tuple(t.shape), t.dtype, file)
                continue
            sl = self._open(file).get_slice(name)
            dtype = _ST_DTYPES.get(sl.get_dtype())
            if dtype is None:
                raise CheckpointError(f"{self.path / file}: tensor {name!r} has unsupported dtype {sl.get_dtype()}")
            out[name] = TensorMeta(tuple(sl.get_shape()), dtype, file)
        return out

    def total_bytes(self) -> int:
        return sum(m.nbytes for m in self.meta.values())

    # ------------------------------------------------------------------ data
    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name``, memory-mapped (a view of the file; copy it before writing to it)."""
        file = self._weight_map.get(name)
        if file is None:
            raise CheckpointError(f"{self.label}: tensor {name!r} not found")
        if self.format == "pickle":
            return self._load_pickle(file)[name]
        if not self.keep_open:
            ranges = self._ranges.get(file)
            if ranges is None:
                ranges = self._ranges[file] = tensor_ranges(self.path / file)
            meta = self.meta[name]
            return map_tensor(self.path / file, ranges[name], meta.dtype, meta.shape)
        return self._open(file).get_tensor(name)

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self._weight_map:
            yield name, self.get(name)

    def close(self) -> None:
        """Drop the memory maps (their pages stop counting towards this process's memory)."""
        self._handles.clear()
        self._pickled.clear()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {len(self._weight_map)} tensors)"


def model_size_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) + sum(
        os.path.getsize(f) for f in path.glob("*.bin")
    )
