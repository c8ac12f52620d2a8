"""Every config shipped in ``configs/`` loads: a renamed field must not break a documented command."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_the_configs_folder_is_found() -> None:
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem
