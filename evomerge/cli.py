"""The ``evomerge`` command line: the face of the project.

Every command turns user mistakes (:class:`~evomerge.errors.EvomergeError`) into one line on stderr and
a non-zero exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from evomerge import __version__
from evomerge.errors import EvomergeError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Report EvomergeError as ``error: ...`` and exit with its code, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EvomergeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _quiet_libraries() -> None:
    """Keep third-party chatter (progress bars, info logs) out of evomerge's own output.

    Environment variables only: importing transformers here would cost seconds on commands that never use it.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # lm-eval draws several tqdm bars per candidate (thousands per search); evomerge's own bars use rich.
    # tqdm reads this when it is imported, and Ray workers started from here inherit it.
    os.environ.setdefault("TQDM_DISABLE", "1")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="evomerge")
def main() -> None:
    """evomerge: find the best merge of several fine-tuned checkpoints of one architecture.

    \b
    evomerge merge RECIPE.yaml OUT_DIR     one merge from a recipe (mergekit YAML works as is)
    evomerge search CONFIG.yaml            evolve merge recipes; everything lands in the run directory
    evomerge resume RUN_DIR                continue a stopped or crashed search
    evomerge export RUN_DIR OUT_DIR        best (or Nth / a Pareto point) candidate -> HF checkpoint
    evomerge report RUN_DIR                plots and a summary table of a run
    evomerge validate CONFIG_OR_RECIPE     pre-flight checks of a config and its source models

    Run `evomerge COMMAND --help` for the options of each command.
    """
    _quiet_libraries()


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", default="cpu", show_default=True, help="Where operators run: cpu, cuda, cuda:1, ...")
@click.option("--shard-size", default="5GB", show_default=True, help="Largest output shard, e.g. 2GB or 500MB.")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists (atomically, after the merge succeeds).")
@click.option("--allow-download", is_flag=True, help="Fetch models that are not local folders from the Hugging Face hub.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@user_errors
def merge(recipe: Path, out_dir: Path, device: str, shard_size: str, overwrite: bool, allow_download: bool, quiet: bool) -> None:
    """Merge the models of RECIPE into OUT_DIR (a Hugging Face checkpoint folder).

    RECIPE is mergekit's YAML (merge_method, base_model, models[].parameters, parameters, slices, dtype,
    tokenizer) or evomerge's own dialect (add `dialect: evomerge` for the papers' defaults where mergekit
    differs). Model paths are relative to the working directory, or else to the recipe's folder.
    """
    from evomerge.merge.to_disk import merge_to_disk
    from evomerge.merge.whole_model import merge_whole_model, whole_model_method
    from evomerge.plan import MergePlan

    _preflight(recipe)
    plan = MergePlan.from_yaml(recipe)
    _check_device(device)
    if whole_model_method(plan.merge_method) is not None:  # PLeaS, FW, MoE expert merging: not per tensor
        out = merge_whole_model(plan, out_dir, base_dir=recipe.resolve().parent, device=device,
                                max_shard_size=shard_size, overwrite=overwrite, allow_download=allow_download)
        click.echo(f"merged {len(plan.source_models())} model(s) with {plan.merge_method} -> {out}")
        return
    out = merge_to_disk(
        plan, out_dir, device=device, max_shard_size=shard_size, overwrite=overwrite,
        base_dir=recipe.resolve().parent, allow_download=allow_download, progress=not quiet,
    )
    click.echo(f"merged {len(plan.source_models())} models with {plan.merge_method} -> {out}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the run's state lives (default: runs/<config name>). An unfinished run there is continued.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. --set budget.evaluations=50 --set seed=3 (repeatable).")
@click.option("--overwrite", is_flag=True, help="Delete an existing run directory first and start afresh.")
@user_errors
def search(config: Path, run_dir: Path | None, overrides: tuple[str, ...], overwrite: bool) -> None:
    """Search for the best merge as CONFIG describes; everything it learns lands in the run directory.

    The run directory holds the resolved config, evaluations.jsonl (one line per evaluation), checkpoints
    and status. Stop it any time (Ctrl-C, or a crash): `evomerge resume RUN_DIR` continues where it
    stopped without re-evaluating anything.
    """
    from evomerge import search as search_mod

    _preflight(config, overrides, build_models=False)
    s, resumed = search_mod.start(config, run_dir, list(overrides), overwrite)
    click.echo(f"run directory: {s.run_dir.path}" + (" (continuing)" if resumed else ""))
    _finish(search_mod.run(s, resumed))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change the budget or tracking of the run, e.g. --set budget.evaluations=200.")
@user_errors
def resume(run_dir: Path, overrides: tuple[str, ...]) -> None:
    """Continue a stopped or crashed search from its last checkpoint (nothing is evaluated twice)."""
    from evomerge import search as search_mod

    s = search_mod.reopen(run_dir, list(overrides))
    _finish(search_mod.run(s, True))


def _finish(summary: dict[str, Any]) -> None:
    best = summary.get("best") or {}
    scores = ", ".join(f"{k}={v:.4g}" for k, v in best.items()) or "-"
    click.echo(f"{summary['reason']}: {summary['evaluations']} evaluations, best {summary['best_uid']} ({scores})")
    if summary.get("exported"):
        click.echo(f"exported the best candidate to {summary['exported']}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rank", default=0, show_default=True, help="Export the N-th best candidate (0 = best).")
@click.option("--pareto-index", type=int, default=None, help="Export the i-th point of the Pareto front instead.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None, help="Output dtype.")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists.")
@click.option("--push-to-hub", "repo_id", metavar="REPO_ID", default=None,
              help="Also upload the exported folder to this Hugging Face Hub model repo (created if missing; "
              "uses your `huggingface-cli login` token).")
@click.option("--private", is_flag=True, help="With --push-to-hub: create the repo as private.")
@user_errors
def export(run_dir: Path, out_dir: Path, rank: int, pareto_index: int | None, dtype: str | None, overwrite: bool,
           repo_id: str | None, private: bool) -> None:
    """Write a run's best (or N-th, or a Pareto point) candidate as a Hugging Face checkpoint with a model card.

    OUT_DIR also gets the recipe (merge_recipe.yaml), and mergekit.yaml when mergekit can express it.
    """
    from evomerge.export import export_run, push_to_hub

    path = export_run(run_dir, out_dir, rank=rank, pareto_index=pareto_index, overwrite=overwrite, dtype=dtype,
                      progress=True)
    click.echo(f"exported to {path}")
    if repo_id:
        click.echo(f"uploaded to {push_to_hub(path, repo_id, private=private)}")


@main.command("held-out")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True, help="Split of the run's fitness suite to score.")
@click.option("--top", default=1, show_default=True, type=click.IntRange(min=1), help="How many best candidates.")
@user_errors
def held_out(run_dir: Path, split: str, top: int) -> None:
    """Re-score a run's best candidates on a held-out split (default: test) the search never saw.

    The candidates are merged in place by the search's own evaluator, with the fitness suite switched to
    SPLIT; results go to RUN_DIR/held_out.json, and `evomerge export` adds them to the model card.
    """
    from evomerge.holdout import score_held_out

    for row in score_held_out(run_dir, split=split, top=top):
        shown = ", ".join(f"{k} {v:.4f}" for k, v in row["held_out"].items()) or row["error"]
        search = ", ".join(f"{k} {v:.4f}" for k, v in row["search"].items())
        click.echo(f"#{row['rank']} {row['uid']}: {split}: {shown}  (search: {search})")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the PNG plots and report.md (default: RUN_DIR/report).")
@click.option("--top", "top_n", default=10, show_default=True, type=click.IntRange(min=1),
              help="Rows of the best-candidates table.")
@user_errors
def report(run_dir: Path, out_dir: Path | None, top_n: int) -> None:
    """Plot a run and summarise it: PNG files and a Markdown report.md (no model is loaded).

    \b
    fitness.png       each objective over evaluations: points and best so far per strategy
    pareto.png        the Pareto front (runs with two or more objectives)
    coefficients.png  the best recipe's per-layer coefficients (per-model weights if it has none)
    lineage.png       the ancestors of the best candidate
    report.md         config, budget used, outcomes, top candidates, Pareto table, best recipe

    Works on a running search too (it reads, never locks). The per-layer view reads the source models'
    headers (no weights); without them it falls back to the recipe's per-model numbers.
    """
    from evomerge.report import write_report

    result = write_report(run_dir, out_dir, top_n=top_n)
    click.echo(f"report: {result.markdown} ({len(result.images)} plot(s))")


@main.command()
@click.argument("path", metavar="CONFIG_OR_RECIPE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a search-config field first, as `evomerge search --set` does (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON report instead of the table.")
def validate(path: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """Pre-flight checks of a search config or merge recipe, reading headers and configs only (no weights).

    \b
    Checks: model folders and formats (safetensors; pickle is flagged), architecture, tensor names,
    shapes, dtypes, vocabulary and tokenizer agreement, the recipe's (or the search's starting) plan,
    the search space's size, and the memory a merge and each evaluator actor will need.

    Exit status: 0 when nothing is a problem (warnings allowed), 1 otherwise.
    """
    from evomerge.preflight import render, validate_file

    result = validate_file(path, overrides)
    if as_json:
        click.echo(result.to_json())
    else:
        render(result)
    sys.exit(0 if result.ok else 1)


def _preflight(path: Path, overrides: tuple[str, ...] = (), build_models: bool = True) -> None:
    """The checks of `evomerge validate` (headers only, milliseconds) before any real work; the first problem
    in one line, and a pointer to the full list when there are more."""
    from evomerge.preflight.runner import validate_file

    report = validate_file(path, overrides, build_models=build_models)
    if report.ok:
        return
    first, more = report.problems[0], len(report.problems) - 1
    suffix = f" ({more} more problem(s): run `evomerge validate {path}`)" if more else ""
    click.echo(f"error: {first.message}{suffix}", err=True)
    sys.exit(1)


def _check_device(device: str) -> None:
    import torch

    from evomerge.errors import ConfigError

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"invalid device {device!r}; use cpu, cuda or cuda:N", "--device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA requested but no GPU is available", "--device")


if __name__ == "__main__":  # pragma: no cover
    main()
