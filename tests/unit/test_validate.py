"""Pre-flight checks of merge recipes: each incompatibility is one problem line naming files and tensors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from evomerge.io.writer import save_state_dict
from evomerge.preflight import Report, validate_file
from evomerge.preflight.compare import MAX_LINES_PER_PAIR
from evomerge.preflight.headers import SourceHeaders, read_headers
from evomerge.preflight.memory import estimate, human
from evomerge.tiny_models import make_tiny_model


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def tiny(folder: Path, **kwargs: object) -> Path:
    make_tiny_model(folder, seed=1, **kwargs)  # type: ignore[arg-type]
    return folder


@pytest.fixture(scope="module")
def variants(llama_family: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Broken relatives of the tiny Llama family, one defect each."""
    root = tmp_path_factory.mktemp("variants")
    base = llama_family["base"]
    out = dict(llama_family)
    state = _state(llama_family["ft1"])
    dropped = dict(state)
    del dropped["model.layers.1.mlp.up_proj.weight"]
    out["missing"] = save_state_dict(dropped, root / "missing", config=_config(base), aux_from=base)
    out["wide"] = tiny(root / "wide", hidden=48)
    out["vocab"] = tiny(root / "vocab", vocab_size=120)
    out["gpt2"] = tiny(root / "gpt2", arch="gpt2")
    out["bf16"] = save_state_dict(state, root / "bf16", dtype=torch.bfloat16, config=_config(base), aux_from=base)
    pickled = root / "pickled"
    shutil.copytree(llama_family["ft2"], pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(_state(llama_family["ft2"]), pickled / "pytorch_model.bin")
    out["pickled"] = pickled
    retok = root / "retok"
    shutil.copytree(llama_family["ft3"], retok)
    tok = json.loads((retok / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (retok / "tokenizer.json").write_text(json.dumps(tok))
    out["retok"] = retok
    return out


def recipe(tmp_path: Path, *models: Path, base: Path | None = None, **extra: object) -> Path:
    data: dict = {"merge_method": "task_arithmetic" if base else "linear",
                  "models": [{"model": str(m), "parameters": {"weight": 0.5}} for m in models]}
    if base is not None:
        data["base_model"] = str(base)
    data.update(extra)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def lines(report: Report, status: str, check: str | None = None) -> list[str]:
    return [c.message for c in report.checks if c.status == status and (check is None or c.check == check)]


def test_compatible_recipe_passes_and_compiles(variants: dict[str, Path], tmp_path: Path) -> None:
    report = validate_file(recipe(tmp_path, variants["ft1"], variants["ft2"], base=variants["base"]))
    assert report.ok, report.to_json()
    assert lines(report, "warning") == []
    n_tensors = len(_state(variants["base"]))
    plan = [c for c in report.checks if c.check == "plan"]
    assert plan[0].data["tensors"] == n_tensors


def test_shape_mismatch_names_tensor_and_both_shapes(variants: dict[str, Path], tmp_path: Path) -> None:
    report = validate_file(recipe(tmp_path, variants["ft1"], variants["wide"]))
    a, b = _state(variants["ft1"]), _state(variants["wide"])
    bad = [n for n in a if a[n].shape != b[n].shape and not (n.endswith(("embed_tokens.weight", "lm_head.weight"))
                                                            and a[n].shape[0] != b[n].shape[0])]
    found = lines(report, "problem", "shapes")
    assert len(found) == min(len(bad), MAX_LINES_PER_PAIR) + (len(bad) > MAX_LINES_PER_PAIR)
    first = found[0]
    name = next(n for n in bad if repr(n) in first)
    assert str(list(a[name].shape)) in first and str(list(b[name].shape)) in first
    assert str(variants["ft1"]) in first and str(variants["wide"]) in first
    assert "\n" not in first


def test_missing_tensor_is_named(variants: dict[str, Path], tmp_path: Path) -> None:
    report = validate_file(recipe(tmp_path, variants["ft1"], variants["missing"]))
    (line,) = lines(report, "problem", "tensors")
    assert "'model.layers.1.mlp.up_proj.weight'" in line and str(variants["missing"]) in line
    assert not report.ok


def test_vocab_mismatch_says_which_tokenizer_option_fixes_it(variants: dict[str, Path], tmp_path: Path) -> None:
    report = validate_file(recipe(tmp_path, variants["base"], variants["vocab"]))
    (line,) = lines(report, "problem", "vocab")
    assert "101" in line and "120" in line and "tokenizer" in line and "re-index" in line
    assert lines(report, "problem", "shapes") == []  # the embedding rows are the vocab line's business


def test_pickle_checkpoint_is_flagged_and_never_unpickled(variants: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("validate must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    report = validate_file(recipe(tmp_path, variants["ft1"], variants["pickled"]))
    (line,) = lines(report, "problem", "format")
    assert str(variants["pickled"] / "pytorch_model.bin") in line and "safetensors" in line
    allowed = validate_file(recipe(tmp_path, variants["ft1"], variants["pickled"], allow_pickle=True))
    assert lines(allowed, "problem", "format") == [] and len(lines(allowed, "warning", "format")) == 1


def test_architecture_mismatch_is_one_line(variants: dict[str, Path], tmp_path: Path) -> None:
    report = validate_file(recipe(tmp_path, variants["base"], variants["gpt2"]))
    (line,) = lines(report, "problem", "architecture")
    assert "LlamaForCausalLM" in line and "GPT2LMHeadModel" in line
    assert lines(report, "problem", "shapes") == lines(report, "problem", "tensors") == []


def test_dtype_and_tokenizer_differences_warn_without_failing(variants: dict[str, Path], tmp_path: Path) -> None:
    report = validate_file(recipe(tmp_path, variants["ft1"], variants["bf16"], variants["retok"]))
    assert report.ok, report.to_json()
    (dtype_line,) = lines(report, "warning", "dtypes")
    assert "float32" in dtype_line and "bfloat16" in dtype_line and str(variants["bf16"]) in dtype_line
    (tok_line,) = lines(report, "warning", "tokenizer")
    assert str(variants["retok"]) in tok_line and "tokenizer_source" in tok_line


def test_missing_folder_and_non_recipe(variants: dict[str, Path], tmp_path: Path) -> None:
    report = validate_file(recipe(tmp_path, variants["ft1"], tmp_path / "nowhere"))
    assert any(str(tmp_path / "nowhere") in m for m in lines(report, "problem", "files"))
    other = tmp_path / "other.yaml"
    other.write_text("foo: 1\n")
    assert not validate_file(other).ok
    assert not validate_file(tmp_path / "absent.yaml").ok


def test_memory_estimate_from_headers(variants: dict[str, Path]) -> None:
    heads = [read_headers(str(p), p, "m") for p in (variants["base"], variants["ft1"], variants["bf16"])]
    assert all(isinstance(h, SourceHeaders) for h in heads)
    sizes = []
    largest = 0
    for p in (variants["base"], variants["ft1"], variants["bf16"]):
        with safe_open(str(p / "model.safetensors"), "pt") as fh:
            total = 0
            for name in fh.keys():  # noqa: SIM118
                sl = fh.get_slice(name)
                numel = int(torch.Size(sl.get_shape()).numel())
                total += numel * (2 if sl.get_dtype() == "BF16" else 4)
                largest = max(largest, numel)
            sizes.append(total)
    est = estimate(heads, "bfloat16")  # type: ignore[arg-type]
    assert est.sources_mapped == sum(sizes)
    assert est.merge_working == (3 + 1) * largest * 4
    n_params = sizes[0] // 4
    assert est.resident_model == n_params * 2
    assert est.evaluator_gpu == sum(sizes) + n_params * 2 + est.merge_working


def test_memory_per_gpu_is_split_over_an_actors_gpus(variants: dict[str, Path]) -> None:
    from evomerge.preflight.memory import memory_checks

    heads = [read_headers(str(p), p, "m") for p in (variants["base"], variants["ft1"])]
    est = estimate(heads, None)  # type: ignore[arg-type]
    single = memory_checks(est, actors=2, gpus_per_actor=1)[-1]
    sharded = memory_checks(est, actors=2, gpus_per_actor=4)[-1]
    assert "4 GPUs" in sharded.message and sharded.data["gpus"] == 4
    assert human(est.evaluator_gpu / 4) in sharded.message and human(est.evaluator_gpu) in single.message
