"""``method_choice``: a merge operator chosen per layer group, with each option's own parameters.

MedSAMix-style: one categorical gene per part (layer group; also embeddings and head with ``outside:
own``) choosing among the configured operators, plus every option's continuous genes in every part, so
the genome has a fixed dimension whatever is chosen. Conventions:

* genome order: parts in network order; within a part, options in config order; then parameters in
  config order; then models in plan order (which differ per option: an operator that ignores bases merges
  a given base as one more input). ``choices[i]`` indexes the options for part ``i``;
* a group's plan is an override ``{merge_method, layers: [start, end)}`` holding shared genes and fixed
  values in ``parameters`` and per-model genes in ``models``; nothing is set outside overrides, so the
  options' parameters never leak into each other. ``merge_method`` at the top is group 0's choice (every
  tensor is covered by an override; the top-level method is never applied);
* embeddings, final norm and head get one override per tensor, selected by its full name (longest names
  first, so no name catches another): with ``outside: adjacent`` they repeat the first group's (embeddings)
  or last group's (norm, head) choice and values;
* inactive options: the overrides of the options *not* chosen follow the chosen one with the same
  selector. Overrides apply first-match, so they never take effect, but they keep the inactive genes in the
  plan and ``encode`` reads them back (a plan without them encodes inactive genes as their start values).
  The cost: genomes that differ only in inactive genes decode to different plans, hence different content
  hashes, although they merge to the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from evomerge.errors import ConfigError
from evomerge.layout import ModelLayout
from evomerge.plan import MergePlan, Override, ParameterSetting
from evomerge.types import Genome
from search_spaces.base import CategoricalDim
from search_spaces.config import (
    ExtraParameters,
    GroupCount,
    Outside,
    ParamRange,
    Section,
    SpaceConfig,
)
from search_spaces.depth import Part, split_depth
from search_spaces.filters import exact_rules, ordered_rules
from search_spaces.genes import GeneKey, GeneTable, models_plan, place_settings
from search_spaces.operators import check_parameters, check_sources, operator_info
from search_spaces.reading import PlanReader, read_gene
from search_spaces.registry import ConfigurableSpace, register_space


class OptionConfig(Section):
    parameters: dict[str, ParamRange] = Field(default_factory=dict)
    extra_parameters: ExtraParameters = Field(default_factory=dict)


def _default_options() -> dict[str, OptionConfig]:
    return {"linear": OptionConfig(parameters={"weight": ParamRange()})}


class MethodChoiceConfig(SpaceConfig):
    name: Literal["method_choice"] = "method_choice"
    options: dict[str, OptionConfig] = Field(default_factory=_default_options, min_length=1)
    """Operator name → its searched and fixed parameters; the order fixes the choice indices."""
    groups: GroupCount = "per_layer"
    outside: Outside = "adjacent"


@register_space
class MethodChoiceSpace(ConfigurableSpace):
    name = "method_choice"
    Config = MethodChoiceConfig

    def __init__(
        self, config: MethodChoiceConfig, sources: Sequence[str], base: str | None, layout: ModelLayout,
        path: str = "search_space",
    ) -> None:
        check_sources(sources, path)
        self.config, self.sources, self.base, self.layout = config, list(sources), base, layout
        self.options = list(config.options)
        self.ops = {name: operator_info(name, sources, base, f"{path}.options.{name}") for name in self.options}
        for name, option in config.options.items():
            check_parameters(self.ops[name], option.parameters, option.extra_parameters, f"{path}.options.{name}")
        self.depth = split_depth(layout, config.groups, config.outside, path)
        self.genes = GeneTable()
        for part in self.depth.parts:
            for name, option in config.options.items():
                self.genes.add_operator(part.key, f"{part.label} {name}: ", self.ops[name], option.parameters)
        outside = {t.name: t.position for t in layout.tensors if t.position != "layer"}
        self.outside_rules = ordered_rules(outside, exact_rules(list(outside.items())))
        cats = [CategoricalDim(f"method[{p.label}]", tuple(self.options)) for p in self.depth.parts]
        super().__init__(self.genes.dims, cats)

    # ------------------------------------------------------------------ decode
    def _override(self, vector: np.ndarray, part: Part, option: str, selector: dict[str, Any]) -> Override:
        op, cfg = self.ops[option], self.config.options[option]

        def setting(param: str, ref: str | None) -> ParameterSetting:
            return self.genes.value(vector, GeneKey(part.key, option, param, ref))

        per_model, shared = place_settings(op, cfg.parameters, cfg.extra_parameters, setting)
        return Override(merge_method=option, parameters=shared or None, models=per_model or None, **selector)

    def _overrides(
        self, vector: np.ndarray, part: Part, chosen: str, selector: dict[str, Any], shadows: bool
    ) -> list[Override]:
        """The chosen option's override, then (``shadows``) the inactive options' with the same selector."""
        names = [chosen, *(o for o in self.options if o != chosen and shadows)]
        return [self._override(vector, part, name, selector) for name in names]

    def decode(self, genome: Genome) -> MergePlan:
        vector = self.checked(genome)
        chosen = {p.key: self.options[c] for p, c in zip(self.depth.parts, genome.choices)}
        overrides: list[Override] = []
        for group in self.depth.groups:
            overrides += self._overrides(vector, group, chosen[group.key], {"layers": group.layer_range}, True)
        for rule in self.outside_rules:
            part = self.depth.owner(rule.key)
            assert part is not None
            owns_genes = self.config.outside == "own" and rule.filter == part.tensors[0].name
            overrides += self._overrides(vector, part, chosen[part.key], {"filter": rule.filter}, owns_genes)
        return models_plan(chosen[self.depth.groups[0].key], self.sources, self.base, {}, {}, overrides)

    # ------------------------------------------------------------------ encode
    @staticmethod
    def _shadow(plan: MergePlan, active: Override | None, option: str) -> Override | None:
        if active is None:
            return None
        for ov in plan.overrides or []:
            if ov is not active and ov.merge_method == option and (ov.filter, ov.layers) == (active.filter, active.layers):
                return ov
        return None

    def encode(self, plan: MergePlan) -> Genome:
        reader = PlanReader(plan, self.layout)
        vector = np.array([d.start for d in self.float_dims], dtype=np.float64)
        choices = []
        for part in self.depth.parts:
            tensor = part.tensors[0]
            active = reader.override_for(tensor)
            method = active.merge_method if active is not None else plan.merge_method
            if method not in self.options:
                raise ConfigError(f"{tensor.name} is merged with {method!r}, which is not one of the options "
                                  f"({', '.join(self.options)})", "overrides")
            choices.append(self.options.index(method))
            for option in self.options:
                ov = active if option == method else self._shadow(plan, active, option)
                if option != method and ov is None:
                    continue  # inactive genes absent from the plan keep their start values
                for key in self._keys(part, option):
                    value = read_gene(reader, self.ops[option], key, tensor, ov)
                    if value is None and option == method:
                        who = "" if key.ref is None else f" of {key.ref}"
                        raise ConfigError(f"the plan sets no {key.param!r}{who} for {method} at {tensor.name}",
                                          "overrides")
                    if value is not None:
                        vector[self.genes.index(key)] = value
        return Genome(vector, tuple(choices))

    def _keys(self, part: Part, option: str) -> list[GeneKey]:
        return [k for k in self.genes.keys if k.cell == part.key and k.option == option]

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "options": self.options,
            "groups": [list(p.layers) for p in self.depth.groups],
            "outside": self.config.outside,
        }
