"""Pre-flight checks of a merge recipe or a search config, reading headers and configs only.

A file with ``merge_method`` is a recipe (what ``evomerge merge`` reads); one with ``search_space`` is a
search config. Both get the same source checks (files, format, architecture, tensor names, shapes,
dtypes, vocabulary, tokenizer) and a memory estimate; the recipe is then compiled by the merge planner,
and a search config's space is built by the same functions ``evomerge search`` uses, to report its size.
Every user mistake becomes a finding in the report, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evomerge.errors import EvomergeError
from evomerge.preflight import compare
from evomerge.preflight.headers import SourceHeaders, read_headers
from evomerge.preflight.memory import estimate, memory_checks
from evomerge.preflight.report import Check, Report
from evomerge.validation import load_yaml


def validate_file(path: str | Path, overrides: Sequence[str] = (), *, build_models: bool = True) -> Report:
    """Check the recipe or search config at ``path``; ``overrides`` are ``--set key=value`` items.

    ``build_models=False`` skips the search-space check of from-scratch configs, which builds the initial
    population: ``evomerge search`` builds it right after anyway, and should not pay for it twice.
    """
    path = Path(path)
    try:
        raw = load_yaml(path)
    except EvomergeError as exc:
        report = Report(str(path), "unknown")
        report.add("config", "problem", str(exc))
        return report
    if isinstance(raw, dict) and "search_space" in raw:
        return check_search_config(path, raw, overrides, build_models=build_models)
    if isinstance(raw, dict) and "merge_method" in raw:
        return check_recipe(path)
    report = Report(str(path), "unknown")
    report.add("config", "problem", f"{path}: neither a merge recipe (no 'merge_method') nor a search config "
               "(no 'search_space')")
    return report


def source_checks(heads: Sequence[SourceHeaders], *, per_tensor: bool, out_dtype: str | None,
                  tokenizer_source: SourceHeaders, tokenizer_option: str | None = None,
                  vocab_fix: str = compare.VOCAB_FIX) -> list[Check]:
    """Every compatibility check; ``per_tensor=False`` leaves names and shapes to the planner (slices)."""
    checks = compare.architecture(heads)
    alike = compare.same_architecture(heads)
    if per_tensor:
        checks += compare.tensor_names(alike) + compare.shapes(alike)
    checks += compare.vocab(alike, vocab_fix, tokenizer_option) + compare.dtypes(alike, out_dtype)
    checks += compare.tokenizers(heads, tokenizer_source, tokenizer_option)
    return checks


def _read_all(refs: Sequence[tuple[str, Path, str]], allow_pickle: bool, report: Report) -> list[SourceHeaders]:
    """Headers of the (ref, folder, field) sources that can be read; each one that cannot adds a finding."""
    heads: list[SourceHeaders] = []
    for ref, folder, field_path in refs:
        got = read_headers(ref, folder, field_path, allow_pickle)
        if isinstance(got, Check):
            report.checks.append(got)
        else:
            heads.append(got)
    if len(heads) == len(refs):
        report.add("files", "ok", f"{len(heads)} safetensors model folder(s) found: {', '.join(h.ref for h in heads)}")
    return heads


# ---------------------------------------------------------------------------------------------- recipes
def check_recipe(path: Path) -> Report:
    from evomerge.merge.planner import SourceInfo, compile_plan
    from evomerge.merge.to_disk import locate_model
    from evomerge.merge.vocabulary import read_vocabulary
    from evomerge.merge.whole_model import check_whole_model, whole_model_method
    from evomerge.plan import MergePlan

    report = Report(str(path), "recipe")
    try:
        plan = MergePlan.from_yaml(path)
    except EvomergeError as exc:
        report.add("config", "problem", str(exc))
        return report
    base_dir = path.resolve().parent
    if whole_model_method(plan.merge_method) is not None:  # PLeaS, FW, MoE: their own checks, not the planner's
        try:
            report.add("plan", "ok", check_whole_model(plan, base_dir))
        except EvomergeError as exc:
            report.add("plan", "problem", str(exc))
        return report
    refs = [(ref, Path(locate_model(ref, base_dir)).expanduser(), f"model {ref!r}") for ref in plan.source_models()]
    heads = _read_all(refs, plan.allow_pickle, report)
    if not heads:
        return report
    by_ref = {h.ref: h for h in heads}
    tok = plan.tokenizer_choice()
    tok_head = by_ref.get(tok or "", heads[0])
    checks = source_checks(heads, per_tensor=not plan.slices, out_dtype=plan.out_dtype or plan.dtype,
                           tokenizer_source=tok_head, tokenizer_option=tok)
    report.extend(checks)
    if report.ok and len(heads) < len(refs):
        report.add("plan", "warning", "the recipe is not compiled here: some models have no readable header "
                   "(pickle checkpoints); the merge itself checks them")
    elif report.ok:
        try:  # vocabularies only for a tokenizer option: the one case that re-indexes embeddings
            infos = {h.ref: SourceInfo(h.ref, h.shapes, h.config, {n: f"torch.{d}" for n, d in h.dtypes.items()},
                                       read_vocabulary(h.path) if tok is not None else None) for h in heads}
            compiled = compile_plan(plan, infos)
        except EvomergeError as exc:
            report.add("plan", "problem", str(exc))
        else:
            if compiled.vocab is not None:
                target = compiled.sources[compiled.vocab.target]
                for ref, n in zip(compiled.sources, compiled.vocab.dropped):
                    if n:
                        report.add("vocab", "warning", f"{n} token(s) of {ref} are not in {target}'s vocabulary, which "
                                   "the merged model gets: their rows are dropped (tokenizer.source: union keeps them)")
            report.add("plan", "ok", f"{plan.merge_method}: {len(compiled.tasks)} output tensors from "
                       f"{len(compiled.sources)} model(s)", tensors=len(compiled.tasks))
    report.extend(memory_checks(estimate(heads, None)))
    return report


# ---------------------------------------------------------------------------------------- search configs
def check_search_config(path: Path, raw: dict[str, Any], overrides: Sequence[str], *,
                        build_models: bool = True) -> Report:
    from evomerge.config import parse_config

    report = Report(str(path), "search")
    try:
        config = parse_config(raw, list(overrides), source=str(path))
    except EvomergeError as exc:
        report.add("config", "problem", str(exc))
        return report
    _check_strategy(config, report)
    models = config.models
    if models.generate is not None:
        report.add("files", "ok", f"models.generate ({models.generate.kind}): the sources are built (or taken from "
                   "the cache) when the search starts, so they and the search space are not checked here")
        return report
    if models.from_scratch is not None:
        if build_models:
            _check_space(config, path, report, None)
        return report
    base_dir = path.resolve().parent
    refs = [(r, _absolute(r, base_dir), f"models.sources.{i}") for i, r in enumerate(models.sources)]
    if models.base:
        refs.insert(0, (models.base, _absolute(models.base, base_dir), "models.base"))
    heads = _read_all(refs, models.allow_pickle, report)
    if not heads:
        return report
    report.extend(source_checks(heads, per_tensor=True, out_dtype=None, tokenizer_source=heads[0],
                                vocab_fix=compare.SEARCH_VOCAB_FIX))
    if report.ok:
        _check_space(config, path, report, heads)
    res = config.resources
    actors = res.actors if res.pool == "ray" else 1
    gpus = res.gpus_per_actor if res.device != "cpu" else 0.0
    report.extend(memory_checks(estimate(heads, models.dtype), actors=actors, gpus_per_actor=gpus))
    return report


def _absolute(ref: str, base_dir: Path) -> Path:
    """A config's model path as ``evomerge search`` resolves it: relative to the config's folder."""
    p = Path(ref).expanduser()
    return p if p.is_absolute() else base_dir / p


def _check_strategy(config: Any, report: Report) -> None:
    from evomerge.strategies.base import get_strategy
    from evomerge.validation import validate_model

    try:
        cls = get_strategy(str(config.strategy["name"]))
        validate_model(cls.Config, dict(config.strategy), prefix="strategy")
    except EvomergeError as exc:
        report.add("config", "problem", str(exc))


def _check_space(config: Any, path: Path, report: Report, heads: Sequence[SourceHeaders] | None) -> None:
    """Build the space as ``evomerge search`` does (headers only) and report its size; compile its start."""
    from evomerge.merge.planner import SourceInfo, compile_plan
    from evomerge.search import resolve_sources
    from search_spaces import build_space

    try:
        sources = resolve_sources(config, path.resolve().parent)
        space = build_space(config.search_space, sources.refs, sources.base, sources.layout,
                            initial_vectors=sources.initial_vectors or None)
    except EvomergeError as exc:
        report.add("search space", "problem", str(exc))
        return
    choices = " x ".join(str(n) for n in space.n_choices)
    combos = math.prod(space.n_choices)
    cats = f", {len(space.cat_dims)} categorical ({choices} = {combos} combinations)" if space.cat_dims else ""
    report.add("search space", "ok", f"{space.name}: {space.dimension} float dimension(s){cats}",
               dimension=space.dimension, n_choices=space.n_choices)
    plan = space.decode(space.start())
    if plan is None or heads is None:
        return
    infos = {ref: SourceInfo(ref, h.shapes, h.config, {n: f"torch.{d}" for n, d in h.dtypes.items()})
             for ref, h in zip([*([sources.base] if sources.base else []), *sources.refs], heads)}
    try:
        compiled = compile_plan(plan, infos)
    except EvomergeError as exc:
        report.add("plan", "problem", f"the search's starting plan does not compile: {exc}")
        return
    report.add("plan", "ok", f"the starting plan ({plan.merge_method}) compiles to {len(compiled.tasks)} output tensors")
