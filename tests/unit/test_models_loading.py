"""Loading source checkpoints for evaluators: dtype and attention kernel reach the transformers model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.errors import CheckpointError
from evomerge.models import load_pretrained


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_attention_implementation_and_dtype_are_applied(llama_family: dict[str, Path], kernel: str) -> None:
    model, tokenizer = load_pretrained(llama_family["base"], dtype="bfloat16", attn_implementation=kernel)
    assert model.config._attn_implementation == kernel
    assert next(model.parameters()).dtype == torch.bfloat16
    assert tokenizer is not None and tokenizer.pad_token is not None


def test_unknown_attention_implementation_is_one_clear_error(llama_family: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match="cannot load as causal_lm"):
        load_pretrained(llama_family["base"], attn_implementation="warp_speed")
