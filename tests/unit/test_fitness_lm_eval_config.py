"""lm_eval suite config and task loading: lm-eval's signatures, unknown tasks, missing files, the test guard."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from evomerge.errors import ConfigError
from fitness import build_suite, suite_config
from fitness.harness.options import REFUSED_SIMPLE_EVALUATE, LmEvalConfig, simple_evaluate_parameters
from fitness.tasks import TASKS_DIR, bundled_task_names

pytestmark = pytest.mark.filterwarnings("ignore")


def lm_eval(**options: object) -> dict[str, object]:
    return {"name": "lm_eval", "tasks": ["evomerge_arith"], **options}


def test_every_simple_evaluate_option_is_a_field_or_refused_with_a_reason() -> None:
    upstream = set(simple_evaluate_parameters())
    fields = set(LmEvalConfig.model_fields)
    assert upstream <= fields | set(REFUSED_SIMPLE_EVALUATE)
    assert not (fields & set(REFUSED_SIMPLE_EVALUATE))


def test_shared_defaults_equal_lm_evals_except_bootstrap() -> None:
    params = simple_evaluate_parameters()
    cfg = LmEvalConfig.model_validate(lm_eval())
    for name in ("num_fewshot", "limit", "samples", "write_out", "system_instruction", "apply_chat_template",
                 "fewshot_as_multiturn", "gen_kwargs", "random_seed", "numpy_random_seed", "torch_random_seed",
                 "fewshot_random_seed", "confirm_run_unsafe_code", "metadata"):
        assert getattr(cfg, name) == params[name].default, name
    assert cfg.bootstrap_iters == 0 != params["bootstrap_iters"].default


def test_typo_is_named_at_config_load_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown lm_eval suite option 'num_fewshots' \(did you mean 'num_fewshot'\?\)"):
        suite_config(lm_eval(num_fewshots=3))


@pytest.mark.parametrize("option", ["use_cache", "cache_requests", "predict_only", "model_args"])
def test_refused_simple_evaluate_options_say_why(option: str) -> None:
    with pytest.raises(ConfigError, match=f"lm_eval suite option '{option}' is not supported: "):
        suite_config(lm_eval(**{option: True}))


def test_hflm_options_are_checked_against_hflm() -> None:
    assert suite_config(lm_eval(hflm={"logits_cache": False, "max_length": 128})).hflm == {  # type: ignore[attr-defined]
        "logits_cache": False,
        "max_length": 128,
    }
    with pytest.raises(ConfigError, match="hflm option 'peft' only applies when lm-eval loads the model"):
        suite_config(lm_eval(hflm={"peft": "x"}))
    with pytest.raises(ConfigError, match=r"unknown hflm option 'logit_cache' \(did you mean 'logits_cache'\?\)"):
        suite_config(lm_eval(hflm={"logit_cache": False}))


def test_limit_and_samples_exclude_each_other_and_direction_is_known() -> None:
    with pytest.raises(ConfigError, match="'limit' and 'samples' exclude each other"):
        suite_config(lm_eval(limit=5, samples={"evomerge_arith": [1]}))
    assert build_suite(lm_eval(metric="word_perplexity")).objectives()[0].direction == "minimize"
    with pytest.raises(ConfigError, match="set direction"):
        build_suite(lm_eval(metric="my_metric")).objectives()
    assert build_suite(lm_eval(metric="my_metric", direction="maximize")).objectives()[0].name == "my_metric"


def test_unknown_task_names_the_known_local_tasks() -> None:
    suite = build_suite(lm_eval(tasks=["evomerge_arth"], include_defaults=False))
    with pytest.raises(ConfigError) as err:
        suite.prepare()
    message = str(err.value)
    assert "unknown lm-eval task 'evomerge_arth' (did you mean 'evomerge_arith'?)" in message
    assert f"known local tasks: {', '.join(bundled_task_names())}" in message


def write_task(directory: Path, name: str, **changes: object) -> Path:
    cfg = yaml.safe_load((TASKS_DIR / "evomerge_facts.yaml").read_text())
    cfg["task"] = name
    files = cfg["dataset_kwargs"]["data_files"]
    cfg["dataset_kwargs"]["data_files"] = {split: str(TASKS_DIR / f) for split, f in files.items()}
    cfg.update(changes)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_missing_data_file_names_the_path(tmp_path: Path) -> None:
    write_task(tmp_path / "tasks", "mine", dataset_kwargs={"data_files": {"search": "data/search.jsonl"}})
    suite = build_suite(lm_eval(tasks=["mine"], include_path=["tasks"]), base_dir=tmp_path)
    with pytest.raises(ConfigError, match=f"lm_eval task 'mine': data file not found: {tmp_path / 'tasks/data/search.jsonl'}"):
        suite.prepare()


def test_relative_data_files_resolve_against_the_yaml_folder(tmp_path: Path) -> None:
    data = tmp_path / "tasks" / "data"
    data.mkdir(parents=True)
    rows = (TASKS_DIR / "evomerge_facts_search.jsonl").read_text().splitlines()[:7]
    (data / "s.jsonl").write_text("\n".join(rows) + "\n")
    files = {"train": "data/s.jsonl", "search": "data/s.jsonl"}
    write_task(tmp_path / "tasks", "mine", dataset_kwargs={"data_files": files})
    suite = build_suite(lm_eval(tasks=["tasks/mine.yaml"]), base_dir=tmp_path)
    suite.prepare()
    task = suite.tasks["mine"]  # type: ignore[attr-defined]
    assert len(task.eval_docs) == 7
    assert task.config.dataset_kwargs["data_files"]["search"] == str(data / "s.jsonl")


def test_missing_include_path_and_task_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"include_path not found: {tmp_path / 'nowhere'}"):
        build_suite(lm_eval(include_path="nowhere"), base_dir=tmp_path).prepare()
    with pytest.raises(ConfigError, match=f"task file not found: {tmp_path / 'x.yaml'}"):
        build_suite(lm_eval(tasks=["x.yaml"]), base_dir=tmp_path).prepare()


def test_scoring_the_test_split_needs_consent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lm_eval task 'evomerge_arith' would be scored on split 'test'"):
        build_suite(lm_eval(split="test")).prepare()
    allowed = build_suite(lm_eval(split="test", allow_test_split=True))
    allowed.prepare()
    assert len(allowed.tasks["evomerge_arith"].eval_docs) == 200  # type: ignore[attr-defined]
    write_task(tmp_path, "held_out", test_split="test")
    with pytest.raises(ConfigError, match="split 'test'"):
        build_suite(lm_eval(tasks=["held_out.yaml"]), base_dir=tmp_path).prepare()


def test_unknown_split_lists_the_tasks_splits() -> None:
    with pytest.raises(ConfigError, match="has no split 'valid'; its splits: train, search, test"):
        build_suite(lm_eval(split="valid")).prepare()


def test_metric_and_filter_are_checked_against_the_task() -> None:
    with pytest.raises(ConfigError, match="has no metric 'exact_match'; its metrics: acc, acc_norm"):
        build_suite(lm_eval(metric="exact_match")).prepare()
    with pytest.raises(ConfigError, match="has no filter 'strict'; its filters: none"):
        build_suite(lm_eval(filter="strict")).prepare()


def test_config_options_mirror_simple_evaluate_names() -> None:
    from lm_eval.evaluator import simple_evaluate

    params = inspect.signature(simple_evaluate).parameters
    mirrored = set(LmEvalConfig.model_fields) - {
        "name", "weight", "label", "include_path", "include_defaults", "split", "allow_test_split", "metric",
        "filter", "aggregate", "objective", "direction", "hflm", "token_cache", "continuation_logits", "quiet",
    }
    assert mirrored <= set(params)


def test_user_samples_bound_the_fidelity_subsets() -> None:
    given = list(range(1, 80, 2))
    suite = build_suite(lm_eval(samples={"evomerge_arith": given}), seed_tree=3)
    suite.prepare()
    assert list(suite.samples()["evomerge_arith"]) == given  # type: ignore[attr-defined,index]
    suite.set_fidelity(0.25)
    part = suite.samples()["evomerge_arith"]  # type: ignore[attr-defined]
    assert len(part) == 10 and set(part) <= set(given) and list(part) == sorted(part)
    assert all(i in part for i in part) and 0 not in part and 2 not in part  # O(1) membership list


def test_no_samples_at_full_fidelity_without_user_samples() -> None:
    suite = build_suite(lm_eval(limit=0.1))
    suite.prepare()
    assert suite.samples() is None  # type: ignore[attr-defined]
    suite.set_fidelity(0.5)
    assert len(suite.samples()["evomerge_arith"]) == 10  # type: ignore[attr-defined,index]
