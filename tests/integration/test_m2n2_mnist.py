"""`configs/m2n2_mnist.yaml` and its CMA-ES twin run end to end through `evomerge search` (small budgets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from evomerge.cli import main
from evomerge.config import load_config
from evomerge.population.records import candidate_of
from evomerge.population.run_dir import RunDir
from evomerge.search import resolve_sources
from tests.integration.search_helpers import records, status

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def search(config: str, run_dir: Path, evaluations: int) -> list[dict]:
    args = ["search", str(CONFIGS / config), "--run-dir", str(run_dir),
            "--set", f"budget.evaluations={evaluations}", "--set", "tracking.console=false"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert status(run_dir)["state"] == "finished"
    recs = records(run_dir)
    assert len(recs) == evaluations and all(r["status"] == "ok" for r in recs)
    return recs


def test_m2n2_evolves_classifiers_better_than_its_random_networks(tmp_path: Path) -> None:
    recs = search("m2n2_mnist.yaml", tmp_path / "run", 150)
    initial = [r for r in recs if r["meta"]["role"] == "init"]
    children = [r for r in recs if r["meta"]["role"] == "child"]
    assert len(initial) == 2 and len(children) == 148  # the archive grows from the two random networks
    assert all(len(r["per_example"]) == 4000 for r in recs)  # one resource per scored image (80% of 5,000)
    assert all(len(r["parents"]) == 2 and r["meta"]["split"] is not None for r in children)
    start = max(r["objectives"]["accuracy"] for r in initial)
    best = max(r["objectives"]["accuracy"] for r in recs)
    assert start < 0.2  # ten classes: random networks are near chance
    assert best > start + 0.05


def test_cmaes_twin_samples_around_the_first_random_network(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    recs = search("cmaes_mnist.yaml", run_dir, 20)
    assert {r["strategy"] for r in recs} == {"cmaes"} and {r["generation"] for r in recs} == {0}
    config = load_config(CONFIGS / "cmaes_mnist.yaml")
    first_network = resolve_sources(config, CONFIGS).initial_vectors[0]
    steps = np.stack([candidate_of(r, RunDir(run_dir)).genome.vector - first_network for r in recs])
    assert steps.shape[1] == 25_450  # 784*32 + 32 + 32*10 + 10 weights
    assert 0.008 < float(np.std(steps)) < 0.012  # sigma0 0.0025 of the [-2, 2] box: 0.01 per weight
