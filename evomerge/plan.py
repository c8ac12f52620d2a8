"""MergePlan: the fully explicit description of one merged model.

The YAML form is mergekit's dialect (``merge_method``, ``base_model``, ``models[].parameters``,
``parameters``, ``slices``, ``dtype``, ``tokenizer``), so existing mergekit recipes load unchanged. evomerge
adds a few optional keys (``dialect``, ``seed``, ``allow_pickle``, ``overrides``); a plan that uses none of
them is exported as a mergekit recipe. This module is pure data (no torch): search spaces build plans and
strategies hash them without importing any model code.

Parameter values follow mergekit's rules: a scalar; a list of numbers, interpolated over a slice's layers
(a *gradient*); or a list of ``{filter, value}`` conditions, the first whose filter is a substring of the
tensor name wins.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge.validation import dump_yaml, load_yaml, validate_model

ScalarParameter: TypeAlias = bool | int | float | str
ScalarOrGradient: TypeAlias = ScalarParameter | list[ScalarParameter]

DTYPES = ("float32", "float16", "bfloat16")
DTypeName: TypeAlias = Literal["float32", "float16", "bfloat16"]
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32"}


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConditionalParameter(Frozen):
    value: ScalarOrGradient
    filter: str | None = None


ParameterSetting: TypeAlias = ConditionalParameter | list[ConditionalParameter] | ScalarOrGradient
Parameters: TypeAlias = dict[str, ParameterSetting]


def _dtype(value: Any) -> Any:
    if isinstance(value, str):
        return _DTYPE_ALIASES.get(value, value)
    return value


class InputModel(Frozen):
    model: str
    parameters: Parameters | None = None


class InputSlice(Frozen):
    model: str
    layer_range: tuple[int, int]
    parameters: Parameters | None = None

    @field_validator("layer_range")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[1] <= v[0]:
            raise ValueError(f"layer_range must be [start, end) with 0 <= start < end, got {list(v)}")
        return v


class OutputSlice(Frozen):
    sources: list[InputSlice] = Field(min_length=1)
    base_model: str | None = None
    residual_weight: float | None = None
    parameters: Parameters | None = None

    @model_validator(mode="after")
    def _same_length(self) -> OutputSlice:
        lengths = {s.layer_range[1] - s.layer_range[0] for s in self.sources}
        if len(lengths) > 1:
            raise ValueError("all sources of a slice must span the same number of layers")
        return self


class TokenizerConfig(Frozen):
    """Which vocabulary the merged model gets when the sources' tokenizers differ.

    ``source``: ``union`` (mergekit's default: the base's tokenizer plus every token another model adds),
    ``base``, or a model of the recipe; embedding and LM-head rows are re-indexed to it by token.
    ``new_rows`` (evomerge extension): the stand-in row of a token a model lacks, where one is needed
    (the base's rows under task-vector methods, fixed-arity methods, padding): the mean of that model's
    token rows, or zeros. ``tokens`` (mergekit's per-token sources) is refused by the planner.
    """

    source: str = "union"
    tokens: dict[str, Any] | None = None
    pad_to_multiple_of: int | None = Field(default=None, ge=1)
    new_rows: Literal["mean", "zeros"] = "mean"


class Override(Frozen):
    """evomerge extension: a different operator (and parameters) for the tensors a group matches.

    A tensor belongs to the first override whose ``filter`` is a substring of its output name and whose
    ``layers`` range ``[start, end)`` holds its output layer (absent criteria always match). Precedence
    for a model's value: ``models[ref]`` here, the model's own parameters, this override's ``parameters``,
    then the slice's and the recipe's ``parameters``.
    """

    merge_method: str
    filter: str | None = None
    layers: tuple[int, int] | None = None
    parameters: Parameters | None = None
    models: dict[str, Parameters] | None = None

    @model_validator(mode="after")
    def _selects_something(self) -> Override:
        if self.filter is None and self.layers is None:
            raise ValueError("an override needs a 'filter' or 'layers' (or both)")
        return self


class MergePlan(Frozen):
    merge_method: str
    base_model: str | None = None
    models: list[InputModel] | None = None
    slices: list[OutputSlice] | None = None
    parameters: Parameters | None = None
    dtype: DTypeName | None = None
    out_dtype: DTypeName | None = None
    tokenizer_source: str | None = None
    tokenizer: TokenizerConfig | None = None
    chat_template: str | None = None
    # evomerge extensions (absent from mergekit recipes)
    dialect: Literal["mergekit", "evomerge"] = "mergekit"
    seed: int = 0
    allow_pickle: bool = False
    overrides: list[Override] | None = None

    @field_validator("dtype", "out_dtype", mode="before")
    @classmethod
    def _norm_dtype(cls, v: Any) -> Any:
        return _dtype(v)

    @model_validator(mode="after")
    def _one_input_form(self) -> MergePlan:
        if bool(self.models) == bool(self.slices):
            raise ValueError("exactly one of 'models' or 'slices' must be given")
        if self.tokenizer_source is not None and self.tokenizer is not None:
            raise ValueError("give either 'tokenizer_source' or 'tokenizer', not both")
        return self

    # ------------------------------------------------------------------ views
    def source_models(self) -> list[str]:
        """Every referenced model, base first, in first-mention order, without duplicates."""
        seen: dict[str, None] = {}
        if self.base_model:
            seen[self.base_model] = None
        for m in self.models or []:
            seen.setdefault(m.model, None)
        for sl in self.slices or []:
            if sl.base_model:
                seen.setdefault(sl.base_model, None)
            for src in sl.sources:
                seen.setdefault(src.model, None)
        return list(seen)

    def tokenizer_choice(self) -> str | None:
        if self.tokenizer is not None:
            return self.tokenizer.source
        return self.tokenizer_source

    def is_mergekit_expressible(self) -> bool:
        return not self.overrides and not self.allow_pickle and self.seed == 0

    # ------------------------------------------------------------ persistence
    def to_dict(self, mergekit: bool = False) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data = {"merge_method": self.merge_method, **data}
        if mergekit:
            for key in ("dialect", "seed", "allow_pickle", "overrides"):
                data.pop(key, None)
            if self.tokenizer is not None and "new_rows" in data.get("tokenizer", {}):
                data["tokenizer"].pop("new_rows")
        return data

    def to_yaml(self, mergekit: bool = False) -> str:
        return dump_yaml(self.to_dict(mergekit=mergekit))

    def content_hash(self) -> str:
        """Stable hash of everything that determines the merged weights: the fitness-cache key."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> MergePlan:
        return validate_model(cls, data, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> MergePlan:
        data = load_yaml(path)
        if not isinstance(data, dict):
            from evomerge.errors import ConfigError

            raise ConfigError(f"{path}: a recipe must be a mapping with at least 'merge_method'")
        if "modules" in data:
            from evomerge.errors import ConfigError

            raise ConfigError(f"{path}: modules: multi-module recipes are not supported yet; use 'models' or 'slices'")
        return cls.from_dict(data, source=str(path))
