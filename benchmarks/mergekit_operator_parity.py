"""Parity of evomerge's data-free merge operators with mergekit 0.1.5, tensor by tensor.

Run from the repository root with the interpreter of the venv where mergekit is installed (it has torch and
pydantic, so it imports evomerge's operators too):

    PYTHONPATH=/work/main /work/mkvenv/bin/python benchmarks/mergekit_operator_parity.py [--timing]

Identical random tensors (several shapes, K = 2..4 models) go through both implementations with the same
recipe settings: scalars, per-model values, gradients over depth and name filters. evomerge resolves them
with its own resolver in the mergekit dialect (so its ``mergekit_default`` values are exercised), mergekit
with ``mergekit.config.evaluate_setting`` and its own defaults. It prints the max abs difference per method
and exits 1 when any exceeds 1e-5 (fp32).

The tensors are small continuous random values: where magnitudes tie exactly at a trim threshold (common
in bf16 checkpoints and in tensors of millions of entries), mergekit's unstable sort keeps an arbitrary
subset of the tied entries and evomerge the earliest ones; both keep the same number. Randomized methods (DARE, DELLA) are compared at density 1, where they are deterministic.
``--timing`` also times each method on a 4096 x 4096 tensor with three models (best of three runs).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from mergekit.config import ConditionalParameter as MkCondition
from mergekit.config import evaluate_setting as mk_evaluate
from mergekit.merge_methods import get as mk_get
from mergekit.merge_methods.api import merge_tensors
from mergekit.merge_methods.base import ParameterScope

from evomerge.merge.operator import MergeInputs, get_operator
from evomerge.merge.params import resolve

TOLERANCE = 1e-5
REQUIRED = {"linear", "slerp", "task_arithmetic", "ties", "breadcrumbs", "model_stock"}
Settings = dict[str, Any]


@dataclass(frozen=True)
class Case:
    method: str
    n_models: int
    shape: tuple[int, ...]
    shared: Settings = field(default_factory=dict)
    per_model: tuple[Settings, ...] = ()
    t: float = 0.0
    """Position of the tensor's layer in its slice, for gradients."""
    name: str = "model.layers.3.mlp.down_proj.weight"
    use_base: bool = True
    base_as_input: bool = False
    """For methods without a base: merge the base tensor as one more (last) input, as mergekit does."""
    colinear: bool = False

    def model_settings(self, i: int) -> Settings:
        return self.per_model[i] if i < len(self.per_model) else {}


def make_tensors(case: Case, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(case.shape, generator=gen)
    if case.colinear:
        return base, [base * (1.5 + i) for i in range(case.n_models)]
    return base, [base + 0.05 * torch.randn(case.shape, generator=gen) for _ in range(case.n_models)]


def run_evomerge(case: Case, base: torch.Tensor, models: list[torch.Tensor]) -> torch.Tensor:
    spec = get_operator(case.method)
    tensors = [*models, base] if case.base_as_input else list(models)
    model_settings = [case.model_settings(i) for i in range(len(tensors))]
    params = resolve(
        spec.params,
        dialect="mergekit",
        tensor_name=case.name,
        t=case.t,
        shared_sources=[case.shared],
        model_sources=[[own, case.shared] for own in model_settings],
    )
    inputs = MergeInputs(
        tensors=tensors,
        base=base if case.use_base and spec.base in ("required", "optional") else None,
        name=case.name,
        generator=torch.Generator().manual_seed(0),
    )
    return spec.fn(inputs, params)


def _mk_setting(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [MkCondition(**cond) for cond in value]
    return value


def run_mergekit(case: Case, base: torch.Tensor, models: list[torch.Tensor]) -> torch.Tensor:
    method = mk_get(case.method)
    tensors = [*models, base] if case.base_as_input else list(models)
    base_index: int | None = None
    if case.use_base and not case.base_as_input and method.spec.contract.base.value != "ignored":
        tensors, base_index = [base, *tensors], 0
    n_inputs = len(models) + int(case.base_as_input)
    parameters: dict[str, Any] = {}
    for p in method.spec.parameters:
        validate: Callable[[Any], Any] = p.validate
        if p.scope == ParameterScope.SHARED:
            if p.name in case.shared:
                parameters[p.name] = mk_evaluate(
                    case.name, _mk_setting(case.shared[p.name]), case.t, validate=validate
                )
            continue
        values = []
        for i in range(n_inputs):
            own = case.model_settings(i)
            setting = own.get(p.name, case.shared.get(p.name))
            values.append(
                None
                if setting is None
                else mk_evaluate(case.name, _mk_setting(setting), case.t, validate=validate)
            )
        if all(v is None for v in values):
            continue
        parameters[p.name] = [p.default if v is None else v for v in values]
    return merge_tensors(tensors, method, parameters=parameters, base_index=base_index)


def cases() -> list[Case]:
    grad_density: Settings = {"density": [0.2, 0.9]}
    filtered_density: Settings = {"density": [{"filter": "mlp", "value": 0.35}, {"value": 0.9}]}
    weights3 = ({"weight": 0.5}, {"weight": 0.3}, {"weight": 0.2})
    out = [
        Case("linear", 2, (64, 48), per_model=({"weight": 0.3}, {"weight": 0.7})),
        Case("linear", 3, (257,), per_model=weights3, shared={"normalize": False}),
        Case("linear", 4, (16, 8, 12), shared={"weight": [0.1, 0.9]}, t=0.4),
        Case("linear", 2, (33, 7), shared={"weight": 1.0}, per_model=({"weight": 2.0},), base_as_input=True),
        Case("slerp", 1, (64, 48), shared={"t": 0.3}),
        Case("slerp", 1, (1000,), shared={"t": [0.0, 0.5, 1.0]}, t=0.25),
        Case("slerp", 1, (16, 8, 12), shared={"t": 0.0}),
        Case("slerp", 1, (16, 8, 12), shared={"t": 1.0}),
        Case("slerp", 1, (40, 40), shared={"t": 0.6}, colinear=True),
        Case("task_arithmetic", 2, (64, 48), shared={"weight": 1.0}),
        Case("task_arithmetic", 3, (257,), per_model=weights3, shared={"lambda": 0.7, "normalize": True}),
        Case("task_arithmetic", 4, (16, 8, 12), shared={"weight": [0.2, 1.0], "lambda": 1.4}, t=0.7),
        Case("ties", 2, (64, 48), shared={"weight": 1.0, "density": 0.3}),
        Case(
            "ties",
            3,
            (257,),
            per_model=(
                {"weight": 0.5, "density": 0.2},
                {"weight": 0.3, "density": 0.6},
                {"weight": 0.9, "density": 0.45},
            ),
        ),
        Case(
            "ties",
            4,
            (16, 8, 12),
            shared={"weight": 1.0, **grad_density, "normalize": False, "lambda": 1.3},
            t=0.6,
        ),
        Case("ties", 3, (128, 64), shared={"weight": 1.0, **filtered_density, "rescale": True}),
        Case(
            "ties",
            3,
            (128, 64),
            shared={"weight": 1.0, **filtered_density},
            name="model.layers.3.self_attn.q_proj.weight",
        ),
        Case(
            "ties",
            3,
            (50, 20),
            per_model=(
                {"weight": -0.5, "density": 0.5},
                {"weight": 1.0, "density": 0.5},
                {"weight": 0.7, "density": 1.0},
            ),
        ),
        Case("ties", 2, (999,), shared={"weight": 1.0, "density": 0.001}),
        Case("breadcrumbs", 2, (64, 48), shared={"weight": 1.0, "density": 0.8, "gamma": 0.05}),
        Case(
            "breadcrumbs",
            3,
            (257,),
            per_model=(
                {"weight": 0.5, "density": 0.9, "gamma": 0.2},
                {"weight": 0.3, "density": 0.5},
                {"weight": 0.2, "density": 0.7, "gamma": 0.0},
            ),
        ),
        Case(
            "breadcrumbs",
            4,
            (16, 8, 12),
            shared={"weight": 1.0, **grad_density, "gamma": 0.03, "rescale": True, "lambda": 0.8},
            t=0.3,
        ),
        Case("breadcrumbs", 3, (128, 64), shared={"weight": 1.0, **filtered_density, "normalize": True}),
        Case("breadcrumbs_ties", 3, (128, 64), shared={"weight": 1.0, "density": 0.6, "gamma": 0.02}),
        Case("model_stock", 2, (64, 48)),
        Case("model_stock", 3, (257,)),
        Case("model_stock", 4, (16, 8, 12)),
        Case("model_stock", 3, (64, 48), shared={"filter_wise": True}),
        Case("model_stock", 4, (16, 8, 12), shared={"filter_wise": True}),
        Case("model_stock", 2, (300,), shared={"filter_wise": True}),
        Case("multislerp", 3, (64, 48), per_model=weights3),
        Case("multislerp", 2, (257,), shared={"weight": 1.0}, use_base=False),
        Case("karcher", 3, (64, 48), use_base=False),
        Case("karcher", 2, (257,), base_as_input=True),
        Case("passthrough", 1, (64, 48), use_base=False),
        Case("passthrough", 1, (64, 48), per_model=({"scale": 0.5},), use_base=False),
        Case("dare_linear", 3, (64, 48), per_model=weights3),
        Case("dare_ties", 3, (64, 48), per_model=weights3),
        Case("della", 3, (64, 48), per_model=weights3),
        Case("della_linear", 3, (64, 48), per_model=weights3, shared={"lambda": 0.9}),
    ]
    return out


def parity() -> dict[str, float]:
    worst: dict[str, float] = {}
    for n, case in enumerate(cases()):
        base, models = make_tensors(case, seed=1000 + n)
        ours = run_evomerge(case, base, models)
        theirs = run_mergekit(case, base, models)
        if ours.shape != theirs.shape:
            raise AssertionError(f"{case.method}: shape {list(ours.shape)} vs mergekit {list(theirs.shape)}")
        diff = float((ours - theirs).abs().max()) if ours.numel() else 0.0
        worst[case.method] = max(worst.get(case.method, 0.0), diff)
    return worst


TIMING_SETTINGS: dict[str, Settings] = {
    "ties": {"weight": 1.0, "density": 0.3},
    "breadcrumbs": {"weight": 1.0, "density": 0.3, "gamma": 0.01},
    "slerp": {"t": 0.4},
    "model_stock": {},
}


REPEATS = 3


def best_of(repeats: int, fn: Callable[..., Any], *args: Any) -> float:
    """The fastest of ``repeats`` runs (the least disturbed by other load on the machine)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def timing(methods: list[str]) -> None:
    shape = (4096, 4096)
    print(
        f"\ntiming: one {shape[0]}x{shape[1]} tensor, 3 models, {torch.get_num_threads()} threads, best of {REPEATS}"
    )
    print(f"{'method':<18}{'mergekit s':>12}{'evomerge s':>12}{'ratio':>8}")
    for method in methods:
        settings = TIMING_SETTINGS.get(method, {"weight": 1.0})
        case = Case(method, 1 if method == "slerp" else 3, shape, shared=settings)
        base, models = make_tensors(case, seed=7)
        run_evomerge(case, base, models), run_mergekit(case, base, models)  # warm up
        seconds = [best_of(REPEATS, fn, case, base, models) for fn in (run_mergekit, run_evomerge)]
        print(f"{method:<18}{seconds[0]:>12.3f}{seconds[1]:>12.3f}{seconds[0] / seconds[1]:>7.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing", action="store_true", help="also time each method on a 4096 x 4096 tensor")
    args = parser.parse_args()
    torch.manual_seed(0)
    worst = parity()
    print(f"{'method':<18}{'max |evomerge - mergekit|':>28}")
    failed = []
    for method, diff in sorted(worst.items()):
        status = "ok" if diff <= TOLERANCE else "FAIL"
        if diff > TOLERANCE:
            failed.append(method)
        print(f"{method:<18}{diff:>28.3e}  {status}{'' if method in REQUIRED else '  (extra)'}")
    missing = REQUIRED - set(worst)
    if args.timing:
        timing(["linear", "slerp", "task_arithmetic", "ties", "breadcrumbs", "model_stock"])
    if failed or missing:
        print(f"\nparity FAILED above {TOLERANCE:g}: {', '.join(failed + sorted(missing))}")
        return 1
    print(f"\nall {len(worst)} methods within {TOLERANCE:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
