"""How data-aware operators reach the statistics a recipe names.

A recipe gives every input model a ``statistics`` parameter: the folder its statistics were collected
into (``collect_statistics`` returns it; relative paths are relative to the working directory). The
operators' :class:`StatisticsPass` (a ``GlobalPass``) opens each named folder once before merging and
checks it against every tensor it will merge, so a missing or mismatched statistic is reported before any
weight is written; the operators then read one tensor's statistics at a time from the open folders.

Statistics are looked up by the *output* tensor name, which is the source tensor name in ``models:``
recipes. A statistic that no input has for a tensor (a buffer, say) is not an error: the operators fall
back to a plain average there; one that only some inputs have is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from evomerge.errors import StatisticsError
from evomerge.merge.operator import MergeInputs
from evomerge.merge.params import REQUIRED, ParamSpec, ResolvedParams
from evomerge.statistics.cache import StatisticsFolder

Kind = Literal["fisher", "gram"]

STATISTICS_PARAM = ParamSpec(
    "statistics",
    str,
    scope="model",
    default=REQUIRED,
    doc="folder of the model's precomputed statistics (evomerge.statistics.collect_statistics)",
)


def expected_shape(kind: Kind, tensor_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The statistic's shape for a tensor; None when the kind has none for this shape (non-matrix Grams)."""
    if kind == "fisher":
        return tensor_shape
    return (tensor_shape[1], tensor_shape[1]) if len(tensor_shape) == 2 else None


def folders_for(inputs: MergeInputs, params: ResolvedParams) -> list[StatisticsFolder]:
    """The statistics folder of each input, as opened by the global pass (or opened now when the operator
    is called directly, outside an executor)."""
    opened: dict[str, StatisticsFolder] = inputs.stats.get("folders", {})
    return [opened[p] if p in opened else StatisticsFolder(Path(p)) for p in params.model("statistics")]


def statistics_for(inputs: MergeInputs, params: ResolvedParams, kind: Kind) -> list[torch.Tensor] | None:
    """Each input's ``kind`` statistic for this tensor, in input order; None when no input has one."""
    paths = list(params.model("statistics"))
    folders = folders_for(inputs, params)
    present = [inputs.name in f.names(kind) for f in folders]
    if not any(present):
        return None
    if not all(present):
        missing = ", ".join(p for p, ok in zip(paths, present) if not ok)
        raise StatisticsError(f"{kind} statistics of {inputs.name!r} are missing from {missing}")
    read = (lambda f: f.fisher(inputs.name)) if kind == "fisher" else (lambda f: f.gram(inputs.name))
    like = inputs.tensors[0]
    return [read(f).to(device=like.device, dtype=like.dtype) for f in folders]


class StatisticsPass:
    """Opens and checks the statistics folders of a data-aware operator before any tensor is merged."""

    n_passes = 1

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.folders: dict[str, StatisticsFolder] = {}

    def start(self, n_models: int) -> None:
        self.folders = {}

    def _folder(self, path: str) -> StatisticsFolder:
        if path not in self.folders:
            folder = StatisticsFolder(Path(path))
            if not folder.names(self.kind):
                raise StatisticsError(f"{path}: holds no {self.kind} statistics (collect with kinds including {self.kind!r})")
            self.folders[path] = folder
        return self.folders[path]

    def observe(self, inputs: MergeInputs, params: ResolvedParams, pass_index: int) -> None:
        paths = list(params.model("statistics"))
        folders = [self._folder(p) for p in paths]
        want = expected_shape(self.kind, tuple(inputs.tensors[0].shape))
        present = [inputs.name in f.names(self.kind) for f in folders]
        if not any(present):
            return
        if want is None or not all(present):
            bad = [p for p, ok in zip(paths, present) if not ok] if want is not None else paths
            raise StatisticsError(f"{self.kind} statistics of {inputs.name!r} are missing from {', '.join(bad)}")
        for path, folder in zip(paths, folders):
            got = folder.shape(self.kind, inputs.name)
            if got != want:
                raise StatisticsError(
                    f"{path}: {self.kind} statistics of {inputs.name!r} have shape {list(got)}, expected {list(want)} "
                    "(statistics of another model?)"
                )

    def end_pass(self, pass_index: int) -> None:
        pass

    def finish(self) -> dict[str, Any]:
        return {"folders": dict(self.folders)}
