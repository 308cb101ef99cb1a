"""Noise floors: Wilson intervals, paired comparisons on the same images, summaries over seeds.

Every accuracy the pipeline tabulates is a share of attacked images, so its sampling noise is a
binomial interval over those images (Wilson's score interval, `scipy.stats.binomtest(...)
.proportion_ci(method="wilson")`). Two accuracies measured on the same images (two models, or a
claim and the strongest attack) are compared image by image: only the discordant images (right
under one, wrong under the other) carry information, so the test is McNemar's, done exactly as a
binomial test of the discordant split against 1/2.

The interval of a paired difference is built from two Wilson intervals, each at the stated level:
the share of discordant images r = (only_a + only_b) / n, and the share of them that favour a,
p = only_a / (only_a + only_b); the difference is r (2p - 1), and its interval the extremes of
that product over both intervals. It is conservative (its coverage is at least the level's
square), never narrower than either part, and it stays honest when no image is discordant
(then p is unknown, [0, 1], and the interval is +- the upper bound of r).

A comparison against a threshold has three outcomes. `decide` (two-sided, for claims: can the data
tell which side it is on?): "raised" when the whole interval lies above it, "not raised" when the
whole interval lies at or below it, "within noise" otherwise. `flag` (one-sided, for the audit's
checks "is it above the threshold?"): "raised" when the whole interval lies above it, "within noise"
when only the estimate does, "not raised" otherwise. Over seeds (`across_seeds`) a verdict stands
only when every seed gives it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
RAISED, NOT_RAISED, WITHIN_NOISE, NOT_CHECKED = "raised", "not raised", "within noise", "not checked"
VERDICTS = (RAISED, NOT_RAISED, WITHIN_NOISE, NOT_CHECKED)


def wilson(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval (percent) of `correct` successes out of `n`; (nan, nan) for n = 0."""
    if n <= 0:
        return (math.nan, math.nan)
    correct = int(correct)
    if not 0 <= correct <= n:
        raise ValueError(f"correct = {correct} is not within [0, n = {n}]")
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=level, method="wilson")
    return (100.0 * ci.low, 100.0 * ci.high)


def wilson_of_accuracy(accuracy_pct: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson interval of an accuracy (%) measured on `n` images (the count is recovered by rounding)."""
    if n <= 0 or accuracy_pct is None or not math.isfinite(accuracy_pct):
        return (math.nan, math.nan)
    return wilson(int(round(accuracy_pct * n / 100.0)), n, level)


@dataclass(frozen=True)
class Paired:
    """Accuracy of `a` minus accuracy of `b` on the same `n` images, in points, with its interval."""

    diff_pp: float
    lo_pp: float
    hi_pp: float
    only_a: int  # images a gets right and b wrong
    only_b: int  # images b gets right and a wrong
    n: int
    p_value: float  # McNemar's exact test (two-sided) on the discordant images

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        return f"{self.diff_pp:+.1f} pp [{self.lo_pp:+.1f}, {self.hi_pp:+.1f}] (n={self.n}, {self.only_a} vs {self.only_b} discordant, McNemar p={self.p_value:.2g})"


def paired(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray, level: float = LEVEL) -> Paired:
    """Compare two per-image results on the same images (see the module docstring)."""
    a_arr, b_arr = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired results differ in length: {a_arr.shape} vs {b_arr.shape}")
    n = int(a_arr.size)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, 0, 0, 0, math.nan)
    only_a = int(np.sum(a_arr & ~b_arr))
    only_b = int(np.sum(b_arr & ~a_arr))
    return paired_counts(only_a, only_b, n, level)


def paired_counts(only_a: int, only_b: int, n: int, level: float = LEVEL) -> Paired:
    """`paired` from the discordant counts alone."""
    if n <= 0:
        return Paired(math.nan, math.nan, math.nan, 0, 0, 0, math.nan)
    d = only_a + only_b
    if d > n:
        raise ValueError(f"{d} discordant images out of n = {n}")
    r_lo, r_hi = (x / 100.0 for x in wilson(d, n, level))
    if d:
        p_lo, p_hi = (x / 100.0 for x in wilson(only_a, d, level))
        p_value = float(stats.binomtest(only_a, d, 0.5).pvalue)
    else:
        p_lo, p_hi, p_value = 0.0, 1.0, 1.0
    low_factor, high_factor = 2 * p_lo - 1, 2 * p_hi - 1
    lo = r_hi * low_factor if low_factor < 0 else r_lo * low_factor
    hi = r_hi * high_factor if high_factor > 0 else r_lo * high_factor
    return Paired(100.0 * (only_a - only_b) / n, 100.0 * lo, 100.0 * hi, only_a, only_b, n, p_value)


def decide(lo: float, hi: float, threshold: float) -> str:
    """'raised' (interval above `threshold`), 'not raised' (at or below it), else 'within noise'."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return NOT_CHECKED
    if lo > threshold:
        return RAISED
    if hi <= threshold:
        return NOT_RAISED
    return WITHIN_NOISE


def flag(estimate: float, lo: float, hi: float, threshold: float) -> str:
    """One-sided decision for a check that asks "is it above the threshold?" (the audit's flags).

    'raised' when the whole interval lies above `threshold` (beyond the threshold and beyond its
    noise floor); 'within noise' when the estimate lies above it but the interval reaches down to
    it; 'not raised' when the estimate is at or below it. A flag can then only move between
    'raised' and 'not raised' when its estimate moves by at least the distance from the interval's
    lower end to the estimate (about half the interval), so floating-point differences between
    processors move it at most to or from 'within noise'. Unlike `decide`, identical results
    (no discordant image) give 'not raised', not 'within noise'.
    """
    if any(v is None or math.isnan(v) for v in (estimate, lo, hi)):
        return NOT_CHECKED
    if lo > threshold:
        return RAISED
    return WITHIN_NOISE if estimate > threshold else NOT_RAISED


def across_seeds(verdicts: Iterable[str]) -> str:
    """One verdict over seeds: the seeds' common verdict, 'within noise' when they disagree.

    Seeds that could not be checked are left out; none checked gives 'not checked'.
    """
    checked = [v for v in verdicts if v != NOT_CHECKED]
    if not checked:
        return NOT_CHECKED
    return checked[0] if all(v == checked[0] for v in checked) else WITHIN_NOISE


@dataclass(frozen=True)
class SeedSummary:
    """An accuracy over seeds: mean, sample standard deviation (0 for one seed), min, max, count."""

    mean: float
    sd: float
    lo: float
    hi: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def over_seeds(values: Iterable[float | None]) -> SeedSummary:
    """Summary of one number over the seeds of a grid entry (missing values left out)."""
    vals = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    if not vals.size:
        return SeedSummary(math.nan, math.nan, math.nan, math.nan, 0)
    sd = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
    return SeedSummary(float(vals.mean()), sd, float(vals.min()), float(vals.max()), int(vals.size))


def pooled_wilson(accuracies: Iterable[float], ns: Iterable[int], level: float = LEVEL) -> tuple[float, float]:
    """Wilson interval of the images pooled over seeds (each seed's accuracy on its `n` images)."""
    correct = total = 0
    for acc, n in zip(accuracies, ns):
        if acc is None or not math.isfinite(acc) or not n:
            continue
        correct += int(round(acc * n / 100.0))
        total += int(n)
    return wilson(correct, total, level)
