"""The real-model proof: searched merges of SmolLM2-135M specialists vs their parents, on held-out test splits.

Needs the zoo of ``benchmarks/llm_zoo.py``. Runs both searches (``configs/smollm_specialists.yaml``: CMA-ES
over layer-wise TIES coefficients; ``configs/smollm_m2n2.yaml``: M2N2 from the specialists) through the
``evomerge`` CLI exactly as a user would (Ray evaluators, the real lm-evaluation-harness on the bundled
tasks' search splits), then scores on the **test** splits, which neither the specialists' training nor the
searches ever saw:

* the base, each specialist, uniform task arithmetic (λ = 1/3 each, i.e. the specialists' mean, and λ = 1
  each, the plain sum of task vectors) and hand-set TIES with mergekit's usual settings (density 0.5,
  weight 1, normalised), all merged with ``evomerge merge`` semantics and re-loaded from disk;
* each search's best candidate, scored twice: in memory by the search's own evaluator
  (``evomerge held-out``, the run's recorded test score) and from its exported folder
  (``AutoModelForCausalLM.from_pretrained``); the script checks they agree and that the export generates.

Prints one table (accuracy per task and the mean; evaluations and wall seconds of each search) and writes
it as JSON to ``<runs>/llm_merge_report.json``.

Run: ``../shared/tools/offline .venv/bin/python benchmarks/llm_merge_report.py`` (about 25 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_zoo import TASKS, default_zoo_dir

ROOT = Path(__file__).resolve().parents[1]
SEARCHES = {"cmaes (layer-wise ties)": "smollm_specialists", "m2n2 (layer coefficients)": "smollm_m2n2"}
HELD_OUT = {"name": "lm_eval", "tasks": list(TASKS), "aggregate": "mean", "objective": "acc", "batch_size": 64,
            "split": "test", "allow_test_split": True}


def evomerge_cli() -> str:
    found = Path(sys.executable).with_name("evomerge")
    return str(found) if found.is_file() else "evomerge"


def run_search(config: str, zoo: Path, runs: Path, evaluations: int | None) -> tuple[Path, float]:
    """``evomerge search`` on the zoo's models; returns (run folder, wall seconds)."""
    run_dir = runs / config
    specialists = [str(zoo / t) for t in TASKS]
    sets = [f"models.sources={json.dumps(specialists)}", "export.on_finish=false"]
    if config == "smollm_specialists":
        sets.append(f"models.base={zoo / 'base'}")
    if evaluations:
        sets.append(f"budget.evaluations={evaluations}")
    cmd = [evomerge_cli(), "search", str(ROOT / "configs" / f"{config}.yaml"), "--run-dir", str(run_dir),
           "--overwrite"]
    for item in sets:
        cmd += ["--set", item]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return run_dir, time.perf_counter() - start


def test_scores(model: Any, tokenizer: Any, suite: Any) -> dict[str, float]:
    result = suite(model, tokenizer)
    out = {t: float(result.metrics[f"{t}/acc,none"]) for t in TASKS}
    out["mean"] = float(result.objectives["acc"])
    return out


def score_folder(folder: Path, suite: Any) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    return test_scores(model, AutoTokenizer.from_pretrained(str(folder)), suite)


def merged(recipe: dict[str, Any], out: Path) -> Path:
    from evomerge.merge.to_disk import merge_to_disk
    from evomerge.plan import MergePlan

    return merge_to_disk(MergePlan.model_validate(recipe), out, overwrite=True)


def baselines(zoo: Path) -> dict[str, dict[str, Any]]:
    base = str(zoo / "base")
    models = [str(zoo / t) for t in TASKS]
    ta = {"merge_method": "task_arithmetic", "base_model": base, "dtype": "float32"}
    return {
        "task arithmetic, λ = 1/3 each": {**ta, "models": [{"model": m, "parameters": {"weight": 1 / 3}} for m in models]},
        "task arithmetic, λ = 1 each": {**ta, "models": [{"model": m, "parameters": {"weight": 1.0}} for m in models]},
        "ties (density 0.5, weight 1)": {
            "merge_method": "ties", "base_model": base, "dtype": "float32", "dialect": "mergekit",
            "parameters": {"normalize": True},
            "models": [{"model": m, "parameters": {"weight": 1.0, "density": 0.5}} for m in models]},
    }


def generates(folder: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    ids = tok("The plural of mouse is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    return str(tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=default_zoo_dir(), help="zoo folder (default: %(default)s)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the searches' runs go")
    parser.add_argument("--evaluations", type=int, default=None, help="override both searches' budgets")
    parser.add_argument("--reuse-runs", action="store_true", help="score existing runs instead of searching again")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    missing = [p for p in [args.zoo / "base", *(args.zoo / t for t in TASKS)] if not (p / "config.json").is_file()]
    if missing:
        raise SystemExit(f"zoo incomplete ({missing[0]} missing): run benchmarks/llm_zoo.py first")
    import torch

    from evomerge.export import export_run
    from evomerge.holdout import score_held_out
    from evomerge.population.run_dir import RunDir
    from fitness import build_suite

    torch.set_num_threads(os.cpu_count() or 1)
    total = time.perf_counter()
    searches: dict[str, tuple[Path, float | None]] = {}
    for label, config in SEARCHES.items():
        if args.reuse_runs and (args.runs / config / "status.json").is_file():
            searches[label] = (args.runs / config, None)
        else:
            searches[label] = run_search(config, args.zoo, args.runs, args.evaluations)

    suite = build_suite(HELD_OUT)
    suite.prepare()
    rows: list[dict[str, Any]] = []
    rows.append({"model": "base (SmolLM2-135M-Instruct)", **score_folder(args.zoo / "base", suite)})
    for task in TASKS:
        rows.append({"model": f"specialist {task.removeprefix('evomerge_')}", **score_folder(args.zoo / task, suite)})
    with tempfile.TemporaryDirectory(prefix="llm_merge_report.") as tmp:
        for label, recipe in baselines(args.zoo).items():
            rows.append({"model": label, **score_folder(merged(recipe, Path(tmp) / "m"), suite)})
    checks = []
    for label, (run_dir, wall) in searches.items():
        recorded = score_held_out(run_dir, split="test", top=1)[0]
        exported = export_run(run_dir, run_dir / "best", overwrite=True)
        from_disk = score_folder(exported, suite)
        n_evals = sum(1 for r in RunDir(run_dir).records() if r.get("status") == "ok")
        rows.append({"model": f"best of {label}", **from_disk, "evaluations": n_evals,
                     "wall_s": None if wall is None else round(wall)})
        agree = abs(recorded["held_out"]["acc"] - from_disk["mean"]) < 1e-9
        checks.append(f"{label}: recorded test acc {recorded['held_out']['acc']:.4f}, re-scored from "
                      f"{exported} {from_disk['mean']:.4f} ({'agree' if agree else 'DISAGREE'}); "
                      f"search-split acc {recorded['search']['acc']:.4f}; generates {generates(exported)!r}")

    print(f"\nheld-out test splits ({', '.join(f'{t}: {n}' for t, n in _sizes().items())} questions; chance 0.25)")
    header = f"{'model':34s} " + " ".join(f"{t.removeprefix('evomerge_'):>8s}" for t in TASKS)
    print(header + f" {'mean':>7s} {'evals':>6s} {'wall s':>7s}")
    for row in rows:
        evals = "" if "evaluations" not in row else str(row["evaluations"])
        wall = "" if row.get("wall_s") is None else str(row["wall_s"])
        print(f"{row['model']:34s} " + " ".join(f"{row[t]:8.3f}" for t in TASKS) + f" {row['mean']:7.3f} {evals:>6s} {wall:>7s}")
    print("\n" + "\n".join(checks))
    print(f"\ntotal wall time {time.perf_counter() - total:.0f} s")
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "llm_merge_report.json").write_text(json.dumps({"rows": rows, "checks": checks}, indent=1))


def _sizes() -> dict[str, int]:
    from fitness.tasks import TASKS_DIR

    return {t: len((TASKS_DIR / f"{t}_test.jsonl").read_text().splitlines()) for t in TASKS}


if __name__ == "__main__":
    main()
