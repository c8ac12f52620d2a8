"""Export: the checkpoint equals the in-run merge, and its recipes (evomerge and mergekit) reproduce it."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from evomerge.cli import main
from evomerge.export import load_archive
from evomerge.population.records import candidate_of
from evomerge.population.run_dir import RunDir
from tests.integration.search_helpers import search_config, write_config

TIES = {"name": "global", "merge_method": "ties",
        "parameters": {"weight": {"low": 0.2, "high": 1.0}, "density": {"low": 0.3, "high": 0.9}},
        "extra_parameters": {"trim_scope": "tensor", "zero_sign": "positive"}}  # mergekit's TIES variant


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def exported(llama_family: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("export")
    cfg = search_config(llama_family, evaluations=6, search_space=TIES)
    code, out = run(["search", str(write_config(tmp / "c.yaml", cfg)), "--run-dir", str(tmp / "run")])
    assert code == 0, out
    code, out = run(["export", str(tmp / "run"), str(tmp / "best")])
    assert code == 0, out
    return tmp / "run", tmp / "best"


def test_exported_logits_equal_the_in_run_merge(exported: tuple[Path, Path]) -> None:
    from transformers import AutoModelForCausalLM

    from evomerge.distributed.evaluator import Evaluator
    from evomerge.search import evaluator_spec, reopen

    run_dir, best = exported
    search = reopen(run_dir, ["budget.evaluations=7"])
    evaluator = Evaluator(evaluator_spec(search.config, search.sources, search.space, search.base_dir))
    uid = load_archive(RunDir(run_dir)).best().candidate.uid  # type: ignore[union-attr]
    record = next(r for r in RunDir(run_dir).records() if r["uid"] == uid)
    evaluator.materialize(candidate_of(record, RunDir(run_dir)))
    ids = torch.arange(3, 40).reshape(1, -1)
    with torch.no_grad():
        in_run = evaluator.model(input_ids=ids).logits
        model = AutoModelForCausalLM.from_pretrained(best)
        from_disk = model(input_ids=ids).logits
    assert torch.allclose(in_run, from_disk, atol=1e-5, rtol=0)
    assert not torch.allclose(from_disk, AutoModelForCausalLM.from_pretrained(search.sources.refs[0])(input_ids=ids).logits)


def test_exported_recipes_reproduce_the_checkpoint(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, best = exported
    assert {"README.md", "merge_recipe.yaml", "mergekit.yaml", "evomerge_scores.json", "config.json"} <= {
        p.name for p in best.iterdir()}
    mk = yaml.safe_load((best / "mergekit.yaml").read_text())
    assert "dialect" not in mk and mk["merge_method"] == "ties"
    # mergekit has no such options: their values are the ones it hard-codes, so they are dropped
    assert "trim_scope" not in yaml.safe_dump(mk) and "zero_sign" not in yaml.safe_dump(mk)
    reference = tensors(best)
    for recipe in ("merge_recipe.yaml", "mergekit.yaml"):
        code, out = run(["merge", str(best / recipe), str(tmp_path / recipe), "-q"])
        assert code == 0, out
        again = tensors(tmp_path / recipe)
        assert again.keys() == reference.keys()
        worst = max(float((again[k] - reference[k]).abs().max()) for k in reference)
        assert worst <= 1e-6, (recipe, worst)
    assert "mergekit.yaml" in (best / "README.md").read_text()


class RecordingApi:
    """Stands in for huggingface_hub.HfApi (no network here); records what export asks of the Hub."""

    calls: ClassVar[list[tuple[str, dict]]] = []

    def create_repo(self, repo_id: str, **kwargs: object) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs: object) -> None:
        self.calls.append(("upload_folder", {**kwargs, "files": sorted(p.name for p in Path(str(kwargs["folder_path"])).iterdir())}))


def test_push_to_hub_uploads_the_exported_folder(exported: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    RecordingApi.calls = []
    run_dir, _ = exported
    code, out = run(["export", str(run_dir), str(tmp_path / "up"), "--push-to-hub", "me/merged", "--private"])
    assert code == 0, out
    assert "uploaded to https://huggingface.co/me/merged" in out
    (create, created), (upload, uploaded) = RecordingApi.calls
    assert create == "create_repo" and created["private"] is True and created["exist_ok"] is True
    assert upload == "upload_folder" and uploaded["repo_id"] == "me/merged"
    assert uploaded["folder_path"] == str(tmp_path / "up") and "model.safetensors" in uploaded["files"]
