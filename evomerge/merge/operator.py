"""The merge-operator contract and its registry.

An operator is a pure function on tensors: given the tensors of one weight from every input model (and
the base model's, when it uses one) plus that tensor's resolved parameters, it returns the merged tensor.
It never reads files, never keeps state between calls and draws randomness only from the
``torch.Generator`` it is handed (seeded from the plan's seed and the tensor's name), so the same plan
always gives the same weights, on disk in ``evomerge merge`` and in place inside an evaluator actor.

Operators that need a statistic over the whole model before any tensor is merged (a global magnitude
threshold, say) declare a :class:`GlobalPass`: the engine streams every tensor through it once first and
hands the result to every call as ``inputs.stats``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, overload

import torch

from evomerge.merge.params import ParamSpec, ResolvedParams
from evomerge.registry import Registry

BasePolicy = Literal["required", "optional", "forbidden", "ignored"]
"""``required``/``optional``: the base is passed apart from the inputs; ``forbidden``: a base is an error;
``ignored``: the operator has no notion of a base, which (when given) is merged as one more input."""


@dataclass
class MergeInputs:
    """Everything an operator sees for one output tensor."""

    tensors: Sequence[torch.Tensor]
    """One tensor per non-base input model, in recipe order, in the compute dtype (float32 unless the
    sources are float64). READ-ONLY: they may be memory-mapped views of the checkpoint files or the
    evaluator's resident copies; never modify them in place. A list, except for operators that declare
    ``streams_inputs``: they get a :class:`LazyTensors` that maps each input when it is read."""
    base: torch.Tensor | None
    name: str
    generator: torch.Generator | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    layer: int | None = None
    out: torch.Tensor | None = None
    """Optional buffer of the output's shape and compute dtype (never an input's storage) that an operator
    may write its result into and return: the executor reuses one for every tensor, which saves a fresh
    allocation (and its page faults) per weight. Operators that ignore it allocate as usual."""


class LazyTensors(Sequence[torch.Tensor]):
    """Input tensors loaded when read and never kept, for operators that consume them one at a time.

    A merge executor maps (and pre-faults) every input of a weight before the operator runs, so peak
    memory grows with the number of models even for an operator that only ever holds one task vector.
    Handing such an operator this sequence instead keeps one input mapped at a time: each read maps it
    afresh and dropping the tensor unmaps it. Reading an element twice maps it twice (correct, slower).
    """

    def __init__(self, load: Callable[[int], torch.Tensor], count: int) -> None:
        self._load = load
        self._count = count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> list[torch.Tensor]: ...

    def __getitem__(self, index: int | slice) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(index, slice):
            return [self._load(i) for i in range(self._count)[index]]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return self._load(index % self._count)


class OperatorFn(Protocol):
    def __call__(self, inputs: MergeInputs, params: ResolvedParams, /) -> torch.Tensor: ...


class GlobalPass(Protocol):
    """A whole-model statistic computed before merging, streaming one tensor at a time.

    The engine calls ``start`` once, then for ``pass_index`` in ``range(n_passes)`` calls ``observe`` for
    every tensor the operator merges (same order each pass) followed by ``end_pass``, and finally hands
    ``finish()``'s dict to every operator call as ``inputs.stats``. Several passes allow exact selections
    in bounded memory (e.g. a histogram first, then only the values in the bin that holds the k-th).
    """

    n_passes: int

    def start(self, n_models: int) -> None: ...

    def observe(self, inputs: MergeInputs, params: ResolvedParams, pass_index: int) -> None: ...

    def end_pass(self, pass_index: int) -> None: ...

    def finish(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    fn: OperatorFn
    params: tuple[ParamSpec, ...] = ()
    base: BasePolicy = "ignored"
    min_models: int = 1
    max_models: int | None = None
    randomized: bool = False
    streams_inputs: bool = False
    """The operator reads ``inputs.tensors`` once, in order, holding one at a time: it gets a
    :class:`LazyTensors`, so peak memory does not grow with the number of models."""
    global_pass: Callable[[], GlobalPass] | None = None
    needs_global_pass: Callable[[ResolvedParams], bool] | None = None
    """When set, the global pass runs only if this returns True for the recipe's shared parameters."""
    reference: str = ""

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def param_names(self) -> list[str]:
        return [p.name for p in self.params]


OPERATORS: Registry[OperatorSpec] = Registry("merge method", entry_point_group="evomerge.operators")


def operator(
    name: str,
    *,
    params: Sequence[ParamSpec] = (),
    base: BasePolicy = "ignored",
    min_models: int = 1,
    max_models: int | None = None,
    randomized: bool = False,
    streams_inputs: bool = False,
    global_pass: Callable[[], GlobalPass] | None = None,
    needs_global_pass: Callable[[ResolvedParams], bool] | None = None,
    reference: str = "",
) -> Callable[[OperatorFn], OperatorFn]:
    """Register a tensor function as merge method ``name`` (decorator)."""

    def wrap(fn: OperatorFn) -> OperatorFn:
        OPERATORS.register(
            name,
            OperatorSpec(
                name=name,
                fn=fn,
                params=tuple(params),
                base=base,
                min_models=min_models,
                max_models=max_models,
                randomized=randomized,
                streams_inputs=streams_inputs,
                global_pass=global_pass,
                needs_global_pass=needs_global_pass,
                reference=reference,
            ),
        )
        return fn

    return wrap


def get_operator(name: str, path: str | None = "merge_method") -> OperatorSpec:
    """Look up an operator (loading the built-in ones first); unknown names list the known ones."""
    import evomerge.merge.operators  # noqa: F401  (registers the built-in operators)

    spec = OPERATORS.get(name, path)
    if not isinstance(spec, OperatorSpec):
        raise TypeError(f"{name!r} does not name an evomerge operator (got {type(spec).__name__})")
    return spec
