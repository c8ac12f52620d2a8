"""Third-party operators: an installed plugin (entry point) and a dotted path, used by `evomerge merge`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

OPERATOR_SOURCE = textwrap.dedent('''
    """A test plugin: one merge operator."""
    import torch

    from evomerge.merge.operator import MergeInputs, OperatorSpec
    from evomerge.merge.params import ResolvedParams


    def halfsum(inputs: MergeInputs, params: ResolvedParams) -> torch.Tensor:
        """Half the sum of the input tensors."""
        return torch.stack(inputs.tensors).sum(dim=0) * 0.5


    HALFSUM = OperatorSpec(name="halfsum", fn=halfsum, min_models=2)
''')

PYPROJECT = textwrap.dedent('''
    [build-system]
    requires = ["setuptools>=61"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "evomerge-halfsum-testplugin"
    version = "0.0.1"

    [tool.setuptools]
    packages = ["evomerge_halfsum_testplugin"]

    [project.entry-points."evomerge.operators"]
    halfsum = "evomerge_halfsum_testplugin:HALFSUM"
''')


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          capture_output=True, text=True, timeout=180, check=False)


def merge(recipe: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """In a fresh interpreter: an install made by this test is only visible to processes started after it."""
    return subprocess.run([sys.executable, "-m", "evomerge.cli", "merge", str(recipe), str(out), "-q"],
                          capture_output=True, text=True, timeout=180, check=False)


def write_recipe(tmp_path: Path, method: str, fam: dict[str, Path]) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"merge_method": method,
                                    "models": [{"model": str(fam["ft1"])}, {"model": str(fam["ft2"])}]}))
    return path


def assert_halfsum(out: Path, fam: dict[str, Path]) -> None:
    merged = load_file(str(out / "model.safetensors"))
    a, b = load_file(str(fam["ft1"] / "model.safetensors")), load_file(str(fam["ft2"] / "model.safetensors"))
    assert set(merged) == set(a)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, (a[name] + b[name]) * 0.5)


def test_entry_point_plugin_operator(llama_family: dict[str, Path], tmp_path: Path) -> None:
    pkg = tmp_path / "plugin"
    (pkg / "evomerge_halfsum_testplugin").mkdir(parents=True)
    (pkg / "evomerge_halfsum_testplugin" / "__init__.py").write_text(OPERATOR_SOURCE)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    installed = pip("install", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(pkg))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    try:
        result = merge(write_recipe(tmp_path, "halfsum", llama_family), tmp_path / "out")
        assert result.returncode == 0, result.stderr
        assert_halfsum(tmp_path / "out", llama_family)
    finally:
        pip("uninstall", "-y", "evomerge-halfsum-testplugin")
    unknown = merge(write_recipe(tmp_path, "halfsum", llama_family), tmp_path / "out2")
    assert unknown.returncode != 0 and "unknown merge method 'halfsum'" in unknown.stderr


def test_dotted_path_operator(llama_family: dict[str, Path], tmp_path: Path) -> None:
    module = tmp_path / "myops.py"
    module.write_text(OPERATOR_SOURCE)
    result = merge(write_recipe(tmp_path, f"{module}:HALFSUM", llama_family), tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert_halfsum(tmp_path / "out", llama_family)
