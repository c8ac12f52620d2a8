"""Run compiled tensor tasks: fetch the inputs, call the operator, hand back the merged tensor.

The executor does not know where tensors come from (memory-mapped files for ``evomerge merge``, resident
device tensors inside an evaluator) or where results go (a streaming writer, a model's parameters): both
sides are callables, so disk merges and in-place merges share every line that decides a weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from evomerge.merge.operator import MergeInputs
from evomerge.merge.planner import CompiledMerge, TensorTask

Fetch = Callable[[int, str], torch.Tensor]
"""(source index, tensor name) → tensor (any device, any dtype; treated as read-only)."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class MergeExecutor:
    def __init__(self, compiled: CompiledMerge, fetch: Fetch, device: str | torch.device = "cpu") -> None:
        self.compiled = compiled
        self.fetch = fetch
        self.device = torch.device(device)
        self._stats: dict[str, dict[str, Any]] | None = None
        self._out: torch.Tensor | None = None

    def _load(self, ref: tuple[int, str]) -> torch.Tensor:
        t = self.fetch(*ref)
        if t.device != self.device:
            t = t.to(self.device, non_blocking=True)
        if t.is_floating_point():
            t = t.to(compute_dtype(t.dtype))
        return t

    def _output_buffer(self, task: TensorTask, dtype: torch.dtype) -> torch.Tensor:
        """A view of the one reusable output buffer, sized once for the largest merged tensor."""
        numel = math.prod(task.shape)
        if self._out is None or self._out.dtype != dtype or self._out.numel() < numel:
            largest = max((math.prod(t.shape) for t in self.compiled.tasks if t.floating), default=numel)
            self._out = torch.empty(max(numel, largest), dtype=dtype, device=self.device)
        return self._out[:numel].view(task.shape)

    def inputs_for(self, task: TensorTask, stats: dict[str, Any] | None = None, reuse_output: bool = False) -> MergeInputs:
        generator = None
        if self.compiled.operators[task.method].randomized:
            generator = torch.Generator(device=self.device).manual_seed(task.seed)
        tensors = [self._load(ref) for ref in task.inputs]
        base = self._load(task.base) if task.base is not None else None
        first = tensors[0] if tensors else base
        out = None
        if reuse_output and first is not None and first.is_floating_point():
            out = self._output_buffer(task, first.dtype)
        return MergeInputs(
            tensors=tensors,
            base=base,
            name=task.out_name,
            generator=generator,
            stats=stats or {},
            layer=task.layer,
            out=out,
        )

    # ------------------------------------------------------------------ global passes
    def stats(self) -> dict[str, dict[str, Any]]:
        """Whole-model statistics of the operators that need them (computed once, then cached)."""
        if self._stats is not None:
            return self._stats
        self._stats = {}
        for name, spec in self.compiled.operators.items():
            if spec.global_pass is None:
                continue
            tasks = [t for t in self.compiled.tasks if t.method == name and t.floating]
            if spec.needs_global_pass is not None:
                tasks_needing = [t for t in tasks if spec.needs_global_pass(t.params)]
                if not tasks_needing:
                    continue
            gp = spec.global_pass()
            gp.start(max((len(t.inputs) for t in tasks), default=0))
            for p in range(gp.n_passes):
                for task in tasks:
                    gp.observe(self.inputs_for(task), task.params, p)
                gp.end_pass(p)
            self._stats[name] = gp.finish()
        return self._stats

    # ------------------------------------------------------------------ merging
    def run(self, task: TensorTask, reuse_output: bool = False) -> torch.Tensor:
        """The merged tensor for ``task`` in the compute dtype, on the executor's device.

        With ``reuse_output`` the result may live in the executor's output buffer, which the next such call
        overwrites: consume it (write it out, copy it) first.
        """
        if not task.floating:
            ref = task.inputs[0] if task.inputs else task.base
            assert ref is not None
            return self.fetch(*ref)
        spec = self.compiled.operators[task.method]
        stats = self.stats().get(task.method, {})
        with torch.no_grad():
            out = spec.fn(self.inputs_for(task, stats, reuse_output), task.params)
        if tuple(out.shape) != task.shape:
            raise RuntimeError(f"operator {task.method} returned shape {list(out.shape)} for {task.out_name}, expected {list(task.shape)}")
        return out

    def __iter__(self) -> Iterator[tuple[TensorTask, torch.Tensor]]:
        """(task, merged tensor) in plan order. Each tensor is valid until the iterator advances (one output
        buffer serves every tensor, so a merge allocates no memory per weight): write or copy it at once."""
        for task in self.compiled.tasks:
            yield task, self.run(task, reuse_output=True)
