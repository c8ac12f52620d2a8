"""``evomerge export``: a run's best (or N-th, or a Pareto point) candidate → a Hugging Face checkpoint.

The merge runs through the same compiler and executor as the search's in-place merges, so re-scoring the
exported folder gives the score recorded in the run. The folder also holds a model card (scores, recipe,
lineage) and the evomerge recipe; from-scratch runs export their weight vector into the factory model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evomerge.config import parse_config
from evomerge.errors import RunStateError
from evomerge.holdout import read_held_out
from evomerge.population.archive import Archive, Entry
from evomerge.population.records import candidate_of, evaluation_of
from evomerge.population.run_dir import RunDir
from evomerge.validation import load_yaml


def load_archive(run_dir: RunDir) -> Archive:
    from evomerge.search import objectives_of

    config = parse_config(load_yaml(run_dir.config_file), source=str(run_dir.config_file))
    archive = Archive(objectives_of(config, run_dir.base_dir))
    for rec in run_dir.records():
        archive.add(candidate_of(rec), evaluation_of(rec), rec.get("cached_from"))
    return archive


def select(archive: Archive, rank: int = 0, pareto_index: int | None = None) -> Entry:
    if pareto_index is not None:
        front = archive.pareto_front()
        if not 0 <= pareto_index < len(front):
            raise RunStateError(f"--pareto-index {pareto_index} out of range: the front has {len(front)} point(s)")
        return front[pareto_index]
    ranked = archive.ranked()
    if not ranked:
        raise RunStateError("the run has no successful full evaluation to export")
    if not 0 <= rank < len(ranked):
        raise RunStateError(f"--rank {rank} out of range: the run has {len(ranked)} successful candidate(s)")
    return ranked[rank]


def model_card(entry: Entry, archive: Archive, recipe: str, mergekit: str | None = None, note: str = "",
               held_out: dict[str, Any] | None = None) -> str:
    scores = "\n".join(f"| {k} | {v:.6g} |" for k, v in entry.evaluation.objectives.items())
    held = "" if held_out is None else (
        f"\n\n## Scores on the held-out `{held_out['split']}` split (never seen by the search)\n\n"
        "| objective | value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v:.6g} |" for k, v in held_out["held_out"].items()))
    lineage = "\n".join(
        f"- `{e.candidate.uid}` (generation {e.candidate.generation}, {e.candidate.strategy})"
        + (f" ← {', '.join(e.candidate.parents)}" if e.candidate.parents else "")
        for e in archive.lineage(entry.candidate.uid)[:20]
    )
    return f"""---
tags: [merge, evomerge]
---
# {entry.candidate.uid}

Merged by [evomerge](https://github.com/evomerge/evomerge) from an evolutionary search of
{len(archive)} evaluated candidates.

## Scores (search fitness)

| objective | value |
|---|---|
{scores}{held}

## Recipe

```yaml
{recipe.rstrip()}
```

The same recipe for mergekit: {_mergekit_section(mergekit, note)}

## Lineage

{lineage or '- (initial candidate)'}
"""


def _mergekit_section(mergekit: str | None, note: str) -> str:
    if mergekit is None:
        return f"none ({note})."
    caveat = f" Note: {note}." if note else ""
    return f"`mergekit.yaml` (run `mergekit-yaml mergekit.yaml OUT`).{caveat}"


def export_run(
    run_path: Path, out_dir: Path, *, rank: int = 0, pareto_index: int | None = None, overwrite: bool = False,
    dtype: str | None = None, progress: bool = False,
) -> Path:
    rd = RunDir(run_path)
    if not rd.exists():
        raise RunStateError(f"{run_path}: not a run directory (no config.yaml)")
    archive = load_archive(rd)
    entry = select(archive, rank, pareto_index)
    record = next(r for r in rd.records() if r["uid"] == entry.candidate.uid)
    candidate = candidate_of(record, rd)
    held_out = next((r for r in read_held_out(rd.path) if r["uid"] == candidate.uid and r["status"] == "ok"), None)
    summary: dict[str, object] = {"uid": candidate.uid, "objectives": entry.evaluation.objectives}
    if held_out is not None:
        summary["held_out"] = {"split": held_out["split"], "objectives": held_out["held_out"]}
    scores = json.dumps(summary, indent=2) + "\n"
    if candidate.plan is None:
        return _export_vector(rd, candidate.genome.vector, out_dir, overwrite, scores)
    from evomerge.merge.to_disk import merge_to_disk

    plan = candidate.plan if dtype is None else candidate.plan.model_copy(update={"out_dtype": dtype})
    from evomerge.merge.mergekit_recipe import to_mergekit

    recipe = plan.to_yaml()
    mergekit = to_mergekit(plan)
    files = {"README.md": model_card(entry, archive, recipe, mergekit.yaml, mergekit.reason, held_out),
             "evomerge_scores.json": scores}
    if mergekit.yaml is not None:
        files["mergekit.yaml"] = mergekit.yaml
    return merge_to_disk(plan, out_dir, overwrite=overwrite, progress=progress, extra_files=files)


def _export_vector(rd: RunDir, vector: object, out_dir: Path, overwrite: bool, scores: str) -> Path:
    """From-scratch runs: the genome is the weight vector of the factory model."""
    import numpy as np
    import torch

    from evomerge.io.writer import save_state_dict
    from evomerge.models import build_factory_model

    config = parse_config(load_yaml(rd.config_file))
    fs = config.models.from_scratch
    if fs is None:
        raise RunStateError("this candidate has no merge plan and the run is not from scratch")
    model = build_factory_model(fs.factory, fs.kwargs, 0)
    state = model.state_dict()
    flat = np.asarray(vector, dtype=np.float32)
    offset, out = 0, {}
    for name, t in state.items():
        n = t.numel()
        out[name] = torch.from_numpy(flat[offset : offset + n].reshape(tuple(t.shape)).copy())
        offset += n
    if offset != flat.size:
        raise RunStateError(f"genome has {flat.size} values, the model {offset}")
    path = save_state_dict(out, out_dir, overwrite=overwrite, config={"evomerge_factory": fs.factory, "kwargs": fs.kwargs})
    (path / "evomerge_scores.json").write_text(scores)
    return path


def push_to_hub(folder: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload an exported folder to a Hub model repo (created if missing); returns the repo URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message="Upload merged model from evomerge")
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise RunStateError(f"--push-to-hub {repo_id}: upload failed ({exc}); the export in {folder} is complete") from None
    return str(url)
