"""Adam second moments (evomerge/statistics/second_moments.py): optimizer indices named right, exports,
rank-1 compression and statistics folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from evomerge.errors import StatisticsError
from evomerge.statistics import second_moments as sm
from evomerge.statistics.optimizer_state import optimizer_second_moments
from evomerge.statistics.second_moments import (
    SecondMomentFolder,
    rank1_approximation,
    read_second_moments,
    second_moment_statistics,
    write_second_moments,
)


def mixed_model() -> nn.Module:
    """Distinct shapes, biases and a LayerNorm: the Trainer's decay split reorders the parameters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3))


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def adam_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The live optimizer's exp_avg_sq, looked up through the parameter objects themselves."""
    return {n: optimizer.state[p]["exp_avg_sq"] for n, p in model.named_parameters() if p in optimizer.state}


def saved(tmp_path: Path, optimizer: torch.optim.Optimizer, name: str = "optimizer.pt") -> Path:
    path = tmp_path / name
    torch.save(optimizer.state_dict(), path)
    return path


def assert_same(read: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(read) == sorted(expected)
    for name in expected:
        torch.testing.assert_close(read[name], expected[name], rtol=0, atol=0)


def test_single_group_indices_follow_named_parameters(tmp_path: Path) -> None:
    model = mixed_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, optimizer)
    assert_same(
        optimizer_second_moments(saved(tmp_path, optimizer), model), adam_state_by_name(model, optimizer)
    )


def test_trainer_decay_groups_are_recognised(tmp_path: Path) -> None:
    model = mixed_model()
    named = dict(model.named_parameters())
    decay = [n for n in named if n.endswith("weight") and not n.startswith("1.")]  # hand-built split
    groups = [
        {"params": [named[n] for n in decay], "weight_decay": 0.1},
        {"params": [p for n, p in named.items() if n not in decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    train(model, optimizer)
    path = saved(tmp_path, optimizer)
    assert decay == ["0.weight", "3.weight"]
    assert_same(optimizer_second_moments(path, model), adam_state_by_name(model, optimizer))
    # the same names given explicitly, per group or as one flat list in index order
    order = decay + [n for n in named if n not in decay]
    assert_same(optimizer_second_moments(path, names=order), adam_state_by_name(model, optimizer))


def test_state_that_fits_two_groupings_is_refused_until_names_are_given(tmp_path: Path) -> None:
    class BiasFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(3))
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :3] * self.scale + self.bias

    model = BiasFirst()
    optimizer = torch.optim.AdamW([{"params": [model.scale]}, {"params": [model.bias]}], lr=1e-2)
    train(model, optimizer)
    path = saved(tmp_path, optimizer)
    with pytest.raises(StatisticsError, match="several groupings"):
        optimizer_second_moments(path, model)
    read = optimizer_second_moments(path, names=[["scale"], ["bias"]])
    assert_same(read, adam_state_by_name(model, optimizer))


def test_names_stored_by_the_optimizer_need_no_model(tmp_path: Path) -> None:
    model = mixed_model()
    optimizer = torch.optim.Adam(model.named_parameters(), lr=1e-2)
    train(model, optimizer)
    assert_same(optimizer_second_moments(saved(tmp_path, optimizer)), adam_state_by_name(model, optimizer))


class Opaque:
    """A class torch.load(weights_only=True) must refuse to unpickle."""


@pytest.mark.parametrize(
    ("content", "use_model", "message"),
    [
        (lambda m: {"weights": torch.ones(2)}, True, "not an optimizer state dict"),
        (lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), True, "no exp_avg_sq"),
        (lambda m: torch.optim.Adam(m.parameters()), False, "names no parameters"),
        (lambda m: {"state": {}, "param_groups": [], "x": Opaque()}, True, "weights_only"),
    ],
)
def test_unusable_optimizer_files_say_why(
    tmp_path: Path, content: Callable[[nn.Module], object], use_model: bool, message: str
) -> None:
    model = mixed_model()
    obj = content(model)
    if isinstance(obj, torch.optim.Optimizer):
        train(model, obj)
        obj = obj.state_dict()
    torch.save(obj, tmp_path / "optimizer.pt")
    with pytest.raises(StatisticsError, match=message):
        optimizer_second_moments(tmp_path / "optimizer.pt", model if use_model else None)
    with pytest.raises(StatisticsError, match="not found"):
        optimizer_second_moments(tmp_path / "missing.pt", model)


def test_state_of_another_model_is_refused(tmp_path: Path) -> None:
    model = mixed_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, optimizer)
    other = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(StatisticsError, match="match no grouping"):
        optimizer_second_moments(saved(tmp_path, optimizer), other)


def test_a_trainer_checkpoint_folder_is_read_through_a_meta_skeleton(tmp_path: Path) -> None:
    from evomerge.tiny_models import make_tiny_model

    model = make_tiny_model(
        tmp_path / "ckpt", seed=0, vocab_size=40, hidden=16, layers=1, heads=2, tokenizer=False
    )
    named = dict(model.named_parameters())
    no_decay = [n for n in named if "norm" in n or "bias" in n]  # the Trainer's rule for a Llama
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named.items() if n not in no_decay]},
            {"params": [named[n] for n in no_decay]},
        ],
        lr=1e-3,
    )
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        ids = torch.randint(3, 40, (2, 6), generator=gen)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    saved(tmp_path / "ckpt", optimizer)
    assert_same(read_second_moments(tmp_path / "ckpt"), adam_state_by_name(model, optimizer))


def test_safetensors_exports_are_keyed_by_parameter_name(tmp_path: Path) -> None:
    v = {"a.weight": torch.rand(3, 2), "b.bias": torch.rand(4)}
    save_file(
        {"a.weight.exp_avg_sq": v["a.weight"], "b.bias": v["b.bias"]},
        str(tmp_path / "exp_avg_sq.safetensors"),
    )
    assert_same(read_second_moments(tmp_path / "exp_avg_sq.safetensors"), v)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 7), st.integers(1, 7), st.integers(0, 10_000))
def test_rank1_approximation_is_exact_on_rank1_and_keeps_row_and_column_sums(
    m: int, n: int, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    a, b = (
        torch.rand(m, generator=gen, dtype=torch.float64) + 0.1,
        torch.rand(n, generator=gen, dtype=torch.float64) + 0.1,
    )
    torch.testing.assert_close(rank1_approximation(torch.outer(a, b)), torch.outer(a, b))
    v = torch.rand(m, n, generator=gen, dtype=torch.float64)
    approx = rank1_approximation(v)
    torch.testing.assert_close(approx.sum(1), v.sum(1))
    torch.testing.assert_close(approx.sum(0), v.sum(0))
    vector = torch.rand(m, generator=gen)
    assert rank1_approximation(vector) is vector  # only matrices are factored


def test_compressed_folders_store_rows_and_columns_only(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    moments = {"w": torch.rand(64, 48, generator=gen), "b": torch.rand(64, generator=gen)}
    full = write_second_moments(moments, tmp_path / "full")
    small = write_second_moments(moments, tmp_path / "rank1", compression="rank1")
    assert full.stored_numel() == 64 * 48 + 64
    assert small.stored_numel() == 64 + 48 + 64
    sizes = [(f.path / sm.SECOND_MOMENT_FILE).stat().st_size for f in (full, small)]
    assert sizes[1] * 10 < sizes[0]
    for folder in (full, small):
        assert folder.moment_names() == {"w", "b"}
        assert folder.moment_shape("w") == (64, 48) and folder.moment_shape("b") == (64,)
    torch.testing.assert_close(full.second_moment("w"), moments["w"], rtol=0, atol=0)
    torch.testing.assert_close(small.second_moment("w"), rank1_approximation(moments["w"]))
    torch.testing.assert_close(small.second_moment("b"), moments["b"], rtol=0, atol=0)


def test_folders_refuse_negative_moments_and_report_missing_ones(tmp_path: Path) -> None:
    with pytest.raises(StatisticsError, match="negative"):
        write_second_moments({"w": torch.tensor([1.0, -1.0])}, tmp_path / "bad")
    from evomerge.statistics.cache import write_folder

    write_folder(tmp_path / "fisher-only", {}, {"w": torch.ones(2)}, {})
    with pytest.raises(StatisticsError, match="holds no second moments"):
        SecondMomentFolder(tmp_path / "fisher-only").moment_names()
    with pytest.raises(StatisticsError, match="already a statistics folder"):
        write_second_moments({"w": torch.ones(2)}, tmp_path / "fisher-only")


def test_second_moment_statistics_reads_a_source_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mixed_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, optimizer)
    path = saved(tmp_path, optimizer)
    first = second_moment_statistics(path, tmp_path / "cache", model=model)
    calls: list[object] = []

    def counting_read(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        calls.append(args)
        return {"0.weight": torch.ones(6, 4)}

    monkeypatch.setattr(sm, "read_second_moments", counting_read)
    again = second_moment_statistics(path, tmp_path / "cache", model=model)
    assert again.path == first.path and not calls
    compressed = second_moment_statistics(path, tmp_path / "cache", model=model, compression="rank1")
    assert compressed.path != first.path and calls  # another compression is another folder
