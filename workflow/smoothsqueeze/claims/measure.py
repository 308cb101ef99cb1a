"""Numbers with their noise floor, and the verdict vocabulary: what every claim's rule decides with.

Numpy and scipy only. Differences are in points (accuracies) or in the quantity's own unit
(medians of Eq. 4 quantities); each carries its interval and says how it was made (`how`):

- `paired_diff`: two per-image results on the same images (evidence.intervals.paired: McNemar's
  exact test, the interval from the discordant images).
- `unpaired_diff`: two aggregate accuracies (records written before per-image results were kept,
  or results on different images): Newcombe's hybrid score interval, built from the two Wilson
  intervals (Newcombe 1998, method 10); wider than the paired one, and it says so.
- `bootstrap_diff`: a statistic (median, spread) of per-image analysis arrays of two models on the
  same images, resampling images jointly (scipy.stats.bootstrap, percentile interval, fixed seed).
- `seed_diff`: the same statistic over the seeds of two grid entries: Welch's t interval of the
  difference of the seed means (the seed spread is the noise floor).

A difference is then decided against a threshold with evidence.intervals.decide ("raised" when the
whole interval is above it, "not raised" when it is at or below it, else "within noise"), and over
seeds with evidence.intervals.across_seeds (every seed must agree).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import stats

from ..evidence import intervals as iv

from .verdicts import FAILS, HOLDS, NOT_TESTABLE, PAPER_ONLY, VERDICT_MEANING, VERDICTS, WITHIN_NOISE  # noqa: F401 - re-exported

#: Bootstrap settings (fixed, so a ledger is reproducible).
BOOTSTRAP_RESAMPLES = 999
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Diff:
    """`a - b` with its interval at evidence.intervals.LEVEL; `how` names the noise floor it used."""

    diff: float
    lo: float
    hi: float
    how: str

    def decide(self, threshold: float = 0.0) -> str:
        return iv.decide(self.lo, self.hi, threshold)

    def text(self, unit: str = "pp", digits: int = 1) -> str:
        f = f"{{:+.{digits}f}}"
        if not math.isfinite(self.diff):
            return f"n/a ({self.how})"
        return f"{f.format(self.diff)} {unit} [{f.format(self.lo)}, {f.format(self.hi)}] ({self.how})".replace(" ]", "]")


def paired_diff(a: np.ndarray, b: np.ndarray) -> Diff:
    """Accuracy of `a` minus `b` on the same images (points), McNemar / discordant-pair interval."""
    p = iv.paired(a, b)
    return Diff(p.diff_pp, p.lo_pp, p.hi_pp, f"paired, n={p.n}, {p.only_a} vs {p.only_b} discordant")


def unpaired_diff(acc_a: float, n_a: int, acc_b: float, n_b: int, why: str = "aggregate") -> Diff:
    """Accuracy (%) of a on n_a images minus b on n_b images: Newcombe's interval from the two Wilson intervals."""
    if not (n_a and n_b) or acc_a is None or acc_b is None or not (math.isfinite(acc_a) and math.isfinite(acc_b)):
        return Diff(math.nan, math.nan, math.nan, f"unpaired, {why}")
    la, ua = iv.wilson_of_accuracy(acc_a, n_a)
    lb, ub = iv.wilson_of_accuracy(acc_b, n_b)
    pa, pb = round(acc_a * n_a / 100) * 100 / n_a, round(acc_b * n_b / 100) * 100 / n_b
    d = pa - pb
    lo = d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    hi = d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    size = f"n={n_a}" if n_a == n_b else f"n={n_a} vs {n_b}"
    return Diff(d, lo, hi, f"unpaired Wilson/Newcombe, {size}, {why}")


def spread(values: np.ndarray, axis: int | None = None) -> Any:
    """Interquartile range (the 'cosine spread' of Fig. 7); NaN values (a zero gradient gap) left out."""
    pct = np.nanpercentile if np.isnan(values).any() else np.percentile
    q75, q25 = pct(values, [75, 25], axis=axis)
    return q75 - q25


def median(values: np.ndarray, axis: int | None = None) -> Any:
    """Median; NaN values left out (numpy's nanmedian is slow, so only when there are any)."""
    return (np.nanmedian if np.isnan(values).any() else np.median)(values, axis=axis)


STATISTICS: dict[str, Callable[..., Any]] = {"median": median, "spread": spread}
#: Resamples evaluated at once (bounds memory: 50 x 10,000 images x 9 classes x 8 bytes = 36 MB).
BOOTSTRAP_BATCH = 50


def _pooled(fn: Callable[..., Any], data: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """fn over the rows `idx` (..., n) of `data` (N,) or (N, C-1), every value of those rows pooled."""
    picked = data[idx]  # (..., n) or (..., n, C-1)
    return fn(picked.reshape(*idx.shape[:-1], -1), axis=-1)


def bootstrap_diff(a: np.ndarray, b: np.ndarray, statistic: str = "median") -> Diff:
    """stat(a) - stat(b) of two models' per-image arrays ((N,) or (N, C-1), one row per image).

    Same images (equal N, rows in the same order): images are resampled jointly (paired);
    otherwise each model's images independently. scipy.stats.bootstrap, percentile interval.
    """
    fn = STATISTICS[statistic]
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = float(fn(a) - fn(b))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    common = dict(vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES, batch=BOOTSTRAP_BATCH, method="percentile", random_state=rng)
    if len(a) == len(b):
        how = f"bootstrap over {len(a)} images, paired"
        res = stats.bootstrap((np.arange(len(a)),), lambda idx, axis=-1: _pooled(fn, a, idx) - _pooled(fn, b, idx), **common)
    else:
        how = f"bootstrap over {len(a)} and {len(b)} images"
        res = stats.bootstrap(
            (np.arange(len(a)), np.arange(len(b))), lambda i, j, axis=-1: _pooled(fn, a, i) - _pooled(fn, b, j), **common
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # a degenerate sample (all values equal)
        lo = hi = d
    return Diff(d, min(lo, d), max(hi, d), how)


def seed_diff(values_a: Sequence[float], values_b: Sequence[float], level: float = iv.LEVEL) -> Diff:
    """mean(a) - mean(b) over seeds with Welch's t interval (a side with one seed adds no variance)."""
    a = np.array([v for v in values_a if v is not None and math.isfinite(v)], dtype=float)
    b = np.array([v for v in values_b if v is not None and math.isfinite(v)], dtype=float)
    if not (a.size and b.size) or a.size + b.size < 3:
        return Diff(math.nan, math.nan, math.nan, "seed spread (needs 2 or more seeds)")
    va = a.var(ddof=1) / a.size if a.size > 1 else 0.0
    vb = b.var(ddof=1) / b.size if b.size > 1 else 0.0
    se = math.sqrt(va + vb)
    d = float(a.mean() - b.mean())
    if se == 0:
        return Diff(d, d, d, f"seed spread, {a.size} vs {b.size} seeds, no spread")
    # Welch-Satterthwaite degrees of freedom
    num = (va + vb) ** 2
    den = (va**2 / (a.size - 1) if a.size > 1 else 0.0) + (vb**2 / (b.size - 1) if b.size > 1 else 0.0)
    dof = num / den
    t = float(stats.t.ppf(0.5 + level / 2, dof))
    return Diff(d, d - t * se, d + t * se, f"Welch t over seeds, {a.size} vs {b.size} seeds")


# ---------------------------------------------------------------- parts and their combination


@dataclass
class Part:
    """One testable statement inside a claim: its verdict, the numbers behind it, the models it used."""

    name: str
    verdict: str
    text: str
    models: list[str] = field(default_factory=list)
    need: str = ""  # for NOT_TESTABLE: what it would need


def untested(name: str, need: str) -> Part:
    return Part(name, NOT_TESTABLE, f"{name}: not testable here ({need})", need=need)


#: decide()'s outcome -> verdict, for a claim that the difference is ABOVE the threshold ...
ABOVE = {iv.RAISED: HOLDS, iv.NOT_RAISED: FAILS, iv.WITHIN_NOISE: WITHIN_NOISE, iv.NOT_CHECKED: NOT_TESTABLE}
#: ... and for a claim that it is AT OR BELOW it.
AT_MOST = {iv.RAISED: FAILS, iv.NOT_RAISED: HOLDS, iv.WITHIN_NOISE: WITHIN_NOISE, iv.NOT_CHECKED: NOT_TESTABLE}

#: Which verdict wins when parts disagree: one failing part refutes a claim; a part the audit
#: breaks comes next; then an undecided part; a claim holds only when every tested part holds.
PRECEDENCE = (FAILS, PAPER_ONLY, WITHIN_NOISE, HOLDS)


def combine(parts: Iterable[Part]) -> tuple[str, list[Part], list[Part]]:
    """(verdict, tested parts, untested parts): the tested parts decide (PRECEDENCE); none tested: not testable."""
    parts = list(parts)
    tested = [p for p in parts if p.verdict != NOT_TESTABLE]
    rest = [p for p in parts if p.verdict == NOT_TESTABLE]
    if not tested:
        return NOT_TESTABLE, tested, rest
    verdicts = {p.verdict for p in tested}
    return next(v for v in PRECEDENCE if v in verdicts), tested, rest


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}%"


def fmt_num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}"
