"""Conditional-filter construction: every tensor must reach its class under first-match substring rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from evomerge.merge.params import evaluate_setting
from evomerge.plan import ConditionalParameter
from search_spaces.filters import Rule, component_rules, conditional, exact_rules, first_key, ordered_rules
from search_spaces.layerwise import slot_of
from tests.unit.test_search_spaces_support import make_layout


def test_a_shorter_name_inside_a_longer_one_gets_a_guard() -> None:
    key_of = {"h.0.post_norm.weight": "layer", "norm.weight": "post"}
    rules = ordered_rules(key_of, [*exact_rules([("norm.weight", "post")]), Rule(None, "layer")])
    assert rules[0] == Rule("h.0.post_norm.weight", "layer")  # the victim is caught by its own name first
    assert all(first_key(rules, n) == k for n, k in key_of.items())


def test_exact_rules_need_no_guard_when_no_name_contains_another() -> None:
    key_of = {"a.x": 0, "b.y": 1, "c.z": 2}
    assert ordered_rules(key_of, exact_rules(list(key_of.items()))) == exact_rules(list(key_of.items()))


def test_a_guard_replaces_the_rule_with_the_same_filter() -> None:
    key_of = {"a.b": 1, "x.a.b": 2}
    rules = ordered_rules(key_of, exact_rules(list(key_of.items())))
    assert [r.filter for r in rules] == ["x.a.b", "a.b"]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text("ab.", min_size=1, max_size=6), st.integers(0, 3), min_size=1, max_size=12),
    st.lists(st.tuples(st.text("ab.", min_size=1, max_size=3), st.integers(0, 3)), max_size=5),
    st.one_of(st.none(), st.integers(0, 3)),
)
def test_any_rules_become_correct(key_of: dict[str, int], candidates: list[tuple[str, int]], default: int | None) -> None:
    """Whatever the candidate filters (even wrong ones) and the name collisions, every name resolves right."""
    rules = [Rule(f, k) for f, k in candidates] + ([Rule(None, default)] if default is not None else [])
    ordered = ordered_rules(key_of, rules)
    assert all(first_key(ordered, n) == k for n, k in key_of.items())


def _role_filters(arch: str) -> dict[str, set[str | None]]:
    layout = make_layout(arch, 3)
    key_of = {t.name: slot_of(t) if t.layer is not None else "rest" for t in layout.tensors}
    in_layers = [t for t in layout.tensors if t.layer is not None]
    classes = [(s, [t for t in in_layers if slot_of(t) == s]) for s in ("attn", "mlp")]
    rules = component_rules(classes, key_of)
    out: dict[str, set[str | None]] = {"attn": set(), "mlp": set()}
    for r in rules:
        out[r.key].add(r.filter)
    ordered = ordered_rules(key_of, [*rules, Rule(None, "rest")])
    assert all(first_key(ordered, n) == k for n, k in key_of.items())
    assert ordered[: len(rules)] == rules  # no guard was needed
    return out


def test_role_filters_are_derived_from_each_architecture() -> None:
    assert _role_filters("llama") == {"attn": {".self_attn."}, "mlp": {".mlp."}}
    assert _role_filters("gpt2") == {"attn": {".attn."}, "mlp": {".mlp."}}
    # ".out." is shared by attention and MLP tensors, so it is never chosen
    assert _role_filters("collide") == {"attn": {".attn."}, "mlp": {".mlp."}}


def test_conditional_resolves_through_evaluate_setting() -> None:
    rules = [Rule("lm_head", "head"), Rule(None, "rest")]
    setting = conditional(rules, {"head": 0.25, "rest": [1.0, 2.0, 3.0]})
    assert setting == [ConditionalParameter(filter="lm_head", value=0.25), ConditionalParameter(value=[1.0, 2.0, 3.0])]
    assert evaluate_setting("lm_head.weight", setting, 0.0, float) == 0.25
    assert evaluate_setting("model.layers.1.mlp.weight", setting, 0.5, float) == 2.0
    assert conditional([Rule(None, "all")], {"all": 0.5}) == 0.5  # one catch-all rule: a bare value
