"""The Pareto set of (cost, accuracy) points: lower cost and higher accuracy are better.

A point is dominated when another point costs at most as much and is at least as accurate, and is
strictly better in one of the two. The Pareto set is every point no other point dominates. Ties:
points with equal cost and equal accuracy do not dominate each other, so all of them stay in the
set; of points with equal cost the most accurate wins, of points with equal accuracy the cheapest.
Points not eligible (collapsed or overfitted models, a missing value) are never in the set and never
dominate another point. Decided on the point estimates (mean over seeds): the noise of each
estimate is shown beside it, not folded into the set.
"""
from __future__ import annotations

import math
from typing import Sequence


def _usable(value: float) -> bool:
    return value is not None and math.isfinite(float(value))


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether point a = (cost, accuracy) dominates b: no costlier, no less accurate, better in one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_mask(costs: Sequence[float], accuracies: Sequence[float], eligible: Sequence[bool] | None = None) -> list[bool]:
    """Per point, whether it is in the Pareto set (see the module docstring)."""
    if len(costs) != len(accuracies) or (eligible is not None and len(eligible) != len(costs)):
        raise ValueError(f"pareto_mask: {len(costs)} costs, {len(accuracies)} accuracies, {len(eligible or costs)} eligibility flags")
    ok = [(_usable(c) and _usable(a) and (eligible is None or bool(eligible[i]))) for i, (c, a) in enumerate(zip(costs, accuracies))]
    points = [(float(c), float(a)) if good else (math.nan, math.nan) for c, a, good in zip(costs, accuracies, ok)]
    return [good and not any(ok[j] and dominates(points[j], p) for j in range(len(points)) if j != i)
            for i, (p, good) in enumerate(zip(points, ok))]


def step_line(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """The frontier as a step line through the Pareto points sorted by cost: the best accuracy
    reachable at each cost (flat until the next point's cost, then up to its accuracy)."""
    ordered = sorted(points, key=lambda p: (p[0], -p[1]))
    xs: list[float] = []
    ys: list[float] = []
    for x, y in ordered:
        if xs:
            xs.append(x)
            ys.append(ys[-1])
        xs.append(x)
        ys.append(y)
    return xs, ys
