"""Find, fix up and load the lm-eval tasks of an ``lm_eval`` suite, once per suite.

Tasks are looked up in the bundled folder and ``include_path`` first; lm-eval's built-in tasks are indexed
(about 15 s) only when a name is not found there, or when ``include_defaults`` says so. A task defined by
a YAML file is loaded from its config with ``data_files`` (and ``data_dir``) made absolute, relative paths
being taken against the YAML's folder, then the config's folder: lm-eval would resolve them against the
working directory, which differs between the driver, a Ray actor and a test. Every loaded task is then
checked against the held-out guard: scoring a split named ``test`` needs ``allow_test_split: true``.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError
from fitness.base import held_out_split_problem
from fitness.harness.options import LmEvalConfig
from fitness.options import suggestion
from fitness.tasks import TASKS_DIR


@dataclass
class TaskEntry:
    """One item of the config's ``tasks`` list and the leaf lm-eval tasks it expanded to."""

    label: str
    tasks: dict[str, Any]
    groups: dict[str, Any]


def is_yaml_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def entry_label(name: str) -> str:
    return Path(name).stem if is_yaml_path(name) else name


def include_dirs(cfg: LmEvalConfig, base_dir: Path) -> list[Path]:
    dirs = [TASKS_DIR]
    for raw in cfg.include_path:
        path = _anchored(raw, base_dir)
        if not path.is_dir():
            raise ConfigError(f"lm_eval include_path not found: {path}")
        dirs.append(path)
    return dirs


def _anchored(raw: str, base: Path) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def task_manager(cfg: LmEvalConfig, base_dir: Path) -> Any:
    """A TaskManager that knows every task named in ``cfg.tasks`` (built-ins indexed only if needed)."""
    from lm_eval.tasks import TaskManager

    dirs = [str(d) for d in include_dirs(cfg, base_dir)]
    local = TaskManager(include_path=dirs, include_defaults=bool(cfg.include_defaults), metadata=cfg.metadata)
    names = [n for n in cfg.tasks if not is_yaml_path(n)]
    missing = [n for n in names if n not in local.all_tasks]
    if not missing:
        return local
    if cfg.include_defaults is None:
        manager = TaskManager(include_path=dirs, include_defaults=True, metadata=cfg.metadata)
        missing = [n for n in names if n not in manager.all_tasks]
        if not missing:
            return manager
    local_names = sorted(TaskManager(include_path=dirs, include_defaults=False).all_tasks)
    searched = "" if cfg.include_defaults is False else " (lm-eval's built-in tasks were searched too)"
    raise ConfigError(
        f"unknown lm-eval task {missing[0]!r}{suggestion(missing[0], local_names)}{searched}; "
        f"known local tasks: {', '.join(local_names)}",
        "fitness.tasks",
    )


def _absolute(value: Any, yaml_dir: Path, base_dir: Path, task: str) -> Any:
    """``value`` (a path, a list or a mapping of them) with relative local paths made absolute."""
    if isinstance(value, dict):
        return {k: _absolute(v, yaml_dir, base_dir, task) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute(v, yaml_dir, base_dir, task) for v in value]
    if not isinstance(value, str) or "://" in value:
        return value
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else list(dict.fromkeys([yaml_dir / path, base_dir / path]))
    for candidate in candidates:
        if (glob.has_magic(str(candidate)) and glob.glob(str(candidate))) or candidate.exists():
            return str(candidate.resolve())
    tried = " or ".join(str(c) for c in candidates)
    raise ConfigError(f"lm_eval task {task!r}: data file not found: {tried}")


def _fixed_config(yaml_path: Path, cfg: LmEvalConfig, base_dir: Path) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    raw: dict[str, Any] = load_yaml(yaml_path, resolve_func=True)
    task = str(raw.get("task", yaml_path.stem))
    kwargs = dict(raw.get("dataset_kwargs") or {})
    for key in ("data_files", "data_dir"):
        if key in kwargs:
            kwargs[key] = _absolute(kwargs[key], yaml_path.parent, base_dir, task)
    if kwargs:
        raw["dataset_kwargs"] = kwargs
    local_dataset = yaml_path.parent / str(raw.get("dataset_path", ""))
    if raw.get("dataset_path") and not Path(raw["dataset_path"]).is_absolute() and local_dataset.exists():
        raw["dataset_path"] = str(local_dataset.resolve())
    if cfg.split is not None:
        files = kwargs.get("data_files")
        if isinstance(files, dict) and cfg.split not in files:
            raise ConfigError(f"lm_eval task {task!r} has no split {cfg.split!r}; its splits: {', '.join(files)}")
        raw["test_split"] = cfg.split
    return raw


def _spec(name: str, manager: Any, cfg: LmEvalConfig, base_dir: Path) -> str | dict[str, Any]:
    """What to hand ``TaskManager.load`` for one configured name: a fixed-up config dict, or the name."""
    if is_yaml_path(name):
        path = _anchored(name, base_dir)
        if not path.is_file():
            raise ConfigError(f"lm_eval task file not found: {path}")
        yaml_path: Path | None = path
    else:
        entry = manager.task_index[name]
        yaml_path = entry.yaml_path if entry.kind.name == "TASK" else None
    if yaml_path is not None:
        fixed = _fixed_config(yaml_path, cfg, base_dir)
        if "task" in fixed and "group" not in fixed:
            return fixed
    if cfg.split is not None:
        raise ConfigError(f"lm_eval 'split' applies to single YAML tasks; {name!r} is a group, tag or Python task")
    return str(yaml_path) if yaml_path is not None else name


def load_entries(cfg: LmEvalConfig, base_dir: Path) -> list[TaskEntry]:
    """Load every configured task once; leaf task names must not repeat across entries."""
    manager = task_manager(cfg, base_dir)
    entries: list[TaskEntry] = []
    seen: dict[str, str] = {}
    for name in cfg.tasks:
        loaded = manager.load([_spec(name, manager, cfg, base_dir)])
        label = entry_label(name)
        for task_name, task in loaded["tasks"].items():
            if task_name in seen:
                raise ConfigError(f"lm-eval task {task_name!r} appears in both {seen[task_name]!r} and {label!r}")
            seen[task_name] = label
            split = task.config.test_split or task.config.validation_split
            problem = held_out_split_problem(split, cfg.allow_test_split, f"lm_eval task {task_name!r}")
            if problem:
                raise ConfigError(problem)
        entries.append(TaskEntry(label, dict(loaded["tasks"]), dict(loaded.get("groups", {}))))
    return entries
