"""Tiny, fully local Hugging Face models for tests, examples and the quickstart.

Nothing here touches a hub: configs are written by hand, weights are random (seeded), and the tokenizer is
a character-level ``tokenizers`` model over printable ASCII, so any text (the bundled tasks included) can be
tokenized and the models run through transformers and lm-eval like any real checkpoint.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

import torch

Arch = Literal["llama", "gpt2", "mistral", "qwen2"]

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def char_vocab(extra: tuple[str, ...] = ()) -> dict[str, int]:
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    tokens = [*SPECIAL_TOKENS, *chars, *extra]
    return {tok: i for i, tok in enumerate(tokens)}


def build_tokenizer(out_dir: str | Path | None = None, extra_tokens: tuple[str, ...] = ()) -> Any:
    """A character-level fast tokenizer (vocab ≈ 101 + extras); saved to ``out_dir`` when given."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = char_vocab(extra_tokens)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if extra_tokens:
        alternatives = "|".join(sorted((_escape(t) for t in extra_tokens), key=len, reverse=True))
        core.pre_tokenizer = pre_tokenizers.Split(Regex(f"{alternatives}|."), behavior="isolated")
    else:
        core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tok.model_max_length = 512
    if out_dir is not None:
        tok.save_pretrained(str(out_dir))
    return tok


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def tiny_config(
    arch: Arch = "llama", *, vocab_size: int = 101, hidden: int = 32, layers: int = 2, heads: int = 4, **overrides: Any
) -> Any:
    """A transformers config for a tiny model of ``arch`` (random init is the caller's business)."""
    from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    common: dict[str, Any] = {"vocab_size": vocab_size, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    if arch == "gpt2":
        cfg = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=256, **common)
    else:
        cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[arch]
        cfg = cls(
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=256,
            tie_word_embeddings=False,
            **common,
        )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def make_tiny_model(
    out_dir: str | Path | None = None,
    *,
    arch: Arch = "llama",
    seed: int = 0,
    tokenizer: bool = True,
    dtype: torch.dtype = torch.float32,
    **config_kw: Any,
) -> Any:
    """Build (and optionally save, as safetensors with a tokenizer) a randomly initialised tiny causal LM."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, **config_kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.eval()
    if out_dir is not None:
        out = Path(out_dir)
        model.save_pretrained(str(out))
        if tokenizer:
            build_tokenizer(out)
    return model


def perturbed_copy(
    src_dir: str | Path, out_dir: str | Path, *, seed: int, scale: float = 0.02, fraction: float = 1.0
) -> Path:
    """A "fine-tune" of ``src_dir``: every floating tensor plus seeded noise (a synthetic task vector)."""
    from safetensors.torch import load_file

    from evomerge.io.writer import save_state_dict

    src = Path(src_dir)
    files = sorted(src.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    gen = torch.Generator().manual_seed(seed)
    for name in sorted(state):
        t = state[name]
        if t.is_floating_point():
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float32) * scale
            if fraction < 1.0:
                noise = noise * (torch.rand(t.shape, generator=gen) < fraction)
            state[name] = (t.float() + noise).to(t.dtype)
    import json

    config = json.loads((src / "config.json").read_text())
    return save_state_dict(state, out_dir, config=config, aux_from=src)
