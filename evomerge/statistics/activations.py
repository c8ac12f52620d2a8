"""Inputs of every ``nn.Linear`` on calibration data, kept row by row: the statistic structural merges need.

Fisher and Gram statistics are sums over one model's data, which is all a per-tensor operator needs. A merge
that matches neurons *across* models (PLeaS) needs more: it correlates model A's hidden units with model
B's on the same examples and refits each layer to the models' outputs, so it needs the activations
themselves, row ``i`` of every model coming from the same example. Every position of every example is one
row (as for the Grams). Layers are recorded in the order they first run in the forward pass, with how often
each ran, which is what lets a merge recognise a chain of layers (``evomerge.merge.pleas.chain``).

A folder holds ``activations.json`` (layer order, call counts, data identity, row count) and
``activations.safetensors`` (layer weight name → float32 [rows, in_features]). Its name under a cache root
is a hash of the model's identity, the data's identity and the settings, as for the other statistics, and it
is written to a temporary sibling and renamed, so a crash never leaves a half-written one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from torch import nn

from evomerge.errors import StatisticsError
from evomerge.statistics.cache import module_identity, read_meta, write_atomically
from evomerge.statistics.data import CalibrationData, TaskKind
from evomerge.statistics.likelihood import batch_size, forward_inputs, limited, to_device

FORMAT_VERSION = 1
META_FILE = "activations.json"
TENSOR_FILE = "activations.safetensors"


class ActivationSettings(BaseModel):
    """How many examples to keep; with the model and the data, it determines the folder's content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_examples: int | None = Field(1024, gt=0)
    """Examples (classifier rows, LM sequences) used, from the start of the data; None: all of them."""


def activations_key(model_identity: str, data_identity: str, settings: ActivationSettings) -> str:
    payload = {"kind": "activations", "version": FORMAT_VERSION, "model": model_identity, "data": data_identity,
               "settings": settings.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


class ActivationsFolder:
    """Read access to one activations folder; a layer's rows are read when asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not (self.path / META_FILE).is_file():
            raise StatisticsError(f"{self.path}: not an activations folder (no {META_FILE}); "
                                  "collect them with evomerge.statistics.activations.collect_activations")
        self._handle: Any = None

    @cached_property
    def meta(self) -> dict[str, Any]:
        return read_meta(self.path / META_FILE, FORMAT_VERSION, "activations")

    @property
    def layers(self) -> list[str]:
        """Weight names of the linear layers, in the order they first ran."""
        return list(self.meta["layers"])

    def rows(self, name: str) -> int:
        """How many rows (examples × positions × calls) the layer whose weight is ``name`` saw."""
        return int(self.meta["rows"][name])

    @property
    def data(self) -> str:
        return str(self.meta["data"])

    def calls_per_forward(self, name: str) -> float:
        """How many times the layer ran per forward pass (1 for a plain chain)."""
        return int(self.meta["calls"][name]) / int(self.meta["batches"])

    def inputs(self, name: str) -> torch.Tensor:
        """The rows the layer whose weight is ``name`` saw, [rows, in_features], float32."""
        if name not in self.meta["layers"]:
            raise StatisticsError(f"{self.path}: holds no activations of {name!r}")
        if self._handle is None:
            self._handle = safe_open(str(self.path / TENSOR_FILE), framework="pt")
        return self._handle.get_tensor(name)


def linear_inputs(model: nn.Module, batches: Iterable[Any], task: TaskKind) -> tuple[dict[str, torch.Tensor], dict[str, int], int]:
    """Every linear layer's input rows over all batches (first-run order), its call counts, the batch count."""
    layers = {(f"{name}.weight" if name else "weight"): m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not layers:
        raise StatisticsError("the model has no nn.Linear layer to record activations of")
    seen: dict[str, list[torch.Tensor]] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str, layer: nn.Linear) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            seen.setdefault(name, []).append(args[0].detach().reshape(-1, layer.in_features).float().cpu())
            calls[name] = calls.get(name, 0) + 1

        return hook

    handles = [layer.register_forward_hook(hook_for(name, layer)) for name, layer in layers.items()]
    n_batches = 0
    try:
        with torch.no_grad():
            for batch in batches:
                forward_inputs(model, batch, task)
                n_batches += 1
    finally:
        for h in handles:
            h.remove()
    if n_batches == 0:
        raise StatisticsError("the calibration data yielded no batches")
    return {name: torch.cat(rows) for name, rows in seen.items()}, calls, n_batches


def collect_activations(
    model: nn.Module,
    data: CalibrationData,
    settings: ActivationSettings | None = None,
    *,
    cache_dir: str | Path,
    model_identity: str | None = None,
) -> ActivationsFolder:
    """The linear-layer inputs of ``model`` on ``data``: read from the cache, else recorded and cached.

    ``model_identity`` defaults to a hash of the module's tensors; pass
    ``evomerge.statistics.folder_identity(path)`` for a model loaded from a folder.
    """
    settings = settings or ActivationSettings()
    identity = model_identity or module_identity(model)
    folder = Path(cache_dir).expanduser() / f"activations-{activations_key(identity, data.identity, settings)}"
    if (folder / META_FILE).is_file():
        return ActivationsFolder(folder)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    examples = 0

    def batches() -> Iterator[Any]:
        nonlocal examples
        for batch in limited(data.batches(), data.task, settings.max_examples):
            examples += batch_size(batch, data.task)
            yield to_device(batch, device)

    try:
        inputs, calls, n_batches = linear_inputs(model, batches(), data.task)
    finally:
        model.train(was_training)
    meta = {"format_version": FORMAT_VERSION, "model": identity, "data": data.identity, "task": data.task,
            "settings": settings.model_dump(mode="json"), "layers": list(inputs), "calls": calls,
            "batches": n_batches, "examples": examples, "rows": {k: len(v) for k, v in inputs.items()}}
    return ActivationsFolder(write_atomically(folder, META_FILE, meta, {TENSOR_FILE: inputs}))
