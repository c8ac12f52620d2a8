"""M2N2 from pretrained sources: a matrix of mixing coefficients, one row per block of parameters.

Conventions:

* blocks in network order: every tensor (``granularity: tensor``), or the embeddings, each layer, and the
  final norm + head (``granularity: layer``); columns are the ``linear`` operator's inputs in plan order
  (the sources, then a base model when one is given: linear merges it as one more input);
* genome index ``block * n_columns + column`` (block-major), so a split point in genome order is a split
  point in layer order;
* decodes to ``linear`` with ``normalize: false``: the merged block is ``Σ_k c_bk θ_k`` exactly as the genome
  says. The merge is then linear in the genome, so crossing two genomes (``w·A + (1−w)·B`` on each side of
  the split) merges to the same crossing of the two parents' weights, as M2N2 crosses parameters; a
  one-hot row reproduces its source exactly. Rows need not sum to 1 (mutation or bounds beyond [0, 1]
  scale the block);
* each model's ``weight`` is a ``{filter, value}`` list with one entry per block: full tensor names
  (longest first) or layer prefixes such as ``model.layers.3.``; any name a filter would catch wrongly gets
  an exact-name entry in front (see :mod:`search_spaces.filters`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evomerge.errors import ConfigError
from evomerge.layout import ModelLayout, TensorInfo
from evomerge.plan import MergePlan, ParameterSetting
from evomerge.types import Genome
from search_spaces.base import FloatDim
from search_spaces.filters import Rule, conditional, exact_rules, ordered_rules
from search_spaces.genes import models_plan
from search_spaces.m2n2 import M2N2Config, M2N2Space
from search_spaces.operators import check_sources, operator_info
from search_spaces.reading import PlanReader


def layer_prefix(info: TensorInfo) -> str | None:
    """``model.layers.3.`` for ``model.layers.3.mlp.up_proj.weight`` (None outside layers)."""
    parts = info.name.split(".")
    if info.layer is None or str(info.layer) not in parts:
        return None
    return ".".join(parts[: parts.index(str(info.layer)) + 1]) + "."


def blocks_of(layout: ModelLayout, granularity: str) -> list[tuple[str, tuple[TensorInfo, ...]]]:
    """``(label, tensors)`` of every block, in network order."""
    if granularity == "tensor":
        return [(t.name, (t,)) for t in layout.tensors]
    blocks = []
    pre = tuple(t for t in layout.tensors if t.position == "pre")
    if pre:
        blocks.append(("embeddings", pre))
    for layer in range(layout.num_layers):
        tensors = tuple(layout.layer_tensors(layer))
        if tensors:
            blocks.append((f"layer {layer}", tensors))
    post = tuple(t for t in layout.tensors if t.position == "post")
    if post:
        blocks.append(("head", post))
    return blocks


class CoefficientSpace(M2N2Space):
    def __init__(
        self, config: M2N2Config, sources: Sequence[str], base: str | None, layout: ModelLayout,
        path: str = "search_space",
    ) -> None:
        check_sources(sources, path)
        low, high = config.bounds(path)
        if low > 0:
            raise ConfigError(f"must be <= 0 so that the sources (one-hot rows) are in the space, got {low:g}",
                              f"{path}.low")
        if high < 1:
            raise ConfigError(f"must be >= 1 so that the sources (one-hot rows) are in the space, got {high:g}",
                              f"{path}.high")
        self.config, self.sources, self.base, self.layout = config, list(sources), base, layout
        self.op = operator_info("linear", sources, base, f"{path}.mode")
        weight = self.op.spec("weight")
        assert weight is not None
        self.columns = self.op.refs_for(weight)
        self.blocks = blocks_of(layout, config.granularity)
        if not self.blocks:
            raise ConfigError("the model layout has no tensors", f"{path}.granularity")
        key_of = {t.name: b for b, (_, tensors) in enumerate(self.blocks) for t in tensors}
        self.rules = ordered_rules(key_of, self._candidate_rules())
        k = len(self.columns)
        start = 1.0 / k if low <= 1.0 / k <= high else None  # the uniform average
        dims = [FloatDim(f"{label}[{ref}]", low, high, init=start) for label, _ in self.blocks for ref in self.columns]
        super().__init__(dims)

    def _candidate_rules(self) -> list[Rule[int]]:
        """Rules in network order: full names, or a layer's prefix for a whole layer's block."""
        rules: list[Rule[int]] = []
        for b, (_, tensors) in enumerate(self.blocks):
            prefix = layer_prefix(tensors[0]) if self.config.granularity == "layer" else None
            if prefix is not None:
                rules.append(Rule(prefix, b))
            else:
                rules += exact_rules([(t.name, b) for t in tensors])
        return rules

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    def block_starts(self) -> np.ndarray:
        return np.arange(0, self.dimension, self.n_columns, dtype=np.int64)

    def initial_points(self) -> list[Genome]:
        """One genome per column: the source (or base) model itself, a one-hot row in every block."""
        points = []
        for k in range(self.n_columns):
            matrix = np.zeros((len(self.blocks), self.n_columns))
            matrix[:, k] = 1.0
            points.append(Genome(matrix.reshape(-1)))
        return points

    def decode(self, genome: Genome) -> MergePlan:
        matrix = self.checked(genome).reshape(len(self.blocks), self.n_columns)
        per_model = {}
        for k, ref in enumerate(self.columns):
            column = {b: float(matrix[b, k]) for b in range(len(self.blocks))}
            setting: ParameterSetting = conditional(self.rules, column)
            per_model[ref] = {"weight": setting}
        return models_plan("linear", self.sources, self.base, per_model, {"normalize": False})

    def encode(self, plan: MergePlan) -> Genome:
        if plan.merge_method != "linear":
            raise ConfigError(f"the plan merges with {plan.merge_method!r}; this space decodes to 'linear'",
                              "merge_method")
        reader = PlanReader(plan, self.layout)
        values = []
        for label, tensors in self.blocks:
            for ref in self.columns:
                value = reader.value("weight", tensors[0], ref, None)
                if value is None:
                    raise ConfigError(f"the plan sets no weight of {ref} at {label}", "models")
                values.append(value)
        return Genome(np.array(values, dtype=np.float64))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "mode": "coefficients", "granularity": self.config.granularity,
                "blocks": len(self.blocks), "columns": list(self.columns)}
