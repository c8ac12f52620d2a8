"""The ancestor graph of one candidate, laid out in layers for drawing (no graph library needed).

A node's layer is one more than its deepest parent's (roots at 0), so every edge points right and the
candidate itself is the rightmost node. Parents are always recorded before their children, so archive
order is a topological order. Long ancestries (M2N2 runs for thousands of generations) are cut to the
nearest ``max_nodes`` ancestors, breadth first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evomerge.population.archive import Entry


@dataclass(frozen=True)
class LineageGraph:
    nodes: list[str]
    """Candidate uids, the candidate itself first."""
    position: dict[str, tuple[float, float]]
    """uid → (layer, height in [0, 1])."""
    edges: list[tuple[str, str]]
    """(parent, child) pairs between drawn nodes."""
    left_out: int
    """Ancestors not drawn because of ``max_nodes``."""


def lineage_graph(lineage: Sequence[Entry], max_nodes: int = 60) -> LineageGraph:
    """Layout of ``lineage`` (as :meth:`Archive.lineage` returns it: the candidate first, breadth first)."""
    kept = list(lineage[:max_nodes])
    uids = {e.candidate.uid for e in kept}
    layer: dict[str, int] = {}
    for entry in sorted(kept, key=lambda e: e.index):
        parents = [p for p in entry.candidate.parents if p in uids]
        layer[entry.candidate.uid] = 1 + max((layer.get(p, 0) for p in parents), default=-1)
    columns: dict[int, list[Entry]] = {}
    for entry in sorted(kept, key=lambda e: e.index):
        columns.setdefault(layer[entry.candidate.uid], []).append(entry)
    position = {}
    for x, members in columns.items():
        for i, entry in enumerate(members):
            position[entry.candidate.uid] = (float(x), (i + 1) / (len(members) + 1))
    edges = [(p, e.candidate.uid) for e in kept for p in e.candidate.parents if p in uids]
    return LineageGraph([e.candidate.uid for e in kept], position, edges, max(0, len(lineage) - len(kept)))
