"""Placement of a sharded model: blocks, byte balance, ties, and the device map read back per tensor."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.distributed.placement import (
    DoesNotFitError,
    balance,
    blocks_of,
    bytes_per_device,
    compact,
    covering_keys,
    parameter_devices,
    plan_device_map,
)

LAYER_TENSORS = {"self_attn.q_proj.weight": 64, "mlp.up_proj.weight": 128, "input_layernorm.weight": 8}


def llama_like(layers: int, embed: int = 400, head: int = 400) -> tuple[dict[str, int], dict[str, str]]:
    """(tensor bytes, module classes) of a Llama-shaped model with ``layers`` decoder layers."""
    sizes = {"model.embed_tokens.weight": embed}
    classes = {"": "ForCausalLM", "model": "Model", "model.embed_tokens": "Embedding", "model.layers": "ModuleList"}
    for i in range(layers):
        classes[f"model.layers.{i}"] = "DecoderLayer"
        for name, nbytes in LAYER_TENSORS.items():
            sizes[f"model.layers.{i}.{name}"] = nbytes
            classes[f"model.layers.{i}.{name.rpartition('.')[0]}"] = "Linear"
    sizes["model.norm.weight"] = 8
    sizes["lm_head.weight"] = head
    classes |= {"model.norm": "RMSNorm", "lm_head": "Linear"}
    return sizes, classes


# ---------------------------------------------------------------------- reading a device map back
def test_fake_device_map_maps_every_tensor_to_its_module_device() -> None:
    sizes, _ = llama_like(2)
    device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.norm": 1, "lm_head": 1}
    devices = parameter_devices(sizes, device_map)
    assert devices == {
        "model.embed_tokens.weight": 0,
        "model.layers.0.self_attn.q_proj.weight": 0, "model.layers.0.mlp.up_proj.weight": 0,
        "model.layers.0.input_layernorm.weight": 0,
        "model.layers.1.self_attn.q_proj.weight": 1, "model.layers.1.mlp.up_proj.weight": 1,
        "model.layers.1.input_layernorm.weight": 1,
        "model.norm.weight": 1, "lm_head.weight": 1,
    }
    assert bytes_per_device(sizes, device_map, 2) == [400 + 200, 200 + 8 + 400]


def test_a_key_covers_whole_module_names_only() -> None:
    names = ["model.layers.1.w", "model.layers.10.w", "model.layers.1"]
    devices = parameter_devices(names, {"model.layers.1": 1, "model.layers.10": 2, "": 0})
    assert devices == {"model.layers.1.w": 1, "model.layers.10.w": 2, "model.layers.1": 1}
    assert parameter_devices(["model.layers.12.w"], {"model.layers.1": 1, "": 0}) == {"model.layers.12.w": 0}


def test_the_most_specific_key_wins_and_an_uncovered_tensor_is_named() -> None:
    assert parameter_devices(["a.b.c"], {"a": 0, "a.b": 1}) == {"a.b.c": 1}
    with pytest.raises(ValueError, match="'model.norm.weight' is not covered"):
        parameter_devices(["model.norm.weight"], {"model.embed_tokens": 0, "lm_head": 1})


# ---------------------------------------------------------------------- blocks
def test_no_split_modules_and_modules_with_own_tensors_are_blocks() -> None:
    sizes, classes = llama_like(2)
    sizes["model.layers.1.scale"] = 4  # a layer holding a tensor of its own stays whole even if not no-split
    blocks = blocks_of(sizes, classes, no_split=set())
    assert blocks["model.layers.0.mlp.up_proj.weight"] == "model.layers.0.mlp.up_proj"
    assert blocks["model.layers.1.mlp.up_proj.weight"] == "model.layers.1"
    blocks = blocks_of(sizes, classes, no_split={"DecoderLayer"})
    assert {blocks[n] for n in sizes if n.startswith("model.layers.0.")} == {"model.layers.0"}
    assert blocks["lm_head.weight"] == "lm_head"
    assert blocks_of(["scale", "a.w"], {"": "Root", "a": "Linear"}, set()) == {"scale": "scale", "a.w": "a"}
    assert set(blocks_of(sizes, classes, {"ForCausalLM"}).values()) == {""}


def test_compact_keeps_the_largest_single_device_modules() -> None:
    assert compact({"model.a.w": 0, "model.b.w": 0, "head.w": 1}) == {"model": 0, "head": 1}
    assert compact({"model.a.w": 0, "model.b.w": 1}) == {"model.a": 0, "model.b": 1}
    assert compact({"x.w": 3, "y.w": 3}) == {"": 3}


# ---------------------------------------------------------------------- planning
def test_plan_covers_every_tensor_once_and_never_splits_a_layer() -> None:
    sizes, classes = llama_like(6)
    device_map = plan_device_map(sizes, classes, {"DecoderLayer"}, [10**6] * 3)
    for name in sizes:
        assert len(covering_keys(name, device_map)) == 1, name
    devices = parameter_devices(sizes, device_map)
    for i in range(6):
        assert len({d for n, d in devices.items() if n.startswith(f"model.layers.{i}.")}) == 1
    assert set(devices.values()) == {0, 1, 2}


def test_plan_balances_bytes_in_model_order() -> None:
    sizes, classes = llama_like(4, embed=200, head=200)  # blocks: 200, 4 × 200, 8, 200
    device_map = plan_device_map(sizes, classes, {"DecoderLayer"}, [10**6] * 2)
    assert device_map == {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 0,
                          "model.layers.2": 1, "model.layers.3": 1, "model.norm": 1, "lm_head": 1}
    assert bytes_per_device(sizes, device_map, 2) == [600, 608]


def test_tied_tensors_share_a_device_and_count_once() -> None:
    sizes, classes = llama_like(4, embed=200, head=0)  # lm_head.weight is the embedding under a second name
    device_map = plan_device_map(sizes, classes, {"DecoderLayer"}, [10**6] * 2, tied={"lm_head.weight": "model.embed_tokens.weight"})
    devices = parameter_devices(sizes, device_map)
    assert devices["lm_head.weight"] == devices["model.embed_tokens.weight"] == 0
    assert devices["model.layers.3.mlp.up_proj.weight"] == 1
    with pytest.raises(ValueError, match="'lm_head.bias' is not one of"):
        plan_device_map(sizes, classes, set(), [10**6], tied={"lm_head.bias": "model.embed_tokens.weight"})


def test_a_model_that_does_not_fit_is_one_clear_error() -> None:
    sizes, classes = llama_like(2)
    with pytest.raises(DoesNotFitError, match="2 devices hold.*raise resources.gpus_per_actor"):
        plan_device_map(sizes, classes, {"DecoderLayer"}, [500, 500])
    device_map = plan_device_map(sizes, classes, {"DecoderLayer"}, [700, 700])  # fits only as 600 | 608
    assert bytes_per_device(sizes, device_map, 2) == [600, 608]


def test_unequal_devices_take_what_they_hold() -> None:
    sizes = {f"l{i}.w": 100 for i in range(6)}
    classes = {f"l{i}": "Linear" for i in range(6)}
    device_map = plan_device_map(sizes, classes, set(), [150, 10**6])
    assert bytes_per_device(sizes, device_map, 2) == [100, 500]


def brute_force_best(sizes: list[int], capacity: list[int]) -> int | None:
    """The smallest largest-load of any contiguous in-order layout within capacity (None: none fits)."""
    best = None
    for devices in itertools.combinations_with_replacement(range(len(capacity)), len(sizes)):
        loads = [0] * len(capacity)
        for size, d in zip(sizes, devices):
            loads[d] += size
        if all(load <= cap for load, cap in zip(loads, capacity)):
            best = max(loads) if best is None else min(best, max(loads))
    return best


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=7), st.lists(st.integers(20, 200), min_size=1, max_size=3))
def test_balance_is_optimal_contiguous_and_within_capacity(sizes: list[int], capacity: list[int]) -> None:
    best = brute_force_best(sizes, capacity)
    if best is None:
        with pytest.raises(DoesNotFitError):
            balance(sizes, capacity)
        return
    layout = balance(sizes, capacity)
    assert layout == sorted(layout) and len(layout) == len(sizes)
    loads = [sum(s for s, d in zip(sizes, layout) if d == i) for i in range(len(capacity))]
    assert all(load <= cap for load, cap in zip(loads, capacity))
    assert max(loads) == best
