"""Merge quality of data-free, data-aware and structural operators: joint accuracy on held-out data.

A base MLP is trained briefly on all ten classes, then one copy per disjoint class subset is fine-tuned on
that subset only (each specialist forgets the other classes). The specialists are merged back into one
model by each operator, through the real planner and executor (``compile_plan`` + ``MergeExecutor``, in
memory): data-free task_arithmetic, ties and consensus, with λ picked on the ``search`` split, and the
data-aware fisher and regmean, with statistics collected once per specialist on its own training classes
(``evomerge.statistics``). PLeaS (``evomerge.merge.pleas``, a whole-model merge that may widen the hidden
layers) matches and refits on the activations of every specialist on the same unlabelled rows: the
``train`` split, all classes, labels unused. It prints one table: accuracy on the ``test`` split over all
classes, and on each subset.

A second table (``--inits different``, or ``both``) repeats the data-aware and structural merges for
specialists that do not share a base: each starts from its own random init (same brief all-class
training, then the same fine-tuning), where hidden units no longer line up and permutations matter. The
task-vector operators need a shared base and are left out there.

    ../shared/tools/offline .venv/bin/python benchmarks/operators_quality.py [--seed 0] [--dataset mnist] [--inits both]

About 4 minutes for both tables on 2 shared CPU cores with ``--dataset mnist``, nearly all of it the expected Fisher
(one backward pass per class per example); PLeaS takes about a second per width.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from evomerge.merge.executor import MergeExecutor
from evomerge.merge.planner import SourceInfo, compile_plan
from evomerge.merge.pleas import PleasSettings, pleas_merge
from evomerge.plan import MergePlan
from evomerge.statistics import StatisticsSettings, classification_data, collect_statistics
from evomerge.statistics.activations import ActivationSettings, collect_activations
from fitness.datasets import load_split

SUBSETS = ((0, 1, 2), (3, 4, 5), (6, 7, 8, 9))
LAMBDAS = (0.3, 0.5, 0.7, 1.0)
CALIBRATION_EXAMPLES = 1024
"""Rows per model for every data-aware method. RegMean's first-layer Grams need more rows than MNIST's 784
inputs: with 256 per specialist its joint accuracy falls to about 0.49 (0.87 with 1024)."""


class LayeredMLP(nn.Module):
    """A ReLU MLP whose tensors are named ``layers.<i>.*``, so the planner sees one layer per Linear."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def fresh_mlp(sizes: Sequence[int], seed: int) -> LayeredMLP:
    """A randomly initialised MLP whose init depends on ``seed`` alone (not on what ran before)."""
    torch.manual_seed(seed)
    return LayeredMLP(sizes)


def tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(split.x.copy()), torch.from_numpy(split.y.copy())


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Sequence[int] | None = None) -> float:
    if classes is not None:
        keep = torch.isin(y, torch.tensor(classes))
        x, y = x[keep], y[keep]
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def merge(plan: dict[str, Any], states: dict[str, dict[str, torch.Tensor]], template: nn.Module) -> nn.Module:
    """The merged model of ``plan`` over in-memory state dicts, through the planner and the executor."""
    infos = {r: SourceInfo(r, {n: tuple(t.shape) for n, t in sd.items()}, {}) for r, sd in states.items()}
    compiled = compile_plan(MergePlan.from_dict({"dialect": "evomerge", **plan}), infos)
    executor = MergeExecutor(compiled, lambda i, n: states[compiled.sources[i]][n])
    merged = copy.deepcopy(template)
    merged.load_state_dict({task.out_name: tensor.clone() for task, tensor in executor})
    return merged.eval()


def data_aware_rows(specialists: Sequence[nn.Module], states: dict[str, dict[str, torch.Tensor]],
                    template: nn.Module, args: argparse.Namespace, cache: str) -> list[tuple[str, nn.Module]]:
    """fisher and regmean, each specialist's statistics collected on its own training classes."""
    settings = StatisticsSettings(fisher_labels=args.fisher_labels, max_examples=CALIBRATION_EXAMPLES)
    folders = [
        collect_statistics(m, classification_data(args.dataset, "train", classes=s), settings,
                           cache_dir=cache, progress=False).path
        for m, s in zip(specialists, SUBSETS)
    ]
    with_stats = [{"model": f"ft{i}", "parameters": {"statistics": str(f)}} for i, f in enumerate(folders)]
    rows = []
    for normalize in (False, True):
        label = f"fisher ({args.fisher_labels}{', normalized' if normalize else ''})"
        plan = {"merge_method": "fisher", "models": with_stats, "parameters": {"normalize_fisher": normalize}}
        rows.append((label, merge(plan, states, template)))
    for alpha in (0.95, 0.5, 1.0):
        rows.append((f"regmean α={alpha}", merge({"merge_method": "regmean", "models": with_stats,
                                                  "parameters": {"alpha": alpha}}, states, template)))
    return rows


def pleas_rows(specialists: Sequence[nn.Module], dataset: str, cache: str,
               shared_base: bool) -> list[tuple[str, nn.Module]]:
    """PLeaS at several merged widths, on every specialist's activations over the same unlabelled rows."""
    calibration = classification_data(dataset, "train")
    folders = [collect_activations(m, calibration, ActivationSettings(max_examples=CALIBRATION_EXAMPLES), cache_dir=cache)
               for m in specialists]
    states = [m.state_dict() for m in specialists]
    rows = []
    settings = [("permute+average, no LS", PleasSettings(refit=False))]
    settings += [(f"width ×{r:g}", PleasSettings(width_ratio=r)) for r in (1.0, 1.5, 2.0, float(len(SUBSETS)))]
    if shared_base:  # the base's units still line up: skip the permutation, keep the partial merge and refit
        settings += [(f"unpermuted, width ×{r:g}", PleasSettings(width_ratio=r, matching="identity")) for r in (1.0, 2.0)]
    for label, setting in settings:
        result = pleas_merge(states, folders, setting)
        merged = LayeredMLP(result.widths)
        merged.load_state_dict(result.state)
        rows.append((f"pleas {label} {result.widths[1:-1]}", merged.eval()))
    return rows


def print_table(title: str, rows: Sequence[tuple[str, nn.Module]], x: torch.Tensor, y: torch.Tensor) -> None:
    header = f"{'model':44s} {'joint':>6s} " + " ".join(f"{list(s)!s:>13s}" for s in SUBSETS)
    print(title)
    print(header)
    print("-" * len(header))
    for label, model in rows:
        parts = " ".join(f"{accuracy(model, x, y, s):13.3f}" for s in SUBSETS)
        print(f"{label:44s} {accuracy(model, x, y):6.3f} {parts}")
    print()


def fine_tune(starts: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, seed: int) -> list[nn.Module]:
    """One specialist per class subset, fine-tuned from ``starts[i]`` on that subset only."""
    out = []
    for i, (start, subset) in enumerate(zip(starts, SUBSETS)):
        keep = torch.isin(y, torch.tensor(subset))
        out.append(train(copy.deepcopy(start).train(), x[keep], y[keep], 300, 3e-3, seed + 1 + i))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    ap.add_argument("--fisher-labels", default="expected", choices=("expected", "sampled", "predicted", "true"))
    ap.add_argument("--inits", default="shared", choices=("shared", "different", "both"),
                    help="specialists fine-tuned from one shared base, from different random inits, or both tables")
    args = ap.parse_args()
    xtr, ytr = tensors(load_split(args.dataset, "train"))
    xva, yva = tensors(load_split(args.dataset, "search"))
    xte, yte = tensors(load_split(args.dataset, "test"))
    sizes = (xtr.shape[1], 64, 64, 10)
    print(f"{args.dataset}: {len(ytr)} train / {len(yva)} search / {len(yte)} test rows, seed {args.seed}\n")
    if args.inits in ("shared", "both"):
        base = train(fresh_mlp(sizes, args.seed), xtr, ytr, steps=40, lr=3e-3, seed=args.seed)
        specialists = fine_tune([base] * len(SUBSETS), xtr, ytr, args.seed)
        states = {"base": base.state_dict()} | {f"ft{i}": m.state_dict() for i, m in enumerate(specialists)}
        rows: list[tuple[str, nn.Module]] = [("base (all classes, brief)", base)]
        rows += [(f"specialist {i} {list(s)}", m) for i, (s, m) in enumerate(zip(SUBSETS, specialists))]
        fts = [{"model": f"ft{i}"} for i in range(len(SUBSETS))]
        rows.append(("average (linear)", merge({"merge_method": "linear", "models": fts}, states, base)))
        for method, extra in (("task_arithmetic", {}), ("ties", {"density": 0.2}), ("consensus", {"k": 2})):
            candidates = [merge({"merge_method": method, "base_model": "base", "models": fts,
                                 "parameters": {"lambda": lam, **extra}}, states, base) for lam in LAMBDAS]
            best = max(range(len(LAMBDAS)), key=lambda j: accuracy(candidates[j], xva, yva))
            rows.append((f"{method} (λ={LAMBDAS[best]} on search)", candidates[best]))
        with tempfile.TemporaryDirectory() as cache:
            rows += data_aware_rows(specialists, states, base, args, cache)
            rows += pleas_rows(specialists, args.dataset, cache, shared_base=True)
        print_table("specialists fine-tuned from one shared base", rows, xte, yte)
    if args.inits in ("different", "both"):
        seeds = [args.seed + 100 * (i + 1) for i in range(len(SUBSETS))]
        starts = [train(fresh_mlp(sizes, s), xtr, ytr, steps=40, lr=3e-3, seed=s) for s in seeds]
        specialists = fine_tune(starts, xtr, ytr, args.seed)
        states = {f"ft{i}": m.state_dict() for i, m in enumerate(specialists)}
        rows = [(f"specialist {i} {list(s)}", m) for i, (s, m) in enumerate(zip(SUBSETS, specialists))]
        fts = [{"model": f"ft{i}"} for i in range(len(SUBSETS))]
        rows.append(("average (linear)", merge({"merge_method": "linear", "models": fts}, states, specialists[0])))
        with tempfile.TemporaryDirectory() as cache:
            rows += data_aware_rows(specialists, states, specialists[0], args, cache)
            rows += pleas_rows(specialists, args.dataset, cache, shared_base=False)
        print_table("specialists fine-tuned from different random inits (no shared base)", rows, xte, yte)


if __name__ == "__main__":
    main()
