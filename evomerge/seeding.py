"""One seed drives all randomness.

A run's integer seed becomes the root of a :class:`numpy.random.SeedSequence` tree. Each consumer asks for
a child by a stable *name* (``"strategy"``, ``"fitness/subset"``, ``"merge/dare"``), so adding a consumer
never shifts the streams of the others, and the same seed always gives the same run.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _name_key(name: str) -> tuple[int, ...]:
    digest = hashlib.sha256(name.encode()).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


class SeedTree:
    """A named node of the run's seed tree."""

    def __init__(self, seed: int | None = 0, path: tuple[str, ...] = ()) -> None:
        self.seed = 0 if seed is None else int(seed)
        self.path = path
        key: tuple[int, ...] = ()
        for part in path:
            key += _name_key(part)
        self._sequence = np.random.SeedSequence(self.seed, spawn_key=key)

    def child(self, name: str) -> SeedTree:
        """The sub-tree for ``name``; ``a.child("x/y")`` equals ``a.child("x").child("y")``."""
        node = self
        for part in name.split("/"):
            node = SeedTree(node.seed, (*node.path, part))
        return node

    def generator(self, name: str | None = None) -> np.random.Generator:
        node = self.child(name) if name else self
        return np.random.Generator(np.random.PCG64(node._sequence))

    def integer(self, name: str | None = None) -> int:
        """A 63-bit integer seed for libraries that take an int (pycma, Optuna, torch)."""
        node = self.child(name) if name else self
        low, high = (int(v) for v in node._sequence.generate_state(2, np.uint32))
        return (low | (high << 32)) % (2**63)

    def small_integer(self, name: str | None = None) -> int:
        """A 31-bit seed for APIs that reject larger ones."""
        return self.integer(name) % (2**31 - 1)
