"""``report.md``: what a run was, what it spent, what it found, and links to its plots.

Numbers are printed with :func:`fmt` (six significant digits) straight from the archive, so every value
in the summary can be checked against ``evaluations.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from evomerge.population.archive import Entry
from evomerge.report.run_data import RunData
from evomerge.report.series import pareto_front, status_counts
from evomerge.types import Objective

ARROW = {"maximize": "↑", "minimize": "↓"}


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _inline(section: Mapping[str, Any]) -> str:
    """A config section on one line: its name, then the other keys as compact JSON."""
    rest = {k: v for k, v in section.items() if k != "name"}
    return f"`{section.get('name', '-')}`" + (f" `{json.dumps(rest, separators=(',', ':'))}`" if rest else "")


def config_section(run: RunData) -> str:
    cfg = run.config
    models = cfg.models
    if models.from_scratch is not None:
        model_text = f"from scratch: `{models.from_scratch.factory}`, population {models.from_scratch.population}"
    else:
        model_text = f"{len(models.sources)} source(s)" + (f", base `{models.base}`" if models.base else "")
        if models.generate is not None:
            model_text += f", generated: `{models.generate.kind}`"
    objectives = ", ".join(f"{o.name} {ARROW[o.direction]}" for o in run.objectives)
    ev = cfg.evaluation
    rows = [
        ["seed", str(cfg.seed)],
        ["models", model_text],
        ["search space", _inline(cfg.search_space)],
        ["strategy", _inline(cfg.strategy)],
        ["fitness", f"{_inline({'name': cfg.fitness.get('name', '-')})}, objectives: {objectives}"],
        ["evaluation", f"{ev.mode}, batch {ev.batch_size or 'strategy default'}, cache {'on' if ev.cache else 'off'}"
                       + (", successive halving" if ev.multi_fidelity else "")],
        ["resources", f"{cfg.resources.pool} pool, {cfg.resources.actors} actor(s), device {cfg.resources.device}"],
    ]
    return "## Configuration\n\n" + _table(["", ""], rows)


def budget_section(run: RunData) -> str:
    budget = run.config.budget
    evals = f"{run.evaluations}" + (f" of {budget.evaluations}" if budget.evaluations else "")
    wall = f"{run.elapsed:.1f} s" + (f" of {budget.wall_time:g} s" if budget.wall_time else "")
    rows = [
        ["evaluations", evals],
        ["wall time", wall],
        ["cache hits (identical plans, not re-evaluated)", str(run.cache_hits)],
        ["lines in evaluations.jsonl", str(run.lines)],
    ]
    if budget.target is not None:
        rows.append(["target", fmt(budget.target)])
    counts = status_counts(run.archive.entries)
    return ("## Budget used\n\n" + _table(["", ""], rows) + "\n\n## Outcomes\n\n"
            + _table(["status", "candidates"], [[k, str(v)] for k, v in counts.items()]))


def entries_table(entries: Sequence[Entry], objectives: Sequence[Objective], ranked: bool = True) -> str:
    header = ["rank" if ranked else "#", "uid", "strategy", "generation", *(o.name for o in objectives), "seconds"]
    rows = [
        [str(i), f"`{e.candidate.uid}`", e.candidate.strategy or "-", str(e.candidate.generation),
         *(fmt(e.evaluation.objectives.get(o.name)) for o in objectives), f"{e.evaluation.seconds:.2f}"]
        for i, e in enumerate(entries)
    ]
    return _table(header, rows)


def recipe_section(best: Entry | None) -> str:
    if best is None:
        return "## Best recipe\n\nNo candidate was scored successfully."
    plan = best.candidate.plan
    scores = ", ".join(f"{k} = {fmt(v)}" for k, v in best.evaluation.objectives.items())
    head = f"## Best recipe\n\n`{best.candidate.uid}` ({scores})"
    if plan is None:
        return head + ": its genome is the weight vector itself; `evomerge export` writes it as a checkpoint."
    return f"{head}; `evomerge export` writes it as a checkpoint.\n\n```yaml\n{plan.to_yaml().rstrip()}\n```"


def render(run: RunData, images: Mapping[str, str], notes: Sequence[str] = (), top_n: int = 10) -> str:
    """The whole report; ``images`` maps a caption to a path relative to report.md."""
    status = run.status
    state = status.get("state", "new") + (f" ({status['reason']})" if status.get("reason") else "")
    top = run.top(top_n)
    parts = [
        f"# evomerge report: {run.config.name or run.run_dir.path.name}",
        f"Run directory: `{run.run_dir.path}`  \nState: {state}",
        config_section(run),
        budget_section(run),
        f"## Top {top_n}\n\n" + (entries_table(top, run.objectives) if top else "No scored candidate."),
    ]
    if len(run.objectives) >= 2:
        front = pareto_front(run.archive.entries, run.objectives)
        table = entries_table(front, run.objectives, ranked=False)
        parts.append(f"## Pareto front ({len(front)} candidates)\n\n{table}")
    parts.append(recipe_section(run.best()))
    if images:
        links = [f"### {caption}\n\n![{caption}]({path})" for caption, path in images.items()]
        parts.append("## Plots\n\n" + "\n\n".join(links))
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"
