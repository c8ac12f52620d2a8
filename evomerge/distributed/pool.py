"""Evaluator pools: the one seam between the search loop and where evaluations run.

The manager only ever calls ``submit`` / ``collect`` (steady state) or ``evaluate`` (a whole batch, in
input order). :class:`SequentialPool` runs one :class:`Evaluator` in this process — the deterministic
twin of the Ray pool used by tests and small runs; :class:`CallablePool` scores candidates with a plain
function of the candidate (toy problems, benchmarks of the search itself).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from evomerge.types import Candidate, EvalStatus, Evaluation


class EvaluatorPool(ABC):
    capacity: int = 1
    """How many candidates can be in flight at once (the number of evaluators)."""

    @abstractmethod
    def submit(self, candidates: Sequence[Candidate], fidelity: float | None = None) -> None: ...

    @abstractmethod
    def collect(self, timeout: float | None = None) -> list[Evaluation]:
        """Block until at least one submitted candidate is done (or ``timeout``); return all done ones."""

    @abstractmethod
    def in_flight(self) -> int: ...

    def evaluate(self, candidates: Sequence[Candidate], fidelity: float | None = None) -> list[Evaluation]:
        """Evaluate a batch; results in input order. Failures are results."""
        self.submit(candidates, fidelity)
        done: dict[str, Evaluation] = {}
        while len(done) < len(candidates):
            for ev in self.collect():
                done[ev.uid] = ev
        return [done[c.uid] for c in candidates]

    def objectives(self) -> list[Any]:
        return []

    def close(self) -> None:  # noqa: B027 (optional hook: most pools have nothing to release)
        """Release evaluators (actors, memory)."""

    def __enter__(self) -> EvaluatorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _QueuedPool(EvaluatorPool):
    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self._queue: deque[tuple[Candidate, float | None]] = deque()

    def submit(self, candidates: Sequence[Candidate], fidelity: float | None = None) -> None:
        self._queue.extend((c, fidelity) for c in candidates)

    def in_flight(self) -> int:
        return len(self._queue)

    def collect(self, timeout: float | None = None) -> list[Evaluation]:
        if not self._queue:
            return []
        candidate, fidelity = self._queue.popleft()
        evaluation = self._run(candidate, fidelity)
        if self.timeout is not None and evaluation.seconds > self.timeout and evaluation.ok:
            # In-process evaluations cannot be pre-empted; an overrun is recorded as a timeout after the fact.
            evaluation.status = EvalStatus.TIMEOUT
            evaluation.error = f"took {evaluation.seconds:.1f}s > timeout {self.timeout:g}s"
        return [evaluation]

    @abstractmethod
    def _run(self, candidate: Candidate, fidelity: float | None) -> Evaluation: ...


class SequentialPool(_QueuedPool):
    """One in-process evaluator; evaluates in submission order."""

    def __init__(self, evaluator: Any, timeout: float | None = None) -> None:
        super().__init__(timeout)
        self.evaluator = evaluator

    def _run(self, candidate: Candidate, fidelity: float | None) -> Evaluation:
        return self.evaluator.evaluate(candidate, fidelity)

    def objectives(self) -> list[Any]:
        return list(self.evaluator.objectives())


class CallablePool(_QueuedPool):
    """Scores candidates with ``fn(candidate, fidelity) -> Evaluation | dict of objectives``."""

    def __init__(self, fn: Callable[[Candidate, float | None], Any], timeout: float | None = None) -> None:
        super().__init__(timeout)
        self.fn = fn

    def _run(self, candidate: Candidate, fidelity: float | None) -> Evaluation:
        start = time.perf_counter()
        try:
            out = self.fn(candidate, fidelity)
            if isinstance(out, Evaluation):
                ev = out
            else:
                ev = Evaluation(uid=candidate.uid, status=EvalStatus.OK, objectives={k: float(v) for k, v in dict(out).items()})
            ev = ev.checked()
        except Exception as exc:
            ev = Evaluation.failure(candidate.uid, f"{type(exc).__name__}: {exc}")
        ev.seconds = ev.seconds or (time.perf_counter() - start)
        ev.plan_hash = candidate.plan_hash
        ev.fidelity = "full" if fidelity is None else f"subset:{fidelity:g}"
        ev.evaluator = ev.evaluator or "callable"
        return ev
