"""Run a suite on a candidate without letting its failures escape.

A candidate whose merge produces garbage (NaN weights, say) or a suite that crashes on it must not stop a
search that has run for hours: the evaluator records a failed :class:`~evomerge.types.Evaluation` with the
error text and moves on. Only interrupts (``KeyboardInterrupt``, ``SystemExit``) propagate.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import Any

import numpy as np

from evomerge.types import EvalStatus, Evaluation
from fitness.base import FitnessResult, FitnessSuite


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _problem(suite: FitnessSuite, result: object) -> str | None:
    """Why ``result`` is not a usable score for ``suite`` (None when it is)."""
    if not isinstance(result, FitnessResult):
        return f"suite {suite.label!r} returned {type(result).__name__}, not a FitnessResult"
    expected = [o.name for o in suite.objectives()]
    missing = [name for name in expected if name not in result.objectives]
    if missing:
        return f"suite {suite.label!r} returned no value for objective(s): {', '.join(missing)}"
    bad = [name for name in expected if not math.isfinite(result.objectives[name])]
    if bad:
        return f"non-finite objective(s): {', '.join(f'{n}={result.objectives[n]}' for n in bad)}"
    if result.per_example is not None and not bool(np.all(np.isfinite(result.per_example))):
        count = int(np.sum(~np.isfinite(result.per_example)))
        return f"{count} non-finite per-example score(s)"
    return None


def evaluate_safely(
    suite: FitnessSuite,
    model: Any,
    tokenizer: Any,
    uid: str,
    *,
    evaluator: str | None = None,
    plan_hash: str | None = None,
) -> Evaluation:
    """Score ``model`` with ``suite``; exceptions and NaN/inf scores become a FAILED evaluation."""
    start = time.perf_counter()
    common: dict[str, Any] = {"evaluator": evaluator, "plan_hash": plan_hash, "fidelity": suite.fidelity_label()}
    try:
        result = suite(model, tokenizer)
    except Exception as exc:
        seconds = time.perf_counter() - start
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-8))
        return Evaluation.failure(uid, _error_text(exc), seconds=seconds, metrics={"traceback": tb}, **common)
    seconds = time.perf_counter() - start
    problem = _problem(suite, result)
    if problem is not None:
        metrics = result.metrics if isinstance(result, FitnessResult) else {}
        return Evaluation.failure(uid, problem, seconds=seconds, metrics=dict(metrics), **common)
    assert isinstance(result, FitnessResult)
    names = [o.name for o in suite.objectives()]
    return Evaluation(
        uid=uid,
        status=EvalStatus.OK,
        objectives={name: result.objectives[name] for name in names},
        per_example=result.per_example,
        metrics=dict(result.metrics),
        seconds=seconds,
        **common,
    )
