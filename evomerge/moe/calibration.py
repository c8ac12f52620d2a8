"""Where an expert merge gets its routing statistics, and the check that they belong to the model.

In order of precedence: statistics handed to ``merge_moe_to_disk`` (an object or a folder), the recipe's
``statistics`` folder, calibration data handed to ``merge_moe_to_disk``, or the recipe's
``calibration_text`` (a text file, tokenized with the model's own tokenizer and cut into
``calibration_sequences`` sequences of ``calibration_length`` tokens). The last two are collected once and
cached under ``cache_dir`` (default ``$EVOMERGE_CACHE/moe_statistics``, or ``~/.cache/evomerge/...``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from evomerge.errors import StatisticsError
from evomerge.moe.layout import MoeModel
from evomerge.moe.methods import ExpertMergeSettings
from evomerge.statistics.data import CalibrationData, token_data
from evomerge.statistics.moe import MoeStatistics, collect_checkpoint_moe_statistics


def default_cache_dir() -> Path:
    from evomerge.zoo import default_cache_dir as root

    return root() / "moe_statistics"


def relative_path(ref: str, base_dir: Path | None) -> Path:
    """A recipe's file path, found as model paths are (:func:`evomerge.merge.to_disk.locate_model`)."""
    from evomerge.merge.to_disk import locate_model

    return Path(locate_model(ref, base_dir)).expanduser()


def text_calibration(text_file: Path, tokenizer_dir: Path, sequences: int, length: int) -> CalibrationData:
    """Up to ``sequences`` consecutive blocks of ``length`` tokens of a text file (a shorter text: one block)."""
    if not text_file.is_file():
        raise StatisticsError(f"parameters.calibration_text: file not found: {text_file}")
    raw = text_file.read_bytes()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except (OSError, ValueError) as exc:
        raise StatisticsError(f"{tokenizer_dir}: no usable tokenizer to read the calibration text ({exc})") from None
    ids = tokenizer(raw.decode("utf-8", errors="replace"), add_special_tokens=False, verbose=False)["input_ids"]
    if not ids:
        raise StatisticsError(f"parameters.calibration_text: {text_file} holds no text")
    n = max(1, min(sequences, len(ids) // length))
    block = min(length, len(ids))
    rows = torch.tensor(ids[: n * block], dtype=torch.long).reshape(n, block)
    tok_file = tokenizer_dir / "tokenizer.json"
    tok_hash = hashlib.sha256(tok_file.read_bytes()).hexdigest()[:16] if tok_file.is_file() else "none"
    identity = f"text:{hashlib.sha256(raw).hexdigest()[:32]}/tokenizer={tok_hash}/n={n}/length={block}"
    return token_data(rows, identity, batch_size=8)


def resolve_statistics(settings: ExpertMergeSettings, model_dir: Path, method: str, *,
                       statistics: MoeStatistics | str | Path | None, calibration: CalibrationData | None,
                       cache_dir: str | Path | None, base_dir: Path | None, progress: bool) -> MoeStatistics:
    """The routing statistics of the model in ``model_dir``, from the first source that is given."""
    if isinstance(statistics, MoeStatistics):
        return statistics
    if statistics is not None:
        return MoeStatistics.load(statistics)
    if settings.statistics is not None:
        return MoeStatistics.load(relative_path(settings.statistics, base_dir))
    if calibration is None and settings.calibration_text is not None:
        calibration = text_calibration(relative_path(settings.calibration_text, base_dir), model_dir,
                                       settings.calibration_sequences, settings.calibration_length)
    if calibration is None:
        raise StatisticsError(
            f"{method} needs routing statistics of {model_dir}: set parameters.statistics to a folder from "
            "evomerge.statistics.moe.collect_moe_statistics, or parameters.calibration_text to a text file"
        )
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return collect_checkpoint_moe_statistics(model_dir, calibration, cache_dir=root, progress=progress)


def check_statistics(stats: MoeStatistics, moe: MoeModel, label: str) -> None:
    """The statistics cover every sparse layer of the model, with its number of experts."""
    for layer in moe.layers:
        routing = stats.layers.get(layer.index)
        if routing is None:
            raise StatisticsError(f"routing statistics have no layer {layer.index} of {label} (statistics of "
                                  "another model?)")
        if routing.frequency.numel() != moe.num_experts:
            raise StatisticsError(f"routing statistics of layer {layer.index} cover {routing.frequency.numel()} "
                                  f"experts, {label} has {moe.num_experts} (statistics of another model?)")
