"""Decoded plans merged for real (tiny checkpoints, built-in operators): the weights are what the genome says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from evomerge.io.checkpoint import Checkpoint
from evomerge.layout import ModelLayout
from evomerge.merge.to_disk import merge_to_disk
from evomerge.types import Genome
from search_spaces import build_space


def layout_of(path: Path) -> ModelLayout:
    ck = Checkpoint(path)
    try:
        return ModelLayout.from_shapes({n: m.shape for n, m in ck.meta.items()}, ck.config)
    finally:
        ck.close()


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return {n: t.double() for n, t in load_file(str(path / "model.safetensors")).items()}


def merged(plan: object, out: Path) -> dict[str, torch.Tensor]:
    merge_to_disk(plan, out, progress=False)  # type: ignore[arg-type]
    return weights_of(out)


def test_m2n2_sources_and_crossover_children_merge_exactly(llama_family: dict[str, Path], tmp_path: Path) -> None:
    a, b = str(llama_family["ft1"]), str(llama_family["ft2"])
    layout = layout_of(llama_family["ft1"])
    space = build_space({"name": "m2n2"}, [a, b], None, layout)
    first, second = space.initial_points()
    wa, wb = weights_of(Path(a)), weights_of(Path(b))
    out = merged(space.decode(first), tmp_path / "a")
    assert all(torch.equal(out[n], wa[n]) for n in wa)
    split_block = 1 + 9 * 1  # embeddings + the nine tensors of layer 0
    split = int(space.block_starts()[split_block])  # type: ignore[attr-defined]
    child = Genome(np.concatenate([first.vector[:split], second.vector[split:]]))
    out = merged(space.decode(child), tmp_path / "child")
    for i, tensor in enumerate(layout.tensors):
        assert torch.equal(out[tensor.name], (wa if i < split_block else wb)[tensor.name]), tensor.name
    assert layout.tensors[split_block].layer == 1


def test_layerwise_split_weights_each_tensor_by_its_role(gpt2_family: dict[str, Path], tmp_path: Path) -> None:
    refs = [str(gpt2_family["ft1"]), str(gpt2_family["ft2"])]
    layout = layout_of(gpt2_family["ft1"])
    assert layout.num_layers == 2
    space = build_space({"name": "layerwise", "split": "attn_mlp", "parameters": {"weight": {"low": 0.1}}},
                        refs, None, layout)
    genome = space.sample(np.random.default_rng(3))
    # genome order: layer, slot (attn, mlp), model
    w = genome.vector.reshape(2, 2, 2)
    out = merged(space.decode(genome), tmp_path / "out")
    sources = [weights_of(Path(r)) for r in refs]
    for tensor in layout.tensors:
        layer = 0 if tensor.layer is None and tensor.position == "pre" else 1 if tensor.layer is None else tensor.layer
        if tensor.role == "attention":
            coef = w[layer, 0]
        elif tensor.role == "mlp":
            coef = w[layer, 1]
        else:  # norms, embeddings, final norm: the mean of the layer's attention and MLP values
            coef = 0.5 * (w[layer, 0] + w[layer, 1])
        expected = (coef[0] * sources[0][tensor.name] + coef[1] * sources[1][tensor.name]) / coef.sum()
        torch.testing.assert_close(out[tensor.name], expected, rtol=0, atol=1e-6, msg=tensor.name)


def test_method_choice_applies_each_groups_operator(llama_family: dict[str, Path], tmp_path: Path) -> None:
    base = str(llama_family["base"])
    refs = [str(llama_family["ft1"]), str(llama_family["ft2"])]
    layout = layout_of(llama_family["ft1"])
    config = {"name": "method_choice", "outside": "own", "options": {
        "linear": {"parameters": {"weight": {}}},
        "task_arithmetic": {"parameters": {"weight": {}, "lambda": {"low": 0.5, "high": 1.5}}},
    }}
    space = build_space(config, refs, base, layout)
    vector = np.random.default_rng(4).uniform(0.5, 1.0, space.dimension)
    genome = Genome(vector, (1, 0, 1, 0))  # embeddings: TA, layer 0: linear, layer 1: TA, head: linear
    out = merged(space.decode(genome), tmp_path / "out")
    theta0, t1, t2 = (weights_of(Path(p)) for p in (base, *refs))
    # per part: linear weights of ft1, ft2, base; then TA weights of ft1, ft2 and lambda
    genes = vector.reshape(4, 6)
    for tensor in layout.tensors:
        part = {"pre": 0, "post": 3}.get(tensor.position, (tensor.layer or 0) + 1)
        n = tensor.name
        g = genes[part]
        if genome.choices[part] == 0:
            expected = (g[0] * t1[n] + g[1] * t2[n] + g[2] * theta0[n]) / g[:3].sum()
        else:
            expected = theta0[n] + g[5] * (g[3] * (t1[n] - theta0[n]) + g[4] * (t2[n] - theta0[n]))
        torch.testing.assert_close(out[n], expected, rtol=0, atol=1e-5, msg=n)
