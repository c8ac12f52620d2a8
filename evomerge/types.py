"""Core value types shared by strategies, the population manager, evaluator pools and trackers.

Pure data: no torch. A :class:`Candidate` is what a strategy proposes (a genome, the plan it decodes to, its
lineage); an :class:`Evaluation` is what an evaluator pool returns for it. A failure is a result:
evaluations that raised, produced NaN or timed out carry their status and error text instead of stopping
the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import numpy as np

from evomerge.plan import MergePlan

Direction = Literal["maximize", "minimize"]


class EvalStatus(str, Enum):
    OK = "ok"
    FAILED = "failed"
    INVALID = "invalid"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Objective:
    name: str
    direction: Direction = "maximize"

    def signed(self, value: float) -> float:
        """The value oriented so that larger is better."""
        return value if self.direction == "maximize" else -value


@dataclass(frozen=True, eq=False)
class Genome:
    """A point of a search space: continuous coordinates plus categorical choice indices."""

    vector: np.ndarray
    choices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        vec = np.asarray(self.vector, dtype=np.float64).reshape(-1)
        vec.setflags(write=False)
        object.__setattr__(self, "vector", vec)
        object.__setattr__(self, "choices", tuple(int(c) for c in self.choices))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Genome)
            and self.choices == other.choices
            and self.vector.shape == other.vector.shape
            and bool(np.array_equal(self.vector, other.vector))
        )

    def __hash__(self) -> int:
        return hash((self.vector.tobytes(), self.choices))

    def to_json(self) -> dict[str, Any]:
        return {"vector": [float(v) for v in self.vector], "choices": list(self.choices)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Genome:
        return cls(np.asarray(data.get("vector", []), dtype=np.float64), tuple(data.get("choices", ())))


@dataclass(frozen=True)
class Candidate:
    uid: str
    genome: Genome
    plan: MergePlan | None
    parents: tuple[str, ...] = ()
    generation: int = 0
    niche: int | None = None
    strategy: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def plan_hash(self) -> str:
        if self.plan is None:
            return "genome-" + _genome_hash(self.genome)
        return self.plan.content_hash()


def _genome_hash(genome: Genome) -> str:
    import hashlib

    h = hashlib.sha256(genome.vector.astype(np.float64).tobytes())
    h.update(repr(genome.choices).encode())
    return h.hexdigest()[:16]


@dataclass
class Evaluation:
    uid: str
    status: EvalStatus
    objectives: dict[str, float] = field(default_factory=dict)
    per_example: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    evaluator: str | None = None
    plan_hash: str | None = None
    fidelity: str = "full"

    @property
    def ok(self) -> bool:
        return self.status is EvalStatus.OK

    @classmethod
    def failure(
        cls, uid: str, error: str, status: EvalStatus = EvalStatus.FAILED, **kwargs: Any
    ) -> Evaluation:
        return cls(uid=uid, status=status, error=error, **kwargs)

    def checked(self) -> Evaluation:
        """Downgrade an OK result whose objectives are NaN or infinite to a failure."""
        if self.ok:
            bad = [k for k, v in self.objectives.items() if not math.isfinite(float(v))]
            if bad:
                self.status = EvalStatus.FAILED
                self.error = f"non-finite objective(s): {', '.join(bad)}"
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "status": self.status.value,
            "objectives": {k: float(v) for k, v in self.objectives.items()},
            "per_example": None if self.per_example is None else [float(x) for x in self.per_example],
            "metrics": self.metrics,
            "error": self.error,
            "seconds": self.seconds,
            "evaluator": self.evaluator,
            "plan_hash": self.plan_hash,
            "fidelity": self.fidelity,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        per = data.get("per_example")
        return cls(
            uid=data["uid"],
            status=EvalStatus(data["status"]),
            objectives=dict(data.get("objectives") or {}),
            per_example=None if per is None else np.asarray(per, dtype=np.float64),
            metrics=dict(data.get("metrics") or {}),
            error=data.get("error"),
            seconds=float(data.get("seconds", 0.0)),
            evaluator=data.get("evaluator"),
            plan_hash=data.get("plan_hash"),
            fidelity=data.get("fidelity", "full"),
        )
