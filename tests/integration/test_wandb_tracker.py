"""The W&B tracker end to end, offline: a tiny two-objective search, read back from W&B's own files.

W&B writes an offline run as a transaction log (``run-<id>.wandb``: a 7-byte file header, then 32 KiB
blocks of records, each ``crc32 (4) | length (2) | type (1) | payload``, a payload being a serialised
``wandb.proto.wandb_internal_pb2.Record``; a record longer than a block is split FIRST/MIDDLE/LAST) plus
media files under ``files/``. The reader below decodes that log, so the test checks what a later
``wandb sync`` would upload, not what the tracker meant to send.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from evomerge.cli import main
from tests.integration.search_helpers import records, search_config, write_config

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

TWO_OBJECTIVES = '''
import torch

def mlp_vs_attn(model, tokenizer=None):
    """Two objectives in tension: a small MLP norm and a large attention norm."""
    with torch.no_grad():
        mlp = sum(float(p.double().pow(2).sum()) for n, p in model.named_parameters() if "mlp" in n)
        attn = sum(float(p.double().pow(2).sum()) for n, p in model.named_parameters() if "attn" in n)
    return {"score": -mlp, "attn": attn}
'''


def log_payloads(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer too short for a header: padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
        elif kind == 0 and length == 0:  # zero padding up to the block end
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0


class OfflineRun:
    """What one offline W&B session recorded: run info, history rows, config, artifacts, media."""

    def __init__(self, folder: Path) -> None:
        from wandb.proto import wandb_internal_pb2 as pb

        self.folder = folder
        self.run: Any = None
        self.history: list[dict[str, Any]] = []
        self.config: dict[str, Any] = {}
        self.visualize: dict[str, Any] = {}
        self.artifacts: list[Any] = []
        self.summary: dict[str, Any] = {}
        (log,) = folder.glob("run-*.wandb")
        for payload in log_payloads(log):
            record = pb.Record()
            record.ParseFromString(payload)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                self.run = record.run
            elif kind == "history":
                self.history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                     for item in record.history.item})
            elif kind == "config":
                for item in record.config.update:
                    if item.key:
                        self.config[item.key] = json.loads(item.value_json)
                    elif list(item.nested_key[:2]) == ["_wandb", "visualize"]:
                        self.visualize[item.nested_key[2]] = json.loads(item.value_json)
            elif kind == "artifact":
                self.artifacts.append(record.artifact)
            elif kind == "summary":
                self.summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                     for item in record.summary.update})

    def rows(self, key: str) -> list[dict[str, Any]]:
        return [row for row in self.history if key in row]

    def media(self, row: dict[str, Any], key: str) -> Path:
        return self.folder / "files" / row[f"{key}/path"]


@pytest.fixture()
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B offline, silent, and with every folder it writes to inside the test's tmp_path."""
    home = tmp_path / "wandb-home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    return home


def sessions(run_dir: Path, run_id: str) -> list[OfflineRun]:
    folders = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    return [OfflineRun(f) for f in folders]


def table(run: OfflineRun, key: str) -> dict[str, Any]:
    last = run.rows(f"{key}/path")[-1]
    return dict(json.loads(run.media(last, key).read_text()))


def test_offline_run_holds_metrics_tables_plots_recipe_and_resume_continues_it(
    llama_family: dict[str, Path], tmp_path: Path, offline_wandb: Path,
) -> None:
    fitness_file = tmp_path / "two_objectives.py"
    fitness_file.write_text(TWO_OBJECTIVES)
    cfg = search_config(
        llama_family, evaluations=8, strategy={"name": "random"}, evaluation={"batch_size": 4},
        fitness={"name": "callable", "function": f"{fitness_file}:mlp_vs_attn", "objectives": {"score": "maximize", "attn": "maximize"}},
        search_space={"name": "layerwise", "merge_method": "task_arithmetic", "parameters": {"weight": {"low": 0.0, "high": 1.0}}},
        tracking={"console": False, "wandb": {"enabled": True, "mode": "offline", "project": "evotest", "name": "wb-run",
                                              "tags": ["tiny"], "tables_every": 1}},
    )
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["search", str(write_config(tmp_path / "c.yaml", cfg)), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "W&B tracking failed" not in result.output
    recs = records(run_dir)
    run_id = json.loads((run_dir / "wandb_run.json").read_text())["id"]
    (first,) = sessions(run_dir, run_id)

    assert (first.run.run_id, first.run.project, first.run.display_name, list(first.run.tags)) == (run_id, "evotest", "wb-run", ["tiny"])
    assert first.config["seed"] == 3 and first.config["search_space"]["name"] == "layerwise"
    assert first.config["run_dir"] == str(run_dir.resolve())

    # one history row per evaluation, numbered as the archive and equal to the JSONL
    evals = first.rows("eval/uid")
    assert [r["evaluation"] for r in evals] == list(range(1, 9))
    assert [r["eval/uid"] for r in evals] == [r["uid"] for r in recs]
    assert [r["eval/score"] for r in evals] == pytest.approx([r["objectives"]["score"] for r in recs])
    assert [r["eval/status"] for r in evals] == [r["status"] for r in recs]
    assert [r["best/score"] for r in evals] == pytest.approx(np.maximum.accumulate([r["objectives"]["score"] for r in recs]))
    assert [r["best/attn"] for r in evals] == pytest.approx(np.maximum.accumulate([r["objectives"]["attn"] for r in recs]))
    gens = first.rows("generation/index")
    assert [g["evaluations"] for g in gens] == [4, 8]  # batches of 4
    assert gens[0]["generation/mean/attn"] == pytest.approx(np.mean([r["objectives"]["attn"] for r in recs[:4]]))

    # the candidates table carries lineage and outcomes of every candidate
    cands = table(first, "views/candidates")
    col = {c: i for i, c in enumerate(cands["columns"])}
    assert [row[col["uid"]] for row in cands["data"]] == [r["uid"] for r in recs]
    assert [row[col["plan_hash"]] for row in cands["data"]] == [r["plan_hash"] for r in recs]
    assert [row[col["attn"]] for row in cands["data"]] == pytest.approx([r["objectives"]["attn"] for r in recs])

    # the Pareto front: a table of exactly the non-dominated records, and a scatter chart over it
    front = table(first, "views/pareto_front")
    points = [(r["objectives"]["score"], r["objectives"]["attn"]) for r in recs]
    dominated = {i for i, p in enumerate(points) for q in points if q != p and q[0] >= p[0] and q[1] >= p[1]}
    assert {row[0] for row in front["data"]} == {recs[i]["uid"] for i in range(len(recs)) if i not in dominated}
    x, y = yaml.safe_load((run_dir / "config.yaml").read_text())["fitness"]["objectives"]
    assert first.visualize["views/pareto_scatter"]["panel_config"]["fieldSettings"] == {"x": x, "y": y}

    # the coefficient heatmap of the best is a real image
    heat = first.rows("views/best_coefficients/path")[-1]
    with Image.open(first.media(heat, "views/best_coefficients")) as img:
        assert img.format == "PNG" and img.width > 200 and img.height > 100

    # the best recipe as an artifact: the plan of the best record, verbatim
    best = max(recs, key=lambda r: r["objectives"][x])  # the archive ranks by the first objective
    (artifact,) = [a for a in first.artifacts if a.type == "merge-recipe"]
    assert artifact.name == f"best-recipe-{run_id}"
    (entry,) = artifact.manifest.contents
    assert entry.path == "recipe.yaml"
    assert yaml.safe_load(Path(entry.local_path).read_text()) == best["plan"]
    assert first.summary["best_uid"] == best["uid"] and first.summary["stop_reason"].startswith("evaluation budget")
    assert first.summary["best_candidate/score"] == pytest.approx(best["objectives"]["score"])

    # resume continues the same W&B run id, numbering on from the archive
    result = CliRunner().invoke(main, ["resume", str(run_dir), "--set", "budget.evaluations=12"])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "wandb_run.json").read_text())["id"] == run_id
    first_again, second = sessions(run_dir, run_id)
    assert first_again.folder == first.folder and second.run.run_id == run_id
    recs = records(run_dir)
    assert [r["evaluation"] for r in second.rows("eval/uid")] == [9, 10, 11, 12]
    assert second.rows("eval/uid")[-1]["best/score"] == pytest.approx(max(r["objectives"]["score"] for r in recs))


def test_a_failing_wandb_never_stops_the_search(llama_family: dict[str, Path], tmp_path: Path, offline_wandb: Path) -> None:
    blocker = tmp_path / "run" / "wandb"
    blocker.parent.mkdir()
    blocker.write_text("a file where W&B wants its folder")
    cfg = search_config(llama_family, evaluations=4, tracking={"console": False, "wandb": {"enabled": True}})
    result = CliRunner().invoke(main, ["search", str(write_config(tmp_path / "c.yaml", cfg)), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "W&B tracking failed" in result.output
    assert len(records(tmp_path / "run")) == 4
