"""Comparisons of two grid entries over their seeds, each with its noise floor; what the claims' rules call.

- `accuracy(A, B, metric)`: per seed, the paired per-image difference of accuracies (unpaired
  Wilson/Newcombe for records without per-image results); over seeds, every seed must agree
  (evidence.intervals.across_seeds), and the text gives the seed mean and spread.
- `statistic(A, B, array)`: a median (or spread) of per-image analysis arrays: with 2+ seeds on a
  side, Welch's t interval over the seeds' values; with one seed each, a paired bootstrap over images.
- `robust(A, B)`: the gradient-masking check. First the comparison under the paper's attacks (on
  every attacked image); if it does not hold, that is the verdict ("fails" or "within noise"). If it
  holds, again under the audit's per-image strongest attack on the audited images: holds there too,
  "holds"; reversed there, or left within noise while A's own accuracy drops from its paper's-attack
  number to the strongest attack's beyond noise, "holds under the paper's attacks only"; left within
  noise with no such drop (the audit's smaller sample cannot separate them, nothing is masked),
  "holds".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..evidence import intervals as iv
from .inputs import Group, Model, Result
from .measure import (
    ABOVE, AT_MOST, FAILS, HOLDS, PAPER_ONLY, Diff, Part, bootstrap_diff, fmt_num, fmt_pct, paired_diff, seed_diff,
    unpaired_diff,
)


@dataclass
class Comparison:
    """A - B over seeds: the decision against the threshold, the numbers, the models used."""

    decision: str
    text: str
    models: list[str] = field(default_factory=list)
    diffs: list[Diff] = field(default_factory=list)
    mean_a: float = math.nan
    mean_b: float = math.nan

    def verdict(self, claim_is: str = "above") -> str:
        return (ABOVE if claim_is == "above" else AT_MOST)[self.decision]

    def part(self, name: str, claim_is: str = "above") -> Part:
        return Part(name, self.verdict(claim_is), f"{name}: {self.text}", self.models)


def seed_pairs(a: Group, b: Group) -> list[tuple[Model, Model]]:
    """Seeds of two groups paired by seed; a group with one trained seed pairs with every seed of the other."""
    ta, tb = a.trained(), b.trained()
    if not ta or not tb:
        return []
    if len(ta) == 1 or len(tb) == 1:
        return [(x, y) for x in ta for y in tb]
    by_seed = {m.seed: m for m in tb}
    pairs = [(x, by_seed[x.seed]) for x in ta if x.seed in by_seed]
    return pairs or list(zip(sorted(ta, key=lambda m: str(m.seed)), sorted(tb, key=lambda m: str(m.seed))))


def _common(ra: Result, rb: Result) -> tuple[np.ndarray, np.ndarray] | None:
    """The two masks on the images both were attacked on (None when either lacks per-image results)."""
    if not (ra.per_image and rb.per_image):
        return None
    if len(ra.indices) == len(rb.indices) and np.array_equal(ra.indices, rb.indices):
        return ra.mask, rb.mask
    common, ia, ib = np.intersect1d(ra.indices, rb.indices, assume_unique=True, return_indices=True)
    if not len(common):
        return None
    return ra.mask[ia], rb.mask[ib]


def diff_of(ra: Result, rb: Result) -> Diff:
    masks = _common(ra, rb)
    if masks is not None:
        return paired_diff(*masks)
    why = "aggregate: no per-image results" if not (ra.per_image and rb.per_image) else "aggregate: no common images"
    return unpaired_diff(ra.accuracy, ra.n, rb.accuracy, rb.n, why)


def _seed_text(diffs: list[Diff], decisions: list[str], unit: str = "pp") -> str:
    if len(diffs) == 1:
        return diffs[0].text(unit)
    s = iv.over_seeds([d.diff for d in diffs])
    return f"mean {s.mean:+.1f} {unit} (sd {s.sd:.1f}, {s.n} seed pairs: {', '.join(decisions)})"


def accuracy(a: Group, b: Group, metric: str, threshold: float = 0.0, metric_b: str | None = None, what: str | None = None) -> Comparison:
    """Accuracy of A (metric) minus B (metric_b, default the same) per seed pair, decided against `threshold`."""
    pairs = seed_pairs(a, b)
    if not pairs:
        return Comparison(iv.NOT_CHECKED, f"no trained seed of {a.id if not a.trained() else b.id}")
    diffs, decisions, va, vb, how = [], [], [], [], ""
    for x, y in pairs:
        ra, rb = x.result(metric), y.result(metric_b or metric)
        d = diff_of(ra, rb)
        diffs.append(d)
        decisions.append(d.decide(threshold))
        va.append(ra.accuracy)
        vb.append(rb.accuracy)
        how = how or ra.what
    decision = iv.across_seeds(decisions)
    ma, mb = float(np.mean(va)), float(np.mean(vb))
    name_b = f"{b.label()}" if a is not b else (what or metric_b or metric)
    name_a = a.label() if a is not b else metric
    target = f" (threshold {threshold:+g} pp)" if threshold else ""
    text = f"[{what or how}] {name_a} {fmt_pct(ma)} vs {name_b} {fmt_pct(mb)}: {_seed_text(diffs, decisions)}{target}"
    models = sorted({m.id for pair in pairs for m in pair})
    return Comparison(decision, text, models, diffs, ma, mb)


ArrayOf = Callable[[Model], np.ndarray]


def statistic(a: Group, b: Group, array: ArrayOf, name: str, stat: str = "median", threshold: float = 0.0) -> Comparison:
    """stat(array of A) - stat(array of B): Welch over seeds when a side has 2+ seeds, else a paired bootstrap over images."""
    from .measure import STATISTICS

    fn = STATISTICS[stat]
    ta, tb = a.trained(), b.trained()
    if not ta or not tb:
        return Comparison(iv.NOT_CHECKED, f"no trained seed of {a.id if not ta else b.id}")
    va = [float(fn(array(m))) for m in ta]
    vb = [float(fn(array(m))) for m in tb]
    if len(ta) > 1 or len(tb) > 1:
        d = seed_diff(va, vb)
    else:
        d = bootstrap_diff(array(ta[0]), array(tb[0]), stat)
    decision = d.decide(threshold)
    ma, mb = float(np.mean(va)), float(np.mean(vb))
    text = f"{stat} {name}: {a.label()} {fmt_num(ma)} vs {b.label()} {fmt_num(mb)}: {d.text('', 3 if abs(d.diff) < 1 else 2)}"
    return Comparison(decision, text.replace("  [", " ["), [m.id for m in ta + tb], [d], ma, mb)


def dropped(a: Group, claim_metric: str) -> Comparison:
    """A's accuracy under its claimed attacks minus under the audit's strongest, on the audited images (raised: a drop beyond noise)."""
    return accuracy(a, a, claim_metric, 0.0, metric_b="strongest", what=f"{claim_metric} vs strongest, same model")


def robust(name: str, a: Group, b: Group, threshold: float = 0.0, paper_metric: str = "pgd") -> Part:
    """`A is more robust than B (by more than threshold)`: under the paper's attacks, then under the audit (module doc)."""
    paper = accuracy(a, b, paper_metric, threshold)
    v_paper = paper.verdict()
    if v_paper != HOLDS:
        return Part(name, v_paper, f"{name}: paper's attacks {paper.text}", paper.models)
    strong = accuracy(a, b, "strongest", threshold)
    return masking_check(name, paper, strong, strong.verdict(), a, paper_metric)


def masking_check(name: str, paper: Comparison, strong: Comparison, v_strong: str, claimed: Group, paper_metric: str) -> Part:
    """A part that holds under the paper's attacks, judged again under the strongest attack (module doc)."""
    text = f"{name}: paper's attacks {paper.text}; strongest attack {strong.text}"
    models = sorted(set(paper.models) | set(strong.models))
    if v_strong == HOLDS:
        return Part(name, HOLDS, text, models)
    if v_strong == FAILS:
        return Part(name, PAPER_ONLY, text, models)
    drop = dropped(claimed, paper_metric)
    if drop.decision == iv.RAISED:
        return Part(name, PAPER_ONLY, f"{text}; drop of {claimed.id} {drop.text}", models)
    return Part(name, HOLDS, f"{text}; no drop of {claimed.id} beyond noise ({drop.text})", models)
