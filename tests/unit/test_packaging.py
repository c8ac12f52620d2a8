"""The installed package carries its data files and reports its version."""

from __future__ import annotations

import json
from importlib import metadata, resources

import yaml
from click.testing import CliRunner

from evomerge.cli import main


def test_bundled_tasks_and_their_data_files_are_installed() -> None:
    tasks = resources.files("fitness.tasks")
    configs = [f for f in tasks.iterdir() if f.name.endswith(".yaml")]
    assert configs, "no task YAML shipped with the fitness package"
    for cfg in configs:
        data = yaml.safe_load(cfg.read_text())
        files = data["dataset_kwargs"]["data_files"]
        assert set(files) >= {"search", "test"}, cfg.name
        for split, name in files.items():
            path = tasks.joinpath(name)
            assert path.is_file(), f"{cfg.name}: {split} file {name} missing"
            first = path.read_text().splitlines()[0]
            assert isinstance(json.loads(first), dict)


def test_version_flag_matches_distribution_metadata() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"evomerge, version {metadata.version('evomerge')}"


def test_console_script_and_typed_marker_are_declared() -> None:
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("evomerge") == "evomerge.cli:main"
    assert resources.files("evomerge").joinpath("py.typed").is_file()
