"""Merge throughput and memory: evomerge vs mergekit-yaml vs a memory-bandwidth floor, in one run.

Builds three random-init Llama checkpoints (about 134M parameters each, fp32, on disk, cached under
benchmarks/_work), then for `linear` (three models) and `ties` (a base and two models) prints:

* evomerge: wall time of the `evomerge merge` command, its merge time measured inside the process
  (without interpreter start-up), and its peak RSS;
* mergekit-yaml (with --mergekit-venv): wall time and peak RSS;
* the floor: reading every input file once (large sequential reads into one reused buffer) and writing the
  output's bytes once, in-process, page cache warm: the memory-bandwidth cost no merge can beat;
* the ratios: mergekit wall / evomerge wall (target ≥ 5), evomerge merge / floor (target ≤ 4), and
  evomerge RSS / mergekit RSS (target ≤ 1).

    python benchmarks/merge_throughput.py [--mergekit-venv VENV] [--hidden 768 --layers 12]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def build_models(work: Path, hidden: int, layers: int, vocab: int) -> list[Path]:
    from evomerge.tiny_models import make_tiny_model

    paths = []
    for seed in range(3):
        path = work / f"llama-h{hidden}-l{layers}-v{vocab}-s{seed}"
        if not (path / "config.json").is_file():
            print(f"building {path.name} ...", flush=True)
            make_tiny_model(path, arch="llama", seed=seed, hidden=hidden, layers=layers, heads=12,
                            vocab_size=vocab, tokenizer=False, intermediate_size=hidden * 8 // 3)
        paths.append(path)
    return paths


def n_params(path: Path) -> int:
    from evomerge.io import Checkpoint

    return sum(m.numel for m in Checkpoint(path).meta.values())


def warm(paths: list[Path]) -> None:
    """Read every file once so that every tool starts from the same (warm) page cache."""
    for p in paths:
        for f in p.glob("*.safetensors"):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of the child, and its stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {err.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024, out


EVOMERGE_INNER = """
import json, sys, time
from evomerge.merge.to_disk import merge_to_disk
from evomerge.plan import MergePlan
plan = MergePlan.from_yaml(sys.argv[1])
t = time.perf_counter()
merge_to_disk(plan, sys.argv[2], overwrite=True, progress=False)
print(json.dumps({"merge_seconds": time.perf_counter() - t}))
"""

FLOOR_INNER = """
import json, os, sys, time
import torch
inputs, out, out_bytes = sys.argv[1:-2], sys.argv[-2], int(sys.argv[-1])
t = time.perf_counter()
for path in inputs:  # read every input byte once, in large sequential reads into a reused buffer
    size = os.path.getsize(path)
    buf = torch.empty(size, dtype=torch.uint8)
    with open(path, "rb", buffering=0) as fh:
        view, done = memoryview(buf.numpy()), 0
        while done < size:
            done += fh.readinto(view[done:])
    del buf
data = torch.empty(out_bytes, dtype=torch.uint8)  # write the output's bytes once
with open(out, "wb", buffering=0) as fh:
    fh.write(memoryview(data.numpy()))
print(json.dumps({"floor_seconds": time.perf_counter() - t}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mergekit-venv", type=Path, default=None)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "throughput")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    models = build_models(args.work, args.hidden, args.layers, args.vocab)
    total = n_params(models[0])
    print(f"3 checkpoints of {total / 1e6:.1f}M parameters (fp32, {total * 4 / 2**20:.0f} MiB each)")
    recipes = {
        "linear": {"merge_method": "linear", "models": [{"model": str(m), "parameters": {"weight": w}}
                                                         for m, w in zip(models, (0.5, 0.3, 0.2))]},
        "ties": {"merge_method": "ties", "base_model": str(models[0]), "models": [
            {"model": str(models[1]), "parameters": {"weight": 0.6, "density": 0.5}},
            {"model": str(models[2]), "parameters": {"weight": 0.4, "density": 0.5}}]},
    }
    exe = Path(sys.executable)
    rows = []
    for method, recipe in recipes.items():
        path = args.work / f"{method}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        files = [str(f) for m in models for f in sorted(m.glob("*.safetensors"))]
        out = args.work / f"out-{method}"
        warm(models)
        out_bytes = sum(f.stat().st_size for f in sorted(models[0].glob("*.safetensors")))
        _floor_wall, floor_rss, floor_out = run_measured(
            [str(exe), "-c", FLOOR_INNER, *files, str(args.work / "floor.bin"), str(out_bytes)])
        floor = json.loads(floor_out.strip().splitlines()[-1])["floor_seconds"]
        warm(models)
        evo_wall, evo_rss, _ = run_measured([str(exe.parent / "evomerge"), "merge", str(path), str(out), "--overwrite", "-q"])
        warm(models)
        _, _, inner_out = run_measured([str(exe), "-c", EVOMERGE_INNER, str(path), str(out)])
        evo_merge = json.loads(inner_out.strip().splitlines()[-1])["merge_seconds"]
        mk_wall = mk_rss = float("nan")
        if args.mergekit_venv:
            warm(models)
            mk_out = args.work / f"out-{method}-mergekit"
            shutil.rmtree(mk_out, ignore_errors=True)
            mk_wall, mk_rss, _ = run_measured([str(args.mergekit_venv / "bin" / "mergekit-yaml"), str(path), str(mk_out)])
        rows.append((method, evo_wall, evo_merge, evo_rss, mk_wall, mk_rss, floor, floor_rss))
    print(f"\n{'method':<8} {'evomerge wall':>13} {'merge only':>10} {'evo RSS MiB':>11} {'mergekit wall':>13} "
          f"{'mk RSS MiB':>10} {'floor':>7} {'floor RSS':>9} | {'mk/evo wall':>11} {'evo/floor':>9} {'RSS evo/mk':>10}")
    for method, ew, em, er, mw, mr, fl, fr in rows:
        print(f"{method:<8} {ew:>12.2f}s {em:>9.2f}s {er:>11.0f} {mw:>12.2f}s {mr:>10.0f} {fl:>6.2f}s {fr:>9.0f} | "
              f"{mw / ew:>10.2f}x {em / fl:>8.2f}x {er / mr:>10.2f}")
    print("targets: mergekit/evomerge wall >= 5x; evomerge merge / floor <= 4x; RSS evomerge/mergekit <= 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
