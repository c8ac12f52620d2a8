"""`evomerge validate` end to end: exit codes, --json, search configs, and no tensor bytes ever read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import evomerge.io.checkpoint as checkpoint_mod
import evomerge.io.mapped as mapped_mod
from evomerge.cli import main


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def search_config(tmp_path: Path, fam: dict[str, Path], **space: Any) -> Path:
    data = {
        "models": {"base": str(fam["base"]), "sources": [str(fam["ft1"]), str(fam["ft2"]), str(fam["ft3"])]},
        "search_space": {"name": "global", "merge_method": "task_arithmetic", **space},
        "strategy": {"name": "random"},
        "fitness": {"name": "perplexity", "texts": ["hello world"]},
        "budget": {"evaluations": 4},
        "resources": {"pool": "ray", "actors": 2},
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class _HeaderOnly:
    """A safe_open handle that serves names, shapes and dtypes but fails on any tensor read."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def keys(self) -> list[str]:
        return list(self._handle.keys())

    def metadata(self) -> Any:
        return self._handle.metadata()

    def get_slice(self, name: str) -> _SliceHeader:
        return _SliceHeader(self._handle.get_slice(name))

    def get_tensor(self, name: str) -> None:
        raise AssertionError(f"tensor bytes read: {name}")


class _SliceHeader:
    def __init__(self, sl: Any) -> None:
        self._sl = sl

    def get_shape(self) -> list[int]:
        return list(self._sl.get_shape())

    def get_dtype(self) -> str:
        return str(self._sl.get_dtype())

    def __getitem__(self, item: object) -> None:
        raise AssertionError("tensor bytes read through a slice")


@pytest.fixture
def header_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = checkpoint_mod.safe_open

    def spy(*args: Any, **kwargs: Any) -> _HeaderOnly:
        return _HeaderOnly(real(*args, **kwargs))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tensor bytes mapped")

    monkeypatch.setattr(checkpoint_mod, "safe_open", spy)
    monkeypatch.setattr(checkpoint_mod, "map_tensor", refuse)
    monkeypatch.setattr(mapped_mod, "map_tensor", refuse)


def test_search_config_reports_space_size_and_memory(llama_family: dict[str, Path], tmp_path: Path,
                                                     header_only: None) -> None:
    code, out = run(["validate", str(search_config(tmp_path, llama_family)), "--json"])
    assert code == 0, out
    report = json.loads(out)
    assert report["kind"] == "search" and report["ok"]
    space = next(c for c in report["checks"] if c["check"] == "search space")
    assert space["data"]["dimension"] == 3  # one task_arithmetic weight per fine-tune; the base is not searched
    memory = [c for c in report["checks"] if c["check"] == "memory"]
    assert memory[1]["data"]["actors"] == 2
    plan = next(c for c in report["checks"] if c["check"] == "plan")
    assert plan["status"] == "ok"


def test_search_config_problems_are_lines_not_tracebacks(llama_family: dict[str, Path], tmp_path: Path) -> None:
    config = search_config(tmp_path, llama_family, parameters={"weight": {"low": 0.0, "high": 1.0}, "bogus": {}})
    code, out = run(["validate", str(config), "--json"])
    assert code == 1
    problems = [c for c in json.loads(out)["checks"] if c["status"] == "problem"]
    assert len(problems) == 1 and "bogus" in problems[0]["message"]
    code, out = run(["validate", str(config), "--set", "strategy.nonsense=1", "--json"])
    assert code == 1 and "nonsense" in out


def test_table_output_and_exit_codes(llama_family: dict[str, Path], tmp_path: Path, header_only: None) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(llama_family["ft1"])}, {"model": str(tmp_path / "gone")}]}))
    code, out = run(["validate", str(recipe)])
    assert code == 1
    assert "problem" in out and "gone" in out and "Traceback" not in out
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(llama_family["ft1"]), "parameters": {"weight": 0.5}},
        {"model": str(llama_family["ft2"]), "parameters": {"weight": 0.5}}]}))
    code, out = run(["validate", str(recipe)])
    assert code == 0, out
    assert "all checks passed" in out


def test_the_spy_catches_a_tensor_read(llama_family: dict[str, Path], header_only: None) -> None:
    """The fixture above would fail a validate that read weights: it does fail a real read."""
    ckpt = checkpoint_mod.Checkpoint(llama_family["base"])
    assert ckpt.meta  # headers are fine
    with pytest.raises(AssertionError, match="tensor bytes"):
        ckpt.get(ckpt.names()[0])
    streaming = checkpoint_mod.Checkpoint(llama_family["base"], keep_open=False)
    with pytest.raises(AssertionError, match="tensor bytes"):
        streaming.get(streaming.names()[0])
