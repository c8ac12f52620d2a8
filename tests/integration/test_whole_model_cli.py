"""`evomerge merge` and `evomerge validate` route whole-model methods (MoE expert merging) past the planner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from evomerge.cli import main
from evomerge.merge.whole_model import WHOLE_MODEL, whole_model_method
from evomerge.moe.tiny import make_tiny_moe


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_registry_knows_the_whole_model_methods_and_only_them() -> None:
    assert {"pleas", "fw", "mc_smoe", "sub_moe"} <= set(WHOLE_MODEL.names())
    assert whole_model_method("ties") is None and whole_model_method("mc_smoe") is not None


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("moe_cli")
    make_tiny_moe(root / "moe", arch="mixtral", seed=0)
    (root / "calib.txt").write_text("The quick brown fox jumps over the lazy dog. " * 40)
    return root


def write_recipe(root: Path, name: str, num_experts: int) -> Path:
    recipe = {"merge_method": "mc_smoe", "models": [{"model": str(root / "moe")}],
              "parameters": {"num_experts": num_experts, "calibration_text": "calib.txt",
                             "calibration_sequences": 2, "calibration_length": 16}}
    path = root / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_merge_and_validate_an_expert_merge_from_the_cli(recipe_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOMERGE_CACHE", str(recipe_dir / "cache"))
    recipe = write_recipe(recipe_dir, "ok.yaml", 4)
    code, out = run(["validate", str(recipe)])
    assert code == 0, out
    code, out = run(["merge", str(recipe), str(recipe_dir / "out"), "-q"])
    assert code == 0, out
    assert "mc_smoe" in out
    config = json.loads((recipe_dir / "out" / "config.json").read_text())
    assert config["num_local_experts"] == 4


def test_a_bad_expert_count_is_one_line_from_merge_and_validate(recipe_dir: Path) -> None:
    recipe = write_recipe(recipe_dir, "bad.yaml", 9)
    code, out = run(["merge", str(recipe), str(recipe_dir / "bad_out")])
    assert code != 0 and "num_experts" in out and "Traceback" not in out
    assert not (recipe_dir / "bad_out").exists()
    code, out = run(["validate", str(recipe)])
    assert code == 1 and "num_experts" in out
