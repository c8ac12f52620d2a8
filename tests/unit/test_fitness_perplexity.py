"""perplexity suite: sliding windows, and NLL checked against Hugging Face's own loss per window."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.errors import ConfigError
from fitness import build_suite
from fitness.perplexity import split_documents
from fitness.windows import plan_windows
from tests.fitness_fixtures import tiny_lm

TEXT = (
    "The quick brown fox jumps over the lazy dog.\n\n"
    "A second paragraph,\nwritten on two lines.\n\n\n"
    "Third: short.\n"
)


def hf_reference_nll(model: Any, ids: list[int], max_length: int, stride: int) -> float:
    """Summed NLL the way the Hugging Face perplexity guide computes it: one window at a time, labels masked."""
    total, prev_end = 0.0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        trg_len = end - prev_end
        window = torch.tensor([ids[begin:end]])
        labels = window.clone()
        labels[:, :-trg_len] = -100
        with torch.no_grad():
            out = model(window, labels=labels)
        scored = int((labels[:, 1:] != -100).sum())
        total += float(out.loss) * scored
        prev_end = end
        if end == len(ids):
            break
    return total


@settings(max_examples=80, deadline=None)
@given(length=st.integers(0, 300), max_length=st.integers(2, 64), data=st.data())
def test_windows_score_every_token_once_with_context(length: int, max_length: int, data: Any) -> None:
    stride = data.draw(st.integers(1, max_length))
    windows = plan_windows(0, length, max_length, stride)
    scored = [t for w in windows for t in range(w.first, w.end)]
    assert len(scored) == len(set(scored))
    assert all(w.end - w.begin <= max_length and w.begin < w.first for w in windows)
    if stride < max_length:
        assert scored == list(range(1, length))
        assert all(t - w.begin >= min(t, max_length - stride) for w in windows for t in range(w.first, w.end))
    else:  # non-overlapping chunks: each chunk's first token has no context
        assert scored == [t for t in range(1, length) if t % max_length != 0]


def test_document_units() -> None:
    assert split_documents(TEXT, "file") == [TEXT.strip()]
    assert split_documents(TEXT, "paragraph") == [
        "The quick brown fox jumps over the lazy dog.",
        "A second paragraph,\nwritten on two lines.",
        "Third: short.",
    ]
    assert len(split_documents(TEXT, "line")) == 4


@pytest.mark.parametrize(("max_length", "stride"), [(256, None), (16, 8), (16, 16), (12, 5)])
def test_nll_equals_hugging_face_reference(tmp_path: Path, max_length: int, stride: int | None) -> None:
    model, tok = tiny_lm(0)
    (tmp_path / "a.txt").write_text(TEXT)
    suite = build_suite(
        {"name": "perplexity", "paths": "a.txt", "max_length": max_length, "stride": stride, "batch_size": 3},
        base_dir=tmp_path,
    )
    result = suite(model, tok)
    docs = split_documents(TEXT, "paragraph")
    ids = [[tok.bos_token_id, *tok(d, add_special_tokens=False)["input_ids"]] for d in docs]
    step = stride or max_length
    nll = [hf_reference_nll(model, x, max_length, step) for x in ids]
    counts = [sum(w.end - w.first for w in plan_windows(0, len(x), max_length, step)) for x in ids]
    np.testing.assert_allclose(result.per_example, [-n / c for n, c in zip(nll, counts)], rtol=1e-5)  # type: ignore[arg-type]
    assert result.objectives["perplexity"] == pytest.approx(math.exp(sum(nll) / sum(counts)), rel=1e-5)
    assert result.metrics["n_tokens"] == sum(counts) and result.metrics["n_documents"] == 3


def test_batching_does_not_change_scores(tmp_path: Path) -> None:
    model, tok = tiny_lm(1, arch="gpt2")
    (tmp_path / "t.txt").write_text(TEXT * 3)
    results = [
        build_suite({"name": "perplexity", "paths": [str(tmp_path / "t.txt")], "batch_size": b, "max_length": 20, "stride": 7})(
            model, tok
        )
        for b in (1, 5)
    ]
    np.testing.assert_allclose(results[0].per_example, results[1].per_example, rtol=1e-5)  # type: ignore[arg-type]


def test_directory_fidelity_and_no_bos(tmp_path: Path) -> None:
    model, tok = tiny_lm(2)
    for i in range(8):
        (tmp_path / "docs" / f"d{i}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "docs" / f"d{i}.txt").write_text(f"document number {i} " * (i + 1))
    (tmp_path / "docs" / "ignored.md").write_text("not a text file")
    cfg = {"name": "perplexity", "paths": "docs", "unit": "file"}
    suite = build_suite(cfg, base_dir=tmp_path)
    full = suite(model, tok)
    assert full.metrics["n_documents"] == 8
    suite.set_fidelity(0.25)
    part = suite(model, tok)
    chosen = suite.subset("documents", 8)
    assert len(chosen) == 2
    np.testing.assert_allclose(part.per_example, full.per_example[chosen], rtol=1e-6)  # type: ignore[index, arg-type]
    (tmp_path / "one.txt").write_text("x\n\nlonger text")
    no_bos = build_suite({"name": "perplexity", "paths": "one.txt", "add_bos": False}, base_dir=tmp_path)(model, tok)
    assert no_bos.metrics["n_documents"] == 1 and no_bos.metrics["n_skipped_documents"] == 1


def test_missing_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"text file not found: {tmp_path / 'nope.txt'}"):
        build_suite({"name": "perplexity", "paths": ["nope.txt"]}, base_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no files matching"):
        build_suite({"name": "perplexity", "paths": "empty"}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="stride"):
        build_suite({"name": "perplexity", "paths": "x", "max_length": 8, "stride": 9}, base_dir=tmp_path)


def test_objective_direction_and_tokenizer_required(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(TEXT)
    suite = build_suite({"name": "perplexity", "paths": "a.txt"}, base_dir=tmp_path)
    assert [(o.name, o.direction) for o in suite.objectives()] == [("perplexity", "minimize")]
    with pytest.raises(ConfigError, match="tokenizer"):
        suite(tiny_lm(0)[0], None)
