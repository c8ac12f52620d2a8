"""``merge_method: fw`` recipes: FW-Merging from a recipe straight to a checkpoint folder.

FW-Merging is a model-level merge (``frank_wolfe.py``), so ``evomerge merge`` hands such recipes here instead
of to the per-tensor executor. The recipe names the base, the pool (``models``, no per-model parameters),
the settings of :class:`FrankWolfeSettings` under ``parameters``, and its calibration data there too:

* ``calibration_data``: a ``.safetensors`` file with an ``input_ids`` tensor [n, length] (causal LMs), or
  the name of a bundled classification set (``digits``, ``mnist``; ``calibration_classes`` picks labels);
* ``calibration_examples`` (default: all), ``calibration_batch_size`` (8), ``model_class`` (``causal_lm``,
  ``sequence_classification``, or a ``module:function`` loader of the base folder).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from evomerge.errors import ConfigError, StatisticsError
from evomerge.io.checkpoint import Checkpoint, resolve_model_path
from evomerge.io.writer import DTYPES, CheckpointWriter, TensorSlot, main_float_dtype
from evomerge.merge.frank_wolfe import FrankWolfeSettings, settings_from_parameters
from evomerge.merge.frank_wolfe_objective import frank_wolfe_checkpoints
from evomerge.merge.to_disk import RECIPE_FILE, locate_model, output_config
from evomerge.plan import MergePlan
from evomerge.statistics.data import CalibrationData, classification_data, token_data

METHOD = "fw"
DATA_KEYS = (
    "calibration_data",
    "calibration_classes",
    "calibration_examples",
    "calibration_batch_size",
    "model_class",
)


def recipe_calibration(parameters: Mapping[str, Any], base_dir: Path | None = None) -> CalibrationData:
    """The calibration data a recipe's ``parameters`` name (see the module docstring)."""
    source = parameters.get("calibration_data")
    if source is None:
        raise StatisticsError(
            "fw needs calibration data: set parameters.calibration_data (a .safetensors file with input_ids "
            "[n, length], or digits / mnist)"
        )
    batch_size = int(parameters.get("calibration_batch_size", 8))
    if str(source) in ("digits", "mnist"):
        classes = parameters.get("calibration_classes")
        if classes is not None and not (
            isinstance(classes, list) and all(isinstance(c, int) for c in classes)
        ):
            raise ConfigError(
                f"must be a list of class labels, got {classes!r}", "parameters.calibration_classes"
            )
        return classification_data(str(source), classes=classes, batch_size=batch_size)
    path = Path(locate_model(str(source), base_dir))
    if not path.is_file():
        raise StatisticsError(f"parameters.calibration_data: file not found: {source}")
    try:
        ids = load_file(str(path))["input_ids"]
    except Exception as exc:
        raise StatisticsError(
            f"parameters.calibration_data: {path} holds no readable input_ids ({exc})"
        ) from None
    stat = path.stat()
    return token_data(ids, f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}", batch_size)


def frank_wolfe_inputs(plan: MergePlan, base_dir: Path | None) -> tuple[FrankWolfeSettings, CalibrationData]:
    """An ``fw`` recipe's settings and calibration data, after checking its shape (``validate`` and merging
    both start here)."""
    if plan.merge_method != METHOD or not plan.models or not plan.base_model or plan.slices:
        raise ConfigError("an fw recipe needs merge_method: fw, a base_model and models (slices are not supported)",
                          "models")
    if any(m.parameters for m in plan.models):
        raise ConfigError("fw takes no per-model parameters; put its settings under the recipe's parameters",
                          "models")
    parameters: dict[str, Any] = dict(plan.parameters or {})
    settings = settings_from_parameters({k: v for k, v in parameters.items() if k not in DATA_KEYS})
    return settings, recipe_calibration(parameters, base_dir)


def frank_wolfe_to_disk(
    plan: MergePlan,
    out_dir: str | Path,
    *,
    base_dir: Path | None = None,
    device: str = "cpu",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    allow_download: bool = False,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Run an ``fw`` recipe and write the merged checkpoint (atomically, with the recipe and ``extra_files``,
    name → text, beside it)."""
    settings, data = frank_wolfe_inputs(plan, base_dir)
    assert plan.models and plan.base_model  # checked by frank_wolfe_inputs
    parameters: dict[str, Any] = dict(plan.parameters or {})

    def folder(ref: str) -> Path:
        return resolve_model_path(locate_model(ref, base_dir), allow_download=allow_download)

    base = folder(plan.base_model)
    examples = parameters.get("calibration_examples")
    result = frank_wolfe_checkpoints(
        base,
        [folder(m.model) for m in plan.models],
        data,
        settings,
        model_class=str(parameters.get("model_class", "causal_lm")),
        max_examples=int(examples) if examples is not None else None,
        device=device,
    )
    source = Checkpoint(base)
    named = plan.out_dtype or plan.dtype
    layout = [
        TensorSlot(
            n, tuple(t.shape), DTYPES[named] if named and t.is_floating_point() else source.meta[n].dtype
        )
        for n, t in result.weights.items()
    ]
    with CheckpointWriter(out_dir, layout, max_shard_size=max_shard_size, overwrite=overwrite) as writer:
        for name, tensor in result.weights.items():
            writer.write(name, tensor.detach().cpu())
        writer.write_json("config.json", output_config(source.config, main_float_dtype(layout)))
        writer.copy_files(base)
        writer.write_text(RECIPE_FILE, plan.to_yaml())
        for name, text in (extra_files or {}).items():
            writer.write_text(name, text)
    return Path(out_dir)
