"""Read a plan's parameter values back, per tensor and model, the way the merge planner resolves them.

Encoding a plan into a genome asks, for each gene, "what value does this plan give this model at a
tensor the gene controls?". Answering it with the planner's own rules (first matching override;
precedence override-per-model, model, override, recipe; gradients; first-match filters) makes encode
correct for any plan of the space's shape, including hand-written ones, not only for plans the space
produced. One deliberate refinement: a gradient with one entry per layer is read by index, so the value
of layer ``i`` is exactly entry ``i`` (interpolating at ``t = i/(n-1)`` can be one rounding step off,
e.g. for ``i = 13`` of 24 layers).
"""

from __future__ import annotations

import math
from typing import Any

from evomerge.errors import ConfigError
from evomerge.layout import ModelLayout, TensorInfo, layer_fraction
from evomerge.merge.params import evaluate_setting
from evomerge.plan import ConditionalParameter, MergePlan, Override, Parameters, ParameterSetting
from search_spaces.genes import GeneKey
from search_spaces.operators import OperatorInfo


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number in the plan, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ConfigError(f"expected a finite number in the plan, got {value!r}")
    return result


def matched(setting: ParameterSetting, name: str) -> Any:
    """The value a setting holds for tensor ``name`` after its ``{filter, value}`` conditions (or None)."""
    if isinstance(setting, ConditionalParameter):
        setting = [setting]
    if isinstance(setting, list) and setting and all(isinstance(c, ConditionalParameter) for c in setting):
        for cond in setting:
            assert isinstance(cond, ConditionalParameter)
            if cond.filter is None or cond.filter == "*" or cond.filter in name:
                return cond.value
        return None
    return setting


class PlanReader:
    def __init__(self, plan: MergePlan, layout: ModelLayout) -> None:
        if plan.slices:
            raise ConfigError("a plan with 'slices' cannot be mapped onto this search space", "slices")
        self.plan = plan
        self.layout = layout
        self.own: dict[str, Parameters | None] = {m.model: m.parameters for m in plan.models or []}

    def override_for(self, tensor: TensorInfo) -> Override | None:
        """The override the planner applies to ``tensor`` (the first that selects it), if any."""
        for ov in self.plan.overrides or []:
            if ov.filter is not None and ov.filter not in tensor.name:
                continue
            if ov.layers is not None and (tensor.layer is None or not ov.layers[0] <= tensor.layer < ov.layers[1]):
                continue
            return ov
        return None

    def value(self, param: str, tensor: TensorInfo, ref: str | None, override: Override | None) -> float | None:
        """``param`` at ``tensor`` for model ``ref`` (None: the shared value) with ``override`` in force."""
        scopes: list[Parameters | None] = []
        if ref is not None:
            scopes.append((override.models or {}).get(ref) if override is not None else None)
            scopes.append(self.own.get(ref))
        scopes += [override.parameters if override is not None else None, self.plan.parameters]
        for scope in scopes:
            if scope is not None and param in scope:
                value = self._at(scope[param], tensor)
                if value is not None:
                    return value
        return None

    def _at(self, setting: ParameterSetting, tensor: TensorInfo) -> float | None:
        chosen = matched(setting, tensor.name)
        if chosen is None:
            return None
        n = self.layout.num_layers
        if isinstance(chosen, list) and len(chosen) == n and tensor.layer is not None:
            return _number(chosen[tensor.layer])
        return _number(evaluate_setting(tensor.name, chosen, layer_fraction(tensor.layer, n), _number))


def read_gene(
    reader: PlanReader, op: OperatorInfo, key: GeneKey, tensor: TensorInfo, override: Override | None
) -> float | None:
    """The value gene ``key`` has in the plan, read at ``tensor``; None if the plan does not set it.

    A shared gene of a per-model parameter reads the first model's value: a plan that sets the value per
    model (by hand, say) still encodes, as the value of the first model.
    """
    spec = op.spec(key.param)
    assert spec is not None, key
    refs = op.refs_for(spec)
    ref = key.ref if key.ref is not None or not refs else refs[0]
    return reader.value(key.param, tensor, ref, override)
