"""The run directory: the single source of truth of a search (DESIGN §5).

``config.yaml`` (resolved config), ``evaluations.jsonl`` (append-only, one fsynced line per evaluation),
``checkpoints/`` (strategy + pending candidates + counters, written atomically), ``status.json`` and
``genomes/`` (large genomes as .npy). A crash at any instant loses nothing that was evaluated: a line is
on disk before the strategy hears of its result, and a torn last line (SIGKILL mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from evomerge.errors import RunStateError

CHECKPOINT_FORMAT = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self._jsonl: Any = None
        self._lock: FileLock | None = None

    # ------------------------------------------------------------------ paths
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def evaluations_file(self) -> Path:
        return self.path / "evaluations.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    def exists(self) -> bool:
        return self.config_file.is_file()

    @property
    def base_dir(self) -> Path:
        """The folder the config's relative paths are relative to (the config file's); the run itself when
        none was recorded."""
        recorded = self.path / "base_dir"
        return Path(recorded.read_text().strip()) if recorded.is_file() else self.path

    def record_base_dir(self, base_dir: Path) -> None:
        (self.path / "base_dir").write_text(str(base_dir))

    # ------------------------------------------------------------------ lock
    def acquire(self) -> None:
        """One driver per run directory: a second `search`/`resume` on it fails instead of corrupting it."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path / ".lock"))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunStateError(f"{self.path}: another evomerge process is running this search") from None

    def release(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        if not self.status_file.is_file():
            return {"state": "new"}
        return dict(json.loads(self.status_file.read_text()))

    def set_status(self, **fields: Any) -> None:
        status = {**self.status(), **fields}
        atomic_write_bytes(self.status_file, (json.dumps(status, indent=2) + "\n").encode())

    # ------------------------------------------------------------------ evaluations.jsonl
    def append(self, record: dict[str, Any]) -> None:
        if self._jsonl is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.evaluations_file, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)
        self._jsonl.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete line of evaluations.jsonl; a torn final line (a kill mid-write) is skipped."""
        if not self.evaluations_file.is_file():
            return
        with open(self.evaluations_file, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    break

    def repair_jsonl(self) -> None:
        """Cut a torn final line so that appends after a crash start on a fresh line."""
        f = self.evaluations_file
        if not f.is_file():
            return
        data = f.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(f, "r+b") as fh:
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())

    # ------------------------------------------------------------------ genomes
    def save_genome(self, uid: str, vector: np.ndarray) -> str:
        rel = f"genomes/{uid}.npy"
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = _npy_bytes(vector)
        atomic_write_bytes(path, buf)
        return rel

    def load_genome(self, rel: str) -> np.ndarray:
        return np.asarray(np.load(self.path / rel), dtype=np.float64)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, state: dict[str, Any], keep: int = 3) -> Path:
        seq = int(state["sequence"])
        path = self.checkpoints / f"ckpt-{seq:08d}.pkl"
        atomic_write_bytes(path, pickle.dumps({"format": CHECKPOINT_FORMAT, **state}, protocol=pickle.HIGHEST_PROTOCOL))
        atomic_write_bytes(self.checkpoints / "LATEST", path.name.encode())
        for old in sorted(self.checkpoints.glob("ckpt-*.pkl"))[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self) -> dict[str, Any] | None:
        latest = self.checkpoints / "LATEST"
        candidates = []
        if latest.is_file():
            candidates.append(self.checkpoints / latest.read_text().strip())
        candidates += sorted(self.checkpoints.glob("ckpt-*.pkl"), reverse=True)
        for path in candidates:
            if path.is_file():
                try:
                    state = pickle.loads(path.read_bytes())
                except Exception:  # a checkpoint that cannot be read is skipped for an older one
                    continue
                if state.get("format") != CHECKPOINT_FORMAT:
                    raise RunStateError(f"{path}: checkpoint format {state.get('format')} is not supported")
                return dict(state)
        return None


def _npy_bytes(vector: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(vector, dtype=np.float32))
    return buf.getvalue()
