"""Compatibility checks between source models, each finding one line naming the models and tensors.

Every model is compared with the first (the base when there is one): the merge planner walks the first
model's tensors, so that is the model whose names and shapes the others must match. Messages use the
planner's wording, so a problem reads the same whether ``validate`` or ``merge`` finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evomerge.layout import ModelLayout, is_vocab_tensor
from evomerge.preflight.headers import SourceHeaders
from evomerge.preflight.report import Check

MAX_LINES_PER_PAIR = 5
"""Shape mismatches listed one by one per pair of models; the rest are counted in one more line."""

VOCAB_FIX = ("set 'tokenizer: {source: union}' to merge into the union of the vocabularies (each model's embedding "
             "and LM-head rows are re-indexed by token)")
SEARCH_VOCAB_FIX = ("a search cannot re-index vocabularies (its evaluators rewrite one resident model in place): search "
                    "over models that share one tokenizer, or merge these with 'tokenizer: {source: union}' in a recipe")


def _arch(h: SourceHeaders) -> tuple[str, ...]:
    return (str(h.config.get("model_type", "")), *[str(a) for a in h.config.get("architectures") or []])


def same_architecture(heads: Sequence[SourceHeaders]) -> list[SourceHeaders]:
    """The first model and those of its architecture: comparing tensors across architectures is noise."""
    return [heads[0], *[h for h in heads[1:] if not h.config or _arch(h) == _arch(heads[0])]]


def architecture(heads: Sequence[SourceHeaders]) -> list[Check]:
    def shown(h: SourceHeaders) -> Any:
        return h.config.get("architectures") or h.config.get("model_type")

    out = [Check("files", "problem", f"{h.path / 'config.json'} is missing; the merged model needs a config",
                 {"model": h.ref}) for h in heads if not h.config]
    first = heads[0]
    out += [Check("architecture", "problem", f"architecture mismatch: {first.ref} is {shown(first)}, {h.ref} is {shown(h)}",
                  {"models": [first.ref, h.ref]}) for h in heads[1:] if h.config and _arch(h) != _arch(first)]
    if not out:
        out.append(Check("architecture", "ok", f"all {len(heads)} model(s) are {shown(first)}"))
    return out


def tensor_names(heads: Sequence[SourceHeaders]) -> list[Check]:
    first, out = heads[0], []
    for h in heads[1:]:
        missing = [n for n in first.shapes if n not in h.shapes]
        extra = [n for n in h.shapes if n not in first.shapes]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            out.append(Check("tensors", "problem", f"tensor {missing[0]!r} is missing from {h.ref}{more}",
                             {"model": h.ref, "missing": missing}))
        if extra:
            out.append(Check("tensors", "warning", f"{h.ref} has {len(extra)} tensor(s) that {first.ref} lacks, e.g. "
                             f"{extra[0]!r}; they are not merged", {"model": h.ref, "extra": extra}))
    if not out:
        out.append(Check("tensors", "ok", f"all model(s) have the same {len(first.shapes)} tensor names"))
    return out


def shapes(heads: Sequence[SourceHeaders]) -> list[Check]:
    """Shape mismatches of tensors both models have, vocabulary-sized rows left to :func:`vocab`."""
    first, out = heads[0], []
    in_network_order = [t.name for t in ModelLayout.from_shapes(first.shapes, first.config).tensors]
    for h in heads[1:]:
        bad = [n for n in in_network_order if n in h.shapes and h.shapes[n] != first.shapes[n] and not _vocab_row_change(
            n, first.shapes[n], h.shapes[n])]
        for n in bad[:MAX_LINES_PER_PAIR]:
            out.append(Check("shapes", "problem", f"shape mismatch at tensor {n!r}: {first.ref} has {list(first.shapes[n])}, "
                             f"{h.ref} has {list(h.shapes[n])}", {"tensor": n, "models": [first.ref, h.ref]}))
        if len(bad) > MAX_LINES_PER_PAIR:
            out.append(Check("shapes", "problem", f"... and {len(bad) - MAX_LINES_PER_PAIR} more shape mismatches "
                             f"between {first.ref} and {h.ref}", {"tensors": bad[MAX_LINES_PER_PAIR:]}))
    if not out:
        out.append(Check("shapes", "ok", "every shared tensor has the same shape in every model"))
    return out


def _vocab_row_change(name: str, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return is_vocab_tensor(name) and len(a) == len(b) == 2 and a[1] == b[1] and a[0] != b[0]


def _vocab_size(h: SourceHeaders) -> int | None:
    for cfg in (h.config, h.config.get("text_config") or {}):
        value = cfg.get("vocab_size") if isinstance(cfg, dict) else None
        if isinstance(value, int):
            return value
    rows = [s[0] for n, s in h.shapes.items() if is_vocab_tensor(n) and len(s) == 2]
    return rows[0] if rows else None


def vocab(heads: Sequence[SourceHeaders], fix: str = VOCAB_FIX, tokenizer_option: str | None = None) -> list[Check]:
    """Vocabulary sizes; a difference is a problem unless a tokenizer option re-indexes the rows."""
    first, out = heads[0], []
    for h in heads[1:]:
        rows = [n for n in first.shapes if n in h.shapes and _vocab_row_change(n, first.shapes[n], h.shapes[n])]
        va, vb = _vocab_size(first), _vocab_size(h)
        if not rows and va == vb:
            continue
        data = {"models": [first.ref, h.ref], "vocab_sizes": [va, vb], "tensors": rows}
        if tokenizer_option is not None:
            out.append(Check("vocab", "ok", f"vocab sizes differ ({first.ref}: {va}, {h.ref}: {vb}); tokenizer.source "
                             f"{tokenizer_option!r} re-indexes every model's embedding and LM-head rows by token", data))
            continue
        detail = ", ".join(f"{n} {list(first.shapes[n])} vs {list(h.shapes[n])}" for n in rows)
        out.append(Check("vocab", "problem", f"vocab mismatch: {first.ref} has vocab_size {va}, {h.ref} has {vb}"
                         f"{' (' + detail + ')' if detail else ''}; {fix}", data))
    if not out:
        out.append(Check("vocab", "ok", f"every model has vocab_size {_vocab_size(first)}"))
    return out


def dtypes(heads: Sequence[SourceHeaders], out_dtype: str | None) -> list[Check]:
    first, out = heads[0], []
    for h in heads[1:]:
        diff = [n for n in first.dtypes if n in h.dtypes and h.dtypes[n] != first.dtypes[n]]
        if diff:
            n = diff[0]
            written = out_dtype or f"{first.ref}'s dtype"
            out.append(Check("dtypes", "warning", f"dtype mismatch at {len(diff)} tensor(s), e.g. {n!r}: {first.ref} "
                             f"stores {first.dtypes[n]}, {h.ref} {h.dtypes[n]}; merged in float32 and written as "
                             f"{written} (set 'dtype' to choose)", {"models": [first.ref, h.ref], "tensors": diff}))
    if not out:
        kinds = sorted(set(first.dtypes.values()))
        out.append(Check("dtypes", "ok", f"every model stores {', '.join(kinds) or 'no tensors'}"))
    return out


def tokenizers(heads: Sequence[SourceHeaders], source: SourceHeaders, tokenizer_option: str | None = None) -> list[Check]:
    """Whether the tokenizer the output gets (``source``'s) is the one every model was trained with."""
    out = []
    if tokenizer_option is not None and source.tokenizer.fingerprint is not None:
        matched = [h.ref for h in heads if h.tokenizer.fingerprint not in (None, source.tokenizer.fingerprint)]
        if matched:
            return [Check("tokenizer", "ok", f"tokenizers differ ({', '.join(matched)} vs {source.ref}); tokenizer.source "
                          f"{tokenizer_option!r} matches embedding rows by token", {"models": [source.ref, *matched]})]
    if source.tokenizer.fingerprint is None:
        out.append(Check("tokenizer", "warning", f"{source.ref} has no tokenizer files, so the merged model will have "
                         "none; set 'tokenizer_source' to a model that has one", {"model": source.ref}))
    differ = [h for h in heads if h.tokenizer.fingerprint not in (None, source.tokenizer.fingerprint)]
    for h in differ:
        out.append(Check("tokenizer", "warning", f"tokenizer differs: {h.ref}'s token ids are not {source.ref}'s, whose "
                         "tokenizer the merged model gets; set 'tokenizer_source' to choose", {"models": [source.ref, h.ref]}))
    if not out:
        out.append(Check("tokenizer", "ok", f"the merged model gets {source.ref}'s tokenizer, shared by every model "
                         "that has one"))
    return out
