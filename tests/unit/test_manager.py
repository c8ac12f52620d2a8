"""The population manager: budgets, fitness cache, failures as results, halving, crash-exact resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evomerge.types import EvalStatus
from tests.unit.manager_toys import make_manager


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "evaluations.jsonl").read_text().splitlines()]


def comparable(recs: list[dict]) -> list[tuple]:
    return [(r["uid"], r["status"], r["objectives"], r["plan_hash"], r["fidelity"], tuple(r["genome"])) for r in recs]


@pytest.mark.parametrize("mode", ["generational", "steady_state"])
def test_budget_and_records(tmp_path: Path, mode: str) -> None:
    m = make_manager(tmp_path / "run", 10, mode)
    reason = m.run()
    assert "budget" in reason
    recs = lines(tmp_path / "run")
    assert len(recs) == 10 and len({r["uid"] for r in recs}) == 10
    for r in recs:
        assert {"uid", "status", "objectives", "plan_hash", "parents", "generation"} <= set(r)
    assert m.archive.best() is not None


def test_failures_are_recorded_not_fatal(tmp_path: Path) -> None:
    m = make_manager(tmp_path / "run", 40, batch=8)
    m.strategy.config = m.strategy.Config(name="hill", step=1.5)  # wide steps hit the failure region
    m.run()
    failed = [e for e in m.archive if e.evaluation.status is EvalStatus.FAILED]
    assert failed and all("toy failure region" in (e.evaluation.error or "") for e in failed)
    assert m.state.evaluations == 40  # clipped steps repeat corner plans: those come from the cache, free
    assert sum(1 for e in m.archive if e.cached_from is None) == 40


def test_identical_plans_are_not_evaluated_twice(tmp_path: Path) -> None:
    m = make_manager(tmp_path / "run", 12)
    m.strategy.config = m.strategy.Config(name="hill", step=0.0)  # every proposal is the same plan
    calls = []
    inner = m.pool.fn  # type: ignore[attr-defined]
    m.pool.fn = lambda c, f: (calls.append(c.uid), inner(c, f))[1]  # type: ignore[attr-defined]
    reason = m.run()
    assert calls == ["hill-000000"]  # twins in the same batch wait for it; later repeats hit the cache
    assert "already-evaluated" in reason
    cached = [e for e in m.archive if e.cached_from is not None]
    assert len(cached) == len(m.archive) - 1
    assert all(e.evaluation.objectives == m.archive.entries[0].evaluation.objectives for e in cached)


def test_resume_after_clean_stop_continues(tmp_path: Path) -> None:
    make_manager(tmp_path / "run", 6).run()
    m = make_manager(tmp_path / "run", 10)
    m.run()
    assert len(lines(tmp_path / "run")) == 10


@pytest.mark.parametrize(("mode", "kill_after", "halving"), [
    ("generational", 5, False), ("generational", 8, False), ("steady_state", 7, False),
    ("generational", 9, True), ("generational", 11, True),  # killed between a batch's subset scores and promotions
])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, mode: str, kill_after: int, halving: bool) -> None:
    full = tmp_path / "full"
    make_manager(full, 16, mode, halving=halving).run()
    crashed = tmp_path / "crashed"
    script = Path(__file__).with_name("manager_toys.py")
    root = Path(__file__).resolve().parents[2]
    args = [str(crashed), "16", mode, str(kill_after), *(["halving"] if halving else [])]
    proc = subprocess.run([sys.executable, str(script), *args],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": ""}, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    before = lines(crashed)
    assert len(before) == kill_after
    make_manager(crashed, 16, mode, halving=halving).run()
    after = lines(crashed)
    assert len({(r["uid"], r["fidelity"]) for r in after}) == len(after)  # no uid evaluated twice at a fidelity
    assert comparable(after) == comparable(lines(full))


def test_halving_spends_fewer_full_evaluations_and_keeps_the_best(tmp_path: Path) -> None:
    plain = make_manager(tmp_path / "plain", 24, batch=8)
    plain.run()
    halved = make_manager(tmp_path / "halved", 24, batch=8, halving=True)
    halved.run()
    full = [r for r in lines(tmp_path / "halved") if r["fidelity"] == "full"]
    assert len(full) <= 0.6 * 24
    assert halved.archive.best() is not None
    best_full = max(r["objectives"]["score"] for r in full)
    assert best_full == pytest.approx(halved.archive.best_value())  # type: ignore[arg-type]
