"""Gradient-masking sanity checks on audit numbers (Carlini et al. 2019, "On Evaluating
Adversarial Robustness", section 5; Croce & Hein 2020, AutoAttack).

Each check returns a :class:`Flag`: `raised` and a one-line `evidence` string naming the
numbers it compared. Accuracies are percentages; comparisons allow for sampling noise
(:func:`noise_pp`), so a flag means a difference the audited sample size can resolve.

Checks:
  (a) blackbox_beats_whitebox: a transferred attack beats the white-box attacks;
  (b) square_beats_gradients: gradient-free Square beats every gradient attack;
  (c) large_eps_not_broken: accuracy stays above ~0% at a large eps;
  (d) more_steps_weaker: more PGD steps or restarts give a higher accuracy;
  (e) xent_gap: the cross-entropy attacks trail the margin / targeted ones by a wide gap
      (AutoAttack's reason for the DLR loss: the x-ent loss alone can mask gradients);
  (f) claimed_overstated: the audited (strongest) accuracy is a small fraction of the claimed
      one (the paper's PGD), the pattern Mosbach et al. (2018) traced to gradient masking.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

#: Order of the flags in records and tables.
FLAG_NAMES = (
    "blackbox_beats_whitebox", "square_beats_gradients", "large_eps_not_broken", "more_steps_weaker", "xent_gap", "claimed_overstated",
)
#: Short labels for tables.
FLAG_LABELS = {
    "blackbox_beats_whitebox": "a:black-box",
    "square_beats_gradients": "b:Square",
    "large_eps_not_broken": "c:large-eps",
    "more_steps_weaker": "d:steps",
    "xent_gap": "e:x-ent gap",
    "claimed_overstated": "f:overstated",
}


@dataclass(frozen=True)
class Flag:
    """One sanity check: whether it fired, and the numbers behind the verdict."""

    raised: bool
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def noise_pp(p1: float, p2: float, n: int, z: float = 2.0) -> float:
    """Smallest difference (percentage points) between two accuracies on `n` examples that is
    beyond sampling noise: z standard errors of a difference of two proportions, at least one
    example's worth (100 / n)."""
    if n <= 0:
        return math.inf
    p = min(max((p1 + p2) / 200.0, 0.0), 1.0)
    return max(z * 100.0 * math.sqrt(2.0 * p * (1.0 - p) / n), 100.0 / n)


def _fmt(acc: float) -> str:
    return f"{acc:.1f}%"


def _best(accs: Mapping[str, float]) -> tuple[str, float]:
    name = min(accs, key=lambda key: accs[key])
    return name, accs[name]


def blackbox_beats_whitebox(whitebox: Mapping[str, float], blackbox: Mapping[str, float], n: int, z: float = 2.0) -> Flag:
    """(a) The best black-box (transfer) accuracy is below the best white-box accuracy."""
    if not whitebox or not blackbox:
        return Flag(False, "not checked: the evaluation record has no white-box or no black-box accuracy")
    wb_name, wb = _best(whitebox)
    bb_name, bb = _best(blackbox)
    tol = noise_pp(wb, bb, n, z)
    raised = bb < wb - tol
    verb = "below" if raised else "not below"
    return Flag(raised, f"black-box {bb_name} {_fmt(bb)} is {verb} white-box {wb_name} {_fmt(wb)} - {tol:.1f} pp noise (n={n})")


def square_beats_gradients(square: float | None, gradient: Mapping[str, float], n: int, z: float = 2.0, only_square: int = 0) -> Flag:
    """(b) Square (gradient-free) reaches a lower accuracy than every gradient-based attack."""
    if square is None or not gradient:
        return Flag(False, "not checked: Square or the gradient attacks did not run")
    name, best = _best(gradient)
    tol = noise_pp(square, best, n, z)
    raised = square < best - tol
    verb = "below" if raised else "not below"
    return Flag(
        raised,
        f"Square {_fmt(square)} is {verb} the best gradient attack {name} {_fmt(best)} - {tol:.1f} pp noise; "
        f"{only_square} of {n} examples fall to Square alone (n={n})",
    )


def large_eps_not_broken(accuracy: float | None, eps: float, threshold: float, ceiling: float | None = None) -> Flag:
    """(c) At a large eps an attack that works should drive accuracy to about 0%."""
    if accuracy is None:
        return Flag(False, "not checked: no large-eps attack ran")
    raised = accuracy > threshold
    verb = "above" if raised else "within"
    bound = f"; at eps >= 0.5 a constant grey image is reachable, so a working attack leaves at most {_fmt(ceiling)}" if ceiling is not None else ""
    return Flag(raised, f"accuracy {_fmt(accuracy)} at eps {eps:g} (in [0, 1]) is {verb} the {_fmt(threshold)} threshold{bound}")


def more_steps_weaker(sweep: Mapping[int, float], strong: Mapping[str, tuple[int, int, float]], n: int, z: float = 2.0) -> Flag:
    """(d) Accuracy rises with more PGD steps (sweep) or with more steps and restarts.

    `sweep`: steps -> accuracy of single-restart PGD (x-ent); `strong`: label -> (steps,
    restarts, accuracy) of the multi-restart PGD runs, compared with every sweep run of no
    more steps.
    """
    worse: list[str] = []
    runs = sorted(sweep.items())
    for i, (few, acc_few) in enumerate(runs):
        for many, acc_many in runs[i + 1 :]:
            tol = noise_pp(acc_few, acc_many, n, z)
            if acc_many > acc_few + tol:
                worse.append(f"PGD-{many} {_fmt(acc_many)} > PGD-{few} {_fmt(acc_few)} + {tol:.1f} pp")
    for label, (steps, restarts, acc_strong) in strong.items():
        for few, acc_few in runs:
            tol = noise_pp(acc_few, acc_strong, n, z)
            if few <= steps and acc_strong > acc_few + tol:
                worse.append(f"{label} ({steps} steps x {restarts} restarts) {_fmt(acc_strong)} > PGD-{few} {_fmt(acc_few)} + {tol:.1f} pp")
    if worse:
        return Flag(True, "; ".join(worse) + f" (n={n})")
    listed = ", ".join(f"PGD-{s} {_fmt(a)}" for s, a in runs)
    strong_text = ", ".join(f"{k} {_fmt(v[2])}" for k, v in strong.items())
    if not listed and not strong_text:
        return Flag(False, "not checked: no PGD sweep ran")
    return Flag(False, f"no rise beyond noise: {listed}; {strong_text} (n={n})")


def xent_gap(xent: Mapping[str, float], margin: Mapping[str, float], n: int, gap_pp: float, z: float = 2.0) -> Flag:
    """(e) The best x-ent attack trails the best margin/targeted attack by more than `gap_pp`
    points (and more than sampling noise)."""
    if not xent or not margin:
        return Flag(False, "not checked: x-ent or margin attacks did not run")
    x_name, x_acc = _best(xent)
    m_name, m_acc = _best(margin)
    tol = max(noise_pp(x_acc, m_acc, n, z), gap_pp)
    gap = x_acc - m_acc
    raised = gap > tol
    verb = "above" if raised else "within"
    return Flag(
        raised, f"best x-ent attack {x_name} {_fmt(x_acc)} minus best margin attack {m_name} {_fmt(m_acc)} = {gap:+.1f} pp, {verb} the {tol:.1f} pp allowed (n={n})"
    )


def claimed_overstated(claimed: Mapping[str, float], strongest: float, n: int, min_pp: float, min_fraction: float, z: float = 2.0) -> Flag:
    """(f) The strongest audit accuracy lies below the lowest claimed accuracy by at least `min_pp`
    points, at least `min_fraction` of the claim, and more than sampling noise."""
    if not claimed:
        return Flag(False, "not checked: the evaluation record has no PGD accuracy")
    name, claim = _best(claimed)
    drop = claim - strongest
    tol = max(noise_pp(claim, strongest, n, z), min_pp)
    raised = drop > tol and drop >= min_fraction * claim
    verb = "overstated" if raised else "not overstated"
    return Flag(
        raised,
        f"claimed {name} {_fmt(claim)} vs strongest audit {_fmt(strongest)}: drop {drop:.1f} pp "
        f"({100 * drop / claim if claim > 0 else 0:.0f}% of the claim) - {verb} (needs > {tol:.1f} pp and >= {100 * min_fraction:.0f}%; n={n})",
    )


def masking_suspected(flags: Mapping[str, Flag]) -> bool:
    """Any raised flag makes the model's claimed robustness suspect."""
    return any(flag.raised for flag in flags.values())
