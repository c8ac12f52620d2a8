"""Per-model statistics for data-aware merge operators: diagonal Fisher (``fisher``) and linear-layer input
Gram matrices (``regmean``), collected once on calibration data and cached on disk as safetensors.

Typical use: ``collect_statistics(model, classification_data("digits", classes=[0, 1, 2]),
StatisticsSettings(), cache_dir=...)`` per fine-tuned model, then a recipe that gives each model the
returned folder as its ``statistics`` parameter.
"""

from evomerge.statistics.cache import StatisticsFolder, folder_identity, module_identity, statistics_key
from evomerge.statistics.collect import collect_checkpoint_statistics, collect_statistics, statistics_folder
from evomerge.statistics.data import CalibrationData, classification_data, tensor_batches, token_data
from evomerge.statistics.settings import StatisticsSettings

__all__ = [
    "CalibrationData",
    "StatisticsFolder",
    "StatisticsSettings",
    "classification_data",
    "collect_checkpoint_statistics",
    "collect_statistics",
    "folder_identity",
    "module_identity",
    "statistics_folder",
    "statistics_key",
    "tensor_batches",
    "token_data",
]
