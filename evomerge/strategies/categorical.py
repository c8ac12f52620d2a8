"""A learned distribution over a space's categorical dimensions (the operator choice of a layer group).

CMA-ES only handles continuous coordinates, so its categorical dimensions get an independent categorical
distribution each, sampled per candidate and moved each generation toward the choices of that generation's
best half (a PBIL-style update: ``p ← (1 − η)·p + η·frequency among the elite``), then mixed with the
uniform distribution (``p ← (1 − floor)·p + floor/k``) so every option keeps at least ``floor/k`` and a
choice that looked bad early can still come back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class CategoricalModel:
    """Independent categorical distributions, one per dimension, starting uniform."""

    def __init__(self, n_choices: Sequence[int], learning_rate: float, floor: float) -> None:
        self.learning_rate = float(learning_rate)
        self.floor = float(floor)
        self.probs = [np.full(n, 1.0 / n) for n in n_choices]

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(rng.choice(p.size, p=p)) for p in self.probs)

    def update(self, elite: Sequence[Sequence[int]]) -> None:
        """Move each distribution toward the option frequencies among ``elite`` (the best choices)."""
        if not elite or not self.probs:
            return
        for i, p in enumerate(self.probs):
            counts = np.bincount([int(choice[i]) for choice in elite], minlength=p.size).astype(np.float64)
            p = (1.0 - self.learning_rate) * p + self.learning_rate * counts / counts.sum()
            self.probs[i] = (1.0 - self.floor) * p + self.floor / p.size

    def state_dict(self) -> dict[str, Any]:
        return {"probs": [p.copy() for p in self.probs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.probs = [np.asarray(p, dtype=np.float64).copy() for p in state["probs"]]
