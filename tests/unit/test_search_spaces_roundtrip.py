"""Property tests of every space: encode(decode(g)) == g exactly, and decoded plans resolve (through the
real merge planner, i.e. evaluate_setting per tensor) to the values the genome means for each tensor.

Exactness: genes are stored in plans as Python floats (float64, no arithmetic), and on 1–6 layers the
planner's depth coordinate ``t = i/(n-1)`` times ``n-1`` is exactly ``i``, so no tolerance is needed. The
only computed values, the attention/MLP mean of in-layer norms, are recomputed the same way here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evomerge.layout import ModelLayout
from evomerge.plan import MergePlan
from evomerge.types import Genome
from search_spaces import build_space
from search_spaces.base import SearchSpace
from tests.unit.test_search_spaces_support import (
    Models,
    check_values,
    group_index,
    layouts,
    planner_values,
    refs_of,
    scope_of,
    slot,
    tensors,
)

SETTINGS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def models(draw: st.DrawFn) -> Models:
    k = draw(st.integers(2, 4))
    base = draw(st.sampled_from([None, "base"]))
    return Models(tuple(f"m{i}" for i in range(k)), base)


def operators_for(m: Models) -> list[str]:
    ops = ["linear", "ss_scale"]
    if m.base is not None:
        ops.append("ss_delta")
    elif len(m.sources) == 2:
        ops.append("ss_pair")
    return ops


def option_config(draw: st.DrawFn, op: str) -> dict[str, Any]:
    """Searched and fixed parameters of ``op`` (a few per_model choices drawn)."""
    if op == "linear":
        return {"parameters": {"weight": {"per_model": draw(st.sampled_from([None, False]))}}}
    if op == "ss_delta":
        return {"parameters": {
            "weight": {"low": 0.0, "high": 2.0, "per_model": draw(st.booleans())},
            "density": {"low": 0.1, "high": 1.0, "log": True},
            "lambda": {"low": 0.5, "high": 1.5},
        }}
    if op == "ss_pair":
        return {"parameters": {"t": {}}}
    return {"parameters": {"scale": {"low": -1.0, "per_model": draw(st.booleans())}},
            "extra_parameters": {"steps": 5, "mode": "b"}}


def per_model_flag(op: str, param: str, rng: dict[str, Any]) -> bool:
    flag = rng.get("per_model")
    return scope_of(op, param) != "global" if flag is None else bool(flag)


def gene_refs(op: str, option: dict[str, Any], m: Models) -> list[tuple[str, str | None]]:
    """(parameter, model) of each gene of one operator, in the documented order."""
    return [(p, r) for p, rng in option["parameters"].items()
            for r in refs_of(op, scope_of(op, p), per_model_flag(op, p, rng), m)]


def draw_genome(data: st.DataObject, space: SearchSpace) -> Genome:
    unit = data.draw(st.lists(st.floats(0.0, 1.0), min_size=space.dimension, max_size=space.dimension))
    choices = [data.draw(st.integers(0, n - 1)) for n in space.n_choices]
    return space.from_unit(np.array(unit), choices)


def assert_round_trip(space: SearchSpace, genome: Genome) -> MergePlan:
    plan = space.decode(genome)
    assert plan is not None
    assert plan.dialect == "evomerge"
    assert space.encode(plan) == genome
    reloaded = MergePlan.from_dict(yaml.safe_load(plan.to_yaml()))
    assert space.encode(reloaded) == genome  # YAML keeps floats exactly
    assert space.contains(genome)
    return plan


def expect(layout: ModelLayout, value_of: Any, op: str, option: dict[str, Any], m: Models) -> dict[str, Any]:
    """tensor → parameter → model → value_of(tensor, parameter, model), plus the fixed extras."""
    out: dict[str, Any] = {}
    for t in layout.tensors:
        params: dict[str, dict[str | None, Any]] = {}
        for p, r in gene_refs(op, option, m):
            params.setdefault(p, {})[r] = value_of(t, p, r)
        for p, v in option.get("extra_parameters", {}).items():
            params[p] = {None: v}
        out[t.name] = params
    return out


# ---------------------------------------------------------------------- global
@SETTINGS
@given(layouts(), models(), st.data())
def test_global(arch_layout: tuple[str, ModelLayout], m: Models, data: st.DataObject) -> None:
    arch, layout = arch_layout
    op = data.draw(st.sampled_from(operators_for(m)))
    option = option_config(data.draw, op)
    space = build_space({"name": "global", "merge_method": op, **option}, m.sources, m.base, layout)
    genome = draw_genome(data, space)
    plan = assert_round_trip(space, genome)
    assert plan.is_mergekit_expressible()
    genes = dict(zip(gene_refs(op, option, m), genome.vector, strict=True))
    resolved, methods = planner_values(plan, layout, arch, m)
    check_values(resolved, expect(layout, lambda t, p, r: genes[(p, r)], op, option, m))
    assert set(methods.values()) == {op}


# ---------------------------------------------------------------------- layerwise
@SETTINGS
@given(layouts(), models(), st.data())
def test_layerwise(arch_layout: tuple[str, ModelLayout], m: Models, data: st.DataObject) -> None:
    arch, layout = arch_layout
    op = data.draw(st.sampled_from(operators_for(m)))
    option = option_config(data.draw, op)
    n_groups = data.draw(st.integers(1, layout.num_layers))
    split = data.draw(st.sampled_from(["none", "attn_mlp"]))
    outside = data.draw(st.sampled_from(["adjacent", "own"]))
    config = {"name": "layerwise", "merge_method": op, "split": split, "outside": outside,
              "groups": "per_layer" if n_groups == layout.num_layers and data.draw(st.booleans()) else n_groups,
              **option}
    space = build_space(config, m.sources, m.base, layout)
    genome = draw_genome(data, space)
    plan = assert_round_trip(space, genome)

    parts: list[Any] = [*(["pre"] if outside == "own" and tensors(layout, "pre") else []), *range(n_groups),
                        *(["post"] if outside == "own" and tensors(layout, "post") else [])]
    it = iter(genome.vector)
    genes = {(part, s, p, r): next(it)
             for part in parts for s in (("attn", "mlp") if split == "attn_mlp" and isinstance(part, int) else ("all",))
             for p, r in gene_refs(op, option, m)}
    assert next(it, None) is None

    def in_group(g: int, kind: str, p: str, r: str | None) -> float:
        if split == "none":
            return genes[(g, "all", p, r)]
        a, b = genes[(g, "attn", p, r)], genes[(g, "mlp", p, r)]
        return {"attn": a, "mlp": b}.get(kind, 0.5 * (a + b))

    def value_of(t: Any, p: str, r: str | None) -> float:
        if t.position == "layer":
            return in_group(group_index(layout, n_groups, t.layer), slot(t), p, r)
        if outside == "own":
            return genes[(t.position, "all", p, r)]
        return in_group(0 if t.position == "pre" else n_groups - 1, "rest", p, r)

    resolved, _ = planner_values(plan, layout, arch, m)
    check_values(resolved, expect(layout, value_of, op, option, m))


# ---------------------------------------------------------------------- method_choice
@SETTINGS
@given(layouts(), models(), st.data())
def test_method_choice(arch_layout: tuple[str, ModelLayout], m: Models, data: st.DataObject) -> None:
    arch, layout = arch_layout
    names = data.draw(st.lists(st.sampled_from(operators_for(m)), min_size=1, max_size=3, unique=True))
    options = {op: option_config(data.draw, op) for op in names}
    n_groups = data.draw(st.integers(1, layout.num_layers))
    outside = data.draw(st.sampled_from(["adjacent", "own"]))
    config = {"name": "method_choice", "options": options, "groups": n_groups, "outside": outside}
    space = build_space(config, m.sources, m.base, layout)
    genome = draw_genome(data, space)
    plan = assert_round_trip(space, genome)

    parts: list[Any] = [*(["pre"] if outside == "own" and tensors(layout, "pre") else []), *range(n_groups),
                        *(["post"] if outside == "own" and tensors(layout, "post") else [])]
    assert len(genome.choices) == len(parts)
    chosen = {part: names[c] for part, c in zip(parts, genome.choices)}
    it = iter(genome.vector)
    genes = {(part, op, p, r): next(it) for part in parts for op in names for p, r in gene_refs(op, options[op], m)}
    assert next(it, None) is None

    def part_of(t: Any) -> Any:
        if t.position == "layer":
            return group_index(layout, n_groups, t.layer)
        if outside == "own":
            return t.position
        return 0 if t.position == "pre" else n_groups - 1

    resolved, methods = planner_values(plan, layout, arch, m)
    for t in layout.tensors:
        part = part_of(t)
        op = chosen[part]
        assert methods[t.name] == op
        expected = expect(layout, lambda t_, p, r, part=part, op=op: genes[(part, op, p, r)], op, options[op], m)
        check_values({t.name: resolved[t.name]}, {t.name: expected[t.name]})


# ---------------------------------------------------------------------- m2n2 coefficients
@SETTINGS
@given(layouts(), models(), st.sampled_from(["tensor", "layer"]), st.data())
def test_m2n2_coefficients(arch_layout: tuple[str, ModelLayout], m: Models, granularity: str,
                           data: st.DataObject) -> None:
    arch, layout = arch_layout
    space = build_space({"name": "m2n2", "granularity": granularity, "low": -0.5, "high": 1.5},
                        m.sources, m.base, layout)
    genome = draw_genome(data, space)
    plan = assert_round_trip(space, genome)
    columns = [*m.sources, *([m.base] if m.base else [])]
    if granularity == "tensor":
        block = {t.name: b for b, t in enumerate(layout.tensors)}
    else:
        keys = [*(["pre"] if tensors(layout, "pre") else []), *range(layout.num_layers),
                *(["post"] if tensors(layout, "post") else [])]
        block = {t.name: keys.index(t.layer if t.layer is not None else t.position) for t in layout.tensors}
    assert space.dimension == (max(block.values()) + 1) * len(columns)
    matrix = genome.vector.reshape(-1, len(columns))
    expected = {t.name: {"weight": {r: matrix[block[t.name], k] for k, r in enumerate(columns)},
                         "normalize": {None: False}} for t in layout.tensors}
    resolved, methods = planner_values(plan, layout, arch, m)
    check_values(resolved, expected)
    assert set(methods.values()) == {"linear"}


# ---------------------------------------------------------------------- m2n2 parameters
@SETTINGS
@given(layouts(), st.data())
def test_m2n2_parameters(arch_layout: tuple[str, ModelLayout], data: st.DataObject) -> None:
    _, layout = arch_layout
    space = build_space({"name": "m2n2", "mode": "parameters"}, [], None, layout)
    genome = draw_genome(data, space)
    assert space.decode(genome) is None
    arrays = space.assign(genome)  # type: ignore[attr-defined]
    assert list(arrays) == layout.names()
    assert [a.shape for a in arrays.values()] == [t.shape for t in layout.tensors]
    flat = np.concatenate([a.reshape(-1) for a in arrays.values()])
    assert np.array_equal(flat, genome.vector)  # layout order, C order within a tensor
    assert space.encode_state(arrays) == genome  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- deep models
def test_deep_gradients_round_trip_and_resolve_exactly() -> None:
    """On 24 layers, ``t = 13/23`` times 23 is 12.999... in floating point; the parameter resolver snaps
    such near-integers to the grid point, so every layer sees exactly its own gene."""
    from tests.unit.test_search_spaces_support import make_layout

    layout = make_layout("llama", 24)
    m = Models(("a", "b"), None)
    space = build_space({"name": "layerwise"}, m.sources, None, layout)
    genome = space.sample(np.random.default_rng(5))
    plan = assert_round_trip(space, genome)
    resolved, _ = planner_values(plan, layout, "llama", m)
    worst, inexact = 0.0, 0
    for t in layout.tensors:
        layer = 0 if t.layer is None and t.position == "pre" else 23 if t.layer is None else t.layer
        for k, ref in enumerate(m.sources):
            want = genome.vector[layer * 2 + k]
            error = abs(resolved[t.name]["weight"][ref] - want)
            worst, inexact = max(worst, error), inexact + (error > 0)
    assert inexact == 0 and worst == 0.0
