"""Statistics folders on disk and the content key that names them.

A statistics folder holds ``statistics.json`` (what was collected from what, and the Gram sample counts),
``fisher.safetensors`` (parameter name → diagonal Fisher, the parameter's shape) and ``gram.safetensors``
(``nn.Linear`` weight name → Σ x xᵀ over its inputs, [in, in]), all float32. Its name under a cache root is
``statistics_key(model, data, settings)``: a hash of the model's identity (a folder's resolved path plus
the name, size and mtime of every weight file, or the bytes of an in-memory module's tensors), the data's
identity string and the settings, so a changed model, data set or setting never reads stale statistics.
Folders are written to a temporary sibling and renamed, so a crash never leaves a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from evomerge.errors import StatisticsError
from evomerge.statistics.settings import StatisticsSettings

FORMAT_VERSION = 1
META_FILE = "statistics.json"
FISHER_FILE = "fisher.safetensors"
GRAM_FILE = "gram.safetensors"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def folder_identity(model_dir: str | Path) -> str:
    """Identity of a checkpoint folder: its resolved path and each weight file's name, size and mtime."""
    root = Path(model_dir).expanduser().resolve()
    if not root.is_dir():
        raise StatisticsError(f"model folder not found: {model_dir}")
    files = sorted(p for p in root.iterdir() if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json"))
    parts = [str(root)] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return "folder:" + _digest("\n".join(parts))


def module_identity(module: torch.nn.Module) -> str:
    """Identity of an in-memory model: a hash of every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "module:" + h.hexdigest()[:32]


def statistics_key(model_identity: str, data_identity: str, settings: StatisticsSettings) -> str:
    payload = {"version": FORMAT_VERSION, "model": model_identity, "data": data_identity, "settings": settings.model_dump(mode="json")}
    return _digest(json.dumps(payload, sort_keys=True))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def is_complete(folder: Path) -> bool:
    return (folder / META_FILE).is_file()


def write_folder(
    folder: Path, meta: dict[str, Any], fisher: dict[str, torch.Tensor], gram: dict[str, torch.Tensor],
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a statistics folder atomically; an existing complete folder (a concurrent writer) wins.

    ``extra`` maps further safetensors file names to their tensors (``second_moments.py``'s file)."""
    files = {FISHER_FILE: fisher, GRAM_FILE: gram, **(extra or {})}
    floats = {file: {k: v.float() for k, v in tensors.items()} for file, tensors in files.items() if tensors}
    return write_atomically(folder, META_FILE, {"format_version": FORMAT_VERSION, **meta}, floats)


def write_atomically(
    folder: Path, meta_file: str, meta: dict[str, Any], files: dict[str, dict[str, torch.Tensor]]
) -> Path:
    """Write a cached folder (safetensors files + JSON metadata) in a temporary sibling, then rename it.

    The metadata file is written last and marks the folder complete: a complete folder already there (a
    concurrent writer of the same key) wins, an incomplete one (a crash before the rename) is replaced.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for file, tensors in files.items():
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / file))
        (tmp / meta_file).write_text(json.dumps(meta, indent=1, sort_keys=True))
        if (folder / meta_file).is_file():
            return folder
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_meta(file: Path, version: int, kind: str) -> dict[str, Any]:
    """A cached folder's JSON metadata, refused when unreadable or written by another format version."""
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise StatisticsError(f"{file}: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format_version") != version:
        raise StatisticsError(f"{file}: unsupported {kind} format; collect them again")
    return data


class StatisticsFolder:
    """Read access to one statistics folder; tensors are read one at a time, on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not is_complete(self.path):
            raise StatisticsError(f"{self.path}: not a statistics folder (no {META_FILE}); collect statistics first")
        self._handles: dict[str, Any] = {}

    @cached_property
    def meta(self) -> dict[str, Any]:
        return read_meta(self.path / META_FILE, FORMAT_VERSION, "statistics")

    def _handle(self, file: str) -> Any:
        if file not in self._handles:
            path = self.path / file
            if not path.is_file():
                kind = "fisher" if file == FISHER_FILE else "gram"
                raise StatisticsError(f"{self.path}: holds no {kind} statistics (collect with kinds including {kind!r})")
            self._handles[file] = safe_open(str(path), framework="pt")
        return self._handles[file]

    def names(self, kind: str) -> set[str]:
        file = FISHER_FILE if kind == "fisher" else GRAM_FILE
        if not (self.path / file).is_file():
            return set()
        return set(self._handle(file).keys())

    def shape(self, kind: str, name: str) -> tuple[int, ...]:
        file = FISHER_FILE if kind == "fisher" else GRAM_FILE
        return tuple(self._handle(file).get_slice(name).get_shape())

    def fisher(self, name: str) -> torch.Tensor:
        return self._handle(FISHER_FILE).get_tensor(name)

    def gram(self, name: str) -> torch.Tensor:
        """Σ_n x_n x_nᵀ over the inputs of the linear layer whose weight is ``name``."""
        return self._handle(GRAM_FILE).get_tensor(name)

    def fisher_norm(self) -> float:
        """‖F‖₂ over every parameter of the model (for ``normalize_fisher``)."""
        norm = self.meta.get("fisher_norm")
        if not isinstance(norm, (int, float)) or norm <= 0:
            raise StatisticsError(f"{self.path}: records no positive Fisher norm; collect the statistics again")
        return float(norm)

    def gram_count(self, name: str) -> int:
        """How many input rows (examples × positions) the Gram of ``name`` sums over."""
        return int(self.meta["gram_counts"][name])
