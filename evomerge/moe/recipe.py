"""Reading an expert-merge recipe: one MoE model, a method, and its parameters as one settings object.

The recipe is an ordinary :class:`~evomerge.plan.MergePlan` (mergekit's YAML form)::

    merge_method: mc_smoe          # or sub_moe
    models:
      - model: path/to/mixtral
    parameters:
      num_experts: 4
      statistics: path/to/moe-statistics   # or calibration_text: some.txt
    dtype: bfloat16

Expert merging reshapes one model, so the per-tensor machinery of other recipes does not apply: exactly
one model, no ``slices``, ``overrides`` or other ``base_model``, and every parameter is one value for the
whole model (the model's own ``parameters`` win over the recipe's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evomerge.errors import ConfigError
from evomerge.moe.methods import EXPERT_MERGERS, ExpertMerger, ExpertMergeSettings
from evomerge.plan import MergePlan
from evomerge.validation import validate_model


@dataclass(frozen=True)
class MoeRecipe:
    model: str
    """The model's reference as the plan spells it."""
    merger: ExpertMerger
    settings: ExpertMergeSettings


def is_expert_merge(plan: MergePlan) -> bool:
    """True when the plan's ``merge_method`` is an expert merge (handled by ``evomerge.moe``)."""
    return plan.merge_method in EXPERT_MERGERS


def read_recipe(plan: MergePlan) -> MoeRecipe:
    """The recipe's model, method and settings, or a ConfigError naming the offending field."""
    merger = EXPERT_MERGERS.get(plan.merge_method, "merge_method")
    method = merger.name
    if plan.slices:
        raise ConfigError(f"{method} merges the experts of one model; list it under 'models', not 'slices'", "slices")
    models = plan.models or []
    if len(models) != 1:
        raise ConfigError(f"{method} merges the experts of exactly one model; the recipe lists {len(models)}", "models")
    if plan.overrides:
        raise ConfigError(f"{method} applies to the whole model; per-tensor overrides are not supported", "overrides")
    if plan.base_model is not None and plan.base_model != models[0].model:
        raise ConfigError(f"{method} takes no base model (got {plan.base_model!r})", "base_model")
    values: dict[str, Any] = {}
    for source, params in (("parameters", plan.parameters), ("models.0.parameters", models[0].parameters)):
        for key, value in (params or {}).items():
            if not isinstance(value, (bool, int, float, str)):
                raise ConfigError(f"{method} takes one value for the whole model, not a gradient or filter list",
                                  f"{source}.{key}")
            values[key] = value
    settings = validate_model(merger.settings, values, prefix="parameters")
    return MoeRecipe(models[0].model, merger, settings)
