"""Objectives and per-example scores from one lm-eval ``evaluate`` result.

The task-level value of ``metric`` (under ``filter``) comes from ``results[task]["metric,filter"]``; a
configured entry that is a group or tag scores the unweighted mean of its leaf tasks (lm-eval's own group
aggregate may weight by size). Per-example scores come from the logged samples, sorted by ``doc_id``,
negated for metrics where lower is better so larger is always better; tasks whose per-sample metric is not
a number (BLEU's reference/prediction pairs, say) give no per-example vector.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from fitness.base import FitnessResult
from fitness.harness.options import LmEvalConfig
from fitness.harness.task_loading import TaskEntry


def task_value(results: dict[str, Any], task: str, key: str) -> float:
    reported = results["results"].get(task, {})
    if key not in reported:
        known = sorted(k for k in reported if "," in k and "_stderr" not in k)
        raise ValueError(f"lm-eval task {task!r} reports no {key!r}; it reports: {', '.join(known) or 'nothing'}")
    return float(reported[key])


def logged_rows(results: dict[str, Any], task: str, filter_name: str) -> list[dict[str, Any]]:
    rows = [s for s in results.get("samples", {}).get(task, []) if s.get("filter") == filter_name]
    return sorted(rows, key=lambda s: int(s["doc_id"]))


def task_per_example(results: dict[str, Any], task: str, metric: str, filter_name: str) -> np.ndarray | None:
    values = [s.get(metric) for s in logged_rows(results, task, filter_name)]
    if not values or not all(isinstance(v, numbers.Real) for v in values):
        return None
    return np.asarray(values, dtype=np.float64)


def _numeric_metrics(results: dict[str, Any], task: str) -> dict[str, float]:
    out = {}
    for key, value in results["results"].get(task, {}).items():
        if "," in key and "_stderr" not in key and isinstance(value, numbers.Real):
            out[f"{task}/{key}"] = float(value)
    return out


def scores(
    results: dict[str, Any], entries: Sequence[TaskEntry], cfg: LmEvalConfig, fidelity: str
) -> FitnessResult:
    """The suite's :class:`FitnessResult` for one evaluation."""
    key = f"{cfg.metric},{cfg.filter}"
    sign = 1.0 if cfg.metric_direction() == "maximize" else -1.0
    entry_values: dict[str, float] = {}
    pieces: list[np.ndarray] = []
    per_example_ok = True
    metrics: dict[str, Any] = {"fidelity": fidelity}
    for entry in entries:
        leaf_values = []
        for task in entry.tasks:
            leaf_values.append(task_value(results, task, key))
            metrics.update(_numeric_metrics(results, task))
            per_task = task_per_example(results, task, cfg.metric, cfg.filter)
            metrics[f"{task}/n_examples"] = len(logged_rows(results, task, cfg.filter))
            if per_task is None:
                per_example_ok = False
            else:
                pieces.append(sign * per_task)
        entry_values[entry.label] = float(np.mean(leaf_values))
    if cfg.aggregate == "mean":
        objectives = {cfg.objective_name: float(np.mean(list(entry_values.values())))}
    else:
        objectives = {f"{label}/{cfg.metric}": value for label, value in entry_values.items()}
    per_example = np.concatenate(pieces) if per_example_ok and pieces else None
    return FitnessResult(objectives, per_example, metrics)
