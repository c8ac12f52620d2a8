"""What the W&B tracker logs, as plain dicts and rows (no wandb import, so it is testable on its own).

Two x-axes keep curves comparable across resumes: per-evaluation metrics (``eval/*``, ``best/*``) are
logged against ``evaluation``, the candidate's position in the archive plus one; per-generation metrics
(``generation/*``) and the refreshed tables against ``evaluations``, the budget's count of fresh results.
W&B's own ``_step`` restarts in a resumed offline session; these do not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.population.archive import Entry
from evomerge.population.run_dir import RunDir, atomic_write_bytes
from evomerge.report.series import is_scored
from evomerge.types import Objective

RUN_FILE = "wandb_run.json"
"""In the run directory: the W&B run id (and where it lives), so ``evomerge resume`` continues that run."""


def stored_run(run_dir: RunDir) -> dict[str, Any] | None:
    path = run_dir.path / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("id"), str) else None


def store_run(run_dir: RunDir, run_id: str, project: str, entity: str | None) -> Path:
    path = run_dir.path / RUN_FILE
    data = {"id": run_id, "project": project, "entity": entity}
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
    return path


def update_best(best: dict[str, float], entry: Entry, objectives: Sequence[Objective]) -> dict[str, float]:
    """Best value so far of each objective (in its own direction), updated in place with ``entry``."""
    for o in objectives:
        if is_scored(entry, o):
            value = float(entry.evaluation.objectives[o.name])
            if o.name not in best or o.signed(value) > o.signed(best[o.name]):
                best[o.name] = value
    return best


def evaluation_metrics(entry: Entry, objectives: Sequence[Objective], best: Mapping[str, float]) -> dict[str, Any]:
    """One evaluation's history row: its objectives, status, time, identity, and the best so far."""
    ev, cand = entry.evaluation, entry.candidate
    row: dict[str, Any] = {
        "evaluation": entry.index + 1,
        "eval/status": ev.status.value,
        "eval/ok": int(ev.ok),
        "eval/seconds": float(ev.seconds),
        "eval/uid": cand.uid,
        "eval/generation": cand.generation,
        "eval/cached": int(entry.cached_from is not None),
        "eval/fidelity": ev.fidelity,
    }
    if ev.ok:
        row.update({f"eval/{o.name}": float(ev.objectives[o.name]) for o in objectives if o.name in ev.objectives})
    row.update({f"best/{name}": value for name, value in best.items()})
    return row


def generation_metrics(batch: Sequence[Entry], objectives: Sequence[Objective], evaluations: int,
                       elapsed: float) -> dict[str, Any]:
    """One generation's summary: size, success rate, best and mean of each objective."""
    row: dict[str, Any] = {
        "evaluations": evaluations,
        "generation/index": max((e.candidate.generation for e in batch), default=0),
        "generation/size": len(batch),
        "generation/ok_fraction": sum(e.evaluation.ok for e in batch) / max(1, len(batch)),
        "generation/elapsed": float(elapsed),
    }
    for o in objectives:
        values = [float(e.evaluation.objectives[o.name]) for e in batch if is_scored(e, o)]
        if values:
            best = max(values, key=o.signed)
            row[f"generation/best/{o.name}"] = best
            row[f"generation/mean/{o.name}"] = float(np.mean(values))
    return row


def candidate_columns(objectives: Sequence[Objective]) -> list[str]:
    return ["uid", "strategy", "generation", "parents", "status", "fidelity", "cached_from", "seconds", "plan_hash",
            *(o.name for o in objectives), "error"]


def candidate_row(entry: Entry, objectives: Sequence[Objective]) -> list[Any]:
    """A row of the candidates table: identity, lineage, outcome (None where an objective is missing)."""
    ev, cand = entry.evaluation, entry.candidate
    scores = [float(ev.objectives[o.name]) if ev.ok and o.name in ev.objectives else None for o in objectives]
    return [cand.uid, cand.strategy, cand.generation, ",".join(cand.parents), ev.status.value, ev.fidelity,
            entry.cached_from or "", round(float(ev.seconds), 6), cand.plan_hash, *scores, ev.error or ""]


def pareto_columns(objectives: Sequence[Objective]) -> list[str]:
    return ["uid", "generation", *(o.name for o in objectives)]


def pareto_rows(front: Sequence[Entry], objectives: Sequence[Objective]) -> list[list[Any]]:
    return [[e.candidate.uid, e.candidate.generation, *(float(e.evaluation.objectives[o.name]) for o in objectives)]
            for e in front]
