"""Routing statistics of a mixture-of-experts model, gathered once by forward hooks and cached on disk.

Expert merging needs, per sparse layer, what the router does on real text: how often each expert is
among the top k (``frequency``, summing to 1), the Gram matrix of the router logits over tokens
(``logit_gram`` [E, E]; MC-SMoE's router-logit similarity is its cosine normalisation) and the mean cosine
similarity between every pair of experts' outputs on the same tokens (``output_cosine`` [E, E]; Sub-MoE
clusters on it). All E experts are run on every token for the last one, not just the routed ones. Padding
positions (``attention_mask`` 0) are left out. The cache key hashes the model, the data and the settings,
as for the Fisher and Gram statistics (``cache.py``), in a folder of its own kind (``moe.json``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file
from torch import nn

from evomerge.errors import StatisticsError
from evomerge.layout import layer_of
from evomerge.progress import progress_bar
from evomerge.statistics.cache import folder_identity, module_identity, read_meta, write_atomically
from evomerge.statistics.data import CalibrationData
from evomerge.statistics.likelihood import batch_size, forward_inputs, limited, to_device

FORMAT_VERSION = 1
META_FILE = "moe.json"
TENSOR_FILE = "moe.safetensors"
TOKEN_CHUNK = 512


class MoeStatisticsSettings(BaseModel):
    """What changes the numbers: how many calibration sequences are used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_examples: int | None = Field(256, gt=0)
    """Sequences used, from the start of the data; None: all of them."""


@dataclass
class LayerRouting:
    frequency: torch.Tensor
    logit_gram: torch.Tensor
    output_cosine: torch.Tensor
    tokens: int

    def logit_similarity(self) -> torch.Tensor:
        """MC-SMoE's similarity: cosine of two experts' router-logit columns over tokens, mapped to [0, 1]."""
        norms = self.logit_gram.diagonal().clamp_min(1e-30).sqrt()
        return (self.logit_gram / torch.outer(norms, norms) + 1) / 2


@dataclass
class MoeStatistics:
    """Routing statistics of every sparse layer, by decoder-layer index."""

    layers: dict[int, LayerRouting]
    top_k: int
    meta: dict[str, Any]

    def save(self, folder: Path) -> Path:
        """Write atomically (temporary sibling, then rename); a complete folder already there wins."""
        tensors = {f"layers.{i}.{field}": getattr(r, field).double()
                   for i, r in self.layers.items() for field in ("frequency", "logit_gram", "output_cosine")}
        meta = {**self.meta, "format_version": FORMAT_VERSION, "top_k": self.top_k,
                "tokens": {str(i): r.tokens for i, r in self.layers.items()}}
        return write_atomically(folder, META_FILE, meta, {TENSOR_FILE: tensors})

    @classmethod
    def load(cls, folder: str | Path) -> MoeStatistics:
        path = Path(folder).expanduser()
        if not (path / META_FILE).is_file():
            raise StatisticsError(f"{path}: not a MoE statistics folder (no {META_FILE}); collect it with "
                                  "evomerge.statistics.moe.collect_moe_statistics")
        meta = read_meta(path / META_FILE, FORMAT_VERSION, "MoE statistics")
        try:
            tensors = load_file(str(path / TENSOR_FILE))
        except OSError as exc:
            raise StatisticsError(f"{path}: unreadable MoE statistics ({exc}); collect them again") from None
        layers = {int(i): LayerRouting(tensors[f"layers.{i}.frequency"], tensors[f"layers.{i}.logit_gram"],
                                       tensors[f"layers.{i}.output_cosine"], int(n)) for i, n in meta["tokens"].items()}
        return cls(layers, int(meta["top_k"]), meta)


def moe_statistics_key(model_identity: str, data_identity: str, settings: MoeStatisticsSettings) -> str:
    payload = {"kind": "moe", "version": FORMAT_VERSION, "model": model_identity, "data": data_identity,
               "settings": settings.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def sparse_blocks(model: nn.Module) -> dict[int, nn.Module]:
    """Decoder-layer index → sparse MoE block (a module with a ``gate`` router and ``experts``)."""
    out: dict[int, nn.Module] = {}
    for name, module in model.named_modules():
        gate, experts = getattr(module, "gate", None), getattr(module, "experts", None)
        layer = layer_of(name)  # the sparse block sits below its decoder layer: model.layers.3.mlp
        if layer is not None and isinstance(gate, nn.Module) and isinstance(experts, nn.Module) and hasattr(gate, "weight"):
            out.setdefault(layer, module)
    return out


def all_expert_outputs(experts: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every expert applied to every row of ``x`` [T, H] → [E, T, H] (fused 3-D weights or a module list)."""
    if hasattr(experts, "gate_up_proj"):
        fused: Any = experts
        gate, up = torch.einsum("th,eoh->eto", x, fused.gate_up_proj.to(x.dtype)).chunk(2, dim=-1)
        return torch.einsum("eti,ehi->eth", fused.act_fn(gate) * up, fused.down_proj.to(x.dtype))
    if isinstance(experts, nn.ModuleList):
        return torch.stack([expert(x) for expert in experts])
    raise StatisticsError(f"cannot run the experts of {type(experts).__name__}: neither fused weights nor a ModuleList")


class _Accumulator:
    """Sums of one sparse layer's statistics over the calibration tokens."""

    def __init__(self, block: Any, top_k: int) -> None:
        self.block, self.top_k = block, top_k
        n = int(block.gate.weight.shape[0])
        self.counts = torch.zeros(n, dtype=torch.float64)
        self.gram = torch.zeros(n, n, dtype=torch.float64)
        self.cosine = torch.zeros(n, n, dtype=torch.float64)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        gate = self.block.gate
        logits = nn.functional.linear(x.float(), gate.weight.float(), getattr(gate, "bias", None))
        chosen = logits.topk(min(self.top_k, logits.shape[1]), dim=-1).indices
        self.counts += torch.bincount(chosen.reshape(-1).cpu(), minlength=self.counts.numel()).double()
        self.gram += (logits.T.double() @ logits.double()).cpu()
        for start in range(0, x.shape[0], TOKEN_CHUNK):
            out = all_expert_outputs(self.block.experts, x[start : start + TOKEN_CHUNK].float())
            unit = nn.functional.normalize(out.double(), dim=-1)
            self.cosine += torch.einsum("eth,fth->ef", unit, unit).cpu()
        self.tokens += x.shape[0]

    def result(self) -> LayerRouting:
        if self.tokens == 0:
            raise StatisticsError("the calibration data reached no token of a sparse layer (empty batches?)")
        return LayerRouting(self.counts / self.counts.sum(), self.gram, self.cosine / self.tokens, self.tokens)


def _gather(model: nn.Module, data: CalibrationData, settings: MoeStatisticsSettings, top_k: int,
            progress: bool) -> dict[int, LayerRouting]:
    blocks = sparse_blocks(model)
    if not blocks:
        raise StatisticsError(f"{type(model).__name__} has no sparse MoE block (a module with 'gate' and 'experts')")
    sums = {i: _Accumulator(block, top_k) for i, block in blocks.items()}
    mask: dict[str, torch.Tensor | None] = {"rows": None}

    def hook_for(acc: _Accumulator) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            keep = mask["rows"]
            acc.add(x[keep] if keep is not None and keep.numel() == x.shape[0] else x)
        return hook

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    handles = [block.register_forward_pre_hook(hook_for(sums[i])) for i, block in blocks.items()]
    limits = [x for x in (data.n_examples, settings.max_examples) if x is not None]
    total = min(limits) if limits else 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), progress_bar("moe statistics", total=total, unit="examples", enabled=progress) as bar:
            for batch in limited(data.batches(), "causal_lm", settings.max_examples):
                batch = to_device(batch, device)
                m = batch.get("attention_mask") if isinstance(batch, dict) else None
                mask["rows"] = None if m is None else m.reshape(-1).bool()
                forward_inputs(model, batch, "causal_lm")
                bar.advance(batch_size(batch, "causal_lm"))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {i: acc.result() for i, acc in sums.items()}


def collect_moe_statistics(model: nn.Module, data: CalibrationData, settings: MoeStatisticsSettings | None = None,
                           *, cache_dir: str | Path, model_identity: str | None = None,
                           progress: bool = True) -> MoeStatistics:
    """Routing statistics of ``model`` on causal-LM ``data``: read from the cache, else computed and cached."""
    settings = settings or MoeStatisticsSettings()
    if data.task != "causal_lm":
        raise StatisticsError(f"MoE statistics need causal-LM calibration data (token ids), got {data.task!r} data")
    identity = model_identity or module_identity(model)
    folder = Path(cache_dir).expanduser() / moe_statistics_key(identity, data.identity, settings)
    if (folder / META_FILE).is_file():
        return MoeStatistics.load(folder)
    top_k = int(getattr(getattr(model, "config", None), "num_experts_per_tok", 2))
    layers = _gather(model, data, settings, top_k, progress)
    meta = {"model": identity, "data": data.identity, "settings": settings.model_dump(mode="json")}
    stats = MoeStatistics(layers, top_k, meta)
    stats.save(folder)
    return MoeStatistics.load(folder)


def collect_checkpoint_moe_statistics(model_dir: str | Path, data: CalibrationData,
                                      settings: MoeStatisticsSettings | None = None, *, cache_dir: str | Path,
                                      progress: bool = True) -> MoeStatistics:
    """Statistics of the checkpoint in ``model_dir``, which is loaded only when the cache has none for it."""
    settings = settings or MoeStatisticsSettings()
    identity = folder_identity(model_dir)
    folder = Path(cache_dir).expanduser() / moe_statistics_key(identity, data.identity, settings)
    if (folder / META_FILE).is_file():
        return MoeStatistics.load(folder)
    from evomerge.models import load_pretrained

    model = load_pretrained(model_dir, "causal_lm")[0]
    return collect_moe_statistics(model, data, settings, cache_dir=cache_dir, model_identity=identity,
                                  progress=progress)
