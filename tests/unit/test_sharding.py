"""Sharding a resident model over several devices, on CPU: real models are planned and loaded through the
device-map path with stand-in devices, and shard-local merging is checked on a CPU + meta device pair."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evomerge.config import parse_config
from evomerge.distributed.evaluator import Evaluator, EvaluatorSpec
from evomerge.distributed.placement import covering_keys, parameter_devices
from evomerge.distributed.sharding import DeviceSet, for_devices, inventory, plan_shards, shard_count
from evomerge.errors import ConfigError
from evomerge.merge.executor import MergeExecutor
from evomerge.merge.planner import SourceInfo, compile_plan
from evomerge.models import build_factory_model, pretrained_skeleton
from evomerge.plan import MergePlan
from evomerge.types import Candidate, Genome

CPU, META = torch.device("cpu"), torch.device("meta")
FITNESS = {"name": "callable", "function": f"{Path(__file__).parents[1] / 'integration/assets/fitness_fns.py'}:mlp_norm"}


def two_stand_ins(capacity: int = 10**9) -> DeviceSet:
    """Two logical devices that are both the CPU (what ``cuda:0``/``cuda:1`` are on a GPU node)."""
    return DeviceSet((CPU, CPU), (capacity, capacity))


# ---------------------------------------------------------------------- configuration
def test_fractional_gpus_above_one_is_a_config_error() -> None:
    raw = {"models": {"sources": ["a"]}, "search_space": {"name": "s"}, "strategy": {"name": "t"},
           "fitness": {}, "budget": {"evaluations": 1}}
    with pytest.raises(ConfigError, match=r"^resources\.gpus_per_actor: 2\.5 GPUs"):
        parse_config({**raw, "resources": {"gpus_per_actor": 2.5}})
    with pytest.raises(ConfigError, match=r"^resources\.device: 'cpu' cannot hold a model sharded"):
        parse_config({**raw, "resources": {"gpus_per_actor": 2, "device": "cpu"}})
    assert parse_config({**raw, "resources": {"gpus_per_actor": 0.5}}).resources.gpus_per_actor == 0.5
    assert parse_config({**raw, "resources": {"gpus_per_actor": 4}}).resources.gpus_per_actor == 4


def test_shard_count() -> None:
    assert [shard_count(g) for g in (0, 0.25, 1, 2, 3.0)] == [1, 1, 1, 2, 3]
    with pytest.raises(ConfigError, match="resources.gpus_per_actor"):
        shard_count(1.5)
    assert for_devices("auto", 1) is None
    with pytest.raises(ConfigError, match="resources.device"):
        for_devices("cuda:1", 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without GPUs")
def test_asking_for_more_gpus_than_visible_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="2 GPUs per actor, but this evaluator sees 0"):
        for_devices("auto", 2)


# ---------------------------------------------------------------------- planning real models
def test_inventory_of_a_tied_skeleton(gpt2_family: dict[str, Path]) -> None:
    skeleton = pretrained_skeleton(gpt2_family["base"])
    assert skeleton is not None and next(skeleton.parameters()).device == META
    sizes, classes, tied = inventory(skeleton)
    assert tied == {"lm_head.weight": "transformer.wte.weight"}
    assert sizes["lm_head.weight"] == 0
    unique = {id(t): t for t in [*skeleton.parameters(), *skeleton.buffers()]}.values()
    assert sum(sizes.values()) == sum(t.numel() * 4 for t in unique)
    assert next(iter(sizes)) == "transformer.wte.weight" and classes["transformer.h.0"] == "GPT2Block"


def test_plan_of_a_real_model_keeps_layers_whole(llama_family: dict[str, Path]) -> None:
    skeleton = pretrained_skeleton(llama_family["base"])
    assert skeleton is not None
    shards = plan_shards(skeleton, two_stand_ins())
    names = list(skeleton.state_dict())
    assert all(len(covering_keys(n, shards.device_map)) == 1 for n in names)
    devices = parameter_devices(names, shards.device_map)
    assert devices["model.embed_tokens.weight"] == 0 and devices["lm_head.weight"] == 1
    assert {devices[n] for n in names if n.startswith("model.layers.0.")} == {0}
    assert {devices[n] for n in names if n.startswith("model.layers.1.")} == {1}


def test_plan_of_a_factory_model_splits_its_layers() -> None:
    model = build_factory_model("mlp", {"in_features": 16, "hidden": 16, "out_features": 4, "depth": 4}, seed=0)
    shards = plan_shards(model, two_stand_ins())
    assert shards.device_map == {"1": 0, "3": 0, "5": 1, "7": 1}


# ---------------------------------------------------------------------- shard-local merging
def fake_sources(layers: int = 3, hidden: int = 4) -> dict[str, SourceInfo]:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (10, hidden)}
    for i in range(layers):
        shapes[f"model.layers.{i}.mlp.up_proj.weight"] = (2 * hidden, hidden)
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (hidden,)
    shapes |= {"model.norm.weight": (hidden,), "lm_head.weight": (10, hidden)}
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": layers, "vocab_size": 10}
    return {ref: SourceInfo(ref, shapes, config) for ref in ("base", "a", "b")}


def source_tensors(infos: dict[str, SourceInfo]) -> dict[tuple[int, str], torch.Tensor]:
    """Seeded random values for every (source index, tensor name)."""
    gen = torch.Generator().manual_seed(7)
    return {(i, name): torch.randn(shape, generator=gen) for i, ref in enumerate(infos)
            for name, shape in infos[ref].shapes.items()}


DEVICE_MAP = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.layers.2": 1,
              "model.norm": 1, "lm_head": 1}
STAND_IN = {0: CPU, 1: META}
"""A second device whose tensors carry no data: the device of a result shows where it was computed."""


def compiled_merge(method: str, parameters: dict[str, Any], **shared: Any) -> Any:
    base = {} if method == "linear" else {"base_model": "base"}
    plan = MergePlan.from_dict({"merge_method": method, **base, "parameters": shared,
                                "models": [{"model": m, "parameters": parameters} for m in ("a", "b")]})
    return compile_plan(plan, fake_sources())


@pytest.mark.parametrize("method", ["task_arithmetic", "linear"])
def test_executor_merges_each_tensor_on_its_parameters_device(method: str) -> None:
    compiled = compiled_merge(method, {"weight": 0.5})
    tensors = source_tensors(fake_sources())
    where = {n: STAND_IN[d] for n, d in parameter_devices([t.out_name for t in compiled.tasks], DEVICE_MAP).items()}
    fetched: list[tuple[int, str]] = []

    def fetch(source: int, name: str) -> torch.Tensor:
        fetched.append((source, name))
        return tensors[(source, name)]

    sharded = MergeExecutor(compiled, fetch, CPU, placement=where.__getitem__)
    reference = {t.out_name: out.clone() for t, out in MergeExecutor(compiled, fetch, CPU)}
    seen = 0
    for task, out in sharded:
        assert sharded.task_device(task) == where[task.out_name]
        assert out.device == where[task.out_name], task.out_name
        if out.device == CPU:
            torch.testing.assert_close(out, reference[task.out_name], rtol=0, atol=0)
        seen += 1
    assert seen == len(where) and {d.type for d in where.values()} == {"cpu", "meta"}
    assert fetched  # the sources really came through the fetch callback


def test_whole_model_passes_run_on_the_main_device() -> None:
    """A global pass sees every tensor; its state stays on the executor's device whatever the placement."""
    compiled = compiled_merge("ties", {"weight": 0.5, "density": 0.5}, trim_scope="global")
    tensors = source_tensors(fake_sources())
    where = {n: STAND_IN[d] for n, d in parameter_devices([t.out_name for t in compiled.tasks], DEVICE_MAP).items()}
    sharded = MergeExecutor(compiled, lambda s, n: tensors[(s, n)], CPU, placement=where.__getitem__)
    plain = MergeExecutor(compiled, lambda s, n: tensors[(s, n)], CPU)
    assert sharded.stats() == plain.stats() and sharded.stats()["ties"]


# ---------------------------------------------------------------------- a sharded evaluator
def candidate(family: dict[str, Path]) -> Candidate:
    plan = MergePlan.from_dict({
        "merge_method": "ties", "base_model": str(family["base"]),
        "models": [{"model": str(family[f"ft{i}"]), "parameters": {"weight": 0.5, "density": 0.6}} for i in (1, 2)],
    })
    return Candidate("c0", Genome(np.zeros(1)), plan)


def spec_of(family: dict[str, Path]) -> EvaluatorSpec:
    refs = [str(family[k]) for k in ("base", "ft1", "ft2")]
    return EvaluatorSpec(sources={r: r for r in refs}, base=refs[0], fitness=FITNESS)


def test_sharded_evaluator_equals_the_single_device_one(gpt2_family: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec, cand = spec_of(gpt2_family), candidate(gpt2_family)
    single = Evaluator(spec)
    expected = single.evaluate(cand)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor must land where it was planned
        sharded = Evaluator(spec, devices=two_stand_ins())
    assert sharded.shards is not None and set(sharded.shards.device_map.values()) == {0, 1}
    planned = parameter_devices(sharded.params, sharded.shards.device_map)
    assert planned["lm_head.weight"] == planned["transformer.wte.weight"] == 0  # tied: one copy, one device
    assert planned["transformer.h.1.mlp.c_fc.weight"] == 1
    assert sharded.param_devices == {n: CPU for n in sharded.params}

    asked: list[str] = []
    original = MergeExecutor.task_device

    def spy(executor: MergeExecutor, task: Any) -> torch.device:
        assert executor.placement is not None
        asked.append(task.out_name)
        return original(executor, task)

    monkeypatch.setattr(MergeExecutor, "task_device", spy)
    got = sharded.evaluate(cand)
    assert got.ok and got.objectives == expected.objectives
    assert set(asked) == {t.out_name for t in sharded._compile(cand).tasks}
    for name, tensor in single.params.items():
        torch.testing.assert_close(sharded.params[name], tensor, rtol=0, atol=0)


def test_a_model_too_large_for_its_devices_is_refused(llama_family: dict[str, Path]) -> None:
    from evomerge.distributed.placement import DoesNotFitError

    with pytest.raises(DoesNotFitError, match="raise resources.gpus_per_actor"):
        Evaluator(spec_of(llama_family), devices=two_stand_ins(capacity=1000))


def test_a_plan_with_a_tokenizer_option_fails_as_a_result(llama_family: dict[str, Path]) -> None:
    spec, cand = spec_of(llama_family), candidate(llama_family)
    evaluator = Evaluator(spec)
    assert cand.plan is not None
    with_tokenizer = cand.plan.model_copy(update={"tokenizer_source": "base"})
    got = evaluator.evaluate(Candidate("c1", cand.genome, with_tokenizer))
    assert not got.ok and "tokenizer option" in (got.error or "")
    assert evaluator.evaluate(cand).ok
