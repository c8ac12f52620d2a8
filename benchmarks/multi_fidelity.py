"""Successive halving against full evaluation: the same search, the same best, fewer full-set scores.

The toy problem is real merging on real data: a small MLP is trained on the ``train`` split of scikit-learn's
digits, and four specialists are fine-tuned from it, each on a group of classes (0-2, 3-5, 6-7, 8-9), so each
is good at its classes and worse at the others. The search looks for task-arithmetic weights (one per
specialist, in [0, 1]) maximising ``accuracy`` on the ``search`` split. Every candidate goes through the
real path: ``evomerge.search`` assembles the run from its config, the sequential pool's evaluator merges
in place, the ``accuracy`` suite scores a seeded subset or all examples, and the population manager runs
successive halving when ``evaluation.multi_fidelity`` is set.

Each (strategy, seed) pair runs twice, without and with halving, on the same candidate budget. The
``random`` strategy ignores results, so both runs see identical candidates and the best must be the same
one: halving may only save full-set evaluations, never lose the winner. CMA-ES is told subset scores for
the candidates that were not promoted, so its two runs diverge after the first generation; its rows
compare best full-set scores, not uids. The acceptance target: for every random-strategy pair, the same
best candidate with at least 40% fewer full-set evaluations.

Run from the repository: ``../shared/tools/offline .venv/bin/python benchmarks/multi_fidelity.py``
(``--seeds 0 1 2 --budget 64`` by default; under a minute on two cores once the models are built).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from evomerge.search import run, start
from fitness import build_suite
from fitness.datasets import load_split

WORK = Path(__file__).resolve().parent / "_work" / "multi_fidelity"
SPLIT = (0.5, 0.4, 0.1)
"""train / search / test fractions of the 1,797 digits: the search split has 719 examples."""
CLASS_GROUPS = ((0, 1, 2), (3, 4, 5), (6, 7), (8, 9))
HIDDEN = 32
TARGET_SAVING = 0.40
FITNESS = {"name": "accuracy", "dataset": "digits", "split": "search", "split_fractions": list(SPLIT)}


# ---------------------------------------------------------------------- the source models
class DigitsMLP(torch.nn.Module):
    """64 -> 32 -> 10 ReLU classifier whose linear maps are numbered blocks (``layers.0``, ``layers.1``), the
    naming the merge planner reads layers from."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(64, hidden), torch.nn.Linear(hidden, 10)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](torch.relu(self.layers[0](x)))


def load_classifier(path: str) -> torch.nn.Module:
    """``models.model_class`` loader: a :class:`DigitsMLP` with a folder's weights."""
    folder = Path(path)
    model = DigitsMLP(int(json.loads((folder / "config.json").read_text())["hidden"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()


def _train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int, lr: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    inputs, labels = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = torch.randint(len(labels), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _save(model: torch.nn.Module, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"hidden": HIDDEN, "num_hidden_layers": 2}))


def build_family(root: Path) -> dict[str, Path]:
    """A briefly trained base and one specialist per class group, fine-tuned from it (cached in ``root``).

    A specialist sees its group's examples and a tenth of the others, so it improves on its classes without
    forgetting the rest entirely; merging the four beats each of them and the base (printed first).
    """
    names = ["base"] + [f"classes_{''.join(map(str, g))}" for g in CLASS_GROUPS]
    family = {name: root / name for name in names}
    recipe = json.dumps({"split": SPLIT, "groups": CLASS_GROUPS, "hidden": HIDDEN, "steps": [30, 150], "others": 0.1})
    if (root / "DONE").is_file() and (root / "DONE").read_text() == recipe:
        return family
    shutil.rmtree(root, ignore_errors=True)
    train = load_split("digits", "train", SPLIT, 0)
    torch.manual_seed(0)
    model = DigitsMLP()
    _train(model, train.x, train.y, steps=30, lr=3e-3, seed=0)
    _save(model, family["base"])
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    for i, group in enumerate(CLASS_GROUPS):
        model.load_state_dict(base_state)
        mask = np.isin(train.y, group) | (rng.random(len(train.y)) < 0.1)
        _train(model, train.x[mask], train.y[mask], steps=150, lr=3e-3, seed=1 + i)
        _save(model, family[names[1 + i]])
    (root / "DONE").write_text(recipe)
    return family


def source_accuracies(family: dict[str, Path]) -> str:
    """Each source model's search-split accuracy, scored by the same suite the search uses."""
    suite = build_suite(FITNESS)
    return ", ".join(f"{name} {suite(load_classifier(str(path))).objectives['accuracy']:.4f}" for name, path in family.items())


# ---------------------------------------------------------------------- one search
BATCH = 8


@dataclass(frozen=True)
class Outcome:
    full: int
    """Full-set evaluations actually run (cache copies excluded)."""
    subset: int
    examples: int
    """Examples scored in all: the compute the evaluations cost."""
    best_uid: str
    best_genome: tuple[float, ...]
    best_score: float
    best_subset_rank: int | None
    """With halving: the winner's place on the subset within its batch (1 = first); it survives up to the quota."""


def search_config(family: dict[str, Path], strategy: dict[str, Any], seed: int, budget: int,
                  halving: dict[str, float] | None) -> dict[str, Any]:
    return {
        "seed": seed,
        "models": {"base": str(family["base"]), "sources": [str(p) for k, p in family.items() if k != "base"],
                   "model_class": f"{Path(__file__).resolve()}:load_classifier"},
        "search_space": {"name": "global", "merge_method": "task_arithmetic",
                         "parameters": {"weight": {"low": 0.0, "high": 1.0}}},
        "strategy": strategy,
        "fitness": FITNESS,
        "budget": {"evaluations": budget},
        "evaluation": {"batch_size": BATCH, "multi_fidelity": halving},
        "tracking": {"console": False},
    }


def subset_rank(records: list[dict[str, Any]], uid: str) -> int | None:
    """``uid``'s place among its batch's subset scores (halving scores a whole batch on the subset first, so
    a batch's subset records are ``BATCH`` consecutive lines); None without a subset score."""
    subset = [r for r in records if r["fidelity"] != "full" and r["cached_from"] is None]
    where = next((i for i, r in enumerate(subset) if r["uid"] == uid), None)
    if where is None:
        return None
    batch = subset[where - where % BATCH : where - where % BATCH + BATCH]
    ranked = sorted(range(len(batch)), key=lambda i: (-batch[i]["objectives"]["accuracy"], i))
    return 1 + ranked.index(where % BATCH)


def run_search(config: dict[str, Any], folder: Path) -> Outcome:
    """One search through ``evomerge.search`` (what ``evomerge search CONFIG`` runs), read back from its JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    search, resumed = start(config_path, folder / "run", [], overwrite=True)
    summary = run(search, resumed)
    records = [json.loads(line) for line in (folder / "run" / "evaluations.jsonl").read_text().splitlines()]
    fresh = [r for r in records if r["cached_from"] is None]
    best = next(r for r in records if r["uid"] == summary["best_uid"] and r["fidelity"] == "full")
    return Outcome(
        full=sum(1 for r in fresh if r["fidelity"] == "full"),
        subset=sum(1 for r in fresh if r["fidelity"] != "full"),
        examples=sum(int(r["metrics"].get("n_examples", 0)) for r in fresh),
        best_uid=best["uid"],
        best_genome=tuple(round(float(g), 4) for g in best["genome"]),
        best_score=float(best["objectives"]["accuracy"]),
        best_subset_rank=subset_rank(records, best["uid"]),
    )


# ---------------------------------------------------------------------- the comparison
def row(name: str, seed: int, label: str, o: Outcome) -> str:
    rank = "" if o.best_subset_rank is None else f"{o.best_subset_rank}/{BATCH}"
    return (f"{name:8} {seed:>4} {label:>7} {o.full:>5} {o.subset:>6} {o.examples:>8} {rank:>6}  "
            f"{o.best_uid} {o.best_score:.4f} {list(o.best_genome)}")


def compare(off: Outcome, on: Outcome, same_candidates: bool) -> tuple[float, bool, str]:
    """(fraction of full-set evaluations saved, same best, the verdict line)."""
    saving = 1 - on.full / off.full
    same = on.best_uid == off.best_uid and on.best_genome == off.best_genome
    if same:
        verdict = "same best"
    elif same_candidates:
        verdict = f"BEST LOST (accuracy {off.best_score:.4f} -> {on.best_score:.4f})"
    else:
        verdict = f"other trajectory: best accuracy {off.best_score:.4f} off, {on.best_score:.4f} on"
    line = (f"{'':14} -> {saving:.0%} fewer full-set evaluations, "
            f"{1 - on.examples / off.examples:.0%} fewer examples scored; {verdict}")
    return saving, same, line


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=64, help="candidates per search")
    parser.add_argument("--subset", type=float, default=0.25, help="evaluation.multi_fidelity.subset")
    parser.add_argument("--promote", type=float, default=0.5, help="evaluation.multi_fidelity.promote")
    parser.add_argument("--strategies", nargs="+", default=["random", "cmaes"])
    args = parser.parse_args()
    family = build_family(WORK / "family")
    halving = {"subset": args.subset, "promote": args.promote}
    print(f"digits accuracy ({load_split('digits', 'search', SPLIT, 0).y.size} search examples), task arithmetic "
          f"over {len(CLASS_GROUPS)} specialists; {args.budget} candidates in batches of {BATCH}; "
          f"halving: subset {args.subset:g}, promote {args.promote:g}")
    print(f"sources: {source_accuracies(family)}")
    print("full/subset: evaluations run; examples: examples scored in all; rank: the winner's subset place in its batch\n")
    header = f"{'strategy':8} {'seed':>4} {'halving':>7} {'full':>5} {'subset':>6} {'examples':>8} {'rank':>6}  best: uid, accuracy, weights"
    print(header)
    print("-" * len(header))
    missed = []
    for name in args.strategies:
        strategy = {"name": name, "popsize": BATCH} if name == "cmaes" else {"name": name}
        for seed in args.seeds:
            outcomes = {}
            for label, mf in (("off", None), ("on", halving)):
                config = search_config(family, strategy, seed, args.budget, mf)
                outcomes[label] = run_search(config, WORK / "runs" / f"{name}-{seed}-{label}")
                print(row(name, seed, label, outcomes[label]))
            saving, same, line = compare(outcomes["off"], outcomes["on"], same_candidates=name == "random")
            print(line)
            if name == "random" and not (same and saving >= TARGET_SAVING):
                missed.append(f"seed {seed}")
    print()
    if missed:
        print(f"target missed for the random strategy (same best, >= {TARGET_SAVING:.0%} fewer full-set evaluations): "
              f"{', '.join(missed)}")
        return 1
    print(f"target met for the random strategy on every seed: same best, >= {TARGET_SAVING:.0%} fewer full-set evaluations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
