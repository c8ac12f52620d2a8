"""Fitness functions for integration tests (loaded by path through the `callable` suite)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def fingerprint(model: torch.nn.Module) -> str:
    with torch.no_grad():
        total = sum(float(p.double().sum()) for p in model.parameters())
    return f"{total:.6f}"


def mlp_norm(model: torch.nn.Module, tokenizer: object = None, delay: float = 0.0) -> dict[str, float]:
    """A deterministic function of the weights: minus the squared norm of the MLP weights."""
    if delay:
        time.sleep(delay)
    with torch.no_grad():
        total = sum(float(p.double().pow(2).sum()) for n, p in model.named_parameters() if "mlp" in n)
    return {"score": -total}


def die_on_poison(model: torch.nn.Module, tokenizer: object = None, poison_file: str = "", delay: float = 0.0) -> dict[str, float]:
    """The first call kills its process (os._exit) and marks its weights as poisoned; any later call on
    the same weights (the retry of the same candidate) dies too. Every other candidate is scored."""
    marker = Path(poison_file)
    fp = fingerprint(model)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, fp.encode())
        os.close(fd)
        os._exit(3)
    except FileExistsError:
        pass
    if marker.read_text() == fp:
        os._exit(3)
    return mlp_norm(model, tokenizer, delay)


def sleepy(model: torch.nn.Module, tokenizer: object = None, seconds: float = 30.0) -> dict[str, float]:
    time.sleep(seconds)
    return mlp_norm(model, tokenizer)


def nan_score(model: torch.nn.Module, tokenizer: object = None) -> dict[str, float]:
    return {"score": float("nan")}


def slow_on_poison(model: torch.nn.Module, tokenizer: object = None, poison_file: str = "", seconds: float = 60.0) -> dict[str, float]:
    """The first candidate (and any with the same weights) hangs for ``seconds``; the rest are scored."""
    marker = Path(poison_file)
    fp = fingerprint(model)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, fp.encode())
        os.close(fd)
    except FileExistsError:
        pass
    if marker.read_text() == fp:
        time.sleep(seconds)
    return mlp_norm(model, tokenizer)
