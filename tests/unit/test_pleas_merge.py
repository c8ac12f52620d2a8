"""PLeaS as a whole (evomerge/merge/pleas) and the activations statistic it reads (evomerge/statistics/activations)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from evomerge.errors import ConfigError, IncompatibleModelsError, StatisticsError
from evomerge.merge.pleas import PleasSettings, pleas_merge
from evomerge.statistics import CalibrationData, tensor_batches
from evomerge.statistics.activations import ActivationSettings, ActivationsFolder, collect_activations

SIZES = (6, 12, 10, 3)


class MLP(nn.Module):
    def __init__(self, sizes: Sequence[int], act: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
                 seed: int = 0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.act = act
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / layer.in_features**0.5)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


class Residual(nn.Module):
    """Hidden layers of equal width joined by a skip connection: not a plain chain."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.layers[0](x))
        h = h + torch.relu(self.layers[1](h))
        return self.layers[2](h)


def permuted_copy(model: MLP, seed: int) -> MLP:
    """The same function with the hidden units of every hidden layer shuffled."""
    gen = torch.Generator().manual_seed(seed)
    copy = MLP([model.layers[0].in_features, *(layer.out_features for layer in model.layers)], model.act)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    previous: torch.Tensor | None = None
    for i, layer in enumerate(model.layers):
        w, b = state[f"layers.{i}.weight"], state[f"layers.{i}.bias"]
        if previous is not None:
            w = w[:, previous]
        if i < len(model.layers) - 1:
            previous = torch.randperm(layer.out_features, generator=gen)
            w, b = w[previous], b[previous]
        state[f"layers.{i}.weight"], state[f"layers.{i}.bias"] = w, b
    copy.load_state_dict(state)
    return copy


def gaussian_data(n: int = 256, features: int = SIZES[0], name: str = "gauss") -> CalibrationData:
    x = torch.randn(n, features, generator=torch.Generator().manual_seed(7))
    return CalibrationData(tensor_batches(x, torch.zeros(n, dtype=torch.long), 64), name, n_examples=n)


def merge(models: Sequence[nn.Module], tmp_path: Path, data: CalibrationData | None = None,
          **settings: object) -> tuple[MLP, list[int]]:
    data = data or gaussian_data()
    folders = [collect_activations(m, data, cache_dir=tmp_path) for m in models]
    result = pleas_merge([m.state_dict() for m in models], folders, PleasSettings(**settings))  # type: ignore[arg-type]
    merged = MLP(result.widths, models[0].act)  # type: ignore[arg-type]
    merged.load_state_dict(result.state)
    return merged, result.widths


def probe_input() -> torch.Tensor:
    return torch.randn(100, SIZES[0], generator=torch.Generator().manual_seed(99))


@pytest.mark.parametrize("act", [torch.relu, torch.tanh, nn.functional.gelu], ids=["relu", "tanh", "gelu"])
def test_a_model_and_its_permuted_copy_merge_back_into_the_model(tmp_path: Path, act: Callable[..., torch.Tensor]) -> None:
    model = MLP(SIZES, act, seed=1)
    merged, widths = merge([model, permuted_copy(model, seed=2)], tmp_path, width_ratio=1.0)
    assert widths == list(SIZES)
    with torch.no_grad():
        torch.testing.assert_close(merged(probe_input()), model(probe_input()), atol=1e-5, rtol=0)
    for name, tensor in model.state_dict().items():  # merged units come in the anchor's order
        torch.testing.assert_close(merged.state_dict()[name], tensor, atol=1e-5, rtol=0)


def test_layers_without_bias_stay_without_bias(tmp_path: Path) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 12, bias=False), nn.ReLU(), nn.Linear(12, 3, bias=False))
    shuffle = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    copy = nn.Sequential(nn.Linear(6, 12, bias=False), nn.ReLU(), nn.Linear(12, 3, bias=False))
    copy.load_state_dict({"0.weight": model[0].weight[shuffle], "2.weight": model[2].weight[:, shuffle]})
    folders = [collect_activations(m, gaussian_data(), cache_dir=tmp_path) for m in (model, copy)]
    result = pleas_merge([model.state_dict(), copy.state_dict()], folders, PleasSettings(width_ratio=1.5))
    assert sorted(result.state) == ["0.weight", "2.weight"] and result.widths == [6, 18, 3]
    merged = nn.Sequential(nn.Linear(6, 18, bias=False), nn.ReLU(), nn.Linear(18, 3, bias=False))
    merged.load_state_dict(result.state)
    with torch.no_grad():
        torch.testing.assert_close(merged(probe_input()), model(probe_input()), atol=1e-5, rtol=0)


def test_partial_merges_of_a_permuted_copy_keep_the_function(tmp_path: Path) -> None:
    model = MLP(SIZES, seed=3)
    merged, widths = merge([model, permuted_copy(model, seed=4)], tmp_path, width_ratio=1.5)
    assert widths == [6, 18, 15, 3]
    with torch.no_grad():
        torch.testing.assert_close(merged(probe_input()), model(probe_input()), atol=1e-5, rtol=0)


def test_width_k_puts_the_models_side_by_side_and_averages_their_outputs(tmp_path: Path) -> None:
    models = [MLP(SIZES, seed=s) for s in (5, 6, 7)]
    merged, widths = merge(models, tmp_path, width_ratio=3.0)
    assert widths == [6, 36, 30, 3]
    with torch.no_grad():
        expected = torch.stack([m(probe_input()) for m in models]).mean(0)
        torch.testing.assert_close(merged(probe_input()), expected, atol=1e-5, rtol=0)


def test_per_layer_width_ratios(tmp_path: Path) -> None:
    models = [MLP(SIZES, seed=s) for s in (8, 9, 10)]
    _, widths = merge(models, tmp_path, width_ratio=(2.0, 1.0))
    assert widths == [6, 12 - 6 + 3 * 6, 10, 3]
    with pytest.raises(ConfigError, match="width_ratio"):
        merge(models, tmp_path, width_ratio=(2.0,))


def test_the_least_squares_step_fits_the_calibration_targets_better(tmp_path: Path) -> None:
    models = [MLP(SIZES, seed=s) for s in (11, 12)]
    folders = [collect_activations(m, gaussian_data(), cache_dir=tmp_path) for m in models]
    states = [m.state_dict() for m in models]
    refit = pleas_merge(states, folders, PleasSettings(ridge=1e-6))
    plain = pleas_merge(states, folders, PleasSettings(refit=False))
    assert refit.widths == plain.widths
    # the first layer's inputs are the same for every model, so averaging matched rows already fits exactly
    assert refit.fit_mse[0] < 1e-20 and plain.fit_mse[0] < 1e-20
    assert all(a < 0.9 * b for a, b in zip(refit.fit_mse[1:], plain.fit_mse[1:]))


def test_merging_twice_gives_identical_tensors(tmp_path: Path) -> None:
    models = [MLP(SIZES, seed=s) for s in (13, 14, 15)]
    folders = [collect_activations(m, gaussian_data(), cache_dir=tmp_path) for m in models]
    first = pleas_merge([m.state_dict() for m in models], folders, PleasSettings(width_ratio=1.7))
    again = pleas_merge([m.state_dict() for m in models], [ActivationsFolder(f.path) for f in folders],
                        PleasSettings(width_ratio=1.7))
    assert first.state.keys() == again.state.keys()
    assert all(torch.equal(first.state[k], again.state[k]) for k in first.state)


def test_activations_are_each_linear_layers_inputs_in_forward_order(tmp_path: Path) -> None:
    model = MLP(SIZES, seed=16)
    data = gaussian_data(100)
    folder = collect_activations(model, data, ActivationSettings(max_examples=70), cache_dir=tmp_path)
    assert folder.layers == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    x = next(iter(data.batches()))[0]
    torch.testing.assert_close(folder.inputs("layers.0.weight")[:64], x)
    with torch.no_grad():
        torch.testing.assert_close(folder.inputs("layers.1.weight")[:64], torch.relu(model.layers[0](x)))
    assert folder.rows("layers.2.weight") == 70 and folder.calls_per_forward("layers.1.weight") == 1
    again = collect_activations(model, data, ActivationSettings(max_examples=70), cache_dir=tmp_path)
    assert again.path == folder.path  # a cache hit
    other = collect_activations(model, data, ActivationSettings(max_examples=60), cache_dir=tmp_path)
    assert other.path != folder.path


def test_a_missing_activations_folder_is_a_statistics_error(tmp_path: Path) -> None:
    with pytest.raises(StatisticsError, match="not an activations folder"):
        ActivationsFolder(tmp_path / "nowhere")


def test_activations_of_different_data_are_refused(tmp_path: Path) -> None:
    models = [MLP(SIZES, seed=s) for s in (17, 18)]
    folders = [collect_activations(m, gaussian_data(name=f"set{i}"), cache_dir=tmp_path) for i, m in enumerate(models)]
    with pytest.raises(StatisticsError, match="same rows"):
        pleas_merge([m.state_dict() for m in models], folders)


def test_one_model_is_a_config_error(tmp_path: Path) -> None:
    model = MLP(SIZES)
    with pytest.raises(ConfigError, match="at least 2 models"):
        pleas_merge([model.state_dict()], [collect_activations(model, gaussian_data(), cache_dir=tmp_path)])


def test_a_residual_connection_is_an_unsupported_architecture(tmp_path: Path) -> None:
    models = [Residual(), Residual()]
    folders = [collect_activations(m, gaussian_data(), cache_dir=tmp_path) for m in models]
    with pytest.raises(IncompatibleModelsError, match="not an elementwise function"):
        pleas_merge([m.state_dict() for m in models], folders)


def test_a_normalisation_layer_is_an_unsupported_architecture(tmp_path: Path) -> None:
    models = [nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)) for _ in range(2)]
    folders = [collect_activations(m, gaussian_data(), cache_dir=tmp_path) for m in models]
    with pytest.raises(IncompatibleModelsError, match="linear layers only"):
        pleas_merge([m.state_dict() for m in models], folders)


def test_a_layer_used_twice_is_an_unsupported_architecture(tmp_path: Path) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(torch.relu(self.inner(x)))

    models = [Twice(), Twice()]
    folders = [collect_activations(m, gaussian_data(), cache_dir=tmp_path) for m in models]
    with pytest.raises(IncompatibleModelsError, match="once per forward pass"):
        pleas_merge([m.state_dict() for m in models], folders)


def test_a_model_without_linear_layers_has_no_activations(tmp_path: Path) -> None:
    with pytest.raises(StatisticsError, match=r"no nn\.Linear"):
        collect_activations(nn.Sequential(nn.ReLU()), gaussian_data(), cache_dir=tmp_path)
