"""Random search: uniform in the unit cube (log-uniform on log dimensions), categoricals uniform."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.strategy_toys import MixedSpace, evaluate, fingerprint, make, sphere


def test_samples_are_uniform_in_the_unit_cube_and_over_options() -> None:
    space = MixedSpace(groups=1)
    cands = make("random", space).ask(3000)
    weight = np.array([c.genome.vector[0] for c in cands])
    density = np.array([c.genome.vector[1] for c in cands])  # log-scaled over [0.01, 1]
    assert np.mean(weight < 0.5) == pytest.approx(0.5, abs=0.03)
    assert np.mean(density < 0.1) == pytest.approx(0.5, abs=0.03)  # 0.1 is the geometric middle
    counts = np.bincount([c.genome.choices[0] for c in cands], minlength=3) / len(cands)
    assert counts == pytest.approx([1 / 3] * 3, abs=0.03)


def test_results_do_not_steer_random_search() -> None:
    space = MixedSpace()
    told, untold = make("random", space), make("random", space)
    told.tell(evaluate(told.ask(5), sphere(space)))
    untold.ask(5)
    assert [f[1:] for f in fingerprint(told.ask(5))] == [f[1:] for f in fingerprint(untold.ask(5))]
