"""One evaluator: sources loaded once, ONE resident model rewritten in place per candidate, one fitness suite.

This is the unit a Ray actor wraps (and the sequential pool runs in-process). Per candidate only its
MergePlan (a few KB) arrives; the merged tensors are computed from the resident sources by the same
compiler and executor as ``evomerge merge`` and copied into the resident model's parameters — no model
is rebuilt, nothing touches disk. Any exception or NaN becomes a failed :class:`Evaluation`.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evomerge.config import FromScratchConfig
from evomerge.io.checkpoint import Checkpoint
from evomerge.merge.executor import MergeExecutor
from evomerge.merge.planner import CompiledMerge, SourceInfo, compile_plan
from evomerge.models import build_factory_model, load_pretrained, resolve_device
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
    def __init__(self, spec: EvaluatorSpec, name: str = "evaluator-0", gpus: float = 0) -> None:
        from fitness import build_suite

        self.spec = spec
        self.name = name
        if spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
        self.device = resolve_device(spec.device, gpus)
        seeds = SeedTree(spec.seed)
        self.checkpoints = {ref: Checkpoint(path, allow_pickle=spec.allow_pickle, label=ref) for ref, path in spec.sources.items()}
        self.infos = {ref: SourceInfo(ref, {n: m.shape for n, m in ck.meta.items()}, ck.config,
                                      {n: str(m.dtype) for n, m in ck.meta.items()})
                      for ref, ck in self.checkpoints.items()}
        self.model, self.tokenizer = self._build_model(seeds)
        self.model.to(self.device)
        self.params: dict[str, torch.Tensor] = dict(self.model.state_dict(keep_vars=True))
        self._resident: dict[tuple[int, str], torch.Tensor] = {}
        self._compiled: tuple[str, CompiledMerge] | None = None
        self.suite = build_suite(spec.fitness, seeds.child("fitness"), Path(spec.base_dir))
        self.suite.prepare(self.device)

    # ------------------------------------------------------------------ set-up
    def _build_model(self, seeds: SeedTree) -> tuple[torch.nn.Module, Any]:
        if self.spec.from_scratch is not None:
            fs = self.spec.from_scratch
            return build_factory_model(fs.factory, fs.kwargs, seeds.small_integer("model/init")), None
        template = self.spec.base or next(iter(self.spec.sources))
        return load_pretrained(self.spec.sources[template], self.spec.model_class, self.spec.dtype,
                               self.spec.attn_implementation)

    def _fetch(self, compiled: CompiledMerge) -> Any:
        refs = compiled.sources

        def fetch(source: int, name: str) -> torch.Tensor:
            key = (source, name)
            tensor = self._resident.get(key)
            if tensor is None:
                # memory-mapped on CPU (the page cache is shared by every actor on the node); copied once to a GPU
                tensor = self.checkpoints[refs[source]].get(name)
                if self.device.type != "cpu":
                    tensor = tensor.to(self.device)
                self._resident[key] = tensor
            return tensor

        return fetch

    # ------------------------------------------------------------------ merging in place
    def _compile(self, candidate: Candidate) -> CompiledMerge:
        assert candidate.plan is not None
        key = candidate.plan_hash
        if self._compiled is None or self._compiled[0] != key:
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
            executor = MergeExecutor(compiled, self._fetch(compiled), self.device)
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
