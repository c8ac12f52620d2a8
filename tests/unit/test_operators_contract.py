"""Every built-in operator against the operator contract, plus the helpers the other operator tests use.

Parameters go through ``evomerge.merge.params.resolve`` exactly as the planner does, so the tests see each
dialect's defaults and range checks, not hand-made ``ResolvedParams``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from evomerge.errors import ConfigError
from evomerge.merge.operator import OPERATORS, MergeInputs, OperatorSpec, get_operator
from evomerge.merge.params import REQUIRED, ResolvedParams, resolve

NAME = "model.layers.0.mlp.up_proj.weight"
ALL = (
    "breadcrumbs",
    "breadcrumbs_ties",
    "consensus",
    "dare_linear",
    "dare_ties",
    "della",
    "della_linear",
    "doge",
    "karcher",
    "linear",
    "model_stock",
    "multislerp",
    "mwa",
    "opcm",
    "passthrough",
    "slerp",
    "task_arithmetic",
    "ties",
)


def resolve_params(
    spec: OperatorSpec,
    n_models: int,
    shared: dict[str, Any] | None = None,
    per_model: Sequence[dict[str, Any]] | None = None,
    dialect: str = "evomerge",
    tensor_name: str = NAME,
    t: float = 0.0,
) -> ResolvedParams:
    shared = dict(shared or {})
    if dialect == "mergekit":  # mergekit makes these mandatory; give the value evomerge would default to
        for p in spec.params:
            if p.mergekit_default is REQUIRED and p.name not in shared:
                shared[p.name] = p.default
    own = list(per_model or [{}] * n_models)
    return resolve(
        spec.params,
        dialect=dialect,
        tensor_name=tensor_name,
        t=t,
        shared_sources=[shared],
        model_sources=[[m, shared] for m in own],
    )


def merge_model(
    method: str,
    models: Sequence[dict[str, torch.Tensor]],
    base: dict[str, torch.Tensor] | None = None,
    *,
    shared: dict[str, Any] | None = None,
    per_model: Sequence[dict[str, Any]] | None = None,
    dialect: str = "evomerge",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Merge whole models (name → tensor) the way the executor does: global pass first, then per tensor."""
    spec = get_operator(method)
    names = list(models[0])
    params = {n: resolve_params(spec, len(models), shared, per_model, dialect, tensor_name=n) for n in names}

    def inputs(n: str) -> MergeInputs:
        generator = torch.Generator().manual_seed(seed + names.index(n)) if spec.randomized else None
        return MergeInputs([m[n] for m in models], base[n] if base else None, n, generator)

    stats: dict[str, Any] = {}
    first = params[names[0]]
    if spec.global_pass is not None and (spec.needs_global_pass is None or spec.needs_global_pass(first)):
        gp = spec.global_pass()
        gp.start(len(models))
        for p in range(gp.n_passes):
            for n in names:
                gp.observe(inputs(n), params[n], p)
            gp.end_pass(p)
        stats = gp.finish()
    out = {}
    for n in names:
        merge_inputs = inputs(n)
        merge_inputs.stats = stats
        out[n] = spec.fn(merge_inputs, params[n])
    return out


def run_operator(
    method: str,
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None = None,
    *,
    shared: dict[str, Any] | None = None,
    per_model: Sequence[dict[str, Any]] | None = None,
    dialect: str = "evomerge",
    seed: int = 0,
) -> torch.Tensor:
    """Merge one tensor (a one-tensor model, so a global pass sees just this tensor)."""
    models = [{NAME: t} for t in tensors]
    bases = {NAME: base} if base is not None else None
    return merge_model(method, models, bases, shared=shared, per_model=per_model, dialect=dialect, seed=seed)[
        NAME
    ]


# Settings under which each operator is well defined on generic inputs.
EXTRA: dict[str, dict[str, Any]] = {"mwa": {"metric": 1.5}}


def inputs_for(
    method: str, n_models: int = 3, shape: tuple[int, ...] = (6, 5), seed: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    spec = get_operator(method)
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=gen)
    k = 1 if spec.max_models == 1 else n_models
    models = [base + 0.3 * torch.randn(shape, generator=gen) for _ in range(k)]
    return models, base if spec.base in ("required", "optional") else None


def test_every_operator_is_registered_with_formula_and_reference() -> None:
    import evomerge.merge.operators  # noqa: F401  (registration happens on import)

    assert set(ALL) <= set(OPERATORS.names())
    for name in ALL:
        spec = get_operator(name)
        assert spec.name == name
        assert "=" in spec.doc or "θ" in spec.doc, f"{name} docstring has no formula"
        assert spec.reference, f"{name} has no reference"


def test_unknown_operator_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="ties"):
        get_operator("tiez")


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("dialect", ["evomerge", "mergekit"])
def test_inputs_are_never_modified(method: str, dialect: str) -> None:
    models, base = inputs_for(method)
    copies = [m.clone() for m in models]
    base_copy = base.clone() if base is not None else None
    out = run_operator(method, models, base, shared=EXTRA.get(method), dialect=dialect)
    assert out.shape == models[0].shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    for m, c in zip(models, copies):
        assert torch.equal(m, c)
    if base is not None:
        assert base_copy is not None and torch.equal(base, base_copy)


@pytest.mark.parametrize("method", ALL)
def test_identical_inputs_give_that_tensor(method: str) -> None:
    models, base = inputs_for(method)
    same = base if base is not None else models[0]
    out = run_operator(method, [same.clone() for _ in models], base, shared=EXTRA.get(method))
    torch.testing.assert_close(out, same, atol=1e-6, rtol=1e-5)


SINGLE_MODEL_SETTINGS: dict[str, dict[str, Any]] = {
    "linear": {"weight": 1.0},
    "task_arithmetic": {"weight": 1.0},
    "ties": {"density": 1.0},
    "dare_linear": {"density": 1.0},
    "dare_ties": {"density": 1.0},
    "della": {"density": 1.0},
    "della_linear": {"density": 1.0},
    "breadcrumbs": {"density": 1.0},
    "breadcrumbs_ties": {"density": 1.0},
    "consensus": {"k": 1},
    "multislerp": {},
    "karcher": {},
    "mwa": {"metric": 0.7},
    "opcm": {},
    "passthrough": {},
    "slerp": {"t": 1.0},
}


@pytest.mark.parametrize("method", sorted(SINGLE_MODEL_SETTINGS))
def test_one_model_with_full_weight_gives_that_model(method: str) -> None:
    models, base = inputs_for(method, n_models=1)
    out = run_operator(method, models[:1], base, shared=SINGLE_MODEL_SETTINGS[method])
    torch.testing.assert_close(out, models[0], atol=1e-6, rtol=1e-5)


DENSITY_METHODS = (
    "ties",
    "dare_linear",
    "dare_ties",
    "della",
    "della_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
)


@pytest.mark.parametrize("method", DENSITY_METHODS)
@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_density_outside_unit_interval_is_a_config_error(method: str, density: float) -> None:
    spec = get_operator(method)
    with pytest.raises(ConfigError, match="'density'"):
        resolve_params(spec, 2, per_model=[{"density": 0.5}, {"density": density}])
    with pytest.raises(ConfigError, match="'density'"):
        resolve_params(spec, 2, shared={"density": [0.5, density]}, t=1.0)


@pytest.mark.parametrize(
    ("method", "setting", "field"),
    [
        ("breadcrumbs", {"gamma": 1.2}, "'gamma'"),
        ("della", {"epsilon": -0.1}, "'epsilon'"),
        ("consensus", {"k": -1}, "'k'"),
        ("consensus", {"k": 1.5}, "'k'"),
        ("mwa", {"metric": 0.0}, "'metric'"),
        ("mwa", {"metric": 1.0, "penalty": -1.0}, "'penalty'"),
        ("mwa", {"metric": 1.0, "metric_type": "accuracy"}, "'metric_type'"),
        ("ties", {"trim_scope": "layer"}, "'trim_scope'"),
        ("ties", {"zero_sign": "negative"}, "'zero_sign'"),
        ("dare_linear", {"rescale_mode": "l2"}, "'rescale_mode'"),
        ("model_stock", {"angle_average": "median"}, "'angle_average'"),
        ("karcher", {"max_iter": 0}, "'max_iter'"),
    ],
)
def test_bad_parameter_values_name_the_parameter(method: str, setting: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        resolve_params(get_operator(method), 2, shared=setting)


def test_mwa_metric_is_required() -> None:
    with pytest.raises(ConfigError, match="'metric'"):
        resolve_params(get_operator("mwa"), 2)


@pytest.mark.parametrize(
    ("method", "name", "paper", "mergekit"),
    [
        ("ties", "trim_scope", "global", "tensor"),
        ("ties", "density", 0.2, 1.0),
        ("ties", "zero_sign", "majority", "positive"),
        ("dare_linear", "rescale_mode", "keep_probability", "l1"),
        ("dare_ties", "normalize", True, False),
        ("della", "epsilon", 0.14, 0.15),
        ("model_stock", "angle_average", "angle", "cosine"),
        ("task_arithmetic", "normalize", False, False),
        ("breadcrumbs", "gamma", 0.01, 0.01),
    ],
)
def test_dialect_defaults(method: str, name: str, paper: Any, mergekit: Any) -> None:
    spec = get_operator(method)
    for dialect, expected in (("evomerge", paper), ("mergekit", mergekit)):
        params = resolve_params(spec, 1, dialect=dialect)
        value = params[name] if name in params.shared else params.model(name)[0]
        assert value == expected, (dialect, name)


@pytest.mark.parametrize("method", ["ties", "breadcrumbs", "dare_ties", "della", "task_arithmetic"])
def test_int8_mask_is_accepted_and_ignored(method: str) -> None:
    models, base = inputs_for(method)
    plain = run_operator(method, models, base)
    flagged = run_operator(method, models, base, shared={"int8_mask": True})
    torch.testing.assert_close(plain, flagged, rtol=0, atol=0)


@pytest.mark.parametrize("method", ALL)
def test_float64_inputs_stay_float64_and_agree_with_float32(method: str) -> None:
    models, base = inputs_for(method)
    out32 = run_operator(method, models, base, shared=EXTRA.get(method), seed=4)
    out64 = run_operator(
        method,
        [m.double() for m in models],
        base.double() if base is not None else None,
        shared=EXTRA.get(method),
        seed=4,
    )
    assert out64.dtype == torch.float64
    if not get_operator(method).randomized:  # random draws differ between dtypes
        torch.testing.assert_close(out64.float(), out32, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ALL)
def test_empty_tensors_merge_to_empty_tensors(method: str) -> None:
    models, base = inputs_for(method, shape=(0, 4))
    out = run_operator(method, models, base, shared=EXTRA.get(method))
    assert out.shape == (0, 4)
