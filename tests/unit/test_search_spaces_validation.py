"""Config and genome validation: every user mistake is a ConfigError naming the field; bounds are honoured."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from evomerge.errors import ConfigError, IncompatibleModelsError, UnknownNameError
from evomerge.layout import ModelLayout
from evomerge.plan import MergePlan
from evomerge.types import Genome
from search_spaces import SPACES, build_space
from search_spaces.global_space import GlobalConfig, GlobalSpace
from tests.unit.test_search_spaces_support import make_layout

LAYOUT = make_layout("llama", 4)
TWO = ["a", "b"]


def error(config: dict[str, Any], sources: list[str] = TWO, base: str | None = None,
          layout: ModelLayout = LAYOUT) -> str:
    with pytest.raises(ConfigError) as info:
        build_space(config, sources, base, layout)
    return str(info.value)


@pytest.mark.parametrize(("config", "base", "field"), [
    ({"name": "global", "merge_method": "ss_delta", "parameters": {"density": {"low": 0.9, "high": 0.2}}}, "b",
     "search_space.parameters.density.low"),
    ({"name": "global", "parameters": {"weight": {"low": 0.0, "log": True}}}, None,
     "search_space.parameters.weight.low"),
    ({"name": "global", "parameters": {"weight": {"init": 2.0}}}, None, "search_space.parameters.weight.init"),
    ({"name": "global", "parameters": {"density": {}}}, None, "search_space.parameters.density"),
    ({"name": "global", "merge_method": "ss_delta", "parameters": {"density": {"low": 0.5, "high": 2.0}}}, "b",
     "search_space.parameters.density.high"),
    ({"name": "global", "merge_method": "ss_delta", "parameters": {"lambda": {"per_model": True}}}, "b",
     "search_space.parameters.lambda.per_model"),
    ({"name": "global", "merge_method": "ss_scale", "parameters": {"steps": {}, "scale": {}}}, None,
     "search_space.parameters.steps"),
    ({"name": "global", "merge_method": "ss_scale", "parameters": {"scale": {}}, "extra_parameters": {"scale": 1}},
     None, "search_space.extra_parameters.scale"),
    ({"name": "global", "merge_method": "ss_scale", "parameters": {"scale": {}}, "extra_parameters": {"mode": "z"}},
     None, "search_space.extra_parameters.mode"),
    ({"name": "global", "merge_method": "ss_scale", "parameters": {"steps": {}}}, None, "search_space.parameters"),
    ({"name": "global", "merge_method": "ss_delta"}, None, "search_space.merge_method"),
    ({"name": "global", "merge_method": "ss_pair", "parameters": {"t": {}}}, "base", "search_space.merge_method"),
    ({"name": "global", "merge_method": "nope"}, None, "search_space.merge_method"),
    ({"name": "global", "parameters": {}}, None, "search_space.parameters"),
    ({"name": "global", "bogus": 1}, None, "search_space"),
    ({"name": "layerwise", "groups": 5}, None, "search_space.groups"),
    ({"name": "layerwise", "groups": 0}, None, "search_space.groups"),
    ({"name": "layerwise", "split": "halves"}, None, "search_space.split"),
    ({"name": "method_choice", "options": {"linear": {"parameters": {"weight": {}}}, "nope": {}}}, None,
     "search_space.options.nope"),
    ({"name": "method_choice", "options": {"ss_delta": {}}}, None, "search_space.options.ss_delta"),
    ({"name": "method_choice", "options": {"linear": {"parameters": {"weight": {"high": -1.0}}}}}, None,
     "search_space.options.linear.parameters.weight.low"),
    ({"name": "m2n2", "low": 0.2}, None, "search_space.low"),
    ({"name": "m2n2", "high": 0.5}, None, "search_space.high"),
    ({"name": "m2n2", "mode": "parameters", "granularity": "layer"}, None, "search_space.granularity"),
    ({"name": "m2n2", "mode": "parameters", "low": 3.0, "high": 2.0}, None, "search_space.low"),
    ({"name": "nope"}, None, "search_space.name"),
    ({}, None, "search_space.name"),
])
def test_errors_name_the_field(config: dict[str, Any], base: str | None, field: str) -> None:
    message = error(config, base=base)
    assert message.startswith(f"{field}:") or message.startswith(f"{field}."), message


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_space({"name": "nope"}, TWO, None, LAYOUT)
    assert {"global", "layerwise", "method_choice", "m2n2"} <= set(info.value.known)
    with pytest.raises(UnknownNameError) as info:
        build_space({"name": "global", "merge_method": "nope"}, TWO, None, LAYOUT)
    assert "linear" in info.value.known


def test_sources_are_checked() -> None:
    assert "at least one source" in error({"name": "global"}, sources=[])
    assert "listed twice" in error({"name": "global"}, sources=["a", "a"])
    assert "2 to 2" in error({"name": "global", "merge_method": "ss_pair", "parameters": {"t": {}}}, sources=["a", "b", "c"])


def test_split_needs_attention_and_mlp_in_every_layer() -> None:
    mlp_only = ModelLayout.from_shapes({f"layers.{i}.mlp.fc.weight": (2, 2) for i in range(2)}, {"num_hidden_layers": 2})
    assert error({"name": "layerwise", "split": "attn_mlp"}, layout=mlp_only).startswith("search_space.split:")
    build_space({"name": "layerwise"}, TWO, None, mlp_only)  # without the split it is fine


def test_layerwise_needs_layers() -> None:
    flat = ModelLayout.from_shapes({"fc.weight": (2, 2)}, {})
    assert error({"name": "layerwise"}, layout=flat).startswith("search_space.groups:")


def test_a_parsed_config_object_is_accepted() -> None:
    space = build_space(GlobalConfig(parameters={"weight": {"low": 0.0, "high": 2.0}}), TWO, None, LAYOUT)
    assert isinstance(space, GlobalSpace)
    assert list(space.upper) == [2.0, 2.0]
    assert SPACES.get("global") is GlobalSpace


def test_bounds_log_scale_and_init_reach_the_dimensions() -> None:
    config = {"name": "global", "merge_method": "ss_delta", "parameters": {
        "density": {"low": 0.01, "high": 1.0, "log": True, "init": 0.5, "per_model": False},
        "lambda": {"low": 0.5, "high": 1.5}}}
    space = build_space(config, TWO, "base", LAYOUT)
    density, lam = space.float_dims
    assert (density.low, density.high, density.log, density.start) == (0.01, 1.0, True, 0.5)
    assert (lam.low, lam.high, lam.log, lam.start) == (0.5, 1.5, False, 1.0)
    genome = space.from_unit(np.array([0.5, 0.5]))
    assert genome.vector[0] == pytest.approx(0.1)  # the geometric middle of [0.01, 1]
    assert genome.vector[1] == pytest.approx(1.0)
    plan = space.decode(genome)
    assert plan.parameters == {"density": genome.vector[0], "lambda": genome.vector[1]}
    clipped = space.clip(Genome(np.array([5.0, -5.0])))
    assert list(clipped.vector) == [1.0, 0.5]
    assert space.start() == Genome(np.array([0.5, 1.0]))


def test_genomes_of_the_wrong_shape_are_refused() -> None:
    space = build_space({"name": "method_choice", "groups": 2}, TWO, None, LAYOUT)
    with pytest.raises(ValueError, match="does not fit"):
        space.decode(Genome(np.zeros(space.dimension + 1), (0, 0)))
    with pytest.raises(ValueError, match="does not fit"):
        space.decode(Genome(np.zeros(space.dimension), (0,)))
    with pytest.raises(ValueError, match="out of range"):
        space.decode(Genome(np.zeros(space.dimension), (0, 1)))


def test_encode_refuses_plans_of_another_shape() -> None:
    space = build_space({"name": "layerwise"}, TWO, None, LAYOUT)
    other = MergePlan(merge_method="ss_scale", models=[{"model": "a"}])
    with pytest.raises(ConfigError, match="merge_method"):
        space.encode(other)
    missing = MergePlan(merge_method="linear", models=[{"model": "a", "parameters": {"weight": 1.0}}, {"model": "b"}])
    with pytest.raises(ConfigError, match="no 'weight' of b"):
        space.encode(missing)
    sliced = MergePlan.from_dict({"merge_method": "linear", "slices": [{"sources": [{"model": "a", "layer_range": [0, 4]}]}]})
    with pytest.raises(ConfigError, match="slices"):
        space.encode(sliced)
    method_space = build_space({"name": "method_choice"}, TWO, None, LAYOUT)
    with pytest.raises(ConfigError, match="not one of the options"):
        method_space.encode(other)


def test_m2n2_initial_vectors_are_checked() -> None:
    n = LAYOUT.total_params()
    config = {"name": "m2n2", "mode": "parameters"}
    with pytest.raises(IncompatibleModelsError, match="values"):
        build_space(config, [], None, LAYOUT, initial_vectors=[np.zeros(n - 1)])
    with pytest.raises(ConfigError, match="search_space.low"):
        build_space(config, [], None, LAYOUT, initial_vectors=[np.full(n, 11.0)])
    with pytest.raises(ConfigError, match="non-finite"):
        build_space(config, [], None, LAYOUT, initial_vectors=[np.full(n, np.nan)])
