"""Conditional parameter lists that give every tensor exactly its intended value.

A plan's ``[{filter, value}, ...]`` list is resolved per tensor by the first entry whose filter is a
substring of the tensor's name (an entry without a filter matches everything). A space states its intent
as a *class* per tensor (its layer group's attention part, the LM head, one tensor of its own ...) and
candidate rules per class; :func:`ordered_rules` checks the rules against every tensor name of the layout
and puts exact-name guards in front for any tensor a rule would catch wrongly. Substring accidents (the
filter ``norm.weight`` inside ``post_attention_layernorm.weight``) therefore cannot send a value to the
wrong tensor, whatever the architecture's naming.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from evomerge.layout import TensorInfo
from evomerge.plan import ConditionalParameter, ParameterSetting, ScalarOrGradient

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Rule(Generic[K]):
    filter: str | None
    key: K

    def matches(self, name: str) -> bool:
        return self.filter is None or self.filter == "*" or self.filter in name  # as evaluate_setting


def first_key(rules: Sequence[Rule[K]], name: str) -> K | None:
    return next((r.key for r in rules if r.matches(name)), None)


def ordered_rules(key_of: Mapping[str, K], rules: Sequence[Rule[K]]) -> list[Rule[K]]:
    """``rules`` behind the exact-name guards needed for every name in ``key_of`` to reach its class.

    Guards are sorted longest first: a guard can only be caught first by a longer or equal filter that is
    a substring of its name, i.e. by itself, so each round fixes every name it guards and the loop ends.
    A rule whose filter equals a guard's is dropped: the guard shadows it completely.
    """
    guards: dict[str, K] = {}
    while True:
        ordered = [Rule(n, guards[n]) for n in sorted(guards, key=lambda n: (-len(n), n))]
        ordered += [r for r in rules if r.filter is None or r.filter not in guards]
        wrong = [n for n, key in key_of.items() if first_key(ordered, n) != key]
        if not wrong:
            return ordered
        guards.update((n, key_of[n]) for n in wrong)


def exact_rules(names: Sequence[tuple[str, K]]) -> list[Rule[K]]:
    """One rule per full tensor name, in the given (network) order; :func:`ordered_rules` then moves any
    name that a shorter one would catch to the front."""
    return [Rule(n, k) for n, k in names]


def inner_components(info: TensorInfo) -> list[str]:
    """Name parts between the layer index and the last part (``self_attn``, ``q_proj`` in Llama's
    ``model.layers.3.self_attn.q_proj.weight``): the candidates for role filters."""
    parts = info.name.split(".")
    index = str(info.layer)
    start = parts.index(index) + 1 if info.layer is not None and index in parts else 1
    return parts[start:-1]


def component_rules(classes: Sequence[tuple[K, Sequence[TensorInfo]]], key_of: Mapping[str, K]) -> list[Rule[K]]:
    """Short filters (``.self_attn.``, ``.attn.``, ``.mlp.``) for each class, derived from its tensors' names.

    A candidate ``.part.`` is kept only if every layout name containing it belongs to the class; a greedy
    cover picks the fewest such filters. Names left uncovered are fixed later by :func:`ordered_rules`.
    """
    rules: list[Rule[K]] = []
    for key, infos in classes:
        uncovered = {t.name for t in infos}
        depth: dict[str, int] = {}  # how far after the layer index a part sits: prefer containers
        for t in infos:
            for i, c in enumerate(inner_components(t)):
                depth[f".{c}."] = min(i, depth.get(f".{c}.", i))
        reach = {f: {n for n in key_of if f in n} for f in sorted(depth)}
        pure = {f: names for f, names in reach.items() if all(key_of[n] == key for n in names)}
        while uncovered:
            best = max(pure, key=lambda f: (len(pure[f] & uncovered), -depth[f], -len(f), f), default=None)
            if best is None or not pure[best] & uncovered:
                break
            rules.append(Rule(best, key))
            uncovered -= pure[best]
    return rules


def conditional(rules: Sequence[Rule[K]], values: Mapping[K, ScalarOrGradient]) -> ParameterSetting:
    """The plan value that resolves to ``values[class]`` for every tensor (a bare value if one rule)."""
    if len(rules) == 1 and rules[0].filter is None:
        return values[rules[0].key]
    return [ConditionalParameter(filter=r.filter, value=values[r.key]) for r in rules]
