"""``merge_moe_to_disk``: a MoE checkpoint with fewer experts per layer, written atomically.

Layer by layer, the sparse layer's experts and router are read (memory-mapped), merged by the recipe's
method into ``num_experts`` experts, and written straight into their slots of the output shards; every
other tensor (attention, norms, embeddings, Qwen2-MoE's shared expert) is copied as is. config.json gets
the new expert count and ``num_experts_per_tok`` clamped to it; ``moe_merge.json`` records which source
experts (with which weights) became each output expert, layer by layer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import StatisticsError
from evomerge.io.checkpoint import Checkpoint
from evomerge.io.writer import DTYPES, CheckpointWriter, TensorSlot, main_float_dtype
from evomerge.merge.to_disk import RECIPE_FILE, open_sources, output_config
from evomerge.moe.calibration import check_statistics, relative_path, resolve_statistics
from evomerge.moe.grouping import check_group_count
from evomerge.moe.layout import MoeModel, find_moe_layers
from evomerge.moe.methods import LayerInput
from evomerge.moe.recipe import MoeRecipe, read_recipe
from evomerge.plan import MergePlan
from evomerge.progress import progress_bar
from evomerge.seeding import SeedTree
from evomerge.statistics.data import CalibrationData
from evomerge.statistics.moe import MoeStatistics

PROVENANCE_FILE = "moe_merge.json"


def merged_config(config: Mapping[str, Any], moe: MoeModel, n_experts: int, dtype: torch.dtype) -> dict[str, Any]:
    out = output_config(config, dtype)
    out[moe.arch.experts_key] = n_experts
    out[moe.arch.top_k_key] = min(moe.top_k, n_experts)
    return out


def _layout(ckpt: Checkpoint, moe: MoeModel, n_experts: int, dtype_of: Any) -> list[TensorSlot]:
    replaced = moe.expert_tensor_names()
    slots = [TensorSlot(n, m.shape, dtype_of(m.dtype)) for n, m in ckpt.meta.items() if n not in replaced]
    for layer in moe.layers:
        expert_dtype = dtype_of(ckpt.meta[layer.expert_names(moe.num_experts)[0]].dtype)
        slots.append(TensorSlot(layer.router, (n_experts, moe.hidden), dtype_of(ckpt.meta[layer.router].dtype)))
        for name, shape in layer.shapes(n_experts, moe.hidden, moe.intermediate).items():
            slots.append(TensorSlot(name, shape, expert_dtype))
    return slots


def _open(plan: MergePlan, base_dir: Path | None, allow_download: bool) -> tuple[MoeRecipe, Checkpoint, MoeModel, int]:
    recipe = read_recipe(plan)
    ckpt = open_sources(plan, base_dir=base_dir, allow_download=allow_download)[recipe.model]
    moe = find_moe_layers(ckpt, recipe.merger.name)
    n = check_group_count(recipe.settings.num_experts, moe.num_experts, recipe.merger.name)
    return recipe, ckpt, moe, n


def preview_moe_merge(plan: MergePlan, *, base_dir: Path | None = None) -> str:
    """Checks of an expert-merge recipe from headers and configs alone (for ``evomerge validate``): one
    line describing the merge, or the first problem as an EvomergeError."""
    recipe, ckpt, moe, n = _open(plan, base_dir, allow_download=False)
    try:
        s = recipe.settings
        if s.statistics is not None:
            check_statistics(MoeStatistics.load(relative_path(s.statistics, base_dir)), moe, ckpt.label)
        elif s.calibration_text is not None and not relative_path(s.calibration_text, base_dir).is_file():
            raise StatisticsError(f"parameters.calibration_text: file not found: {s.calibration_text}")
        source = "statistics folder" if s.statistics else ("calibration text" if s.calibration_text else "none given")
        return (f"{recipe.merger.name}: {len(moe.layers)} sparse layers of {moe.arch.model_type}, "
                f"{moe.num_experts} -> {n} experts each (top-{min(moe.top_k, n)}); routing statistics: {source}")
    finally:
        ckpt.close()


def merge_moe_to_disk(
    plan: MergePlan,
    out_dir: str | Path,
    *,
    statistics: MoeStatistics | str | Path | None = None,
    calibration: CalibrationData | None = None,
    cache_dir: str | Path | None = None,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    base_dir: Path | None = None,
    allow_download: bool = False,
    progress: bool = True,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Merge the experts of the plan's one model into ``out_dir`` (the folder appears only when complete).

    Routing statistics come from ``statistics``, the recipe's ``statistics`` folder, ``calibration`` or the
    recipe's ``calibration_text``, in that order (``evomerge.moe.calibration``).
    """
    recipe, ckpt, moe, n = _open(plan, base_dir, allow_download)
    try:
        stats = resolve_statistics(recipe.settings, ckpt.path, recipe.merger.name, statistics=statistics,
                                   calibration=calibration, cache_dir=cache_dir, base_dir=base_dir, progress=progress)
        check_statistics(stats, moe, ckpt.label)
        wanted = plan.out_dtype or plan.dtype

        def dtype_of(source: torch.dtype) -> torch.dtype:
            return DTYPES[wanted] if wanted and source.is_floating_point else source

        layout = _layout(ckpt, moe, n, dtype_of)
        main_dtype = main_float_dtype(layout)
        seeds = SeedTree(plan.seed).child(f"moe/{recipe.merger.name}")
        provenance: dict[str, Any] = {"method": recipe.merger.name, "source_experts": moe.num_experts,
                                      "experts": n, "layers": {}}
        with CheckpointWriter(out_dir, layout, max_shard_size=max_shard_size, overwrite=overwrite) as writer:
            with progress_bar("merging experts", total=len(moe.layers), unit="layers", enabled=progress) as bar:
                for layer in moe.layers:
                    inputs = LayerInput(layer.read(ckpt, moe.num_experts), ckpt.get(layer.router).float(),
                                        stats.layers[layer.index], n)
                    merged = recipe.merger.merge_layer(inputs, recipe.settings, seeds.generator(f"layer{layer.index}"))
                    writer.write(layer.router, merged.router)
                    for name, tensor in layer.tensors(merged.experts).items():
                        writer.write(name, tensor)
                    provenance["layers"][str(layer.index)] = merged.provenance()
                    bar.advance(1)
            replaced = moe.expert_tensor_names()
            for name in ckpt.names():
                if name not in replaced:
                    writer.write(name, ckpt.get(name))
            writer.write_json("config.json", merged_config(ckpt.config, moe, n, main_dtype))
            writer.copy_files(ckpt.path)
            writer.write_text(RECIPE_FILE, plan.to_yaml())
            writer.write_text(PROVENANCE_FILE, json.dumps(provenance, indent=1) + "\n")
            for name, text in (extra_files or {}).items():
                writer.write_text(name, text)
        return Path(out_dir)
    finally:
        ckpt.close()
