"""The suite's ``HFLM``: lm-eval's own model wrapper with two weight-independent savings.

* ``token_cache``: each (context, continuation) pair is tokenized once for the life of the suite. Every
  candidate is scored on the same requests, so re-tokenizing them per candidate is pure overhead (for
  small models, much of an evaluation). Token ids depend only on the tokenizer and HFLM's fixed settings,
  and the suite builds a new HFLM whenever the model or tokenizer object changes, so the cache cannot go
  stale. Ids are kept as int32 arrays (a quarter of Python lists' memory) and handed out as fresh lists,
  so lm-eval can mutate them freely.
* ``continuation_logits``: loglikelihoods with the output head and log-softmax applied only at
  continuation positions (:mod:`fitness.harness.continuation_scoring`); HFLM's path where that does not
  apply.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from fitness.harness import continuation_scoring


@functools.cache
def suite_hflm_class() -> type:
    """The ``HFLM`` subclass, built on first use so that importing the suite does not import lm-eval."""
    from lm_eval.models.huggingface import HFLM

    class SuiteHFLM(HFLM):
        def __init__(self, *, token_cache: bool = True, continuation_logits: bool = True, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.token_cache = token_cache
            self.continuation_logits = continuation_logits
            self._pair_tokens: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
            self.head_gather = continuation_scoring.HeadGather(self.model)

        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            if not self.token_cache:
                return super()._encode_pair(context, continuation)
            key = (context, continuation)
            hit = self._pair_tokens.get(key)
            if hit is None:
                ctx, cont = super()._encode_pair(context, continuation)
                hit = (np.asarray(ctx, dtype=np.int32), np.asarray(cont, dtype=np.int32))
                self._pair_tokens[key] = hit
            return hit[0].tolist(), hit[1].tolist()

        def _loglikelihood_tokens(
            self, requests: list[Any], disable_tqdm: bool = False, override_bs: int | None = None
        ) -> list[tuple[float, bool]]:
            if self.continuation_logits and continuation_scoring.applies(self):
                return continuation_scoring.score_requests(self, requests, self.head_gather)
            return super()._loglikelihood_tokens(
                requests, disable_tqdm=disable_tqdm, override_bs=override_bs
            )

    return SuiteHFLM


def suite_hflm(*, token_cache: bool, continuation_logits: bool, **kwargs: Any) -> Any:
    """``HFLM(**kwargs)`` with the suite's savings switched on or off."""
    return suite_hflm_class()(token_cache=token_cache, continuation_logits=continuation_logits, **kwargs)
