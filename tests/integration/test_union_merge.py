"""`evomerge merge` with `tokenizer.source: union` on tiny models whose tokenizers differ by a few tokens.

Expected rows are computed here from the source checkpoints and each source's own tokenizer: a token's
merged row is the merge of its rows in the models that have it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from evomerge.cli import main
from evomerge.io.writer import save_state_dict
from evomerge.merge.tokenizer_out import borrowed_chat_template
from evomerge.preflight import validate_file
from evomerge.tiny_models import build_tokenizer, make_tiny_model

VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
BASE_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
WEIGHTS = {"a": 0.6, "b": 0.9}


def variant(base: Path, out: Path, tokenizer: object, seed: int) -> Path:
    """A "fine-tune" of ``base`` with ``tokenizer``: its weights perturbed, rows added for the new tokens."""
    state = load_file(str(base / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    rows = len(tokenizer)  # type: ignore[arg-type]
    for name in list(state):
        t = state[name] + 0.05 * torch.randn(state[name].shape, generator=gen)
        if name in VOCAB_TENSORS:
            t = torch.cat([t, torch.randn(rows - t.shape[0], t.shape[1], generator=gen)])
        state[name] = t
    config = json.loads((base / "config.json").read_text()) | {"vocab_size": rows}
    save_state_dict(state, out, config=config)
    tokenizer.save_pretrained(str(out))  # type: ignore[attr-defined]
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import AddedToken

    root = tmp_path_factory.mktemp("union")
    make_tiny_model(root / "base", seed=0)
    tok = build_tokenizer()
    tok.chat_template = BASE_TEMPLATE
    tok.save_pretrained(str(root / "base"))
    with_added = build_tokenizer()  # the base's tokenizer plus an added and a special token
    with_added.add_tokens(["<think>", AddedToken("<|im_end|>", special=True)])
    with_added.chat_template = "{{ 'other template' }}"
    with_vocab = build_tokenizer(extra_tokens=("foo", "<think>"))  # the same token at another id, and "foo"
    permuted = build_tokenizer()
    data = json.loads(permuted.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    variant(root / "base", root / "perm", build_tokenizer(), seed=3)
    (root / "perm" / "tokenizer.json").write_text(json.dumps(data))
    return {"base": root / "base", "a": variant(root / "base", root / "a", with_added, seed=1),
            "b": variant(root / "base", root / "b", with_vocab, seed=2), "perm": root / "perm"}


def recipe(tmp_path: Path, models: dict[str, Path], **extra: object) -> Path:
    data: dict = {"merge_method": "task_arithmetic", "base_model": str(models["base"]),
                  "models": [{"model": str(models[r]), "parameters": {"weight": w}} for r, w in WEIGHTS.items()]}
    data.update(extra)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rows_of(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    from transformers import AutoTokenizer

    return load_file(str(folder / "model.safetensors")), AutoTokenizer.from_pretrained(str(folder)).get_vocab()


def test_union_merge_rows_are_the_merge_over_the_models_that_have_each_token(models: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = CliRunner().invoke(main, ["merge", str(recipe(tmp_path, models, tokenizer={"source": "union"})),
                                       str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    merged, out_ids = rows_of(out)
    sources = {r: rows_of(models[r]) for r in ("base", "a", "b")}
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 104
    # base ids first, then a's tokens in a's order, then b's
    assert {t: out_ids[t] for t in ("x", "<think>", "<|im_end|>", "foo")} == {
        "x": sources["base"][1]["x"], "<think>": 101, "<|im_end|>": 102, "foo": 103}
    for name in VOCAB_TENSORS:
        base_state, base_ids = sources["base"]
        stand_in = base_state[name].mean(dim=0)  # new_rows: mean, for the base's missing rows
        for token in ("x", "<think>", "<|im_end|>", "foo"):
            reference = base_state[name][base_ids[token]] if token in base_ids else stand_in
            expected = reference.clone()
            for ref, weight in WEIGHTS.items():
                state, ids = sources[ref]
                if token in ids:
                    expected += weight * (state[name][ids[token]] - reference)
            torch.testing.assert_close(merged[name][out_ids[token]], expected, rtol=1e-5, atol=1e-6)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok("<think>foo<|im_end|>")["input_ids"] == [101, 103, 102]
    assert tok.chat_template == BASE_TEMPLATE
    added = {e["content"]: e for e in json.loads((out / "tokenizer.json").read_text())["added_tokens"]}
    assert added["<|im_end|>"]["special"] and not added["foo"]["special"]
    model = AutoModelForCausalLM.from_pretrained(str(out))
    with torch.no_grad():
        logits = model(**tok("hi<think>", return_tensors="pt")).logits
    assert logits.shape[-1] == 104 and torch.isfinite(logits).all()


def test_without_a_tokenizer_option_mismatched_vocabularies_are_an_error(models: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["merge", str(recipe(tmp_path, models)), str(tmp_path / "out"), "-q"])
    assert result.exit_code != 0 and not (tmp_path / "out").exists()
    assert "vocab mismatch" in result.output and "tokenizer: {source: union}" in result.output
    assert "Traceback" not in result.output


def test_validate_passes_union_and_warns_about_tokens_a_named_source_drops(models: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    union = validate_file(recipe(tmp_path, models, tokenizer={"source": "union"}))
    assert union.ok, union.to_json()
    assert not [c for c in union.checks if c.status == "warning"]
    base = validate_file(recipe(tmp_path, models, tokenizer_source="base"))
    assert base.ok, base.to_json()
    found = [c.message for c in base.checks if c.status == "warning" and c.check == "vocab"]
    assert len(found) == 2 and all("dropped" in line for line in found)
    assert any(line.startswith(f"2 token(s) of {models['a']} ") for line in found)


def test_permuted_tokenizer_is_matched_by_token_not_position(models: dict[str, Path], tmp_path: Path) -> None:
    data = {"merge_method": "linear", "tokenizer": {"source": "base"}, "parameters": {"weight": 1.0},
            "models": [{"model": str(models["base"])}, {"model": str(models["perm"])}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["merge", str(path), str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    merged, out_ids = rows_of(tmp_path / "out")
    (base_state, base_ids), (perm_state, perm_ids) = rows_of(models["base"]), rows_of(models["perm"])
    assert perm_ids["a"] == base_ids["b"]
    for token in ("a", "b", "c"):
        expected = (base_state["lm_head.weight"][base_ids[token]] + perm_state["lm_head.weight"][perm_ids[token]]) / 2
        torch.testing.assert_close(merged["lm_head.weight"][out_ids[token]], expected)


def test_chat_template_is_borrowed_only_when_the_base_has_none(models: dict[str, Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    build_tokenizer(bare)
    folders = [bare, models["b"], models["a"]]
    assert borrowed_chat_template(folders, 0) == {"chat_template.jinja": "{{ 'other template' }}"}
    assert borrowed_chat_template([models["base"], models["a"]], 0) == {}


def test_a_search_over_mismatched_vocabularies_fails_at_validation(models: dict[str, Path], tmp_path: Path) -> None:
    data = {"models": {"base": str(models["base"]), "sources": [str(models["a"]), str(models["b"])]},
            "search_space": {"name": "global", "merge_method": "task_arithmetic"},
            "strategy": {"name": "random"}, "fitness": {"name": "perplexity", "texts": ["hello world"]},
            "budget": {"evaluations": 2}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    report = validate_file(path)
    found = [c.message for c in report.problems if c.check == "vocab"]
    assert not report.ok and len(found) == 2
    assert all("a search cannot re-index vocabularies" in line for line in found)


def test_generation_config_takes_the_special_ids_of_the_tokenizer_source(models: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    import shutil

    base, other = tmp_path / "base", tmp_path / "a"
    shutil.copytree(models["base"], base)
    shutil.copytree(models["a"], other)
    (base / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 70, "eos_token_id": 71, "pad_token_id": 72, "max_new_tokens": 5}))
    (other / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 2]}))
    a_config = json.loads((other / "config.json").read_text())
    data = {"merge_method": "linear", "base_model": str(base), "tokenizer": {"source": str(other)},
            "models": [{"model": str(base), "parameters": {"weight": 0.5}},
                       {"model": str(other), "parameters": {"weight": 0.5}}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["merge", str(tmp_path / "r.yaml"), str(out), "-q"])
    assert result.exit_code == 0, result.output
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 5  # the config source's settings stay
    assert generation["eos_token_id"] == [1, 2]  # the tokenizer source's own generation ids
    for key in ("bos_token_id", "pad_token_id"):  # else its config's, never the config source's
        assert generation.get(key) == a_config.get(key)
        assert generation.get(key) not in (70, 72)
    # with the tokenizer from the config source, the file is copied as it is
    data["tokenizer"] = {"source": "base"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["merge", str(tmp_path / "r.yaml"), str(tmp_path / "out2"), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out2" / "generation_config.json").read_text())["eos_token_id"] == 71
