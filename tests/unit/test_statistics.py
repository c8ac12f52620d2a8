"""Statistics collection (evomerge/statistics): Fisher and Gram values against hand computations, caching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from evomerge.errors import StatisticsError
from evomerge.statistics import (
    CalibrationData,
    StatisticsFolder,
    StatisticsSettings,
    classification_data,
    collect_checkpoint_statistics,
    collect_statistics,
    tensor_batches,
    token_data,
)

D, C, N = 5, 3, 7


def logistic_problem(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(D, C)
    with torch.no_grad():
        model.weight.copy_(torch.randn(C, D, generator=gen))
        model.bias.copy_(torch.randn(C, generator=gen))
    return model, torch.randn(N, D, generator=gen), torch.randint(0, C, (N,), generator=gen)


def hand_fisher(model: nn.Linear, x: torch.Tensor, label_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression: ∂ log p_y / ∂W = (e_y − p) xᵀ, ∂ log p_y / ∂b = e_y − p.
    F = mean_n Σ_y q_ny (∂ log p_y)², with q the weight of each label (one-hot or p)."""
    with torch.no_grad():
        p = torch.softmax(x @ model.weight.T + model.bias, dim=-1)
    f_w = torch.zeros(C, D)
    f_b = torch.zeros(C)
    for n in range(len(x)):
        for y in range(C):
            residual = torch.nn.functional.one_hot(torch.tensor(y), C).float() - p[n]
            f_w += label_weights[n, y] * torch.outer(residual, x[n]).square()
            f_b += label_weights[n, y] * residual.square()
    return f_w / len(x), f_b / len(x)


def collect(model: nn.Module, data: CalibrationData, tmp_path: Path, **settings: object) -> StatisticsFolder:
    return collect_statistics(model, data, StatisticsSettings(**settings), cache_dir=tmp_path, progress=False)


@pytest.mark.parametrize("mode", ["true", "expected", "predicted", "sampled"])
def test_fisher_of_softmax_regression_matches_hand_computation(tmp_path: Path, mode: str) -> None:
    model, x, y = logistic_problem()
    data = CalibrationData(tensor_batches(x, y, 3), f"logistic/{mode}")
    folder = collect(model, data, tmp_path, kinds=("fisher",), fisher_labels=mode, seed=5)
    with torch.no_grad():
        p = torch.softmax(model(x), dim=-1)
    if mode == "true":
        q = torch.nn.functional.one_hot(y, C).float()
    elif mode == "predicted":
        q = torch.nn.functional.one_hot(p.argmax(-1), C).float()
    elif mode == "expected":
        q = p
    else:  # the collector draws one label per example, in order, from a generator seeded with `seed`
        gen = torch.Generator().manual_seed(5)
        q = torch.stack([torch.nn.functional.one_hot(torch.multinomial(p[n : n + 1], 1, generator=gen)[0, 0], C)
                         for n in range(N)]).float()
    f_w, f_b = hand_fisher(model, x, q)
    torch.testing.assert_close(folder.fisher("weight"), f_w, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(folder.fisher("bias"), f_b, rtol=1e-5, atol=1e-7)
    assert folder.meta["fisher_examples"] == N


def test_gram_of_every_linear_layer_is_xtx_of_its_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 4), nn.ReLU(), nn.Linear(4, C))
    _, x, y = logistic_problem(1)
    folder = collect(model, CalibrationData(tensor_batches(x, y, 2), "mlp"), tmp_path, kinds=("gram",))
    with torch.no_grad():
        hidden = torch.relu(model[0](x))
    torch.testing.assert_close(folder.gram("0.weight"), (x.T @ x).float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(folder.gram("2.weight"), hidden.T @ hidden, rtol=1e-5, atol=1e-6)
    assert folder.gram_count("0.weight") == folder.gram_count("2.weight") == N
    assert folder.names("fisher") == set()


def test_max_examples_cuts_the_data_mid_batch(tmp_path: Path) -> None:
    model, x, y = logistic_problem()
    folder = collect(model, CalibrationData(tensor_batches(x, y, 4), "cut"), tmp_path, max_examples=5)
    assert folder.meta["fisher_examples"] == 5 and folder.gram_count("weight") == 5
    torch.testing.assert_close(folder.gram("weight"), x[:5].T @ x[:5], rtol=1e-5, atol=1e-6)


class CountingData:
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.calls = 0
        self.inner = tensor_batches(x, y, 4)

    def __call__(self):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.inner()


def test_cache_hit_never_recomputes_and_every_input_of_the_key_misses(tmp_path: Path) -> None:
    model, x, y = logistic_problem()
    counting = CountingData(x, y)
    data = CalibrationData(counting, "digits-like")
    first = collect(model, data, tmp_path)
    calls = counting.calls
    assert calls == 2  # one pass for the Grams, one for the Fisher
    again = collect(model, data, tmp_path)
    assert counting.calls == calls and again.path == first.path
    collect(model, data, tmp_path, fisher_labels="true")  # another setting
    assert counting.calls == calls + 2
    collect(model, CalibrationData(counting, "other data"), tmp_path)  # another data identity
    assert counting.calls == calls + 4
    with torch.no_grad():
        model.bias.add_(1.0)  # another model
    changed = collect(model, data, tmp_path)
    assert counting.calls == calls + 6 and changed.path != first.path
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 4


def test_checkpoint_statistics_load_the_model_only_on_a_miss(tmp_path: Path) -> None:
    model, x, y = logistic_problem()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(model_dir / "model.safetensors"))
    loads: list[Path] = []

    def loader(path: Path) -> nn.Module:
        loads.append(path)
        return model

    data = CalibrationData(tensor_batches(x, y, 4), "ckpt")
    settings = StatisticsSettings()
    first = collect_checkpoint_statistics(model_dir, data, settings, cache_dir=tmp_path / "c", loader=loader, progress=False)
    again = collect_checkpoint_statistics(model_dir, data, settings, cache_dir=tmp_path / "c", loader=loader, progress=False)
    assert len(loads) == 1 and again.path == first.path
    save_file({k: v.contiguous() + 1 for k, v in model.state_dict().items()}, str(model_dir / "model.safetensors"))
    rewritten = collect_checkpoint_statistics(model_dir, data, settings, cache_dir=tmp_path / "c", loader=loader,
                                              progress=False)
    assert len(loads) == 2 and rewritten.path != first.path


def test_causal_lm_fisher_sums_token_log_likelihoods(tmp_path: Path) -> None:
    from evomerge.tiny_models import make_tiny_model

    model = make_tiny_model(None, seed=0, tokenizer=False, vocab_size=11, hidden=8, layers=1, heads=2)
    ids = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(0))
    folder = collect(model, token_data(ids, "lm-ids", batch_size=2), tmp_path, fisher_labels="true")
    name = "model.layers.0.mlp.down_proj.weight"
    param = dict(model.named_parameters())[name]
    expected = torch.zeros_like(param)
    for seq in ids:
        logp = torch.log_softmax(model(input_ids=seq[None]).logits[0, :-1], dim=-1)
        (grad,) = torch.autograd.grad(logp.gather(-1, seq[1:, None]).sum(), [param])
        expected += grad.square() / len(ids)
    torch.testing.assert_close(folder.fisher(name), expected, rtol=1e-4, atol=1e-9)
    assert folder.gram_count(name) == 3 * 6  # every position of every sequence is a row
    with pytest.raises(StatisticsError, match="expected"):
        collect(model, token_data(ids, "lm-ids"), tmp_path / "e", fisher_labels="expected")


def test_classification_adapter_keeps_only_the_chosen_classes() -> None:
    data = classification_data("digits", "train", classes=[3, 1], batch_size=100)
    labels = torch.cat([y for _, y in data.batches()])
    assert set(labels.tolist()) == {1, 3} and len(labels) == data.n_examples
    assert "classes=1,3" in data.identity
    with pytest.raises(StatisticsError, match="no rows"):
        classification_data("digits", "train", classes=[42])


def test_a_folder_without_statistics_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StatisticsError, match="not a statistics folder"):
        StatisticsFolder(tmp_path)
    with pytest.raises(Exception, match="kinds"):
        StatisticsSettings(kinds=())
