"""The ``lm_eval`` fitness suite: lm-evaluation-harness tasks on an in-memory model.

Split by concern: :mod:`~fitness.harness.options` (the config, checked against lm-eval's signatures),
:mod:`~fitness.harness.task_loading` (finding tasks, absolute data paths, the held-out guard),
:mod:`~fitness.harness.scores` (objectives and per-example scores from results) and
:mod:`~fitness.harness.suite` (the reusable suite). lm-eval itself is imported only when a suite is
prepared or called, so importing :mod:`fitness` stays cheap.
"""

from fitness.harness.options import LmEvalConfig
from fitness.harness.suite import LmEvalSuite

__all__ = ["LmEvalConfig", "LmEvalSuite"]
