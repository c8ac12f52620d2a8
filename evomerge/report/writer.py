"""``evomerge report RUN_DIR``: the run's plots as PNG files and ``report.md`` linking them.

Plots that do not apply are skipped and ``report.md`` says why (a single-objective run has no Pareto
front; a from-scratch run has no recipe coefficients).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from evomerge.report.coefficients import coefficients, read_source_infos
from evomerge.report.lineage import lineage_graph
from evomerge.report.plots import coefficients_figure, fitness_figure, lineage_figure, pareto_figure
from evomerge.report.run_data import RunData, load_run
from evomerge.report.series import pareto_front
from evomerge.report.summary import render

DPI = 110


@dataclass
class Report:
    out_dir: Path
    markdown: Path
    images: dict[str, Path] = field(default_factory=dict)
    """Caption → PNG file."""
    notes: list[str] = field(default_factory=list)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def write_report(run_path: str | Path, out_dir: str | Path | None = None, top_n: int = 10) -> Report:
    """Read the run directory at ``run_path`` and write the report into ``out_dir`` (default RUN_DIR/report)."""
    run = load_run(run_path)
    out = Path(out_dir) if out_dir is not None else run.run_dir.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, out / "report.md")
    entries = run.archive.entries
    if entries:
        report.images["Fitness over evaluations"] = _save(fitness_figure(entries, run.objectives), out / "fitness.png")
    else:
        report.notes.append("no evaluations recorded yet")
    if len(run.objectives) >= 2:
        front = pareto_front(entries, run.objectives)
        report.images["Pareto front"] = _save(pareto_figure(entries, front, run.objectives), out / "pareto.png")
    _best_plots(run, report)
    images = {caption: path.name for caption, path in report.images.items()}
    report.markdown.write_text(render(run, images, report.notes, top_n))
    return report


def _best_plots(run: RunData, report: Report) -> None:
    best = run.best()
    if best is None:
        report.notes.append("no candidate was scored successfully: no coefficient or lineage plot")
        return
    plan = best.candidate.plan
    if plan is None:
        report.notes.append("from-scratch run: candidates are weight vectors, so there are no recipe coefficients")
    else:
        tables, exact = coefficients(plan, read_source_infos(plan))
        if not exact:
            report.notes.append("the source models' headers could not be read, so the coefficient plot shows the "
                                "recipe's plain per-model numbers only (no per-layer values)")
        per_layer = any(t.per_layer for t in tables)
        caption = "Per-layer coefficients of the best" if per_layer else "Per-model weights of the best"
        report.images[caption] = _save(coefficients_figure(tables, f"{caption} ({best.candidate.uid})"),
                                       report.out_dir / "coefficients.png")
    graph = lineage_graph(run.archive.lineage(best.candidate.uid))
    by_uid = {e.candidate.uid: e for e in run.archive.entries}
    report.images["Lineage of the best"] = _save(lineage_figure(graph, by_uid, run.objectives[0]),
                                                report.out_dir / "lineage.png")
