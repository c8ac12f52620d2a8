"""The whole-model methods' entry points in the one signature :mod:`evomerge.merge.whole_model` calls.

Each method keeps its own natural API (PLeaS returns widths and fit errors, Frank–Wolfe its trajectory);
these adapters only translate arguments and say which ones a method ignores, so the CLI stays generic.
"""

from __future__ import annotations

from pathlib import Path

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
    from evomerge.merge.frank_wolfe_recipe import frank_wolfe_inputs

    settings, _ = frank_wolfe_inputs(plan, base_dir)
    assert plan.models is not None
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
