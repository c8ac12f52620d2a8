"""Helpers shared by the fitness tests: tiny in-memory language models, rewritten in place like candidates."""

from __future__ import annotations

from typing import Any

import torch


def tiny_lm(seed: int = 0, arch: str = "llama") -> tuple[Any, Any]:
    """A random tiny causal LM (eval mode) and its character-level tokenizer, built in memory."""
    from transformers.utils import logging as hf_logging

    from evomerge.tiny_models import build_tokenizer, make_tiny_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return make_tiny_model(arch=arch, seed=seed), build_tokenizer()  # type: ignore[arg-type]


def scramble_(model: torch.nn.Module, seed: int, scale: float = 0.5) -> None:
    """Rewrite every weight in place with seeded noise (what an evaluator does per candidate)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
