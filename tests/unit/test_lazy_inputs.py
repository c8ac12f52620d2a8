"""Operators that stream their inputs get them one at a time: LazyTensors and the executor's hand-off."""

from __future__ import annotations

import weakref

import pytest
import torch

from evomerge.merge.operator import LazyTensors, MergeInputs, get_operator


def test_elements_are_loaded_when_read_and_not_kept() -> None:
    loads: list[int] = []
    alive: list[weakref.ref[torch.Tensor]] = []

    def load(i: int) -> torch.Tensor:
        loads.append(i)
        t = torch.full((3,), float(i))
        alive.append(weakref.ref(t))
        return t

    lazy = LazyTensors(load, 3)
    assert len(lazy) == 3 and loads == []
    seen = [float(t[0]) for t in lazy]  # iteration drops each tensor before loading the next
    assert seen == [0.0, 1.0, 2.0] and loads == [0, 1, 2]
    assert all(ref() is None for ref in alive)
    assert float(lazy[-1][0]) == 2.0 and [float(t[0]) for t in lazy[1:]] == [1.0, 2.0]
    with pytest.raises(IndexError):
        lazy[3]


def test_streaming_operators_declare_it_and_get_lazy_inputs_from_the_executor() -> None:
    from evomerge.merge.executor import MergeExecutor
    from evomerge.merge.planner import SourceInfo, compile_plan
    from evomerge.plan import MergePlan

    assert get_operator("opcm").streams_inputs and not get_operator("ties").streams_inputs
    shapes = {"w": (4, 4)}
    infos = {r: SourceInfo(r, shapes, {}, {"w": "torch.float32"}) for r in ("b", "m1", "m2")}
    gen = torch.Generator().manual_seed(0)
    weights = {r: torch.randn(4, 4, generator=gen) for r in infos}
    plan = MergePlan.model_validate({"merge_method": "opcm", "base_model": "b",
                                     "models": [{"model": "m1"}, {"model": "m2"}],
                                     "parameters": {"scaling": "tensor"}})
    compiled = compile_plan(plan, infos)
    executor = MergeExecutor(compiled, lambda source, name: weights[compiled.sources[source]])
    task = compiled.tasks[0]
    inputs: MergeInputs = executor.inputs_for(task)
    assert isinstance(inputs.tensors, LazyTensors) and len(inputs.tensors) == 2
    streamed = next(t for _, t in executor).clone()
    eager = get_operator("opcm").fn(
        MergeInputs(tensors=[weights["m1"], weights["m2"]], base=weights["b"], name="w"), task.params)
    assert torch.equal(streamed, eager) and not torch.equal(eager, weights["m1"])
