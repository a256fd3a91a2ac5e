"""How per-case values become one score (``ranking_by``): the one combiner, for kernels and
models alike."""

from __future__ import annotations

import math
from collections.abc import Sequence


def combine(values: Sequence[float], ranking_by: str) -> float | None:
    """``last`` (the field's default), ``mean`` or ``geom`` (geometric mean) of ``values``.

    None when there is nothing to rank: no values, or one that is not a positive finite number
    (a time or a rate of 0 is no measurement, and a geometric mean needs positive values).
    ``custom`` scores come from the harness, not from here: asking to combine them is an error.
    """
    if ranking_by not in ("last", "mean", "geom"):
        raise ValueError(f"ranking_by {ranking_by!r} has no combiner")
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        return None
    if ranking_by == "last":
        return values[-1]
    if ranking_by == "geom":
        return math.exp(sum(math.log(v) for v in values) / len(values))
    return sum(values) / len(values)
