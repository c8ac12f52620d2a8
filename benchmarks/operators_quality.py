"""Merge quality of data-free and data-aware operators on sklearn digits: joint accuracy on held-out data.

A base MLP is trained briefly on all ten classes, then one copy per disjoint class subset is fine-tuned on
that subset only (each specialist forgets the other classes). The specialists are merged back into one
model by each operator, through the real planner and executor (``compile_plan`` + ``MergeExecutor``, in
memory): data-free task_arithmetic, ties and consensus, with λ picked on the ``search`` split, and the
data-aware fisher and regmean, with statistics collected once per specialist on its own training classes
(``evomerge.statistics``). It prints one table: accuracy on the ``test`` split over all classes, and on
each subset.

    ../shared/tools/offline .venv/bin/python benchmarks/operators_quality.py [--seed 0] [--dataset digits]
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
from evomerge.plan import MergePlan
from evomerge.statistics import StatisticsSettings, classification_data, collect_statistics
from fitness.datasets import load_split

SUBSETS = ((0, 1, 2), (3, 4, 5), (6, 7, 8, 9))
LAMBDAS = (0.3, 0.5, 0.7, 1.0)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    ap.add_argument("--fisher-labels", default="expected", choices=("expected", "sampled", "predicted", "true"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    xtr, ytr = tensors(load_split(args.dataset, "train"))
    xva, yva = tensors(load_split(args.dataset, "search"))
    xte, yte = tensors(load_split(args.dataset, "test"))
    n_in = xtr.shape[1]
    base = train(LayeredMLP((n_in, 64, 64, 10)), xtr, ytr, steps=40, lr=3e-3, seed=args.seed)
    specialists = []
    for i, subset in enumerate(SUBSETS):
        keep = torch.isin(ytr, torch.tensor(subset))
        specialists.append(train(copy.deepcopy(base).train(), xtr[keep], ytr[keep], 300, 3e-3, args.seed + 1 + i))
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
        settings = StatisticsSettings(fisher_labels=args.fisher_labels, max_examples=256)
        folders = [
            collect_statistics(m, classification_data(args.dataset, "train", classes=s), settings,
                               cache_dir=cache, progress=False).path
            for m, s in zip(specialists, SUBSETS)
        ]
        with_stats = [{"model": f"ft{i}", "parameters": {"statistics": str(f)}} for i, f in enumerate(folders)]
        for normalize in (False, True):
            label = f"fisher ({args.fisher_labels}{', normalized' if normalize else ''})"
            plan = {"merge_method": "fisher", "models": with_stats, "parameters": {"normalize_fisher": normalize}}
            rows.append((label, merge(plan, states, base)))
        for alpha in (0.95, 0.5, 1.0):
            rows.append((f"regmean α={alpha}", merge({"merge_method": "regmean", "models": with_stats,
                                                      "parameters": {"alpha": alpha}}, states, base)))

    header = f"{'model':34s} {'joint':>6s} " + " ".join(f"{list(s)!s:>13s}" for s in SUBSETS)
    print(f"{args.dataset}: {len(ytr)} train / {len(yva)} search / {len(yte)} test rows, seed {args.seed}")
    print(header)
    print("-" * len(header))
    for label, model in rows:
        parts = " ".join(f"{accuracy(model, xte, yte, s):13.3f}" for s in SUBSETS)
        print(f"{label:34s} {accuracy(model, xte, yte):6.3f} {parts}")


if __name__ == "__main__":
    main()
