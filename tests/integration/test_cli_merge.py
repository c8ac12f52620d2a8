"""`evomerge merge` end to end: output loads in transformers; user mistakes give one line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from evomerge.cli import main


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def write(tmp_path: Path, data: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def linear_recipe(fam: dict[str, Path], **extra: object) -> dict:
    data = {"merge_method": "linear", "models": [
        {"model": str(fam["ft1"]), "parameters": {"weight": 0.5}},
        {"model": str(fam["ft2"]), "parameters": {"weight": 0.5}}]}
    data.update(extra)
    return data


def test_merge_output_loads_and_runs(llama_family: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, out = run(["merge", str(write(tmp_path, linear_recipe(llama_family))), str(tmp_path / "out"), "-q"])
    assert code == 0, out
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        logits = model(**tok("2+2=", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()


def test_sharded_bf16_output(llama_family: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    recipe = write(tmp_path, linear_recipe(llama_family, dtype="bfloat16"))
    code, out = run(["merge", str(recipe), str(tmp_path / "out"), "--shard-size", "20KB", "-q"])
    assert code == 0, out
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert next(model.parameters()).dtype == torch.bfloat16


def _one_line_error(code: int, out: str) -> str:
    assert code != 0
    assert "Traceback" not in out
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_method_lists_known(llama_family: dict[str, Path], tmp_path: Path) -> None:
    line = _one_line_error(*run(["merge", str(write(tmp_path, linear_recipe(llama_family, merge_method="magic"))), str(tmp_path / "o")]))
    assert "unknown merge method 'magic'" in line and "linear" in line


def test_missing_model_folder(llama_family: dict[str, Path], tmp_path: Path) -> None:
    data = linear_recipe(llama_family)
    data["models"][1]["model"] = str(tmp_path / "does-not-exist")
    line = _one_line_error(*run(["merge", str(write(tmp_path, data)), str(tmp_path / "o")]))
    assert "model folder not found" in line and "does-not-exist" in line


def test_shape_mismatch(llama_family: dict[str, Path], gpt2_family: dict[str, Path], tmp_path: Path) -> None:
    from evomerge.tiny_models import make_tiny_model

    wide = tmp_path / "wide"
    make_tiny_model(wide, arch="llama", seed=3, hidden=64)
    data = linear_recipe(llama_family)
    data["models"][1]["model"] = str(wide)
    line = _one_line_error(*run(["merge", str(write(tmp_path, data)), str(tmp_path / "o")]))
    assert "shape mismatch at tensor 'model.embed_tokens.weight'" in line and "[101, 32]" in line and "[101, 64]" in line


def test_unknown_yaml_key(llama_family: dict[str, Path], tmp_path: Path) -> None:
    line = _one_line_error(*run(["merge", str(write(tmp_path, linear_recipe(llama_family, merge_methd="x"))), str(tmp_path / "o")]))
    assert "unknown key 'merge_methd'" in line


def test_pickle_without_opt_in(llama_family: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    pkl = tmp_path / "pickled"
    pkl.mkdir()
    torch.save(load_file(str(llama_family["ft2"] / "model.safetensors")), pkl / "pytorch_model.bin")
    (pkl / "config.json").write_text((llama_family["ft2"] / "config.json").read_text())
    data = linear_recipe(llama_family)
    data["models"][1]["model"] = str(pkl)
    line = _one_line_error(*run(["merge", str(write(tmp_path, data)), str(tmp_path / "o")]))
    assert "pytorch_model.bin: not safetensors (a pickle checkpoint, refused" in line and "allow_pickle" in line
    code, out = run(["merge", str(write(tmp_path, {**data, "allow_pickle": True}, "ok.yaml")), str(tmp_path / "o2"), "-q"])
    assert code == 0, out


def test_existing_output_refused(llama_family: dict[str, Path], tmp_path: Path) -> None:
    recipe = write(tmp_path, linear_recipe(llama_family))
    assert run(["merge", str(recipe), str(tmp_path / "out"), "-q"])[0] == 0
    line = _one_line_error(*run(["merge", str(recipe), str(tmp_path / "out")]))
    assert "not empty" in line
    assert run(["merge", str(recipe), str(tmp_path / "out"), "--overwrite", "-q"])[0] == 0


@pytest.mark.parametrize("device", ["cuda", "tpu:9"])
def test_unavailable_device(llama_family: dict[str, Path], tmp_path: Path, device: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    line = _one_line_error(*run(["merge", str(write(tmp_path, linear_recipe(llama_family))), str(tmp_path / "o"), "--device", device]))
    assert "--device" in line


def test_console_script_help_and_version() -> None:
    exe = Path(sys.executable).parent / "evomerge"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "merge" in out and "search" in out
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert "evomerge" in version


@pytest.mark.parametrize("density", [1.5, 0])
def test_density_outside_unit_interval_is_one_line(llama_family: dict[str, Path], tmp_path: Path, density: float) -> None:
    data = {"merge_method": "ties", "base_model": str(llama_family["base"]), "models": [
        {"model": str(llama_family["ft1"]), "parameters": {"weight": 0.5, "density": density}},
        {"model": str(llama_family["ft2"]), "parameters": {"weight": 0.5, "density": 0.5}}]}
    line = _one_line_error(*run(["merge", str(write(tmp_path, data)), str(tmp_path / "o")]))
    assert "'density'" in line and str(density) in line and "(0, 1]" in line
    assert not (tmp_path / "o").exists()


def test_ties_merge_through_the_console_script_matches_the_in_memory_merge(
    llama_family: dict[str, Path], tmp_path: Path
) -> None:
    """The real command (own process, streamed kernels, reused output buffer) against ``merge_model``."""
    from safetensors.torch import load_file

    from tests.unit.test_operators_contract import merge_model

    models = [load_file(str(llama_family[k] / "model.safetensors")) for k in ("ft1", "ft2")]
    base = load_file(str(llama_family["base"] / "model.safetensors"))
    data = {"merge_method": "ties", "base_model": str(llama_family["base"]), "models": [
        {"model": str(llama_family["ft1"]), "parameters": {"weight": 0.6, "density": 0.4}},
        {"model": str(llama_family["ft2"]), "parameters": {"weight": 0.4, "density": 0.7}}]}
    exe = Path(sys.executable).parent / "evomerge"
    done = subprocess.run([str(exe), "merge", str(write(tmp_path, data)), str(tmp_path / "out"), "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    expected = merge_model("ties", models, base, per_model=[{"weight": 0.6, "density": 0.4}, {"weight": 0.4, "density": 0.7}],
                           dialect="mergekit")
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=1e-6, msg=name)
