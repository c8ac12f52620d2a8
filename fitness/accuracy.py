"""``accuracy``: classification accuracy of any ``torch.nn.Module`` on an in-memory data set.

The split is loaded once, moved to the device once, and every call is a few batched forward passes under
``torch.inference_mode``. The per-example score is 1 for a correct prediction and 0 otherwise, the vector
M2N2 needs to reward models that solve examples others miss.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from evomerge.errors import ConfigError
from evomerge.types import Objective
from fitness.base import FitnessConfig, FitnessResult, FitnessSuite, held_out_split_problem, model_device
from fitness.datasets import IMAGE_SHAPES, Split, load_split
from fitness.registry import register_suite


class AccuracyConfig(FitnessConfig):
    name: str = "accuracy"
    dataset: str = "digits"
    """``mnist``, ``digits``, another registered data set, or ``module:function`` returning ``(X, y)``."""
    split: Literal["train", "search", "test"] = "search"
    allow_test_split: bool = False
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 0
    """Seed of the train/search/test cut; fixed apart from the run seed so every run uses the same cut."""
    input_shape: Literal["flat", "image"] | tuple[int, ...] = "flat"
    """``flat`` rows, ``image`` (C, H, W) for the built-in sets, or an explicit per-example shape."""
    batch_size: int = Field(1024, gt=0)
    objective: str = "accuracy"

    @field_validator("split_fractions")
    @classmethod
    def _positive(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or sum(v) <= 0:
            raise ValueError(f"split_fractions must be non-negative with a positive sum, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _guard(self) -> AccuracyConfig:
        problem = held_out_split_problem(self.split, self.allow_test_split, f"dataset {self.dataset!r}")
        if problem:
            raise ValueError(problem)
        return self


@register_suite
class AccuracySuite(FitnessSuite):
    name = "accuracy"
    Config = AccuracyConfig
    config: AccuracyConfig

    def __init__(self, config: AccuracyConfig, seed_tree: Any = None, base_dir: Any = None) -> None:
        super().__init__(config, seed_tree, base_dir)
        self._data: Split | None = None
        self._x: Any = None
        self._y: Any = None

    def objectives(self) -> list[Objective]:
        return [Objective(self.config.objective, "maximize")]

    def _shape(self) -> tuple[int, ...] | None:
        shape = self.config.input_shape
        if shape == "flat":
            return None
        if shape == "image":
            if self.config.dataset not in IMAGE_SHAPES:
                raise ConfigError(f"input_shape 'image' needs an explicit shape for dataset {self.config.dataset!r}")
            return IMAGE_SHAPES[self.config.dataset]
        return tuple(shape)

    def _prepare(self) -> None:
        import torch

        if self._data is None:
            cfg = self.config
            self._data = load_split(cfg.dataset, cfg.split, cfg.split_fractions, cfg.split_seed)
            if len(self._data.y) == 0:
                raise ConfigError(f"split {cfg.split!r} of dataset {cfg.dataset!r} is empty")
        x = torch.from_numpy(self._data.x)
        shape = self._shape()
        if shape is not None:
            x = x.reshape(len(x), *shape)
        self._x = x.to(self.device)
        self._y = torch.from_numpy(self._data.y).to(self.device)

    @property
    def n_examples(self) -> int:
        return 0 if self._data is None else len(self._data.y)

    def __call__(self, model: Any, tokenizer: Any = None) -> FitnessResult:
        import torch

        self.ensure_prepared(model)
        device = model_device(model)
        if self._x.device != device:
            self.prepare(str(device))
        rows = torch.from_numpy(self.subset("examples", self.n_examples)).to(device)
        dtype = next((p.dtype for p in _parameters(model) if p.is_floating_point()), self._x.dtype)
        was_training = bool(getattr(model, "training", False))
        if hasattr(model, "eval"):
            model.eval()
        correct = []
        try:
            with torch.inference_mode():
                for start in range(0, len(rows), self.config.batch_size):
                    batch = rows[start : start + self.config.batch_size]
                    logits = _logits(model(self._x[batch].to(dtype)))
                    correct.append((logits.argmax(dim=-1) == self._y[batch]).to(torch.float64))
        finally:
            if was_training:
                model.train()
        per_example = torch.cat(correct).cpu().numpy()
        accuracy = float(np.mean(per_example))
        return FitnessResult(
            {self.config.objective: accuracy},
            per_example,
            {"n_examples": len(per_example), "fidelity": self.fidelity_label()},
        )


def _logits(output: Any) -> Any:
    """Logits from a plain tensor, a ``ModelOutput`` with ``.logits``, or a tuple whose first item they are."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    if isinstance(output, tuple | list):
        return output[0]
    return output


def _parameters(model: Any) -> list[Any]:
    return list(model.parameters()) if hasattr(model, "parameters") else []
