"""A toy space, strategy and objective for exercising the population manager without models."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.config import BudgetConfig, EvaluationConfig, MultiFidelityConfig
from evomerge.distributed.pool import CallablePool
from evomerge.plan import MergePlan
from evomerge.population.manager import PopulationManager
from evomerge.population.run_dir import RunDir
from evomerge.strategies.base import Strategy, StrategyConfig
from evomerge.types import Candidate, Evaluation, Genome, Objective
from search_spaces.base import FloatDim, SearchSpace


class ToySpace(SearchSpace):
    name = "toy"

    def __init__(self, dim: int = 3) -> None:
        super().__init__([FloatDim(f"w{i}", 0.0, 1.0) for i in range(dim)])

    def decode(self, genome: Genome) -> MergePlan:
        return MergePlan.from_dict({
            "merge_method": "linear", "dialect": "evomerge",
            "models": [{"model": f"m{i}", "parameters": {"weight": round(float(v), 12)}} for i, v in enumerate(genome.vector)],
        })

    def encode(self, plan: MergePlan) -> Genome:
        assert plan.models is not None
        return Genome(np.array([float(m.parameters["weight"]) for m in plan.models]))  # type: ignore[index,arg-type]


class HillClimbConfig(StrategyConfig):
    name: str = "hill"
    step: float = 0.2


class HillClimb(Strategy):
    """Proposes around the best genome told so far: its proposals depend on the order of tells."""

    name = "hill"
    Config = HillClimbConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.best: tuple[float, np.ndarray] | None = None
        self.gen = 0

    def ask(self, n: int) -> list[Candidate]:
        out = []
        for _ in range(n):
            center = self.best[1] if self.best else self.space.start().vector
            vec = center + self.rng.normal(0, self.config.step, self.space.dimension)  # type: ignore[attr-defined]
            out.append(self.make_candidate(Genome(vec), generation=self.gen))
        self.gen += 1
        return out

    def tell(self, evaluations: Sequence[Evaluation]) -> None:
        for ev in evaluations:
            s = self.scores(ev)
            if s is None:
                continue
            vec = np.array(ev.metrics["vector"])
            if self.best is None or s[0] > self.best[0]:
                self.best = (float(s[0]), vec)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best": self.best, "gen": self.gen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best, self.gen = state["best"], state["gen"]


def objective(candidate: Candidate, fidelity: float | None) -> Evaluation:
    from evomerge.types import EvalStatus

    x = candidate.genome.vector
    value = -float(np.sum((x - 0.7) ** 2))
    if fidelity is not None:  # a subset score: the same ranking plus small deterministic noise
        value += 0.001 * math.sin(1000 * float(x[0]))
    if x[0] > 0.95:
        raise ValueError("toy failure region")
    return Evaluation(uid=candidate.uid, status=EvalStatus.OK, objectives={"score": value},
                      metrics={"vector": [float(v) for v in x]})


def make_manager(run_dir: Path, evaluations: int, mode: str = "generational", batch: int = 4,
                 halving: bool = False, kill_after: int | None = None, seed: int = 0) -> PopulationManager:
    space = ToySpace()
    strategy = HillClimb(space, [Objective("score")], seed=seed)
    counter = {"n": 0}

    def fn(c: Candidate, f: float | None) -> Evaluation:
        counter["n"] += 1
        if kill_after is not None and counter["n"] > kill_after:
            import os
            import signal

            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return objective(c, f)

    pool = CallablePool(fn)
    pool.capacity = 2
    cfg = EvaluationConfig(mode=mode, batch_size=batch,
                           multi_fidelity=MultiFidelityConfig(subset=0.3, promote=0.5) if halving else None)
    rd = RunDir(run_dir)
    return PopulationManager(strategy, pool, rd, [Objective("score")], BudgetConfig(evaluations=evaluations), cfg)


if __name__ == "__main__":  # used by the SIGKILL test: python manager_toys.py RUN_DIR N MODE KILL_AFTER [halving]
    m = make_manager(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], kill_after=int(sys.argv[4]),
                     halving=sys.argv[5:] == ["halving"])
    m.run()
