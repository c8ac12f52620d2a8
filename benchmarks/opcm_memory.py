"""Peak memory of an OPCM merge against the number of merged models (2, 4, 8), with contrasts.

Builds a random-init Llama base (hidden 768, one layer by default, so every projection is a few MiB of
fp32) and 8 perturbed copies, cached under benchmarks/_work/opcm_memory. For each method and N it runs
``merge_to_disk`` on a recipe over the first N copies in a fresh subprocess (one intra-op thread, page
cache warm) and reports:

* peak RSS (``VmHWM``, reset after the imports): everything resident, file-backed pages included;
* peak anonymous memory (``RssAnon`` of /proc/self/status, sampled every millisecond by a thread in the
  child): what the merge itself allocates, which is where a method's dependence on N shows. A fixed
  ``MALLOC_MMAP_THRESHOLD_`` makes glibc return every large block when it is freed, so this follows the
  live tensors instead of the heap's high-water mark after many allocate/free cycles;
* both above an idle child that only imports the engine, and their ratio to N = 2.

Contrasts: ``task_arithmetic`` (streams one input at a time, the flat reference) and ``model_stock``
(holds all N task vectors of a tensor at once). The executor maps the N input tensors of a weight
together (populated at once), so the file-backed part of RSS grows by about N × the largest tensor for
every method; the anonymous peak is the operator's own.

    python benchmarks/opcm_memory.py [--hidden 768] [--layers 1] [--counts 2 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
METHODS = ("opcm", "task_arithmetic", "model_stock")

CHILD = r"""
import json, sys, threading, time

def status_kib(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

import torch
torch.set_num_threads(1)
from evomerge.merge.to_disk import merge_to_disk
from evomerge.plan import MergePlan

with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM: the peak below is the merge's, not the imports'
    fh.write("5")
peak = [status_kib("RssAnon")]
done = threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], status_kib("RssAnon"))
        time.sleep(0.001)

thread = threading.Thread(target=sample, daemon=True)
thread.start()
seconds = 0.0
if sys.argv[1] != "idle":
    plan = MergePlan.from_yaml(sys.argv[1])
    start = time.perf_counter()
    merge_to_disk(plan, sys.argv[2], overwrite=True, progress=False)
    seconds = time.perf_counter() - start
done.set()
thread.join()
peak[0] = max(peak[0], status_kib("RssAnon"))
print(json.dumps({"rss_mib": status_kib("VmHWM") / 1024, "anon_mib": peak[0] / 1024, "seconds": seconds}))
"""


def build_models(work: Path, hidden: int, layers: int, count: int) -> tuple[Path, list[Path]]:
    from evomerge.tiny_models import make_tiny_model, perturbed_copy

    stem = f"llama-h{hidden}-l{layers}"
    base = work / f"{stem}-base"
    if not (base / "config.json").is_file():
        print(f"building {base.name} ...", flush=True)
        make_tiny_model(base, arch="llama", seed=0, hidden=hidden, layers=layers, heads=max(1, hidden // 64), tokenizer=False,
                        intermediate_size=hidden * 8 // 3)
    models = []
    for i in range(count):
        path = work / f"{stem}-ft{i}"
        if not (path / "config.json").is_file():
            print(f"building {path.name} ...", flush=True)
            perturbed_copy(base, path, seed=100 + i, scale=0.01)
        models.append(path)
    return base, models


def largest_tensor_mib(path: Path) -> float:
    from evomerge.io import Checkpoint

    return max(m.nbytes for m in Checkpoint(path).meta.values()) / 2**20


def warm(paths: list[Path]) -> None:
    for p in paths:
        for f in p.glob("*.safetensors"):
            f.read_bytes()


def run_child(args: list[str]) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"merge child failed: {done.stderr.strip()[-800:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def write_recipe(path: Path, method: str, base: Path, models: list[Path]) -> Path:
    recipe = {
        "merge_method": method,
        "base_model": str(base),
        "models": [{"model": str(m)} for m in models],
        "dtype": "float32",
        "dialect": "evomerge",
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def ratio(value: float, reference: float) -> float:
    """value / reference, NaN where the reference is under 1 MiB (noise)."""
    return value / reference if reference >= 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "opcm_memory")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    base, models = build_models(args.work, args.hidden, args.layers, max(args.counts))
    warm([base, *models])
    largest = largest_tensor_mib(base)
    idle = run_child(["idle"])
    print(f"\nllama hidden {args.hidden}, {args.layers} layer(s); largest tensor {largest:.1f} MiB; idle child: "
          f"RSS {idle['rss_mib']:.0f} MiB, anon {idle['anon_mib']:.0f} MiB\n")
    header = (f"{'method':<16}{'N':>3}{'seconds':>9}{'peak RSS':>10}{'RSS-idle':>10}{'x N=2':>7}"
              f"{'peak anon':>11}{'anon-idle':>11}{'x N=2':>7}{'N x largest':>13}")
    print(header + "\n" + "-" * len(header))
    for method in args.methods:
        first: tuple[float, float] | None = None
        for n in args.counts:
            recipe = write_recipe(args.work / f"{method}-{n}.yaml", method, base, models[:n])
            r = run_child([str(recipe), str(args.work / f"out-{method}")])
            rss, anon = r["rss_mib"] - idle["rss_mib"], r["anon_mib"] - idle["anon_mib"]
            first = first or (rss, anon)
            print(f"{method:<16}{n:>3}{r['seconds']:>9.1f}{r['rss_mib']:>10.0f}{rss:>10.1f}{ratio(rss, first[0]):>7.2f}"
                  f"{r['anon_mib']:>11.0f}{anon:>11.1f}{ratio(anon, first[1]):>7.2f}{n * largest:>13.1f}", flush=True)
    print("\nMiB; 'x N=2': the column to its left over its N = 2 value. Anonymous peaks are sampled (1 ms).")


if __name__ == "__main__":
    main()
