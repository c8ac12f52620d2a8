"""RayPool: one evaluator actor per device, the same interface as the sequential pool.

Each actor builds an :class:`~evomerge.distributed.evaluator.Evaluator` once (sources memory-mapped by
path on its node, one resident model, one fitness suite) and then receives only candidates — a MergePlan
of a few KB — and returns small Evaluation objects. Faults are results: a candidate that outlives its
timeout is recorded as ``timeout`` and its actor replaced; an actor that dies (segfault, OOM,
``os._exit``) is replaced and its candidate retried up to ``retries`` times, then recorded as failed.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evomerge.config import ResourcesConfig
from evomerge.distributed.evaluator import Evaluator, EvaluatorSpec
from evomerge.distributed.pool import EvaluatorPool
from evomerge.errors import EvomergeError
from evomerge.types import Candidate, EvalStatus, Evaluation


class EvaluatorActor:
    """The actor body: a thin shell around an Evaluator (kept here so Ray pickles nothing heavy)."""

    def __init__(self, spec: EvaluatorSpec, name: str, gpus: float) -> None:
        self.error: BaseException | None = None
        try:
            self.evaluator: Evaluator | None = Evaluator(spec, name=name, gpus=gpus)
        except EvomergeError as exc:  # a user mistake: report it instead of crash-looping
            self.evaluator, self.error = None, exc

    def ready(self) -> tuple[int, list[Any]]:
        if self.error is not None:
            raise self.error
        assert self.evaluator is not None
        return os.getpid(), self.evaluator.objectives()

    def evaluate(self, candidate: Candidate, fidelity: float | None) -> Evaluation:
        assert self.evaluator is not None
        return self.evaluator.evaluate(candidate, fidelity)


@dataclass
class _Job:
    candidate: Candidate
    fidelity: float | None
    attempt: int = 0
    started: float = 0.0
    slot: int = -1


FORWARDED_ENV_PREFIXES = ("TQDM_", "TRANSFORMERS_", "HF_", "TOKENIZERS_", "WANDB_", "EVOMERGE_")
"""Settings of the driver that must hold in actors too, wherever the cluster started them (quiet
libraries, offline hub, cache locations)."""


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def init_ray(resources: ResourcesConfig) -> bool:
    """Connect to ``ray_address``/``RAY_ADDRESS``, or start a small local Ray; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = resources.ray_address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
        return True
    cpus = resources.num_cpus or max(1, round(resources.actors * resources.cpus_per_actor))
    ray.init(
        num_cpus=cpus,
        num_gpus=int(resources.actors * resources.gpus_per_actor) or None,
        object_store_memory=resources.object_store_mb * 2**20,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=True,
    )
    return True


class RayPool(EvaluatorPool):
    def __init__(self, spec: EvaluatorSpec, resources: ResourcesConfig, *, timeout: float | None = None,
                 retries: int = 1) -> None:
        import ray

        self.spec = spec
        self.resources = resources
        self.timeout = timeout
        self.retries = retries
        self.capacity = resources.actors
        self._owns_ray = init_ray(resources)
        self._remote = ray.remote(EvaluatorActor)
        self._actors: list[Any] = [None] * self.capacity
        self._busy: dict[Any, _Job] = {}
        """ObjectRef → job running on it."""
        self._starting: dict[Any, int] = {}
        """ObjectRef of a replacement actor's ``ready()`` → its slot (no job until it is up, so that a
        candidate's timeout never counts an actor's start-up)."""
        self._queue: deque[_Job] = deque()
        self._done: list[Evaluation] = []
        self._objectives: list[Any] = []
        self.restarts = 0
        for slot in range(self.capacity):
            self._actors[slot] = self._spawn(slot)
        self._wait_ready(range(self.capacity))

    # ------------------------------------------------------------------ actors
    def _spawn(self, slot: int) -> Any:
        gpus = self.resources.gpus_per_actor
        return self._remote.options(
            num_cpus=self.resources.cpus_per_actor, num_gpus=gpus, max_restarts=0,
            runtime_env={"env_vars": forwarded_env()},
        ).remote(self.spec, f"evaluator-{slot}", gpus)

    def _wait_ready(self, slots: Sequence[int] | range) -> None:
        import ray

        try:
            results = ray.get([self._actors[s].ready.remote() for s in slots])
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, EvomergeError):
                raise type(cause)(str(cause).splitlines()[0]) from None
            raise
        self._objectives = list(results[0][1])

    def _replace(self, slot: int) -> None:
        import ray

        ray.kill(self._actors[slot], no_restart=True)
        self._actors[slot] = self._spawn(slot)
        self._starting[self._actors[slot].ready.remote()] = slot
        self.restarts += 1

    def _free_slots(self) -> list[int]:
        taken = {job.slot for job in self._busy.values()} | set(self._starting.values())
        return [s for s in range(self.capacity) if s not in taken]

    def _dispatch(self) -> None:
        for slot in self._free_slots():
            if not self._queue:
                return
            job = self._queue.popleft()
            job.slot, job.started = slot, time.monotonic()
            self._busy[self._actors[slot].evaluate.remote(job.candidate, job.fidelity)] = job

    # ------------------------------------------------------------------ pool interface
    def submit(self, candidates: Sequence[Candidate], fidelity: float | None = None) -> None:
        self._queue.extend(_Job(c, fidelity) for c in candidates)
        self._dispatch()

    def in_flight(self) -> int:
        return len(self._queue) + len(self._busy) + len(self._done)

    def collect(self, timeout: float | None = None) -> list[Evaluation]:
        import ray

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done and (self._busy or self._queue):
            wait_s = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            ready, _ = ray.wait([*self._busy, *self._starting], num_returns=1, timeout=wait_s)
            for ref in ready:
                if ref in self._starting:
                    del self._starting[ref]
                    ray.get(ref)  # raises if the replacement cannot start at all
                else:
                    self._finish(ref)
            self._check_timeouts()
            self._dispatch()
            if deadline is not None and time.monotonic() >= deadline:
                break
        done, self._done = self._done, []
        return done

    def _finish(self, ref: Any) -> None:
        import ray

        job = self._busy.pop(ref)
        try:
            evaluation = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError) as exc:
            self._replace(job.slot)
            job.attempt += 1
            if job.attempt <= self.retries:
                self._queue.appendleft(job)
                return
            evaluation = self._failure(job, f"evaluator died {job.attempt} time(s): {type(exc).__name__}")
            evaluation.metrics["attempts"] = job.attempt
        except ray.exceptions.RayTaskError as exc:  # the evaluator catches suite errors; this is unexpected
            evaluation = self._failure(job, str(exc).splitlines()[0])
        evaluation.metrics = {"attempts": job.attempt + 1, **evaluation.metrics}
        self._done.append(evaluation)

    @staticmethod
    def _failure(job: _Job, error: str, status: EvalStatus = EvalStatus.FAILED) -> Evaluation:
        ev = Evaluation.failure(job.candidate.uid, error, status=status)
        ev.seconds = time.monotonic() - job.started
        ev.plan_hash = job.candidate.plan_hash
        ev.evaluator = f"evaluator-{job.slot}"
        ev.fidelity = "full" if job.fidelity is None else f"subset:{job.fidelity:g}"
        return ev

    def _check_timeouts(self) -> None:
        if self.timeout is None:
            return
        now = time.monotonic()
        for ref, job in list(self._busy.items()):
            if now - job.started > self.timeout:
                del self._busy[ref]
                self._replace(job.slot)
                self._done.append(self._failure(job, f"no result after {self.timeout:g}s", EvalStatus.TIMEOUT))

    def objectives(self) -> list[Any]:
        return list(self._objectives)

    def close(self) -> None:
        import ray

        for actor in self._actors:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self._actors = [None] * self.capacity
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
