"""The whole-model methods' entry points in the one signature :mod:`evomerge.merge.whole_model` calls.

Each method keeps its own natural API (PLeaS returns widths and fit errors, Frank–Wolfe its trajectory);
these adapters only translate arguments and say which ones a method ignores, so the CLI stays generic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError
from evomerge.plan import MergePlan


def pleas(plan: MergePlan, out_dir: str | Path, *, base_dir: Path | None, device: str, max_shard_size: int | str,
          overwrite: bool, allow_download: bool) -> Path:
    from evomerge.merge.pleas.recipe import pleas_to_disk

    if device != "cpu":
        raise ConfigError("pleas runs on the CPU (its least-squares fits are small); drop --device", "device")
    pleas_to_disk(plan, out_dir, max_shard_size=max_shard_size, overwrite=overwrite, base_dir=base_dir,
                  allow_download=allow_download)
    return Path(out_dir)


def check_pleas(plan: MergePlan, base_dir: Path | None) -> str:
    from evomerge.merge.pleas.recipe import pleas_inputs

    refs, _, settings = pleas_inputs(plan, base_dir)
    return f"pleas: {len(refs)} models, width ratio {settings.width_ratio}"


def frank_wolfe(plan: MergePlan, out_dir: str | Path, *, base_dir: Path | None, device: str,
                max_shard_size: int | str, overwrite: bool, allow_download: bool) -> Path:
    from evomerge.merge.frank_wolfe_recipe import frank_wolfe_to_disk

    return Path(frank_wolfe_to_disk(plan, out_dir, base_dir=base_dir, device=device, max_shard_size=max_shard_size,
                                    overwrite=overwrite, allow_download=allow_download))


def check_frank_wolfe(plan: MergePlan, base_dir: Path | None) -> str:
    from evomerge.merge.frank_wolfe import settings_from_parameters
    from evomerge.merge.frank_wolfe_recipe import DATA_KEYS, recipe_calibration

    if not plan.models or not plan.base_model or plan.slices:
        raise ConfigError("an fw recipe needs a base_model and models (slices are not supported)", "models")
    if any(m.parameters for m in plan.models):
        raise ConfigError("fw takes no per-model parameters; put its settings under the recipe's parameters",
                          "models")
    parameters: dict[str, Any] = dict(plan.parameters or {})
    settings = settings_from_parameters({k: v for k, v in parameters.items() if k not in DATA_KEYS})
    recipe_calibration(parameters, base_dir)
    return f"fw: a pool of {len(plan.models)} models, up to {settings.max_iters} Frank–Wolfe steps"


def expert_merge(plan: MergePlan, out_dir: str | Path, *, base_dir: Path | None, device: str,
                 max_shard_size: int | str, overwrite: bool, allow_download: bool) -> Path:
    from evomerge.moe import merge_moe_to_disk

    if device != "cpu":
        raise ConfigError(f"{plan.merge_method} runs on the CPU; drop --device", "device")
    return Path(merge_moe_to_disk(plan, out_dir, max_shard_size=max_shard_size, overwrite=overwrite,
                                  base_dir=base_dir, allow_download=allow_download))


def check_expert_merge(plan: MergePlan, base_dir: Path | None) -> str:
    from evomerge.moe import preview_moe_merge

    return preview_moe_merge(plan, base_dir=base_dir)
