"""CMA-ES (pycma) in the space's unit cube, with IPOP restarts and a learned categorical distribution.

* Continuous coordinates: ``cma.CMAEvolutionStrategy`` over [0, 1]^d (bounds handled by pycma), x0 from
  ``space.start()``, ``sigma0`` in unit-cube units, popsize ``4 + ⌊3 ln d⌋`` unless given. pycma minimises,
  so the loss is the negated (signed) objective. Its normal draws come from a generator of the run's seed
  tree (pycma's ``randn`` option), never from numpy's global RNG, and the whole ``es`` is pickled into
  the state dict.
* Generational: ``ask`` hands out what remains of the current generation and returns ``[]`` while the
  generation's results are outstanding; the generation is told to pycma once all of them are in.
* Failed evaluations get a loss worse than any seen so far plus their distance to the mean (CMA-ES is
  rank-based, so only the order matters; the distance keeps an all-failed generation from looking flat,
  which would stop pycma, and pulls the search back toward where it came from).
* IPOP: when pycma's stop criteria fire, the search restarts from a uniformly random point with the
  population multiplied by ``incpopsize`` (doubling by default), up to ``restarts`` times. ``options``
  passes further pycma options (checked against pycma's list), e.g. to keep going through generations
  whose candidates all tie, which ends pycma's run by default (``tolflatfitness: 1``).
* Categorical dimensions: sampled from a :class:`CategoricalModel` updated toward the best half of each
  generation (CMA-ES itself sees only the continuous coordinates).
* Checkpoints inside a generation hold the ``es`` as it was *before* that generation's ``ask``; loading
  re-asks it (the draws are seeded, so the same points come back). pycma files the points it hands out
  under ``hash(x.tobytes())``, which Python salts per process: an ``es`` pickled after ``ask`` and told in
  another process would not find its own points (wrong genotypes in the update, "orphanated injected
  solution" warnings) and the resumed run would drift from the uninterrupted one.
"""

from __future__ import annotations

import difflib
import math
import pickle
from collections.abc import Sequence
from typing import Any, Literal

import cma
import numpy as np
from pydantic import Field, field_validator

from evomerge.errors import ConfigError, RunStateError
from evomerge.strategies.base import Strategy, StrategyConfig, register_strategy
from evomerge.strategies.categorical import CategoricalModel
from evomerge.strategies.pending import Pending, check_ask
from evomerge.strategies.unit_cube import UnitCube
from evomerge.types import Candidate, Evaluation

STRATEGY_OWNED = {
    "bounds": "the unit cube",
    "popsize": "use strategy.popsize",
    "seed": "the run's seed tree",
    "randn": "the run's seed tree",
    "tolx": "use strategy.tolx",
    "CMA_diagonal": "use strategy.diagonal",
}
"""pycma options the strategy sets itself, refused in ``options``."""


class CMAESConfig(StrategyConfig):
    name: str = "cmaes"
    sigma0: float = Field(1 / 6, gt=0, le=1, description="initial step size in unit-cube units")
    popsize: int | None = Field(None, ge=2, description="λ of the first run; default 4 + ⌊3 ln d⌋")
    restarts: int = Field(0, ge=0, description="IPOP restarts after pycma's stop criteria fire")
    incpopsize: float = Field(2.0, ge=1.0, description="popsize factor per restart")
    diagonal: Literal["auto", "always", "never"] = "auto"
    diagonal_above: int = Field(500, ge=1, description="'auto' uses a diagonal covariance above this d")
    tolx: float = Field(1e-4, gt=0, description="stop (and restart) when steps in the unit cube fall below")
    cat_learning_rate: float = Field(0.3, gt=0, le=1)
    cat_floor: float = Field(0.05, ge=0, lt=1, description="each option keeps ≥ cat_floor/k probability")
    options: dict[str, float | int | bool | str] = Field(
        default_factory=dict,
        description="further pycma options, e.g. {tolflatfitness: 1000000} to keep going through generations "
        "that tie (accuracy on a few hundred examples often does)",
    )

    @field_validator("options")
    @classmethod
    def _known_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        """pycma accepts a misspelt option silently; here it is an error naming the key."""
        known = cma.CMAOptions()
        for key in v:
            if key in STRATEGY_OWNED:
                raise ValueError(f"{key!r} is set by the strategy ({STRATEGY_OWNED[key]})")
            if key not in known:
                near = difflib.get_close_matches(key, list(known), n=3)
                raise ValueError(f"unknown pycma option {key!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))
        return v


class NormalSource:
    """pycma's ``randn(λ, d)`` drawn from a seeded numpy Generator (picklable with the ``es``)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


def default_popsize(dimension: int) -> int:
    return 4 + math.floor(3 * math.log(max(1, dimension)))


@register_strategy
class CMAESStrategy(Strategy):
    name = "cmaes"
    Config = CMAESConfig
    config: CMAESConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.multi_objective:
            names = ", ".join(o.name for o in self.objectives)
            raise ConfigError(
                f"cmaes optimises one objective, got {len(self.objectives)} ({names}); "
                "use optuna, layerwise_zo or map_pareto for several",
                "strategy.name",
            )
        self.cube = UnitCube(self.space)
        self.cats = CategoricalModel(
            self.space.n_choices, self.config.cat_learning_rate, self.config.cat_floor
        )
        size_dims = self.cube.dimension or len(self.space.cat_dims)
        self.popsize = self.config.popsize or default_popsize(size_dims)
        self.run = 0
        self.generation = 0
        self.worst_loss: float | None = None
        self._finished = False
        self.batch: list[dict[str, Any]] | None = None
        self.pending: Pending[int] = Pending()
        self.es = self._new_es(self.cube.to_unit(self.space.start().vector)) if self.cube.dimension else None
        self.es_before_ask: bytes | None = None
        """The pickled ``es`` before the current generation's ``ask`` (what a checkpoint stores)."""

    # ------------------------------------------------------------------ pycma
    def _new_es(self, x0: np.ndarray) -> cma.CMAEvolutionStrategy:
        cfg = self.config
        diagonal = cfg.diagonal == "always" or (
            cfg.diagonal == "auto" and self.cube.dimension > cfg.diagonal_above
        )
        opts: dict[str, Any] = {
            "bounds": [0.0, 1.0],
            "popsize": self.popsize,
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
            "seed": float("nan"),
            "randn": NormalSource(self.seed_tree.generator(f"strategy/cmaes/run{self.run}")),
            "tolx": cfg.tolx,
            **cfg.options,
        }
        if diagonal:
            opts["CMA_diagonal"] = True
        return cma.CMAEvolutionStrategy(np.clip(x0, 0.0, 1.0).tolist(), cfg.sigma0, opts)

    def _new_generation(self) -> list[dict[str, Any]]:
        if self.es is not None:
            self.es_before_ask = pickle.dumps(self.es)
        points = self.es.ask() if self.es is not None else [np.zeros(0)] * self.popsize
        return [
            {"x": np.asarray(x), "choices": self.cats.sample(self.rng), "loss": None, "issued": False}
            for x in points
        ]

    # ------------------------------------------------------------------ contract
    @property
    def batch_hint(self) -> int | None:
        return self.popsize

    def ask(self, n: int) -> list[Candidate]:
        check_ask(n)
        out: list[Candidate] = []
        while len(out) < n and not self._finished:
            if self.batch is None:
                self.batch = self._new_generation()
            slot = next((i for i, s in enumerate(self.batch) if not s["issued"]), None)
            if slot is None:
                break  # waiting for this generation's results
            entry = self.batch[slot]
            entry["issued"] = True
            cand = self.make_candidate(
                self.cube.genome(entry["x"], entry["choices"]),
                generation=self.generation,
                meta={"run": self.run, "popsize": self.popsize},
            )
            self.pending.add(cand.uid, slot)
            out.append(cand)
        return out

    def tell(self, evaluations: Sequence[Evaluation]) -> None:
        if self.batch is None:
            return
        for ev, slot in self.pending.take(evaluations):
            score = self.scores(ev)
            self.batch[slot]["loss"] = float("nan") if score is None else -float(score[0])
        if all(s["issued"] for s in self.batch) and len(self.pending) == 0:
            self._close_generation(self.batch)

    def _close_generation(self, batch: list[dict[str, Any]]) -> None:
        ok = [s["loss"] for s in batch if not math.isnan(s["loss"])]
        if ok:
            self.worst_loss = max([*ok, self.worst_loss]) if self.worst_loss is not None else max(ok)
        base = 1.0 if self.worst_loss is None else self.worst_loss + max(1.0, abs(self.worst_loss))
        mean = self.es.mean if self.es is not None else np.zeros(0)
        losses = [
            base + float(np.linalg.norm(s["x"] - mean)) if math.isnan(s["loss"]) else s["loss"] for s in batch
        ]
        order = np.argsort(losses, kind="stable")
        elite = [
            batch[i]["choices"] for i in order[: max(1, len(batch) // 2)] if not math.isnan(batch[i]["loss"])
        ]
        self.cats.update(elite)
        self.batch = None
        self.generation += 1
        if self.es is None:
            return
        self.es.tell([s["x"] for s in batch], losses)
        if self.es.stop():
            self._restart_or_finish()

    def _restart_or_finish(self) -> None:
        if self.run >= self.config.restarts:
            self._finished = True
            return
        self.run += 1
        self.popsize = max(2, round(self.popsize * self.config.incpopsize))
        self.es = self._new_es(self.rng.random(self.cube.dimension))

    @property
    def finished(self) -> bool:
        return self._finished

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            es=self._es_bytes(),
            cats=self.cats.state_dict(),
            popsize=self.popsize,
            run=self.run,
            generation=self.generation,
            worst_loss=self.worst_loss,
            finished=self._finished,
            batch=None if self.batch is None else [dict(s) for s in self.batch],
            pending=self.pending.state_dict(),
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.es = None if state["es"] is None else pickle.loads(state["es"])
        self.cats.load_state_dict(state["cats"])
        self.popsize = int(state["popsize"])
        self.run = int(state["run"])
        self.generation = int(state["generation"])
        self.worst_loss = state["worst_loss"]
        self._finished = bool(state["finished"])
        self.batch = None if state["batch"] is None else [dict(s) for s in state["batch"]]
        self.es_before_ask = state["es"] if self.batch is not None else None
        self.pending.load_state_dict(state["pending"])
        if self.es is not None and self.batch is not None:
            self._reask(self.batch)

    def _es_bytes(self) -> bytes | None:
        """The ``es`` to checkpoint: as it is between generations, as it was before ``ask`` within one."""
        if self.es is None:
            return None
        return self.es_before_ask if self.batch is not None else pickle.dumps(self.es)

    def _reask(self, batch: list[dict[str, Any]]) -> None:
        """Re-ask the open generation so that this process's pycma knows its points (see the module doc)."""
        assert self.es is not None
        points = self.es.ask()
        if len(points) != len(batch) or any(not np.array_equal(x, s["x"]) for x, s in zip(points, batch)):
            raise RunStateError(
                "the checkpoint's CMA-ES generation cannot be re-drawn (was pycma upgraded mid-run?)"
            )
        for x, entry in zip(points, batch):
            entry["x"] = np.asarray(x)
