"""Lineage layout: layers by longest ancestry, edges between drawn nodes, truncation of long histories."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from evomerge.population.archive import Archive
from evomerge.report.lineage import lineage_graph
from evomerge.types import Candidate, EvalStatus, Evaluation, Genome, Objective


def archive_of(parents: dict[str, tuple[str, ...]]) -> Archive:
    """An archive with the candidates in the given (topological) order."""
    archive = Archive([Objective("acc")])
    for uid, ps in parents.items():
        archive.add(Candidate(uid, Genome(np.zeros(1)), None, parents=ps), Evaluation(uid, EvalStatus.OK, {"acc": 0.0}))
    return archive


def test_layers_follow_the_longest_ancestry() -> None:
    #  a ─┬─ c ── d ── e
    #  b ─┘         ╱
    #  a ──────────╯   (e also has a as a direct parent)
    archive = archive_of({"a": (), "b": (), "c": ("a", "b"), "d": ("c",), "e": ("d", "a"), "x": ()})
    graph = lineage_graph(archive.lineage("e"))
    assert graph.nodes[0] == "e" and set(graph.nodes) == {"a", "b", "c", "d", "e"}  # x is no ancestor
    layer = {u: graph.position[u][0] for u in graph.nodes}
    assert layer == {"a": 0, "b": 0, "c": 1, "d": 2, "e": 3}
    assert sorted(graph.edges) == [("a", "c"), ("a", "e"), ("b", "c"), ("c", "d"), ("d", "e")]
    assert graph.position["a"][1] != graph.position["b"][1]  # two nodes of one layer do not overlap
    assert graph.left_out == 0


def test_long_histories_are_cut_breadth_first() -> None:
    chain = {"c0": ()} | {f"c{i}": (f"c{i - 1}",) for i in range(1, 10)}
    graph = lineage_graph(archive_of(chain).lineage("c9"), max_nodes=4)
    assert graph.nodes == ["c9", "c8", "c7", "c6"] and graph.left_out == 6
    assert [graph.position[u][0] for u in graph.nodes] == [3, 2, 1, 0]
    assert ("c5", "c6") not in graph.edges


@given(st.lists(st.lists(st.integers(0, 30), max_size=2), min_size=1, max_size=30))
def test_every_edge_points_right(raw_parents: list[list[int]]) -> None:
    parents = {f"n{i}": tuple(f"n{p}" for p in ps if p < i) for i, ps in enumerate(raw_parents)}
    archive = archive_of(parents)
    graph = lineage_graph(archive.lineage(f"n{len(raw_parents) - 1}"))
    for parent, child in graph.edges:
        assert graph.position[parent][0] < graph.position[child][0]
    assert all(0 < y < 1 for _, y in graph.position.values())
    assert graph.position[graph.nodes[0]][0] == max(x for x, _ in graph.position.values())
