"""Weights & Biases view of a search: live curves, candidate and Pareto tables, the best recipe.

The run directory stays the source of truth; W&B is a window on it, so nothing here may stop a search:
every hook is guarded, and a failure (no network, a full disk, an API change) prints one warning and turns
the tracker off. W&B's files live under ``<run dir>/wandb`` and the W&B run id is kept in
``<run dir>/wandb_run.json``, so ``evomerge resume`` continues the same W&B run. ``WANDB_MODE=offline``
(or ``tracking.wandb.mode: offline``) writes everything locally for a later ``wandb sync``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import secrets
import string
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import wandb

from evomerge.report.coefficients import coefficients, read_source_infos
from evomerge.report.plots import coefficients_figure
from evomerge.report.series import pareto_front
from evomerge.tracking.base import TRACKERS, Tracker
from evomerge.tracking.wandb_views import (
    candidate_columns,
    candidate_row,
    evaluation_metrics,
    generation_metrics,
    pareto_columns,
    pareto_rows,
    store_run,
    stored_run,
    update_best,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from evomerge.config import SearchConfig
    from evomerge.merge.planner import SourceInfo
    from evomerge.population.archive import Archive, Entry
    from evomerge.population.manager import PopulationManager
    from evomerge.population.run_dir import RunDir
    from evomerge.types import Candidate

F = TypeVar("F", bound=Callable[..., None])


def guarded(hook: F) -> F:
    """Run a hook only while the W&B run is up; an exception disables the tracker instead of escaping."""

    @functools.wraps(hook)
    def wrapper(self: WandbTracker, *args: Any) -> None:
        if self.run is None and hook.__name__ != "on_start":
            return
        try:
            hook(self, *args)
        except Exception as exc:
            self.disable(f"{hook.__name__}: {type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def new_run_id(length: int = 8) -> str:
    """A fresh W&B run id: an identifier, not search randomness, so it does not come from the run's seed
    (two runs with one seed must not share a W&B run)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def figure_image(fig: Figure) -> wandb.Image:
    """A matplotlib figure as a W&B image (rendered here: wandb's own conversion wants pyplot)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    return wandb.Image(Image.open(buf))


class WandbTracker(Tracker):
    """Logs each evaluation and generation as it happens, and tables, plots and the recipe as they stand."""

    name = "wandb"

    def __init__(self, config: SearchConfig, run_dir: RunDir, resumed: bool) -> None:
        self.config = config
        self.settings = config.tracking.wandb
        self.run_dir = run_dir
        self.resumed = resumed
        self.run: Any = None
        self.best: dict[str, float] = {}
        self.generations = 0
        self._views_at: int | None = None
        """``evaluations`` when the views were last logged (the end of a search need not repeat them)."""
        self._infos: dict[str, SourceInfo] | None = None
        self._infos_read = False

    # ------------------------------------------------------------------ lifecycle
    def disable(self, why: str) -> None:
        print(f"warning: W&B tracking failed ({why}); the search goes on without it", file=sys.stderr)
        run, self.run = self.run, None
        if run is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to save
                run.finish(exit_code=1)

    def _run_id(self) -> str:
        stored = stored_run(self.run_dir) if self.resumed else None
        run_id = stored["id"] if stored else new_run_id()
        store_run(self.run_dir, run_id, self.settings.project, self.settings.entity)
        return str(run_id)

    @guarded
    def on_start(self, manager: PopulationManager) -> None:
        s = self.settings
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=s.project, entity=s.entity, mode=s.mode, id=self._run_id(), resume="allow",
            name=s.name or self.config.name or self.run_dir.path.name, tags=list(s.tags) or None,
            dir=str(self.run_dir.path), job_type="search", settings=wandb.Settings(console="off"),
        )
        if self.run.disabled:  # WANDB_MODE=disabled: every call would be a no-op (artifacts would still stage files)
            self.run = None
            return
        self.run.config.update({**self.config.model_dump(mode="json"), "run_dir": str(self.run_dir.path)},
                               allow_val_change=True)
        self._define_metrics(manager)
        for entry in manager.archive:  # a resumed search: best-so-far continues from the records
            update_best(self.best, entry, manager.objectives)

    def _define_metrics(self, manager: PopulationManager) -> None:
        run = self.run
        run.define_metric("evaluation")
        run.define_metric("evaluations")
        for prefix in ("eval/*", "best/*"):
            run.define_metric(prefix, step_metric="evaluation")
        for prefix in ("generation/*", "views/*"):
            run.define_metric(prefix, step_metric="evaluations")
        for o in manager.objectives:
            best = "max" if o.direction == "maximize" else "min"
            run.define_metric(f"eval/{o.name}", step_metric="evaluation", summary=best)

    # ------------------------------------------------------------------ hooks
    @guarded
    def on_evaluation(self, entry: Entry, archive: Archive, manager: PopulationManager) -> None:
        update_best(self.best, entry, manager.objectives)
        self.run.log(evaluation_metrics(entry, manager.objectives, self.best))

    @guarded
    def on_generation(self, manager: PopulationManager, batch: Sequence[Candidate]) -> None:
        entries = [e for c in batch if (e := manager.archive.get(c.uid)) is not None]
        self.run.log(generation_metrics(entries, manager.objectives, manager.state.evaluations, manager.elapsed))
        self.generations += 1
        every = self.settings.tables_every
        if every and self.generations % every == 0:
            self._log_views(manager)

    @guarded
    def on_finish(self, manager: PopulationManager, reason: str) -> None:
        self._log_views(manager)
        best = manager.archive.best()
        summary: dict[str, Any] = {
            "stop_reason": reason,
            "evaluations": manager.state.evaluations,
            "statuses": manager.archive.counts(),
            "elapsed": manager.elapsed,
        }
        if best is not None:
            summary["best_uid"] = best.candidate.uid  # best on the first objective, as `evomerge export` ranks
            summary.update({f"best_candidate/{k}": float(v) for k, v in best.evaluation.objectives.items()})
            self._log_recipe(best, manager)
        self.run.summary.update(summary)
        run, self.run = self.run, None
        run.finish()

    def close(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            try:
                run.finish()
            except Exception as exc:
                print(f"warning: W&B run did not close cleanly: {exc}", file=sys.stderr)

    # ------------------------------------------------------------------ views
    def _log_views(self, manager: PopulationManager) -> None:
        """Candidates table, Pareto front, and the best candidate's coefficient heatmap, as of now."""
        if self._views_at == manager.state.evaluations:
            return
        self._views_at = manager.state.evaluations
        objectives = manager.objectives
        archive = manager.archive
        views: dict[str, Any] = {
            "evaluations": manager.state.evaluations,
            "views/candidates": wandb.Table(columns=[*candidate_columns(objectives)],
                                            data=[candidate_row(e, objectives) for e in archive]),
        }
        if len(objectives) >= 2:
            rows = pareto_rows(pareto_front(archive.entries, objectives), objectives)
            front = wandb.Table(columns=[*pareto_columns(objectives)], data=rows)
            views["views/pareto_front"] = front
            if len(objectives) == 2:
                x, y = objectives[0].name, objectives[1].name
                views["views/pareto_scatter"] = wandb.plot.scatter(front, x, y, title=f"Pareto front: {x} vs {y}")
        best = archive.best()
        if best is not None and best.candidate.plan is not None:
            views["views/best_coefficients"] = figure_image(self._coefficients_figure(best))
        self.run.log(views)

    def _coefficients_figure(self, best: Entry) -> Figure:
        plan = best.candidate.plan
        assert plan is not None
        if not self._infos_read:  # every plan of a run mixes the same sources: read their headers once
            self._infos, self._infos_read = read_source_infos(plan), True
        tables, _ = coefficients(plan, self._infos)
        return coefficients_figure(tables, f"coefficients of the best ({best.candidate.uid})")

    def _log_recipe(self, best: Entry, manager: PopulationManager) -> None:
        plan = best.candidate.plan
        if plan is None:  # from-scratch runs: the genome is the weight vector; `evomerge export` writes it
            return
        artifact = wandb.Artifact(
            f"best-recipe-{self.run.id}", type="merge-recipe",
            description=f"evomerge recipe of the best candidate ({best.candidate.uid}) of this search",
            metadata={"uid": best.candidate.uid, "plan_hash": best.candidate.plan_hash,
                      "objectives": dict(best.evaluation.objectives), "evaluations": manager.state.evaluations},
        )
        with artifact.new_file("recipe.yaml") as fh:
            fh.write(plan.to_yaml())
        self.run.log_artifact(artifact, aliases=["best", "latest"])


TRACKERS.register("wandb", WandbTracker)
