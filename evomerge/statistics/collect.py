"""Collect a model's statistics once and cache them: the entry point of this package.

``collect_statistics`` works on an in-memory module, ``collect_checkpoint_statistics`` on a checkpoint
folder (which is loaded only on a cache miss). Both return the :class:`StatisticsFolder` that recipes
name in their ``statistics`` parameter. A cache hit reads nothing but the folder's ``statistics.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evomerge.progress import progress_bar
from evomerge.statistics.cache import (
    StatisticsFolder,
    folder_identity,
    is_complete,
    module_identity,
    statistics_key,
    write_folder,
)
from evomerge.statistics.data import CalibrationData
from evomerge.statistics.fisher import diagonal_fisher
from evomerge.statistics.gram import input_grams
from evomerge.statistics.likelihood import limited, to_device
from evomerge.statistics.settings import StatisticsSettings


def statistics_folder(cache_dir: str | Path, model_identity: str, data: CalibrationData,
                      settings: StatisticsSettings) -> Path:
    """Where the statistics of this model, data and settings live under ``cache_dir``."""
    return Path(cache_dir).expanduser() / statistics_key(model_identity, data.identity, settings)


def collect_statistics(
    model: nn.Module,
    data: CalibrationData,
    settings: StatisticsSettings,
    *,
    cache_dir: str | Path,
    model_identity: str | None = None,
    progress: bool = True,
) -> StatisticsFolder:
    """The statistics of ``model`` on ``data``: read from the cache, else computed and cached.

    ``model_identity`` defaults to a hash of the module's tensors; pass ``folder_identity(path)`` for a
    model loaded from a folder to skip hashing its bytes.
    """
    identity = model_identity or module_identity(model)
    folder = statistics_folder(cache_dir, identity, data, settings)
    if is_complete(folder):
        return StatisticsFolder(folder)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        fisher, grams, counts, n_fisher = _compute(model, data, settings, device, progress)
    finally:
        model.train(was_training)
    meta = {
        "model": identity,
        "data": data.identity,
        "task": data.task,
        "settings": settings.model_dump(mode="json"),
        "fisher_examples": n_fisher,
        "fisher_norm": float(sum(float(f.double().square().sum()) for f in fisher.values())) ** 0.5,
        "gram_counts": counts,
    }
    return StatisticsFolder(write_folder(folder, meta, fisher, grams))


def _compute(
    model: nn.Module, data: CalibrationData, settings: StatisticsSettings, device: torch.device, progress: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, int], int]:
    limits = [x for x in (data.n_examples, settings.max_examples) if x is not None]
    per_pass = min(limits) if limits else 0
    fisher: dict[str, torch.Tensor] = {}
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    n_fisher = 0

    def batches() -> Iterator[Any]:
        for batch in limited(data.batches(), data.task, settings.max_examples):
            yield to_device(batch, device)

    with progress_bar("statistics", total=per_pass * len(settings.kinds), unit="examples", enabled=progress) as bar:
        if "gram" in settings.kinds:
            grams, counts = input_grams(model, batches(), data.task, bar)
        if "fisher" in settings.kinds:
            generator = torch.Generator().manual_seed(settings.seed)
            fisher, n_fisher = diagonal_fisher(model, batches(), data.task, settings.fisher_labels, generator, bar)
    return fisher, {k: v.cpu() for k, v in grams.items()}, counts, n_fisher


def collect_checkpoint_statistics(
    model_dir: str | Path,
    data: CalibrationData,
    settings: StatisticsSettings,
    *,
    cache_dir: str | Path,
    loader: Callable[[Path], nn.Module] | None = None,
    model_class: str = "causal_lm",
    progress: bool = True,
) -> StatisticsFolder:
    """Statistics of the checkpoint in ``model_dir``, loaded (by ``loader``, else transformers'
    ``model_class``) only when the cache has none for its current files."""
    identity = folder_identity(model_dir)
    folder = statistics_folder(cache_dir, identity, data, settings)
    if is_complete(folder):
        return StatisticsFolder(folder)
    if loader is not None:
        model = loader(Path(model_dir))
    else:
        from evomerge.models import load_pretrained

        model = load_pretrained(model_dir, model_class)[0]
    return collect_statistics(model, data, settings, cache_dir=cache_dir, model_identity=identity, progress=progress)
