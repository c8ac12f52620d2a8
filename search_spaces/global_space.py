"""``global``: one value per model (or one shared value) per searched parameter, for one fixed operator.

The mergekit-evolve style search: e.g. a weight in [0, 1] and a density in [0.1, 1] per model plus a
global λ. Genome order: parameters in config order, each followed by its models in plan order (sources,
then the base when the operator merges it as an input). Decodes to a plain mergekit recipe: per-model
genes in ``models[i].parameters``, shared genes and ``extra_parameters`` in ``parameters``, all scalars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from evomerge.errors import ConfigError
from evomerge.layout import ModelLayout, TensorInfo
from evomerge.plan import MergePlan, ParameterSetting
from evomerge.types import Genome
from search_spaces.config import ExtraParameters, ParamRange, SpaceConfig
from search_spaces.genes import GeneKey, GeneTable, models_plan, place_settings
from search_spaces.operators import check_parameters, check_sources, operator_info
from search_spaces.reading import PlanReader, read_gene
from search_spaces.registry import ConfigurableSpace, register_space

_CELL = "all"


def _default_parameters() -> dict[str, ParamRange]:
    return {"weight": ParamRange()}


class GlobalConfig(SpaceConfig):
    name: Literal["global"] = "global"
    merge_method: str = "linear"
    parameters: dict[str, ParamRange] = Field(default_factory=_default_parameters, min_length=1)
    extra_parameters: ExtraParameters = Field(default_factory=dict)


@register_space
class GlobalSpace(ConfigurableSpace):
    name = "global"
    Config = GlobalConfig

    def __init__(
        self,
        config: GlobalConfig,
        sources: Sequence[str],
        base: str | None,
        layout: ModelLayout,
        path: str = "search_space",
    ) -> None:
        check_sources(sources, path)
        self.config = config
        self.sources = list(sources)
        self.base = base
        self.layout = layout
        self.op = operator_info(config.merge_method, sources, base, f"{path}.merge_method")
        check_parameters(self.op, config.parameters, config.extra_parameters, path)
        self.genes = GeneTable()
        self.genes.add_operator(_CELL, "", self.op, config.parameters)
        super().__init__(self.genes.dims)

    def decode(self, genome: Genome) -> MergePlan:
        vector = self.checked(genome)

        def setting(param: str, ref: str | None) -> ParameterSetting:
            return self.genes.value(vector, GeneKey(_CELL, self.op.name, param, ref))

        per_model, shared = place_settings(self.op, self.config.parameters, self.config.extra_parameters, setting)
        return models_plan(self.op.name, self.sources, self.base, per_model, shared)

    def encode(self, plan: MergePlan) -> Genome:
        if plan.merge_method != self.op.name:
            raise ConfigError(f"the plan merges with {plan.merge_method!r}; this space searches {self.op.name!r}",
                              "merge_method")
        reader = PlanReader(plan, self.layout)
        tensor = self.layout.tensors[0] if self.layout.tensors else TensorInfo("", (), None, "other", "pre")
        values = []
        for key in self.genes.keys:
            value = read_gene(reader, self.op, key, tensor, None)
            if value is None:
                who = "" if key.ref is None else f" of {key.ref}"
                raise ConfigError(f"the plan sets no {key.param!r}{who}", "parameters")
            values.append(value)
        return Genome(np.array(values, dtype=np.float64))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "merge_method": self.op.name, "parameters": list(self.config.parameters)}
