"""Checkpoint reading (lazy, memory-mapped) and writing (sharded, atomic)."""

from evomerge.io.checkpoint import Checkpoint, TensorMeta, resolve_model_path
from evomerge.io.writer import CheckpointWriter, TensorSlot, save_state_dict

__all__ = ["Checkpoint", "CheckpointWriter", "TensorMeta", "TensorSlot", "resolve_model_path", "save_state_dict"]
