"""The search configuration: one frozen pydantic model per section, ``extra="forbid"`` everywhere.

``configs/*.yaml`` map onto :class:`SearchConfig` field for field. Sections whose shape depends on a
registered name (``search_space``, ``strategy``, ``fitness``) are validated by the class that name
selects, so a typo anywhere fails at load time with the field's path (``strategy.sigma0: ...``).
``--set a.b=value`` overrides are applied to the raw YAML before validation.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from evomerge.errors import ConfigError
from evomerge.validation import dump_yaml, load_yaml, validate_model


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FromScratchConfig(Section):
    """Evolution from random initialisation (M2N2's MNIST setting): no source checkpoints."""

    factory: str = Field(description="registered model factory name or 'module:function' building an nn.Module")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    population: int = Field(8, ge=1, description="random initialisations the search starts from")


class GenerateConfig(Section):
    """Build the source models on the fly (the quickstart's tiny specialists), cached by content."""

    kind: str = "tiny_specialists"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ModelsConfig(Section):
    base: str | None = None
    sources: list[str] = Field(default_factory=list)
    model_class: str = Field("causal_lm", description="causal_lm | sequence_classification | auto | module:factory")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str | None = Field(
        None, description="transformers attention kernel of the evaluators' model: eager, sdpa, flash_attention_2, ...")
    allow_pickle: bool = False
    from_scratch: FromScratchConfig | None = None
    generate: GenerateConfig | None = None

    @model_validator(mode="after")
    def _some_models(self) -> ModelsConfig:
        kinds = sum([bool(self.sources), self.from_scratch is not None, self.generate is not None])
        if kinds == 0:
            raise ValueError("give 'sources' (checkpoint folders), 'from_scratch' or 'generate'")
        if self.from_scratch is not None and self.sources:
            raise ValueError("'from_scratch' and 'sources' exclude each other")
        return self


class BudgetConfig(Section):
    evaluations: int | None = Field(None, gt=0, description="stop after this many evaluations")
    wall_time: float | None = Field(None, gt=0, description="stop after this many seconds (summed over resumes)")
    target: float | None = Field(None, description="stop once the first objective reaches this value")

    @model_validator(mode="after")
    def _bounded(self) -> BudgetConfig:
        if self.evaluations is None and self.wall_time is None:
            raise ValueError("set budget.evaluations or budget.wall_time (a search must end)")
        return self


class MultiFidelityConfig(Section):
    """Successive halving: score on a seeded subset first, promote the best fraction to the full set."""

    subset: float = Field(0.25, gt=0, lt=1, description="fraction of the examples in the first rung")
    promote: float = Field(0.5, gt=0, le=1, description="fraction of each batch promoted to the full set")
    min_batch: int = Field(2, ge=1)


class EvaluationConfig(Section):
    mode: Literal["generational", "steady_state"] = "generational"
    batch_size: int | None = Field(None, ge=1, description="candidates per ask in generational mode")
    timeout: float | None = Field(None, gt=0, description="seconds per candidate before it counts as timed out")
    retries: int = Field(1, ge=0, description="re-runs of a candidate whose evaluator died")
    cache: bool = True
    multi_fidelity: MultiFidelityConfig | None = None


class ResourcesConfig(Section):
    pool: Literal["sequential", "ray"] = "sequential"
    actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(
        0.0, ge=0, description="GPUs per evaluator: a fraction shares one GPU; a whole N > 1 shards each "
        "evaluator's model over N GPUs")
    device: str = Field("auto", description="auto | cpu | cuda")
    ray_address: str | None = None
    num_cpus: int | None = Field(None, ge=1, description="CPUs of an embedded local Ray (default: actors × cpus_per_actor)")
    object_store_mb: int = Field(256, ge=64)
    torch_threads: int | None = Field(None, ge=1)

    @field_validator("gpus_per_actor")
    @classmethod
    def _whole_gpus_to_shard(cls, gpus: float) -> float:
        if gpus > 1 and not float(gpus).is_integer():
            raise ValueError(f"{gpus:g} GPUs: above 1 an evaluator shards its model over whole GPUs, "
                             "so give a whole number (or a fraction up to 1 to share a GPU)")
        return gpus

    @field_validator("device")
    @classmethod
    def _shards_need_gpus(cls, device: str, info: ValidationInfo) -> str:
        gpus = info.data.get("gpus_per_actor", 0.0)
        if gpus > 1 and device not in ("auto", "cuda"):
            raise ValueError(f"{device!r} cannot hold a model sharded over gpus_per_actor={gpus:g} GPUs; "
                             "use auto or cuda")
        return device


class WandbConfig(Section):
    """Weights & Biases view of a search; its files live under ``<run dir>/wandb``."""

    enabled: bool = False
    project: str = "evomerge"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="None: WANDB_MODE from the environment, else online")
    name: str | None = Field(None, description="W&B run name (default: the config's name, else the run folder's)")
    tags: list[str] = Field(default_factory=list)
    tables_every: int = Field(
        10, ge=0, description="also refresh the candidates table, Pareto front and coefficient heatmap every N "
        "generations, so a killed run still shows them (0: only when the search ends)")


class TrackingConfig(Section):
    console: bool = True
    wandb: WandbConfig = WandbConfig()
    keep_checkpoints: int = Field(3, ge=1)


class ExportConfig(Section):
    on_finish: bool = False
    out_dir: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] | None = None


class SearchConfig(Section):
    seed: int = 0
    name: str | None = None
    models: ModelsConfig
    search_space: dict[str, Any]
    strategy: dict[str, Any]
    fitness: dict[str, Any]
    budget: BudgetConfig
    evaluation: EvaluationConfig = EvaluationConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _named_sections(self) -> SearchConfig:
        for key in ("search_space", "strategy"):
            if "name" not in getattr(self, key):
                raise ValueError(f"{key}.name is required")
        return self

    def content_hash(self) -> str:
        data = self.model_dump(mode="json")
        data.pop("budget", None)  # extending the budget of a finished run is allowed
        data.pop("tracking", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return dump_yaml(self.model_dump(mode="json"))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["budget.evaluations=10", "seed=3"]`` → a deep-copied dict with those keys set (YAML values)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> SearchConfig:
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a search config must be a mapping")
    return parse_config(raw, overrides, source=str(path))


def parse_config(raw: dict[str, Any], overrides: list[str] | None = None, source: str | None = None) -> SearchConfig:
    data = apply_overrides(raw, overrides or [])
    return validate_model(SearchConfig, data, source)
