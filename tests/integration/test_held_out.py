"""Held-out scoring: the run's best re-scored on the test split, and the exported folder agrees from disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evomerge.cli import main
from evomerge.errors import ConfigError
from evomerge.holdout import held_out_fitness, read_held_out
from tests.integration.search_helpers import search_config, write_config

LM_EVAL = {"name": "lm_eval", "tasks": ["evomerge_facts", "evomerge_strings"], "aggregate": "mean",
           "objective": "acc", "batch_size": 32, "limit": 24}


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_fitness_switches_split_and_keeps_the_rest() -> None:
    out = held_out_fitness(LM_EVAL, "test")
    assert out["split"] == "test" and out["allow_test_split"] is True
    assert {k: v for k, v in out.items() if k not in ("split", "allow_test_split")} == LM_EVAL


def test_suites_without_a_split_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="'callable'"):
        held_out_fitness({"name": "callable", "function": "m:f"}, "test")


def test_held_out_score_is_reproduced_from_the_exported_folder(llama_family: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fitness import build_suite

    cfg = search_config(llama_family, evaluations=4, fitness=LM_EVAL)
    cfg["fitness"] = LM_EVAL  # replace the callable suite entirely
    code, out = run(["search", str(write_config(tmp_path / "c.yaml", cfg)), "--run-dir", str(tmp_path / "run")])
    assert code == 0, out
    code, out = run(["held-out", str(tmp_path / "run"), "--top", "2"])
    assert code == 0, out
    rows = read_held_out(tmp_path / "run")
    assert [r["rank"] for r in rows] == [0, 1] and all(r["status"] == "ok" for r in rows)
    assert rows[0]["split"] == "test" and "test:" in out
    code, out = run(["export", str(tmp_path / "run"), str(tmp_path / "best")])
    assert code == 0, out
    card = (tmp_path / "best" / "README.md").read_text()
    assert "held-out `test` split" in card
    scores = json.loads((tmp_path / "best" / "evomerge_scores.json").read_text())
    assert scores["held_out"]["objectives"] == rows[0]["held_out"]

    suite = build_suite(held_out_fitness(LM_EVAL, "test"))
    suite.prepare()
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "best"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "best"))
    assert suite(model, tokenizer).objectives == rows[0]["held_out"]
    # and the search split from disk gives the score the search recorded
    search_suite = build_suite(LM_EVAL)
    search_suite.prepare()
    assert search_suite(model, tokenizer).objectives == rows[0]["search"]
