"""What a model's tensors are: their layer, their role, and their order through the network.

Read from tensor names (and ``config.json``), never from weights, so search spaces, the merge planner and
``evomerge validate`` share one view without importing torch. Names follow the Hugging Face convention of
a numbered block container (``model.layers.3.``, ``transformer.h.3.``, ``encoder.layer.3.`` ...);
tensors before the first block (embeddings) are *pre*, the rest outside blocks (final norm, LM head) *post*.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

_LAYER_RE = re.compile(r"^(?P<prefix>(?:.*?\.)?(?:layers|h|blocks|layer|block))\.(?P<idx>\d+)\.(?P<rest>.+)$")
_PRE_HINTS = ("embed", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type", "patch_embed", "cls_token", "pos_embed")
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")

Role = Literal["embedding", "attention", "mlp", "norm", "router", "expert", "head", "other"]
Position = Literal["pre", "layer", "post"]


def layer_of(name: str) -> int | None:
    m = _LAYER_RE.match(name)
    return int(m.group("idx")) if m else None


def rename_layer(name: str, new_index: int) -> str:
    m = _LAYER_RE.match(name)
    if not m:
        return name
    return f"{m.group('prefix')}.{new_index}.{m.group('rest')}"


VOCAB_TENSOR_HINTS = ("embed_tokens.", "wte.", "word_embeddings.", "lm_head.", "embed_out.")
"""Name parts of the tensors indexed by token id: input embeddings and the LM head (weight and bias).
Position embeddings (``wpe``, ``position_embeddings``) are indexed by position and never match."""


def is_vocab_tensor(name: str) -> bool:
    """Whether a tensor's first dimension is the vocabulary (input embeddings, LM head)."""
    return role_of(name) in ("embedding", "head") and any(h in name for h in VOCAB_TENSOR_HINTS)


def role_of(name: str) -> Role:
    n = name.lower()
    if any(h in n for h in ("experts.", "expert.")):
        return "expert"
    if any(h in n for h in ("router", ".gate.weight", "block_sparse_moe.gate", "mlp.gate.")):
        return "router"
    if any(h in n for h in ("norm", "ln_", "layernorm")):
        return "norm"
    if any(h in n for h in ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj")):
        return "attention"
    if any(h in n for h in ("mlp", "ffn", "feed_forward", "fc1", "fc2", "up_proj", "down_proj", "gate_proj", "c_fc")):
        return "mlp"
    if any(h in n for h in _PRE_HINTS):
        return "embedding"
    if "lm_head" in n or "classifier" in n or n.startswith("head") or ".head." in n:
        return "head"
    return "other"


def num_layers_from_config(config: Mapping[str, Any]) -> int | None:
    for key in _LAYER_COUNT_KEYS:
        value = config.get(key)
        if isinstance(value, int):
            return value
    text_cfg = config.get("text_config")
    if isinstance(text_cfg, Mapping):
        return num_layers_from_config(text_cfg)
    return None


def layer_count_key(config: Mapping[str, Any]) -> str:
    for key in _LAYER_COUNT_KEYS:
        if key in config:
            return key
    return "num_hidden_layers"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    layer: int | None
    role: Role
    position: Position

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class ModelLayout:
    """Tensors of one model in network order (pre, then layer 0..L-1, then post)."""

    tensors: list[TensorInfo]
    num_layers: int
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, Sequence[int]], config: Mapping[str, Any] | None = None) -> ModelLayout:
        config = dict(config or {})
        infos = []
        for name, shape in shapes.items():
            layer = layer_of(name)
            role = role_of(name)
            if layer is not None:
                position: Position = "layer"
            elif role == "embedding":
                position = "pre"
            else:
                position = "post"
            infos.append(TensorInfo(name, tuple(int(d) for d in shape), layer, role, position))
        order = {"pre": 0, "layer": 1, "post": 2}
        original = {name: i for i, name in enumerate(shapes)}
        infos.sort(key=lambda t: (order[t.position], t.layer if t.layer is not None else -1, original[t.name]))
        seen_layers = {t.layer for t in infos if t.layer is not None}
        n_cfg = num_layers_from_config(config)
        n_layers = n_cfg if n_cfg is not None else (max(seen_layers) + 1 if seen_layers else 0)
        return cls(infos, n_layers, config)

    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}

    def layer_tensors(self, layer: int) -> list[TensorInfo]:
        return [t for t in self.tensors if t.layer == layer]

    def groups(self, n_groups: int) -> list[list[int]]:
        """Split the layers into ``n_groups`` contiguous groups of near-equal size."""
        n = max(1, min(n_groups, self.num_layers or 1))
        layers = list(range(self.num_layers))
        size, extra = divmod(len(layers), n)
        out, start = [], 0
        for g in range(n):
            end = start + size + (1 if g < extra else 0)
            out.append(layers[start:end])
            start = end
        return out

    def total_params(self) -> int:
        return sum(t.numel for t in self.tensors)


def layer_fraction(layer: int | None, num_layers: int) -> float:
    """mergekit's depth coordinate ``t``: ``idx / (n-1)`` inside the layers, 0 outside them."""
    if layer is None:
        return 0.0
    if num_layers <= 1:
        return 1.0
    return layer / (num_layers - 1)


def union_names(layouts: Iterable[ModelLayout]) -> list[str]:
    seen: dict[str, None] = {}
    for lay in layouts:
        for name in lay.names():
            seen.setdefault(name, None)
    return list(seen)
