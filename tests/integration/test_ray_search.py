"""Searches through a real local Ray (2 CPUs): equality with the sequential twin, actor death, timeouts,
and SIGKILL of the driver followed by `evomerge resume`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from evomerge.cli import main
from tests.integration.search_helpers import records, search_config, status, write_config

pytestmark = pytest.mark.ray
RAY = {"pool": "ray", "actors": 2, "cpus_per_actor": 1, "object_store_mb": 96}


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def comparable(recs: list[dict]) -> list[tuple]:
    return sorted((r["uid"], r["status"], r["plan_hash"], round(r["objectives"].get("score", 0.0), 9)) for r in recs)


def test_ray_search_equals_sequential_twin(llama_family: dict[str, Path], tmp_path: Path) -> None:
    seq = write_config(tmp_path / "seq.yaml", search_config(llama_family, evaluations=8))
    ray_cfg = write_config(tmp_path / "ray.yaml", search_config(llama_family, evaluations=8, resources=RAY))
    assert run(["search", str(seq), "--run-dir", str(tmp_path / "seq")])[0] == 0
    code, out = run(["search", str(ray_cfg), "--run-dir", str(tmp_path / "ray")])
    assert code == 0, out
    ray_recs = records(tmp_path / "ray")
    assert {r["evaluator"] for r in ray_recs} == {"evaluator-0", "evaluator-1"}
    assert comparable(ray_recs) == comparable(records(tmp_path / "seq"))


def test_actor_death_is_retried_then_failed(llama_family: dict[str, Path], tmp_path: Path) -> None:
    cfg = search_config(llama_family, function="die_on_poison", kwargs={"poison_file": str(tmp_path / "poison")},
                        evaluations=8, resources=RAY, evaluation={"retries": 1})
    code, out = run(["search", str(write_config(tmp_path / "c.yaml", cfg)), "--run-dir", str(tmp_path / "run")])
    assert code == 0, out
    recs = records(tmp_path / "run")
    assert len(recs) == 8 and len({r["uid"] for r in recs}) == 8
    failed = [r for r in recs if r["status"] != "ok"]
    assert len(failed) == 1
    assert "evaluator died 2 time(s)" in failed[0]["error"] and failed[0]["metrics"]["attempts"] == 2
    assert status(tmp_path / "run")["state"] == "finished"


def test_timeout_is_recorded_and_the_run_goes_on(llama_family: dict[str, Path], tmp_path: Path) -> None:
    cfg = search_config(llama_family, function="slow_on_poison", kwargs={"poison_file": str(tmp_path / "poison")},
                        evaluations=6, resources=RAY, evaluation={"timeout": 4})
    code, out = run(["search", str(write_config(tmp_path / "c.yaml", cfg)), "--run-dir", str(tmp_path / "run")])
    assert code == 0, out
    recs = records(tmp_path / "run")
    assert len(recs) == 6
    timeouts = [r for r in recs if r["status"] == "timeout"]
    assert len(timeouts) == 1 and "no result after 4s" in timeouts[0]["error"]
    assert all(r["status"] == "ok" for r in recs if r not in timeouts)


def test_sigkill_driver_then_resume(llama_family: dict[str, Path], tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", search_config(llama_family, evaluations=16, kwargs={"delay": 0.3}, resources=RAY))
    exe = Path(sys.executable).parent / "evomerge"
    proc = subprocess.Popen([str(exe), "search", str(cfg), "--run-dir", str(tmp_path / "run")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(records(tmp_path / "run")) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the crashed driver's Ray processes share its session
            os.killpg(proc.pid, signal.SIGKILL)
    before = records(tmp_path / "run")
    assert 5 <= len(before) < 16
    code, out = run(["resume", str(tmp_path / "run")])
    assert code == 0, out
    after = records(tmp_path / "run")
    assert len(after) == 16 and len({r["uid"] for r in after}) == 16
    assert after[: len(before)] == before  # nothing rewritten, nothing evaluated twice
