"""Gradient-masking sanity checks on per-image audit results (Carlini et al. 2019, "On Evaluating
Adversarial Robustness", section 5; Croce & Hein 2020, AutoAttack).

Every check compares results on the SAME images, image by image (`evidence.intervals.paired`:
McNemar's exact test on the discordant images, and an interval of the difference), and returns a
:class:`Flag` whose `verdict` is one of three (`evidence.intervals.flag`): "raised" (the difference
is beyond its threshold and beyond its noise floor: the whole interval lies above it), "within
noise" (the estimate is beyond the threshold, its interval is not) or "not raised" (the estimate is
not beyond the threshold); "not checked" when an input is missing. Its
`evidence` is one line naming the numbers, the interval and the images compared. Over seeds,
`evidence.intervals.across_seeds` turns the seeds' verdicts into one (they must agree).

Checks:
  (a) blackbox_beats_whitebox: the best transferred attack beats the best white-box attack;
  (b) square_beats_gradients: gradient-free Square beats the best gradient attack;
  (c) large_eps_not_broken: accuracy stays above ~0% at a large eps;
  (d) more_steps_weaker: more PGD steps or restarts give a higher accuracy;
  (e) xent_gap: the cross-entropy attacks trail the margin / targeted ones by a wide gap
      (AutoAttack's reason for the DLR loss: the x-ent loss alone can mask gradients);
  (f) claimed_overstated: the per-image strongest attack lies far below the claim (the paper's
      PGD, on the same images), the pattern Mosbach et al. (2018) traced to gradient masking.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from ..evidence import intervals as iv

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
Masks = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Flag:
    """One sanity check: its verdict (raised / not raised / within noise / not checked) and the numbers behind it."""

    verdict: str
    evidence: str

    @property
    def raised(self) -> bool:
        return self.verdict == iv.RAISED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "raised": self.raised}


def _pct(mask: np.ndarray) -> float:
    return 100.0 * float(np.mean(mask)) if len(mask) else float("nan")


def _best(masks: Masks) -> tuple[str, np.ndarray]:
    """The attack with the lowest accuracy (ties: the first in order)."""
    name = min(masks, key=lambda key: _pct(masks[key]))
    return name, masks[name]


def _all(masks: Masks) -> np.ndarray:
    out = None
    for mask in masks.values():
        out = mask.copy() if out is None else out & mask
    return out if out is not None else np.zeros(0, dtype=bool)


def _interval(p: iv.Paired) -> str:
    return f"[{p.lo_pp:+.1f}, {p.hi_pp:+.1f}] pp, McNemar p={p.p_value:.2g}"


def _best_against_best(first_label: str, first: Masks, second_label: str, second: Masks, threshold_pp: float, level: float) -> tuple[str, str, iv.Paired]:
    """The best (lowest-accuracy) attack of `first` minus the best of `second`, paired on the same images:
    the verdict against `threshold_pp`, the numbers in words, and the paired comparison."""
    first_name, first_mask = _best(first)
    second_name, second_mask = _best(second)
    p = iv.paired(first_mask, second_mask, level)
    numbers = (f"{first_label} {first_name} {_pct(first_mask):.1f}% minus {second_label} {second_name} {_pct(second_mask):.1f}% = "
               f"{p.diff_pp:+.1f} pp {_interval(p)}")
    return iv.flag(p.diff_pp, p.lo_pp, p.hi_pp, threshold_pp), numbers, p


def blackbox_beats_whitebox(whitebox: Masks, blackbox: Masks, level: float = iv.LEVEL, min_pp: float = 0.0) -> Flag:
    """(a) The best black-box (transfer) attack leaves fewer images right than the best white-box one."""
    if not whitebox or not blackbox:
        return Flag(iv.NOT_CHECKED, "not checked: the evaluation record has no white-box or no black-box result")
    verdict, numbers, p = _best_against_best("white-box", whitebox, "black-box", blackbox, min_pp, level)
    return Flag(verdict, f"{numbers} on the same {p.n} images: {verdict} (raised when the interval is above {min_pp:g} pp)")


def square_beats_gradients(square: np.ndarray | None, gradient: Masks, level: float = iv.LEVEL, min_pp: float = 0.0) -> Flag:
    """(b) Square (gradient-free) leaves fewer images right than the best gradient attack."""
    if square is None or not gradient:
        return Flag(iv.NOT_CHECKED, "not checked: Square or the gradient attacks did not run")
    name, best = _best(gradient)
    p = iv.paired(best, square, level)
    verdict = iv.flag(p.diff_pp, p.lo_pp, p.hi_pp, min_pp)
    only_square = int(np.sum(_all(gradient) & ~square))
    return Flag(verdict, f"best gradient attack {name} {_pct(best):.1f}% minus Square {_pct(square):.1f}% = {p.diff_pp:+.1f} pp "
                         f"{_interval(p)} on the same {p.n} images: {verdict} (raised when the interval is above {min_pp:g} pp); "
                         f"{only_square} images fall to Square alone")


def large_eps_not_broken(mask: np.ndarray | None, eps: float, threshold: float, ceiling: float | None = None, level: float = iv.LEVEL) -> Flag:
    """(c) At a large eps an attack that works drives accuracy to about 0% (`threshold` %)."""
    if mask is None or not len(mask):
        return Flag(iv.NOT_CHECKED, "not checked: no large-eps attack ran")
    lo, hi = iv.wilson(int(np.sum(mask)), len(mask), level)
    verdict = iv.flag(_pct(mask), lo, hi, threshold)
    bound = f"; at eps >= 0.5 a constant grey image is reachable, so a working attack leaves at most {ceiling:.1f}%" if ceiling is not None else ""
    return Flag(verdict, f"accuracy {_pct(mask):.1f}% [{lo:.1f}, {hi:.1f}] at eps {eps:g} (in [0, 1]) on {len(mask)} images against "
                         f"the {threshold:.1f}% threshold: {verdict}{bound}")


def more_steps_weaker(
    sweep: Mapping[int, np.ndarray], strong: Mapping[str, tuple[int, int, np.ndarray]], level: float = iv.LEVEL, min_pp: float = 0.0
) -> Flag:
    """(d) Accuracy rises with more PGD steps (sweep) or with more steps and restarts.

    `sweep`: steps -> per-image result of single-restart PGD (x-ent); `strong`: label -> (steps,
    restarts, per-image result), compared with every sweep run of no more steps. Raised when
    any pair rises by more than `min_pp` beyond its interval; within noise when a pair's rise is above
    `min_pp` but its interval is not; not raised otherwise.
    """
    pairs: list[tuple[str, iv.Paired]] = []
    runs = sorted(sweep.items())
    for i, (few, mask_few) in enumerate(runs):
        for many, mask_many in runs[i + 1 :]:
            pairs.append((f"PGD-{many} vs PGD-{few}", iv.paired(mask_many, mask_few, level)))
    for label, (steps, restarts, mask_strong) in strong.items():
        for few, mask_few in runs:
            if few <= steps:
                pairs.append((f"{label} ({steps} steps x {restarts} restarts) vs PGD-{few}", iv.paired(mask_strong, mask_few, level)))
    if not pairs:
        return Flag(iv.NOT_CHECKED, "not checked: no PGD sweep ran")
    verdicts = [(name, p, iv.flag(p.diff_pp, p.lo_pp, p.hi_pp, min_pp)) for name, p in pairs]
    if any(v == iv.RAISED for _n, _p, v in verdicts):
        verdict = iv.RAISED
    elif any(v == iv.WITHIN_NOISE for _n, _p, v in verdicts):
        verdict = iv.WITHIN_NOISE
    else:
        verdict = iv.NOT_RAISED
    worst_name, worst, _v = max(verdicts, key=lambda t: t[1].diff_pp)
    return Flag(verdict, f"largest rise {worst_name}: {worst.diff_pp:+.1f} pp {_interval(worst)} over {len(pairs)} pairs on "
                         f"{worst.n} images: {verdict} (raised when a rise's interval is above {min_pp:g} pp; within noise when only the rise is)")


def xent_gap(xent: Masks, margin: Masks, gap_pp: float, level: float = iv.LEVEL) -> Flag:
    """(e) The best x-ent attack trails the best margin/targeted attack by more than `gap_pp` points."""
    if not xent or not margin:
        return Flag(iv.NOT_CHECKED, "not checked: x-ent or margin attacks did not run")
    verdict, numbers, p = _best_against_best("best x-ent attack", xent, "best margin attack", margin, gap_pp, level)
    return Flag(verdict, f"{numbers} on the same {p.n} images against {gap_pp:.1f} pp: {verdict}")


def claimed_overstated(claimed: Masks, strongest: np.ndarray, min_pp: float, min_fraction: float, level: float = iv.LEVEL) -> Flag:
    """(f) The per-image strongest attack lies below the claim (the paper's PGD attack with the lowest
    accuracy, on the same images) by more than max(`min_pp`, `min_fraction` x the claim), interval included."""
    if not claimed:
        return Flag(iv.NOT_CHECKED, "not checked: the evaluation record has no PGD result")
    name, claim = _best(claimed)
    p = iv.paired(claim, strongest, level)
    threshold = max(min_pp, min_fraction * _pct(claim))
    verdict = iv.flag(p.diff_pp, p.lo_pp, p.hi_pp, threshold)
    return Flag(verdict, f"claimed {name} {_pct(claim):.1f}% vs strongest {_pct(strongest):.1f}% on the same {p.n} images: drop "
                         f"{p.diff_pp:.1f} pp {_interval(p)} against max({min_pp:g} pp, {100 * min_fraction:.0f}% of the claim) = "
                         f"{threshold:.1f} pp: {verdict}")


def flags_from_masks(masks: Masks, settings: Mapping[str, Any], claim_attacks: Mapping[str, list[str]], ceiling: float | None) -> dict[str, Flag]:
    """Every check, from the per-image results of an audit record (`audit.audit_model` names them):
    the audit's attacks (apgd_ce, ..., sweep_pgd<N>_xent, large_eps, strongest) and the evaluation
    record's on the same images (`record_whitebox_<name>`, `record_blackbox_<name>`).

    `claim_attacks`: loss -> the record's PGD attacks of that loss (the paper's claim); `ceiling`:
    the class ceiling of flag (c). The same function decides one seed's flags (in the audit stage)
    and a grid entry's flags on its seeds' images pooled (in the audit table).
    """
    level, min_pp, pg = settings["level"], settings.get("min_effect_pp", 0.0), settings["pgd"]
    section = lambda prefix: {k[len(prefix):]: v for k, v in masks.items() if k.startswith(prefix)}  # noqa: E731
    whitebox, blackbox = section("record_whitebox_"), section("record_blackbox_")
    gradient = {k: masks[k] for k in ("apgd_ce", "apgd_t", "fab_t", "pgd_xent", "pgd_cw") if k in masks}
    sweep = {int(k[len("sweep_pgd"):-len("_xent")]): v for k, v in masks.items() if k.startswith("sweep_pgd") and k.endswith("_xent")}
    claimed = {f"record {name}": whitebox[name] for loss in ("xent", "cw") for name in claim_attacks.get(f"pgd_{loss}", []) if name in whitebox}
    return {
        "blackbox_beats_whitebox": blackbox_beats_whitebox(whitebox, blackbox, level, min_pp) if whitebox or blackbox
        else Flag(iv.NOT_CHECKED, "not checked: no evaluation record"),
        "square_beats_gradients": square_beats_gradients(masks.get("square"), gradient, level, min_pp),
        "large_eps_not_broken": large_eps_not_broken(masks.get("large_eps"), settings["large_eps01"], settings["large_eps_max_accuracy"], ceiling, level),
        "more_steps_weaker": more_steps_weaker(sweep, {k: (pg["steps"], pg["restarts"], masks[k]) for k in ("pgd_xent", "pgd_cw") if k in masks},
                                               level, min_pp),
        "xent_gap": xent_gap({k: masks[k] for k in ("apgd_ce", "pgd_xent") if k in masks},
                             {k: masks[k] for k in ("apgd_t", "pgd_cw") if k in masks}, settings["xent_gap_pp"], level),
        "claimed_overstated": claimed_overstated(claimed, masks["strongest"], settings["overstated_pp"], settings["overstated_fraction"], level),
    }


def combine_seeds(per_seed: list[str], pooled: str) -> str:
    """A grid entry's verdict from its seeds' verdicts and the verdict on their images pooled.

    Every seed 'not raised': not raised. Some seeds 'not raised' and others not: 'within noise'
    (the seeds disagree about the side of the threshold). Otherwise (every seed raised or within
    noise) the pooled verdict decides between 'raised' and 'within noise'.
    """
    checked = [v for v in per_seed if v != iv.NOT_CHECKED]
    if not checked:
        return iv.NOT_CHECKED
    if all(v == iv.NOT_RAISED for v in checked):
        return iv.NOT_RAISED
    if any(v == iv.NOT_RAISED for v in checked):
        return iv.WITHIN_NOISE
    return iv.RAISED if pooled == iv.RAISED else iv.WITHIN_NOISE


def masking_suspected(flags: Mapping[str, Flag]) -> str:
    """'yes' when a flag is raised, 'within noise' when none is but one is within noise, else 'no'."""
    verdicts = [flag.verdict for flag in flags.values()]
    if iv.RAISED in verdicts:
        return "yes"
    return "within noise" if iv.WITHIN_NOISE in verdicts else "no"


def verdict_of(flag: Mapping[str, Any]) -> str:
    """A stored flag's verdict (records written before verdicts existed hold only `raised`)."""
    if "verdict" in flag:
        return str(flag["verdict"])
    return iv.RAISED if flag.get("raised") else iv.NOT_RAISED
