"""Routing statistics against values computed independently: the model's own router logits
(``output_router_logits``) and an explicit per-expert SwiGLU loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from evomerge.errors import StatisticsError
from evomerge.moe.tiny import make_tiny_moe
from evomerge.statistics.data import CalibrationData, tensor_batches, token_data
from evomerge.statistics.moe import MoeStatistics, MoeStatisticsSettings, collect_moe_statistics

IDS = torch.randint(3, 101, (6, 10), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module", params=["mixtral", "qwen2_moe"])
def model(request: pytest.FixtureRequest) -> Any:
    return make_tiny_moe(None, arch=request.param, seed=2)


def block_inputs(model: Any, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    handles = [layer.mlp.register_forward_pre_hook(
        lambda m, args, i=i: seen.__setitem__(i, args[0].reshape(-1, args[0].shape[-1]).detach()))
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return seen


def test_frequencies_and_logit_gram_match_the_router(model: Any, tmp_path: Path) -> None:
    stats = collect_moe_statistics(model, token_data(IDS, "ids", batch_size=4), cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        router_logits = model(IDS, output_router_logits=True).router_logits
    for i, layer_logits in enumerate(router_logits):
        top = layer_logits.topk(2, dim=-1).indices.reshape(-1)
        expected = torch.bincount(top, minlength=8).double() / top.numel()
        assert torch.allclose(stats.layers[i].frequency, expected)
        gram = layer_logits.double().T @ layer_logits.double()
        assert torch.allclose(stats.layers[i].logit_gram, gram, rtol=1e-4, atol=1e-6)
        assert stats.layers[i].tokens == IDS.numel()
    assert abs(float(stats.layers[0].frequency.sum()) - 1) < 1e-12


def test_output_cosine_matches_an_explicit_expert_loop(model: Any, tmp_path: Path) -> None:
    stats = collect_moe_statistics(model, token_data(IDS, "ids"), cache_dir=tmp_path, progress=False)
    x = block_inputs(model, IDS)[1]
    experts = model.model.layers[1].mlp.experts
    outs = []
    for e in range(8):
        gate, up = experts.gate_up_proj[e].detach().chunk(2, dim=0)
        outs.append((nn.functional.silu(x @ gate.T) * (x @ up.T)) @ experts.down_proj[e].detach().T)
    expected = torch.tensor([[float(nn.functional.cosine_similarity(outs[a], outs[b], dim=-1).mean())
                              for b in range(8)] for a in range(8)], dtype=torch.float64)
    assert torch.allclose(stats.layers[1].output_cosine, expected, atol=1e-5)


def test_padding_positions_are_left_out(model: Any, tmp_path: Path) -> None:
    mask = torch.ones_like(IDS)
    mask[:, 7:] = 0  # right padding: the kept positions never attend to the padded ones

    def padded() -> Any:
        yield {"input_ids": IDS, "attention_mask": mask}

    with_mask = collect_moe_statistics(model, CalibrationData(padded, "padded", "causal_lm", len(IDS)),
                                       cache_dir=tmp_path, progress=False)
    cut = collect_moe_statistics(model, token_data(IDS[:, :7].contiguous(), "cut"), cache_dir=tmp_path, progress=False)
    for i in cut.layers:
        assert with_mask.layers[i].tokens == cut.layers[i].tokens == 6 * 7
        assert torch.allclose(with_mask.layers[i].frequency, cut.layers[i].frequency)
        assert torch.allclose(with_mask.layers[i].output_cosine, cut.layers[i].output_cosine, atol=1e-6)


def test_statistics_are_cached_by_model_data_and_settings(model: Any, tmp_path: Path) -> None:
    data = token_data(IDS, "ids")
    first = collect_moe_statistics(model, data, cache_dir=tmp_path, model_identity="m", progress=False)

    class Exploding(nn.Module):
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a cache hit must not run the model")

    again = collect_moe_statistics(Exploding(), data, cache_dir=tmp_path, model_identity="m", progress=False)
    assert torch.equal(first.layers[0].frequency, again.layers[0].frequency)
    fewer = collect_moe_statistics(model, data, MoeStatisticsSettings(max_examples=2), cache_dir=tmp_path,
                                   model_identity="m", progress=False)
    assert fewer.layers[0].tokens == 2 * IDS.shape[1]
    assert len(list(tmp_path.iterdir())) == 2


def test_bad_inputs_give_one_clear_error(model: Any, tmp_path: Path) -> None:
    classification = CalibrationData(tensor_batches(torch.zeros(4, 3), torch.zeros(4), 2), "cls")
    with pytest.raises(StatisticsError, match="need causal-LM calibration data"):
        collect_moe_statistics(model, classification, cache_dir=tmp_path, progress=False)
    with pytest.raises(StatisticsError, match="has no sparse MoE block"):
        collect_moe_statistics(nn.Sequential(nn.Linear(2, 2)), token_data(IDS, "ids"), cache_dir=tmp_path,
                               progress=False)
    with pytest.raises(StatisticsError, match="not a MoE statistics folder"):
        MoeStatistics.load(tmp_path)
