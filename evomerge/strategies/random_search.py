"""Uniform random search: the baseline every other strategy must beat at equal evaluations."""

from __future__ import annotations

from collections.abc import Sequence

from evomerge.strategies.base import Strategy, StrategyConfig, register_strategy
from evomerge.strategies.pending import check_ask
from evomerge.types import Candidate, Evaluation


class RandomConfig(StrategyConfig):
    name: str = "random"


@register_strategy
class RandomStrategy(Strategy):
    """Samples every candidate independently: continuous coordinates uniform in the unit cube (so log
    dimensions are log-uniform), categorical choices uniform over their options. Results are ignored, so
    the only state is the base class's uid counter and RNG."""

    name = "random"
    Config = RandomConfig

    def ask(self, n: int) -> list[Candidate]:
        check_ask(n)
        return [self.make_candidate(self.space.sample(self.rng)) for _ in range(n)]

    def tell(self, evaluations: Sequence[Evaluation]) -> None:
        return None
