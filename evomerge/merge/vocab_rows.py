"""Moving vocabulary rows to the output vocabulary, and merging rows only some models have.

Before an embedding or LM-head tensor is merged, each model's rows are gathered into the output's order
(:class:`~evomerge.merge.vocab_union.VocabPlan`); a row for a token the model lacks is its ``new_rows``
value: the mean of its rows that carry a token, or zeros. The base model's missing rows follow the same
rule, so operators that subtract a base see a neutral reference.

A token's merged row is then the merge of that token's rows *in the models that have it*: rows are
grouped by which inputs hold them, and every group that lacks some input is merged again with the
operator over the holders only (their per-model parameters, the base row). Exceptions, by design:

* no input holds the token but the base does: the base's row (the merge of the rows that exist);
* nobody holds it (padding rows, ids past every embedding): the output's ``new_rows`` value, the mean of
  the merged rows that belong to a token, or zeros;
* the operator cannot merge that few models (``slerp`` and other fixed-arity methods): the merge of all
  inputs with the ``new_rows`` stand-ins.

Whole-tensor statistics (TIES/DARE thresholds, slerp's angle) are those of the rows being merged.
"""

from __future__ import annotations

import torch

from evomerge.merge.operator import MergeInputs, OperatorSpec
from evomerge.merge.params import ResolvedParams
from evomerge.merge.planner import TensorTask
from evomerge.merge.vocab_union import VocabPlan


class VocabRows:
    """The row maps of one compiled merge as index tensors (made once per source and device)."""

    def __init__(self, plan: VocabPlan) -> None:
        self.plan = plan
        self._index: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._token_rows: dict[tuple[int, torch.device], torch.Tensor] = {}

    def index(self, source: int, device: torch.device) -> torch.Tensor:
        """Output row → source row (-1: missing), as a long tensor."""
        key = (source, device)
        if key not in self._index:
            self._index[key] = torch.tensor(self.plan.rows[source], dtype=torch.long, device=device)
        return self._index[key]

    def _rows_with_tokens(self, source: int, device: torch.device) -> torch.Tensor:
        key = (source, device)
        if key not in self._token_rows:
            self._token_rows[key] = torch.tensor(self.plan.token_rows[source], dtype=torch.long, device=device)
        return self._token_rows[key]

    def reindex(self, tensor: torch.Tensor, source: int) -> torch.Tensor:
        """``tensor``'s rows in the output vocabulary's order; missing rows get the ``new_rows`` value."""
        index = self.index(source, tensor.device)
        present = index >= 0
        out = tensor.new_empty((self.plan.size, *tensor.shape[1:]))
        out[present] = tensor.index_select(0, index[present])
        missing = ~present
        if bool(missing.any()):
            out[missing] = self.filler(tensor, self._rows_with_tokens(source, tensor.device))
        return out

    def filler(self, tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The stand-in row: the mean of ``tensor``'s ``rows`` (``new_rows: mean``) or zeros."""
        if self.plan.new_rows == "mean" and rows.numel():
            return tensor.index_select(0, rows).mean(dim=0)
        return tensor.new_zeros(tensor.shape[1:])

    def holders(self, task: TensorTask, device: torch.device) -> torch.Tensor:
        """Bool matrix [rows, inputs + 1]: which inputs (then the base, last column) have each output row."""
        columns = [self.index(source, device) >= 0 for source, _ in task.inputs]
        if task.base is not None:
            columns.append(self.index(task.base[0], device) >= 0)
        else:
            columns.append(torch.zeros(self.plan.size, dtype=torch.bool, device=device))
        return torch.stack(columns, dim=1)

    def merge(self, spec: OperatorSpec, inputs: MergeInputs, params: ResolvedParams, task: TensorTask) -> torch.Tensor:
        """Merge re-indexed ``inputs``, then redo the rows some inputs lack over the inputs that have them."""
        out = spec.fn(inputs, params)
        given = [*inputs.tensors, *([inputs.base] if inputs.base is not None else [])]
        if any(out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() for t in given):
            out = out.clone()  # an operator that hands back an input (passthrough): rows are rewritten below
        n = len(inputs.tensors)
        patterns, group = torch.unique(self.holders(task, out.device), dim=0, return_inverse=True)
        orphans = torch.zeros(self.plan.size, dtype=torch.bool, device=out.device)
        for g, pattern in enumerate(patterns.tolist()):
            have = [k for k in range(n) if pattern[k]]
            if len(have) == n:
                continue
            rows = (group == g).nonzero().squeeze(1)
            if not have:
                if inputs.base is not None and pattern[n]:
                    out[rows] = inputs.base.index_select(0, rows)
                else:
                    orphans[rows] = True
                continue
            if len(have) < spec.min_models or (spec.max_models is not None and len(have) > spec.max_models):
                continue
            sub = MergeInputs(
                tensors=[inputs.tensors[k].index_select(0, rows) for k in have],
                base=None if inputs.base is None else inputs.base.index_select(0, rows),
                name=inputs.name, generator=inputs.generator, stats=inputs.stats, layer=inputs.layer,
            )
            out[rows] = spec.fn(sub, subset(params, have)).to(out.dtype)
        if bool(orphans.any()):
            kept = (~orphans).nonzero().squeeze(1)
            out[orphans] = self.filler(out, kept)
        return out


def subset(params: ResolvedParams, keep: list[int]) -> ResolvedParams:
    """``params`` for the inputs ``keep`` only (per-model lists follow the inputs; shared values stay)."""
    return ResolvedParams(
        shared=dict(params.shared),
        per_model={name: [values[k] for k in keep] for name, values in params.per_model.items()},
        base=dict(params.base),
    )
