"""Compile a MergePlan into per-tensor tasks, from checkpoint headers alone.

The compiled form is what both executors consume: ``evomerge merge`` streams it to disk, an evaluator
actor replays it into its resident model for every candidate. Compilation follows mergekit's planner so
that mergekit recipes mean the same thing here: a ``models:`` recipe is one slice spanning every layer
(the base model is added as an input when it is not listed); embeddings come from the first slice's
sources and the final norm / LM head from the last slice's, with depth ``t = 0``; inside a slice, layer
``i`` of ``n`` has ``t = i / (n - 1)``. Every incompatibility (missing tensor, shape or vocabulary
mismatch, architecture mismatch, unknown parameter) is found here, before any tensor is read. With a
``tokenizer`` option and the sources' vocabularies, embedding and LM-head tasks are marked for re-indexing
to one output vocabulary (:mod:`evomerge.merge.vocab_union`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evomerge.errors import ConfigError, IncompatibleModelsError
from evomerge.layout import ModelLayout, is_vocab_tensor, layer_count_key, layer_fraction, rename_layer
from evomerge.merge.operator import OperatorSpec, get_operator
from evomerge.merge.params import ResolvedParams, Settings, resolve
from evomerge.merge.vocab_union import VocabPlan, output_config, plan_vocabulary
from evomerge.merge.vocabulary import Vocabulary
from evomerge.plan import InputSlice, MergePlan, OutputSlice, Override


@dataclass(frozen=True)
class SourceInfo:
    """What the planner needs to know of a source model: tensor shapes and its config."""

    ref: str
    shapes: Mapping[str, tuple[int, ...]]
    config: Mapping[str, Any]
    dtypes: Mapping[str, str] = field(default_factory=dict)
    """Tensor name → dtype name (``torch.float32`` ...); tensors not listed are taken as floating point."""
    vocab: Vocabulary | None = None
    """Its tokenizer's token → id map; needed only to re-index vocabularies (``tokenizer.source``)."""

    @property
    def layout(self) -> ModelLayout:
        return ModelLayout.from_shapes(self.shapes, self.config)


@dataclass(frozen=True)
class TensorTask:
    out_name: str
    method: str
    inputs: tuple[tuple[int, str], ...]
    """(source index, tensor name) of each operator input, in operator order (base excluded)."""
    base: tuple[int, str] | None
    params: ResolvedParams
    shape: tuple[int, ...]
    layer: int | None
    seed: int
    floating: bool = True
    """Integer/bool tensors (buffers, ids) are copied from the first input instead of merged."""
    vocab: bool = False
    """Rows are token ids to re-index to the output vocabulary (``CompiledMerge.vocab``) before merging."""


@dataclass
class CompiledMerge:
    sources: list[str]
    tasks: list[TensorTask]
    out_config: dict[str, Any]
    config_source: int
    tokenizer_source: int | None
    operators: dict[str, OperatorSpec]
    vocab: VocabPlan | None = None
    """Set when the sources' vocabularies differ and a tokenizer option maps them onto one."""

    def input_names(self, source: int) -> set[str]:
        names = {n for t in self.tasks for s, n in t.inputs if s == source}
        names |= {t.base[1] for t in self.tasks if t.base is not None and t.base[0] == source}
        return names


def tensor_seed(plan_seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{plan_seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _normalised_slices(plan: MergePlan, infos: Mapping[str, SourceInfo]) -> list[OutputSlice]:
    if plan.slices:
        return list(plan.slices)
    assert plan.models is not None
    sources = [
        InputSlice(model=m.model, layer_range=(0, max(1, infos[m.model].layout.num_layers)), parameters=m.parameters)
        for m in plan.models
    ]
    if plan.base_model and all(m.model != plan.base_model for m in plan.models):
        n = max(1, infos[plan.base_model].layout.num_layers)
        sources.append(InputSlice(model=plan.base_model, layer_range=(0, n)))
    lengths = {s.layer_range[1] for s in sources}
    if len(lengths) > 1:
        detail = ", ".join(f"{s.model}: {s.layer_range[1]}" for s in sources)
        raise IncompatibleModelsError(f"models have different numbers of layers ({detail}); use 'slices' to combine them")
    return [OutputSlice(sources=sources)]


def _check_architectures(plan: MergePlan, infos: Mapping[str, SourceInfo]) -> None:
    def arch(info: SourceInfo) -> tuple[str, ...]:
        archs = info.config.get("architectures") or []
        return (str(info.config.get("model_type", "")), *[str(a) for a in archs])

    refs = plan.source_models()
    first = refs[0]
    for ref in refs[1:]:
        if arch(infos[ref]) != arch(infos[first]):
            a = infos[first].config.get("architectures") or infos[first].config.get("model_type")
            b = infos[ref].config.get("architectures") or infos[ref].config.get("model_type")
            raise IncompatibleModelsError(f"architecture mismatch: {first} is {a}, {ref} is {b}")


def _override_for(overrides: Sequence[Override], name: str, layer: int | None) -> Override | None:
    for ov in overrides:
        if ov.filter is not None and ov.filter not in name:
            continue
        if ov.layers is not None and (layer is None or not (ov.layers[0] <= layer < ov.layers[1])):
            continue
        return ov
    return None


class _Compiler:
    def __init__(self, plan: MergePlan, infos: Mapping[str, SourceInfo]) -> None:
        self.plan = plan
        self.infos = infos
        self.refs = plan.source_models()
        self.index = {ref: i for i, ref in enumerate(self.refs)}
        self.tasks: list[TensorTask] = []
        self.operators: dict[str, OperatorSpec] = {}
        self.out_layer = 0
        self.vocab: VocabPlan | None = None

    def operator(self, name: str, path: str) -> OperatorSpec:
        if name not in self.operators:
            spec = get_operator(name, path)
            self._check_params(spec, path)
            # tasks carry spec.name; a dotted-path lookup name ('pkg.mod:fn') must resolve too
            self.operators[name] = self.operators[spec.name] = spec
        return self.operators[name]

    def _check_params(self, spec: OperatorSpec, path: str) -> None:
        known = set(spec.param_names())

        def check(params: Mapping[str, Any] | None, where: str) -> None:
            for key in params or {}:
                if key not in known:
                    listing = ", ".join(sorted(known)) or "none"
                    raise ConfigError(f"{where}: {spec.name} has no parameter {key!r} (its parameters: {listing})")

        if path == "merge_method":
            check(self.plan.parameters, "parameters")
            for i, m in enumerate(self.plan.models or []):
                check(m.parameters, f"models.{i}.parameters")
            for j, sl in enumerate(self.plan.slices or []):
                check(sl.parameters, f"slices.{j}.parameters")
                for i, src in enumerate(sl.sources):
                    check(src.parameters, f"slices.{j}.sources.{i}.parameters")
        for k, ov in enumerate(self.plan.overrides or []):
            if ov.merge_method == spec.name:
                check(ov.parameters, f"overrides.{k}.parameters")
                for ref, params in (ov.models or {}).items():
                    check(params, f"overrides.{k}.models.{ref}")

    def add(self, name: str, sources: Sequence[InputSlice], src_names: Sequence[str], sl: OutputSlice,
            layer: int | None, t: float) -> None:
        ov = _override_for(self.plan.overrides or [], name, layer)
        method = ov.merge_method if ov else self.plan.merge_method
        spec = self.operator(method, "overrides" if ov else "merge_method")
        base_ref = sl.base_model or self.plan.base_model
        shapes = [self._shape(s.model, n) for s, n in zip(sources, src_names)]
        vocab = self.vocab if self.vocab is not None and name in self.vocab.tensors else None
        rows = 1 if vocab else 0  # re-indexed tensors may differ in their first (token) dimension only
        for s, n, shape in zip(sources[1:], src_names[1:], shapes[1:]):
            if shape[rows:] != shapes[0][rows:] or len(shape) != len(shapes[0]):
                raise IncompatibleModelsError(self._mismatch(name, sources[0].model, src_names[0], shapes[0], s.model, n, shape))
        if vocab is not None:
            if "statistics" in spec.param_names():
                raise ConfigError(f"merge method {spec.name!r} reads per-model statistics shaped like each model's own "
                                  f"vocabulary, so it cannot merge re-indexed rows ({name}); give the embeddings another "
                                  "method with an override (filter: embed_tokens / lm_head)", "tokenizer.source")
            shapes[0] = (vocab.size, *shapes[0][1:])
        entries = list(zip(sources, src_names))
        base: tuple[int, str] | None = None
        if spec.base in ("required", "optional") and base_ref is not None:
            for s, n in entries:
                if s.model == base_ref:
                    base = (self.index[s.model], n)
            entries = [(s, n) for s, n in entries if s.model != base_ref]
        elif spec.base == "forbidden" and base_ref is not None:
            raise ConfigError(f"merge method {spec.name!r} does not take a base_model", "base_model")
        if spec.base == "required" and base is None:
            raise ConfigError(f"merge method {spec.name!r} needs a base_model", "base_model")
        if len(entries) < spec.min_models or (spec.max_models is not None and len(entries) > spec.max_models):
            want = f"{spec.min_models}" + ("" if spec.max_models == spec.min_models else f"..{spec.max_models or 'any'}")
            raise ConfigError(f"merge method {spec.name!r} takes {want} non-base model(s), got {len(entries)}", "models")

        ov_shared: Settings = ov.parameters if ov else None
        shared: list[Settings] = [ov_shared, sl.parameters, self.plan.parameters]
        model_sources = []
        for s, _ in entries:
            own = (ov.models or {}).get(s.model) if ov else None
            model_sources.append([own, s.parameters, *shared])
        base_sources = None
        if base is not None:
            base_slice = next(s for s in sources if s.model == base_ref)
            base_sources = [(ov.models or {}).get(base_slice.model) if ov else None, base_slice.parameters, *shared]
        params = resolve(
            spec.params, dialect=self.plan.dialect, tensor_name=name, t=t,
            shared_sources=shared, model_sources=model_sources, base_sources=base_sources, where=name,
        )
        dtype = self.infos[sources[0].model].dtypes.get(src_names[0], "float")
        self.tasks.append(TensorTask(
            out_name=name, method=spec.name,
            inputs=tuple((self.index[s.model], n) for s, n in entries), base=base, params=params,
            shape=shapes[0], layer=layer, seed=tensor_seed(self.plan.seed, name), floating="float" in dtype,
            vocab=vocab is not None,
        ))

    def _shape(self, ref: str, name: str) -> tuple[int, ...]:
        shape = self.infos[ref].shapes.get(name)
        if shape is None:
            raise IncompatibleModelsError(f"tensor {name!r} is missing from {ref}")
        return tuple(shape)

    @staticmethod
    def _mismatch(out: str, a: str, an: str, sa: tuple[int, ...], b: str, bn: str, sb: tuple[int, ...]) -> str:
        msg = f"shape mismatch at tensor {out!r}: {a} has {list(sa)}, {b} has {list(sb)}"
        if an != out or bn != out:
            msg += f" (source tensors {an!r} and {bn!r})"
        if len(sa) == len(sb) == 2 and sa[1] == sb[1] and sa[0] != sb[0] and is_vocab_tensor(out):
            msg += ("; the vocabularies differ: set 'tokenizer: {source: union}' to merge into the union of the "
                    "vocabularies (each model's embedding and LM-head rows re-indexed by token)")
        return msg


def compile_plan(plan: MergePlan, infos: Mapping[str, SourceInfo]) -> CompiledMerge:
    """Tasks for every output tensor, in network order; raises on any incompatibility."""
    missing = [ref for ref in plan.source_models() if ref not in infos]
    if missing:
        raise ConfigError(f"no checkpoint information for {missing[0]!r}")
    _check_architectures(plan, infos)
    c = _Compiler(plan, infos)
    c.operator(plan.merge_method, "merge_method")
    for ov in plan.overrides or []:
        c.operator(ov.merge_method, "overrides")
    slices = _normalised_slices(plan, infos)
    first, last = slices[0].sources, slices[-1].sources
    config_ref = plan.base_model or first[0].model
    tokenizer_source = _tokenizer_source(plan, c.index, config_ref)
    c.vocab = plan_vocabulary(plan, [infos[ref] for ref in c.refs], tokenizer_source)
    layout0 = infos[first[0].model].layout
    for info in layout0.tensors:
        if info.position == "pre":
            c.add(info.name, first, [info.name] * len(first), slices[0], None, 0.0)
    for sl in slices:
        lead = infos[sl.sources[0].model].layout
        n = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
        for offset in range(n):
            src_layer = sl.sources[0].layer_range[0] + offset
            template = lead.layer_tensors(src_layer)
            if not template and lead.num_layers == 0 and not plan.slices:
                break  # a model without numbered blocks (nn.Sequential, a small CNN): only pre/post tensors
            if not template:
                raise IncompatibleModelsError(f"{sl.sources[0].model} has no layer {src_layer}")
            t = layer_fraction(offset, n)
            for info in template:
                names = [rename_layer(info.name, s.layer_range[0] + offset) for s in sl.sources]
                c.add(rename_layer(info.name, c.out_layer), sl.sources, names, sl, c.out_layer, t)
            c.out_layer += 1
    layout_last = infos[last[0].model].layout
    for info in layout_last.tensors:
        if info.position == "post":
            c.add(info.name, last, [info.name] * len(last), slices[-1], None, 0.0)

    out_config = dict(infos[config_ref].config)
    if plan.slices:
        out_config[layer_count_key(out_config)] = c.out_layer
    if c.vocab is not None:
        other = c.refs[tokenizer_source] if tokenizer_source != c.index[config_ref] else None
        out_config = output_config(out_config, c.vocab, infos[other].config if other is not None else None)
    return CompiledMerge(c.refs, c.tasks, out_config, c.index[config_ref], tokenizer_source, c.operators, c.vocab)


def _tokenizer_source(plan: MergePlan, index: Mapping[str, int], config_ref: str) -> int:
    """The source whose tokenizer the output gets (for ``union``: the one it extends)."""
    tok = plan.tokenizer_choice()
    if tok is None or tok in ("base", "union"):
        return index[config_ref]
    if tok not in index:
        raise ConfigError(f"tokenizer source {tok!r} is not one of the recipe's models (nor 'base' or 'union')",
                          "tokenizer.source")
    return index[tok]
