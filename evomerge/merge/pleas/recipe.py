"""``merge_method: pleas`` recipes: read the settings, merge the checkpoints, write the wider model.

A PLeaS recipe names each model's activations folder (``collect_activations``) as its ``statistics``::

    merge_method: pleas
    models:
      - model: mlp_a
        parameters: {statistics: acts/mlp_a}
      - model: mlp_b
        parameters: {statistics: acts/mlp_b}
    parameters: {width_ratio: 1.5, ridge: 1.0e-4, matching: activations, refit: true}
    dtype: float32

Values are plain scalars: PLeaS is one whole-model solve, so mergekit's per-tensor gradients and filters have
no meaning here, except that a list ``width_ratio`` gives one ratio per hidden layer. The output folder
holds the merged tensors (hidden sizes changed), the first model's ``config.json`` unchanged, the recipe,
and ``pleas.json`` with the new layer widths and the per-layer fit, which a model class needs to load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evomerge.errors import ConfigError
from evomerge.io.writer import DTYPES, CheckpointWriter, TensorSlot
from evomerge.merge.pleas.merge import PleasResult, PleasSettings, pleas_merge
from evomerge.merge.to_disk import RECIPE_FILE, locate_model, open_sources
from evomerge.plan import MergePlan
from evomerge.statistics.activations import ActivationsFolder
from evomerge.validation import validate_model

RESULT_FILE = "pleas.json"


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise ConfigError("pleas takes plain values here (no filters or per-tensor conditions)", where)


def pleas_inputs(plan: MergePlan, base_dir: Path | None = None) -> tuple[list[str], list[ActivationsFolder], PleasSettings]:
    """The model references, their activation folders and the settings of a ``pleas`` recipe."""
    if plan.merge_method != "pleas":
        raise ConfigError(f"not a pleas recipe (merge_method {plan.merge_method!r})", "merge_method")
    for key, present in (("slices", plan.slices), ("base_model", plan.base_model), ("overrides", plan.overrides),
                         ("tokenizer", plan.tokenizer or plan.tokenizer_source)):
        if present:
            raise ConfigError("pleas merges the listed models as a whole and takes no " + key, key)
    assert plan.models is not None
    refs, folders = [], []
    for i, entry in enumerate(plan.models):
        params = dict(entry.parameters or {})
        where = f"models.{i}.parameters"
        path = params.pop("statistics", None)
        if not isinstance(path, str):
            raise ConfigError("needs 'statistics': the path of the model's activations folder (collect_activations)",
                              where)
        if params:
            raise ConfigError(f"unknown per-model parameter(s) {sorted(params)}; pleas takes only 'statistics'", where)
        refs.append(entry.model)
        folders.append(ActivationsFolder(Path(locate_model(path, base_dir)).expanduser()))
    raw = {k: _plain(v, f"parameters.{k}") for k, v in (plan.parameters or {}).items()}
    return refs, folders, validate_model(PleasSettings, raw, prefix="parameters")


def pleas_to_disk(plan: MergePlan, out_dir: str | Path, *, max_shard_size: int | str = "5GB", overwrite: bool = False,
                  base_dir: Path | None = None, allow_download: bool = False) -> PleasResult:
    """Merge a ``pleas`` recipe's checkpoints into ``out_dir`` (atomic, like ``merge_to_disk``)."""
    refs, folders, settings = pleas_inputs(plan, base_dir)
    checkpoints = open_sources(plan, base_dir=base_dir, allow_download=allow_download)
    try:
        states = [{name: checkpoints[r].get(name) for name in checkpoints[r].names()} for r in refs]
        result = pleas_merge(states, folders, settings)
        config = checkpoints[refs[0]].config
    finally:
        for ck in checkpoints.values():
            ck.close()
    dtype_name = plan.out_dtype or plan.dtype
    dtype = DTYPES[dtype_name] if dtype_name else torch.float32
    layout = [TensorSlot(name, tuple(t.shape), dtype) for name, t in result.state.items()]
    with CheckpointWriter(out_dir, layout, max_shard_size=max_shard_size, overwrite=overwrite) as writer:
        for name, tensor in result.state.items():
            writer.write(name, tensor)
        if config:
            writer.write_json("config.json", config)
        writer.write_json(RESULT_FILE, {"widths": result.widths, "fit_mse": result.fit_mse,
                                        "settings": settings.model_dump(mode="json")})
        writer.write_text(RECIPE_FILE, plan.to_yaml())
    return result
