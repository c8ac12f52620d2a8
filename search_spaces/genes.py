"""The ordered coordinates of a space and where each operator parameter's values go in a plan.

A gene is keyed by ``(cell, option, parameter, model)``: *cell* is where in the network it acts (the
whole model, a layer group, a group's attention part ...), *option* the operator it belongs to (the
space's only operator unless the space chooses between several), *model* the input model whose value it
is (None for a value shared by all). Keys make decode and encode two loops over the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from evomerge.plan import InputModel, MergePlan, Override, Parameters, ParameterSetting, ScalarParameter
from search_spaces.base import FloatDim
from search_spaces.config import ParamRange
from search_spaces.operators import DIALECT, OperatorInfo


@dataclass(frozen=True)
class GeneKey:
    cell: Hashable
    option: str
    param: str
    ref: str | None


class GeneTable:
    """Genes in genome order, each with its dimension."""

    def __init__(self) -> None:
        self.keys: list[GeneKey] = []
        self.dims: list[FloatDim] = []
        self._index: dict[GeneKey, int] = {}

    def add(self, key: GeneKey, dim: FloatDim) -> None:
        if key in self._index:
            raise ValueError(f"duplicate gene {key}")
        self._index[key] = len(self.keys)
        self.keys.append(key)
        self.dims.append(dim)

    def add_operator(self, cell: Hashable, label: str, op: OperatorInfo, searched: Mapping[str, ParamRange]) -> None:
        """Genes of every searched parameter of ``op`` in ``cell``: one per model or one shared."""
        for name, rng in searched.items():
            for ref in model_slots(op, name, rng):
                who = "" if ref is None else f"[{ref}]"
                self.add(GeneKey(cell, op.name, name, ref), rng.dim(f"{label}{name}{who}"))

    def index(self, key: GeneKey) -> int:
        return self._index[key]

    def value(self, vector: np.ndarray, key: GeneKey) -> float:
        return float(vector[self._index[key]])

    def __len__(self) -> int:
        return len(self.keys)


def model_slots(op: OperatorInfo, name: str, rng: ParamRange) -> tuple[str | None, ...]:
    """The models with a gene of their own for ``name``, or ``(None,)`` for one shared gene."""
    spec = op.spec(name)
    assert spec is not None, name
    if op.genes_per_model(name, rng):
        return op.refs_for(spec)
    return (None,)


def place_settings(
    op: OperatorInfo,
    searched: Mapping[str, ParamRange],
    fixed: Mapping[str, ScalarParameter],
    setting: Callable[[str, str | None], ParameterSetting],
) -> tuple[dict[str, Parameters], Parameters]:
    """Per-model and shared parameter dicts of a plan: ``setting(param, model)`` gives each value.

    Per-model values go to the model's own parameters (which outrank shared ones in the planner), shared
    genes and fixed values to the shared parameters.
    """
    per_model: dict[str, Parameters] = {}
    shared: Parameters = {}
    for name, rng in searched.items():
        for ref in model_slots(op, name, rng):
            if ref is None:
                shared[name] = setting(name, None)
            else:
                per_model.setdefault(ref, {})[name] = setting(name, ref)
    shared.update(fixed)
    return per_model, shared


def models_plan(
    merge_method: str,
    sources: Sequence[str],
    base: str | None,
    per_model: Mapping[str, Parameters],
    shared: Parameters,
    overrides: list[Override] | None = None,
) -> MergePlan:
    """An evomerge-dialect plan over ``sources`` (the base is listed too when it carries values)."""
    refs = list(dict.fromkeys([*sources, *per_model]))
    return MergePlan(
        merge_method=merge_method,
        base_model=base,
        models=[InputModel(model=r, parameters=dict(per_model[r]) if per_model.get(r) else None) for r in refs],
        parameters=dict(shared) or None,
        dialect=DIALECT,
        overrides=overrides or None,
    )
