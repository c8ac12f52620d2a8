"""Run compiled tensor tasks: fetch the inputs, call the operator, hand back the merged tensor.

The executor does not know where tensors come from (memory-mapped files for ``evomerge merge``, resident
device tensors inside an evaluator) or where results go (a streaming writer, a model's parameters): both
sides are callables, so disk merges and in-place merges share every line that decides a weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from evomerge.merge.operator import LazyTensors, MergeInputs
from evomerge.merge.planner import CompiledMerge, TensorTask
from evomerge.merge.vocab_rows import VocabRows

Fetch = Callable[[int, str], torch.Tensor]
"""(source index, tensor name) → tensor (any device, any dtype; treated as read-only)."""

Placement = Callable[[str], torch.device]
"""Output tensor name → the device its merge runs on: that of the parameter it replaces in a model sharded
over several devices (shard-local merging)."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class MergeExecutor:
    def __init__(self, compiled: CompiledMerge, fetch: Fetch, device: str | torch.device = "cpu",
                 placement: Placement | None = None) -> None:
        self.compiled = compiled
        self.fetch = fetch
        self.device = torch.device(device)
        self.placement = placement
        self._stats: dict[str, dict[str, Any]] | None = None
        self._out: dict[torch.device, torch.Tensor] = {}
        self._vocab = VocabRows(compiled.vocab) if compiled.vocab is not None else None
        """Embedding/LM-head rows re-indexed to one vocabulary (``tokenizer.source``), see vocab_rows.py."""

    def task_device(self, task: TensorTask) -> torch.device:
        """Where ``task`` is merged: its parameter's device under a placement, else the executor's device."""
        return self.device if self.placement is None else torch.device(self.placement(task.out_name))

    def _load(self, ref: tuple[int, str], device: torch.device | None = None) -> torch.Tensor:
        device = self.device if device is None else device
        t = self.fetch(*ref)
        if t.device != device:
            t = t.to(device, non_blocking=True)
        if t.is_floating_point():
            t = t.to(compute_dtype(t.dtype))
        return t

    def _output_buffer(self, task: TensorTask, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A view of the one reusable output buffer of ``device``, sized once for its largest merged tensor."""
        numel = math.prod(task.shape)
        out = self._out.get(device)
        if out is None or out.dtype != dtype or out.numel() < numel:
            on_device = (t for t in self.compiled.tasks if t.floating and self.task_device(t) == device)
            largest = max((math.prod(t.shape) for t in on_device), default=numel)
            out = self._out[device] = torch.empty(max(numel, largest), dtype=dtype, device=device)
        return out[:numel].view(task.shape)

    def inputs_for(self, task: TensorTask, stats: dict[str, Any] | None = None, reuse_output: bool = False,
                   device: torch.device | None = None) -> MergeInputs:
        """The operator's inputs for ``task`` on ``device`` (default: :meth:`task_device`)."""
        device = self.task_device(task) if device is None else device
        generator = None
        if self.compiled.operators[task.method].randomized:
            generator = torch.Generator(device=device).manual_seed(task.seed)
        tensors: Sequence[torch.Tensor]
        if self.compiled.operators[task.method].streams_inputs and not (task.vocab and self._vocab is not None):
            refs = task.inputs
            tensors = LazyTensors(lambda i: self._load(refs[i], device), len(refs))
        else:
            tensors = [self._load(ref, device) for ref in task.inputs]
        base = self._load(task.base, device) if task.base is not None else None
        if task.vocab and self._vocab is not None:
            tensors = [self._vocab.reindex(t, ref[0]) for t, ref in zip(tensors, task.inputs)]
            base = self._vocab.reindex(base, task.base[0]) if base is not None and task.base is not None else None
            reuse_output = False
        # a streamed input is not kept mapped just to read its dtype: the base (when given) tells the same
        first = base if isinstance(tensors, LazyTensors) and base is not None else (tensors[0] if tensors else base)
        out = None
        if reuse_output and first is not None and first.is_floating_point():
            out = self._output_buffer(task, first.dtype, device)
        del first
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
                for task in tasks:  # observed on the main device: a pass's state must not straddle devices
                    gp.observe(self.inputs_for(task, device=self.device), task.params, p)
                gp.end_pass(p)
            self._stats[name] = gp.finish()
        return self._stats

    # ------------------------------------------------------------------ merging
    def run(self, task: TensorTask, reuse_output: bool = False) -> torch.Tensor:
        """The merged tensor for ``task`` in the compute dtype, on :meth:`task_device`.

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
            if task.vocab and self._vocab is not None:
                out = self._vocab.merge(spec, self.inputs_for(task, stats), task.params, task)
            else:
                out = spec.fn(self.inputs_for(task, stats, reuse_output), task.params)
        if tuple(out.shape) != task.shape:
            raise RuntimeError(f"operator {task.method} returned shape {list(out.shape)} for {task.out_name}, expected {list(task.shape)}")
        return out

    def __iter__(self) -> Iterator[tuple[TensorTask, torch.Tensor]]:
        """(task, merged tensor) in plan order. Each tensor is valid until the iterator advances (one output
        buffer per device serves every tensor, so a merge allocates no memory per weight): write or copy it at once."""
        for task in self.compiled.tasks:
            yield task, self.run(task, reuse_output=True)
