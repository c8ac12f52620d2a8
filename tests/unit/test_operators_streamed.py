"""The span-streamed kernels (trim rules, TIES merge pass, linear) against the whole-tensor implementations.

Spans are made tiny (a few entries) so that ties, tie-skips and exact cancellations cross span edges, and
the sampled window of ``trim_rules`` is made small enough to miss, so its radix fallback runs too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from evomerge.merge.operator import MergeInputs, get_operator
from evomerge.merge.operators import chunks, ties_kernels, trim_rules
from evomerge.merge.operators.selection import MagnitudeStream, rank_window_mask
from evomerge.merge.operators.sparsify import trim_below, trim_to_top
from evomerge.merge.operators.task_vectors import merge_task_vectors
from evomerge.merge.operators.ties_stream import ties_stream
from evomerge.merge.operators.trim_rules import KEEP_ALL, TrimRule, tensor_trim_rules
from tests.unit.test_operators_contract import resolve_params, run_operator

# few distinct magnitudes: many ties at every threshold
tied_values = st.sampled_from([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, 0.25])
any_values = tied_values | st.floats(-4, 4, allow_nan=False, width=32)


def kept_by(rule: TrimRule, tau: torch.Tensor) -> torch.Tensor:
    """Reference reading of a rule: magnitude at least the value, except the dropped positions."""
    magnitudes = tau.abs().reshape(-1)
    if rule.value == 0:
        return torch.ones_like(magnitudes, dtype=torch.bool)
    kept = magnitudes >= rule.value
    if rule.drops is not None:
        assert bool((magnitudes[rule.drops] == rule.value).all())
        kept[rule.drops] = False
    return kept


@pytest.fixture(params=["whole", "window", "radix"])
def selection_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Route ``tensor_trim_rules`` through each of its three exact selections."""
    if request.param != "whole":
        monkeypatch.setattr(trim_rules, "SMALL", 0)
        monkeypatch.setattr(ties_kernels, "ALIGN", 1)  # several slices, whatever the size
        monkeypatch.setattr(ties_kernels, "THREADS", 3)
        monkeypatch.setattr(trim_rules, "SAMPLE", 64)
        trim_rules._sample_positions.cache_clear()
    if request.param == "radix":  # as if every window missed the k-th value
        monkeypatch.setattr(trim_rules._Window, "result", lambda self, n: None)
    return str(request.param)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(any_values, min_size=1, max_size=200), base_value=st.floats(-1, 1, width=32),
       density=st.floats(0.01, 1.0), chunk=st.integers(1, 40))
def test_trim_rules_keep_exactly_the_entries_of_trim_to_top(
    selection_path: str, values: list[float], base_value: float, density: float, chunk: int
) -> None:
    base = torch.full((len(values),), base_value)
    model = base + torch.tensor(values)
    (rule,) = tensor_trim_rules([model], base, [density], chunk)
    tau = model - base
    n = tau.numel()
    expected = rank_window_mask(tau.abs(), n - max(1, int(density * n)), n) if density < 1 else None
    kept = kept_by(rule, tau)
    if expected is None or rule.value == 0:  # everything kept, or only zeros dropped (which are zeros)
        torch.testing.assert_close(torch.where(kept, tau, 0.0), trim_to_top(tau.clone(), density))
    else:
        assert torch.equal(kept, expected)


def test_the_sampled_window_usually_holds_the_kth_value() -> None:
    gen = torch.Generator().manual_seed(3)
    base, model = torch.randn(300_000, generator=gen), torch.randn(300_000, generator=gen)
    flat_base, flats = base, [model]
    windows, _ = trim_rules._gather(flats, flat_base, {0: 30_000})
    stat = windows[0].result(base.numel())
    assert stat is not None and windows[0].gathered < base.numel() // 10
    expected = torch.kthvalue((model - base).abs(), base.numel() - 30_000 + 1).values
    assert stat.value == float(expected)


def whole_tensor_ties(tensors: list[torch.Tensor], base: torch.Tensor, weights: list[float], rules: list[TrimRule],
                      shared: dict[str, Any]) -> torch.Tensor:
    """The whole-tensor path (``_sum_agreeing``) with the same trimmed entries."""
    spec = get_operator("ties")
    params = resolve_params(spec, len(tensors), shared={**shared, "trim_scope": "tensor"},
                            per_model=[{"weight": w} for w in weights])

    def sparsify(delta: torch.Tensor, i: int) -> torch.Tensor:
        return delta.mul_(kept_by(rules[i], delta).view(delta.shape))

    inputs = MergeInputs(list(tensors), base, "w")
    return merge_task_vectors(inputs, params, method="ties", sparsify=sparsify, sign_consensus=True,
                              zero_sign=shared["zero_sign"])


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(1, 60), k=st.integers(1, 4), chunk=st.integers(1, 16),
       zero_sign=st.sampled_from(["positive", "majority"]), normalize=st.booleans(),
       scale=st.sampled_from([1.0, 0.5, -2.0]))
def test_streamed_merge_pass_equals_the_whole_tensor_path(
    data: st.DataObject, n: int, k: int, chunk: int, zero_sign: str, normalize: bool, scale: float
) -> None:
    base = torch.tensor(data.draw(st.lists(tied_values, min_size=n, max_size=n)))
    tensors = [base + torch.tensor(data.draw(st.lists(tied_values, min_size=n, max_size=n))) for _ in range(k)]
    # a negative weight only without normalize: agreeing weights that cancel make the whole-tensor path's
    # divisor a rounding residue instead of 0 (the streamed one sums them exactly)
    choices = [1.0, 0.5, 2.0, 0.3] if normalize else [1.0, 0.5, 2.0, 0.3, -1.0]
    weights = data.draw(st.lists(st.sampled_from(choices), min_size=k, max_size=k))
    densities = data.draw(st.lists(st.sampled_from([0.2, 0.5, 0.7, 1.0]), min_size=k, max_size=k))
    rules = tensor_trim_rules(tensors, base, densities, chunk)
    out = torch.empty_like(base)
    ties_stream(tensors, base, weights, rules, zero_sign=zero_sign, normalize=normalize, scale=scale, out=out,
                chunk=chunk)
    expected = whole_tensor_ties(tensors, base, weights, rules,
                                 {"zero_sign": zero_sign, "normalize": normalize, "lambda": scale})
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), n=st.integers(1, 60), k=st.integers(1, 4), threads=st.integers(1, 4),
       zero_sign=st.sampled_from(["positive", "majority"]), normalize=st.booleans(),
       scale=st.sampled_from([1.0, 0.5, -2.0]))
def test_compiled_merge_pass_equals_the_streamed_one_exactly(
    data: st.DataObject, n: int, k: int, threads: int, zero_sign: str, normalize: bool, scale: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ties_kernels, "ALIGN", 1)
    monkeypatch.setattr(ties_kernels, "THREADS", threads)
    base = torch.tensor(data.draw(st.lists(tied_values | any_values, min_size=n, max_size=n)))
    tensors = [base + torch.tensor(data.draw(st.lists(tied_values, min_size=n, max_size=n))) for _ in range(k)]
    weights = data.draw(st.lists(st.sampled_from([1.0, 0.5, 2.0, 0.3, -1.0, 0.0]), min_size=k, max_size=k))
    densities = data.draw(st.lists(st.sampled_from([0.2, 0.5, 0.7, 1.0]), min_size=k, max_size=k))
    rules = tensor_trim_rules(tensors, base, densities, 4)
    streamed = torch.empty_like(base)
    ties_stream(tensors, base, weights, rules, zero_sign=zero_sign, normalize=normalize, scale=scale,
                out=streamed, chunk=7)
    compiled = torch.full_like(base, float("nan"))
    compiled_ties(tensors, base, weights, rules, zero_sign=zero_sign, normalize=normalize, scale=scale, out=compiled)
    assert torch.equal(compiled, streamed), (compiled - streamed).abs().max()


def compiled_ties(tensors: list[torch.Tensor], base: torch.Tensor, weights: list[float], rules: list[TrimRule],
                  *, zero_sign: str, normalize: bool, scale: float, out: torch.Tensor, chunk: int = 0) -> None:
    """``ties_kernels.merge`` called as ``ties_stream`` is (``chunk`` unused: the slices follow ``THREADS``)."""
    ties_kernels.merge(ties_kernels.as_arrays(tensors), base.numpy(), weights, [r.value for r in rules],
                       [r.drops.numpy() if r.drops is not None else np.empty(0, np.int64) for r in rules],
                       zero_sign=zero_sign, normalize=normalize, scale=scale, out=out.numpy())


@pytest.mark.parametrize("merge", [ties_stream, compiled_ties], ids=["streamed", "compiled"])
def test_majority_zero_sign_revisits_cancelled_spans_when_the_tensor_leans_negative(merge: Any) -> None:
    base = torch.zeros(9)
    # entry 0 cancels exactly (+1 and −1); every other entry elects − : the tensor's majority is −
    a = torch.tensor([1.0, -1, -1, -1, -1, -1, -1, -1, -1])
    b = torch.tensor([-1.0, -1, -1, -1, -1, -1, -1, -1, -1])
    out = torch.empty(9)
    merge([a, b], base, [1.0, 1.0], [KEEP_ALL, KEEP_ALL], zero_sign="majority", normalize=True, scale=1.0,
          out=out, chunk=2)
    assert out[0] == -1.0  # γ = − at the cancellation: only b agrees
    torch.testing.assert_close(out[1:], torch.full((8,), -1.0))


def test_agreeing_weights_that_cancel_leave_the_base() -> None:
    base = torch.zeros(2)
    a, b = torch.tensor([1.0, 1.0]), torch.tensor([2.0, -1.0])
    out = torch.empty(2)
    ties_stream([a, b], base, [1.0, -1.0], [KEEP_ALL, KEEP_ALL], zero_sign="positive", normalize=True, scale=1.0,
                out=out, chunk=1)
    # entry 0: w·τ = [1, −2], E = −1: only b agrees → −2 / −1 = 2; entry 1: [1, 1] both agree, Σw = 0 → Σ/1
    torch.testing.assert_close(out, torch.tensor([2.0, 2.0]))


def test_streamed_operator_agrees_with_float64_and_global_trim_path() -> None:
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(300, 70, generator=gen)  # above SMALL: the sampled window runs
    models = [base + torch.randn(300, 70, generator=gen) * s for s in (1.0, 0.5, 2.0)]
    per_model = [{"weight": w, "density": d} for w, d in zip((0.6, 0.4, 1.2), (0.3, 0.5, 0.8))]
    for shared in ({"trim_scope": "tensor"}, {"trim_scope": "tensor", "zero_sign": "positive", "lambda": 0.7}, {}):
        streamed = run_operator("ties", models, base, per_model=per_model, shared=shared)
        wide = run_operator("ties", [m.double() for m in models], base.double(), per_model=per_model, shared=shared)
        torch.testing.assert_close(streamed, wide.float(), atol=1e-5, rtol=1e-5)


def test_global_trim_rule_keeps_what_trim_below_keeps() -> None:
    tau = torch.tensor([0.5, -2.0, 1.0, -1.0, 1.0, 0.25])
    rule = TrimRule(1.0)
    assert torch.equal(kept_by(rule, tau), trim_below(tau.clone(), 1.0) != 0)
    assert rule.shrink < 1.0 and torch.equal(torch.hardshrink(tau, rule.shrink) != 0, kept_by(rule, tau))


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(0, 100, width=32) | st.sampled_from([0.0, 1.0, 2.5]), min_size=1, max_size=90),
       data=st.data(), span=st.integers(1, 20))
def test_magnitude_stream_equals_kthvalue_over_spans(values: list[float], data: st.DataObject, span: int) -> None:
    tensor = torch.tensor(values)
    k = data.draw(st.integers(1, tensor.numel()))
    stream = MagnitudeStream()
    for start, stop in chunks.spans(tensor.numel(), span):
        stream.add_high(tensor[start:stop])
    stream.target(k)
    for start, stop in chunks.spans(tensor.numel(), span):
        stream.add_low(tensor[start:stop])
    stat = stream.result()
    assert stat.value == float(torch.kthvalue(tensor, k).values)
    assert stat.n_less == int((tensor < stat.value).sum()) and stat.n_equal == int((tensor == stat.value).sum())


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_operators_fill_the_offered_buffer_and_span_edges_do_not_matter(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(13, 11, generator=gen)
    models = [base + torch.randn(13, 11, generator=gen) for _ in range(3)]
    spec = get_operator(method)
    params = resolve_params(spec, 3, shared={"trim_scope": "tensor"} if method == "ties" else {},
                            per_model=[{"weight": w} for w in (0.5, 0.3, 0.2)])
    fresh = spec.fn(MergeInputs(models, base, "w"), params)
    monkeypatch.setattr(chunks, "CHUNK", 5)
    buffer = torch.full((13, 11), float("nan"))
    offered = spec.fn(MergeInputs(models, base, "w", out=buffer), params)
    assert offered.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(offered, fresh, atol=1e-6, rtol=1e-6)
    wrong_shape = torch.empty(3)
    assert spec.fn(MergeInputs(models, base, "w", out=wrong_shape), params).shape == (13, 11)


def test_executor_serves_every_tensor_from_one_reused_buffer(llama_family: dict[str, Path]) -> None:
    from evomerge.merge.executor import MergeExecutor
    from evomerge.merge.planner import compile_plan
    from evomerge.merge.to_disk import open_sources, source_infos
    from evomerge.plan import MergePlan

    plan = MergePlan.from_dict({"merge_method": "ties", "base_model": str(llama_family["base"]), "models": [
        {"model": str(llama_family["ft1"]), "parameters": {"weight": 0.6, "density": 0.5}},
        {"model": str(llama_family["ft2"]), "parameters": {"weight": 0.4, "density": 0.3}}]})
    checkpoints = open_sources(plan)
    compiled = compile_plan(plan, source_infos(checkpoints))
    ckpts = [checkpoints[r] for r in compiled.sources]
    executor = MergeExecutor(compiled, lambda i, name: ckpts[i].get(name))
    storages = set()
    for task, tensor in executor:
        fresh = executor.run(task)  # no reuse: a tensor of its own
        assert fresh.data_ptr() != tensor.data_ptr()
        assert torch.equal(tensor, fresh), task.out_name
        if task.floating:
            storages.add(tensor.untyped_storage().data_ptr())
    assert len(storages) == 1
