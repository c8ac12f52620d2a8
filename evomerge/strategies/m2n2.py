"""M2N2 — Model Merging of Natural Niches, as a steady-state ask/tell strategy.

An archive of ``pop_size`` genomes, each with a score vector (one entry per resource). The archive starts
with ``space.initial_points()`` (the source models, or random-init vectors for from-scratch spaces), filled
up with ``space.sample()``; children are bred only once all of those are scored. Each child: parents by
fitness and attraction, split-point crossover, optional Gaussian mutation; on its result it replaces the
weakest archive member if, with the child competing too, the weakest is not the child itself.

Resources (``scores``): an evaluation's per-example scores (non-negative, e.g. correctness; negatives are
clipped to 0), or, without them, one resource per objective (signed values shifted so the archive's worst
is 0; with one objective this ranks by the objective). ``auto`` picks by the first successful result.
Crossover and mutation act on the raw genome (as the reference does on network weights) or on the unit
cube (``operate_in``). Categorical choices are inherited from either parent with equal odds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from evomerge.errors import ConfigError
from evomerge.strategies import niches
from evomerge.strategies.base import Strategy, StrategyConfig, register_strategy
from evomerge.strategies.pending import Pending, check_ask
from evomerge.strategies.unit_cube import UnitCube
from evomerge.types import Candidate, Evaluation, Genome


class M2N2Config(StrategyConfig):
    name: str = "m2n2"
    pop_size: int = Field(20, ge=2)
    alpha: float = Field(1.0, ge=0, description="competition strength (0: plain fitness)")
    capacity: float | list[float] = Field(
        1.0, description="resource capacity c_j (scalar or one per resource)"
    )
    use_competition: bool = True
    use_matchmaker: bool = True
    use_crossover: bool = True
    use_splitpoint: bool = True
    mixing: Literal["slerp", "linear"] = "slerp"
    mutation_std: float = Field(0.0, ge=0, description="Gaussian noise std per coordinate (0: none)")
    operate_in: Literal["raw", "unit"] = "raw"
    cat_mutation_prob: float = Field(0.0, ge=0, le=1, description="chance to resample each categorical")
    initial_fill: Literal["sample", "none"] = "sample"
    scores: Literal["auto", "per_example", "objectives"] = "auto"

    @field_validator("capacity")
    @classmethod
    def _positive(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        if not values or any(not (c > 0) for c in values):
            raise ValueError("capacities must be > 0")
        return v


@register_strategy
class M2N2Strategy(Strategy):
    name = "m2n2"
    Config = M2N2Config
    config: M2N2Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cube = UnitCube(self.space)
        self.alpha = self.config.alpha if self.config.use_competition else 0.0
        self.mode: str | None = None if self.config.scores == "auto" else self.config.scores
        self.uids: list[str] = []
        self.genomes: list[Genome] = []
        self.rows: list[np.ndarray] = []
        self.pending: Pending[tuple[str, Genome]] = Pending()
        self.queue: list[Genome] = self._initial_genomes()
        self.n_told = 0
        self.n_admitted = 0

    def _initial_genomes(self) -> list[Genome]:
        points = [self.space.clip(g) for g in self.space.initial_points()]
        target = self.config.pop_size if self.config.initial_fill == "sample" else 2
        while len(points) < target:
            points.append(self.space.sample(self.rng))
        return points

    # ------------------------------------------------------------------ ask
    def ask(self, n: int) -> list[Candidate]:
        check_ask(n)
        out: list[Candidate] = []
        while len(out) < n:
            if self.queue:
                genome = self.queue.pop(0)
                cand = self.make_candidate(genome, meta={"role": "init"})
            elif any(role == "init" for role, _ in self.pending.payloads()):
                break  # children need a fully scored initial archive
            elif not self.rows:  # every initial genome failed: start over from two fresh samples
                self.queue = [self.space.sample(self.rng) for _ in range(2)]
                continue
            else:
                cand = self._child()
            self.pending.add(cand.uid, (str(cand.meta["role"]), cand.genome))
            out.append(cand)
        return out

    def _child(self) -> Candidate:
        cfg = self.config
        shared = niches.shared_scores(self._resource_matrix(self.rows), self.alpha, self._capacity())
        a, b = niches.sample_parents(self.rng, shared, cfg.use_matchmaker)
        ga, gb = self.genomes[a], self.genomes[b]
        to_unit = cfg.operate_in == "unit"
        va = self.cube.to_unit(ga.vector) if to_unit else ga.vector
        vb = self.cube.to_unit(gb.vector) if to_unit else gb.vector
        meta: dict[str, Any] = {"role": "child"}
        if cfg.use_crossover:
            w = float(self.rng.random())
            split = int(self.rng.integers(0, va.size)) if cfg.use_splitpoint and va.size else None
            child = niches.interpolate(niches.mixing_weights(va.size, w, split), va, vb, cfg.mixing)
            pick_a = self.rng.random(len(ga.choices)) < 0.5
            choices = [ca if keep else cb for ca, cb, keep in zip(ga.choices, gb.choices, pick_a)]
            meta.update(w=w, split=split)
        else:
            child, choices = va.copy(), list(ga.choices)
        if cfg.mutation_std > 0:
            child = child + self.rng.normal(0.0, cfg.mutation_std, child.size)
        if cfg.cat_mutation_prob > 0:
            flip = self.rng.random(len(choices)) < cfg.cat_mutation_prob
            choices = [
                int(self.rng.integers(k)) if f else c for c, f, k in zip(choices, flip, self.cube.n_choices)
            ]
        genome = self.cube.genome(child, choices) if to_unit else Genome(child, tuple(choices))
        generation = self.n_told // cfg.pop_size
        return self.make_candidate(
            genome, parents=(self.uids[a], self.uids[b]), generation=generation, meta=meta
        )

    # ------------------------------------------------------------------ tell
    def tell(self, evaluations: Sequence[Evaluation]) -> None:
        for ev, (_, genome) in self.pending.take(evaluations):
            self.n_told += 1
            row = self._score_row(ev)
            if row is not None:
                self._admit(ev.uid, genome, row)

    def _score_row(self, ev: Evaluation) -> np.ndarray | None:
        signed = self.scores(ev)
        if signed is None:
            return None
        if self.mode is None:
            self.mode = "per_example" if ev.per_example is not None else "objectives"
        if self.mode == "objectives":
            return signed
        per = None if ev.per_example is None else np.asarray(ev.per_example, dtype=np.float64).reshape(-1)
        expected = self.rows[0].size if self.rows else None
        if per is None or (expected is not None and per.size != expected) or not np.all(np.isfinite(per)):
            warnings.warn(f"m2n2: {ev.uid} has no usable per-example scores; treated as failed", stacklevel=2)
            return None
        return np.maximum(per, 0.0)

    def _admit(self, uid: str, genome: Genome, row: np.ndarray) -> None:
        cap = self.config.capacity
        if isinstance(cap, list) and len(cap) != row.size:
            raise ConfigError(f"{len(cap)} capacities given for {row.size} resources", "strategy.capacity")
        if len(self.rows) < self.config.pop_size:
            slot = len(self.rows)
            self.uids.append(uid)
            self.genomes.append(genome)
            self.rows.append(row)
        else:
            matrix = self._resource_matrix([*self.rows, row])
            slot = niches.replacement_index(matrix, self.alpha, self._capacity())
            if slot == len(self.rows):
                return
            self.uids[slot], self.genomes[slot], self.rows[slot] = uid, genome, row
        self.n_admitted += 1

    def _resource_matrix(self, rows: list[np.ndarray]) -> np.ndarray:
        matrix = np.stack(rows)
        if self.mode == "objectives":
            matrix = matrix - matrix.min(axis=0, keepdims=True)
        return matrix

    def _capacity(self) -> np.ndarray | float:
        cap = self.config.capacity
        return np.asarray(cap, dtype=np.float64) if isinstance(cap, list) else float(cap)

    # ------------------------------------------------------------------ views and state
    def archive(self) -> list[dict[str, Any]]:
        """The current archive: uid, genome, resource-shared fitness, best first."""
        if not self.rows:
            return []
        fitness = niches.competition_fitness(self._resource_matrix(self.rows), self.alpha, self._capacity())
        order = np.argsort(-fitness, kind="stable")
        return [{"uid": self.uids[i], "genome": self.genomes[i], "fitness": float(fitness[i])} for i in order]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            mode=self.mode,
            uids=list(self.uids),
            genomes=[(g.vector.copy(), g.choices) for g in self.genomes],
            rows=[r.copy() for r in self.rows],
            pending=self.pending.state_dict(),
            queue=[(g.vector.copy(), g.choices) for g in self.queue],
            n_told=self.n_told,
            n_admitted=self.n_admitted,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.mode = state["mode"]
        self.uids = list(state["uids"])
        self.genomes = [Genome(v, c) for v, c in state["genomes"]]
        self.rows = [np.asarray(r, dtype=np.float64) for r in state["rows"]]
        self.pending.load_state_dict(state["pending"])
        self.queue = [Genome(v, c) for v, c in state["queue"]]
        self.n_told = int(state["n_told"])
        self.n_admitted = int(state["n_admitted"])
