"""``lm_eval``: real lm-evaluation-harness tasks on the evaluator's resident model, reused across candidates.

What is built once: the task objects (data loaded, configs overridden as ``simple_evaluate`` would) at
:meth:`prepare`, and one ``HFLM`` wrapping the resident model and tokenizer at the first call. Each call
then runs ``lm_eval.evaluator.evaluate`` on them, which is what ``simple_evaluate`` does after its set-up,
so scores equal ``simple_evaluate``'s on the same model, to the digit.

Reuse after in-place weight changes is safe because nothing lm-eval keeps depends on the weights:

* ``HFLM`` holds the model object itself (so it sees new weights); its logits cache lives within one
  ``loglikelihood`` call, and its auto batch sizes are sizes, not results. The suite's own addition, a
  cache of tokenized requests (:mod:`fitness.harness.cached_lm`), depends on the tokenizer only.
* request instances (and their responses) are rebuilt by ``Task.build_all_requests`` on every call; the
  on-disk request cache and the ``CachingLM`` response cache, both keyed without the weights, are
  refused options (see :mod:`fitness.harness.options`).
* the few-shot sampler's RNG advances as contexts are built, so it is re-seeded before every call, as are
  Python's, NumPy's and torch's global RNGs (restored afterwards), exactly as ``simple_evaluate`` seeds them.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from evomerge.errors import ConfigError
from evomerge.types import Objective
from fitness.base import FitnessResult, FitnessSuite
from fitness.harness.options import LmEvalConfig
from fitness.harness.scores import scores
from fitness.harness.suite_lm import suite_hflm
from fitness.harness.task_loading import TaskEntry, entry_label, load_entries
from fitness.registry import register_suite


class IndexList(list[int]):
    """Sorted doc indices for lm-eval's ``samples``, with O(1) membership (lm-eval tests ``i in samples``)."""

    def __init__(self, items: Any) -> None:
        super().__init__(sorted(int(i) for i in items))
        self._members = frozenset(self)

    def __contains__(self, item: object) -> bool:
        return item in self._members


@contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """Give the caller back Python's, NumPy's and torch's global RNG states as they were."""
    import numpy as np
    import torch

    saved = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.random.set_rng_state(saved[2])


def seed_globals(cfg: LmEvalConfig) -> None:
    """Seed the global RNGs exactly as ``simple_evaluate`` does (a None seed leaves that RNG alone)."""
    import numpy as np
    import torch

    if cfg.random_seed is not None:
        random.seed(cfg.random_seed)
    if cfg.numpy_random_seed is not None:
        np.random.seed(cfg.numpy_random_seed)
    if cfg.torch_random_seed is not None:
        torch.manual_seed(cfg.torch_random_seed)


@contextmanager
def lm_eval_log_level(quiet: bool, quiet_level: int = logging.WARNING) -> Iterator[None]:
    logger = logging.getLogger("lm_eval")
    level = logger.level
    if quiet:
        logger.setLevel(quiet_level)
    try:
        yield
    finally:
        logger.setLevel(level)


def apply_task_overrides(task: Any, cfg: LmEvalConfig) -> None:
    """The per-task config changes ``simple_evaluate`` makes before evaluating (generation, few-shot)."""
    if cfg.gen_kwargs and task.get_config("output_type") == "generate_until":
        from lm_eval.utils import simple_parse_args_string

        gen = simple_parse_args_string(cfg.gen_kwargs) if isinstance(cfg.gen_kwargs, str) else cfg.gen_kwargs
        task.set_config(key="generation_kwargs", value=gen, update=True)
    if cfg.num_fewshot is not None:
        if task.get_config("num_fewshot") != 0:  # lm-eval keeps an explicit 0 in a task's config
            task.set_config(key="num_fewshot", value=cfg.num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)


@register_suite
class LmEvalSuite(FitnessSuite):
    name = "lm_eval"
    Config = LmEvalConfig
    config: LmEvalConfig

    def __init__(self, config: LmEvalConfig, seed_tree: Any = None, base_dir: Any = None) -> None:
        super().__init__(config, seed_tree, base_dir)
        self.entries: list[TaskEntry] = []
        self._lm: Any = None
        self._lm_for: tuple[Any, Any] | None = None

    def objectives(self) -> list[Objective]:
        direction = self.config.metric_direction()
        if self.config.aggregate == "mean":
            return [Objective(self.config.objective_name, direction)]
        return [Objective(f"{entry_label(t)}/{self.config.metric}", direction) for t in self.config.tasks]

    @property
    def tasks(self) -> dict[str, Any]:
        return {name: task for entry in self.entries for name, task in entry.tasks.items()}

    def _prepare(self) -> None:
        if self.entries:
            return
        from lm_eval.evaluator import evaluate

        accepted = inspect.signature(evaluate).parameters
        missing = [key for key in self._evaluate_kwargs(None) if key not in accepted]
        if missing:
            raise ConfigError(f"the installed lm-eval's evaluate() takes no {', '.join(missing)}; lm-eval 0.4.13 does")
        with lm_eval_log_level(self.config.quiet):
            self.entries = load_entries(self.config, self.base_dir)
        for name, task in self.tasks.items():
            apply_task_overrides(task, self.config)
            self._check_metric(name, task)

    def _check_metric(self, name: str, task: Any) -> None:
        cfg = self.config
        reported = task.higher_is_better()
        if cfg.metric not in reported:
            raise ConfigError(f"lm-eval task {name!r} has no metric {cfg.metric!r}; its metrics: {', '.join(reported)}")
        filters = [f.name for f in getattr(task, "_filters", [])]
        if filters and cfg.filter not in filters:
            raise ConfigError(f"lm-eval task {name!r} has no filter {cfg.filter!r}; its filters: {', '.join(filters)}")
        higher = reported[cfg.metric]
        if higher is not None and (higher != (cfg.metric_direction() == "maximize")):
            raise ConfigError(
                f"lm-eval task {name!r} says {cfg.metric!r} is better {'high' if higher else 'low'}, "
                f"but the suite's direction is {cfg.metric_direction()}"
            )

    def lm(self, model: Any, tokenizer: Any) -> Any:
        """The HFLM for this model and tokenizer, built once and rebuilt only if either object changes."""
        if self._lm is not None and self._lm_for is not None:
            same = self._lm_for[0] is model and self._lm_for[1] is tokenizer
            if same and self._lm.device == model.device:
                return self._lm
        # HFLM warns that an in-memory model may ignore loading options: expected here, so not shown when quiet
        with lm_eval_log_level(self.config.quiet, logging.ERROR):
            self._lm = suite_hflm(
                token_cache=self.config.token_cache,
                continuation_logits=self.config.continuation_logits,
                pretrained=model,
                tokenizer=tokenizer,
                batch_size=self.config.batch_size,
                max_batch_size=self.config.max_batch_size,
                **self.config.hflm,
            )
        self._lm_for = (model, tokenizer)
        return self._lm

    def samples(self) -> dict[str, list[int]] | None:
        """Doc indices per task for lm-eval's ``samples`` (None: all docs, or the first ``limit``)."""
        cfg = self.config
        if self.fidelity is None and cfg.samples is None:
            return None
        from lm_eval.evaluator_utils import get_sample_size

        chosen: dict[str, list[int]] = {}
        for name, task in self.tasks.items():
            if cfg.samples is not None and name in cfg.samples:
                universe = sorted(set(cfg.samples[name]))
            else:
                n_docs = len(task.eval_docs)
                universe = list(range(min(n_docs, get_sample_size(task, cfg.limit) or n_docs)))
            chosen[name] = IndexList(universe[i] for i in self.subset(name, len(universe)))
        return chosen

    def __call__(self, model: Any, tokenizer: Any = None) -> FitnessResult:
        if tokenizer is None:
            raise ConfigError("the lm_eval suite needs the model's tokenizer")
        was_training = bool(getattr(model, "training", False))
        try:
            with preserved_global_rngs(), lm_eval_log_level(self.config.quiet):
                results = self._evaluate(model, tokenizer)
        finally:
            if was_training:
                model.train()
        return scores(results, self.entries, self.config, self.fidelity_label())

    def _evaluate_kwargs(self, samples: dict[str, list[int]] | None) -> dict[str, Any]:
        """Keyword arguments of ``lm_eval.evaluator.evaluate``, as ``simple_evaluate`` would pass them."""
        cfg = self.config
        return {
            "limit": cfg.limit if samples is None else None,
            "samples": samples,
            "bootstrap_iters": cfg.bootstrap_iters,
            "write_out": cfg.write_out,
            "log_samples": True,
            "system_instruction": cfg.system_instruction,
            "apply_chat_template": cfg.apply_chat_template,
            "fewshot_as_multiturn": cfg.fewshot_as_multiturn,
            "confirm_run_unsafe_code": cfg.confirm_run_unsafe_code,
        }

    def _evaluate(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        from lm_eval.evaluator import evaluate

        cfg = self.config
        self.ensure_prepared(model)
        lm = self.lm(model, tokenizer)
        samples = self.samples()
        model.eval()
        seed_globals(cfg)
        for task in self.tasks.values():
            task.set_fewshot_seed(seed=cfg.fewshot_random_seed)
        task_dict = {"tasks": self.tasks, "groups": {}, "group_map": {}}
        results = evaluate(lm=lm, task_dict=task_dict, **self._evaluate_kwargs(samples))
        if results is None:
            raise RuntimeError("lm-eval returned no results (non-zero rank)")
        return dict(results)
