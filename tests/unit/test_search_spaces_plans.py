"""The exact plans the spaces write (hand-computed), and encoding of plans the spaces did not write."""

from __future__ import annotations

import numpy as np

from evomerge.plan import MergePlan
from evomerge.types import Genome
from search_spaces import build_space
from tests.unit.test_search_spaces_support import make_layout

LLAMA = make_layout("llama", 3)


def test_global_plan_is_a_plain_mergekit_recipe() -> None:
    config = {"name": "global", "merge_method": "ss_delta",
              "parameters": {"weight": {"high": 2.0}, "lambda": {"low": 0.5, "high": 1.5}}}
    space = build_space(config, ["a", "b", "base"], "base", LLAMA)
    plan = space.decode(Genome(np.array([0.25, 1.75, 1.25])))
    assert plan.to_dict(mergekit=True) == {
        "merge_method": "ss_delta",
        "base_model": "base",
        "models": [{"model": "a", "parameters": {"weight": 0.25}},
                   {"model": "b", "parameters": {"weight": 1.75}},
                   {"model": "base"}],
        "parameters": {"lambda": 1.25},
    }


def test_layerwise_plan_with_split_and_groups() -> None:
    config = {"name": "layerwise", "groups": 2, "split": "attn_mlp", "parameters": {"weight": {"per_model": False}}}
    space = build_space(config, ["a", "b"], None, LLAMA)
    # groups [0, 1] and [2]; per group: attn, mlp
    plan = space.decode(Genome(np.array([0.1, 0.3, 0.5, 0.9])))
    assert plan.to_dict()["parameters"]["weight"] == [
        {"filter": ".self_attn.", "value": [0.1, 0.1, 0.5]},
        {"filter": ".mlp.", "value": [0.3, 0.3, 0.9]},
        {"filter": "model.norm.weight", "value": 0.5 * (0.5 + 0.9)},
        {"filter": "lm_head.weight", "value": 0.5 * (0.5 + 0.9)},
        {"value": [0.5 * (0.1 + 0.3), 0.5 * (0.1 + 0.3), 0.5 * (0.5 + 0.9)]},
    ]
    assert plan.models is not None and all(m.parameters is None for m in plan.models)


def test_layerwise_encodes_a_hand_written_gradient() -> None:
    recipe = MergePlan.from_dict({"merge_method": "linear", "models": [
        {"model": "a", "parameters": {"weight": [0.0, 1.0]}},
        {"model": "b", "parameters": {"weight": 0.5}}]})
    space = build_space({"name": "layerwise"}, ["a", "b"], None, LLAMA)
    # per layer (t = 0, 0.5, 1): a interpolates its two-point gradient, b is constant
    assert space.encode(recipe) == Genome(np.array([0.0, 0.5, 0.5, 0.5, 1.0, 0.5]))


def test_method_choice_keeps_inactive_options_behind_the_chosen_one() -> None:
    config = {"name": "method_choice", "groups": 3, "options": {
        "linear": {"parameters": {"weight": {}}},
        "ss_scale": {"parameters": {"scale": {"per_model": False}}, "extra_parameters": {"steps": 7}}}}
    space = build_space(config, ["a", "b"], None, LLAMA)
    assert space.dimension == 3 * 3
    genome = Genome(np.arange(1, 10) / 10, (1, 0, 0))
    plan = space.decode(genome)
    assert plan.merge_method == "ss_scale"  # group 0's choice
    assert plan.overrides is not None
    first, shadow = plan.overrides[0], plan.overrides[1]
    assert (first.merge_method, first.layers, first.parameters) == ("ss_scale", (0, 1), {"scale": 0.3, "steps": 7})
    assert (shadow.merge_method, shadow.layers, shadow.models) == ("linear", (0, 1), {"a": {"weight": 0.1}, "b": {"weight": 0.2}})
    # adjacent: embeddings like group 0, norm and head like group 2 (linear)
    by_filter = {o.filter: o for o in plan.overrides if o.filter is not None}
    assert by_filter["model.embed_tokens.weight"].merge_method == "ss_scale"
    assert by_filter["lm_head.weight"].models == {"a": {"weight": 0.7}, "b": {"weight": 0.8}}
    assert len(plan.overrides) == 3 * 2 + 3
    # without the inactive overrides the plan merges the same, and inactive genes encode as start values
    active = [o for i, o in enumerate(plan.overrides) if not (i < 6 and i % 2 == 1)]
    stripped = plan.model_copy(update={"overrides": active})
    expected = genome.vector.copy()
    for index in (0, 1, 5, 8):  # linear weights of group 0, ss_scale's scale of groups 1 and 2
        expected[index] = space.float_dims[index].start
    assert space.encode(stripped) == Genome(expected, genome.choices)


def test_m2n2_layer_blocks_use_layer_prefixes() -> None:
    space = build_space({"name": "m2n2", "granularity": "layer"}, ["a", "b"], None, LLAMA)
    plan = space.decode(space.initial_points()[1])
    assert plan.models is not None and plan.models[1].parameters is not None
    filters = [c["filter"] for c in plan.to_dict()["models"][1]["parameters"]["weight"]]
    assert filters == ["model.embed_tokens.weight", "model.layers.0.", "model.layers.1.", "model.layers.2.",
                       "model.norm.weight", "lm_head.weight"]


def test_spaces_pickle_and_importing_them_loads_no_torch() -> None:
    import pickle
    import subprocess
    import sys

    space = build_space({"name": "layerwise", "split": "attn_mlp"}, ["a", "b"], None, LLAMA)
    genome = space.sample(np.random.default_rng(0))
    assert pickle.loads(pickle.dumps(space)).decode(genome) == space.decode(genome)
    code = ("import sys, search_spaces, search_spaces.m2n2_coefficients, search_spaces.m2n2_parameters; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
