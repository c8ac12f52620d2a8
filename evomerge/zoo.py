"""Source models built on the fly: a tiny base and task specialists, so a search needs no download.

``models.generate`` in a search config names a kind of model set. ``tiny_specialists`` trains a tiny
character-level Llama on the few-shot (``train``) splits of the bundled lm-eval tasks, then fine-tunes one copy
per task on that task's ``train`` and ``search`` splits. The specialists have seen the questions a search
scores on (as fine-tunes usually have seen their task's data) but never the ``test`` split, which stays held
out for reporting. Each specialist is strong on its own task and weak on the others: the situation merging
is for, small enough to train in seconds on a CPU.

Sets are cached by content (kind, options, seed, format version) under ``cache_dir`` (default
``$EVOMERGE_CACHE`` or ``~/.cache/evomerge``) and written atomically, so concurrent runs and crashed builds
never leave a half-trained model that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field

from evomerge.config import GenerateConfig
from evomerge.errors import ConfigError
from evomerge.registry import Registry
from evomerge.seeding import SeedTree
from evomerge.validation import validate_model

ZOO_VERSION = 1


@dataclass(frozen=True)
class GeneratedModels:
    base: Path | None
    sources: list[Path]


class TinySpecialistsOptions(BaseModel):
    """Options of ``models.generate.kwargs`` for ``kind: tiny_specialists``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: list[str] = Field(default_factory=lambda: ["evomerge_facts", "evomerge_strings"], min_length=1)
    arch: str = "llama"
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    base_steps: int = Field(150, ge=0)
    specialist_steps: int = Field(500, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)
    specialist_lr: float = Field(3e-3, gt=0)
    cache_dir: str | None = None


GENERATORS: Registry[Any] = Registry("model generator")


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVOMERGE_CACHE") or Path.home() / ".cache" / "evomerge")


def generate_models(config: GenerateConfig, seeds: SeedTree, *, progress: bool = True) -> GeneratedModels:
    """Build (or find in the cache) the model set ``config`` describes."""
    builder = GENERATORS.get(config.kind, "models.generate.kind")
    return builder(config.kwargs, seeds, progress)


def _cache_key(kind: str, options: BaseModel, seed: int) -> str:
    fields = options.model_dump(exclude={"cache_dir"})
    blob = json.dumps({"kind": kind, "options": fields, "seed": seed, "version": ZOO_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@GENERATORS.register("tiny_specialists")
def tiny_specialists(kwargs: dict[str, Any], seeds: SeedTree, progress: bool) -> GeneratedModels:
    from fitness.tasks import bundled_task_names

    opts = validate_model(TinySpecialistsOptions, kwargs, "models.generate.kwargs", prefix="models.generate.kwargs")
    known = bundled_task_names()
    for i, task in enumerate(opts.tasks):
        if task not in known:
            raise ConfigError(f"unknown bundled task {task!r}; known: {', '.join(known)}",
                              f"models.generate.kwargs.tasks.{i}")
    seed = seeds.small_integer()
    root = Path(opts.cache_dir).expanduser() if opts.cache_dir else default_cache_dir()
    folder = root / "zoo" / f"tiny_specialists-{_cache_key('tiny_specialists', opts, seed)}"
    names = ["base", *opts.tasks]
    if not (folder / "DONE").is_file():
        root.joinpath("zoo").mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if not (folder / "DONE").is_file():
                if progress:
                    print(f"training {len(opts.tasks)} tiny specialists once (about a minute on 2 cores; cached in "
                          f"{folder})", file=sys.stderr, flush=True)
                _build_specialists(opts, seed, folder, progress)
    return GeneratedModels(folder / "base", [folder / n for n in names[1:]])


def _build_specialists(opts: TinySpecialistsOptions, seed: int, folder: Path, progress: bool) -> None:
    from evomerge.tiny_models import build_tokenizer, make_tiny_model
    from evomerge.zoo_training import task_texts, train_lm

    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        tokenizer = build_tokenizer()
        model = make_tiny_model(arch=opts.arch, seed=seed, hidden=opts.hidden, layers=opts.layers, heads=opts.heads)  # type: ignore[arg-type]
        base_texts = [t for task in opts.tasks for t in task_texts(task, ("train",))]
        train_lm(model, tokenizer, base_texts, steps=opts.base_steps, batch_size=opts.batch_size, lr=opts.lr,
                 seed=seed, label="zoo: base" if progress else None)
        _save(model, tmp / "base")
        base_state = {k: v.clone() for k, v in model.state_dict().items()}
        for i, task in enumerate(opts.tasks):
            model.load_state_dict(base_state)
            train_lm(model, tokenizer, task_texts(task, ("train", "search")), steps=opts.specialist_steps,
                     batch_size=opts.batch_size, lr=opts.specialist_lr, seed=seed + 1 + i,
                     label=f"zoo: {task}" if progress else None)
            _save(model, tmp / task)
        (tmp / "DONE").write_text(json.dumps({"options": opts.model_dump(), "seed": seed}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save(model: Any, out: Path) -> None:
    from evomerge.tiny_models import build_tokenizer

    model.save_pretrained(str(out))
    build_tokenizer(out)

