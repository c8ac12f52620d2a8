"""Does the mergekit recipe that `evomerge export` writes reproduce the exported checkpoint with mergekit?

Runs a short search on a tiny Llama family for each merge method below (search space `global`, callable
fitness), exports the best candidate, then runs the export's `mergekit.yaml` through mergekit's own
`mergekit-yaml` and prints the largest absolute difference from the exported tensors. Exits non-zero above
1e-5 (fp32) or when an export has no mergekit recipe although one was expected.

    ../shared/tools/offline .venv/bin/python benchmarks/export_mergekit_check.py --mergekit-venv /work/mkvenv

mergekit lives in its own virtual environment (it pins its own dependencies); only `mergekit-yaml` is used.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evomerge.cli import main as cli  # noqa: E402
from evomerge.tiny_models import make_tiny_model, perturbed_copy  # noqa: E402

TOLERANCE = 1e-5
FITNESS = f"{ROOT / 'tests/integration/assets/fitness_fns.py'}:mlp_norm"
SPACES = {
    "task_arithmetic": {"parameters": {"weight": {"low": 0.0, "high": 1.0}}},
    "ties": {"parameters": {"weight": {"low": 0.2, "high": 1.0}, "density": {"low": 0.3, "high": 0.9}},
             "extra_parameters": {"trim_scope": "tensor", "zero_sign": "positive"}},
    "breadcrumbs": {"parameters": {"weight": {"low": 0.2, "high": 1.0}, "density": {"low": 0.5, "high": 0.9}}},
    "linear": {"parameters": {"weight": {"low": 0.1, "high": 1.0}}},
}


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def family(root: Path) -> dict[str, Path]:
    base = root / "base"
    make_tiny_model(base, arch="llama", seed=0)
    return {"base": base, **{f"ft{i}": perturbed_copy(base, root / f"ft{i}", seed=100 + i, scale=0.05) for i in (1, 2, 3)}}


def search_and_export(method: str, fam: dict[str, Path], work: Path) -> Path:
    cfg = {
        "seed": 1, "models": {"base": str(fam["base"]), "sources": [str(fam[k]) for k in ("ft1", "ft2", "ft3")]},
        "search_space": {"name": "global", "merge_method": method, **SPACES[method]},
        "strategy": {"name": "cmaes", "popsize": 4}, "fitness": {"name": "callable", "function": FITNESS},
        "budget": {"evaluations": 8}, "tracking": {"console": False},
    }
    (work / f"{method}.yaml").write_text(yaml.safe_dump(cfg))
    for args in (["search", str(work / f"{method}.yaml"), "--run-dir", str(work / f"run-{method}")],
                 ["export", str(work / f"run-{method}"), str(work / f"export-{method}")]):
        result = CliRunner().invoke(cli, args)
        if result.exit_code != 0:
            raise SystemExit(f"{' '.join(args)} failed: {result.output}")
    return work / f"export-{method}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mergekit-venv", type=Path, required=True)
    args = parser.parse_args()
    exe = args.mergekit_venv / "bin" / "mergekit-yaml"
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fam = family(work / "models")
        print(f"{'method':<16} {'max |evomerge export - mergekit|':>34}")
        for method in SPACES:
            exported = search_and_export(method, fam, work)
            recipe = exported / "mergekit.yaml"
            if not recipe.is_file():
                print(f"{method:<16} {'no mergekit.yaml written':>34}")
                failed = True
                continue
            out = work / f"mergekit-{method}"
            proc = subprocess.run([str(exe), str(recipe), str(out), "--copy-tokenizer"], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{method:<16} mergekit failed: {proc.stderr.strip().splitlines()[-1]}")
                failed = True
                continue
            ours, theirs = tensors(exported), tensors(out)
            if ours.keys() != theirs.keys():
                print(f"{method:<16} tensor sets differ: {sorted(ours.keys() ^ theirs.keys())[:3]}")
                failed = True
                continue
            worst = max(float((ours[k].float() - theirs[k].float()).abs().max()) for k in ours)
            failed |= worst > TOLERANCE
            print(f"{method:<16} {worst:>34.3g}")
    print("FAIL" if failed else f"all within {TOLERANCE:g}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
