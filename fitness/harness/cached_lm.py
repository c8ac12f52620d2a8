"""An ``HFLM`` that tokenizes each (context, continuation) pair once for the life of the suite.

Every candidate is scored on the same requests, so re-tokenizing them per candidate is pure overhead (for
small models it is most of an evaluation). Token ids depend only on the tokenizer and HFLM's fixed
settings, never on the weights, and the suite builds a new HFLM whenever the model or tokenizer object
changes, so the cache cannot go stale. Ids are stored as int32 arrays (a quarter of Python lists' memory)
and handed out as fresh lists, so lm-eval can mutate them freely.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def token_caching_hflm(**kwargs: Any) -> Any:
    """``HFLM(**kwargs)`` with the pair-tokenization cache (a subclass built on first use)."""
    from lm_eval.models.huggingface import HFLM

    class TokenCachingHFLM(HFLM):
        def __init__(self, **init_kwargs: Any) -> None:
            super().__init__(**init_kwargs)
            self._pair_tokens: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            key = (context, continuation)
            hit = self._pair_tokens.get(key)
            if hit is None:
                ctx, cont = super()._encode_pair(context, continuation)
                hit = (np.asarray(ctx, dtype=np.int32), np.asarray(cont, dtype=np.int32))
                self._pair_tokens[key] = hit
            return hit[0].tolist(), hit[1].tolist()

    return TokenCachingHFLM(**kwargs)
