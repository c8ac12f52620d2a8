"""What OTA and FFG share: each model's Adam second moments per tensor, and saliency masks from them.

The second moments come from the statistics folder a recipe names in each model's ``statistics`` parameter
(``evomerge.statistics.second_moments``). :class:`CurvaturePass`, the operators' ``GlobalPass``, opens and
checks every folder before any tensor is merged and, for models whose ``density`` applies to the whole
model (the paper's per-model threshold), finds the saliency threshold over every merged tensor exactly in
two streaming passes (``MagnitudeStream``: O(2^16) counters per model, never the flattened model).

Saliency is FFG's s = v ⊙ τ² (the second-order loss change of resetting an entry to the base, with v as
the diagonal curvature); a model's mask keeps its entries with s ≥ the k-th largest, k = ⌊d·N⌋ (ties at the
threshold are all kept, as in the reference code).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import ConfigError, StatisticsError
from evomerge.merge.operator import MergeInputs
from evomerge.merge.operators import support
from evomerge.merge.operators.selection import MagnitudeRanks, MagnitudeStream
from evomerge.merge.operators.support import per_input
from evomerge.merge.params import SAME, ParamSpec, ResolvedParams
from evomerge.statistics.second_moments import SecondMomentFolder, rank1_approximation

FOLDERS_KEY = "second_moment_folders"
THRESHOLDS_KEY = "saliency_thresholds"
DENSITY_SCOPE = ParamSpec(
    "density_scope",
    str,
    default="model",
    choices=("model", "tensor"),
    doc="model: each density is a fraction of the whole model's entries (the paper); "
    "tensor: of each tensor's",
)
RANK1 = ParamSpec(
    "rank1_approx",
    bool,
    scope="model",
    default=False,
    doc="use the rank-1 (row × column sums) approximation of each matrix's second moments",
)


def density_spec(default: float) -> ParamSpec:
    return support.density_spec(
        default,
        SAME,
        "fraction d of each task vector's entries kept, those of largest saliency v ⊙ τ² (1: no mask; 0: the base)",
        zero_allowed=True,
    )


def moment_folders(inputs: MergeInputs, params: ResolvedParams) -> list[SecondMomentFolder]:
    """Each input's folder, as opened by the global pass (or now, for a direct call)."""
    opened: dict[str, SecondMomentFolder] = inputs.stats.get(FOLDERS_KEY, {})
    return [opened[p] if p in opened else SecondMomentFolder(Path(p)) for p in params.model("statistics")]


def second_moments_for(inputs: MergeInputs, params: ResolvedParams) -> list[torch.Tensor] | None:
    """Each input's second moments of this tensor (rank-1 approximated where asked); None when no input
    has any (a buffer, a frozen weight); an error when only some have."""
    folders = moment_folders(inputs, params)
    present = [f.has_moment(inputs.name) for f in folders]
    if not any(present):
        return None
    if not all(present):
        missing = ", ".join(str(f.path) for f, ok in zip(folders, present) if not ok)
        raise StatisticsError(f"second moments of {inputs.name!r} are missing from {missing}")
    like = inputs.tensors[0]
    out = []
    for folder, rank1 in zip(folders, per_input(inputs, params, "rank1_approx")):
        v = folder.second_moment(inputs.name).to(device=like.device, dtype=like.dtype)
        out.append(rank1_approximation(v) if rank1 else v)
    return out


def saliency(theta: torch.Tensor, base: torch.Tensor, moment: torch.Tensor) -> torch.Tensor:
    """s = v ⊙ (θ − θ0)², in float32 (the precision thresholds are ranked at)."""
    return torch.sub(theta, base).float().square_().mul_(moment.float())


def kept_count(budget: float, n: int) -> int:
    """⌊d·n⌋ entries, the floor taken with a little slack (0.29 · 100 is 28.999… in floating point)."""
    return min(n, math.floor(budget + 1e-6))


def tensor_threshold(scores: torch.Tensor, density: float) -> float:
    """The k-th largest score of one tensor, k = ⌊d·n⌋ (+inf when k = 0: nothing is kept)."""
    n = scores.numel()
    k = kept_count(density * n, n)
    if k == 0:
        return math.inf
    return 0.0 if k == n else MagnitudeRanks(scores).kth_smallest(n - k + 1).value


def keep_masks(
    inputs: MergeInputs, params: ResolvedParams, moments: list[torch.Tensor], method: str
) -> list[torch.Tensor | None]:
    """Per input, the entries its saliency keeps (None: all of them)."""
    densities = per_input(inputs, params, "density")
    if all(d >= 1 for d in densities):
        return [None] * len(densities)
    if inputs.base is None:
        raise ConfigError(f"{method}: density below 1 needs a base model (saliency is about task vectors)")
    thresholds: list[float | None] = inputs.stats.get(THRESHOLDS_KEY, [])
    masks: list[torch.Tensor | None] = []
    for i, (theta, moment, density) in enumerate(zip(inputs.tensors, moments, densities)):
        if density >= 1:
            masks.append(None)
            continue
        scores = saliency(theta, inputs.base, moment)
        whole = thresholds[i] if params["density_scope"] == "model" and i < len(thresholds) else None
        masks.append(scores >= (whole if whole is not None else tensor_threshold(scores, density)))
    return masks


class CurvaturePass:
    """GlobalPass of OTA and FFG: check every model's second moments; whole-model saliency thresholds.

    Called outside an executor (directly on one tensor) the operators fall back to per-tensor thresholds,
    which is the whole-model threshold of a one-tensor model.
    """

    n_passes = 2

    def __init__(self) -> None:
        self.folders: dict[str, SecondMomentFolder] = {}
        self.streams: list[MagnitudeStream] = []
        self.budget: list[float] = []
        self.thresholds: list[float | None] = []
        self.selected: list[bool] = []

    def start(self, n_models: int) -> None:
        self.folders = {}
        self.streams = [MagnitudeStream() for _ in range(n_models)]
        self.budget = [0.0] * n_models
        self.thresholds = [None] * n_models
        self.selected = [False] * n_models

    def _folder(self, path: str) -> SecondMomentFolder:
        if path not in self.folders:
            folder = SecondMomentFolder(Path(path))
            if not folder.has_second_moments():
                raise StatisticsError(
                    f"{path}: holds no second moments (write them with "
                    "evomerge.statistics.second_moments.write_second_moments)"
                )
            self.folders[path] = folder
        return self.folders[path]

    def observe(self, inputs: MergeInputs, params: ResolvedParams, pass_index: int) -> None:
        paths = list(params.model("statistics"))
        folders = [self._folder(p) for p in paths]
        if pass_index == 0:
            self._check(inputs, paths, folders)
        if params["density_scope"] != "model" or inputs.base is None:
            return
        densities = per_input(inputs, params, "density")
        wanted = [i for i, d in enumerate(densities) if d < 1 and (pass_index == 0 or self.selected[i])]
        if not wanted or not all(f.has_moment(inputs.name) for f in folders):
            return
        inputs.stats = {**inputs.stats, FOLDERS_KEY: self.folders}  # read through the folders opened once
        moments = second_moments_for(inputs, params)
        assert moments is not None
        for i in wanted:
            scores = saliency(inputs.tensors[i], inputs.base, moments[i])
            if pass_index == 0:
                self.budget[i] += densities[i] * scores.numel()
                self.streams[i].add_high(scores)
            else:
                self.streams[i].add_low(scores)

    @staticmethod
    def _check(inputs: MergeInputs, paths: list[str], folders: list[SecondMomentFolder]) -> None:
        present = [f.has_moment(inputs.name) for f in folders]
        if any(present) and not all(present):
            missing = ", ".join(p for p, ok in zip(paths, present) if not ok)
            raise StatisticsError(f"second moments of {inputs.name!r} are missing from {missing}")
        want = tuple(inputs.tensors[0].shape)
        for path, folder, ok in zip(paths, folders, present):
            if ok and folder.moment_shape(inputs.name) != want:
                got = list(folder.moment_shape(inputs.name))
                raise StatisticsError(
                    f"{path}: second moments of {inputs.name!r} have shape {got}, expected "
                    f"{list(want)} (second moments of another model?)"
                )

    def end_pass(self, pass_index: int) -> None:
        for i, stream in enumerate(self.streams):
            if pass_index == 0 and stream.count:
                k = kept_count(self.budget[i], stream.count)
                if k == 0:
                    self.thresholds[i] = math.inf
                elif k == stream.count:
                    self.thresholds[i] = 0.0
                else:
                    stream.target(stream.count - k + 1)  # the k-th largest is the (N − k + 1)-th smallest
                    self.selected[i] = True
            elif pass_index == 1 and self.selected[i]:
                self.thresholds[i] = stream.result().value

    def finish(self) -> dict[str, Any]:
        return {FOLDERS_KEY: dict(self.folders), THRESHOLDS_KEY: list(self.thresholds)}
