"""Held-out scores: a run's best candidates re-scored on a split the search never saw.

A search optimises on its fitness suite's search split, so its best score is optimistic by construction
(the winner is the candidate that fits those examples best). What users need to compare merges is the
score on held-out data. This re-runs the top candidates through the search's own evaluator (the same
in-place merge of the resident model, so the numbers are those of the merged weights a search scored)
with the suite switched to the held-out split, and stores them in ``<run>/held_out.json``; ``evomerge
export`` puts them in the model card, and a model re-scored from its exported folder must agree.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from evomerge.config import parse_config
from evomerge.errors import ConfigError, RunStateError
from evomerge.population.records import candidate_of
from evomerge.population.run_dir import RunDir, atomic_write_bytes
from evomerge.validation import load_yaml

HELD_OUT_FILE = "held_out.json"
SPLIT_SUITES = ("lm_eval", "accuracy")
"""Suites with a ``split`` option; composites and callables have no notion of a held-out split."""


def held_out_fitness(fitness: dict[str, Any], split: str) -> dict[str, Any]:
    """The search's fitness section scoring ``split`` instead (test splits explicitly allowed)."""
    name = fitness.get("name")
    if name not in SPLIT_SUITES:
        raise ConfigError(f"held-out scoring needs a suite with a 'split' option ({', '.join(SPLIT_SUITES)}); "
                          f"this run's is {name!r}", "fitness.name")
    out = dict(fitness)
    out.update(split=split, allow_test_split=True)
    return out


def held_out_path(run_path: Path) -> Path:
    return Path(run_path) / HELD_OUT_FILE


def read_held_out(run_path: Path) -> list[dict[str, Any]]:
    path = held_out_path(run_path)
    return list(json.loads(path.read_text())["candidates"]) if path.is_file() else []


def score_held_out(run_path: Path, *, split: str = "test", top: int = 1) -> list[dict[str, Any]]:
    """Score the run's ``top`` best candidates on ``split``; writes and returns the rows of held_out.json."""
    from evomerge.distributed.evaluator import Evaluator
    from evomerge.export import load_archive
    from evomerge.search import evaluator_spec, resolve_sources
    from search_spaces import build_space

    rd = RunDir(run_path)
    if not rd.exists():
        raise RunStateError(f"{run_path}: not a run directory (no config.yaml)")
    config = parse_config(load_yaml(rd.config_file), source=str(rd.config_file))
    base_dir = rd.base_dir
    ranked = load_archive(rd).ranked()[:top]
    if not ranked:
        raise RunStateError("the run has no successful full evaluation to score")
    sources = resolve_sources(config, base_dir)
    space = build_space(config.search_space, sources.refs, sources.base, sources.layout,
                        initial_vectors=sources.initial_vectors or None)
    spec = evaluator_spec(config, sources, space, base_dir)
    spec = replace(spec, fitness=held_out_fitness(dict(config.fitness), split))
    evaluator = Evaluator(spec, name="held-out", gpus=config.resources.gpus_per_actor)
    records = {r["uid"]: r for r in rd.records()}
    rows = []
    for rank, entry in enumerate(ranked):
        candidate = candidate_of(records[entry.candidate.uid], rd)
        evaluation = evaluator.evaluate(candidate)
        rows.append({
            "rank": rank, "uid": candidate.uid, "split": split, "status": evaluation.status.value,
            "error": evaluation.error, "search": dict(entry.evaluation.objectives),
            "held_out": dict(evaluation.objectives), "seconds": round(evaluation.seconds or 0.0, 2),
            "metrics": {k: v for k, v in evaluation.metrics.items() if isinstance(v, (int, float, str))},
        })
    body = json.dumps({"split": split, "candidates": rows}, indent=2) + "\n"
    atomic_write_bytes(held_out_path(rd.path), body.encode())
    return rows
