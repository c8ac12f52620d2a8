"""`evomerge report`: PNG plots and a report.md whose numbers are those of evaluations.jsonl."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from evomerge.cli import main
from evomerge.plan import MergePlan
from evomerge.population.records import evaluation_record
from evomerge.population.run_dir import RunDir
from evomerge.types import Candidate, EvalStatus, Evaluation, Genome
from tests.integration.search_helpers import ASSETS, records, search_config, write_config

TWO_OBJECTIVES = '''
import torch

def mlp_vs_attn(model, tokenizer=None):
    with torch.no_grad():
        mlp = sum(float(p.double().pow(2).sum()) for n, p in model.named_parameters() if "mlp" in n)
        attn = sum(float(p.double().pow(2).sum()) for n, p in model.named_parameters() if "attn" in n)
    return {"attn": attn, "score": -mlp}
'''


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def section(markdown: str, title: str) -> str:
    """The text of a ``## title`` section (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"no section {title!r} in report.md"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")][2:]  # skip header and rule
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def fmt(v: float) -> str:
    return f"{v:.6g}"


def assert_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 200 and img.height > 100


def test_report_of_a_finished_search(llama_family: dict[str, Path], tmp_path: Path) -> None:
    fitness_file = tmp_path / "two.py"
    fitness_file.write_text(TWO_OBJECTIVES)
    cfg = search_config(
        llama_family, evaluations=12, strategy={"name": "m2n2", "pop_size": 4},
        fitness={"name": "callable", "function": f"{fitness_file}:mlp_vs_attn", "objectives": {"attn": "maximize", "score": "maximize"}},
        search_space={"name": "layerwise", "merge_method": "task_arithmetic", "parameters": {"weight": {"low": 0.0, "high": 1.0}}},
    )
    code, out = run(["search", str(write_config(tmp_path / "c.yaml", cfg)), "--run-dir", str(tmp_path / "run")])
    assert code == 0, out
    code, out = run(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep"), "--top", "5"])
    assert code == 0, out
    recs = records(tmp_path / "run")
    for name in ("fitness", "pareto", "coefficients", "lineage"):
        assert_png(tmp_path / "rep" / f"{name}.png")
    md = (tmp_path / "rep" / "report.md").read_text()
    for name in ("fitness", "pareto", "coefficients", "lineage"):
        assert f"]({name}.png)" in md

    budget = dict(table_rows(section(md, "Budget used")))  # type: ignore[arg-type]
    assert budget["evaluations"] == f"{len(recs)} of 12"
    assert budget["lines in evaluations.jsonl"] == str(len(recs))
    assert dict(table_rows(section(md, "Outcomes"))) == {"ok": str(len(recs))}  # type: ignore[arg-type]

    ranked = sorted(enumerate(recs), key=lambda ir: (-ir[1]["objectives"]["attn"], ir[0]))
    top = table_rows(section(md, "Top 5"))
    assert [row[1].strip("`") for row in top] == [r["uid"] for _, r in ranked[:5]]
    assert [row[4:6] for row in top] == [[fmt(r["objectives"]["attn"]), fmt(r["objectives"]["score"])] for _, r in ranked[:5]]

    points = np.array([[r["objectives"]["attn"], r["objectives"]["score"]] for r in recs])
    front = {recs[i]["uid"] for i in range(len(recs))
             if not any(np.all(points[j] >= points[i]) and np.any(points[j] > points[i]) for j in range(len(recs)))}
    assert {row[1].strip("`") for row in table_rows(section(md, "Pareto front"))} == front

    recipe = section(md, "Best recipe")
    assert ranked[0][1]["uid"] in recipe
    block = re.search(r"```yaml\n(.*?)```", recipe, re.S)
    assert block and yaml.safe_load(block.group(1)) == ranked[0][1]["plan"]
    assert "### Per-layer coefficients of the best" in md  # the layerwise space varies by layer


def _record(rd: RunDir, i: int, status: EvalStatus, loss: float | None, cached_from: str | None = None) -> dict[str, Any]:
    plan = MergePlan.from_dict({"merge_method": "linear", "models": [
        {"model": "/nonexistent/a", "parameters": {"weight": 0.1 * i}}, {"model": "/nonexistent/b", "parameters": {"weight": 1.0}}]})
    cand = Candidate(f"random-{i:06d}", Genome(np.array([0.1 * i])), plan, strategy="random")
    ev = Evaluation(cand.uid, status, {} if loss is None else {"loss": loss}, seconds=0.5,
                    error=None if status is EvalStatus.OK else "boom")
    return evaluation_record(cand, ev, rd, cached_from, elapsed=10.0 * (i + 1))


def test_hand_written_run_counts_statuses_and_cache_hits_and_falls_back_without_sources(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    cfg = {
        "models": {"sources": ["/nonexistent/a", "/nonexistent/b"]},
        "search_space": {"name": "global", "merge_method": "linear"},
        "strategy": {"name": "random"},
        "fitness": {"name": "callable", "function": f"{ASSETS / 'fitness_fns.py'}:mlp_norm", "objectives": {"loss": "minimize"}},
        "budget": {"wall_time": 3600},
    }
    rd.config_file.write_text(yaml.safe_dump(cfg))
    outcomes = [(EvalStatus.OK, 3.0, None), (EvalStatus.FAILED, None, None), (EvalStatus.OK, 1.5, None),
                (EvalStatus.TIMEOUT, None, None), (EvalStatus.OK, 1.5, "random-000002"), (EvalStatus.OK, 2.0, None)]
    for i, (status, loss, cached) in enumerate(outcomes):
        rd.append(_record(rd, i, status, loss, cached))
    rd.release()
    code, out = run(["report", str(rd.path)])
    assert code == 0, out
    out_dir = rd.path / "report"
    assert not (out_dir / "pareto.png").exists()  # one objective: no front
    for name in ("fitness", "coefficients", "lineage"):
        assert_png(out_dir / f"{name}.png")
    md = (out_dir / "report.md").read_text()
    budget = dict(table_rows(section(md, "Budget used")))  # type: ignore[arg-type]
    assert budget["evaluations"] == "5"  # the cache hit is not an evaluation
    assert budget["cache hits (identical plans, not re-evaluated)"] == "1"
    assert budget["wall time"] == "60.0 s of 3600 s"
    assert dict(table_rows(section(md, "Outcomes"))) == {"ok": "4", "failed": "1", "timeout": "1"}  # type: ignore[arg-type]
    top = table_rows(section(md, "Top 10"))  # minimised: smallest loss first, ties in evaluation order
    assert [(row[1].strip("`"), row[4]) for row in top] == [
        ("random-000002", "1.5"), ("random-000004", "1.5"), ("random-000005", "2"), ("random-000000", "3")]
    assert "Pareto front" not in md
    assert "### Per-model weights of the best" in md and "headers could not be read" in md


@pytest.mark.parametrize("make", ["missing", "not_a_run"])
def test_not_a_run_directory_is_one_line(tmp_path: Path, make: str) -> None:
    target = tmp_path / "x"
    if make == "not_a_run":
        target.mkdir()
    code, out = run(["report", str(target)])
    assert code == 2 and "Traceback" not in out
    assert out.startswith("error: ") and str(target) in out and out.count("\n") == 1
