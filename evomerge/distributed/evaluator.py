"""One evaluator: sources loaded once, ONE resident model rewritten in place per candidate, one fitness suite.

This is the unit a Ray actor wraps (and the sequential pool runs in-process). Per candidate only its
MergePlan (a few KB) arrives; the merged tensors are computed from the resident sources by the same
compiler and executor as ``evomerge merge`` and copied into the resident model's parameters — no model
is rebuilt, nothing touches disk. Any exception or NaN becomes a failed :class:`Evaluation`.

An evaluator given several GPUs (``resources.gpus_per_actor: N``) shards the resident model over them
(:mod:`evomerge.distributed.sharding`) and merges shard-locally: every merged tensor, and the source
tensors it is computed from, live on the device of the parameter it replaces.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evomerge.config import FromScratchConfig
from evomerge.distributed.sharding import (
    DeviceSet,
    Shards,
    dispatch,
    for_devices,
    plan_shards,
    tensor_devices,
)
from evomerge.io.checkpoint import Checkpoint
from evomerge.merge.executor import MergeExecutor
from evomerge.merge.planner import CompiledMerge, compile_plan
from evomerge.merge.to_disk import source_infos
from evomerge.models import build_factory_model, load_pretrained, pretrained_skeleton, resolve_device
from evomerge.seeding import SeedTree
from evomerge.types import Candidate, EvalStatus, Evaluation


@dataclass(frozen=True)
class EvaluatorSpec:
    """Everything an evaluator needs, as plain picklable data (it crosses to Ray actors once)."""

    sources: dict[str, str]
    """Model reference as written in plans → local folder."""
    base: str | None
    fitness: dict[str, Any]
    seed: int = 0
    model_class: str = "causal_lm"
    dtype: str = "float32"
    attn_implementation: str | None = None
    device: str = "auto"
    base_dir: str = "."
    allow_pickle: bool = False
    from_scratch: FromScratchConfig | None = None
    space: Any = None
    """The search space, needed only for direct (parameter-vector) genomes."""
    torch_threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Evaluator:
    def __init__(self, spec: EvaluatorSpec, name: str = "evaluator-0", gpus: float = 0,
                 devices: DeviceSet | None = None) -> None:
        """``gpus``: the GPUs its actor owns (a whole N > 1 shards the model over ``cuda:0..N-1``);
        ``devices``: shard over these instead (tests place shards on stand-in devices)."""
        from fitness import build_suite

        self.spec = spec
        self.name = name
        if spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
        devices = devices if devices is not None else for_devices(spec.device, gpus)
        self.device = resolve_device(spec.device, gpus) if devices is None else devices.devices[0]
        self.shards: Shards | None = None
        seeds = SeedTree(spec.seed)
        self.checkpoints = {ref: Checkpoint(path, allow_pickle=spec.allow_pickle, label=ref) for ref, path in spec.sources.items()}
        self.infos = source_infos(self.checkpoints)
        self.model, self.tokenizer = self._build_model(seeds, devices)
        if self.shards is None:
            self.model.to(self.device)
        else:
            self.device = self.shards.main
        self.params: dict[str, torch.Tensor] = dict(self.model.state_dict(keep_vars=True))
        self.param_devices: dict[str, torch.device] | None = None if self.shards is None else self._placed()
        """Tensor name → the device holding it, when the model is sharded."""
        self._resident: dict[tuple[int, str], torch.Tensor] = {}
        self._compiled: tuple[str, CompiledMerge] | None = None
        self.suite = build_suite(spec.fitness, seeds.child("fitness"), Path(spec.base_dir))
        self.suite.prepare(self.device)

    # ------------------------------------------------------------------ set-up
    def _build_model(self, seeds: SeedTree, devices: DeviceSet | None) -> tuple[torch.nn.Module, Any]:
        spec = self.spec
        if spec.from_scratch is not None:
            fs = spec.from_scratch
            return self._sharded(build_factory_model(fs.factory, fs.kwargs, seeds.small_integer("model/init")), devices), None
        path = spec.sources[spec.base or next(iter(spec.sources))]
        skeleton = None if devices is None else pretrained_skeleton(path, spec.model_class, spec.dtype)
        if devices is None or skeleton is None:
            model, tokenizer = load_pretrained(path, spec.model_class, spec.dtype, spec.attn_implementation)
            return self._sharded(model, devices), tokenizer
        # planned on a meta-device skeleton, so the weights load straight onto their GPUs
        self.shards = plan_shards(skeleton, devices)
        return load_pretrained(path, spec.model_class, spec.dtype, spec.attn_implementation,
                               device_map=self.shards.for_accelerate())

    def _sharded(self, model: torch.nn.Module, devices: DeviceSet | None) -> torch.nn.Module:
        """An in-memory model dispatched over ``devices`` (unchanged without them)."""
        if devices is None:
            return model
        self.shards = plan_shards(model, devices)
        return dispatch(model, self.shards)

    def _placed(self) -> dict[str, torch.device]:
        """Where each tensor actually lives (merges follow it), warning where that is not where it was planned."""
        assert self.shards is not None
        actual = tensor_devices(self.params)
        planned = self.shards.planned_devices(list(actual))
        moved = [name for name, device in actual.items() if device != planned[name]]
        if moved:
            warnings.warn(f"{len(moved)} tensors of the sharded model (first: {moved[0]!r}) were not placed where "
                          "planned; merges follow where they are", stacklevel=2)
        return actual

    def _fetch(self, compiled: CompiledMerge) -> Any:
        refs = compiled.sources

        def fetch(source: int, name: str) -> torch.Tensor:
            key = (source, name)
            tensor = self._resident.get(key)
            if tensor is None:
                # memory-mapped on CPU (the page cache is shared by every actor on the node); copied once to a GPU
                tensor = self.checkpoints[refs[source]].get(name)
                device = self.device if self.param_devices is None else self.param_devices.get(name, self.device)
                if device.type != "cpu":  # shard-local: next to the parameter of the same name
                    tensor = tensor.to(device)
                self._resident[key] = tensor
            return tensor

        return fetch

    # ------------------------------------------------------------------ merging in place
    def _compile(self, candidate: Candidate) -> CompiledMerge:
        assert candidate.plan is not None
        key = candidate.plan_hash
        if self._compiled is None or self._compiled[0] != key:
            if candidate.plan.tokenizer_choice() is not None:  # the resident model keeps its vocabulary
                raise ValueError("this plan has a tokenizer option, which can re-index vocabularies; a resident "
                                 "model cannot change its vocabulary: merge it with `evomerge merge`")
            compiled = compile_plan(candidate.plan, self.infos)
            missing = [t.out_name for t in compiled.tasks if t.out_name not in self.params]
            if missing:
                raise ValueError(f"merged tensor {missing[0]!r} has no counterpart in the resident model "
                                 "(slices that change the layer count cannot be evaluated in place)")
            self._compiled = (key, compiled)
        return self._compiled[1]

    def materialize(self, candidate: Candidate) -> None:
        """Write the candidate's weights into the resident model."""
        with torch.no_grad():
            if candidate.plan is None:
                arrays = self.spec.space.assign(candidate.genome)
                for name, array in arrays.items():
                    self.params[name].copy_(torch.from_numpy(np.ascontiguousarray(array)))
                return
            compiled = self._compile(candidate)
            placement = None if self.param_devices is None else self.param_devices.__getitem__
            executor = MergeExecutor(compiled, self._fetch(compiled), self.device, placement)
            for task, tensor in executor:
                self.params[task.out_name].copy_(tensor)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, candidate: Candidate, fidelity: float | None = None) -> Evaluation:
        start = time.perf_counter()
        fid = "full" if fidelity is None else f"subset:{fidelity:g}"
        try:
            self.materialize(candidate)
            self.suite.set_fidelity(fidelity)
            result = self.suite(self.model, self.tokenizer)
            evaluation = Evaluation(
                uid=candidate.uid, status=EvalStatus.OK, objectives=dict(result.objectives),
                per_example=None if result.per_example is None else np.asarray(result.per_example, dtype=np.float64),
                metrics=dict(result.metrics),
            ).checked()
        except Exception as exc:  # a failure is a result, never the end of the run
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
            evaluation = Evaluation.failure(candidate.uid, f"{type(exc).__name__}: {exc}{where}")
        evaluation.seconds = time.perf_counter() - start
        evaluation.evaluator = self.name
        evaluation.plan_hash = candidate.plan_hash
        evaluation.fidelity = fid
        return evaluation

    def pid(self) -> int:
        return os.getpid()

    def objectives(self) -> list[Any]:
        return list(self.suite.objectives())
