"""One output vocabulary for models whose tokenizers differ, and where each model's rows go in it.

``tokenizer.source`` picks the output vocabulary. ``union``: the base model's tokenizer with every token
keeping its id, then the tokens the other models add, model by model in recipe order and each model's
in its own id order (so the result never depends on dict or set ordering). ``base`` or a model's name:
that model's vocabulary, tokens it lacks dropped (the user asked for that tokenizer). Rows are matched by
token string, never by position, so tokenizers that number the same tokens differently merge correctly
too. A model *has* a token when its tokenizer knows it and its embedding has a row at that id.

Pure Python (no torch): the planner calls it from headers and tokenizer files; the rows themselves are
moved by :mod:`evomerge.merge.vocab_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from evomerge.errors import ConfigError, IncompatibleModelsError
from evomerge.layout import is_vocab_tensor, layer_of
from evomerge.merge.vocabulary import Vocabulary
from evomerge.plan import MergePlan

TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


class VocabSource(Protocol):
    """What the vocabulary planner reads of a source (the planner's ``SourceInfo``)."""

    @property
    def ref(self) -> str: ...

    @property
    def shapes(self) -> Mapping[str, tuple[int, ...]]: ...

    @property
    def config(self) -> Mapping[str, Any]: ...

    @property
    def vocab(self) -> Vocabulary | None: ...


@dataclass(frozen=True)
class NewToken:
    """A token the output tokenizer gets on top of the one it extends (``union`` only)."""

    token: str
    id: int
    source: int
    """Index (in the compiled merge's sources) of the first model that has it."""
    settings: Mapping[str, Any] | None
    """Its added-token settings in that model (``special`` ...); None for a token of the model's own vocabulary."""


@dataclass(frozen=True, eq=False)
class VocabPlan:
    """How the vocabulary tensors of every source map onto the output's rows."""

    size: int
    """Rows of the output's vocabulary tensors (the output ``vocab_size``)."""
    rows: tuple[tuple[int, ...], ...]
    """Per source: output row → that source's row, -1 where the source lacks the token (or no token has the row)."""
    token_rows: tuple[tuple[int, ...], ...]
    """Per source: its rows that carry a token (what ``new_rows: mean`` averages)."""
    tensors: frozenset[str]
    new_rows: str
    target: int
    """Index of the source whose tokenizer the output has (and, for ``union``, extends with :attr:`added`)."""
    added: tuple[NewToken, ...] = ()
    dropped: tuple[int, ...] = ()
    """Per source: tokens with a row that the output vocabulary lacks (only ever non-zero for ``base``/a model)."""


def vocab_tensors(shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """Names of the tensors whose first dimension is the vocabulary (embeddings, LM head).

    With ``tie_word_embeddings`` the checkpoint usually holds the input embedding only; when it holds
    both, both are re-indexed alike and stay equal.
    """
    return [
        n for n, s in shapes.items()
        if layer_of(n) is None and len(s) in (1, 2) and is_vocab_tensor(n)
    ]


def vocab_rows(source: VocabSource) -> int | None:
    """How many rows the source's vocabulary tensors have (None: it has none)."""
    names = vocab_tensors(source.shapes)
    counts = {int(source.shapes[n][0]) for n in names}
    if len(counts) > 1:
        detail = ", ".join(f"{n} {list(source.shapes[n])}" for n in names)
        raise IncompatibleModelsError(f"{source.ref}: its vocabulary tensors have different numbers of rows ({detail})")
    return counts.pop() if counts else None


def _padded(size: int, multiple: int | None) -> int:
    return size if not multiple else -(-size // multiple) * multiple


def plan_vocabulary(plan: MergePlan, sources: Sequence[VocabSource], target: int) -> VocabPlan | None:
    """The re-indexing a plan needs, or None when every model already shares the output's rows.

    ``target`` is the source whose tokenizer the output has (the base for ``union`` and ``base``). Without a
    tokenizer option nothing is re-indexed: differing vocabulary tensors are then a shape error, never a
    silent truncation.
    """
    choice = plan.tokenizer_choice()
    if choice is None:
        return None
    tok = plan.tokenizer
    if tok is not None and tok.tokens:
        raise ConfigError("tokenizer.tokens (per-token embedding sources) is not supported; remove it, rows of "
                          "tokens only some models have are merged from those models", "tokenizer.tokens")
    pad = tok.pad_to_multiple_of if tok is not None else None
    rows = [vocab_rows(s) for s in sources]
    if any(r is None for r in rows):
        return None  # a model without token embeddings: nothing to re-index
    counts = [int(r) for r in rows if r is not None]
    vocabs = [s.vocab for s in sources]
    same_rows = len(set(counts)) == 1 and _padded(counts[0], pad) == counts[0]
    lacking = [s.ref for s, v in zip(sources, vocabs) if v is None]
    if lacking:
        if same_rows:
            return None
        raise ConfigError(f"tokenizer source {choice!r}: re-indexing the vocabularies needs every model's tokenizer "
                          f"files; {lacking[0]} has none", "tokenizer.source")
    known = [v for v in vocabs if v is not None]
    if same_rows and all(v.same_ids(known[target]) for v in known):
        return None
    ids, added = _output_ids(known, counts, target, union=choice == "union")
    size = _padded(max(counts[target], max(ids.values(), default=-1) + 1), pad)
    row_maps, token_rows, dropped = [], [], []
    for vocab, n_rows in zip(known, counts):
        row_map = [-1] * size
        for token, out_id in ids.items():
            src = vocab.ids.get(token)
            if src is not None and src < n_rows:
                row_map[out_id] = src
        row_maps.append(tuple(row_map))
        token_rows.append(tuple(sorted({i for i in vocab.ids.values() if i < n_rows})))
        dropped.append(sum(1 for t, i in vocab.ids.items() if i < n_rows and t not in ids))
    names = frozenset(n for s in sources for n in vocab_tensors(s.shapes))
    new_rows = tok.new_rows if tok is not None else "mean"
    return VocabPlan(size, tuple(row_maps), tuple(token_rows), names, new_rows, target, tuple(added), tuple(dropped))


def _output_ids(vocabs: Sequence[Vocabulary], rows: Sequence[int], target: int,
                union: bool) -> tuple[dict[str, int], list[NewToken]]:
    """Token → output id: the target's vocabulary, then (``union``) the others' tokens it lacks."""
    ids = dict(vocabs[target].ids)
    added: list[NewToken] = []
    if not union:
        return ids, added
    next_id = max(ids.values(), default=-1) + 1
    for index, (vocab, n_rows) in enumerate(zip(vocabs, rows)):
        if index == target:
            continue
        for token, src in sorted(vocab.ids.items(), key=lambda kv: (kv[1], kv[0])):
            if src < n_rows and token not in ids:
                ids[token] = next_id
                added.append(NewToken(token, next_id, index, vocab.added.get(token)))
                next_id += 1
    return ids, added


def output_config(config: Mapping[str, Any], vocab: VocabPlan,
                  tokenizer_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config`` with the output's ``vocab_size`` (where the model keeps it) and, when the tokenizer comes
    from another model than the config (``tokenizer_config`` is that model's config), its special-token ids."""
    out = dict(config)
    text = out.get("text_config")
    if "vocab_size" not in out and isinstance(text, Mapping) and "vocab_size" in text:
        out["text_config"] = {**text, "vocab_size": vocab.size}
    else:
        out["vocab_size"] = vocab.size
    for key in TOKEN_ID_KEYS:
        if tokenizer_config is not None and key in tokenizer_config:
            out[key] = tokenizer_config[key]
    return out
