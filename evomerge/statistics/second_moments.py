"""Adam's second moments (``exp_avg_sq``) of a fine-tuning run: the curvature statistic of OTA and FFG.

Adam keeps v, an exponential average of squared gradients, for every parameter; at the end of fine-tuning it
is a diagonal curvature (empirical Fisher) estimate that every training run produces for free (Mahdavinia
et al., Harnessing Optimization Dynamics for Curvature-Informed Model Merging, arXiv 2509.11167). Sources:

* an optimizer checkpoint (a Hugging Face Trainer's ``optimizer.pt``, any ``torch.save`` of
  ``optimizer.state_dict()``), read with ``torch.load(weights_only=True)``. Its state is keyed by parameter
  *index*, named by ``optimizer_state.py``;
* a safetensors export keyed by parameter name (the OTA authors' ``exp_avg_sq.safetensors``).

They are stored as a statistics folder (``statistics.json`` + ``second_moment.safetensors``), which recipes
name in a model's ``statistics`` parameter like Fisher and Gram folders. ``compression="rank1"`` stores a
matrix as its row and column sums r = v·1, c = 1ᵀv and reads back v̂ = r cᵀ / (1ᵀv1) (the paper's Lemma 1,
Adafactor's factorisation): m + n numbers instead of m·n, exact when v has rank one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from torch import nn

from evomerge.errors import CheckpointError, StatisticsError
from evomerge.models import pretrained_skeleton
from evomerge.statistics.cache import StatisticsFolder, is_complete, write_folder
from evomerge.statistics.optimizer_state import optimizer_second_moments

SECOND_MOMENT_FILE = "second_moment.safetensors"
ROWS, COLS = "::rows", "::cols"
"""Key suffixes of a rank-1 compressed matrix's row and column sums."""
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
EXPORTED_SUFFIX = ".exp_avg_sq"
Compression = Literal["none", "rank1"]


# ------------------------------------------------------------------ rank-1 compression
def rank1_factors(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column sums (r = v·1, c = 1ᵀv) of a non-negative matrix, in float64."""
    v64 = v.double()
    return v64.sum(1), v64.sum(0)


def rank1_expand(rows: torch.Tensor, cols: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """v̂ = r cᵀ / Σr: the rank-1 matrix with the given row and column sums (zero when they are)."""
    total = float(rows.double().sum())
    if total <= 0:
        return torch.zeros(len(rows), len(cols), dtype=dtype)
    return torch.outer(rows.double(), cols.double() / total).to(dtype)


def rank1_approximation(v: torch.Tensor) -> torch.Tensor:
    """v̂ of a matrix (other shapes are returned as they are: the paper factors matrices only)."""
    return rank1_expand(*rank1_factors(v), dtype=v.dtype).to(v.device) if v.dim() == 2 else v


# ------------------------------------------------------------------ sources
def exported_second_moments(path: str | Path) -> dict[str, torch.Tensor]:
    """Parameter name → second moment from a safetensors export (keys ``name`` or ``name.exp_avg_sq``)."""
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise StatisticsError(f"{path}: not a readable safetensors file ({exc})") from None
    return {k.removesuffix(EXPORTED_SUFFIX): v.float() for k, v in tensors.items()}


def model_skeleton(checkpoint_dir: str | Path, model_class: str = "causal_lm") -> nn.Module:
    """The checkpoint's model on the meta device, to name an optimizer state's parameters."""
    try:
        skeleton = pretrained_skeleton(checkpoint_dir, model_class)
    except CheckpointError as exc:
        raise StatisticsError(str(exc)) from None
    if skeleton is None:
        raise StatisticsError(f"model_class must name a transformers Auto class to read {checkpoint_dir}; "
                              f"got {model_class!r}")
    return skeleton


def read_second_moments(
    source: str | Path, model: nn.Module | None = None, *, model_class: str = "causal_lm"
) -> dict[str, torch.Tensor]:
    """Second moments from a ``.safetensors`` export, an optimizer state file, or a Trainer checkpoint
    folder (its ``optimizer.pt``, named through ``model`` or a skeleton built from its config)."""
    path = Path(source).expanduser()
    if path.suffix == ".safetensors":
        return exported_second_moments(path)
    if path.is_dir():
        found = next((path / f for f in OPTIMIZER_FILES if (path / f).is_file()), None)
        if found is None:
            raise StatisticsError(
                f"{path}: no {' or '.join(OPTIMIZER_FILES)} (a ZeRO/FSDP checkpoint? gather it first)"
            )
        return optimizer_second_moments(
            found, model if model is not None else model_skeleton(path, model_class)
        )
    return optimizer_second_moments(path, model)


# ------------------------------------------------------------------ statistics folders
def write_second_moments(
    moments: Mapping[str, torch.Tensor],
    folder: str | Path,
    *,
    compression: Compression = "none",
    source: str = "",
    exist_ok: bool = False,
) -> SecondMomentFolder:
    """Store second moments as a new statistics folder (matrices as rank-1 factors with ``rank1``).

    A complete folder already there is an error (it would be kept, not overwritten), unless ``exist_ok``
    (a cache: a concurrent writer of the same source got there first)."""
    path = Path(folder).expanduser()
    if is_complete(path) and not exist_ok:
        raise StatisticsError(f"{path}: already a statistics folder; write the second moments to a new one")
    if compression not in ("none", "rank1"):
        raise StatisticsError(f"compression must be 'none' or 'rank1', got {compression!r}")
    stored: dict[str, torch.Tensor] = {}
    for name, v in moments.items():
        if bool((v < 0).any()):
            raise StatisticsError(
                f"second moments of {name!r} have negative entries (not Adam's exp_avg_sq?)"
            )
        if compression == "rank1" and v.dim() == 2:
            stored[name + ROWS], stored[name + COLS] = rank1_factors(v)
        else:
            stored[name] = v
    meta = {"second_moment": {"source": source, "compression": compression, "tensors": len(moments)}}
    return SecondMomentFolder(write_folder(path, meta, {}, {}, {SECOND_MOMENT_FILE: stored}))


def second_moment_statistics(
    source: str | Path,
    cache_dir: str | Path,
    *,
    model: nn.Module | None = None,
    compression: Compression = "none",
    model_class: str = "causal_lm",
) -> SecondMomentFolder:
    """The statistics folder of ``source``'s second moments under ``cache_dir``, read and written once
    (keyed by the source file's path, size and mtime and the compression)."""
    path = Path(source).expanduser().resolve()
    file = next((path / f for f in OPTIMIZER_FILES if (path / f).is_file()), path) if path.is_dir() else path
    if not file.is_file():
        raise StatisticsError(f"second-moment source not found: {source}")
    stat = file.stat()
    key = hashlib.sha256(f"{file}:{stat.st_size}:{stat.st_mtime_ns}:{compression}".encode()).hexdigest()[:32]
    folder = Path(cache_dir).expanduser() / f"second-moments-{key}"
    if is_complete(folder):
        return SecondMomentFolder(folder)
    moments = read_second_moments(path, model, model_class=model_class)
    return write_second_moments(moments, folder, compression=compression, source=str(file), exist_ok=True)


class SecondMomentFolder(StatisticsFolder):
    """A statistics folder's second moments, read one tensor at a time (expanded from factors when compressed)."""

    def has_second_moments(self) -> bool:
        return (self.path / SECOND_MOMENT_FILE).is_file()

    def _file(self) -> Any:
        if not self.has_second_moments():
            raise StatisticsError(
                f"{self.path}: holds no second moments (write them with "
                "evomerge.statistics.second_moments.write_second_moments)"
            )
        return self._handle(SECOND_MOMENT_FILE)

    @cached_property
    def _keys(self) -> dict[str, tuple[str, ...]]:
        """Parameter name → its stored keys (one, or the rows and columns of a factored matrix)."""
        keys: dict[str, tuple[str, ...]] = {}
        for key in self._file().keys():  # noqa: SIM118 (safe_open is not iterable)
            if key.endswith(ROWS):
                keys[key.removesuffix(ROWS)] = (key, key.removesuffix(ROWS) + COLS)
            elif not key.endswith(COLS):
                keys[key] = (key,)
        return keys

    def moment_names(self) -> set[str]:
        return set(self._keys)

    def has_moment(self, name: str) -> bool:
        return name in self._keys

    def moment_shape(self, name: str) -> tuple[int, ...]:
        handle = self._file()
        shapes = [tuple(handle.get_slice(k).get_shape()) for k in self._keys[name]]
        return shapes[0] if len(shapes) == 1 else (shapes[0][0], shapes[1][0])

    def second_moment(self, name: str) -> torch.Tensor:
        handle = self._file()
        keys = self._keys[name]
        if len(keys) == 1:
            return handle.get_tensor(keys[0])
        return rank1_expand(handle.get_tensor(keys[0]), handle.get_tensor(keys[1]))

    def stored_numel(self) -> int:
        """Numbers stored on disk (m + n per factored matrix)."""
        handle = self._file()
        return sum(math.prod(handle.get_slice(k).get_shape()) for keys in self._keys.values() for k in keys)
