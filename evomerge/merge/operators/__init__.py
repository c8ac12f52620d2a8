"""Built-in merge operators; importing this package registers them all."""

from evomerge.merge.operators import (  # noqa: F401
    breadcrumbs,
    consensus,
    dare,
    della,
    doge,
    ffg,
    fisher,
    linear,
    model_stock,
    mwa,
    opcm,
    ota,
    passthrough,
    regmean,
    slerp,
    spherical,
    task_arithmetic,
    ties,
)
