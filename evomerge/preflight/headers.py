"""What a source model folder says about itself, read from headers and small files only.

Safetensors headers (through :class:`~evomerge.io.checkpoint.Checkpoint`, which maps files but touches
no tensor bytes until a tensor is asked for), ``config.json`` and the tokenizer files. Pickle
checkpoints are recognised by their file names and never unpickled: reading even their shapes would mean
running the pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.errors import CheckpointError
from evomerge.preflight.report import Check

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "spiece.model",
                   "added_tokens.json", "tokenizer_config.json", "special_tokens_map.json")
_VOCAB_DEFINING = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "spiece.model",
                   "added_tokens.json")
_PICKLE_PATTERNS = ("pytorch_model.bin.index.json", "*.bin", "*.pt", "*.pth", "*.ckpt")


@dataclass(frozen=True)
class TokenizerInfo:
    files: tuple[str, ...]
    fingerprint: str | None
    """Hash of the files that define the token ids; None when the folder has none of them."""


@dataclass(frozen=True)
class SourceHeaders:
    """One source model as the pre-flight checks see it (no tensor data)."""

    ref: str
    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    nbytes: dict[str, int]
    config: dict[str, Any]
    tokenizer: TokenizerInfo

    @property
    def total_bytes(self) -> int:
        return sum(self.nbytes.values())

    @property
    def largest_numel(self) -> int:
        return max((math.prod(s) for s in self.shapes.values()), default=0)

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())


def pickle_files(folder: Path) -> list[Path]:
    """Pickle weight files in a folder that holds no safetensors file (those would be used instead)."""
    if any(folder.glob("*.safetensors")):
        return []
    found: list[Path] = []
    for pattern in _PICKLE_PATTERNS:
        found += sorted(folder.glob(pattern))
    return found


def tokenizer_info(folder: Path) -> TokenizerInfo:
    files = tuple(n for n in TOKENIZER_FILES if (folder / n).is_file())
    defining = [n for n in _VOCAB_DEFINING if n in files]
    if not defining:
        return TokenizerInfo(files, None)
    digest = hashlib.sha256()
    for name in defining:
        digest.update(name.encode())
        digest.update(_vocab_bytes(folder / name))
    return TokenizerInfo(files, digest.hexdigest()[:16])


def _vocab_bytes(path: Path) -> bytes:
    """The part of a tokenizer file that fixes the token ids (tokenizer.json also holds unrelated settings
    such as truncation, which differ between otherwise identical tokenizers)."""
    raw = path.read_bytes()
    if path.name != "tokenizer.json":
        return raw
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    keep = {k: data.get(k) for k in ("model", "added_tokens")}
    return json.dumps(keep, sort_keys=True).encode()


def read_headers(ref: str, folder: Path, field_path: str, allow_pickle: bool = False) -> SourceHeaders | Check:
    """The headers of ``folder``, or the one finding that says why they cannot be read."""
    from evomerge.io.checkpoint import Checkpoint

    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "model folder not found"
        return Check("files", "problem", f"{field_path}: {what}: {folder}", {"model": ref})
    pickles = pickle_files(folder)
    if pickles:
        if allow_pickle:
            return Check("format", "warning", f"{pickles[0]}: pickle checkpoint (allowed by allow_pickle); its tensors "
                         "are not checked here, since reading them means unpickling the file", {"model": ref})
        return Check("format", "problem", f"{pickles[0]}: not safetensors (a pickle checkpoint, refused because "
                     "loading it can run code); convert it to safetensors, or set 'allow_pickle: true'", {"model": ref})
    try:
        ckpt = Checkpoint(folder, label=ref)
    except CheckpointError as exc:
        return Check("files", "problem", str(exc), {"model": ref})
    try:
        meta, config = ckpt.meta, ckpt.config
    except CheckpointError as exc:
        return Check("files", "problem", str(exc), {"model": ref})
    finally:
        ckpt.close()
    return SourceHeaders(
        ref=ref, path=folder,
        shapes={n: m.shape for n, m in meta.items()},
        dtypes={n: str(m.dtype).removeprefix("torch.") for n, m in meta.items()},
        nbytes={n: m.nbytes for n, m in meta.items()},
        config=config, tokenizer=tokenizer_info(folder),
    )
