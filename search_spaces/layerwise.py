"""``layerwise``: per layer group, per parameter, per model, optionally attention apart from MLP.

MedSAMix- and mergekit-evolve-style layer-wise search for one fixed operator. Conventions:

* genome order: parts in network order (embeddings if ``outside: own``, layer groups, head if ``own``),
  within a group its slots (``attn`` then ``mlp`` when ``split: attn_mlp``), then parameters in config
  order, then models in plan order;
* each value is a gradient with one entry per layer (a group's value repeated over its layers), so the
  planner's ``t = i/(n-1)`` lands on entry ``i``;
* ``split: attn_mlp``: attention tensors (role ``attention``) take the ``attn`` gradient, MLP tensors
  (roles ``mlp``, ``expert``, ``router``) the ``mlp`` one, through ``{filter, value}`` conditions whose
  filters come from the tensors' own names (``.self_attn.``/``.mlp.`` on Llama, ``.attn.``/``.mlp.`` on
  GPT-2); other in-layer tensors (norms) take the mean of their layer's two values;
* outside the layers, ``outside: adjacent`` gives embeddings the first group's value (its attn/mlp mean
  when split; the planner evaluates them at ``t = 0``) and final norm and head the last group's; ``own``
  gives each of the two its own genes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import numpy as np
from pydantic import Field

from evomerge.errors import ConfigError
from evomerge.layout import ModelLayout, TensorInfo
from evomerge.plan import MergePlan, ParameterSetting, ScalarOrGradient
from evomerge.types import Genome
from search_spaces.config import ExtraParameters, GroupCount, Outside, ParamRange, SpaceConfig
from search_spaces.depth import Part, split_depth
from search_spaces.filters import Rule, component_rules, conditional, exact_rules, ordered_rules
from search_spaces.genes import GeneKey, GeneTable, models_plan, place_settings
from search_spaces.operators import check_parameters, check_sources, operator_info
from search_spaces.reading import PlanReader, read_gene
from search_spaces.registry import ConfigurableSpace, register_space

_SLOT_OF_ROLE = {"attention": "attn", "mlp": "mlp", "expert": "mlp", "router": "mlp"}


def slot_of(info: TensorInfo) -> str:
    """``attn``, ``mlp`` or ``rest`` (norms and anything else inside a layer)."""
    return _SLOT_OF_ROLE.get(info.role, "rest")


def _default_parameters() -> dict[str, ParamRange]:
    return {"weight": ParamRange()}


class LayerwiseConfig(SpaceConfig):
    name: Literal["layerwise"] = "layerwise"
    merge_method: str = "linear"
    groups: GroupCount = "per_layer"
    split: Literal["none", "attn_mlp"] = "none"
    outside: Outside = "adjacent"
    parameters: dict[str, ParamRange] = Field(default_factory=_default_parameters, min_length=1)
    extra_parameters: ExtraParameters = Field(default_factory=dict)


@register_space
class LayerwiseSpace(ConfigurableSpace):
    name = "layerwise"
    Config = LayerwiseConfig

    def __init__(
        self, config: LayerwiseConfig, sources: Sequence[str], base: str | None, layout: ModelLayout,
        path: str = "search_space",
    ) -> None:
        check_sources(sources, path)
        self.config, self.sources, self.base, self.layout = config, list(sources), base, layout
        self.op = operator_info(config.merge_method, sources, base, f"{path}.merge_method")
        check_parameters(self.op, config.parameters, config.extra_parameters, path)
        self.depth = split_depth(layout, config.groups, config.outside, path)
        self.split = config.split == "attn_mlp"
        if self.split:
            self._check_split(f"{path}.split")
        self.genes = GeneTable()
        for part in self.depth.parts:
            for slot in self._slots(part):
                label = part.label + ("" if slot == "all" else f" {slot}")
                self.genes.add_operator((part.key, slot), f"{label}: ", self.op, config.parameters)
        self.key_of = {t.name: self._class_of(t) for t in layout.tensors}
        self.rules = ordered_rules(self.key_of, self._candidate_rules())
        super().__init__(self.genes.dims)

    # ------------------------------------------------------------------ structure
    def _check_split(self, path: str) -> None:
        for layer in range(self.layout.num_layers):
            slots = {slot_of(t) for t in self.layout.layer_tensors(layer)}
            for slot, role in (("attn", "attention"), ("mlp", "MLP")):
                if slot not in slots:
                    raise ConfigError(f"attn_mlp needs {role} tensors in every layer; layer {layer} has none "
                                      f"(roles are read from tensor names)", path)

    def _slots(self, part: Part) -> tuple[str, ...]:
        return ("attn", "mlp") if self.split and part.position == "layer" else ("all",)

    @property
    def _default(self) -> str:
        return "rest" if self.split else "all"

    def _class_of(self, info: TensorInfo) -> str:
        if info.position == "layer":
            return slot_of(info) if self.split else "all"
        if info.position == "pre" and self.config.outside == "adjacent":
            return self._default  # evaluated at t = 0: the first layer's value
        return info.position

    def _candidate_rules(self) -> list[Rule[str]]:
        rules: list[Rule[str]] = []
        if self.split:
            in_layers = [t for t in self.layout.tensors if t.position == "layer"]
            classes = [(s, [t for t in in_layers if slot_of(t) == s]) for s in ("attn", "mlp")]
            rules += component_rules(classes, self.key_of)
        outside = [(n, k) for n, k in self.key_of.items() if k in ("pre", "post")]
        return [*rules, *exact_rules(outside), Rule(None, self._default)]

    def _representative(self, part: Part, slot: str) -> TensorInfo:
        if slot == "all":
            return part.tensors[0]
        return next(t for t in part.tensors if slot_of(t) == slot)

    # ------------------------------------------------------------------ mapping
    def _class_values(self, vector: np.ndarray, param: str, ref: str | None) -> dict[str, ScalarOrGradient]:
        def gene(part: Part, slot: str) -> float:
            return self.genes.value(vector, GeneKey((part.key, slot), self.op.name, param, ref))

        per_layer = [self.depth.group_of(layer) for layer in range(self.layout.num_layers)]
        if self.split:
            attn = [gene(p, "attn") for p in per_layer]
            mlp = [gene(p, "mlp") for p in per_layer]
            values: dict[str, Any] = {"attn": attn, "mlp": mlp, "rest": [0.5 * (a + m) for a, m in zip(attn, mlp)]}
        else:
            values = {"all": [gene(p, "all") for p in per_layer]}
        own = self.config.outside == "own"
        if self.depth.pre is not None and own:
            values["pre"] = gene(self.depth.pre, "all")
        if self.depth.post is not None:
            values["post"] = gene(self.depth.post, "all") if own else values[self._default][-1]
        return values

    def decode(self, genome: Genome) -> MergePlan:
        vector = self.checked(genome)

        def setting(param: str, ref: str | None) -> ParameterSetting:
            return conditional(self.rules, self._class_values(vector, param, ref))

        per_model, shared = place_settings(self.op, self.config.parameters, self.config.extra_parameters, setting)
        return models_plan(self.op.name, self.sources, self.base, per_model, shared)

    def encode(self, plan: MergePlan) -> Genome:
        if plan.merge_method != self.op.name:
            raise ConfigError(f"the plan merges with {plan.merge_method!r}; this space searches {self.op.name!r}",
                              "merge_method")
        reader = PlanReader(plan, self.layout)
        parts = {p.key: p for p in self.depth.parts}
        values = []
        for key in self.genes.keys:
            part_key, slot = cast(tuple[str, str], key.cell)
            tensor = self._representative(parts[part_key], slot)
            value = read_gene(reader, self.op, key, tensor, None)
            if value is None:
                who = "" if key.ref is None else f" of {key.ref}"
                raise ConfigError(f"the plan sets no {key.param!r}{who} at {tensor.name}", "parameters")
            values.append(value)
        return Genome(np.array(values, dtype=np.float64))

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "merge_method": self.op.name,
            "parameters": list(self.config.parameters),
            "groups": [list(p.layers) for p in self.depth.groups],
            "split": self.config.split,
            "outside": self.config.outside,
        }
