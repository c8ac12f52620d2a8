"""Union vocabularies: output ids, row maps, and merged rows of tokens only some models have.

Merges run through the real planner and executor on in-memory tensors; expected rows are computed here
from the operator's formula over the models that hold each token.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.errors import ConfigError, IncompatibleModelsError
from evomerge.merge.executor import MergeExecutor
from evomerge.merge.planner import CompiledMerge, SourceInfo, compile_plan
from evomerge.merge.tokenizer_out import union_tokenizer_files
from evomerge.merge.vocab_union import NewToken, plan_vocabulary
from evomerge.merge.vocabulary import Vocabulary, read_vocabulary
from evomerge.plan import MergePlan

HIDDEN = 3
BASE = ["a", "b", "c", "d"]


def info(ref: str, tokens: list[str], rows: int | None = None, with_vocab: bool = True) -> SourceInfo:
    """A one-layer Llama-like source whose tokenizer numbers ``tokens`` in order."""
    n = len(tokens) if rows is None else rows
    shapes = {"model.embed_tokens.weight": (n, HIDDEN), "model.layers.0.mlp.up_proj.weight": (HIDDEN, HIDDEN),
              "model.norm.weight": (HIDDEN,), "lm_head.weight": (n, HIDDEN)}
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 1, "vocab_size": n,
              "eos_token_id": len(ref)}
    vocab = Vocabulary({t: i for i, t in enumerate(tokens)}) if with_vocab else None
    return SourceInfo(ref, shapes, config, vocab=vocab)


def plan(method: str = "linear", base: str | None = None, weights: dict[str, float] | None = None,
         **tokenizer: object) -> MergePlan:
    weights = weights or {"base": 0.2, "m1": 0.3, "m2": 0.5}
    data: dict = {"merge_method": method, "models": [{"model": r, "parameters": {"weight": w}} for r, w in weights.items()]}
    if base:
        data["base_model"] = base
    if tokenizer:
        data["tokenizer"] = tokenizer
    return MergePlan.from_dict(data)


def tensors_for(infos: dict[str, SourceInfo], seed: int = 0) -> dict[tuple[str, str], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {(ref, name): torch.randn(shape, generator=gen, dtype=torch.float64)
            for ref, i in infos.items() for name, shape in i.shapes.items()}


def run(compiled: CompiledMerge, data: dict[tuple[str, str], torch.Tensor]) -> dict[str, torch.Tensor]:
    executor = MergeExecutor(compiled, lambda i, name: data[(compiled.sources[i], name)])
    return {task.out_name: tensor.clone() for task, tensor in executor}


def row(data: dict[tuple[str, str], torch.Tensor], infos: dict[str, SourceInfo], ref: str, token: str,
        name: str = "model.embed_tokens.weight") -> torch.Tensor:
    vocab = infos[ref].vocab
    assert vocab is not None
    return data[(ref, name)][vocab.ids[token]]


# ---------------------------------------------------------------------------------------------- output ids
def test_union_keeps_base_ids_then_appends_tokens_model_by_model() -> None:
    infos = {"base": info("base", BASE), "m1": info("m1", [*BASE, "x", "y"]), "m2": info("m2", ["c", "a", "b", "d", "z", "x"])}
    compiled = compile_plan(plan(source="union"), infos)
    vp = compiled.vocab
    assert vp is not None and vp.size == 7
    assert [(t.token, t.id, compiled.sources[t.source]) for t in vp.added] == [("x", 4, "m1"), ("y", 5, "m1"), ("z", 6, "m2")]
    # output row -> source row: a b c d x y z
    assert vp.rows == ((0, 1, 2, 3, -1, -1, -1), (0, 1, 2, 3, 4, 5, -1), (1, 2, 0, 3, 5, -1, 4))
    assert compiled.out_config["vocab_size"] == 7
    assert {t.out_name: t.shape for t in compiled.tasks if t.vocab} == {
        "model.embed_tokens.weight": (7, HIDDEN), "lm_head.weight": (7, HIDDEN)}


def test_identical_vocabularies_are_not_reindexed() -> None:
    infos = {r: info(r, BASE) for r in ("base", "m1", "m2")}
    compiled = compile_plan(plan(source="union"), infos)
    assert compiled.vocab is None and not any(t.vocab for t in compiled.tasks)


def test_without_tokenizer_option_a_vocab_mismatch_is_an_error() -> None:
    infos = {"base": info("base", BASE), "m1": info("m1", [*BASE, "x"]), "m2": info("m2", BASE)}
    with pytest.raises(IncompatibleModelsError, match="vocabularies differ.*tokenizer: {source: union}"):
        compile_plan(plan(), infos)


def test_named_source_drops_the_tokens_it_lacks_and_counts_them() -> None:
    infos = {"base": info("base", BASE), "m1": info("m1", [*BASE, "x", "y"]), "m2": info("m2", ["d", "c", "b", "a"])}
    compiled = compile_plan(plan(source="base"), infos)
    vp = compiled.vocab
    assert vp is not None and vp.size == 4 and vp.added == ()
    assert vp.dropped == (0, 2, 0) and vp.rows[2] == (3, 2, 1, 0)


def test_a_model_as_source_gives_its_special_token_ids() -> None:
    infos = {"base": info("base", BASE), "m1": info("m1", [*BASE, "x"]), "m2": info("m2", BASE)}
    compiled = compile_plan(plan(source="m1"), infos)
    assert compiled.tokenizer_source == compiled.sources.index("m1")
    assert compiled.out_config["vocab_size"] == 5 and compiled.out_config["eos_token_id"] == len("m1")
    with pytest.raises(ConfigError, match="'nobody' is not one of the recipe's models"):
        compile_plan(plan(source="nobody"), infos)


def test_pad_to_multiple_of_rounds_the_rows_up() -> None:
    infos = {r: info(r, BASE) for r in ("base", "m1", "m2")}
    compiled = compile_plan(plan(source="union", pad_to_multiple_of=3), infos)
    assert compiled.vocab is not None and compiled.vocab.size == 6
    assert all(r[4:] == (-1, -1) for r in compiled.vocab.rows)


def test_tokens_past_the_embedding_rows_are_missing_not_added() -> None:
    infos = {"base": info("base", BASE), "m1": info("m1", [*BASE, "x"], rows=4), "m2": info("m2", [*BASE, "y"])}
    vp = compile_plan(plan(source="union"), infos).vocab
    assert vp is not None and [t.token for t in vp.added] == ["y"]


def test_missing_tokenizer_and_per_token_sources_are_refused() -> None:
    infos = {"base": info("base", BASE), "m1": info("m1", [*BASE, "x"], with_vocab=False), "m2": info("m2", BASE)}
    with pytest.raises(ConfigError, match="m1 has none"):
        compile_plan(plan(source="union"), infos)
    infos["m1"] = info("m1", [*BASE, "x"])
    with pytest.raises(ConfigError, match="tokenizer.tokens"):
        compile_plan(plan(source="union", tokens={"x": {"source": "m1"}}), infos)


def test_data_aware_method_on_reindexed_rows_is_refused() -> None:
    infos = {"base": info("base", BASE), "m1": info("m1", [*BASE, "x"]), "m2": info("m2", BASE)}
    recipe = MergePlan.from_dict({
        "merge_method": "fisher", "parameters": {"statistics": "stats"}, "tokenizer": {"source": "union"},
        "models": [{"model": r} for r in infos]})
    with pytest.raises(ConfigError, match="cannot merge re-indexed rows"):
        compile_plan(recipe, infos)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=8, unique=True), min_size=2, max_size=4))
def test_union_property(vocab_lists: list[list[str]]) -> None:
    """Every token of every model is in the union; base ids stay; each row map points at that token's row."""
    refs = [f"m{i}" for i in range(len(vocab_lists))]
    infos = {r: info(r, toks) for r, toks in zip(refs, vocab_lists)}
    recipe = MergePlan.from_dict({"merge_method": "linear", "models": [{"model": r} for r in refs],
                                  "tokenizer": {"source": "union"}})
    vp = plan_vocabulary(recipe, [infos[r] for r in refs], 0)
    union = {t for toks in vocab_lists for t in toks}
    if vp is None:
        assert all(toks == vocab_lists[0] for toks in vocab_lists)
        return
    ids = {t: i for i, t in enumerate(vocab_lists[0])} | {t.token: t.id for t in vp.added}
    assert set(ids) == union and sorted(ids.values()) == list(range(len(union))) and vp.size == len(union)
    for toks, rows in zip(vocab_lists, vp.rows):
        assert all(rows[ids[t]] == toks.index(t) for t in toks)
        assert sum(r >= 0 for r in rows) == len(toks)


# ---------------------------------------------------------------------------------------------- merged rows
THREE = {"base": BASE, "m1": [*BASE, "x", "y"], "m2": ["c", "a", "b", "d", "z", "x"]}


@pytest.mark.parametrize("name", ["model.embed_tokens.weight", "lm_head.weight"])
def test_linear_row_is_the_weighted_mean_over_the_models_that_have_the_token(name: str) -> None:
    infos = {r: info(r, toks) for r, toks in THREE.items()}
    data = tensors_for(infos)
    compiled = compile_plan(plan(source="union"), infos)
    merged = run(compiled, data)[name]
    weights = {"base": 0.2, "m1": 0.3, "m2": 0.5}
    for token, out_id in {"a": 0, "c": 2, "x": 4, "y": 5, "z": 6}.items():
        holders = [r for r in weights if token in THREE[r]]
        total = sum(weights[r] for r in holders)
        expected = sum(weights[r] * row(data, infos, r, token, name) for r in holders) / total
        torch.testing.assert_close(merged[out_id].double(), expected, rtol=1e-5, atol=1e-6)
    # tensors outside the vocabulary are merged as usual
    up = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(run(compiled, data)[up].double(), sum(w * data[(r, up)] for r, w in weights.items()),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("new_rows", ["mean", "zeros"])
def test_task_arithmetic_uses_the_new_rows_rule_for_a_base_that_lacks_the_token(new_rows: str) -> None:
    infos = {r: info(r, toks) for r, toks in THREE.items()}
    data = tensors_for(infos, seed=1)
    recipe = plan("task_arithmetic", base="base", weights={"m1": 0.6, "m2": 0.9}, source="union", new_rows=new_rows)
    merged = run(compile_plan(recipe, infos), data)["model.embed_tokens.weight"]
    base_rows = data[("base", "model.embed_tokens.weight")]
    stand_in = base_rows.mean(dim=0) if new_rows == "mean" else torch.zeros(HIDDEN, dtype=torch.float64)
    w = {"m1": 0.6, "m2": 0.9}
    for token, out_id in {"b": 1, "x": 4, "y": 5, "z": 6}.items():
        reference = row(data, infos, "base", token) if token in BASE else stand_in
        holders = [r for r in w if token in THREE[r]]
        expected = reference + sum(w[r] * (row(data, infos, r, token) - reference) for r in holders)
        torch.testing.assert_close(merged[out_id].double(), expected, rtol=1e-5, atol=1e-6)


def test_rows_only_the_base_has_and_rows_nobody_has() -> None:
    infos = {"base": info("base", [*BASE, "q"]), "m1": info("m1", [*BASE, "x"]), "m2": info("m2", BASE)}
    data = tensors_for(infos, seed=2)
    for new_rows in ("mean", "zeros"):
        recipe = plan("task_arithmetic", base="base", weights={"m1": 1.0, "m2": 1.0}, source="union",
                      new_rows=new_rows, pad_to_multiple_of=4)
        merged = run(compile_plan(recipe, infos), data)["model.embed_tokens.weight"]
        assert merged.shape == (8, HIDDEN)
        torch.testing.assert_close(merged[4].double(), row(data, infos, "base", "q"))  # only the base has "q"
        padding = merged[:6].mean(dim=0) if new_rows == "mean" else torch.zeros(HIDDEN, dtype=merged.dtype)
        torch.testing.assert_close(merged[6:], padding.expand(2, HIDDEN))


def test_slerp_keeps_the_base_row_where_the_other_model_lacks_the_token() -> None:
    infos = {"base": info("base", [*BASE, "q"]), "m1": info("m1", [*BASE, "x"])}
    data = tensors_for(infos, seed=3)
    recipe = MergePlan.from_dict({"merge_method": "slerp", "base_model": "base", "models": [{"model": "m1"}],
                                  "parameters": {"t": 0.5}, "tokenizer": {"source": "union"}})
    merged = run(compile_plan(recipe, infos), data)["lm_head.weight"]
    torch.testing.assert_close(merged[4].double(), row(data, infos, "base", "q", "lm_head.weight"))
    assert torch.isfinite(merged).all() and merged.shape == (6, HIDDEN)


# ---------------------------------------------------------------------------------------------- tokenizer files
def test_slow_tokenizer_folder_is_read_and_extended_at_the_planned_ids(tmp_path: Path) -> None:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    vocab = read_vocabulary(tmp_path)
    assert vocab is not None and dict(vocab.ids) == {w: i for i, w in enumerate(words)}
    assert vocab.added["[CLS]"]["special"]
    files = union_tokenizer_files(tmp_path, [NewToken("<think>", 7, 1, None), NewToken("<eot>", 8, 1, {"special": True})])
    added = {e["content"]: e for e in json.loads(files["tokenizer.json"])["added_tokens"]}
    assert (added["<think>"]["id"], added["<think>"]["special"]) == (7, False)
    assert (added["<eot>"]["id"], added["<eot>"]["special"]) == (8, True)
    assert read_vocabulary(tmp_path / "nowhere") is None
