"""Bundled tasks: committed data equals the generator's output, splits are disjoint, texts are short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fitness.tasks import TASKS_DIR, bundled_task_names
from fitness.tasks.generate import SPLITS, TASKS, data_file, generate_task, main, stale_files


def test_committed_files_are_the_generators_output() -> None:
    assert stale_files(TASKS_DIR) == []
    assert main(["--check"]) == 0


def test_check_flags_a_changed_file(tmp_path: Path) -> None:
    main(["--out", str(tmp_path)])
    assert stale_files(tmp_path) == []
    target = data_file(tmp_path, "evomerge_arith", "search")
    target.write_text(target.read_text().replace('"label": 0', '"label": 1', 1))
    assert stale_files(tmp_path) == [target]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_are_disjoint_sized_and_well_formed(name: str) -> None:
    splits = generate_task(name)
    questions = {split: [r["question"] for r in rows] for split, rows in splits.items()}
    assert [len(questions[s]) for s in SPLITS] == list(TASKS[name].sizes)
    for i, a in enumerate(SPLITS):
        assert len(set(questions[a])) == len(questions[a])
        for b in SPLITS[i + 1 :]:
            assert not set(questions[a]) & set(questions[b]), (a, b)
    for rows in splits.values():
        for r in rows:
            choices, label = r["choices"], r["label"]
            assert isinstance(choices, list) and isinstance(label, int)
            assert len(choices) == 4 and len(set(choices)) == 4 and 0 <= label < 4
            assert len(str(r["question"])) + 1 + max(len(c) for c in choices) < 60


@pytest.mark.parametrize("name", sorted(TASKS))
def test_answers_are_spread_over_positions(name: str) -> None:
    labels = [r["label"] for r in generate_task(name)["search"]]
    counts = [labels.count(k) for k in range(4)]
    assert min(counts) > len(labels) / 8, counts


def test_answers_are_right_for_arithmetic() -> None:
    for rows in generate_task("evomerge_arith").values():
        for r in rows:
            a, op, b, _ = str(r["question"]).split()
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
            assert r["choices"][r["label"]] == str(value)  # type: ignore[index]


def test_generation_is_seeded() -> None:
    assert generate_task("evomerge_facts", seed=5) == generate_task("evomerge_facts", seed=5)
    assert generate_task("evomerge_facts", seed=5) != generate_task("evomerge_facts", seed=6)


def test_task_yamls_point_at_the_bundled_files() -> None:
    assert bundled_task_names() == sorted(TASKS)
    for name in TASKS:
        cfg = yaml.safe_load((TASKS_DIR / f"{name}.yaml").read_text())
        assert cfg["task"] == name and cfg["test_split"] == "search"
        assert "num_fewshot" not in cfg  # so a configured num_fewshot applies (lm-eval keeps an explicit 0)
        for split, path in cfg["dataset_kwargs"]["data_files"].items():
            assert (TASKS_DIR / path) == data_file(TASKS_DIR, name, split)
            first = json.loads((TASKS_DIR / path).read_text().splitlines()[0])
            assert set(first) == {"question", "choices", "label"}
