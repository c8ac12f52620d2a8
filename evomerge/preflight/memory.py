"""Memory a merge and an evaluator actor will need, estimated from header sizes.

The model follows how the engine holds tensors (see ``merge/executor.py`` and
``distributed/evaluator.py``): a streaming merge keeps one tensor of every input at a time, converted to
float32, plus one reused output buffer; an evaluator keeps one resident model in the configured dtype
and reads the sources memory-mapped (CPU: pages in the OS page cache, shared by every actor on a node;
GPU: copied once to the device). These are lower bounds on the engine's own buffers, not on the
framework overhead (CUDA context, allocator slack, the fitness suite's activations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evomerge.preflight.headers import SourceHeaders
from evomerge.preflight.report import Check

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
COMPUTE_BYTES = 4
"""Operators compute in float32 (float64 sources stay float64; rare enough to ignore here)."""


@dataclass(frozen=True)
class MemoryEstimate:
    merge_working: int
    """Bytes of tensors alive at once in a streaming merge (on the merge device)."""
    sources_mapped: int
    """Bytes of every source's weights: the page cache a node needs to keep them mapped."""
    resident_model: int
    """One model in the evaluator's dtype."""
    evaluator_cpu: int
    """Per CPU actor: resident model + merge working set (sources are in the shared page cache)."""
    evaluator_gpu: int
    """Per GPU actor, on the GPU: sources copied once + resident model + merge working set."""


def estimate(heads: Sequence[SourceHeaders], model_dtype: str | None) -> MemoryEstimate:
    template = heads[0]
    largest = max(h.largest_numel for h in heads)
    working = (len(heads) + 1) * largest * COMPUTE_BYTES
    sources = sum(h.total_bytes for h in heads)
    resident = template.total_bytes if model_dtype is None else template.n_params * _DTYPE_BYTES[model_dtype]
    return MemoryEstimate(
        merge_working=working, sources_mapped=sources, resident_model=resident,
        evaluator_cpu=resident + working, evaluator_gpu=sources + resident + working,
    )


def human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"


def memory_checks(est: MemoryEstimate, *, actors: int | None = None, gpus_per_actor: float = 0.0) -> list[Check]:
    """Estimates as ``ok`` findings (memory is reported, not judged: the machine is not known here)."""
    data = dict(est.__dict__)
    out = [Check("memory", "ok", f"merge: about {human(est.merge_working)} of working tensors on the merge device, "
                 f"sources read memory-mapped ({human(est.sources_mapped)} from disk)", {"merge_working": est.merge_working,
                                                                                       "sources_mapped": est.sources_mapped})]
    if actors is None:
        out.append(Check("memory", "ok", f"evaluator: per CPU actor about {human(est.evaluator_cpu)} RAM plus "
                         f"{human(est.sources_mapped)} page cache shared per node; per GPU actor about "
                         f"{human(est.evaluator_gpu)} GPU memory", data))
    elif gpus_per_actor > 1:  # the resident model and its cached sources are sharded over the actor's GPUs
        n = int(gpus_per_actor)
        out.append(Check("memory", "ok", f"evaluator: {actors} actor(s) of {n} GPUs, each GPU about "
                         f"{human(est.evaluator_gpu / n)} (a 1/{n} shard of sources {human(est.sources_mapped)} + "
                         f"resident model {human(est.resident_model)} + working set), plus "
                         f"{human(est.sources_mapped)} page cache per node", data | {"actors": actors, "gpus": n}))
    elif gpus_per_actor > 0:
        out.append(Check("memory", "ok", f"evaluator: {actors} GPU actor(s), each about {human(est.evaluator_gpu)} "
                         f"GPU memory (sources {human(est.sources_mapped)} + resident model {human(est.resident_model)} "
                         f"+ working set), plus {human(est.sources_mapped)} page cache per node", data | {"actors": actors}))
    else:
        out.append(Check("memory", "ok", f"evaluator: {actors} CPU actor(s), each about {human(est.evaluator_cpu)} RAM "
                         f"(resident model {human(est.resident_model)} + working set), plus {human(est.sources_mapped)} "
                         f"page cache shared per node; on GPUs each would need about {human(est.evaluator_gpu)}",
                         data | {"actors": actors}))
    return out
