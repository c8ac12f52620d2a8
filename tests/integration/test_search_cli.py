"""`evomerge search / resume / export` end to end with the sequential pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from evomerge.cli import main
from tests.integration.search_helpers import ASSETS, records, search_config, status, write_config


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_search_export_and_rescore(llama_family: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = write_config(tmp_path / "c.yaml", search_config(llama_family, evaluations=12))
    code, out = run(["search", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert code == 0, out
    recs = records(tmp_path / "run")
    assert len(recs) == 12 and all(r["status"] == "ok" for r in recs)
    assert status(tmp_path / "run")["state"] == "finished"
    code, out = run(["export", str(tmp_path / "run"), str(tmp_path / "best")])
    assert code == 0, out
    best = max(recs, key=lambda r: r["objectives"]["score"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "best")
    sys.path.insert(0, str(ASSETS))
    try:
        import fitness_fns  # type: ignore[import-not-found]

        assert fitness_fns.mlp_norm(model)["score"] == pytest.approx(best["objectives"]["score"], rel=1e-6)
    finally:
        sys.path.remove(str(ASSETS))
    card = (tmp_path / "best" / "README.md").read_text()
    assert best["uid"] in card and "merge_method: task_arithmetic" in card


def test_finished_run_says_so_and_budget_extends(llama_family: dict[str, Path], tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", search_config(llama_family, evaluations=4))
    assert run(["search", str(cfg), "--run-dir", str(tmp_path / "run")])[0] == 0
    code, out = run(["search", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert code != 0 and "finished" in out and "Traceback" not in out
    code, out = run(["resume", str(tmp_path / "run"), "--set", "budget.evaluations=8"])
    assert code == 0, out
    assert len(records(tmp_path / "run")) == 8


def test_failed_and_nan_fitness_are_results(llama_family: dict[str, Path], tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", search_config(llama_family, function="nan_score", evaluations=4))
    code, out = run(["search", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert code == 0, out
    recs = records(tmp_path / "run")
    assert len(recs) == 4 and all(r["status"] == "failed" and "non-finite" in r["error"] for r in recs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": {"name": "simulated_annealing"}}, "unknown strategy 'simulated_annealing'; known strategies: cmaes"),
        ({"search_space": {"name": "global", "merge_method": "task_arithmetic",
                           "parameters": {"weight": {"low": 1.0, "high": 0.0}}}}, "search_space.parameters.weight.low"),
        ({"budget": {"evaluations": 0}}, "budget.evaluations"),
        ({"search_space": {"name": "layerwise", "merge_method": "linear", "groups": 7,
                           "parameters": {"weight": {"low": 0.0, "high": 1.0}}}}, "search_space.groups"),
        ({"strategy": {"name": "cmaes", "sigma": 0.3}}, "strategy: unknown key 'sigma'"),
        ({"fitness": {"name": "callable"}}, "fitness"),
        ({"strategy": {"name": "m2n2"}, "evaluation": {"multi_fidelity": {"subset": 0.25}}},
         "evaluation.multi_fidelity: m2n2 shares fitness per example"),
        ({"models": {"generate": {"kind": "tiny_specialists", "kwargs": {"tasks": ["evomerge_nope"]}}}},
         "models.generate.kwargs.tasks.0: unknown bundled task 'evomerge_nope'"),
        ({"models": {"generate": {"kind": "zoo_of_giants"}}}, "unknown model generator 'zoo_of_giants'"),
    ],
)
def test_bad_configs_fail_at_load_naming_the_field(llama_family: dict[str, Path], tmp_path: Path, change: dict, message: str) -> None:
    cfg = search_config(llama_family)
    cfg.update(change)
    code, out = run(["search", str(write_config(tmp_path / "c.yaml", cfg)), "--run-dir", str(tmp_path / "run")])
    assert code != 0 and "Traceback" not in out, out
    assert out.startswith("error: ") and message in out, out
    assert not (tmp_path / "run" / "evaluations.jsonl").exists()


def test_ctrl_c_stops_cleanly_then_resume_finishes(llama_family: dict[str, Path], tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", search_config(llama_family, evaluations=40, kwargs={"delay": 0.2}))
    exe = Path(sys.executable).parent / "evomerge"
    proc = subprocess.Popen([str(exe), "search", str(cfg), "--run-dir", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while len(records(tmp_path / "run")) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "interrupted" in out
    assert status(tmp_path / "run")["state"] == "stopped"
    done = len(records(tmp_path / "run"))
    assert 5 <= done < 40
    code, out = run(["resume", str(tmp_path / "run")])
    assert code == 0, out
    recs = records(tmp_path / "run")
    assert len(recs) == 40 and len({r["uid"] for r in recs}) == 40
    assert os.path.isfile(tmp_path / "run" / "checkpoints" / "LATEST")
