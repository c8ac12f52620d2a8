"""The population manager: the only search loop (ask → evaluate → tell → archive → track → checkpoint).

Determinism and crash safety come from three rules:

1. every result is appended to ``evaluations.jsonl`` (fsynced) *before* the strategy is told of it;
2. a checkpoint (strategy state + the candidates it has asked but not yet been told about) is written
   atomically after every ask;
3. the strategy is told in a reproducible order: a whole generation in ask order (generational mode), or
   one result at a time in the order of the JSONL lines (steady state).

Resuming therefore loads the last checkpoint, rebuilds the archive from the JSONL, re-tells the pending
candidates whose results are already on disk and re-submits only the others: nothing is evaluated twice,
and with a deterministic pool the resumed run ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from evomerge.config import BudgetConfig, EvaluationConfig
from evomerge.distributed.pool import EvaluatorPool
from evomerge.errors import RunStateError
from evomerge.population.archive import Archive, Entry
from evomerge.population.halving import successive_halving
from evomerge.population.records import evaluation_record, restore_archive
from evomerge.population.run_dir import RunDir
from evomerge.strategies.base import Strategy
from evomerge.tracking.base import Tracker, notify
from evomerge.types import Candidate, Evaluation, Objective

MAX_CONSECUTIVE_CACHE_HITS = 1000


@dataclass
class LoopState:
    pending: dict[str, Candidate] = field(default_factory=dict)
    """Asked but not yet told, in ask order."""
    sequence: int = 0
    elapsed: float = 0.0
    evaluations: int = 0
    cache_streak: int = 0


class PopulationManager:
    def __init__(
        self,
        strategy: Strategy,
        pool: EvaluatorPool,
        run_dir: RunDir,
        objectives: Sequence[Objective],
        budget: BudgetConfig,
        evaluation: EvaluationConfig | None = None,
        trackers: Sequence[Tracker] = (),
        keep_checkpoints: int = 3,
    ) -> None:
        self.strategy = strategy
        self.pool = pool
        self.run_dir = run_dir
        self.objectives = list(objectives)
        self.budget = budget
        self.cfg = evaluation or EvaluationConfig()
        self.trackers = list(trackers)
        self.keep = keep_checkpoints
        self.archive = Archive(self.objectives)
        self.state = LoopState()
        self.stop_reason: str | None = None
        self._session_start = time.monotonic()
        self._stop_requested = False
        self._running: dict[str, str] = {}
        """plan hash → uid of the candidate being evaluated for it (the leader)."""
        self._followers: dict[str, list[Candidate]] = {}
        """plan hash → candidates asked while their twin was in flight."""

    # ------------------------------------------------------------------ budget
    @property
    def elapsed(self) -> float:
        return self.state.elapsed + (time.monotonic() - self._session_start)

    def remaining(self) -> int:
        if self.budget.evaluations is None:
            return 1 << 30
        return self.budget.evaluations - self.state.evaluations - sum(
            1 for uid in self.state.pending if uid not in self.archive
        )

    def exhausted(self) -> str | None:
        if self._stop_requested:
            return "interrupted"
        if self.budget.evaluations is not None and self.state.evaluations >= self.budget.evaluations:
            return f"evaluation budget reached ({self.state.evaluations})"
        if self.budget.wall_time is not None and self.elapsed >= self.budget.wall_time:
            return f"wall-time budget reached ({self.elapsed:.0f}s)"
        if self.budget.target is not None:
            best = self.archive.best_value()
            if best is not None and best >= self.objectives[0].signed(self.budget.target):
                return f"target {self.budget.target:g} reached"
        if self.state.cache_streak >= MAX_CONSECUTIVE_CACHE_HITS:
            return f"the strategy proposed {MAX_CONSECUTIVE_CACHE_HITS} already-evaluated plans in a row"
        return None

    def request_stop(self) -> None:
        """Finish at the next safe point (after the evaluations in flight), writing a checkpoint."""
        self._stop_requested = True

    # ------------------------------------------------------------------ persistence
    def checkpoint(self) -> None:
        self.state.sequence += 1
        self.run_dir.save_checkpoint(
            {
                "sequence": self.state.sequence,
                "strategy": self.strategy.state_dict(),
                "pending": list(self.state.pending.values()),
                "elapsed": self.elapsed,
            },
            keep=self.keep,
        )

    def restore(self) -> None:
        """Load the last checkpoint and rebuild the archive from the JSONL."""
        ckpt = self.run_dir.load_checkpoint()
        self.run_dir.repair_jsonl()
        records = list(self.run_dir.records())
        restore_archive(self.archive, records)
        self.state.evaluations = sum(1 for e in self.archive if e.cached_from is None)
        if ckpt is None:
            if records:
                raise RunStateError(f"{self.run_dir.path}: evaluations.jsonl exists but no checkpoint; cannot resume")
            return
        self.strategy.load_state_dict(ckpt["strategy"])
        self.state.sequence = int(ckpt["sequence"])
        self.state.elapsed = float(ckpt["elapsed"])
        self.state.pending = {c.uid: c for c in ckpt["pending"]}
        self._session_start = time.monotonic()
        if self.cfg.mode == "generational":
            # subset-scored candidates of the interrupted batch may still be promoted: they lead their plans again
            for c in self.state.pending.values():
                entry = self.archive.get(c.uid)
                if entry is not None and entry.cached_from is None:
                    self._running.setdefault(c.plan_hash, c.uid)
        self._dispatch([c for c in self.state.pending.values() if c.uid not in self.archive])

    # ------------------------------------------------------------------ recording
    def record(self, candidate: Candidate, evaluation: Evaluation, cached_from: str | None = None) -> list[Evaluation]:
        """Append a result to the JSONL and the archive; also answer candidates waiting on the same plan.

        Returns the recorded evaluations (this one first, then its followers) in the order they must be told.
        """
        self.run_dir.append(evaluation_record(candidate, evaluation, self.run_dir, cached_from, self.elapsed))
        entry, new = self.archive.add(candidate, evaluation, cached_from)
        if new and cached_from is None:
            self.state.evaluations += 1
            self.state.cache_streak = 0
        elif cached_from is not None:
            self.state.cache_streak += 1
        notify(self.trackers, "on_evaluation", entry, self.archive, self)
        out = [evaluation]
        if cached_from is None and evaluation.fidelity == "full" and self._running.get(candidate.plan_hash) == candidate.uid:
            out += self._resolve_followers(candidate.plan_hash)
        return out

    @staticmethod
    def _copy(source: Entry, candidate: Candidate) -> Evaluation:
        ev = Evaluation.from_json({**source.evaluation.to_json(), "uid": candidate.uid, "seconds": 0.0})
        ev.metrics = {**ev.metrics, "cached_from": source.candidate.uid}
        return ev

    def tell(self, evaluations: Sequence[Evaluation]) -> None:
        for ev in evaluations:
            self.state.pending.pop(ev.uid, None)
        if evaluations:
            self.strategy.tell(list(evaluations))

    def ask(self, n: int) -> tuple[list[Candidate], list[Evaluation]]:
        """Ask up to ``n``; repeats of evaluated plans are answered from the archive (the fitness cache)."""
        n = min(n, self.remaining())
        if n <= 0:
            return [], []
        asked = self.strategy.ask(n)
        for c in asked:
            self.state.pending[c.uid] = c
        if asked:
            self.checkpoint()
        return self._dispatch(asked)

    def _dispatch(self, candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[Evaluation]]:
        """Split candidates into ones to run, and ones answered by the cache now or by a twin in flight."""
        to_run: list[Candidate] = []
        cached: list[Evaluation] = []
        for c in candidates:
            hit = self.archive.cached(c.plan_hash) if self.cfg.cache else None
            if hit is not None:
                cached += self.record(c, self._copy(hit, c), cached_from=hit.candidate.uid)
            elif self.cfg.cache and c.plan_hash in self._running:
                self._followers.setdefault(c.plan_hash, []).append(c)
            else:
                self._running[c.plan_hash] = c.uid
                to_run.append(c)
        return to_run, cached

    def _resolve_followers(self, plan_hash: str) -> list[Evaluation]:
        """Give candidates that waited on ``plan_hash`` a copy of its final result."""
        leader_uid = self._running.pop(plan_hash, None)
        leader = self.archive.get(leader_uid) if leader_uid else None
        out: list[Evaluation] = []
        if leader is None:
            return out
        for follower in self._followers.pop(plan_hash, []):
            out += self.record(follower, self._copy(leader, follower), cached_from=leader.candidate.uid)
        return out

    def evaluate(self, candidates: Sequence[Candidate], fidelity: float | None = None) -> None:
        """Run candidates on the pool, recording each result the moment it arrives (a crash loses none)."""
        if not candidates:
            return
        self.pool.submit(candidates, fidelity)
        waiting = {c.uid for c in candidates}
        while waiting:
            for ev in self.pool.collect(timeout=1.0):
                waiting.discard(ev.uid)
                self.record(self.state.pending[ev.uid], ev)

    # ------------------------------------------------------------------ the loop
    def run(self) -> str:
        previous = self._install_sigint()
        try:
            self.restore()
            notify(self.trackers, "on_start", self)
            if self.cfg.mode == "generational":
                self._generational()
            else:
                self._steady()
            self.checkpoint()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        reason = self.stop_reason or "done"
        notify(self.trackers, "on_finish", self, reason)
        return reason

    def _install_sigint(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            print("\nstopping after the evaluations in flight (Ctrl-C again to abort at once)", flush=True)

        return signal.signal(signal.SIGINT, handler)

    def _finish_batch(self, batch: list[Candidate]) -> None:
        """Evaluate whatever ``batch`` still lacks (successive halving if configured), then tell it whole."""
        leaders = [c for c in batch if self._running.get(c.plan_hash) == c.uid]
        if self.cfg.multi_fidelity is not None and len(leaders) >= self.cfg.multi_fidelity.min_batch:
            successive_halving(self, leaders)
        else:
            self.evaluate([c for c in leaders if c.uid not in self.archive])
        for c in leaders:
            self._resolve_followers(c.plan_hash)
        told = []
        for c in batch:
            entry = self.archive.get(c.uid)
            assert entry is not None
            told.append(entry.evaluation)
        self.tell(told)
        notify(self.trackers, "on_generation", self, batch)

    def _generational(self) -> None:
        if self.state.pending:  # a generation interrupted by a crash: finish it first
            self._finish_batch(list(self.state.pending.values()))
        while (reason := self.exhausted()) is None:
            self.ask(self.cfg.batch_size or self.strategy.batch_hint or self.pool.capacity)
            batch = list(self.state.pending.values())
            if not batch:
                reason = "strategy finished" if self.strategy.finished else "strategy proposed nothing"
                break
            self._finish_batch(batch)
        self.stop_reason = reason

    def _steady(self) -> None:
        done = sorted((e for uid in self.state.pending if (e := self.archive.get(uid))), key=lambda e: e.index)
        for entry in done:
            self.tell([entry.evaluation])
        self.pool.submit([c for c in self.state.pending.values() if self._running.get(c.plan_hash) == c.uid])
        reason = None
        while True:
            reason = self.exhausted()
            if reason is None and self.pool.in_flight() < self.pool.capacity:
                to_run, cached = self.ask(self.pool.capacity - self.pool.in_flight())
                self.tell(cached)
                self.pool.submit(to_run)
                if not to_run and not cached and self.pool.in_flight() == 0:
                    reason = "strategy finished" if self.strategy.finished else "strategy proposed nothing"
            if self.pool.in_flight() == 0:
                if reason is not None or self._stop_requested:
                    break
                continue
            for ev in self.pool.collect(timeout=1.0):
                for told in self.record(self.state.pending[ev.uid], ev):
                    self.tell([told])
        self.stop_reason = reason or ("interrupted" if self._stop_requested else None)

    def summary(self) -> dict[str, Any]:
        best = self.archive.best()
        return {
            "evaluations": self.state.evaluations,
            "archive": len(self.archive),
            "statuses": self.archive.counts(),
            "best_uid": best.candidate.uid if best else None,
            "best": None if best is None else best.evaluation.objectives,
            "elapsed": round(self.elapsed, 2),
            "reason": self.stop_reason,
        }
