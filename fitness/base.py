"""The fitness-suite contract: what a candidate is scored on.

An evaluator builds a suite once, calls :meth:`FitnessSuite.prepare` once, then calls the suite on its one
resident model after every in-place merge. A suite therefore keeps everything that does not depend on the
weights (data, tokenized inputs, lm-eval task objects, the ``HFLM`` wrapper) and must never keep anything
that does. A call returns a :class:`FitnessResult`: named objectives (directions declared by
:meth:`FitnessSuite.objectives`) plus one score per example, larger is better, which M2N2's competition
for examples needs.

Multi-fidelity: :meth:`FitnessSuite.set_fidelity` restricts later calls to a seeded, fixed subset of the
examples, the same for every candidate, and nested (the examples at fraction ``f`` include those at any
smaller fraction), so successive halving compares candidates on equal terms.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evomerge.seeding import SeedTree
from evomerge.types import Objective
from fitness.fidelity import SubsetSampler, check_fraction
from fitness.options import reject_unknown_keys

if TYPE_CHECKING:
    import torch


@dataclass
class FitnessResult:
    """One suite call's scores: objectives by name, per-example scores (larger is better), extra metrics."""

    objectives: dict[str, float]
    per_example: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.objectives = {str(k): float(v) for k, v in self.objectives.items()}
        if self.per_example is not None:
            self.per_example = np.asarray(self.per_example, dtype=np.float64).reshape(-1)


class FitnessConfig(BaseModel):
    """Base of every suite's config section; a suite subclasses it and adds its options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    weight: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    """Weight of this suite's objectives inside a weighted composite."""
    label: str | None = None
    """Prefix of this suite's objectives inside a composite (default: its name)."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            cls.check_keys(data)
        return data

    @classmethod
    def check_keys(cls, data: dict[str, Any]) -> None:
        """Raise ``ValueError`` for an unknown option, naming it (suites extend this with their own rules)."""
        reject_unknown_keys(data, set(cls.model_fields), f"{data.get('name', 'fitness')} suite option")


class FitnessSuite(ABC):
    """A scorer of in-memory models. Subclasses set ``name``/``Config`` and implement the abstract parts."""

    name: ClassVar[str]
    Config: ClassVar[type[FitnessConfig]]
    supports_fidelity: bool = True
    """Whether :meth:`set_fidelity` below 1 is meaningful (class default; a suite may set it per instance)."""

    def __init__(
        self, config: FitnessConfig, seed_tree: SeedTree | int | None = None, base_dir: str | Path | None = None
    ) -> None:
        self.config = config
        self.seed_tree = seed_tree if isinstance(seed_tree, SeedTree) else SeedTree(seed_tree)
        self.base_dir = Path(base_dir if base_dir is not None else ".").expanduser().resolve()
        self.device: str = "cpu"
        self.prepared = False
        self._fidelity: float | None = None
        self._warned_fidelity = False
        self._subsets = SubsetSampler(self.seed_tree.child(f"fitness/{self.label}/subset"))

    @property
    def label(self) -> str:
        return self.config.label or self.config.name

    # ------------------------------------------------------------------ contract
    @abstractmethod
    def objectives(self) -> list[Objective]:
        """Names and directions of the objectives every call returns (known before :meth:`prepare`)."""

    def prepare(self, device: str | torch.device = "cpu") -> None:
        """Load and pre-process everything weight-independent onto ``device``; idempotent."""
        self.device = str(device)
        self._prepare()
        self.prepared = True

    def _prepare(self) -> None:
        """Suite-specific part of :meth:`prepare` (data loading, task building); nothing by default."""
        return None

    @abstractmethod
    def __call__(self, model: Any, tokenizer: Any = None) -> FitnessResult:
        """Score ``model`` as it is now; must not keep anything derived from its weights."""

    def ensure_prepared(self, model: Any) -> None:
        """Prepare on the model's device when the caller skipped :meth:`prepare`."""
        if not self.prepared:
            self.prepare(str(model_device(model)))

    # ------------------------------------------------------------------ multi-fidelity
    @property
    def fidelity(self) -> float | None:
        """The fraction of examples scored (None: all of them)."""
        return self._fidelity

    def set_fidelity(self, fraction: float | None) -> None:
        """Score later calls on a seeded fixed subset holding ``fraction`` of the examples (None: all).

        A suite that cannot subsample (``supports_fidelity`` false) keeps scoring everything, which keeps
        results comparable, and warns once.
        """
        fraction = check_fraction(fraction)
        if fraction is not None and fraction < 1.0 and not self.supports_fidelity:
            if not self._warned_fidelity:
                warnings.warn(f"fitness suite {self.label!r} cannot score a subset; it scores all examples", stacklevel=2)
                self._warned_fidelity = True
            fraction = None
        self._fidelity = None if fraction is None or fraction >= 1.0 else fraction

    def subset(self, key: str, n: int) -> np.ndarray:
        """Sorted indices into ``range(n)`` to score at the current fidelity (all of them at full fidelity)."""
        return self._subsets.indices(key, n, self._fidelity)

    def fidelity_label(self) -> str:
        """``full`` or ``subset:<fraction>``, the form :attr:`Evaluation.fidelity` uses."""
        return "full" if self._fidelity is None else f"subset:{self._fidelity:g}"


def held_out_split_problem(split: str | None, allowed: bool, where: str) -> str | None:
    """Why scoring ``split`` is refused: optimising on a split named ``test`` needs explicit consent."""
    if split is not None and split.lower() == "test" and not allowed:
        return (
            f"{where} would be scored on split 'test', the held-out split; optimising on it leaks it into "
            "the search (use the 'search' or a validation split, or set allow_test_split: true)"
        )
    return None


def model_device(model: Any) -> torch.device:
    """The device of a model's first parameter (CPU for parameter-less callables)."""
    import torch

    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")
