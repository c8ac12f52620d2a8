"""Expert merging end to end on tiny random Mixtral and Qwen2-MoE checkpoints: fewer experts, a model that
loads and runs, identical experts that change nothing, and one clear error per user mistake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from evomerge.errors import ConfigError, IncompatibleModelsError, StatisticsError
from evomerge.moe import merge_moe_to_disk, preview_moe_merge
from evomerge.moe.tiny import make_tiny_moe
from evomerge.plan import MergePlan
from evomerge.statistics.data import token_data
from evomerge.statistics.moe import MoeStatistics, collect_checkpoint_moe_statistics

IDS = torch.randint(3, 101, (16, 20), generator=torch.Generator().manual_seed(0))
ARCHS = ["mixtral", "qwen2_moe"]
METHODS = ["mc_smoe", "sub_moe"]


def plan_for(model: Path, method: str, **params: Any) -> MergePlan:
    return MergePlan.from_dict({"merge_method": method, "models": [{"model": str(model)}], "parameters": params})


def statistics_of(model: Path, cache: Path) -> MoeStatistics:
    return collect_checkpoint_moe_statistics(model, token_data(IDS, "random-ids"), cache_dir=cache, progress=False)


def logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(str(folder)).eval()(IDS[:4]).logits


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def save_with_experts(out: Path, arch: str, make: Any, fused: bool = False, **config_kw: Any) -> Path:
    """A tiny model whose experts ``make(expert0_gate, expert0_up, expert0_down, e)`` rebuilds from expert 0."""
    from evomerge.tiny_models import build_tokenizer

    model = make_tiny_moe(None, arch=arch, seed=1, **config_kw)  # type: ignore[arg-type]
    with torch.no_grad():
        for layer in model.model.layers:
            ex = layer.mlp.experts
            gate, up = ex.gate_up_proj[0].chunk(2, dim=0)
            down = ex.down_proj[0]
            for e in range(ex.gate_up_proj.shape[0]):
                g, u, d = make(gate, up, down, e)
                ex.gate_up_proj[e] = torch.cat([g, u])
                ex.down_proj[e] = d
    if fused:
        out.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
                  metadata={"format": "pt"})
        model.config.save_pretrained(str(out))
        build_tokenizer(out)
    else:
        model.save_pretrained(str(out))
        build_tokenizer(out)
    return out


def identical(gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, e: int) -> tuple[torch.Tensor, ...]:
    return gate, up, down


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("moe")
    for arch in ARCHS:
        make_tiny_moe(root / arch, arch=arch, seed=0)  # type: ignore[arg-type]
    return {arch: root / arch for arch in ARCHS}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("moe-cache")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [4, 2])
def test_merge_reduces_experts_and_the_model_runs(sources: dict[str, Path], cache: Path, tmp_path: Path,
                                                  arch: str, method: str, n: int) -> None:
    src = sources[arch]
    out = merge_moe_to_disk(plan_for(src, method, num_experts=n), tmp_path / "out",
                            statistics=statistics_of(src, cache), progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["num_local_experts" if arch == "mixtral" else "num_experts"] == n
    assert config["num_experts_per_tok"] == min(2, n)
    merged, source = tensors(out), tensors(src)
    routers = [k for k in merged if k.endswith(".gate.weight") and "shared" not in k]
    assert len(routers) == 2 and all(merged[k].shape == (n, 16) for k in routers)
    assert not any(f".experts.{n}." in k for k in merged)
    unchanged = [k for k in source if ".experts." not in k and k not in routers]
    assert all(torch.equal(merged[k], source[k]) for k in unchanged)  # attention, norms, shared expert
    if arch == "qwen2_moe":
        assert any("shared_expert." in k for k in unchanged)
    out_logits = logits(out)
    assert out_logits.shape == (4, 20, 101) and torch.isfinite(out_logits).all()
    provenance = json.loads((out / "moe_merge.json").read_text())
    for groups in provenance["layers"].values():
        assert sorted(e for g in groups for e in g["experts"]) == list(range(8)) and len(groups) == n


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fused", [False, True])
def test_merging_identical_experts_changes_no_output(tmp_path: Path, cache: Path, arch: str, fused: bool) -> None:
    # Qwen2-MoE must renormalise its top-k weights: without it the routed mass Σ top-k p depends on the
    # number of experts, and no merge of router rows can keep it (see the README).
    src = save_with_experts(tmp_path / "src", arch, identical, fused=fused, norm_topk_prob=True)
    stats = statistics_of(src, cache)
    before = logits(src)
    for method, n, router in [("mc_smoe", 4, "weighted"), ("mc_smoe", 3, "dominant"), ("sub_moe", 2, "weighted"),
                              ("sub_moe", 4, "dominant")]:
        out = merge_moe_to_disk(plan_for(src, method, num_experts=n, router=router), tmp_path / f"{method}{n}",
                                statistics=stats, progress=False)
        assert any(k.endswith("experts.gate_up_proj") for k in tensors(out)) == fused  # the source's own form
        assert torch.allclose(logits(out), before, atol=1e-5), (method, n)


def test_alignment_merges_permuted_copies_without_loss(tmp_path: Path, cache: Path) -> None:
    perms = [torch.randperm(12, generator=torch.Generator().manual_seed(e)) for e in range(8)]

    def permuted(gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, e: int) -> tuple[torch.Tensor, ...]:
        return gate[perms[e]], up[perms[e]], down[:, perms[e]]

    src = save_with_experts(tmp_path / "src", "mixtral", permuted)
    stats, before = statistics_of(src, cache), logits(src)
    aligned = merge_moe_to_disk(plan_for(src, "mc_smoe", num_experts=2), tmp_path / "a", statistics=stats,
                                progress=False)
    assert torch.allclose(logits(aligned), before, atol=1e-5)
    plain = merge_moe_to_disk(plan_for(src, "mc_smoe", num_experts=2, align=False), tmp_path / "p",
                              statistics=stats, progress=False)
    assert not torch.allclose(logits(plain), before, atol=1e-3)


@pytest.mark.parametrize("method,params", [("sub_moe", {}), ("mc_smoe", {"align": False})])
def test_merged_experts_are_the_recorded_weighted_averages(sources: dict[str, Path], cache: Path, tmp_path: Path,
                                                           method: str, params: dict[str, Any]) -> None:
    src = sources["mixtral"]
    out = merge_moe_to_disk(plan_for(src, method, num_experts=3, **params), tmp_path / "o",
                            statistics=statistics_of(src, cache), progress=False)
    merged, source = tensors(out), tensors(src)
    pre = "model.layers.1.block_sparse_moe"
    for i, group in enumerate(json.loads((out / "moe_merge.json").read_text())["layers"]["1"]):
        for proj in ("w1", "w2", "w3"):
            expected = sum(w * source[f"{pre}.experts.{e}.{proj}.weight"] for e, w in zip(group["experts"], group["weights"]))
            assert torch.allclose(merged[f"{pre}.experts.{i}.{proj}.weight"], expected, atol=1e-5)
        row = sum(w * source[f"{pre}.gate.weight"][e] for e, w in zip(group["experts"], group["weights"]))
        assert torch.allclose(merged[f"{pre}.gate.weight"][i], row, atol=1e-5)


def test_sub_moe_rank_and_mc_smoe_compression(sources: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    src = sources["qwen2_moe"]
    stats = statistics_of(src, cache)
    out = merge_moe_to_disk(plan_for(src, "sub_moe", num_experts=4, rank=3), tmp_path / "r", statistics=stats,
                            progress=False)
    gate = tensors(out)["model.layers.0.mlp.experts.0.gate_proj.weight"]
    assert torch.linalg.matrix_rank(gate) <= 3
    full = merge_moe_to_disk(plan_for(src, "mc_smoe", num_experts=4), tmp_path / "f", statistics=stats, progress=False)
    small = merge_moe_to_disk(plan_for(src, "mc_smoe", num_experts=4, compress=True, compress_rank_ratio=0.25,
                                       compress_density=0.0), tmp_path / "c", statistics=stats, progress=False)
    name = "model.layers.0.mlp.experts.1.down_proj.weight"
    assert torch.linalg.matrix_rank(tensors(small)[name]) <= 3 < torch.linalg.matrix_rank(tensors(full)[name])
    assert torch.isfinite(logits(small)).all()


def test_calibration_text_is_collected_once_and_cached(sources: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "calib.txt").write_text("The quick brown fox jumps over the lazy dog. " * 40)
    recipe = {"merge_method": "sub_moe", "models": [{"model": str(sources["mixtral"])}],
              "parameters": {"num_experts": 4, "calibration_text": "calib.txt", "calibration_sequences": 4,
                             "calibration_length": 32}}
    plan = MergePlan.from_dict(recipe)
    assert "8 -> 4 experts" in preview_moe_merge(plan, base_dir=tmp_path)
    with pytest.raises(StatisticsError, match="calibration_text: file not found"):
        preview_moe_merge(plan, base_dir=tmp_path / "elsewhere")
    first = merge_moe_to_disk(plan, tmp_path / "a", cache_dir=tmp_path / "cache", base_dir=tmp_path, progress=False)
    second = merge_moe_to_disk(plan, tmp_path / "b", cache_dir=tmp_path / "cache", base_dir=tmp_path, progress=False)
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 1
    assert (first / "moe_merge.json").read_text() == (second / "moe_merge.json").read_text()
    stats = MoeStatistics.load(next((tmp_path / "cache").iterdir()))
    assert stats.layers[0].tokens == 4 * 32


def test_recipe_dtype_sets_the_output_dtype(sources: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    src = sources["mixtral"]
    plan = MergePlan.from_dict({"merge_method": "mc_smoe", "models": [{"model": str(src)}],
                                "parameters": {"num_experts": 2}, "dtype": "bfloat16"})
    out = merge_moe_to_disk(plan, tmp_path / "o", statistics=statistics_of(src, cache), progress=False)
    assert {t.dtype for t in tensors(out).values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert (out / "tokenizer.json").is_file() and (out / "merge_recipe.yaml").is_file()


# ---------------------------------------------------------------------------------------------- user mistakes
def test_a_dense_model_is_refused(tmp_path: Path) -> None:
    from evomerge.tiny_models import make_tiny_model

    make_tiny_model(tmp_path / "llama", arch="llama")
    with pytest.raises(IncompatibleModelsError, match="not a mixture-of-experts model .*'llama'"):
        merge_moe_to_disk(plan_for(tmp_path / "llama", "mc_smoe", num_experts=2), tmp_path / "o", progress=False)


@pytest.mark.parametrize("n", [0, 9])
def test_an_expert_count_that_does_not_divide(sources: dict[str, Path], tmp_path: Path, n: int) -> None:
    with pytest.raises(ConfigError, match=f"parameters.num_experts: cannot split 8 experts into {n} non-empty"):
        merge_moe_to_disk(plan_for(sources["mixtral"], "sub_moe", num_experts=n), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_missing_calibration_data(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(StatisticsError, match="mc_smoe needs routing statistics"):
        merge_moe_to_disk(plan_for(sources["qwen2_moe"], "mc_smoe", num_experts=4), tmp_path / "o", progress=False)
    with pytest.raises(StatisticsError, match="calibration_text: file not found"):
        merge_moe_to_disk(plan_for(sources["qwen2_moe"], "mc_smoe", num_experts=4, calibration_text="nope.txt"),
                          tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_statistics_of_another_model(sources: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_tiny_moe(other, arch="mixtral", layers=1, experts=4)
    with pytest.raises(StatisticsError, match="cover 4 experts, .* has 8"):
        merge_moe_to_disk(plan_for(sources["mixtral"], "mc_smoe", num_experts=2), tmp_path / "o",
                          statistics=statistics_of(other, cache), progress=False)


@pytest.mark.parametrize("recipe,match", [
    ({"models": [{"model": "a"}, {"model": "b"}], "parameters": {"num_experts": 2}}, "models: .*exactly one model"),
    ({"models": [{"model": "a"}], "parameters": {"num_experts": [2, 4]}}, "parameters.num_experts: .*not a gradient"),
    ({"models": [{"model": "a"}], "parameters": {"num_experts": 2, "density": 0.5}}, "unknown key 'density'"),
    ({"models": [{"model": "a"}], "parameters": {}}, "parameters.num_experts: Field required"),
    ({"slices": [{"sources": [{"model": "a", "layer_range": [0, 1]}]}], "parameters": {"num_experts": 2}}, "slices"),
])
def test_recipe_mistakes(recipe: dict[str, Any], match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        merge_moe_to_disk(MergePlan.from_dict({"merge_method": "mc_smoe", **recipe}), tmp_path / "o", progress=False)


def test_sub_moe_is_reproducible_from_the_seed(sources: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    src = sources["qwen2_moe"]
    stats = statistics_of(src, cache)
    runs = [merge_moe_to_disk(plan_for(src, "sub_moe", num_experts=3), tmp_path / str(i), statistics=stats,
                              progress=False) for i in range(2)]
    a, b = (tensors(r) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(logits(runs[0]).numpy()).all()
