"""How long `evomerge validate` takes on three ~134M-parameter Llama checkpoints (target: under 2 s).

Builds three randomly initialised SmolLM2-135M-shaped Llama models on disk (fp32, ~0.5 GB each, cached in
the work folder), writes a task-arithmetic recipe over them, then times `evomerge validate` in-process
(median of several runs, after one warm-up that pays the imports) and once as a cold subprocess, which
includes Python's and torch's start-up. Validate reads headers only, so its time should not depend on the
size of the weights.

    ../shared/tools/offline .venv/bin/python benchmarks/validate_speed.py [--work DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

SMOL_SHAPE = {"vocab_size": 49152, "hidden": 576, "layers": 30, "heads": 9, "intermediate_size": 1536,
              "num_key_value_heads": 3, "tie_word_embeddings": True}


def build_models(work: Path) -> list[Path]:
    from evomerge.tiny_models import make_tiny_model

    paths = []
    for seed in range(3):
        out = work / f"llama134m-{seed}"
        if not (out / "model.safetensors").is_file():
            model = make_tiny_model(out, seed=seed, **SMOL_SHAPE)
            print(f"built {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
            del model
        paths.append(out)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/_work/validate_speed"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    models = build_models(args.work)
    recipe = args.work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "task_arithmetic", "base_model": str(models[0]),
        "models": [{"model": str(m), "parameters": {"weight": 0.5}} for m in models[1:]],
    }))
    weight_bytes = sum((m / "model.safetensors").stat().st_size for m in models)

    from click.testing import CliRunner

    from evomerge.cli import main as cli

    runner = CliRunner()
    first = runner.invoke(cli, ["validate", str(recipe), "--json"])
    if first.exit_code != 0:
        raise SystemExit(f"validate failed:\n{first.output}")
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        runner.invoke(cli, ["validate", str(recipe), "--json"])
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    cold = subprocess.run([sys.executable, "-m", "evomerge.cli", "validate", str(recipe), "--json"],
                          capture_output=True, text=True, check=False)
    cold_s = time.perf_counter() - start
    if cold.returncode != 0:
        raise SystemExit(f"cold validate failed:\n{cold.stderr}")
    print(f"weights on disk: {weight_bytes / 1e9:.2f} GB in 3 checkpoints")
    print(f"evomerge validate, in-process: median {statistics.median(times):.3f} s, "
          f"max {max(times):.3f} s over {args.repeats} runs")
    print(f"evomerge validate, cold subprocess (interpreter + imports included): {cold_s:.3f} s")


if __name__ == "__main__":
    main()
