"""A model folder's vocabulary: which token string has which id, read from its tokenizer files.

Merging models whose tokenizers differ means matching embedding rows by token, not by position, so the
planner needs every source's token → id map (and which tokens were *added*, with their settings, so the
merged tokenizer can carry them over). Only tokenizer files are read, never weights. ``tokenizer.json``
is read with the ``tokenizers`` library; a folder with only slow-tokenizer files (``tokenizer.model``,
``vocab.json`` ...) is read through transformers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evomerge.errors import CheckpointError

ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
"""The settings of an added token in ``tokenizer.json`` (besides its id and content)."""

SLOW_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tokenizer_config.json")


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Token → id of one tokenizer, its added tokens included."""

    ids: Mapping[str, int]
    added: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Added-token content → its settings (``special``, ``normalized`` ...): special and user-added tokens."""

    def __len__(self) -> int:
        return len(self.ids)

    def same_ids(self, other: Vocabulary) -> bool:
        return dict(self.ids) == dict(other.ids)


def read_vocabulary(folder: str | Path) -> Vocabulary | None:
    """The vocabulary of the tokenizer in ``folder``; None when the folder has no tokenizer files."""
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if path.is_file():
        return _from_tokenizer_json(path)
    if any((folder / name).is_file() for name in SLOW_TOKENIZER_FILES):
        return _from_transformers(folder)
    return None


def _from_tokenizer_json(path: Path) -> Vocabulary:
    from tokenizers import Tokenizer

    try:
        text = path.read_text()
        data = json.loads(text)
        ids = Tokenizer.from_str(text).get_vocab(with_added_tokens=True)
    except Exception as exc:  # json, tokenizers and OS errors all mean "this file cannot be used"
        raise CheckpointError(f"{path}: not a readable tokenizer file ({exc})") from None
    added = {
        str(entry["content"]): {k: entry[k] for k in ADDED_TOKEN_FLAGS if k in entry}
        for entry in data.get("added_tokens") or []
        if isinstance(entry, dict) and "content" in entry
    }
    return Vocabulary(dict(ids), added)


def _from_transformers(folder: Path) -> Vocabulary:
    """Slow-tokenizer folders (sentencepiece, WordPiece files): transformers knows every format."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
        ids = dict(tok.get_vocab())
        decoder = getattr(tok, "added_tokens_decoder", {}) or {}
    except Exception as exc:
        raise CheckpointError(f"{folder}: cannot read its tokenizer ({exc})") from None
    added = {
        str(token.content): {k: getattr(token, k) for k in ADDED_TOKEN_FLAGS if hasattr(token, k)}
        for token in decoder.values()
    }
    return Vocabulary(ids, added)
