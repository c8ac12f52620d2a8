"""``evomerge merge``: one recipe → one Hugging Face checkpoint folder, streamed tensor by tensor."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from evomerge.io.checkpoint import Checkpoint, resolve_model_path
from evomerge.io.writer import DTYPES, CheckpointWriter, TensorSlot, main_float_dtype
from evomerge.merge.executor import MergeExecutor
from evomerge.merge.planner import CompiledMerge, SourceInfo, compile_plan
from evomerge.merge.tokenizer_out import borrowed_chat_template, union_tokenizer_files
from evomerge.merge.vocab_union import TOKEN_ID_KEYS
from evomerge.merge.vocabulary import read_vocabulary
from evomerge.plan import MergePlan
from evomerge.progress import progress_bar

RECIPE_FILE = "merge_recipe.yaml"


def locate_model(ref: str, base_dir: Path | None) -> str:
    """A recipe's model path: as given (relative to the working directory, as mergekit does), else
    relative to the recipe's own folder."""
    path = Path(ref).expanduser()
    if path.exists() or path.is_absolute() or base_dir is None:
        return ref
    alt = base_dir / path
    return str(alt) if alt.exists() else ref


def open_sources(plan: MergePlan, *, base_dir: Path | None = None, allow_download: bool = False) -> dict[str, Checkpoint]:
    """Every model the plan references, opened lazily (headers only)."""
    out: dict[str, Checkpoint] = {}
    for ref in plan.source_models():
        path = resolve_model_path(locate_model(ref, base_dir), allow_download=allow_download)
        out[ref] = Checkpoint(path, allow_pickle=plan.allow_pickle, label=ref, keep_open=False)
    return out


def source_infos(checkpoints: Mapping[str, Checkpoint], with_vocab: bool = False) -> dict[str, SourceInfo]:
    """What the planner needs of each source; ``with_vocab`` adds its tokenizer's vocabulary (read only when
    the recipe has a tokenizer option, the one case that can re-index embeddings)."""
    return {
        ref: SourceInfo(ref, {n: m.shape for n, m in ck.meta.items()}, ck.config, {n: str(m.dtype) for n, m in ck.meta.items()},
                        read_vocabulary(ck.path) if with_vocab else None)
        for ref, ck in checkpoints.items()
    }


def output_dtype(plan: MergePlan, source_dtype: torch.dtype) -> torch.dtype:
    if not source_dtype.is_floating_point:
        return source_dtype
    name = plan.out_dtype or plan.dtype
    return DTYPES[name] if name else source_dtype


def output_layout(plan: MergePlan, compiled: CompiledMerge, checkpoints: Mapping[str, Checkpoint]) -> list[TensorSlot]:
    slots = []
    for task in compiled.tasks:
        ref = task.inputs[0] if task.inputs else task.base
        assert ref is not None
        src_dtype = checkpoints[compiled.sources[ref[0]]].meta[ref[1]].dtype
        slots.append(TensorSlot(task.out_name, task.shape, output_dtype(plan, src_dtype)))
    return slots


def output_config(config: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    out = dict(config)
    name = str(dtype).removeprefix("torch.")
    for key in ("torch_dtype", "dtype"):
        if key in out or key == "dtype":
            out[key] = name
    return out


def merge_to_disk(
    plan: MergePlan,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
    base_dir: Path | None = None,
    allow_download: bool = False,
    progress: bool = True,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Merge ``plan`` into ``out_dir`` (atomic: the folder appears only when complete).

    ``extra_files`` (name → text: a model card, recipes) are written inside the same atomic commit.
    """
    checkpoints = open_sources(plan, base_dir=base_dir, allow_download=allow_download)
    try:
        compiled = compile_plan(plan, source_infos(checkpoints, with_vocab=plan.tokenizer_choice() is not None))
        refs = compiled.sources
        ckpts = [checkpoints[r] for r in refs]
        # the union tokenizer is built before any tensor is merged: one that cannot be extended fails fast
        tokenizer_texts: dict[str, str] = {}
        if compiled.vocab is not None and compiled.vocab.added:
            tokenizer_texts = union_tokenizer_files(ckpts[compiled.vocab.target].path, compiled.vocab.added)
            tokenizer_texts.update(borrowed_chat_template([ck.path for ck in ckpts], compiled.vocab.target))
        executor = MergeExecutor(compiled, lambda i, name: ckpts[i].get(name), device)
        layout = output_layout(plan, compiled, checkpoints)
        main_dtype = main_float_dtype(layout)
        with CheckpointWriter(out_dir, layout, max_shard_size=max_shard_size, overwrite=overwrite) as writer:
            executor.stats()  # global passes first, so the bar below measures merging only
            total = sum(s.nbytes for s in layout)
            with progress_bar("merging", total=total, unit="bytes", enabled=progress) as bar:
                for slot, (task, tensor) in zip(layout, executor):
                    writer.write(task.out_name, tensor)
                    bar.advance(slot.nbytes)
            writer.write_json("config.json", output_config(compiled.out_config, main_dtype))
            cfg_dir = ckpts[compiled.config_source].path
            tok_source = compiled.tokenizer_source
            if tok_source is None or tok_source == compiled.config_source:
                writer.copy_files(cfg_dir, ["generation_config.json"])
            elif (cfg_dir / "generation_config.json").is_file():
                writer.write_json("generation_config.json", generation_config_for_tokenizer(
                    cfg_dir / "generation_config.json", ckpts[tok_source].path, compiled.out_config))
            if compiled.tokenizer_source is not None:
                tok_dir = ckpts[compiled.tokenizer_source].path
                writer.copy_files(tok_dir, _tokenizer_files(tok_dir))
            for name, text in tokenizer_texts.items():
                writer.write_text(name, text)
            if plan.chat_template is not None:
                _set_chat_template(writer.tmp, plan.chat_template)
            writer.write_text(RECIPE_FILE, plan.to_yaml())
            for name, text in (extra_files or {}).items():
                writer.write_text(name, text)
        return Path(out_dir)
    finally:
        for ck in checkpoints.values():
            ck.close()


def generation_config_for_tokenizer(
    generation_config: Path, tokenizer_dir: Path, out_config: Mapping[str, Any]
) -> dict[str, Any]:
    """The config source's generation settings with the special-token ids of the model the tokenizer comes from.

    Copied unchanged, the file would keep the config source's bos/eos/pad ids, and ``generate`` would stop on
    (or never see) the wrong tokens. The ids come from the tokenizer source's own ``generation_config.json``
    (which may list several eos ids), else from the output ``config.json``, which already carries them; an
    id neither has is dropped rather than kept from the wrong vocabulary.
    """
    out = json.loads(generation_config.read_text())
    own_file = tokenizer_dir / "generation_config.json"
    own: Mapping[str, Any] = json.loads(own_file.read_text()) if own_file.is_file() else {}
    for key in TOKEN_ID_KEYS:
        if key in own:
            out[key] = own[key]
        elif key in out_config:
            out[key] = out_config[key]
        else:
            out.pop(key, None)
    return out


def _tokenizer_files(folder: Path) -> list[str]:
    names = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
             "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.txt",
             "spiece.model", "preprocessor_config.json"]
    return [n for n in names if (folder / n).is_file()]


def _set_chat_template(folder: Path, template: str) -> None:
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
