"""Naming the entries of a saved optimizer state: its per-parameter state is keyed by index, not name.

``torch.optim`` numbers the parameters of ``param_groups`` in order, so the index of a parameter depends
on which group it went to. Optimizers built from ``named_parameters()`` store the names; otherwise they are
recovered from the model: a Hugging Face Trainer builds two groups (weight-decayed parameters, then the
rest, each in ``named_parameters`` order; :func:`trainer_groups`), a plain optimizer one. The grouping whose
group sizes and tensor shapes agree with the saved state is taken; a state that fits several different
groupings is refused rather than guessed. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evomerge.errors import StatisticsError

_NO_DECAY = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")
"""Parameter names the Hugging Face Trainer exempts from weight decay (lower-cased)."""


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters an optimizer built from ``model.parameters()`` holds, in its order."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def trainer_groups(model: nn.Module, legacy: bool = False) -> list[list[str]]:
    """The Hugging Face Trainer's parameter groups: [weight-decayed, not decayed], each in
    ``named_parameters`` order. Parameters of ``nn.LayerNorm`` modules and names matching bias / norm
    patterns are not decayed; ``legacy``: older Trainers' rule (bias names and any ``*Norm`` module)."""
    in_norms: set[str] = set()
    for prefix, module in model.named_modules():
        is_norm = isinstance(module, nn.LayerNorm) or (legacy and type(module).__name__.endswith("Norm"))
        if is_norm:
            in_norms.update(
                f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)
            )
    decay: list[str] = []
    no_decay: list[str] = []
    for name in trainable_names(model):
        exempt = ("bias" in name) if legacy else bool(_NO_DECAY.search(name.lower()))
        (no_decay if exempt or name in in_norms else decay).append(name)
    return [decay, no_decay]


def _split(names: Sequence[str], sizes: list[int]) -> list[list[str]] | None:
    if len(names) != sum(sizes):
        return None
    out, start = [], 0
    for size in sizes:
        out.append(list(names[start : start + size]))
        start += size
    return out


def _infer_groups(
    model: nn.Module, index_groups: list[list[int]], state: Mapping[int, Any]
) -> list[list[str]]:
    """The one grouping of the model's parameters that matches the optimizer's group sizes and shapes."""
    sizes = [len(g) for g in index_groups]
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    candidates = {
        "named_parameters order": _split(trainable_names(model), sizes),
        "Hugging Face Trainer groups": trainer_groups(model),
        "older Hugging Face Trainer groups": trainer_groups(model, legacy=True),
    }
    fits: dict[str, dict[int, str]] = {}
    for label, groups in candidates.items():
        if groups is None or [len(g) for g in groups] != sizes:
            continue
        mapping = {i: n for ids, names in zip(index_groups, groups) for i, n in zip(ids, names)}
        if all(
            i in mapping and tuple(_moment(entry, i).shape) == shapes[mapping[i]]
            for i, entry in state.items()
        ):
            fits[label] = mapping
    distinct = {tuple(sorted(m.items())) for m in fits.values()}
    if len(distinct) == 1:
        return [[next(iter(fits.values()))[i] for i in ids] for ids in index_groups]
    if not distinct:
        raise StatisticsError(
            f"optimizer groups of sizes {sizes} match no grouping of the model's parameters by order and shape "
            "(another model? a ZeRO/FSDP shard? gather the full state, or pass the parameter names per group)"
        )
    raise StatisticsError(
        f"optimizer state fits several groupings ({', '.join(fits)}); pass the parameter names per group"
    )


def _moment(entry: Any, index: int) -> torch.Tensor:
    v = entry.get("exp_avg_sq") if isinstance(entry, dict) else None
    if not isinstance(v, torch.Tensor):
        raise StatisticsError(
            f"optimizer state of parameter #{index} has no exp_avg_sq (not an Adam/AdamW state?)"
        )
    return v


def _load_optimizer_state(path: Path) -> tuple[list[list[int]], dict[int, Any], list[list[str]] | None]:
    if not path.is_file():
        raise StatisticsError(f"optimizer state not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StatisticsError(f"{path}: cannot load with torch.load(weights_only=True): {exc}") from None
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("state"), dict)
        or not isinstance(obj.get("param_groups"), list)
    ):
        raise StatisticsError(f"{path}: not an optimizer state dict (expected 'state' and 'param_groups')")
    groups = [[int(i) for i in g["params"]] for g in obj["param_groups"]]
    stored = [list(g["param_names"]) for g in obj["param_groups"] if "param_names" in g]
    return (
        groups,
        {int(k): v for k, v in obj["state"].items()},
        stored if len(stored) == len(groups) else None,
    )


def optimizer_second_moments(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    names: Sequence[str] | Sequence[Sequence[str]] | None = None,
) -> dict[str, torch.Tensor]:
    """Parameter name → ``exp_avg_sq`` (float32) from a saved optimizer state dict.

    Indices are named by ``names`` (per group, or one flat list in index order) when given, else by the
    names the state stores (optimizers built from ``named_parameters()``), else by ``model``: the grouping
    (plain order, or the Trainer's decay split) that agrees with the state's group sizes and shapes.
    """
    path = Path(path)
    index_groups, state, stored = _load_optimizer_state(path)
    sizes = [len(g) for g in index_groups]
    groups: list[list[str]] | None
    if names is not None:
        flat = all(isinstance(n, str) for n in names)
        groups = _split(list(names), sizes) if flat else [list(g) for g in names]  # type: ignore[arg-type]
        if groups is None or [len(g) for g in groups] != sizes:
            raise StatisticsError(
                f"{path}: optimizer groups have {sizes} parameters; the names given do not match"
            )
    elif stored is not None:
        groups = stored
    elif model is not None:
        groups = _infer_groups(model, index_groups, state)
    else:
        raise StatisticsError(f"{path}: the optimizer state names no parameters; pass the model (or names=)")
    mapping = {i: n for ids, group in zip(index_groups, groups) for i, n in zip(ids, group)}
    moments = {}
    for index, entry in sorted(state.items()):
        if index not in mapping:
            raise StatisticsError(f"{path}: state of parameter #{index} belongs to no parameter group")
        moments[mapping[index]] = _moment(entry, index).detach().float()
    if not moments:
        raise StatisticsError(f"{path}: holds no optimizer state (saved before the first step?)")
    if model is not None:
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        for name, v in moments.items():
            if shapes.get(name) != tuple(v.shape):
                raise StatisticsError(
                    f"{path}: exp_avg_sq of {name!r} has shape {list(v.shape)}, the model's "
                    f"{list(shapes.get(name, ()))} (a ZeRO/FSDP shard? gather the full state)"
                )
    return moments
