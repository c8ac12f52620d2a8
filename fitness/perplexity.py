"""``perplexity``: language-model perplexity on local text files, one score per document.

Documents are whole files, paragraphs (blank-line separated) or lines of the given files (a path, a list
of paths, or directories searched for ``pattern``). Each document is tokenized once per tokenizer (the
tokenization does not depend on the weights) and scored with a sliding window of ``max_length`` tokens
moving ``stride`` tokens at a time (see :mod:`fitness.windows` for which tokens are scored).

Objective ``perplexity`` (minimize) is ``exp(total NLL / total scored tokens)`` over the scored documents.
Per-example score: the document's mean log-likelihood per token, ``-NLL_doc / tokens_doc`` (≤ 0, larger
is better), so documents of different lengths weigh alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from evomerge.errors import ConfigError
from evomerge.types import Objective
from fitness.base import FitnessConfig, FitnessResult, FitnessSuite
from fitness.registry import register_suite
from fitness.windows import Window, document_nll, plan_windows


class PerplexityConfig(FitnessConfig):
    name: str = "perplexity"
    paths: str | list[str] = Field(min_length=1)
    """Text files or directories (searched recursively for ``pattern``), relative to the config file."""
    pattern: str = "*.txt"
    unit: Literal["file", "paragraph", "line"] = "paragraph"
    max_length: int = Field(256, gt=1)
    stride: int | None = Field(None, gt=0)
    """Tokens the window advances by (default ``max_length``: windows do not overlap)."""
    batch_size: int = Field(4, gt=0)
    add_bos: bool = True
    """Prepend the tokenizer's BOS token so a document's first token is scored too."""
    encoding: str = "utf-8"
    objective: str = "perplexity"

    @model_validator(mode="after")
    def _stride_fits(self) -> PerplexityConfig:
        if self.stride is not None and self.stride > self.max_length:
            raise ValueError(f"stride ({self.stride}) must not exceed max_length ({self.max_length})")
        return self


def find_files(paths: list[str], pattern: str, base_dir: Path) -> list[Path]:
    """The text files named by ``paths`` (directories expanded, sorted); a missing path is an error."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if path.is_dir():
            found = sorted(p for p in path.rglob(pattern) if p.is_file())
            if not found:
                raise ConfigError(f"perplexity: no files matching {pattern!r} in {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"perplexity: text file not found: {path}")
    return files


def split_documents(text: str, unit: str) -> list[str]:
    if unit == "file":
        parts = [text]
    elif unit == "line":
        parts = text.splitlines()
    else:
        parts = _paragraphs(text)
    return [p.strip() for p in parts if p.strip()]


def _paragraphs(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


@register_suite
class PerplexitySuite(FitnessSuite):
    name = "perplexity"
    Config = PerplexityConfig
    config: PerplexityConfig

    def __init__(self, config: PerplexityConfig, seed_tree: Any = None, base_dir: Any = None) -> None:
        super().__init__(config, seed_tree, base_dir)
        paths = [config.paths] if isinstance(config.paths, str) else list(config.paths)
        self.files = find_files(paths, config.pattern, self.base_dir)
        self.documents: list[str] = []
        self._tokenized: tuple[Any, list[list[int]]] | None = None

    def objectives(self) -> list[Objective]:
        return [Objective(self.config.objective, "minimize")]

    def _prepare(self) -> None:
        if not self.documents:
            for path in self.files:
                text = path.read_text(encoding=self.config.encoding)
                self.documents.extend(split_documents(text, self.config.unit))
            if not self.documents:
                raise ConfigError(f"perplexity: no non-empty documents in {', '.join(map(str, self.files))}")

    def _token_ids(self, tokenizer: Any) -> list[list[int]]:
        if self._tokenized is not None and self._tokenized[0] is tokenizer:
            return self._tokenized[1]
        bos = getattr(tokenizer, "bos_token_id", None) if self.config.add_bos else None
        ids = []
        for doc in self.documents:
            tokens = list(tokenizer(doc, add_special_tokens=False)["input_ids"])
            ids.append(([bos] if bos is not None else []) + tokens)
        self._tokenized = (tokenizer, ids)
        return ids

    def __call__(self, model: Any, tokenizer: Any = None) -> FitnessResult:
        if tokenizer is None:
            raise ConfigError("the perplexity suite needs a tokenizer")
        self.ensure_prepared(model)
        ids = self._token_ids(tokenizer)
        chosen = self.subset("documents", len(ids))
        stride = self.config.stride or self.config.max_length
        windows: list[Window] = []
        for doc in chosen:
            windows.extend(plan_windows(int(doc), len(ids[int(doc)]), self.config.max_length, stride))
        nll, tokens = document_nll(model, ids, windows, self.config.batch_size)
        scored = [int(d) for d in chosen if tokens.get(int(d), 0) > 0]
        if not scored:
            raise ValueError("perplexity: no document has a token to score (documents shorter than 2 tokens)")
        total_nll = sum(nll[d] for d in scored)
        total_tokens = sum(tokens[d] for d in scored)
        per_example = np.array([-nll[d] / tokens[d] for d in scored], dtype=np.float64)
        return FitnessResult(
            {self.config.objective: math.exp(total_nll / total_tokens)},
            per_example,
            {
                "nll_per_token": total_nll / total_tokens,
                "n_tokens": total_tokens,
                "n_documents": len(scored),
                "n_skipped_documents": len(chosen) - len(scored),
                "fidelity": self.fidelity_label(),
            },
        )
