"""Where a mixture-of-experts checkpoint keeps its experts, read into one canonical form and written back.

Two on-disk forms exist for the same model. transformers 5 holds a layer's experts as fused 3-D tensors
(``mlp.experts.gate_up_proj`` [E, 2I, H], gate rows first, and ``mlp.experts.down_proj`` [E, H, I]), but
``save_pretrained`` writes them back per expert under the hub names (Mixtral:
``block_sparse_moe.experts.{e}.w1/w3/w2.weight``; Qwen2/3-MoE: ``mlp.experts.{e}.gate_proj/up_proj/
down_proj.weight``); both load. Either way an expert is a SwiGLU MLP, ``down · (act(gate·x) ⊙ up·x)``, so
every method works on :class:`ExpertStack` (gate, up, down for all E experts of a layer) and the output is
written in the form the source used. Everything else in the checkpoint (attention, norms, Qwen2-MoE's
shared expert and its gate) is not an expert and is copied unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from evomerge.errors import IncompatibleModelsError
from evomerge.io.checkpoint import Checkpoint


@dataclass(frozen=True)
class MoeArchitecture:
    """How one model family names its experts and its expert counts in config.json."""

    model_type: str
    experts_key: str
    """config.json key holding the number of routed experts per layer."""
    legacy_block: str
    """Module name of the sparse block in per-expert checkpoints (the fused form always uses ``mlp``)."""
    legacy_projections: tuple[str, str, str]
    """Per-expert names of the gate, up and down projections."""
    top_k_key: str = "num_experts_per_tok"


ARCHITECTURES = {
    "mixtral": MoeArchitecture("mixtral", "num_local_experts", "block_sparse_moe", ("w1", "w3", "w2")),
    "qwen2_moe": MoeArchitecture("qwen2_moe", "num_experts", "mlp", ("gate_proj", "up_proj", "down_proj")),
    "qwen3_moe": MoeArchitecture("qwen3_moe", "num_experts", "mlp", ("gate_proj", "up_proj", "down_proj")),
}

_LAYER = re.compile(r"^(?P<prefix>(?:.*\.)?layers\.(?P<layer>\d+)\.(?P<block>[A-Za-z_]+))\.experts\.(?P<rest>.+)$")


@dataclass
class ExpertStack:
    """The E experts of one layer: gate and up [E, I, H], down [E, H, I] (float32)."""

    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor

    @property
    def num_experts(self) -> int:
        return int(self.gate.shape[0])

    def select(self, indices: list[int]) -> ExpertStack:
        return ExpertStack(self.gate[indices], self.up[indices], self.down[indices])

    @classmethod
    def stack(cls, experts: list[ExpertStack]) -> ExpertStack:
        """One stack from several (each usually of one expert)."""
        return cls(*(torch.cat([getattr(e, p) for e in experts]) for p in ("gate", "up", "down")))


@dataclass(frozen=True)
class MoeLayer:
    """One sparse layer of a checkpoint: its router and where its experts lie."""

    index: int
    prefix: str
    fused: bool
    arch: MoeArchitecture

    @property
    def router(self) -> str:
        return f"{self.prefix}.gate.weight"

    def expert_names(self, num_experts: int) -> list[str]:
        if self.fused:
            return [f"{self.prefix}.experts.gate_up_proj", f"{self.prefix}.experts.down_proj"]
        return [f"{self.prefix}.experts.{e}.{p}.weight" for e in range(num_experts) for p in self.arch.legacy_projections]

    def read(self, ckpt: Checkpoint, num_experts: int) -> ExpertStack:
        if self.fused:
            gate, up = ckpt.get(f"{self.prefix}.experts.gate_up_proj").chunk(2, dim=1)
            down = ckpt.get(f"{self.prefix}.experts.down_proj")
            return ExpertStack(*(_owned_float32(t) for t in (gate, up, down)))
        g, u, d = self.arch.legacy_projections
        parts = [[ckpt.get(f"{self.prefix}.experts.{e}.{p}.weight").float() for e in range(num_experts)] for p in (g, u, d)]
        return ExpertStack(*(torch.stack(p) for p in parts))

    def tensors(self, experts: ExpertStack) -> dict[str, torch.Tensor]:
        """The layer's expert tensors for a (smaller) stack, named as the source names them."""
        if self.fused:
            return {
                f"{self.prefix}.experts.gate_up_proj": torch.cat([experts.gate, experts.up], dim=1),
                f"{self.prefix}.experts.down_proj": experts.down,
            }
        out: dict[str, torch.Tensor] = {}
        for e in range(experts.num_experts):
            for proj, t in zip(self.arch.legacy_projections, (experts.gate[e], experts.up[e], experts.down[e])):
                out[f"{self.prefix}.experts.{e}.{proj}.weight"] = t
        return out

    def shapes(self, num_experts: int, hidden: int, intermediate: int) -> dict[str, tuple[int, ...]]:
        """Shape of every tensor :meth:`tensors` returns for a stack of ``num_experts`` experts."""
        blank = ExpertStack(
            torch.empty(num_experts, intermediate, hidden, device="meta"),
            torch.empty(num_experts, intermediate, hidden, device="meta"),
            torch.empty(num_experts, hidden, intermediate, device="meta"),
        )
        return {name: tuple(t.shape) for name, t in self.tensors(blank).items()}


@dataclass(frozen=True)
class MoeModel:
    """The sparse layers of a checkpoint and the sizes every one of them shares."""

    arch: MoeArchitecture
    layers: list[MoeLayer]
    num_experts: int
    top_k: int
    hidden: int
    intermediate: int

    def expert_tensor_names(self) -> set[str]:
        """Every source tensor that expert merging replaces (experts and routers)."""
        names = {layer.router for layer in self.layers}
        for layer in self.layers:
            names.update(layer.expert_names(self.num_experts))
        return names


def moe_architecture(config: dict[str, Any], label: str, method: str) -> MoeArchitecture:
    """The family of a checkpoint's config, or a one-line error for a model that is not a supported MoE."""
    model_type = str(config.get("model_type", ""))
    arch = ARCHITECTURES.get(model_type)
    if arch is None or not isinstance(config.get(arch.experts_key), int):
        known = ", ".join(sorted(ARCHITECTURES))
        raise IncompatibleModelsError(
            f"{label}: not a mixture-of-experts model (config.json model_type {model_type or 'missing'!r}); "
            f"{method} merges the experts of one of: {known}"
        )
    return arch


def find_moe_layers(ckpt: Checkpoint, method: str) -> MoeModel:
    """The checkpoint's sparse layers, checked against its config (headers only, no weights read)."""
    arch = moe_architecture(ckpt.config, ckpt.label, method)
    num_experts = int(ckpt.config[arch.experts_key])
    by_prefix: dict[str, MoeLayer] = {}
    for name in ckpt.names():
        match = _LAYER.match(name)
        if match is None:
            continue
        fused = match["rest"] in ("gate_up_proj", "down_proj")
        if not fused and match["block"] != arch.legacy_block:
            continue
        by_prefix.setdefault(match["prefix"], MoeLayer(int(match["layer"]), match["prefix"], fused, arch))
    layers = sorted(by_prefix.values(), key=lambda layer: layer.index)
    if not layers:
        raise IncompatibleModelsError(f"{ckpt.label}: config says {arch.model_type}, but no tensor holds routed experts")
    meta = ckpt.meta
    missing = [n for layer in layers for n in (layer.router, *layer.expert_names(num_experts)) if n not in meta]
    if missing:
        raise IncompatibleModelsError(f"{ckpt.label}: {len(missing)} expert tensor(s) missing, first {missing[0]!r} "
                                      f"({arch.experts_key} = {num_experts} in config.json)")
    router_shape = meta[layers[0].router].shape
    first = layers[0]
    down = meta[first.expert_names(num_experts)[-1]].shape
    hidden, intermediate = int(down[-2]), int(down[-1])
    for layer in layers:
        want = {layer.router: (num_experts, hidden), **layer.shapes(num_experts, hidden, intermediate)}
        for name, shape in want.items():
            if meta[name].shape != shape:
                raise IncompatibleModelsError(f"{ckpt.label}: {name} has shape {list(meta[name].shape)}, expected "
                                              f"{list(shape)} (router {list(router_shape)})")
    top_k = int(ckpt.config.get(arch.top_k_key, 2))
    return MoeModel(arch, layers, num_experts, top_k, hidden, intermediate)


def _owned_float32(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous float32 copy in one pass (never a view of the memory-mapped checkpoint)."""
    return tensor.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
