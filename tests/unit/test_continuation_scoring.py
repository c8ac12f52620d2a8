"""Continuation-only output head: the same loglikelihood answers as lm-eval's HFLM, request for request."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fitness.harness.continuation_scoring import HEAD_ROWS_MIN, HeadGather, is_argmax, score_requests
from fitness.harness.suite_lm import suite_hflm
from tests.fitness_fixtures import scramble_, tiny_lm

pytestmark = pytest.mark.filterwarnings("ignore")

Request = tuple[tuple[str, str], list[int], list[int]]


@functools.cache
def shared_lm(arch: str) -> Any:
    """One HFLM per architecture for the module (building one per hypothesis example would be slow)."""
    model, tok = tiny_lm(5, arch=arch)
    scramble_(model, seed=11, scale=0.3)
    return suite_hflm(token_cache=False, continuation_logits=True, pretrained=model, tokenizer=tok, batch_size=4)


def hflm_answers(lm: Any, requests: list[Request]) -> list[tuple[float, bool]]:
    """lm-eval's own ``_loglikelihood_tokens`` on the same HFLM (the reference)."""
    lm.continuation_logits = False
    try:
        return lm._loglikelihood_tokens(list(requests), disable_tqdm=True)
    finally:
        lm.continuation_logits = True


def request(context: list[int], continuation: list[int]) -> Request:
    return ((str(context), str(continuation)), list(context), list(continuation))


# Contexts share prefixes and continuations share first tokens, so HFLM's one-token grouping (including
# groups whose members split context and continuation differently) is exercised.
token = st.integers(3, 6)
requests_st = st.lists(
    st.tuples(st.lists(token, min_size=1, max_size=9), st.lists(token, min_size=1, max_size=3)),
    min_size=1,
    max_size=14,
)


@settings(max_examples=25, deadline=None)
@given(pairs=requests_st, batch_size=st.integers(1, 5), logits_cache=st.booleans(), arch=st.sampled_from(["llama", "gpt2"]))
def test_answers_equal_hflms_own(pairs: list[tuple[list[int], list[int]]], batch_size: int, logits_cache: bool, arch: str) -> None:
    lm = shared_lm(arch)
    lm.batch_size_per_gpu, lm.logits_cache = batch_size, logits_cache
    requests = [request(c, x) for c, x in pairs]
    assert score_requests(lm, requests, HeadGather(lm.model)) == hflm_answers(lm, requests)


def test_grouped_continuations_of_different_lengths_keep_lm_evals_reading() -> None:
    lm = shared_lm("llama")
    lm.batch_size_per_gpu, lm.logits_cache = 4, True
    # all three share the model row [5, 6, 7, 8, .]: one 2-token and two 1-token continuations
    requests = [request([5, 6, 7], [8, 9]), request([5, 6, 7, 8], [4]), request([5, 6, 7, 8], [3])]
    ours = score_requests(lm, requests, HeadGather(lm.model))
    assert ours == hflm_answers(lm, requests)
    assert len({logprob for logprob, _ in ours}) == 3


def test_contexts_longer_than_the_model_are_truncated_as_hflm_does() -> None:
    lm = shared_lm("llama")
    lm.batch_size_per_gpu, lm.logits_cache = 2, True
    long = [3 + i % 4 for i in range(lm.max_length + 20)]
    requests = [request(long, [4, 5]), request(long[:30], [6])]
    assert score_requests(lm, requests, HeadGather(lm.model)) == hflm_answers(lm, requests)


def head_inputs(lm: Any, requests: list[Request]) -> list[tuple[int, ...]]:
    """The shapes of the hidden states the output head is called with while scoring ``requests``."""
    seen: list[tuple[int, ...]] = []
    head = lm.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, args, _o: seen.append(tuple(args[0].shape)))
    try:
        score_requests(lm, requests, HeadGather(lm.model))
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize(
    ("conts", "head_rows"),
    [
        ([[5, 6, 3, 4]] * 5, 20),  # 5 rows of 10 positions: the head gets the 20 continuation positions
        ([[5]] * 4 + [[6, 6]], HEAD_ROWS_MIN),  # only 6 wanted: padded up to HEAD_ROWS_MIN
    ],
)
def test_head_sees_only_the_continuation_positions(conts: list[list[int]], head_rows: int) -> None:
    lm = shared_lm("llama")
    lm.batch_size_per_gpu, lm.logits_cache = 8, False
    requests = [request([3 + i % 4] * 6 + [4], c) for i, c in enumerate(conts)]
    assert head_inputs(lm, requests) == [(1, head_rows, lm.model.config.hidden_size)]
    assert score_requests(lm, requests, HeadGather(lm.model)) == hflm_answers(lm, requests)


def test_a_batch_of_few_positions_gets_full_logits() -> None:
    lm = shared_lm("llama")
    lm.batch_size_per_gpu, lm.logits_cache = 8, False
    requests = [request([3, 4, 5], [6]), request([4, 4], [3, 3])]  # 2 rows x 3 positions
    assert head_inputs(lm, requests) == [(2, 3, lm.model.config.hidden_size)]


def test_falls_back_to_full_logits_without_an_output_head(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = shared_lm("gpt2")
    lm.batch_size_per_gpu, lm.logits_cache = 3, True
    requests = [request([3, 4, 5], [6]), request([3, 4, 5], [5]), request([6, 6], [3, 4])]
    expected = hflm_answers(lm, requests)
    monkeypatch.setattr(lm.model, "get_output_embeddings", lambda: None)
    head = HeadGather(lm.model)
    assert not head.usable
    assert score_requests(lm, requests, head) == expected


def test_a_model_that_reshapes_its_logits_turns_gathering_off(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = shared_lm("llama")
    lm.batch_size_per_gpu, lm.logits_cache = 8, True
    requests = [request([3, 4, 5, 6] * 3, [6, 5, 4]), request([3, 4] * 5, [5, 5]), request([6] * 9, [3, 4] * 3)]
    expected = hflm_answers(lm, requests)
    plain = lm._model_call

    def reshaping(inputs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return plain(inputs, **kwargs).reshape(inputs.shape[0], inputs.shape[1], -1)

    monkeypatch.setattr(lm, "_model_call", reshaping)
    head = HeadGather(lm.model)
    assert score_requests(lm, requests, head) == expected
    assert head.broken and not head.usable


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.lists(st.sampled_from([0.0, 1.0, 2.0, float("nan"), float("-inf")]), min_size=4, max_size=4),
                    min_size=1, max_size=5),
    data=st.data(),
)
def test_is_argmax_equals_argmax_with_ties_and_nans(values: list[list[float]], data: st.DataObject) -> None:
    table = torch.tensor(values)
    n = data.draw(st.integers(1, 8))
    positions = torch.tensor(data.draw(st.lists(st.integers(0, len(values) - 1), min_size=n, max_size=n)))
    tokens = torch.tensor(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    assert torch.equal(is_argmax(table, positions, tokens), table[positions].argmax(dim=-1) == tokens)
