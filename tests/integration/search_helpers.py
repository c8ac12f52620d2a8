"""Configs and readers shared by the end-to-end search tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ASSETS = Path(__file__).with_name("assets")


def search_config(family: dict[str, Path], *, function: str = "mlp_norm", kwargs: dict[str, Any] | None = None,
                  evaluations: int = 12, strategy: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "seed": 3,
        "models": {"base": str(family["base"]), "sources": [str(family[k]) for k in ("ft1", "ft2", "ft3")]},
        "search_space": {"name": "global", "merge_method": "task_arithmetic",
                         "parameters": {"weight": {"low": 0.0, "high": 1.0}}},
        "strategy": strategy or {"name": "cmaes", "popsize": 4},
        "fitness": {"name": "callable", "function": f"{ASSETS / 'fitness_fns.py'}:{function}", "kwargs": kwargs or {}},
        "budget": {"evaluations": evaluations},
        "tracking": {"console": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def records(run_dir: Path) -> list[dict[str, Any]]:
    f = run_dir / "evaluations.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


def status(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "status.json").read_text()))
