"""End-to-end parity with mergekit: the same mergekit YAML through `evomerge merge` and `mergekit-yaml`.

Builds tiny Llama and GPT-2 families (a random base and three seeded "fine-tunes"), runs every recipe
below through both tools, and prints the largest absolute difference over all tensors of the outputs.
Exits non-zero if any difference exceeds 1e-5 (fp32) or a tensor set differs.

    python benchmarks/mergekit_compare.py --mergekit-venv /path/to/venv-with-mergekit

mergekit must live in a separate virtual environment (it pins its own dependencies); only its
`mergekit-yaml` command is used.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from evomerge.merge.to_disk import merge_to_disk
from evomerge.plan import MergePlan
from evomerge.tiny_models import make_tiny_model, perturbed_copy

TOLERANCE = 1e-5


def recipes(fam: dict[str, Path]) -> dict[str, dict]:
    base, a, b, c = (str(fam[k]) for k in ("base", "ft1", "ft2", "ft3"))
    return {
        "linear": {"merge_method": "linear", "models": [
            {"model": a, "parameters": {"weight": 0.6}}, {"model": b, "parameters": {"weight": [0.2, 0.9]}},
            {"model": c, "parameters": {"weight": 0.3}}]},
        "slerp": {"merge_method": "slerp", "base_model": base, "models": [{"model": base}, {"model": a}],
                  "parameters": {"t": [{"filter": "mlp", "value": [0.1, 0.8]}, {"value": 0.4}]}},
        "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": base, "models": [
            {"model": a, "parameters": {"weight": 0.7}}, {"model": b, "parameters": {"weight": [0.3, 0.5]}},
            {"model": c, "parameters": {"weight": 0.4}}], "parameters": {"lambda": 0.9}},
        "ties": {"merge_method": "ties", "base_model": base, "models": [
            {"model": a, "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": b, "parameters": {"weight": 0.6, "density": [0.3, 0.9]}},
            {"model": c, "parameters": {"weight": 0.8, "density": 0.7}}], "parameters": {"normalize": True}},
        "breadcrumbs": {"merge_method": "breadcrumbs", "base_model": base, "models": [
            {"model": a, "parameters": {"weight": 0.5, "density": 0.8, "gamma": 0.02}},
            {"model": b, "parameters": {"weight": 0.5, "density": 0.6}}]},
        "model_stock": {"merge_method": "model_stock", "base_model": base, "models": [
            {"model": a}, {"model": b}, {"model": c}]},
    }


def build_family(root: Path, arch: str) -> dict[str, Path]:
    base = root / f"{arch}-base"
    make_tiny_model(base, arch=arch, seed=0, hidden=64, layers=4)  # type: ignore[arg-type]
    fam = {"base": base}
    for i in (1, 2, 3):
        fam[f"ft{i}"] = perturbed_copy(base, root / f"{arch}-ft{i}", seed=i, scale=0.02)
    return fam


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def compare(ours: Path, theirs: Path) -> tuple[float, str]:
    a, b = tensors(ours), tensors(theirs)
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        return float("inf"), f"tensor sets differ: {only[:4]}"
    worst, where = 0.0, ""
    for name in a:
        diff = (a[name].float() - b[name].float()).abs().max().item() if a[name].numel() else 0.0
        if diff > worst:
            worst, where = diff, name
    return worst, where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mergekit-venv", type=Path, required=True, help="virtual environment that has mergekit installed")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    mergekit_yaml = args.mergekit_venv / "bin" / "mergekit-yaml"
    if not mergekit_yaml.is_file():
        print(f"mergekit-yaml not found in {args.mergekit_venv}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="evomerge-mk-"))
    failures = 0
    print(f"{'arch':<6} {'method':<16} {'max |diff|':>11}  {'evomerge s':>10} {'mergekit s':>10}  worst tensor")
    for arch in ("llama", "gpt2"):
        fam = build_family(work / "models", arch)
        for method, data in recipes(fam).items():
            recipe = work / f"{arch}-{method}.yaml"
            recipe.write_text(yaml.safe_dump(data))
            ours, theirs = work / f"{arch}-{method}-evomerge", work / f"{arch}-{method}-mergekit"
            t0 = time.perf_counter()
            merge_to_disk(MergePlan.from_yaml(recipe), ours, overwrite=True, progress=False)
            t1 = time.perf_counter()
            proc = subprocess.run([str(mergekit_yaml), str(recipe), str(theirs), "--allow-crimes"],
                                  capture_output=True, text=True)
            t2 = time.perf_counter()
            if proc.returncode != 0:
                print(f"{arch:<6} {method:<16} mergekit failed: {proc.stderr.strip().splitlines()[-1:]}")
                failures += 1
                continue
            diff, where = compare(ours, theirs)
            ok = diff <= TOLERANCE
            failures += not ok
            print(f"{arch:<6} {method:<16} {diff:>11.3g}  {t1 - t0:>10.2f} {t2 - t1:>10.2f}  {where}{'' if ok else '  <-- FAIL'}")
    print("all within 1e-5" if not failures else f"{failures} comparison(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
