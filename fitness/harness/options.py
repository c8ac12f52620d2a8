"""The ``lm_eval`` suite's config, checked against lm-eval's own ``simple_evaluate`` and ``HFLM`` signatures.

Every option of ``lm_eval.simple_evaluate`` is either a field here, with the same name and default (except
``bootstrap_iters``: 0, since standard errors are not needed to rank candidates, and ``batch_size``: 16), or
refused with the reason: mostly options that would make a suite reused across in-place weight changes return stale
results. ``hflm`` passes extra keyword arguments to ``HFLM``; those that only apply when lm-eval loads a
model from disk are refused, since the suite wraps the evaluator's resident model.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from evomerge.errors import ConfigError
from evomerge.types import Direction
from fitness.base import FitnessConfig
from fitness.options import reject_unknown_keys, suggestion

REFUSED_SIMPLE_EVALUATE: dict[str, str] = {
    "model": "the suite wraps the evaluator's resident model",
    "model_args": "the suite wraps the evaluator's resident model",
    "device": "the resident model's device is used",
    "use_cache": "lm-eval's response cache is keyed by request text only and would return the previous "
    "candidate's answers after an in-place weight change",
    "cache_requests": "requests are built in memory once per suite; lm-eval's on-disk request cache is keyed "
    "by task name only and goes stale when task data change",
    "rewrite_requests_cache": "the on-disk request cache is not used (see cache_requests)",
    "delete_requests_cache": "the on-disk request cache is not used (see cache_requests)",
    "log_samples": "always on: per-example scores come from the logged samples",
    "predict_only": "it computes no metric to optimise",
    "evaluation_tracker": "results are recorded in evomerge's run directory",
    "task_manager": "the suite builds it from 'tasks' and 'include_path'",
    "check_integrity": "it runs lm-eval's own test suite; run lm-eval directly for that",
    "verbosity": "deprecated in lm-eval; configure logging instead",
}

HFLM_LOADING_ONLY: frozenset[str] = frozenset(
    {
        "pretrained", "tokenizer", "revision", "subfolder", "device", "dtype", "trust_remote_code",
        "use_fast_tokenizer", "parallelize", "max_memory_per_gpu", "max_cpu_memory", "offload_folder",
        "tp_plan", "peft", "delta", "autogptq", "gptqmodel", "gguf_file", "kwargs", "self",
    }
)
"""``HFLM`` arguments that only matter when lm-eval loads the model itself (or are top-level fields)."""


def simple_evaluate_parameters() -> dict[str, inspect.Parameter]:
    from lm_eval.evaluator import simple_evaluate

    return dict(inspect.signature(simple_evaluate).parameters)


def hflm_parameters() -> dict[str, inspect.Parameter]:
    from lm_eval.models.huggingface import HFLM

    return dict(inspect.signature(HFLM.__init__).parameters)


class LmEvalConfig(FitnessConfig):
    """Options of the ``lm_eval`` suite; names shared with ``simple_evaluate`` mean the same there."""

    name: str = "lm_eval"
    tasks: list[str] = Field(min_length=1)
    """Task, group or tag names (bundled, from ``include_path``, or built in) or paths to task YAMLs."""
    include_path: list[str] = Field(default_factory=list)
    include_defaults: bool | None = None
    """Index lm-eval's built-in tasks: None means only when a task is not found locally (indexing ~15 s)."""
    split: str | None = None
    """Score this split instead of the task's own test/validation split."""
    allow_test_split: bool = False
    metric: str = "acc"
    filter: str = "none"
    aggregate: Literal["mean", "separate"] = "mean"
    """One objective, the mean over ``tasks`` (named ``objective``), or one per entry (``task/metric``)."""
    objective: str | None = None
    direction: Direction | None = None
    """Default: lm-eval's direction for ``metric``."""
    hflm: dict[str, Any] = Field(default_factory=dict)
    token_cache: bool = True
    """Tokenize each request once per suite instead of once per candidate (weight-independent)."""
    continuation_logits: bool = True
    """Apply the output head and log-softmax only at continuation positions (same log-probs up to BLAS
    rounding, see :mod:`fitness.harness.continuation_scoring`); false: lm-eval's own full-logits path."""
    quiet: bool = True
    """Silence lm-eval's INFO logging during calls (a search runs it thousands of times)."""

    # simple_evaluate options: same names and meaning; same defaults except bootstrap_iters (0) and
    # batch_size (16 rather than HFLM's 1: scores are the same, evaluation is faster)
    num_fewshot: int | None = Field(None, ge=0)
    batch_size: int | str = 16
    max_batch_size: int | None = 64
    limit: int | float | None = Field(None, gt=0)
    samples: dict[str, list[int]] | None = None
    bootstrap_iters: int = Field(0, ge=0)
    write_out: bool = False
    system_instruction: str | None = None
    apply_chat_template: bool | str = False
    fewshot_as_multiturn: bool = True
    gen_kwargs: str | dict[str, Any] | None = None
    random_seed: int | None = 0
    numpy_random_seed: int | None = 1234
    torch_random_seed: int | None = 1234
    fewshot_random_seed: int | None = 1234
    confirm_run_unsafe_code: bool = False
    metadata: dict[str, Any] | None = None

    @field_validator("tasks", "include_path", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @classmethod
    def check_keys(cls, data: dict[str, Any]) -> None:
        known = set(cls.model_fields)
        unknown = [key for key in data if key not in known]
        if not unknown:
            return
        upstream = set(simple_evaluate_parameters()) - known
        refused = dict(REFUSED_SIMPLE_EVALUATE)
        refused.update({k: "not supported by evomerge's lm_eval suite" for k in upstream if k not in refused})
        reject_unknown_keys(data, known, "lm_eval suite option", refused)

    @model_validator(mode="after")
    def _consistent(self) -> LmEvalConfig:
        if self.limit is not None and self.samples is not None:
            raise ValueError("'limit' and 'samples' exclude each other (as in lm-eval)")
        if isinstance(self.batch_size, str) and not self.batch_size.startswith("auto"):
            raise ValueError(f"batch_size must be an integer or 'auto[:N]', got {self.batch_size!r}")
        if self.hflm:
            check_hflm_options(self.hflm)
        return self

    @property
    def objective_name(self) -> str:
        return self.objective or self.metric

    def metric_direction(self) -> Direction:
        if self.direction is not None:
            return self.direction
        from lm_eval.api.registry import is_higher_better

        higher = is_higher_better(self.metric)
        if higher is None:
            raise ConfigError(f"lm-eval does not know whether {self.metric!r} is better high or low; set direction")
        return "maximize" if higher else "minimize"


def check_hflm_options(options: dict[str, Any]) -> None:
    """Refuse ``hflm`` keys that HFLM does not take or that only apply to loading a model."""
    params = hflm_parameters()
    usable = set(params) - HFLM_LOADING_ONLY - {"batch_size", "max_batch_size"}
    for key in options:
        if key in {"batch_size", "max_batch_size"}:
            raise ValueError(f"hflm option {key!r}: set it at the top level of the lm_eval suite")
        if key in params and key not in usable:
            raise ValueError(f"hflm option {key!r} only applies when lm-eval loads the model; it is not used here")
        if key not in usable:
            raise ValueError(f"unknown hflm option {key!r}{suggestion(key, usable)}; known: {', '.join(sorted(usable))}")
