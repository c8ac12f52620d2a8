"""Building the model an evaluator keeps resident: from a checkpoint folder, or from a factory.

Checkpoints load through transformers' Auto classes (chosen by ``models.model_class``); evolution from
scratch builds a plain ``torch.nn.Module`` from a registered factory (``mlp``, ``cnn``) or a user's
``module:function``. Either way the evaluator then only ever rewrites this one model's weights in place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evomerge.errors import CheckpointError, ConfigError
from evomerge.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODEL_FACTORIES: Registry[ModelFactory] = Registry("model factory", entry_point_group="evomerge.models")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


@MODEL_FACTORIES.register("mlp")
def mlp(in_features: int = 64, hidden: int = 32, out_features: int = 10, depth: int = 2) -> nn.Module:
    """A ReLU MLP classifier (the M2N2 paper's from-scratch MNIST experiments use small MLPs)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


@MODEL_FACTORIES.register("cnn")
def cnn(side: int = 28, channels: int = 8, out_features: int = 10) -> nn.Module:
    """A two-convolution classifier for square greyscale images (MNIST 28×28, sklearn digits 8×8)."""
    pooled = side // 4
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, channels * 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(channels * 2 * pooled * pooled, out_features),
    )


def build_factory_model(factory: str, kwargs: dict[str, Any], seed: int) -> nn.Module:
    fn = MODEL_FACTORIES.get(factory, "models.from_scratch.factory")
    torch.manual_seed(seed)  # factories initialise through torch's global RNG; the seed makes it reproducible
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"models.from_scratch.kwargs: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"models.from_scratch.factory {factory!r} returned {type(model).__name__}, not an nn.Module")
    return model.eval()


def _auto_classes() -> dict[str, Any]:
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    return {"causal_lm": AutoModelForCausalLM, "sequence_classification": AutoModelForSequenceClassification, "auto": AutoModel}


def load_pretrained(path: str | Path, model_class: str = "causal_lm", dtype: str = "float32",
                    attn_implementation: str | None = None,
                    device_map: dict[str, int | str] | None = None) -> tuple[nn.Module, Any]:
    """A model and its tokenizer (None when the folder has none) from a local checkpoint folder.

    With ``device_map`` (module prefix → device, see :mod:`evomerge.distributed.sharding`) the weights are
    loaded straight onto their devices; only transformers' Auto classes take one.
    """
    from transformers import AutoTokenizer

    classes = _auto_classes()
    path = Path(path)
    if model_class in classes:
        try:
            extra: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
            if device_map is not None:
                extra["device_map"] = device_map
            model = classes[model_class].from_pretrained(str(path), dtype=torch_dtype(dtype), **extra)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot load as {model_class}: {exc}") from None
    else:
        from evomerge.registry import load_dotted

        loader = load_dotted(model_class)
        if not callable(loader):
            raise ConfigError(f"models.model_class {model_class!r} is not callable")
        model = loader(str(path))
    tokenizer = None
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def pretrained_skeleton(path: str | Path, model_class: str = "causal_lm", dtype: str = "float32") -> nn.Module | None:
    """The checkpoint's model built on the meta device (shapes, module tree, ties; no memory), or None for a
    ``module:function`` loader, whose model can only be built for real."""
    classes = _auto_classes()
    if model_class not in classes:
        return None
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path))
        with torch.device("meta"):
            model: nn.Module = classes[model_class].from_config(config, dtype=torch_dtype(dtype))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot load as {model_class}: {exc}") from None
    return model


def resolve_device(preference: str, gpus_assigned: float = 0) -> torch.device:
    """``auto`` → the assigned/first GPU when there is one, else CPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(preference)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"resources.device is {preference!r} but no GPU is available")
    return dev
