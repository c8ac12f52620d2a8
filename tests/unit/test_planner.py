"""Plan compilation: mergekit's slice semantics, depth coordinate, overrides and incompatibility errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.errors import ConfigError, IncompatibleModelsError, UnknownNameError
from evomerge.merge.planner import SourceInfo, compile_plan
from evomerge.merge.to_disk import merge_to_disk
from evomerge.plan import MergePlan

LAYER_NAMES = ["self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"]


def fake_info(ref: str, layers: int = 3, hidden: int = 4, vocab: int = 10, arch: str = "LlamaForCausalLM") -> SourceInfo:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        shapes[f"model.layers.{i}.self_attn.q_proj.weight"] = (hidden, hidden)
        shapes[f"model.layers.{i}.mlp.up_proj.weight"] = (2 * hidden, hidden)
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    config = {"model_type": "llama", "architectures": [arch], "num_hidden_layers": layers, "vocab_size": vocab}
    return SourceInfo(ref, shapes, config)


def linear_plan(**extra: object) -> MergePlan:
    data = {"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": [0.0, 1.0]}}, {"model": "b", "parameters": {"weight": 1.0}}]}
    data.update(extra)
    return MergePlan.from_dict(data)


def test_network_order_and_depth_coordinate() -> None:
    compiled = compile_plan(linear_plan(), {"a": fake_info("a"), "b": fake_info("b")})
    names = [t.out_name for t in compiled.tasks]
    assert names[0] == "model.embed_tokens.weight"
    assert names[-2:] == ["model.norm.weight", "lm_head.weight"]
    weights = {t.out_name: t.params.model("weight")[0] for t in compiled.tasks}
    # t = layer / (n - 1) inside the layers, 0 outside them (mergekit's convention)
    assert weights["model.embed_tokens.weight"] == 0.0
    assert weights["model.layers.0.mlp.up_proj.weight"] == 0.0
    assert weights["model.layers.1.mlp.up_proj.weight"] == pytest.approx(0.5)
    assert weights["model.layers.2.mlp.up_proj.weight"] == pytest.approx(1.0)
    assert weights["lm_head.weight"] == 0.0


def test_slices_rename_layers_and_update_layer_count() -> None:
    plan = MergePlan.from_dict({
        "merge_method": "linear",
        "parameters": {"weight": 1.0},
        "slices": [
            {"sources": [{"model": "a", "layer_range": [0, 2]}]},
            {"sources": [{"model": "b", "layer_range": [1, 3]}]},
        ],
    })
    compiled = compile_plan(plan, {"a": fake_info("a"), "b": fake_info("b")})
    by_name = {t.out_name: t for t in compiled.tasks}
    assert compiled.out_config["num_hidden_layers"] == 4
    # output layer 2 is source b's layer 1, output layer 3 is b's layer 2
    assert by_name["model.layers.2.mlp.up_proj.weight"].inputs == ((1, "model.layers.1.mlp.up_proj.weight"),)
    assert by_name["model.layers.3.mlp.up_proj.weight"].inputs == ((1, "model.layers.2.mlp.up_proj.weight"),)
    assert by_name["model.embed_tokens.weight"].inputs == ((0, "model.embed_tokens.weight"),)
    assert by_name["lm_head.weight"].inputs == ((1, "lm_head.weight"),)


def test_override_by_layers_and_filter_with_per_model_values() -> None:
    plan = linear_plan(overrides=[{"merge_method": "linear", "layers": [1, 3], "filter": "mlp",
                                   "parameters": {"normalize": False}, "models": {"a": {"weight": 0.25}}}])
    compiled = compile_plan(plan, {"a": fake_info("a"), "b": fake_info("b")})
    by_name = {t.out_name: t for t in compiled.tasks}
    t = by_name["model.layers.2.mlp.up_proj.weight"]
    assert t.params.model("weight") == [0.25, 1.0] and t.params["normalize"] is False
    untouched = by_name["model.layers.2.self_attn.q_proj.weight"]
    assert untouched.params["normalize"] is True
    assert by_name["model.layers.0.mlp.up_proj.weight"].params["normalize"] is True


def test_shape_mismatch_names_tensor_and_shapes() -> None:
    with pytest.raises(IncompatibleModelsError, match=r"'model.embed_tokens.weight': a has \[10, 4\], b has \[10, 8\]"):
        compile_plan(linear_plan(), {"a": fake_info("a"), "b": fake_info("b", hidden=8)})


def test_vocab_mismatch_mentions_tokenizer_option() -> None:
    with pytest.raises(IncompatibleModelsError, match="vocabularies differ"):
        compile_plan(linear_plan(), {"a": fake_info("a"), "b": fake_info("b", vocab=12)})


def test_architecture_and_layer_count_mismatch() -> None:
    with pytest.raises(IncompatibleModelsError, match="architecture mismatch"):
        compile_plan(linear_plan(), {"a": fake_info("a"), "b": fake_info("b", arch="MistralForCausalLM")})
    with pytest.raises(IncompatibleModelsError, match="different numbers of layers"):
        compile_plan(linear_plan(), {"a": fake_info("a"), "b": fake_info("b", layers=2)})


def test_missing_tensor_named() -> None:
    info = fake_info("b")
    shapes = dict(info.shapes)
    del shapes["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(IncompatibleModelsError, match=r"'model.layers.1.mlp.up_proj.weight' is missing from b"):
        compile_plan(linear_plan(), {"a": fake_info("a"), "b": SourceInfo("b", shapes, info.config)})


def test_unknown_method_and_parameter() -> None:
    with pytest.raises(UnknownNameError, match="known merge methods: .*linear"):
        compile_plan(linear_plan(merge_method="nope"), {"a": fake_info("a"), "b": fake_info("b")})
    with pytest.raises(ConfigError, match="linear has no parameter 'densty'"):
        compile_plan(linear_plan(parameters={"densty": 0.5}), {"a": fake_info("a"), "b": fake_info("b")})


def test_seeds_differ_per_tensor_and_follow_plan_seed() -> None:
    infos = {"a": fake_info("a"), "b": fake_info("b")}
    one = compile_plan(linear_plan(seed=1), infos)
    two = compile_plan(linear_plan(seed=2), infos)
    seeds = [t.seed for t in one.tasks]
    assert len(set(seeds)) == len(seeds)
    assert seeds != [t.seed for t in two.tasks]


def test_disk_merge_equals_hand_computed(llama_family: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a, b = llama_family["ft1"], llama_family["ft2"]
    plan = MergePlan.from_dict({"merge_method": "linear", "models": [
        {"model": str(a), "parameters": {"weight": 0.25}}, {"model": str(b), "parameters": {"weight": [0.75, 0.25]}}]})
    merge_to_disk(plan, tmp_path / "out", progress=False)
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    name = "model.layers.1.mlp.up_proj.weight"  # t = 1 → weight of b is 0.25
    torch.testing.assert_close(out[name], (0.25 * ta[name] + 0.25 * tb[name]) / 0.5, rtol=0, atol=1e-6)
    name = "model.layers.0.mlp.up_proj.weight"  # t = 0 → weight of b is 0.75
    torch.testing.assert_close(out[name], (0.25 * ta[name] + 0.75 * tb[name]) / 1.0, rtol=0, atol=1e-6)
    assert (tmp_path / "out" / "tokenizer.json").is_file() and (tmp_path / "out" / "merge_recipe.yaml").is_file()


def test_models_without_numbered_blocks_merge_every_tensor() -> None:
    """A plain nn.Sequential ('0.weight', '2.bias', ...) has no layers: every tensor is merged, in file order."""
    shapes = {"0.weight": (4, 3), "0.bias": (4,), "2.weight": (2, 4), "2.bias": (2,)}
    infos = {ref: SourceInfo(ref, shapes, {}) for ref in ("a", "b")}
    plan = MergePlan.from_dict({"merge_method": "linear", "models": [
        {"model": "a", "parameters": {"weight": 1.0}}, {"model": "b", "parameters": {"weight": 3.0}}]})
    compiled = compile_plan(plan, infos)
    assert sorted(t.out_name for t in compiled.tasks) == sorted(shapes)
    with pytest.raises(IncompatibleModelsError, match="has no layer 0"):
        compile_plan(MergePlan.from_dict({"merge_method": "passthrough", "slices": [
            {"sources": [{"model": "a", "layer_range": [0, 1]}]}]}), infos)
