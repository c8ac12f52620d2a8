"""Checkpoint reading and atomic, sharded, streaming writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.errors import CheckpointError
from evomerge.io import Checkpoint, CheckpointWriter, TensorSlot, save_state_dict
from evomerge.io.writer import parse_size


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(17, 9, generator=g),
        "b.weight": torch.randn(64, 64, generator=g),
        "c.ids": torch.arange(7),
        "d.scalar": torch.tensor(3.5),
        "e.bias": torch.randn(5, generator=g),
    }


def test_single_file_round_trip(tmp_path: Path) -> None:
    state = _state()
    save_state_dict(state, tmp_path / "m", config={"model_type": "x"})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_file(str(tmp_path / "m" / "model.safetensors"))
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k


def test_sharded_round_trip_and_index(tmp_path: Path) -> None:
    state = _state()
    save_state_dict(state, tmp_path / "m", max_shard_size=16 * 1024)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) >= 2 and all(s.startswith("model-0000") for s in shards)
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    ck = Checkpoint(tmp_path / "m")
    assert ck.format == "safetensors"
    for k, v in state.items():
        assert torch.equal(ck.get(k), v)
        assert ck.meta[k].shape == tuple(v.shape)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dtype_conversion_only_touches_floats(tmp_path: Path, dtype: torch.dtype) -> None:
    state = _state()
    save_state_dict(state, tmp_path / "m", dtype=dtype)
    ck = Checkpoint(tmp_path / "m")
    assert ck.meta["b.weight"].dtype == dtype
    assert ck.meta["c.ids"].dtype == torch.int64
    assert torch.equal(ck.get("b.weight"), state["b.weight"].to(dtype))


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    layout = [TensorSlot("x", (4,), torch.float32), TensorSlot("y", (4,), torch.float32)]
    with pytest.raises(RuntimeError, match="boom"), CheckpointWriter(tmp_path / "out", layout) as w:
        w.write("x", torch.ones(4))
        raise RuntimeError("boom")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_tensor_aborts_commit(tmp_path: Path) -> None:
    layout = [TensorSlot("x", (4,), torch.float32), TensorSlot("y", (4,), torch.float32)]
    with pytest.raises(CheckpointError, match="never written"), CheckpointWriter(tmp_path / "out", layout) as w:
        w.write("x", torch.ones(4))
    assert not (tmp_path / "out").exists()


def test_refuses_existing_output_unless_overwrite(tmp_path: Path) -> None:
    save_state_dict({"x": torch.ones(2)}, tmp_path / "m")
    with pytest.raises(CheckpointError, match="not empty"):
        save_state_dict({"x": torch.zeros(2)}, tmp_path / "m")
    save_state_dict({"x": torch.zeros(2)}, tmp_path / "m", overwrite=True)
    assert torch.equal(Checkpoint(tmp_path / "m").get("x"), torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_shape_checked_on_write(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="expected shape"), CheckpointWriter(
        tmp_path / "o", [TensorSlot("x", (2, 2), torch.float32)]
    ) as w:
        w.write("x", torch.ones(4))


def test_pickle_refused_without_opt_in(tmp_path: Path) -> None:
    folder = tmp_path / "pkl"
    folder.mkdir()
    torch.save({"w": torch.arange(4.0)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle checkpoint refused"):
        Checkpoint(folder)
    ck = Checkpoint(folder, allow_pickle=True)
    assert ck.format == "pickle"
    assert torch.equal(ck.get("w"), torch.arange(4.0))


def test_missing_folder_and_missing_shard(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        Checkpoint(tmp_path / "nope")
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"w": torch.ones(2)}, str(folder / "model-00001-of-00002.safetensors"))
    index = {"weight_map": {"w": "model-00001-of-00002.safetensors", "v": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        Checkpoint(folder)


def test_metadata_reads_no_tensor_data(tmp_path: Path) -> None:
    save_state_dict(_state(), tmp_path / "m")
    ck = Checkpoint(tmp_path / "m")
    assert ck.meta["b.weight"].nbytes == 64 * 64 * 4
    assert ck.total_bytes() == sum(t.numel() * t.element_size() for t in _state().values())


@pytest.mark.parametrize(("text", "expected"), [("5GB", 5 * 10**9), ("2GiB", 2 * 2**30), ("500MB", 5 * 10**8), ("123", 123)])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(CheckpointError):
        parse_size("lots")


def test_streaming_reads_are_private_mappings_of_each_tensor(tmp_path: Path) -> None:
    state = {**_state(), "f.half": torch.randn(3, 4).to(torch.bfloat16), "g.empty": torch.zeros(0, 5)}
    save_file(state, str(tmp_path / "model.safetensors"))
    ck = Checkpoint(tmp_path, keep_open=False)
    for name, tensor in state.items():
        got = ck.get(name)
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), name
    mapped = ck.get("b.weight")
    mapped.fill_(7.0)  # a write lands in a private copy, never in the file
    assert torch.equal(Checkpoint(tmp_path, keep_open=False).get("b.weight"), state["b.weight"])
    assert torch.equal(load_file(str(tmp_path / "model.safetensors"))["b.weight"], state["b.weight"])


def test_conversion_streams_through_a_small_staging_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evomerge.io import writer

    monkeypatch.setattr(writer, "STAGE_ELEMENTS", 7)  # 64 × 64 entries in many steps, the last one partial
    state = _state()
    save_state_dict(state, tmp_path / "m", dtype=torch.bfloat16)
    loaded = load_file(str(tmp_path / "m" / "model.safetensors"))
    for name, tensor in state.items():
        expected = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
        assert torch.equal(loaded[name], expected), name


def test_background_writeback_accepts_written_ranges(tmp_path: Path) -> None:
    import os
    import sys

    from evomerge.io.byte_writes import background_writeback, pwrite_tensor

    writeback = background_writeback()
    assert (writeback is not None) == sys.platform.startswith("linux")
    fd = os.open(tmp_path / "f.bin", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        end = pwrite_tensor(fd, torch.arange(10, dtype=torch.int32), 8)
        assert end == 48
        if writeback is not None:
            assert writeback(fd, 8, end - 8) == 0
    finally:
        os.close(fd)
    assert (tmp_path / "f.bin").read_bytes()[8:] == torch.arange(10, dtype=torch.int32).numpy().tobytes()
