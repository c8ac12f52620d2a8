"""Turn an evomerge plan into a mergekit recipe that merges to the same weights, when one exists.

Search spaces write evomerge-dialect plans, whose defaults follow the papers where mergekit differs (TIES
density 0.2 rather than 1.0, ...). Dropping ``dialect`` alone would silently change the merge, so every
parameter whose two defaults differ is written out explicitly with evomerge's value, as a catch-all
after whatever the plan already says. A plan is not expressible when it uses what mergekit lacks: an
evomerge-only method, per-tensor ``overrides``, pickle checkpoints, or an evomerge-only option (such as
``trim_scope``) at a value mergekit cannot reproduce. Randomized methods (DARE, DELLA) are expressible,
but mergekit draws its own masks, so the recipe comes with a warning instead of a promise of equality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evomerge.merge.operator import get_operator
from evomerge.merge.params import REQUIRED, ParamSpec
from evomerge.plan import MergePlan

MERGEKIT_METHODS = frozenset({
    "linear", "slerp", "multislerp", "karcher", "task_arithmetic", "ties", "dare_ties", "dare_linear",
    "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "model_stock", "passthrough",
})
"""evomerge operators that mergekit 0.1.5 has under the same name with the same meaning."""

EVOMERGE_ONLY_OPTIONS = frozenset({"trim_scope", "zero_sign", "rescale_mode", "angle_average"})
"""Options mergekit does not read: their value must be the one mergekit hard-codes (``mergekit_default``)."""


@dataclass(frozen=True)
class MergekitRecipe:
    yaml: str | None
    """The recipe, or None when the plan cannot be written for mergekit."""
    reason: str = ""
    """Why not (when ``yaml`` is None), or a caveat (randomized methods)."""


def to_mergekit(plan: MergePlan) -> MergekitRecipe:
    if plan.merge_method not in MERGEKIT_METHODS:
        return MergekitRecipe(None, f"merge method {plan.merge_method!r} does not exist in mergekit")
    if plan.overrides:
        return MergekitRecipe(None, "per-tensor overrides have no mergekit equivalent")
    if plan.allow_pickle:
        return MergekitRecipe(None, "mergekit does not read the pickle checkpoints this plan allows")
    data = plan.to_dict(mergekit=True)
    spec = get_operator(plan.merge_method)
    for param in spec.params:
        problem = _pin(data, param, plan.dialect)
        if problem:
            return MergekitRecipe(None, problem)
    if not data.get("parameters"):
        data.pop("parameters", None)
    from evomerge.validation import dump_yaml

    caveat = ""
    if spec.randomized:
        caveat = (f"{plan.merge_method} drops parameters at random; mergekit draws its own masks, so its merge has "
                  "the same distribution but not the same weights as evomerge's")
    header = "# mergekit recipe written by evomerge" + (f"\n# note: {caveat}" if caveat else "") + "\n"
    return MergekitRecipe(header + dump_yaml(data), caveat)


def _pin(data: dict[str, Any], param: ParamSpec, dialect: str) -> str:
    """Make ``param`` resolve in mergekit as it does in ``dialect``; returns a reason if it cannot."""
    ours = param.default_for(dialect)
    theirs = param.default_for("mergekit")
    mentioned = _mentioned(data, param.name)
    if param.name in EVOMERGE_ONLY_OPTIONS:
        if mentioned:
            values = _values(data, param.name)
            if any(v != theirs for v in values):
                return f"option {param.name}={values[0]!r} has no mergekit equivalent (mergekit always uses {theirs!r})"
            _drop(data, param.name)
            return ""
        return "" if ours == theirs else f"evomerge's default {param.name}={ours!r} has no mergekit equivalent"
    if ours is REQUIRED or (ours == theirs and theirs is not REQUIRED) or _set_for_every_model(data, param.name):
        return ""
    globals_ = data.setdefault("parameters", {})
    setting = globals_.get(param.name)
    if setting is None:
        globals_[param.name] = ours
    elif isinstance(setting, list) and setting and isinstance(setting[-1], dict):
        if setting[-1].get("filter") not in (None, "*"):
            globals_[param.name] = [*setting, {"value": ours}]
    elif isinstance(setting, dict) and setting.get("filter") not in (None, "*"):
        globals_[param.name] = [setting, {"value": ours}]
    return ""


def _parameter_maps(data: dict[str, Any]) -> list[dict[str, Any]]:
    maps = [data.get("parameters") or {}]
    maps += [m.get("parameters") or {} for m in data.get("models") or []]
    for sl in data.get("slices") or []:
        maps.append(sl.get("parameters") or {})
        maps += [s.get("parameters") or {} for s in sl.get("sources") or []]
    return maps


def _set_for_every_model(data: dict[str, Any], name: str) -> bool:
    """True when each entry of ``models`` sets ``name`` for every tensor (a plain value or a gradient)."""
    models = data.get("models") or []
    if not models or data.get("slices"):
        return False
    return all(_unconditional((m.get("parameters") or {}).get(name)) for m in models)


def _unconditional(setting: Any) -> bool:
    if isinstance(setting, (bool, int, float, str)):
        return True
    return isinstance(setting, list) and bool(setting) and all(isinstance(v, (bool, int, float, str)) for v in setting)


def _mentioned(data: dict[str, Any], name: str) -> bool:
    return any(name in m for m in _parameter_maps(data))


def _values(data: dict[str, Any], name: str) -> list[Any]:
    out: list[Any] = []
    for m in _parameter_maps(data):
        if name in m:
            items = m[name] if isinstance(m[name], list) else [m[name]]
            out += [i.get("value") if isinstance(i, dict) else i for i in items]
    return out


def _drop(data: dict[str, Any], name: str) -> None:
    for m in _parameter_maps(data):
        m.pop(name, None)

