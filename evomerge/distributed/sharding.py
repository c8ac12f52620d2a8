"""One evaluator, several GPUs: the resident model is sharded over the devices its actor owns.

With ``resources.gpus_per_actor: N`` (a whole number above 1) Ray gives each evaluator actor N GPUs,
visible to it as ``cuda:0 … cuda:N-1``. The model is cut by :mod:`evomerge.distributed.placement`
(no-split modules kept whole, bytes balanced, tied tensors together) and either loaded straight onto its
devices through transformers' ``device_map`` or, for a model already in memory, dispatched with
accelerate. accelerate's hooks move activations between devices and hand the outputs back on the device
of the inputs, the *main* device (that of the first parameter) where fitness suites put their batches.
Merges then run shard-locally: each merged tensor is computed on the device of the parameter it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from evomerge.distributed.placement import DeviceMap, parameter_devices, plan_device_map
from evomerge.errors import ConfigError


def shard_count(gpus: float) -> int:
    """Devices to shard over for ``gpus`` per evaluator: N for a whole N > 1, else 1 (no sharding)."""
    if gpus <= 1:
        return 1
    if not float(gpus).is_integer():
        raise ConfigError(f"{gpus:g} is not a whole number of GPUs; above 1, an actor shards its model over "
                          "whole GPUs", path="resources.gpus_per_actor")
    return int(gpus)


@dataclass(frozen=True)
class DeviceSet:
    """The devices one evaluator shards its model over (index i of a device map is ``devices[i]``)."""

    devices: tuple[torch.device, ...]
    capacity: tuple[int, ...]
    """Bytes of model each device may take."""

    @classmethod
    def visible_gpus(cls, count: int) -> DeviceSet:
        """The first ``count`` visible GPUs, each offering its free memory."""
        seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if seen < count:
            raise ConfigError(f"{count} GPUs per actor, but this evaluator sees {seen}", path="resources.gpus_per_actor")
        devices = tuple(torch.device("cuda", i) for i in range(count))
        return cls(devices, tuple(int(torch.cuda.mem_get_info(d)[0]) for d in devices))


def for_devices(preference: str, gpus: float) -> DeviceSet | None:
    """The devices an evaluator shards over, or None when its model lives on one device."""
    count = shard_count(gpus)
    if count == 1:
        return None
    if preference not in ("auto", "cuda"):
        raise ConfigError(f"{preference!r} cannot hold a model sharded over {count} GPUs; use auto or cuda",
                          path="resources.device")
    return DeviceSet.visible_gpus(count)


@dataclass(frozen=True)
class Shards:
    """A model's placement: the device map (by device index) and the devices the indices stand for."""

    device_map: DeviceMap
    devices: tuple[torch.device, ...]
    main: torch.device
    """Where inputs go: the device of the model's first parameter."""

    def for_accelerate(self) -> dict[str, int | str]:
        """The device map with real devices, as transformers' ``device_map=`` and accelerate take it."""
        return {key: accelerate_device(self.devices[i]) for key, i in self.device_map.items()}

    def planned_devices(self, names: list[str]) -> dict[str, torch.device]:
        """Tensor name → the device the plan puts it on."""
        return {n: self.devices[i] for n, i in parameter_devices(names, self.device_map).items()}


def accelerate_device(device: torch.device) -> int | str:
    """A GPU as its index (accelerate's convention), anything else by name."""
    return device.index if device.type == "cuda" and device.index is not None else str(device)


def inventory(model: nn.Module) -> tuple[dict[str, int], dict[str, str], dict[str, str]]:
    """(tensor name → bytes, module name → class name, tied alias → tensor it shares) in module order.

    Works on a meta-device skeleton too. A tensor reachable under two names (tied embeddings) counts once;
    its later names are aliases of the first.
    """
    sizes: dict[str, int] = {}
    tied: dict[str, str] = {}
    first_name: dict[int, str] = {}
    classes: dict[str, str] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        classes.setdefault(module_name, type(module).__name__)
        own = [*module._parameters.items(), *module._buffers.items()]
        for local, tensor in own:
            if tensor is None:
                continue
            name = f"{module_name}.{local}" if module_name else local
            if name in sizes:
                continue
            canonical = first_name.setdefault(id(tensor), name)
            if canonical != name:
                tied[name] = canonical
            sizes[name] = 0 if canonical != name else tensor.numel() * tensor.element_size()
    return sizes, classes, tied


def no_split_classes(model: nn.Module) -> set[str]:
    """The model's module classes that must not be cut across devices (transformers' ``_no_split_modules``)."""
    return set(getattr(model, "_no_split_modules", None) or ())


def plan_shards(model: nn.Module, devices: DeviceSet) -> Shards:
    """Place ``model`` (real or a meta-device skeleton) over ``devices``."""
    sizes, classes, tied = inventory(model)
    device_map = plan_device_map(sizes, classes, no_split_classes(model), devices.capacity, tied)
    first = next((name for name, _ in model.named_parameters()), None)
    main = devices.devices[0] if first is None else devices.devices[parameter_devices([first], device_map)[first]]
    return Shards(device_map, devices.devices, main)


def dispatch(model: nn.Module, shards: Shards) -> nn.Module:
    """Move an in-memory model onto its shards (accelerate hooks move activations between them)."""
    targets = shards.for_accelerate()
    if len(set(targets.values())) == 1:
        return model.to(shards.main)
    from accelerate import dispatch_model

    return dispatch_model(model, device_map=targets, main_device=accelerate_device(shards.main))


def tensor_devices(state: dict[str, torch.Tensor]) -> dict[str, torch.device]:
    """Where every tensor of a loaded model actually lives (what shard-local merging follows)."""
    return {name: tensor.device for name, tensor in state.items()}
