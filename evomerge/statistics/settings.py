"""What to collect and how: the settings that, with the model and the data, determine the statistics.

Every field here changes the numbers that come out, so all of them enter the cache key (``cache.py``);
how fast they are computed (device, batch size) does not, and lives in the collector's arguments instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StatisticKind = Literal["fisher", "gram"]

FisherLabels = Literal["expected", "sampled", "predicted", "true"]
"""Which label y the squared gradient of log p(y | x) is taken at:

* ``expected``: Σ_y p(y|x) (∂ log p(y|x))², the exact expectation over the model's own predictive
  distribution, the Fisher information as Matena & Raffel define it (one backward pass per class, so
  classifiers only);
* ``sampled``: y ~ p(·|x), drawn from a seeded generator (a one-sample Monte Carlo estimate of the same);
* ``predicted``: y = argmax p(·|x);
* ``true``: the data set's label (the "empirical Fisher").
"""


class StatisticsSettings(BaseModel):
    """Which statistics to collect over how many examples."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kinds: tuple[StatisticKind, ...] = ("fisher", "gram")
    """``fisher``: diagonal Fisher of every trainable parameter; ``gram``: Σ x xᵀ of every ``nn.Linear`` input."""
    fisher_labels: FisherLabels = "expected"
    max_examples: int | None = Field(256, gt=0)
    """Examples (classifier rows, LM sequences) used, from the start of the data; None: all of them."""
    seed: int = 0
    """Seed of the label draws of ``fisher_labels: sampled``."""

    @model_validator(mode="after")
    def _some_kind(self) -> StatisticsSettings:
        if not self.kinds:
            raise ValueError("kinds must name at least one of fisher, gram")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds lists a statistic twice: {list(self.kinds)}")
        return self
