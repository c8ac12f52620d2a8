"""Tiny, random, fully local mixture-of-experts models for tests and examples (Mixtral, Qwen2-MoE).

The MoE counterpart of ``evomerge.tiny_models``: a hand-written small config, seeded random weights,
saved as safetensors with the same character-level tokenizer, so merges of them load and run through
transformers like real checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

MoeArch = Literal["mixtral", "qwen2_moe"]


def tiny_moe_config(arch: MoeArch = "mixtral", *, experts: int = 8, top_k: int = 2, hidden: int = 16,
                    intermediate: int = 12, layers: int = 2, vocab_size: int = 101, **overrides: Any) -> Any:
    """A transformers config of a tiny sparse model with ``experts`` routed experts per layer."""
    from transformers import MixtralConfig, Qwen2MoeConfig

    common: dict[str, Any] = {
        "vocab_size": vocab_size, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 128, "num_experts_per_tok": top_k,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    }
    cfg: Any
    if arch == "mixtral":
        cfg = MixtralConfig(intermediate_size=intermediate, num_local_experts=experts, **common)
    else:
        cfg = Qwen2MoeConfig(intermediate_size=2 * intermediate, moe_intermediate_size=intermediate,
                             shared_expert_intermediate_size=2 * intermediate, num_experts=experts,
                             decoder_sparse_step=1, mlp_only_layers=[], **common)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def make_tiny_moe(out_dir: str | Path | None = None, *, arch: MoeArch = "mixtral", seed: int = 0,
                  tokenizer: bool = True, **config_kw: Any) -> Any:
    """Build (and optionally save, as safetensors with a tokenizer) a randomly initialised tiny MoE LM."""
    from transformers import AutoModelForCausalLM

    from evomerge.tiny_models import build_tokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_moe_config(arch, **config_kw), dtype=torch.float32)
    model.eval()
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
        if tokenizer:
            build_tokenizer(out_dir)
    return model
