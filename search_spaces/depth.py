"""The network cut along its depth: embeddings, contiguous layer groups, final norm and head.

Layer-wise spaces give each *part* its genes. Tensors before the first layer (embeddings) and after the
last (final norm, LM head) either follow the nearest layer group (``outside: adjacent``) or are parts of
their own (``outside: own``).
"""

from __future__ import annotations

from dataclasses import dataclass

from evomerge.errors import ConfigError
from evomerge.layout import ModelLayout, Position, TensorInfo
from search_spaces.config import GroupCount, Outside


@dataclass(frozen=True)
class Part:
    key: str
    """``pre``, ``g0``, ``g1``, ..., ``post``: stable keys used in gene keys."""
    label: str
    position: Position
    layers: tuple[int, ...]
    tensors: tuple[TensorInfo, ...]

    @property
    def layer_range(self) -> tuple[int, int]:
        """``[start, end)`` of the part's layers (only for layer groups)."""
        return self.layers[0], self.layers[-1] + 1


@dataclass(frozen=True)
class Depth:
    groups: tuple[Part, ...]
    pre: Part | None
    post: Part | None
    outside: Outside

    @property
    def parts(self) -> list[Part]:
        """Parts with genes of their own, in network order."""
        if self.outside == "adjacent":
            return list(self.groups)
        return [p for p in (self.pre, *self.groups, self.post) if p is not None]

    def group_of(self, layer: int) -> Part:
        return next(g for g in self.groups if layer in g.layers)

    def owner(self, position: Position) -> Part | None:
        """The part whose genes the ``pre`` or ``post`` tensors use (None if there are no such tensors)."""
        own = self.pre if position == "pre" else self.post
        if own is None or self.outside == "own":
            return own
        return self.groups[0] if position == "pre" else self.groups[-1]


def split_depth(layout: ModelLayout, groups: GroupCount, outside: Outside, path: str) -> Depth:
    """Layer groups of ``layout`` (``path`` names the ``groups`` field in errors)."""
    n = layout.num_layers
    if n < 1:
        raise ConfigError("the model has no numbered layers to group", f"{path}.groups")
    count = n if groups == "per_layer" else groups
    if count > n:
        raise ConfigError(f"{count} layer groups but the model has only {n} layer(s)", f"{path}.groups")
    for layer in range(n):
        if not layout.layer_tensors(layer):
            raise ConfigError(f"layer {layer} of {n} has no tensors in the model's layout", f"{path}.groups")
    parts = []
    for i, layers in enumerate(layout.groups(count)):
        label = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
        tensors = tuple(t for t in layout.tensors if t.layer in layers)
        parts.append(Part(f"g{i}", label, "layer", tuple(layers), tensors))
    pre = tuple(t for t in layout.tensors if t.position == "pre")
    post = tuple(t for t in layout.tensors if t.position == "post")
    return Depth(
        groups=tuple(parts),
        pre=Part("pre", "embeddings", "pre", (), pre) if pre else None,
        post=Part("post", "head", "post", (), post) if post else None,
        outside=outside,
    )
