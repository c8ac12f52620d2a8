"""The ask/tell contract every search strategy implements (as in optuna, nevergrad and pycma).

* ``ask(n)`` proposes up to ``n`` new candidates. It never blocks: a strategy that must wait for results
  (CMA-ES between generations, say) returns fewer, possibly none, and the population manager delivers
  pending results before asking again. Candidates carry a genome from the strategy's search space, the
  plan it decodes to, a uid unique within the run, their parents, generation and niche.
* ``tell(evaluations)`` reports results, in any order, for candidates this strategy proposed. Failed,
  invalid and timed-out evaluations are results too and must be accepted (typically ranked worst).
* ``state_dict()`` / ``load_state_dict()`` capture everything needed to continue exactly (RNG state
  included): a strategy restored mid-run proposes exactly what the original would have.

Strategies see genomes and objective values only: they never import torch models or fitness code.
Larger is better for every objective after :meth:`Objective.signed`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from evomerge.registry import Registry
from evomerge.seeding import SeedTree
from evomerge.types import Candidate, Evaluation, Genome, Objective
from search_spaces.base import SearchSpace


class StrategyConfig(BaseModel):
    """Base of every strategy's config section (``strategy:`` in YAML); subclasses add their fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str


class Strategy(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[StrategyConfig]]

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        seed: SeedTree | int = 0,
        config: StrategyConfig | None = None,
        run_dir: str | None = None,
    ) -> None:
        self.space = space
        self.objectives = list(objectives)
        if not self.objectives:
            raise ValueError("a strategy needs at least one objective")
        self.seed_tree = seed if isinstance(seed, SeedTree) else SeedTree(seed)
        self.config = config if config is not None else self.Config(name=self.name)
        self.run_dir = run_dir
        self.rng: np.random.Generator = self.seed_tree.generator("strategy/" + self.name)
        self._counter = 0

    # ------------------------------------------------------------------ contract
    @abstractmethod
    def ask(self, n: int) -> list[Candidate]: ...

    @abstractmethod
    def tell(self, evaluations: Sequence[Evaluation]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {"counter": self._counter, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._counter = int(state["counter"])
        self.rng.bit_generator.state = state["rng"]

    @property
    def batch_hint(self) -> int | None:
        """The batch this strategy naturally works in (CMA-ES's population), for generational mode."""
        return None

    @property
    def finished(self) -> bool:
        """True when the strategy has nothing more to propose (e.g. CMA-ES converged, no restarts left)."""
        return False

    # ------------------------------------------------------------------ helpers for subclasses
    def next_uid(self) -> str:
        uid = f"{self.name}-{self._counter:06d}"
        self._counter += 1
        return uid

    def make_candidate(
        self,
        genome: Genome,
        *,
        parents: Sequence[str] = (),
        generation: int = 0,
        niche: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Candidate:
        genome = self.space.clip(genome)
        return Candidate(
            uid=self.next_uid(),
            genome=genome,
            plan=self.space.decode(genome),
            parents=tuple(parents),
            generation=generation,
            niche=niche,
            strategy=self.name,
            meta=dict(meta or {}),
        )

    def scores(self, evaluation: Evaluation) -> np.ndarray | None:
        """The evaluation's objectives, oriented so that larger is better; ``None`` if it failed."""
        if not evaluation.ok:
            return None
        try:
            return np.array([o.signed(float(evaluation.objectives[o.name])) for o in self.objectives])
        except KeyError:
            return None

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", entry_point_group="evomerge.strategies")


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES.register(cls.name, cls)
    return cls


def get_strategy(name: str, path: str | None = "strategy.name") -> type[Strategy]:
    import evomerge.strategies  # noqa: F401  (registers the built-in strategies)

    return STRATEGIES.get(name, path)
