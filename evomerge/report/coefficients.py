"""The coefficients a merge plan gives each model, layer by layer, as the merge planner resolves them.

Plans express per-layer values in several ways (gradients over depth, ``{filter, value}`` lists, per-layer
overrides, slices), so rather than interpret each form this module compiles the plan against the source
models' headers (no weights are read) and reads the resolved parameter of every tensor: the table is then
exactly what the merge applied. A column is the embeddings (``embed``), a layer index, or the final norm
and head (``head``); a cell is the mean over that column's tensors. When attention and MLP tensors of a
layer get different values (``split: attn_mlp``), the rows are split by role.

Without the headers (source models moved), :func:`scalar_coefficients` reads the plain per-model numbers
of the recipe itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np

from evomerge.layout import role_of
from evomerge.merge.planner import SourceInfo, compile_plan
from evomerge.plan import MergePlan, Parameters

SHARED = "(all models)"
_ROLE_GROUP = {"attention": "attn", "mlp": "mlp", "expert": "mlp", "router": "mlp"}
_GROUP_ORDER = ["attn", "mlp", "other"]


@dataclass(frozen=True)
class CoefficientTable:
    """One parameter's values: rows are models (and roles when they differ), columns depth positions."""

    parameter: str
    rows: list[str]
    columns: list[str]
    values: np.ndarray
    """rows × columns; NaN where the parameter does not apply (e.g. another operator chosen there)."""

    @property
    def per_layer(self) -> bool:
        """True when some row changes along depth (a heatmap says more than one number per model)."""
        spread = np.fmax.reduce(self.values, axis=1) - np.fmin.reduce(self.values, axis=1)
        return bool(np.any(spread > 1e-12))


def short_names(refs: Sequence[str]) -> dict[str, str]:
    """Readable labels for model paths: the folder name, with parent folders added until they are unique."""
    parts = {ref: PurePath(ref).parts or (ref,) for ref in refs}
    depth = 1
    while True:
        labels = {ref: "/".join(p[-depth:]) for ref, p in parts.items()}
        if len(set(labels.values())) == len(labels) or depth >= max(len(p) for p in parts.values()):
            return labels
        depth += 1


def searched_parameters(plan: MergePlan) -> list[str]:
    """Names of the parameters the recipe sets anywhere, in first-mention order (operator defaults excluded)."""
    scopes: list[Parameters | None] = [plan.parameters]
    scopes += [m.parameters for m in plan.models or []]
    for sl in plan.slices or []:
        scopes += [sl.parameters, *(s.parameters for s in sl.sources)]
    for ov in plan.overrides or []:
        scopes += [ov.parameters, *(ov.models or {}).values()]
    names: dict[str, None] = {}
    for scope in scopes:
        names.update(dict.fromkeys(scope or {}))
    return list(names)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def plan_coefficients(plan: MergePlan, infos: Mapping[str, SourceInfo]) -> list[CoefficientTable]:
    """Per-parameter tables of the values the compiled plan gives each model at each depth position."""
    compiled = compile_plan(plan, infos)
    wanted = set(searched_parameters(plan))
    labels = short_names(compiled.sources)
    cells: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    """(parameter, row, role group, column) → values of the column's tensors."""
    columns: dict[str, None] = {}
    seen_layer = False
    for task in compiled.tasks:
        if not task.floating:
            continue
        seen_layer = seen_layer or task.layer is not None
        column = str(task.layer) if task.layer is not None else ("head" if seen_layer else "embed")
        columns.setdefault(column, None)
        group = _ROLE_GROUP.get(role_of(task.out_name), "other")
        for name, values in task.params.per_model.items():
            for (source, _), value in zip(task.inputs, values):
                _add(cells, wanted, name, labels[compiled.sources[source]], group, column, value)
        for name, value in task.params.base.items():
            assert task.base is not None
            _add(cells, wanted, name, labels[compiled.sources[task.base[0]]], group, column, value)
        for name, value in task.params.shared.items():
            _add(cells, wanted, name, SHARED, group, column, value)
    return _tables(cells, list(columns))


def _add(cells: dict[tuple[str, str, str, str], list[float]], wanted: set[str], name: str, row: str, group: str,
         column: str, value: Any) -> None:
    number = _number(value)
    if name in wanted and number is not None:
        cells[(name, row, group, column)].append(number)


def _tables(cells: Mapping[tuple[str, str, str, str], list[float]], columns: list[str]) -> list[CoefficientTable]:
    col_index = {c: i for i, c in enumerate(columns)}
    params = list(dict.fromkeys(p for p, _, _, _ in cells))
    out = []
    for param in params:
        keys = [k for k in cells if k[0] == param]
        rows = list(dict.fromkeys(r for _, r, _, _ in keys))
        groups = sorted({g for _, _, g, _ in keys}, key=_GROUP_ORDER.index)
        by_group = {g: _grid(cells, param, rows, g, columns, col_index) for g in groups}
        if _same(by_group.values()):
            grid = np.fmax.reduce(np.stack(list(by_group.values())), axis=0)  # equal where defined
            out.append(CoefficientTable(param, rows, columns, grid))
        else:
            split_rows = [f"{r} · {g}" for r in rows for g in groups]
            grid = np.stack([by_group[g][i] for i in range(len(rows)) for g in groups])
            out.append(CoefficientTable(param, split_rows, columns, grid))
    return out


def _grid(cells: Mapping[tuple[str, str, str, str], list[float]], param: str, rows: list[str], group: str,
          columns: list[str], col_index: Mapping[str, int]) -> np.ndarray:
    grid = np.full((len(rows), len(columns)), np.nan)
    for i, row in enumerate(rows):
        for column in columns:
            values = cells.get((param, row, group, column))
            if values:
                grid[i, col_index[column]] = float(np.mean(values))
    return grid


def _same(grids: Iterable[np.ndarray]) -> bool:
    """Whether role groups agree wherever both are defined (then one row per model says everything)."""
    stack = np.stack(list(grids))
    spread = np.fmax.reduce(stack, axis=0) - np.fmin.reduce(stack, axis=0)
    return bool(np.all(np.isnan(spread) | (spread <= 1e-12)))


def scalar_coefficients(plan: MergePlan) -> list[CoefficientTable]:
    """Plain numbers of the recipe per model (``models[i].parameters``) and shared (``parameters``).

    The fallback view when the source headers are unavailable; gradients and conditions are left out.
    """
    refs = [m.model for m in plan.models or []]
    labels = short_names(refs) if refs else {}
    scopes = [(labels[m.model], m.parameters) for m in plan.models or []] + [(SHARED, plan.parameters)]
    values: dict[str, dict[str, float]] = {}
    for row, params in scopes:
        for name, setting in (params or {}).items():
            number = _number(setting)
            if number is not None:
                values.setdefault(name, {})[row] = number
    return [
        CoefficientTable(name, list(rows), ["all"], np.array([[v] for v in rows.values()], dtype=np.float64))
        for name, rows in values.items()
    ]


def read_source_infos(plan: MergePlan) -> dict[str, SourceInfo] | None:
    """Shapes and configs of the plan's models from their headers; None if a model cannot be opened."""
    from evomerge.errors import EvomergeError
    from evomerge.merge.to_disk import open_sources, source_infos

    try:
        return source_infos(open_sources(plan))
    except (EvomergeError, OSError):
        return None


def coefficients(plan: MergePlan, infos: Mapping[str, SourceInfo] | None) -> tuple[list[CoefficientTable], bool]:
    """The plan's tables and whether they are exact per depth (False: the recipe's plain numbers only)."""
    from evomerge.errors import EvomergeError

    if infos is not None and all(ref in infos for ref in plan.source_models()):
        try:
            return plan_coefficients(plan, infos), True
        except EvomergeError:  # headers changed since the search: fall back to the recipe's numbers
            pass
    return scalar_coefficients(plan), False
