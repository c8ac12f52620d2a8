"""Assemble a search from its config: sources, search space, objectives, strategy, pool, trackers, manager.

Everything that can be wrong with a config is checked here before any model is loaded (the space against
the sources' headers, the strategy's and fitness suite's options), so a typo costs a second, not a
cluster allocation. Plans refer to source models by absolute path, so a run directory's records, exports
and recipes mean the same thing from any working directory.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.config import SearchConfig, load_config, parse_config
from evomerge.distributed.evaluator import EvaluatorSpec
from evomerge.distributed.pool import EvaluatorPool
from evomerge.errors import ConfigError, RunStateError
from evomerge.io.checkpoint import Checkpoint, resolve_model_path
from evomerge.layout import ModelLayout
from evomerge.population.manager import PopulationManager
from evomerge.population.run_dir import RunDir
from evomerge.seeding import SeedTree
from evomerge.strategies.base import Strategy, get_strategy
from evomerge.tracking.base import Tracker
from evomerge.types import Objective
from evomerge.validation import load_yaml, validate_model
from search_spaces import build_space
from search_spaces.base import SearchSpace


@dataclass
class Sources:
    refs: list[str]
    """Absolute paths of the models the search mixes (empty when evolving from scratch)."""
    base: str | None
    layout: ModelLayout
    initial_vectors: list[np.ndarray] = field(default_factory=list)


def resolve_sources(config: SearchConfig, base_dir: Path) -> Sources:
    models = config.models
    if models.from_scratch is not None:
        return _from_scratch(config)
    refs = list(models.sources)
    base = models.base
    if models.generate is not None:
        from evomerge.zoo import generate_models

        generated = generate_models(models.generate, SeedTree(config.seed).child("zoo"))
        refs = [str(p) for p in generated.sources] + refs
        base = base or (str(generated.base) if generated.base else None)

    def absolute(ref: str, field_path: str) -> str:
        path = Path(ref).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_dir():
            raise ConfigError(f"model folder not found: {path}", field_path)
        return str(resolve_model_path(str(path)))

    refs = [absolute(r, f"models.sources.{i}") for i, r in enumerate(refs)]
    base = absolute(base, "models.base") if base else None
    if not refs:
        raise ConfigError("no source models", "models.sources")
    template = Checkpoint(base or refs[0], allow_pickle=models.allow_pickle)
    layout = ModelLayout.from_shapes({n: m.shape for n, m in template.meta.items()}, template.config)
    return Sources(refs, base, layout)


def _from_scratch(config: SearchConfig) -> Sources:
    from evomerge.models import build_factory_model

    fs = config.models.from_scratch
    assert fs is not None
    seeds = SeedTree(config.seed).child("from_scratch")
    vectors, shapes = [], {}
    for i in range(fs.population):
        model = build_factory_model(fs.factory, fs.kwargs, seeds.small_integer(f"init/{i}"))
        state = model.state_dict()
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        vectors.append(np.concatenate([v.detach().cpu().numpy().reshape(-1) for v in state.values()]).astype(np.float64))
    return Sources([], None, ModelLayout.from_shapes(shapes, {}), vectors)


def objectives_of(config: SearchConfig, base_dir: Path) -> list[Objective]:
    from fitness import build_suite

    return list(build_suite(config.fitness, SeedTree(config.seed).child("fitness"), base_dir).objectives())


def build_strategy(config: SearchConfig, space: SearchSpace, objectives: Sequence[Objective], run_dir: Path) -> Strategy:
    cls = get_strategy(str(config.strategy["name"]))
    strategy_cfg = validate_model(cls.Config, dict(config.strategy), prefix="strategy")
    return cls(space, objectives, SeedTree(config.seed), strategy_cfg, run_dir=str(run_dir))


def evaluator_spec(config: SearchConfig, sources: Sources, space: SearchSpace, base_dir: Path) -> EvaluatorSpec:
    return EvaluatorSpec(
        sources={ref: ref for ref in sources.refs} | ({sources.base: sources.base} if sources.base else {}),
        base=sources.base,
        fitness=dict(config.fitness),
        seed=config.seed,
        model_class=config.models.model_class,
        dtype=config.models.dtype,
        attn_implementation=config.models.attn_implementation,
        device=config.resources.device,
        base_dir=str(base_dir),
        allow_pickle=config.models.allow_pickle,
        from_scratch=config.models.from_scratch,
        space=space if config.models.from_scratch is not None else None,
        torch_threads=config.resources.torch_threads,
    )


def build_pool(config: SearchConfig, spec: EvaluatorSpec) -> EvaluatorPool:
    res = config.resources
    if res.pool == "ray":
        from evomerge.distributed.ray_pool import RayPool

        return RayPool(spec, res, timeout=config.evaluation.timeout, retries=config.evaluation.retries)
    from evomerge.distributed.evaluator import Evaluator
    from evomerge.distributed.pool import SequentialPool

    return SequentialPool(Evaluator(spec, gpus=res.gpus_per_actor), timeout=config.evaluation.timeout)


def build_trackers(config: SearchConfig, run_dir: RunDir, resumed: bool) -> list[Tracker]:
    trackers: list[Tracker] = []
    if config.tracking.console:
        from evomerge.tracking.console import ConsoleTracker

        trackers.append(ConsoleTracker())
    if config.tracking.wandb.enabled:
        from evomerge.tracking.wandb_tracker import WandbTracker

        trackers.append(WandbTracker(config, run_dir, resumed))
    return trackers


@dataclass
class Search:
    config: SearchConfig
    run_dir: RunDir
    base_dir: Path
    sources: Sources
    space: SearchSpace
    objectives: list[Objective]
    strategy: Strategy

    def manager(self, pool: EvaluatorPool, trackers: Sequence[Tracker] = ()) -> PopulationManager:
        return PopulationManager(
            self.strategy, pool, self.run_dir, self.objectives, self.config.budget, self.config.evaluation,
            trackers, keep_checkpoints=self.config.tracking.keep_checkpoints,
        )


def assemble(config: SearchConfig, run_dir: Path, base_dir: Path) -> Search:
    """Everything but the pool: validates the whole config against the sources (headers only)."""
    sources = resolve_sources(config, base_dir)
    space = build_space(config.search_space, sources.refs, sources.base, sources.layout,
                        initial_vectors=sources.initial_vectors or None)
    objectives = objectives_of(config, base_dir)
    if config.evaluation.multi_fidelity is not None and config.evaluation.mode != "generational":
        raise ConfigError("successive halving needs mode: generational", "evaluation.multi_fidelity")
    if config.evaluation.multi_fidelity is not None and config.strategy.get("name") == "m2n2":
        raise ConfigError("m2n2 shares fitness per example and needs every candidate scored on the same examples; "
                          "successive halving scores most on a subset only", "evaluation.multi_fidelity")
    strategy = build_strategy(config, space, objectives, run_dir)
    return Search(config, RunDir(run_dir), base_dir, sources, space, objectives, strategy)


def default_run_dir(config: SearchConfig, config_path: Path) -> Path:
    return Path("runs") / (config.name or config_path.stem)


def start(config_path: Path, run_dir: Path | None, overrides: list[str], overwrite: bool = False) -> tuple[Search, bool]:
    """Open a run directory for ``search``: a new run, or the continuation of an unfinished one."""
    config = load_config(config_path, overrides)
    run_path = (run_dir or default_run_dir(config, config_path)).resolve()
    rd = RunDir(run_path)
    if overwrite and run_path.exists():
        shutil.rmtree(run_path)
    resumed = False
    if rd.exists():
        stored = parse_config(load_yaml(rd.config_file), source=str(rd.config_file))
        if stored.content_hash() != config.content_hash():
            raise RunStateError(f"{run_path} holds a different search; use another --run-dir, or --overwrite to replace it")
        if rd.status().get("state") == "finished" and stored.budget == config.budget:
            raise RunStateError(f"{run_path}: this search is finished ({rd.status().get('reason')}); raise the budget "
                                "with --set budget.evaluations=N to continue it, or export it")
        resumed = True
    base_dir = Path(config_path).resolve().parent
    search = assemble(config, run_path, base_dir)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.config_file.write_text(config.to_yaml())
    rd.record_base_dir(base_dir)
    return search, resumed


def reopen(run_path: Path, overrides: list[str]) -> Search:
    """Open an existing run directory for ``resume``."""
    rd = RunDir(run_path)
    if not rd.exists():
        raise RunStateError(f"{run_path}: not a run directory (no config.yaml)")
    stored_raw: Any = load_yaml(rd.config_file)
    config = parse_config(stored_raw, overrides, source=str(rd.config_file))
    stored = parse_config(stored_raw)
    if config.content_hash() != stored.content_hash():
        raise ConfigError("resume can only change budget.* and tracking.* (the search itself is fixed)", "--set")
    if rd.status().get("state") == "finished" and stored.budget == config.budget:
        raise RunStateError(f"{run_path}: this search is finished ({rd.status().get('reason')}); raise the budget "
                            "with --set budget.evaluations=N to continue it")
    search = assemble(config, run_path.resolve(), rd.base_dir)
    rd.config_file.write_text(config.to_yaml())
    return search


def run(search: Search, resumed: bool) -> dict[str, Any]:
    """Run the search to its end (or Ctrl-C), then mark the run directory."""
    rd = search.run_dir
    rd.acquire()
    try:
        rd.set_status(state="running")
        spec = evaluator_spec(search.config, search.sources, search.space, search.base_dir)
        with build_pool(search.config, spec) as pool:
            trackers = build_trackers(search.config, rd, resumed)
            try:
                manager = search.manager(pool, trackers)
                reason = manager.run()
            finally:
                for tracker in trackers:
                    with contextlib.suppress(Exception):
                        tracker.close()
        summary = manager.summary()
        state = "stopped" if reason == "interrupted" else "finished"
        rd.set_status(state=state, reason=reason, evaluations=summary["evaluations"], best_uid=summary["best_uid"])
        if state == "finished" and search.config.export.on_finish and summary["best_uid"]:
            from evomerge.export import export_run

            out = search.config.export.out_dir or str(rd.path / "best")
            summary["exported"] = str(export_run(rd.path, Path(out), overwrite=True))
        return summary
    finally:
        rd.release()
