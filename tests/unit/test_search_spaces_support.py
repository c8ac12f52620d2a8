"""Shared material for the search-space tests: synthetic layouts, test operators, an independent oracle.

The oracle states, from the documented genome conventions alone, which value each parameter should have
for each tensor and model; the tests compare it with what the merge planner resolves from the decoded
plan. Also holds the tests of the layouts themselves (their roles are what the spaces rely on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

from evomerge.layout import ModelLayout, TensorInfo
from evomerge.merge.operator import OPERATORS, MergeInputs, OperatorSpec
from evomerge.merge.params import REQUIRED, ParamSpec, ResolvedParams
from evomerge.merge.planner import SourceInfo, compile_plan

ARCHS = ("llama", "gpt2", "collide")


def layout_shapes(arch: str, n_layers: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a tiny model; ``collide`` has names that are substrings of others."""
    shapes: dict[str, tuple[int, ...]] = {}
    if arch == "llama":
        shapes["model.embed_tokens.weight"] = (5, 2)
        for i in range(n_layers):
            for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
                shapes[f"model.layers.{i}.{part}.weight"] = (2, 2)
            shapes[f"model.layers.{i}.input_layernorm.weight"] = (2,)
            shapes[f"model.layers.{i}.post_attention_layernorm.weight"] = (2,)
        shapes["model.norm.weight"] = (2,)
        shapes["lm_head.weight"] = (5, 2)
    elif arch == "gpt2":
        shapes["transformer.wte.weight"] = (5, 2)
        shapes["transformer.wpe.weight"] = (4, 2)
        for i in range(n_layers):
            for part in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
                shapes[f"transformer.h.{i}.{part}.weight"] = (2, 2) if "." in part else (2,)
                shapes[f"transformer.h.{i}.{part}.bias"] = (2,)
        shapes["transformer.ln_f.weight"] = (2,)
        shapes["transformer.ln_f.bias"] = (2,)
    else:  # no embeddings; "norm.weight" sits inside "h.i.post_norm.weight", "fc.w" inside "fc.w2"
        for i in range(n_layers):
            shapes[f"h.{i}.attn.out.w"] = (2, 2)
            shapes[f"h.{i}.attn_norm.weight"] = (2,)
            shapes[f"h.{i}.mlp.out.w"] = (2, 2)
            shapes[f"h.{i}.mlp.fc.w"] = (2,)
            shapes[f"h.{i}.mlp.fc.w2"] = (2,)
            shapes[f"h.{i}.post_norm.weight"] = (2,)
        shapes["norm.weight"] = (2,)
        shapes["head.weight"] = (3, 2)
    return shapes


def arch_config(arch: str, n_layers: int) -> dict[str, Any]:
    return {"model_type": arch, "architectures": [f"{arch}-test"], "num_hidden_layers": n_layers}


def make_layout(arch: str, n_layers: int) -> ModelLayout:
    return ModelLayout.from_shapes(layout_shapes(arch, n_layers), arch_config(arch, n_layers))


@st.composite
def layouts(draw: st.DrawFn, max_layers: int = 6) -> tuple[str, ModelLayout]:
    arch = draw(st.sampled_from(ARCHS))
    n = draw(st.integers(1, max_layers))
    return arch, make_layout(arch, n)


# ---------------------------------------------------------------------- test operators
def _unused(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
    """Never called: these operators only exist for planning."""
    raise AssertionError("test operators are not executed")


TEST_OPERATORS = {
    "ss_delta": OperatorSpec("ss_delta", _unused, (
        ParamSpec("weight", float, scope="model", default=1.0),
        ParamSpec("density", float, scope="model", default=1.0, low=0.0, low_open=True, high=1.0),
        ParamSpec("lambda", float, scope="global", default=1.0),
    ), base="required"),
    "ss_pair": OperatorSpec("ss_pair", _unused, (
        ParamSpec("t", float, scope="global", default=REQUIRED, low=0.0, high=1.0),
    ), base="forbidden", min_models=2, max_models=2),
    "ss_scale": OperatorSpec("ss_scale", _unused, (
        ParamSpec("scale", float, scope="input", default=REQUIRED),
        ParamSpec("steps", int, scope="global", default=3),
        ParamSpec("mode", str, scope="global", default="a", choices=("a", "b")),
    ), base="optional"),
}
for _name, _spec in TEST_OPERATORS.items():
    OPERATORS.register(_name, _spec, replace=True)


@dataclass(frozen=True)
class Models:
    sources: tuple[str, ...]
    base: str | None


def inputs_of(op: str, models: Models) -> tuple[tuple[str, ...], str | None]:
    """(inputs, separate base) by the planner's documented rules, written out independently."""
    policy = "ignored" if op == "linear" else TEST_OPERATORS[op].base
    if models.base is not None and policy in ("required", "optional"):
        return tuple(s for s in models.sources if s != models.base), models.base
    extra = (models.base,) if models.base is not None and models.base not in models.sources else ()
    return models.sources + extra, None


def refs_of(op: str, scope: str, per_model: bool, models: Models) -> list[str | None]:
    """Models carrying their own gene of a parameter (``[None]``: one shared gene)."""
    if not per_model:
        return [None]
    inputs, base = inputs_of(op, models)
    if scope == "input" and base is not None:
        return [*inputs, base]
    return list(inputs)


def scope_of(op: str, param: str) -> str:
    if op == "linear":
        return "input" if param == "weight" else "global"
    return TEST_OPERATORS[op].param(param).scope


# ---------------------------------------------------------------------- planner side
Resolved = dict[str, dict[str, dict[str | None, Any]]]
"""tensor name → parameter → model (None for a shared value) → value; plus ``"method"`` per tensor."""


def planner_values(plan: Any, layout: ModelLayout, arch: str, models: Models) -> tuple[Resolved, dict[str, str]]:
    """What the real planner resolves for each tensor: values per parameter and model, and the method."""
    shapes = {t.name: t.shape for t in layout.tensors}
    refs = [*models.sources, *([models.base] if models.base and models.base not in models.sources else [])]
    infos = {r: SourceInfo(r, shapes, arch_config(arch, layout.num_layers)) for r in refs}
    compiled = compile_plan(plan, infos)
    out: Resolved = {}
    methods: dict[str, str] = {}
    for task in compiled.tasks:
        values: dict[str, dict[str | None, Any]] = {}
        for name, value in task.params.shared.items():
            values[name] = {None: value}
        for name, per in task.params.per_model.items():
            values[name] = {compiled.sources[i]: v for (i, _), v in zip(task.inputs, per)}
        for name, value in task.params.base.items():
            assert task.base is not None
            values[name][compiled.sources[task.base[0]]] = value
        out[task.out_name] = values
        methods[task.out_name] = task.method
    return out, methods


def check_values(resolved: Resolved, expected: Mapping[str, Mapping[str, Mapping[str | None, float]]]) -> None:
    """Every expected (tensor, parameter, model) value equals the planner's; a shared expectation (model
    None) must hold for every model of a per-model parameter."""
    assert set(resolved) == set(expected)
    for tensor, params in expected.items():
        for param, per in params.items():
            got = resolved[tensor][param]
            for ref, value in per.items():
                if ref is None:
                    assert all(v == value for v in got.values()), (tensor, param, got, value)
                else:
                    assert got[ref] == value, (tensor, param, ref, got[ref], value)


def group_index(layout: ModelLayout, n_groups: int, layer: int) -> int:
    """Contiguous near-equal groups, the first ``n % g`` one layer larger (documented by layout.groups)."""
    size, extra = divmod(layout.num_layers, n_groups)
    bounds, start = [], 0
    for g in range(n_groups):
        start += size + (1 if g < extra else 0)
        bounds.append(start)
    return next(g for g, end in enumerate(bounds) if layer < end)


def slot(info: TensorInfo) -> str:
    return {"attention": "attn", "mlp": "mlp", "expert": "mlp", "router": "mlp"}.get(info.role, "rest")


def tensors(layout: ModelLayout, position: str) -> Sequence[TensorInfo]:
    return [t for t in layout.tensors if t.position == position]


# ---------------------------------------------------------------------- tests of the layouts themselves
def test_layouts_have_the_roles_the_spaces_rely_on() -> None:
    for arch in ARCHS:
        layout = make_layout(arch, 3)
        assert layout.num_layers == 3
        for layer in range(3):
            slots = {slot(t) for t in layout.layer_tensors(layer)}
            assert {"attn", "mlp", "rest"} <= slots, (arch, slots)
    assert [t.name for t in tensors(make_layout("collide", 2), "post")] == ["norm.weight", "head.weight"]
    assert tensors(make_layout("collide", 2), "pre") == []
    assert [t.name for t in tensors(make_layout("gpt2", 1), "pre")] == ["transformer.wte.weight", "transformer.wpe.weight"]


def test_group_index_matches_layout_groups() -> None:
    layout = make_layout("llama", 5)
    for n_groups in range(1, 6):
        groups = layout.groups(n_groups)
        for g, layers in enumerate(groups):
            assert all(group_index(layout, n_groups, layer) == g for layer in layers)
