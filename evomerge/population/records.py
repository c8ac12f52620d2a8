"""The JSONL record of one evaluation, and the archive rebuilt from those records.

One line holds everything needed to reconstruct the candidate and its result: lineage, plan, genome
(inline for small genomes; ``genomes/<uid>.npy`` for large ones such as from-scratch parameter vectors),
objectives, per-example scores, status and error text.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from evomerge.plan import MergePlan
from evomerge.population.archive import Archive
from evomerge.population.run_dir import RunDir
from evomerge.types import Candidate, Evaluation, Genome

INLINE_GENOME_MAX = 4096


def evaluation_record(
    candidate: Candidate, evaluation: Evaluation, run_dir: RunDir, cached_from: str | None, elapsed: float
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "uid": candidate.uid,
        "status": evaluation.status.value,
        "objectives": {k: float(v) for k, v in evaluation.objectives.items()},
        "plan_hash": candidate.plan_hash,
        "parents": list(candidate.parents),
        "generation": candidate.generation,
        "niche": candidate.niche,
        "strategy": candidate.strategy,
        "fidelity": evaluation.fidelity,
        "seconds": round(evaluation.seconds, 6),
        "evaluator": evaluation.evaluator,
        "error": evaluation.error,
        "cached_from": cached_from,
        "elapsed": round(elapsed, 3),
        "time": time.time(),
        "metrics": evaluation.metrics,
        "meta": candidate.meta,
        "choices": list(candidate.genome.choices),
        "plan": None if candidate.plan is None else candidate.plan.to_dict(),
        "per_example": None if evaluation.per_example is None else [float(x) for x in evaluation.per_example],
    }
    vec = candidate.genome.vector
    if vec.size <= INLINE_GENOME_MAX:
        rec["genome"] = [float(x) for x in vec]
    else:
        rec["genome_file"] = run_dir.save_genome(candidate.uid, vec)
    return rec


def candidate_of(rec: dict[str, Any], run_dir: RunDir | None = None) -> Candidate:
    """The candidate of a record; a large genome is read from its file only when ``run_dir`` is given
    (archives of from-scratch runs would otherwise load every parameter vector ever evaluated)."""
    meta = dict(rec.get("meta") or {})
    if "genome" in rec:
        vector = np.asarray(rec["genome"], dtype=np.float64)
    elif rec.get("genome_file"):
        meta["genome_file"] = rec["genome_file"]
        vector = run_dir.load_genome(rec["genome_file"]) if run_dir is not None else np.zeros(0)
    else:
        vector = np.zeros(0)
    plan = rec.get("plan")
    return Candidate(
        uid=rec["uid"],
        genome=Genome(vector, tuple(rec.get("choices") or ())),
        plan=None if plan is None else MergePlan.from_dict(plan),
        parents=tuple(rec.get("parents") or ()),
        generation=int(rec.get("generation") or 0),
        niche=rec.get("niche"),
        strategy=rec.get("strategy") or "",
        meta=meta,
    )


def evaluation_of(rec: dict[str, Any]) -> Evaluation:
    return Evaluation.from_json(rec)


def restore_archive(archive: Archive, records: Iterable[dict[str, Any]]) -> None:
    for rec in records:
        archive.add(candidate_of(rec), evaluation_of(rec), rec.get("cached_from"))
