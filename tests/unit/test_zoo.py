"""The on-the-fly model zoo: deterministic, cached by content, atomic, and clear about bad options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evomerge.config import GenerateConfig
from evomerge.errors import ConfigError
from evomerge.seeding import SeedTree
from evomerge.zoo import generate_models
from evomerge.zoo_training import task_texts

SMALL = {"hidden": 16, "base_steps": 5, "specialist_steps": 15, "batch_size": 8}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def build(cache: Path, seed: int = 0, **kwargs: object) -> tuple:
    cfg = GenerateConfig(kwargs={**SMALL, "cache_dir": str(cache), **kwargs})
    return generate_models(cfg, SeedTree(seed).child("zoo"), progress=False)


def test_same_seed_same_models_cached_and_reused(tmp_path: Path) -> None:
    first = build(tmp_path / "a")
    assert [p.name for p in first.sources] == ["evomerge_facts", "evomerge_strings"]
    stamp = (first.base.parent / "DONE").stat().st_mtime_ns
    again = build(tmp_path / "a")
    assert again == first and (first.base.parent / "DONE").stat().st_mtime_ns == stamp  # not rebuilt
    elsewhere = build(tmp_path / "b")
    for a, b in zip([first.base, *first.sources], [elsewhere.base, *elsewhere.sources]):
        wa, wb = weights(a), weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not list((tmp_path / "a" / "zoo").glob("*.tmp*")), "no temporary folder left behind"


def test_specialists_move_away_from_base_and_from_each_other(tmp_path: Path) -> None:
    zoo = build(tmp_path)
    base, facts, strings = (weights(p) for p in (zoo.base, *zoo.sources))
    moved = [max(float((w[k] - base[k]).abs().max()) for k in base) for w in (facts, strings)]
    assert min(moved) > 1e-3
    assert any(not torch.equal(facts[k], strings[k]) for k in base)
    assert (zoo.sources[0] / "tokenizer.json").is_file() and (zoo.sources[0] / "config.json").is_file()


def test_other_seed_or_options_build_another_set(tmp_path: Path) -> None:
    assert build(tmp_path).base != build(tmp_path, seed=1).base
    assert build(tmp_path).base != build(tmp_path, specialist_steps=16).base


def test_bad_options_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models.generate.kwargs.tasks.1: unknown bundled task 'nope'"):
        build(tmp_path, tasks=["evomerge_facts", "nope"])
    with pytest.raises(ConfigError, match="models.generate.kwargs.*width"):
        build(tmp_path, width=3)


def test_training_text_is_question_and_right_answer() -> None:
    texts = task_texts("evomerge_arith", ("train",))
    assert len(texts) == 50 and texts[0] == "0 + 13 = 13"
