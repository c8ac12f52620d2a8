"""Where each part of a resident model lives when one evaluator shards it over several devices.

Pure bookkeeping over names and byte counts, no torch: the model is cut into *blocks* (modules that must
stay whole — the model's no-split classes such as a decoder layer, and any module holding tensors of its
own), the blocks are laid out in model order over the devices as evenly as their bytes allow, tied tensors
follow the tensor they alias (two copies would silently diverge under in-place merges), and the result is
an accelerate-style device map (module prefix → device index) that :func:`parameter_devices` maps back to
every tensor name. ``evomerge.distributed.sharding`` feeds it a real model and applies the map.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TypeVar

from evomerge.errors import EvomergeError

D = TypeVar("D")

DeviceMap = dict[str, int]
"""Module prefix (or, for tensors of the root module, the tensor name) → device index; ``""`` is the root."""


class DoesNotFitError(EvomergeError):
    """The model's blocks cannot be laid out within the devices' memory."""


def prefixes(name: str) -> list[str]:
    """``"a.b.c"`` → ``["", "a", "a.b", "a.b.c"]``: the root, every enclosing module, the name itself."""
    parts = name.split(".")
    return ["", *(".".join(parts[: i + 1]) for i in range(len(parts)))]


def owner(name: str) -> str:
    """The module holding tensor ``name`` (``""`` for a tensor of the root module)."""
    return name.rpartition(".")[0]


def blocks_of(names: Iterable[str], module_classes: Mapping[str, str], no_split: Collection[str]) -> dict[str, str]:
    """Tensor name → the block it belongs to: its outermost enclosing module that may not be split.

    A module may not be split when its class is a no-split class or when it holds tensors of its own (its
    forward may use them next to its children's outputs). Tensors of the root module are blocks by themselves.
    """
    names = list(names)
    if module_classes.get("") in no_split:
        return dict.fromkeys(names, "")
    owners = {owner(n) for n in names}
    atomic = {m for m in owners if m} | {m for m, cls in module_classes.items() if m and cls in no_split}
    out: dict[str, str] = {}
    for name in names:
        if not owner(name):
            out[name] = name
            continue
        out[name] = next(p for p in prefixes(owner(name))[1:] if p in atomic)
    return out


def _fill(sizes: Sequence[int], limits: Sequence[int]) -> list[int] | None:
    """Greedy contiguous layout: each device takes blocks in order up to its limit; None if blocks remain.

    Filling every device as far as it goes reaches the furthest block any contiguous layout can, so the
    greedy layout exists exactly when some layout within ``limits`` does.
    """
    devices: list[int] = []
    device, load = 0, 0
    for size in sizes:
        while device < len(limits) and load + size > limits[device]:
            device, load = device + 1, 0
        if device == len(limits):
            return None
        devices.append(device)
        load += size
    return devices


def balance(sizes: Sequence[int], capacity: Sequence[int]) -> list[int]:
    """Device of each block, contiguous in order, minimising the largest per-device load within ``capacity``.

    A binary search over the largest load ``t``: a layout with loads ≤ min(t, capacity) exists iff the
    greedy fill finds one.
    """
    if not capacity:
        raise ValueError("no devices to place the model on")
    total = sum(sizes)
    fitted = _fill(sizes, capacity)
    if fitted is None:
        gib = 2**30
        raise DoesNotFitError(
            f"the model needs {total / gib:.2f} GiB in whole blocks but its {len(capacity)} devices hold "
            f"{sum(capacity) / gib:.2f} GiB ({', '.join(f'{c / gib:.2f}' for c in capacity)}): "
            "raise resources.gpus_per_actor or use a smaller models.dtype"
        )
    low, high = max([*sizes, -(-total // len(capacity))], default=0), max(capacity)
    while low < high:
        mid = (low + high) // 2
        if _fill(sizes, [min(mid, c) for c in capacity]) is None:
            low = mid + 1
        else:
            high = mid
    layout = _fill(sizes, [min(low, c) for c in capacity])
    assert layout is not None
    return layout


def plan_device_map(
    tensor_bytes: Mapping[str, int],
    module_classes: Mapping[str, str],
    no_split: Collection[str],
    capacity: Sequence[int],
    tied: Mapping[str, str] | None = None,
) -> DeviceMap:
    """An accelerate-style device map placing every tensor of a model on one of ``len(capacity)`` devices.

    ``tensor_bytes``: every parameter and buffer name in model order with its size (an alias of a tied
    tensor counts 0 bytes); ``module_classes``: module name → class name; ``no_split``: class names whose
    modules stay on one device; ``capacity``: bytes each device may hold; ``tied``: alias → the tensor it
    shares storage with, placed together. Keys are the largest modules lying on one device, never nested.
    """
    tied = dict(tied or {})
    unknown = [n for pair in tied.items() for n in pair if n not in tensor_bytes]
    if unknown:
        raise ValueError(f"tied tensor {unknown[0]!r} is not one of the model's tensors")
    block_of = blocks_of(tensor_bytes, module_classes, no_split)
    order = list(dict.fromkeys(block_of.values()))
    size = dict.fromkeys(order, 0)
    for name, nbytes in tensor_bytes.items():
        size[block_of[name]] += nbytes
    device = dict(zip(order, balance([size[b] for b in order], capacity)))
    for alias, target in tied.items():
        device[block_of[alias]] = device[block_of[target]]
    for alias, target in tied.items():
        if device[block_of[alias]] != device[block_of[target]]:
            raise ValueError(f"tied tensors {alias!r} and {target!r} cannot share one device")
    placed = {name: device[block_of[name]] for name in tensor_bytes}
    loads = _loads(tensor_bytes, placed, len(capacity))
    over = [i for i, (load, cap) in enumerate(zip(loads, capacity)) if load > cap]
    if over:
        raise DoesNotFitError(f"device {over[0]} would hold {loads[over[0]]} bytes of tied blocks, more than its {capacity[over[0]]}")
    return compact(placed)


def compact(tensor_devices: Mapping[str, int]) -> DeviceMap:
    """The shortest prefixes whose tensors all share a device: ``{"model": 0, "lm_head": 1}`` style."""
    seen: dict[str, set[int]] = {}
    for name, device in tensor_devices.items():
        for p in prefixes(name):
            seen.setdefault(p, set()).add(device)
    out: DeviceMap = {}
    for name, device in tensor_devices.items():
        key = next(p for p in prefixes(name) if len(seen[p]) == 1)
        out[key] = device
    return out


def covering_keys(name: str, device_map: Mapping[str, object]) -> list[str]:
    """The device-map keys that cover tensor ``name`` (the root ``""``, an enclosing module, or the name)."""
    return [p for p in prefixes(name) if p in device_map]


def parameter_devices(names: Iterable[str], device_map: Mapping[str, D]) -> dict[str, D]:
    """Tensor name → its device under ``device_map`` (the most specific covering key wins)."""
    out: dict[str, D] = {}
    for name in names:
        keys = covering_keys(name, device_map)
        if not keys:
            raise ValueError(f"tensor {name!r} is not covered by the device map (keys: {', '.join(sorted(device_map))})")
        out[name] = device_map[keys[-1]]
    return out


def bytes_per_device(tensor_bytes: Mapping[str, int], device_map: Mapping[str, int], n_devices: int) -> list[int]:
    """How many bytes of the model each device holds under ``device_map``."""
    return _loads(tensor_bytes, parameter_devices(tensor_bytes, device_map), n_devices)


def _loads(tensor_bytes: Mapping[str, int], placed: Mapping[str, int], n_devices: int) -> list[int]:
    loads = [0] * n_devices
    for name, nbytes in tensor_bytes.items():
        loads[placed[name]] += nbytes
    return loads
