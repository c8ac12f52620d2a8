"""The M2N2 spaces: sources as one-hot rows, block-major layer order, the weight-vector mode's maps."""

from __future__ import annotations

import numpy as np
import pytest

from evomerge.errors import ConfigError, IncompatibleModelsError
from evomerge.types import Genome
from search_spaces import build_space
from search_spaces.base import SearchSpace
from tests.unit.test_search_spaces_support import Models, make_layout, planner_values

LAYOUT = make_layout("gpt2", 3)


def weights(genome: Genome, space: SearchSpace, m: Models) -> dict[str, dict[str | None, float]]:
    plan = space.decode(genome)
    resolved, _ = planner_values(plan, LAYOUT, "gpt2", m)
    return {name: values["weight"] for name, values in resolved.items()}


@pytest.mark.parametrize("granularity", ["tensor", "layer"])
def test_initial_points_are_the_sources(granularity: str) -> None:
    m = Models(("a", "b", "c"), None)
    space = build_space({"name": "m2n2", "granularity": granularity}, m.sources, None, LAYOUT)
    points = space.initial_points()
    assert len(points) == 3
    for k, point in enumerate(points):
        for per_model in weights(point, space, m).values():
            assert per_model == {r: (1.0 if i == k else 0.0) for i, r in enumerate(m.sources)}
    assert space.decode(points[0]).parameters == {"normalize": False}
    assert space.start() == Genome(np.full(space.dimension, 1.0 / 3.0))  # the uniform average


def test_a_base_model_is_one_more_column() -> None:
    m = Models(("a", "b"), "base")
    space = build_space({"name": "m2n2", "granularity": "layer"}, m.sources, m.base, LAYOUT)
    assert space.columns == ("a", "b", "base")  # type: ignore[attr-defined]
    assert space.dimension == (1 + 3 + 1) * 3  # embeddings, 3 layers, head
    assert len(space.initial_points()) == 3
    assert set(weights(space.initial_points()[2], space, m)["transformer.h.1.attn.c_attn.weight"].values()) == {0.0, 1.0}


def test_genome_order_is_layer_order_block_major() -> None:
    m = Models(("a", "b"), None)
    space = build_space({"name": "m2n2"}, m.sources, None, LAYOUT)
    starts = space.block_starts()  # type: ignore[attr-defined]
    assert list(starts) == list(range(0, space.dimension, 2))
    for index in (0, 5, space.dimension - 1):
        vector = np.zeros(space.dimension)
        vector[index] = 1.0
        on = {n for n, w in weights(Genome(vector), space, m).items() if any(w.values())}
        assert on == {LAYOUT.tensors[index // 2].name}
        assert weights(Genome(vector), space, m)[LAYOUT.tensors[index // 2].name][m.sources[index % 2]] == 1.0


def test_a_split_point_in_the_genome_is_a_split_point_in_the_network() -> None:
    m = Models(("a", "b"), None)
    space = build_space({"name": "m2n2", "granularity": "layer"}, m.sources, None, LAYOUT)
    a, b = (p.vector for p in space.initial_points())
    split = int(space.block_starts()[2])  # type: ignore[attr-defined]  # embeddings and layer 0 from a
    child = Genome(np.concatenate([a[:split], b[split:]]))
    for tensor in LAYOUT.tensors:
        from_a = tensor.position == "pre" or tensor.layer == 0
        assert weights(child, space, m)[tensor.name] == ({"a": 1.0, "b": 0.0} if from_a else {"a": 0.0, "b": 1.0})


# ---------------------------------------------------------------------- parameters mode
def vector_space(initial: list[np.ndarray] | None = None, **config: object) -> SearchSpace:
    return build_space({"name": "m2n2", "mode": "parameters", **config}, [], None, LAYOUT, initial_vectors=initial)


def test_parameter_vectors_are_the_initial_points() -> None:
    rng = np.random.default_rng(0)
    n = LAYOUT.total_params()
    initial = [rng.normal(size=n) for _ in range(3)]
    space = vector_space(initial)
    assert space.dimension == n
    assert [g.vector.tolist() for g in space.initial_points()] == [v.tolist() for v in initial]
    assert list(space.block_starts()) == list(np.cumsum([0] + [t.numel for t in LAYOUT.tensors])[:-1])  # type: ignore[attr-defined]
    assert vector_space().initial_points() == []
    assert space.start() == space.initial_points()[0]  # a local search starts from a random network
    assert vector_space().start() == Genome(np.zeros(n))  # without one, from the centre of the box


def test_unit_cube_maps_agree_with_the_generic_ones() -> None:
    space = vector_space(low=-2.0, high=6.0)
    rng = np.random.default_rng(1)
    u = rng.random(space.dimension)
    u[:3] = [-0.5, 0.0, 1.5]
    genome = space.from_unit(u)
    assert genome == SearchSpace.from_unit(space, u)
    assert np.allclose(space.to_unit(genome), SearchSpace.to_unit(space, genome), rtol=0, atol=1e-15)
    assert genome.vector[0] == -2.0 and genome.vector[2] == 6.0
    assert space.start() == SearchSpace.start(space)
    sample = space.sample(rng)
    assert space.contains(sample) and sample.vector.min() >= -2.0 and sample.vector.max() <= 6.0
    assert np.array_equal(space.clip(Genome(np.full(space.dimension, 9.0))).vector, np.full(space.dimension, 6.0))
    assert (space.float_dims[0].low, space.float_dims[0].high) == (-2.0, 6.0)


def test_assign_and_encode_state() -> None:
    space = vector_space()
    genome = space.sample(np.random.default_rng(2))
    arrays = space.assign(genome, dtype=np.float32)  # type: ignore[attr-defined]
    first = LAYOUT.tensors[0]
    assert arrays[first.name].dtype == np.float32 and arrays[first.name].flags.writeable
    assert np.array_equal(arrays[first.name].reshape(-1), genome.vector[: first.numel].astype(np.float32))
    state = space.assign(genome)  # type: ignore[attr-defined]
    del state[first.name]
    with pytest.raises(IncompatibleModelsError, match="missing"):
        space.encode_state(state)  # type: ignore[attr-defined]
    state[first.name] = np.zeros((1, 1))
    with pytest.raises(IncompatibleModelsError, match="shape"):
        space.encode_state(state)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="encode_state"):
        space.encode(build_space({"name": "global"}, ["a", "b"], None, LAYOUT).decode(Genome(np.ones(2))))
