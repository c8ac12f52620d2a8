"""Deterministic generator of the bundled multiple-choice tasks (``evomerge_arith``, ``_strings``, ``_facts``).

Each task is a pool of distinct questions (one right answer, a pool of plausible wrong ones) cut by a seeded
permutation into three disjoint splits: ``train`` (the few-shot pool), ``search`` (what a search optimises
on) and ``test`` (held out). Distractors are drawn from the same kind of strings as the answers (nearby
numbers, same-length words, other capitals), so a model with no knowledge, such as a random tiny model,
scores at chance in expectation, whatever its preference for particular characters or lengths.

The JSONL files next to this module are this generator's output for :data:`DEFAULT_SEED`;
``python -m fitness.tasks.generate --check`` verifies that they still are.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evomerge.seeding import SeedTree
from fitness.tasks import vocabulary as voc

DEFAULT_SEED = 20240611
N_CHOICES = 4
SPLITS = ("train", "search", "test")


@dataclass(frozen=True)
class Item:
    """One question, its answer, and the strings its distractors are drawn from."""

    question: str
    answer: str
    pool: tuple[str, ...]


def _nearby_numbers(value: int, spread: int = 4) -> tuple[str, ...]:
    return tuple(str(value + d) for d in range(-spread, spread + 1) if d != 0 and value + d >= 0)


def arith_items() -> list[Item]:
    """Sums and differences below 20 and one-digit products; distractors are nearby numbers."""
    items = [Item(f"{a} + {b} =", str(a + b), _nearby_numbers(a + b)) for a in range(20) for b in range(20)]
    items += [Item(f"{a} - {b} =", str(a - b), _nearby_numbers(a - b)) for a in range(20) for b in range(a + 1)]
    items += [Item(f"{a} * {b} =", str(a * b), _nearby_numbers(a * b)) for a in range(2, 10) for b in range(2, 10)]
    return items


def strings_items() -> list[Item]:
    """Upper-casing, first and last letters of short words; distractors come from same-length words."""
    by_length: dict[int, list[str]] = {}
    for word in voc.WORDS:
        by_length.setdefault(len(word), []).append(word)
    letters = tuple("abcdefghijklmnopqrstuvwxyz")
    items: list[Item] = []
    for word in voc.WORDS:
        peers = tuple(w.upper() for w in by_length[len(word)] if w != word)
        items.append(Item(f"The word {word} in capitals is", word.upper(), peers))
        items.append(Item(f"The first letter of {word} is", word[0], letters))
        items.append(Item(f"The last letter of {word} is", word[-1], letters))
    return items


def facts_items() -> list[Item]:
    """Capitals, opposites, calendar order, number words, plurals and colours."""
    capitals = tuple(city for _, city in voc.CAPITALS)
    items = [Item(f"The capital of {country} is", city, capitals) for country, city in voc.CAPITALS]
    words = tuple(sorted({w for pair in voc.OPPOSITES for w in pair}))
    items += [Item(f"The opposite of {a} is", b, words) for a, b in voc.OPPOSITES]
    items += [Item(f"The opposite of {b} is", a, words) for a, b in voc.OPPOSITES]
    for names, unit in ((voc.DAYS, "day"), (voc.MONTHS, "month")):
        n = len(names)
        items += [Item(f"The {unit} after {names[i]} is", names[(i + 1) % n], names) for i in range(n)]
        items += [Item(f"The {unit} before {names[i]} is", names[(i - 1) % n], names) for i in range(n)]
    digits = tuple(str(i) for i in range(len(voc.NUMBER_WORDS)))
    items += [Item(f"The number {w} in digits is", str(i), digits) for i, w in enumerate(voc.NUMBER_WORDS)]
    plurals = tuple(p for _, p in voc.PLURALS)
    items += [Item(f"The plural of {s} is", p, plurals) for s, p in voc.PLURALS]
    colors = tuple(sorted({c for _, c in voc.COLORS}))
    items += [Item(f"The color of {thing} is", color, colors) for thing, color in voc.COLORS]
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    items += [Item(f"The letter after {letters[i]} is", letters[i + 1], tuple(letters)) for i in range(25)]
    items += [Item(f"The letter before {letters[i]} is", letters[i - 1], tuple(letters)) for i in range(1, 26)]
    return items


@dataclass(frozen=True)
class TaskSpec:
    items: Callable[[], list[Item]]
    sizes: tuple[int, int, int]
    """Examples in the train, search and test splits (disjoint)."""


TASKS: dict[str, TaskSpec] = {
    "evomerge_arith": TaskSpec(arith_items, (50, 200, 200)),
    "evomerge_strings": TaskSpec(strings_items, (30, 140, 140)),
    "evomerge_facts": TaskSpec(facts_items, (30, 110, 110)),
}


def _example(item: Item, rng: np.random.Generator) -> dict[str, object]:
    wrong = sorted({s for s in item.pool if s != item.answer})
    if len(wrong) < N_CHOICES - 1:
        raise ValueError(f"too few distractors for {item.question!r}")
    picked = [wrong[i] for i in rng.choice(len(wrong), N_CHOICES - 1, replace=False)]
    label = int(rng.integers(N_CHOICES))
    choices = [*picked[:label], item.answer, *picked[label:]]
    return {"question": item.question, "choices": choices, "label": label}


def generate_task(name: str, seed: int = DEFAULT_SEED) -> dict[str, list[dict[str, object]]]:
    """The three splits of task ``name`` as lists of ``{question, choices, label}`` records."""
    spec = TASKS[name]
    items = list({item.question: item for item in spec.items()}.values())
    tree = SeedTree(seed).child(f"tasks/{name}")
    order = tree.generator("split").permutation(len(items))
    if sum(spec.sizes) > len(items):
        raise ValueError(f"{name}: {len(items)} distinct questions, {sum(spec.sizes)} needed")
    rng = tree.generator("choices")
    out: dict[str, list[dict[str, object]]] = {}
    start = 0
    for split, size in zip(SPLITS, spec.sizes):
        out[split] = [_example(items[i], rng) for i in order[start : start + size]]
        start += size
    return out


def data_file(directory: Path, task: str, split: str) -> Path:
    return directory / f"{task}_{split}.jsonl"


def render_jsonl(records: Sequence[dict[str, object]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_tasks(directory: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write every split of every bundled task as JSONL into ``directory``; returns the files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TASKS:
        for split, records in generate_task(name, seed).items():
            path = data_file(directory, name, split)
            path.write_text(render_jsonl(records), encoding="utf-8")
            written.append(path)
    return written


def stale_files(directory: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Data files in ``directory`` that differ from what the generator produces (or are missing)."""
    stale = []
    for name in TASKS:
        for split, records in generate_task(name, seed).items():
            path = data_file(directory, name, split)
            if not path.is_file() or path.read_text(encoding="utf-8") != render_jsonl(records):
                stale.append(path)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="output directory")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--check", action="store_true", help="only verify the files, exit 1 if stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out, args.seed)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_tasks(args.out, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
