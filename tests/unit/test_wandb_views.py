"""What the W&B tracker logs (rows and tables, computed by hand) and that a failing W&B never raises."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evomerge.config import parse_config
from evomerge.population.archive import Entry
from evomerge.population.run_dir import RunDir
from evomerge.tracking.base import TRACKERS
from evomerge.tracking.wandb_tracker import WandbTracker, new_run_id
from evomerge.tracking.wandb_views import (
    RUN_FILE,
    candidate_columns,
    candidate_row,
    evaluation_metrics,
    generation_metrics,
    store_run,
    stored_run,
    update_best,
)
from evomerge.types import Candidate, EvalStatus, Evaluation, Genome, Objective

OBJ = [Objective("acc", "maximize"), Objective("loss", "minimize")]


def entry(i: int, acc: float | None = None, loss: float | None = None, status: EvalStatus = EvalStatus.OK,
          generation: int = 0, cached_from: str | None = None) -> Entry:
    cand = Candidate(f"u{i}", Genome(np.zeros(1)), None, parents=("p1", "p2"), generation=generation, strategy="m2n2")
    objectives = {k: v for k, v in (("acc", acc), ("loss", loss)) if v is not None}
    ev = Evaluation(cand.uid, status, objectives, seconds=1.25, error=None if status is EvalStatus.OK else "boom")
    return Entry(cand, ev, i, cached_from)


def test_best_so_far_follows_each_direction() -> None:
    best: dict[str, float] = {}
    for e in [entry(0, 0.5, 2.0), entry(1, 0.4, 1.0), entry(2, status=EvalStatus.FAILED), entry(3, 0.7, 3.0)]:
        update_best(best, e, OBJ)
    assert best == {"acc": 0.7, "loss": 1.0}


def test_evaluation_row() -> None:
    row = evaluation_metrics(entry(4, 0.5, 2.0, generation=3, cached_from="u1"), OBJ, {"acc": 0.9, "loss": 1.0})
    assert row == {
        "evaluation": 5, "eval/status": "ok", "eval/ok": 1, "eval/seconds": 1.25, "eval/uid": "u4", "eval/generation": 3,
        "eval/cached": 1, "eval/fidelity": "full", "eval/acc": 0.5, "eval/loss": 2.0, "best/acc": 0.9, "best/loss": 1.0,
    }
    failed = evaluation_metrics(entry(0, status=EvalStatus.TIMEOUT), OBJ, {})
    assert failed["eval/ok"] == 0 and failed["eval/status"] == "timeout" and "eval/acc" not in failed


def test_generation_row() -> None:
    batch = [entry(0, 0.2, 4.0, generation=2), entry(1, 0.6, 1.0, generation=2), entry(2, status=EvalStatus.FAILED, generation=2)]
    row = generation_metrics(batch, OBJ, evaluations=12, elapsed=3.5)
    assert row["evaluations"] == 12 and row["generation/index"] == 2 and row["generation/size"] == 3
    assert row["generation/ok_fraction"] == pytest.approx(2 / 3)
    assert row["generation/best/acc"] == 0.6 and row["generation/best/loss"] == 1.0
    assert row["generation/mean/acc"] == pytest.approx(0.4) and row["generation/mean/loss"] == pytest.approx(2.5)


def test_candidate_rows_align_with_columns() -> None:
    cols = candidate_columns(OBJ)
    ok = dict(zip(cols, candidate_row(entry(0, 0.5, 2.0), OBJ)))
    assert ok["uid"] == "u0" and ok["parents"] == "p1,p2" and ok["acc"] == 0.5 and ok["loss"] == 2.0 and ok["error"] == ""
    assert ok["plan_hash"] == entry(0).candidate.plan_hash
    bad = dict(zip(cols, candidate_row(entry(1, status=EvalStatus.FAILED), OBJ)))
    assert bad["acc"] is None and bad["status"] == "failed" and bad["error"] == "boom"


def test_run_id_file_round_trip_and_corruption(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert stored_run(rd) is None
    store_run(rd, "abc123", "proj", None)
    assert stored_run(rd) == {"id": "abc123", "project": "proj", "entity": None}
    (tmp_path / RUN_FILE).write_text("{not json")
    assert stored_run(rd) is None
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 8 and set(i) <= set(string.ascii_lowercase + string.digits) for i in ids)


class BrokenRun:
    id = "broken"

    def __init__(self) -> None:
        self.finished: list[int] = []

    def log(self, data: dict[str, Any]) -> None:
        raise ConnectionError("no route to host")

    def finish(self, exit_code: int = 0) -> None:
        self.finished.append(exit_code)


def test_a_failing_run_disables_the_tracker_without_raising(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config({
        "models": {"sources": ["/a", "/b"]}, "search_space": {"name": "global"}, "strategy": {"name": "random"},
        "fitness": {"name": "callable", "function": "x:y"}, "budget": {"evaluations": 1},
        "tracking": {"wandb": {"enabled": True}},
    })
    tracker = WandbTracker(config, RunDir(tmp_path), resumed=False)
    run = BrokenRun()
    tracker.run = run

    class Manager:
        objectives = OBJ

    tracker.on_evaluation(entry(0, 0.5, 1.0), None, Manager())  # type: ignore[arg-type]
    assert tracker.run is None and run.finished == [1]
    assert "W&B tracking failed (on_evaluation: ConnectionError: no route to host)" in capsys.readouterr().err
    tracker.on_finish(Manager(), "done")  # type: ignore[arg-type]  # a disabled tracker ignores later hooks
    assert run.finished == [1]
    assert TRACKERS.get("wandb") is WandbTracker
