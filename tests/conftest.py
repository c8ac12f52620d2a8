"""Shared fixtures: tiny local model families (random init, safetensors) built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _family(root: Path, arch: str, n: int) -> dict[str, Path]:
    from evomerge.tiny_models import make_tiny_model, perturbed_copy

    _quiet()
    base = root / f"{arch}-base"
    make_tiny_model(base, arch=arch, seed=0)  # type: ignore[arg-type]
    out = {"base": base}
    for i in range(1, n + 1):
        out[f"ft{i}"] = perturbed_copy(base, root / f"{arch}-ft{i}", seed=100 + i, scale=0.05)
    return out


@pytest.fixture(scope="session")
def llama_family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama base and three synthetic fine-tunes of it."""
    return _family(tmp_path_factory.mktemp("llama"), "llama", 3)


@pytest.fixture(scope="session")
def gpt2_family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny GPT-2 base and three synthetic fine-tunes of it."""
    return _family(tmp_path_factory.mktemp("gpt2"), "gpt2", 3)
