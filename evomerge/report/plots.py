"""Matplotlib figures of a run: fitness over evaluations, Pareto front, coefficients, lineage.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state, no
display backend), so ``evomerge report`` saves them as PNG and the W&B tracker logs the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from evomerge.population.archive import Entry
from evomerge.report.coefficients import CoefficientTable
from evomerge.report.lineage import LineageGraph
from evomerge.report.series import (
    fitness_series,
    objective_matrix,
    running_best,
    scored_entries,
    unscored_positions,
)
from evomerge.types import Objective

MAX_PANELS = 6


def _axes_grid(n: int, width: float = 6.0, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes: list[Axes] = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def fitness_figure(entries: Sequence[Entry], objectives: Sequence[Objective]) -> Figure:
    """Each objective against the evaluation number: points and best-so-far per strategy, failures as a rug."""
    shown = list(objectives)[:MAX_PANELS]
    fig, axes = _axes_grid(len(shown))
    failed = unscored_positions(entries)
    for ax, objective in zip(axes, shown):
        all_series = fitness_series(entries, objective)
        for i, series in enumerate(all_series):
            color = f"C{i}"
            ax.scatter(series.x, series.y, s=12, alpha=0.45, color=color, label=f"{series.strategy}")
            ax.step(series.x, series.best, where="post", color=color, lw=1.8, label=f"{series.strategy} best so far")
        if len(all_series) > 1:
            order = np.argsort(np.concatenate([s.x for s in all_series]), kind="stable")
            xs = np.concatenate([s.x for s in all_series])[order]
            ys = np.concatenate([s.y for s in all_series])[order]
            ax.step(xs, running_best(ys, objective), where="post", color="black", lw=1.2, ls="--", label="best so far")
        if failed.size:
            ax.plot(failed, np.zeros_like(failed), "|", color="red", ms=10, transform=ax.get_xaxis_transform(),
                    label=f"failed ({failed.size})")
        ax.set_xlabel("evaluation")
        ax.set_ylabel(f"{objective.name} ({objective.direction})")
        ax.set_title(f"{objective.name} over evaluations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def pareto_figure(entries: Sequence[Entry], front: Sequence[Entry], objectives: Sequence[Objective]) -> Figure:
    """Every scored candidate and the non-dominated ones, for each pair of objectives (the first few)."""
    pairs = list(combinations(range(len(objectives)), 2))[:MAX_PANELS]
    fig, axes = _axes_grid(len(pairs), width=5.0, height=4.5)
    everything = objective_matrix(scored_entries(entries, objectives), objectives)
    points = objective_matrix(front, objectives)
    for ax, (i, j) in zip(axes, pairs):
        if everything.size:
            ax.scatter(everything[:, i], everything[:, j], s=10, color="0.7", label="evaluated")
        if points.size:
            order = np.argsort(points[:, i])
            ax.plot(points[order, i], points[order, j], "o-", color="C3", ms=5, lw=1,
                    label=f"Pareto front ({len(front)})")
        ax.set_xlabel(f"{objectives[i].name} ({objectives[i].direction})")
        ax.set_ylabel(f"{objectives[j].name} ({objectives[j].direction})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Pareto front")
    return fig


def coefficients_figure(tables: Sequence[CoefficientTable], title: str) -> Figure:
    """Heatmaps (model × depth) when some value varies over depth, grouped bars of per-model values otherwise."""
    tables = list(tables)[:MAX_PANELS]
    if not tables:
        fig = Figure(figsize=(6, 2))
        fig.text(0.5, 0.5, "the recipe sets no numeric parameters", ha="center", va="center")
        return fig
    if any(t.per_layer for t in tables):
        return _heatmaps(tables, title)
    return _bars(tables, title)


def _heatmaps(tables: Sequence[CoefficientTable], title: str) -> Figure:
    width = max(6.0, 0.35 * max(len(t.columns) for t in tables) + 3.0)
    height = sum(max(1.6, 0.32 * len(t.rows) + 1.2) for t in tables)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(len(tables), 1, squeeze=False).ravel()
    for ax, table in zip(axes, tables):
        image = ax.imshow(np.ma.masked_invalid(table.values), aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(table.rows)), table.rows, fontsize="small")
        step = max(1, len(table.columns) // 32)
        ticks = list(range(0, len(table.columns), step))
        ax.set_xticks(ticks, [table.columns[k] for k in ticks], fontsize="small")
        ax.set_xlabel("layer")
        ax.set_title(table.parameter)
        fig.colorbar(image, ax=ax, fraction=0.04)
    fig.suptitle(title)
    return fig


def _bars(tables: Sequence[CoefficientTable], title: str) -> Figure:
    fig, axes = _axes_grid(len(tables), width=5.0, height=3.8)
    for ax, table in zip(axes, tables):
        values = np.fmax.reduce(table.values, axis=1)  # constant along depth: any defined value
        ax.bar(range(len(table.rows)), values, color=[f"C{k}" for k in range(len(table.rows))])
        ax.set_xticks(range(len(table.rows)), table.rows, rotation=30, ha="right", fontsize="small")
        ax.set_title(table.parameter)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return fig


def lineage_figure(graph: LineageGraph, entries: dict[str, Entry], objective: Objective) -> Figure:
    """Ancestors as a layered graph, coloured by the first objective; the candidate itself is starred."""
    n_layers = 1 + int(max((x for x, _ in graph.position.values()), default=0))
    fig = Figure(figsize=(max(6.0, 1.6 * n_layers + 2), 5.0), layout="constrained")
    ax = fig.subplots()
    for parent, child in graph.edges:
        (x0, y0), (x1, y1) = graph.position[parent], graph.position[child]
        bend = 0.0 if x1 - x0 <= 1 else 0.3  # long edges arc around the nodes they pass
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "0.55", "lw": 0.8,
                                                         "connectionstyle": f"arc3,rad={bend}", "shrinkB": 6})
    scored = [u for u in graph.nodes if entries[u].evaluation.ok and objective.name in entries[u].evaluation.objectives]
    unscored = [u for u in graph.nodes if u not in scored]
    if scored:
        xy = np.array([graph.position[u] for u in scored])
        values = [float(entries[u].evaluation.objectives[objective.name]) for u in scored]
        points = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap="viridis", s=80, zorder=3, edgecolors="k",
                            linewidths=0.5)
        fig.colorbar(points, ax=ax, label=objective.name)
    if unscored:
        xy = np.array([graph.position[u] for u in unscored])
        ax.scatter(xy[:, 0], xy[:, 1], color="red", marker="x", s=60, zorder=3, label="failed")
        ax.legend(fontsize="small")
    me = graph.position[graph.nodes[0]]
    ax.scatter([me[0]], [me[1]], marker="*", s=360, facecolors="none", edgecolors="C3", linewidths=1.5, zorder=4)
    if len(graph.nodes) <= 30:
        for uid in graph.nodes:
            x, y = graph.position[uid]
            ax.annotate(uid, (x, y), textcoords="offset points", xytext=(0, 9), ha="center", fontsize=7)
    note = f" ({graph.left_out} older ancestors not shown)" if graph.left_out else ""
    ax.set_title(f"lineage of {graph.nodes[0]}{note}")
    ax.set_xlabel("ancestry depth")
    ax.set_yticks([])
    ax.set_xlim(-0.5, n_layers - 0.5)
    ax.set_ylim(0, 1.08)
    return fig
