"""``merge_method: pleas`` recipes (evomerge/merge/pleas/recipe.py): checkpoints in, a wider checkpoint out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from evomerge.errors import ConfigError, StatisticsError
from evomerge.io.checkpoint import Checkpoint
from evomerge.io.writer import save_state_dict
from evomerge.merge.pleas.recipe import RESULT_FILE, pleas_inputs, pleas_to_disk
from evomerge.plan import MergePlan
from evomerge.statistics.activations import collect_activations
from tests.unit.test_pleas_merge import MLP, SIZES, gaussian_data, permuted_copy, probe_input


def sources(tmp_path: Path) -> tuple[MLP, list[dict[str, Any]]]:
    model = MLP(SIZES, seed=21)
    entries = []
    for name, m in (("a", model), ("b", permuted_copy(model, seed=22))):
        save_state_dict(m.state_dict(), tmp_path / name, config={"sizes": list(SIZES)})
        acts = collect_activations(m, gaussian_data(), cache_dir=tmp_path / "acts")
        entries.append({"model": str(tmp_path / name), "parameters": {"statistics": str(acts.path)}})
    return model, entries


def test_a_recipe_merges_checkpoints_into_a_wider_checkpoint(tmp_path: Path) -> None:
    model, entries = sources(tmp_path)
    plan = MergePlan.from_dict({"merge_method": "pleas", "models": entries, "parameters": {"width_ratio": 1.5}})
    pleas_to_disk(plan, tmp_path / "out")
    widths = json.loads((tmp_path / "out" / RESULT_FILE).read_text())["widths"]
    assert widths == [6, 18, 15, 3]
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"sizes": list(SIZES)}
    merged = MLP(widths)
    ck = Checkpoint(tmp_path / "out")
    merged.load_state_dict({n: ck.get(n).clone() for n in ck.names()})
    with torch.no_grad():
        torch.testing.assert_close(merged(probe_input()), model(probe_input()), atol=1e-5, rtol=0)


def test_per_hidden_layer_ratios_come_as_a_list(tmp_path: Path) -> None:
    _, entries = sources(tmp_path)
    plan = MergePlan.from_dict({"merge_method": "pleas", "models": entries,
                                "parameters": {"width_ratio": [2.0, 1.0], "ridge": 0.0}})
    settings = pleas_inputs(plan)[2]
    assert settings.width_ratio == (2.0, 1.0) and settings.ridge == 0.0


@pytest.mark.parametrize(("change", "message"), [
    ({"base_model": "x"}, "base_model: pleas merges the listed models as a whole"),
    ({"parameters": {"width": 2}}, "parameters: unknown key 'width'"),
    ({"parameters": {"ridge": -1.0}}, "parameters.ridge"),
    ({"parameters": {"width_ratio": [{"filter": "layers.1", "value": 2.0}]}}, "parameters.width_ratio: pleas takes plain"),
])
def test_recipe_mistakes_are_config_errors(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    _, entries = sources(tmp_path)
    plan = MergePlan.from_dict({"merge_method": "pleas", "models": entries, **change})
    with pytest.raises(ConfigError, match=message):
        pleas_inputs(plan)


def test_a_model_without_statistics_is_named(tmp_path: Path) -> None:
    _, entries = sources(tmp_path)
    entries[1] = {"model": entries[1]["model"]}
    with pytest.raises(ConfigError, match=r"models\.1\.parameters: needs 'statistics'"):
        pleas_inputs(MergePlan.from_dict({"merge_method": "pleas", "models": entries}))
    entries[1] = {"model": entries[1]["model"], "parameters": {"statistics": str(tmp_path / "missing")}}
    with pytest.raises(StatisticsError, match="not an activations folder"):
        pleas_inputs(MergePlan.from_dict({"merge_method": "pleas", "models": entries}))
