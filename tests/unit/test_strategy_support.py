"""Helpers shared by the strategies: the vectorised unit cube and the pending-results book."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.strategies.pending import Pending, check_ask
from evomerge.strategies.unit_cube import UnitCube
from evomerge.types import EvalStatus, Evaluation
from search_spaces.base import FloatDim
from tests.unit.strategy_toys import BoxSpace

DIMS = [FloatDim("a", -2.0, 3.0), FloatDim("b", 1e-4, 10.0, log=True), FloatDim("c", 5.0, 5.0)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.5, 1.5), min_size=3, max_size=3))
def test_unit_cube_matches_the_space_maps(u: list[float]) -> None:
    space = BoxSpace(DIMS)
    cube = UnitCube(space)
    genome = cube.genome(np.array(u))
    assert genome.vector == pytest.approx(space.from_unit(np.array(u)).vector, rel=1e-12)
    assert cube.to_unit(genome.vector) == pytest.approx(space.to_unit(genome), abs=1e-12)


def test_unit_cube_extremes() -> None:
    cube = UnitCube(BoxSpace(DIMS))
    assert cube.from_unit(np.array([0.0, 0.0, 0.3])) == pytest.approx([-2.0, 1e-4, 5.0])
    assert cube.from_unit(np.array([1.0, 0.5, 0.9])) == pytest.approx([3.0, 10**-1.5, 5.0])
    assert cube.to_unit(np.array([0.5, 1e-2, 5.0])) == pytest.approx([0.5, 0.4, 0.5])


def ok(uid: str) -> Evaluation:
    return Evaluation(uid, EvalStatus.OK, {"score": 1.0})


def test_pending_returns_known_results_once_in_proposal_order() -> None:
    book: Pending[int] = Pending()
    for i, uid in enumerate(["x-0", "x-1", "x-2"]):
        book.add(uid, i)
    taken = book.take([ok("x-2"), ok("stranger"), ok("x-0"), ok("x-2")])
    assert [(ev.uid, payload) for ev, payload in taken] == [("x-0", 0), ("x-2", 2)]
    assert len(book) == 1 and "x-1" in book and book.payloads() == [1]
    assert book.take([ok("x-0")]) == []
    restored: Pending[int] = Pending()
    restored.load_state_dict(book.state_dict())
    restored.add("x-3", 3)
    assert [p for _, p in restored.take([ok("x-3"), ok("x-1")])] == [1, 3]


def test_negative_asks_are_refused() -> None:
    check_ask(0)
    with pytest.raises(ValueError, match="n >= 0"):
        check_ask(-2)
