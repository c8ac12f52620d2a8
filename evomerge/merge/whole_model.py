"""Whole-model merge methods: the ones that cannot run one tensor at a time.

Most operators are pure per-tensor functions driven by the planner and executor. A few methods need the
whole model at once, because they change shapes (PLeaS widens hidden layers, MoE expert merging drops
experts) or because every step needs the loss of the whole merged model (Frank–Wolfe merging). They take a
recipe in the same YAML dialect and write a checkpoint folder atomically, like ``merge_to_disk``; this
registry lets ``evomerge merge`` and ``evomerge validate`` route such a recipe without knowing the method.
Implementations are imported lazily: they depend on this package's writer, not the other way round.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.plan import MergePlan
from evomerge.registry import Registry


@dataclass(frozen=True)
class WholeModelMethod:
    name: str
    merge: str
    """``module:function`` taking ``(plan, out_dir, *, base_dir, device, max_shard_size, overwrite,
    allow_download)`` and returning the output folder or a result with a ``path``."""
    check: str
    """``module:function`` taking ``(plan, base_dir)``: reads headers and statistics only, returns a line
    describing the merge, or raises an :class:`evomerge.errors.EvomergeError` naming the problem."""
    summary: str


WHOLE_MODEL: Registry[WholeModelMethod] = Registry("whole-model merge method")


def _register(method: WholeModelMethod) -> None:
    WHOLE_MODEL.register(method.name, method)


_register(WholeModelMethod("pleas", "evomerge.merge.whole_model_adapters:pleas",
                           "evomerge.merge.whole_model_adapters:check_pleas",
                           "PLeaS: permutation matching + layer-wise least squares (MLP stacks)"))
_register(WholeModelMethod("fw", "evomerge.merge.whole_model_adapters:frank_wolfe",
                           "evomerge.merge.whole_model_adapters:check_frank_wolfe",
                           "FW-Merging: Frank–Wolfe over the models on a calibration loss"))
for _name, _paper in (("mc_smoe", "MC-SMoE"), ("sub_moe", "Sub-MoE")):
    _register(WholeModelMethod(_name, "evomerge.merge.whole_model_adapters:expert_merge",
                               "evomerge.merge.whole_model_adapters:check_expert_merge",
                               f"{_paper}: merge the experts of one MoE model into fewer"))


def whole_model_method(name: str) -> WholeModelMethod | None:
    """The whole-model method called ``name``, or None for a per-tensor operator."""
    return WHOLE_MODEL.get(name, "merge_method") if name in WHOLE_MODEL else None


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def merge_whole_model(plan: MergePlan, out_dir: str | Path, *, base_dir: Path | None = None, device: str = "cpu",
                      max_shard_size: int | str = "5GB", overwrite: bool = False,
                      allow_download: bool = False) -> Path:
    method = whole_model_method(plan.merge_method)
    if method is None:
        raise KeyError(plan.merge_method)
    return Path(_resolve(method.merge)(plan, out_dir, base_dir=base_dir, device=device, max_shard_size=max_shard_size,
                                       overwrite=overwrite, allow_download=allow_download))


def check_whole_model(plan: MergePlan, base_dir: Path | None = None) -> str:
    method = whole_model_method(plan.merge_method)
    if method is None:
        raise KeyError(plan.merge_method)
    return str(_resolve(method.check)(plan, base_dir))
