"""The lm_eval suite on a tiny Llama: equal to lm-eval's own simple_evaluate, and safe to reuse in place."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evomerge.seeding import SeedTree
from fitness import build_suite
from fitness.tasks import write_absolute_task_yamls
from tests.fitness_fixtures import scramble_, tiny_lm

pytestmark = pytest.mark.filterwarnings("ignore")


def direct(model: Any, tok: Any, task_dir: Path, batch_size: int, **kwargs: Any) -> tuple[float, np.ndarray]:
    """acc and per-example acc from lm_eval.simple_evaluate with a fresh HFLM and TaskManager."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    tm = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=["evomerge_arith"], task_manager=tm, bootstrap_iters=0, **kwargs)
    assert out is not None
    rows = sorted(out["samples"]["evomerge_arith"], key=lambda s: s["doc_id"])
    return out["results"]["evomerge_arith"]["acc,none"], np.array([s["acc"] for s in rows])


@pytest.mark.parametrize(("num_fewshot", "limit"), [(None, None), (2, 60)])
def test_scores_equal_simple_evaluate(tmp_path: Path, num_fewshot: int | None, limit: int | None) -> None:
    model, tok = tiny_lm(3)
    suite = build_suite(
        {"name": "lm_eval", "tasks": ["evomerge_arith"], "batch_size": 8, "num_fewshot": num_fewshot, "limit": limit}
    )
    result = suite(model, tok)
    task_dir = write_absolute_task_yamls(tmp_path, ["evomerge_arith"])
    acc, per_example = direct(model, tok, task_dir, 8, num_fewshot=num_fewshot, limit=limit)
    assert result.objectives == {"acc": acc}
    assert result.per_example is not None
    np.testing.assert_array_equal(result.per_example, per_example)
    assert len(per_example) == (limit or 200)
    assert 0.0 < acc < 1.0


def test_reuse_across_in_place_weight_changes_equals_fresh_suites() -> None:
    cfg = {"name": "lm_eval", "tasks": ["evomerge_arith"], "limit": 40, "num_fewshot": 1, "batch_size": 16}
    model, tok = tiny_lm(0)
    reused = build_suite(cfg)
    seen = set()
    for state in range(20):
        scramble_(model, seed=state)
        again = reused(model, tok)
        fresh = build_suite(cfg)(model, tok)
        assert again.objectives == fresh.objectives
        assert again.per_example is not None and fresh.per_example is not None
        np.testing.assert_array_equal(again.per_example, fresh.per_example)
        seen.add(again.objectives["acc"])
    assert len(seen) > 3, "weight changes must change the scores, or this test proves nothing"


def test_continuation_only_head_scores_equal_hflms_full_logits() -> None:
    cfg = {"name": "lm_eval", "tasks": ["evomerge_arith", "evomerge_strings"], "limit": 25, "num_fewshot": 2,
           "batch_size": 16}
    model, tok = tiny_lm(6)
    lean, full = build_suite(cfg), build_suite({**cfg, "continuation_logits": False})
    head_rows: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda _m, args, _o: head_rows.append(args[0].shape[0]))
    try:
        for state in range(2):
            scramble_(model, seed=100 + state)
            head_rows.clear()
            a = lean(model, tok)
            assert 1 in head_rows, "the lean path must gather positions at the head, or this test proves nothing"
            head_rows.clear()
            b = full(model, tok)
            assert 1 not in head_rows
            assert a.objectives == b.objectives
            np.testing.assert_array_equal(a.per_example, b.per_example)  # type: ignore[arg-type]
    finally:
        hook.remove()


def test_fidelity_scores_a_fixed_nested_subset_equal_to_simple_evaluate_samples(tmp_path: Path) -> None:
    model, tok = tiny_lm(1)
    suite = build_suite({"name": "lm_eval", "tasks": ["evomerge_arith"], "batch_size": 8}, SeedTree(7))
    suite.set_fidelity(0.25)
    small = suite(model, tok)
    chosen = suite.samples()
    assert chosen is not None
    quarter = list(chosen["evomerge_arith"])
    suite.set_fidelity(0.5)
    half = list(suite.samples()["evomerge_arith"])  # type: ignore[index]
    assert len(quarter) == 50 and len(half) == 100 and set(quarter) <= set(half)
    task_dir = write_absolute_task_yamls(tmp_path, ["evomerge_arith"])
    acc, per_example = direct(model, tok, task_dir, 8, samples={"evomerge_arith": quarter})
    assert small.objectives["acc"] == acc
    np.testing.assert_array_equal(small.per_example, per_example)  # type: ignore[arg-type]
    assert small.metrics["fidelity"] == "subset:0.25"
    other_seed = build_suite({"name": "lm_eval", "tasks": ["evomerge_arith"]}, SeedTree(8))
    other_seed.prepare()
    other_seed.set_fidelity(0.25)
    assert list(other_seed.samples()["evomerge_arith"]) != quarter  # type: ignore[index]


def test_hflm_is_built_once_per_model_and_rebuilt_for_another() -> None:
    model, tok = tiny_lm(0)
    suite = build_suite({"name": "lm_eval", "tasks": ["evomerge_arith"], "limit": 10})
    suite(model, tok)
    first = suite.lm(model, tok)  # type: ignore[attr-defined]
    suite(model, tok)
    assert suite.lm(model, tok) is first  # type: ignore[attr-defined]
    other, _ = tiny_lm(1)
    suite(other, tok)
    assert suite.lm(other, tok) is not first  # type: ignore[attr-defined]


def test_call_restores_global_rng_state_and_model_mode() -> None:
    model, tok = tiny_lm(0)
    suite = build_suite({"name": "lm_eval", "tasks": ["evomerge_arith"], "limit": 10})
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    model.train()
    suite(model, tok)
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected
    assert model.training


def test_several_tasks_mean_or_separate_objectives() -> None:
    model, tok = tiny_lm(2)
    tasks = ["evomerge_arith", "evomerge_facts"]
    separate = build_suite({"name": "lm_eval", "tasks": tasks, "aggregate": "separate", "limit": 30})
    mean = build_suite({"name": "lm_eval", "tasks": tasks, "limit": 30, "objective": "mean_acc"})
    assert [o.name for o in separate.objectives()] == ["evomerge_arith/acc", "evomerge_facts/acc"]
    s, m = separate(model, tok), mean(model, tok)
    expected = (s.objectives["evomerge_arith/acc"] + s.objectives["evomerge_facts/acc"]) / 2
    assert m.objectives == {"mean_acc": pytest.approx(expected, abs=1e-12)}
    assert m.per_example is not None and len(m.per_example) == 60
    np.testing.assert_array_equal(m.per_example, s.per_example)  # type: ignore[arg-type]
    assert m.metrics["evomerge_facts/n_examples"] == 30


def test_pareto_composite_of_lm_eval_and_perplexity(tmp_path: Path) -> None:
    (tmp_path / "text.txt").write_text("first paragraph of text\n\nsecond one, a little longer than that\n")
    model, tok = tiny_lm(4)
    suite = build_suite(
        {
            "name": "composite",
            "mode": "pareto",
            "suites": [
                {"name": "lm_eval", "tasks": ["evomerge_facts"], "limit": 20},
                {"name": "perplexity", "paths": "text.txt"},
            ],
        },
        base_dir=tmp_path,
    )
    assert [(o.name, o.direction) for o in suite.objectives()] == [
        ("lm_eval/acc", "maximize"),
        ("perplexity/perplexity", "minimize"),
    ]
    result = suite(model, tok)
    assert result.per_example is not None and len(result.per_example) == 22
    assert result.metrics["per_example_slices"] == {"lm_eval": [0, 20], "perplexity": [20, 22]}
    assert result.objectives["perplexity/perplexity"] > 1.0
