"""``composite``: several suites scored together, as one weighted objective or as a Pareto set.

``mode: weighted`` (default) gives one objective to maximize: the sum over child suites of
``weight × objective`` for each of their objectives, with minimized objectives entering negated (so
``perplexity`` with weight 0.1 subtracts 0.1 × perplexity). ``mode: pareto`` keeps every child objective,
named ``label/objective``, with its own direction. Per-example vectors are concatenated in suite order
(suites without one contribute nothing); ``metrics["per_example_slices"]`` says which part is whose.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from evomerge.types import Objective
from fitness.base import FitnessConfig, FitnessResult, FitnessSuite
from fitness.registry import build_suite, register_suite, suite_config


class CompositeConfig(FitnessConfig):
    name: str = "composite"
    suites: list[SerializeAsAny[FitnessConfig]] = Field(min_length=1)
    mode: Literal["weighted", "pareto"] = "weighted"
    objective: str = "fitness"
    """Name of the single objective in weighted mode."""

    @field_validator("suites", mode="before")
    @classmethod
    def _child_configs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [suite_config(item, path=f"suites.{i}") for i, item in enumerate(value)]
        return value

    @model_validator(mode="after")
    def _distinct_labels(self) -> CompositeConfig:
        seen: set[str] = set()
        for child in self.suites:
            label = child.label or child.name
            if label in seen:
                raise ValueError(f"two suites are labelled {label!r}; give each a distinct 'label'")
            seen.add(label)
        return self


@register_suite
class CompositeSuite(FitnessSuite):
    name = "composite"
    Config = CompositeConfig
    config: CompositeConfig

    def __init__(self, config: CompositeConfig, seed_tree: Any = None, base_dir: Any = None) -> None:
        super().__init__(config, seed_tree, base_dir)
        self.children: list[FitnessSuite] = [
            build_suite(child, self.seed_tree.child(f"composite/{child.label or child.name}"), self.base_dir)
            for child in config.suites
        ]
        self.supports_fidelity = any(child.supports_fidelity for child in self.children)

    def objectives(self) -> list[Objective]:
        if self.config.mode == "weighted":
            return [Objective(self.config.objective, "maximize")]
        return [Objective(f"{c.label}/{o.name}", o.direction) for c in self.children for o in c.objectives()]

    def _prepare(self) -> None:
        for child in self.children:
            child.prepare(self.device)

    def set_fidelity(self, fraction: float | None) -> None:
        super().set_fidelity(fraction)
        for child in self.children:
            if child.supports_fidelity:
                child.set_fidelity(self.fidelity)

    def __call__(self, model: Any, tokenizer: Any = None) -> FitnessResult:
        self.ensure_prepared(model)
        objectives: dict[str, float] = {}
        metrics: dict[str, Any] = {}
        pieces: list[np.ndarray] = []
        slices: dict[str, list[int]] = {}
        weighted = 0.0
        for child in self.children:
            result = child(model, tokenizer)
            for objective in child.objectives():
                if objective.name not in result.objectives:
                    raise ValueError(f"suite {child.label!r} returned no value for objective {objective.name!r}")
                value = result.objectives[objective.name]
                objectives[f"{child.label}/{objective.name}"] = value
                weighted += child.config.weight * objective.signed(value)
            metrics.update({f"{child.label}/{k}": v for k, v in result.metrics.items()})
            if result.per_example is not None:
                start = sum(len(p) for p in pieces)
                slices[child.label] = [start, start + len(result.per_example)]
                pieces.append(result.per_example)
        metrics["per_example_slices"] = slices
        if self.config.mode == "weighted":
            metrics.update(objectives)
            objectives = {self.config.objective: weighted}
        per_example = np.concatenate(pieces) if pieces else None
        return FitnessResult(objectives, per_example, metrics)
