"""The paper's claims, one unit each: statement, place, the paper's numbers, what it reads, what it
needs, and its rule in words and in code. IDs are those of shared/paper/claims.md (C1-C20, and C21
beyond the paper).

Every rule returns the claim's parts (`measure.Part`); the ledger combines them: a claim holds when
every part it could test holds, fails when one part fails, "holds under the paper's attacks only"
when the audit's per-image strongest attack breaks a part that the paper's attacks support, is
"within noise" when a part does not exceed its noise floor, and is "not testable here" when no part
could be tested (the row says what it would need). Parts a study cannot test are named in the row.

Comparisons and their noise floors are in `compare` (accuracies: paired per image, McNemar; over
seeds: every seed must agree) and `measure` (medians: Welch over seeds, else a paired bootstrap
over images). "PGD" below is the record's white-box PGD attacks, worst case per image; "strongest"
is the audit's per-image strongest attack on the audited images.

Where claims.md's suggested test is weak, the rule says what it does instead and why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import compare as cmp
from .inputs import CIFAR, MNIST_LIKE, Group, Missing, Model, StudyEvidence
from .measure import (
    ABOVE, AT_MOST, FAILS, HOLDS, NOT_TESTABLE, PAPER_ONLY, WITHIN_NOISE, Diff, Part, fmt_pct, unpaired_diff, untested,
)
from ..evidence import intervals as iv

Rule = Callable[[StudyEvidence], list[Part]]

#: Artifact kinds a claim may read (each is an input of the `claims` rule).
ARTIFACTS = ("records", "audits", "analysis", "metrics", "cost")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper (or beyond it) and its rule."""

    id: str
    title: str  # a few words, for one-line summaries
    statement: str  # the paper's statement
    where: str  # its place in the paper
    paper: str  # the paper's numbers
    reads: tuple[str, ...]  # artifact kinds (ARTIFACTS)
    datasets: tuple[str, ...] | None  # datasets it can be tested on (None: any)
    needs: str  # what the study must have for the rule to run
    rule_text: str  # the rule in words
    rule: Rule


CLAIMS: dict[str, Claim] = {}


def claim(id: str, *, title: str, statement: str, where: str, paper: str, reads: tuple[str, ...], needs: str, rule: str,
          datasets: tuple[str, ...] | None = None) -> Callable[[Rule], Rule]:
    """Register the decorated function as the rule of claim `id`."""

    def register(fn: Rule) -> Rule:
        assert id not in CLAIMS and set(reads) <= set(ARTIFACTS), id
        CLAIMS[id] = Claim(id, title, statement, where, paper, reads, datasets, needs, " ".join(rule.split()), fn)
        return fn

    return register


# ---------------------------------------------------------------- shared pieces of the rules

#: C4, C5: "about 0%" (of PGD accuracy, of Eq. 4's prediction for a natural model) means at most
#: this many percent (0 of 200 images has a Wilson upper bound of 1.9%).
ABOUT_ZERO_PCT = 2.0
NATURAL_ZERO_PCT = ABOUT_ZERO_PCT
#: C4: |predicted - FGSM| allowed: "fairly accurately" (CIFAR-10) and "a ballpark" (MNIST; the
#: paper's own MNIST row is 38.5 points off, so the ballpark is the paper's own gap, rounded).
EQ4_TOLERANCE_PP = {"cifar10": 10.0, "mnist": 40.0}
#: C13: "comes close" to adversarial training: within this many points (the paper's own gap, 8-10).
CLOSE_PP = 10.0
#: C13: "a fraction of the cost": at most this share of adversarial training's cost.
COST_FRACTION = 0.5
#: C19: a neuron is inactive when its summed |activation| over the analysed images is at most this
#: fraction of the model's mean neuron sum; C19's shares (of all penultimate neurons).
INACTIVE_RELATIVE = 1e-3
NATURAL_INACTIVE_MAX = 2.0
INACTIVE_GAP_PP = 10.0
#: C20: regularised training costs per iteration at most this multiple of natural training's.
REGULARISER_COST_MAX = 1.5


def arr(name: str) -> cmp.ArrayOf:
    return lambda m: m.arrays()[name]


def inactive_share(m: Model) -> float:
    sums = np.asarray(m.arrays()["feature_abs_sum"], dtype=np.float64)
    return 100.0 * float(np.mean(sums <= INACTIVE_RELATIVE * sums.mean())) if sums.size else float("nan")


def best(groups: list[Group], metric: str) -> Group | None:
    """The group with the highest mean aggregate accuracy under `metric` (trained seeds)."""
    def score(g: Group) -> float:
        return float(np.mean([m.result(metric).accuracy for m in g.trained()]))

    return max(groups, key=score, default=None)


def level(g: Group, metric: str, threshold: float, name: str) -> Part:
    """`accuracy of g under metric is at most threshold`: Wilson interval over the images, every seed."""
    decisions, texts = [], []
    for m in g.trained():
        r = m.result(metric)
        lo, hi = iv.wilson_of_accuracy(r.accuracy, r.n)
        decisions.append(iv.decide(lo, hi, threshold))
        texts.append(f"{fmt_pct(r.accuracy)} [{lo:.1f}, {hi:.1f}] (Wilson, n={r.n})")
    if not decisions:
        return untested(name, f"a trained seed of {g.id}")
    return Part(name, AT_MOST[iv.across_seeds(decisions)], f"{name}: {g.label()} {r.what}: {'; '.join(texts)} vs at most {threshold:g}%",
                [m.id for m in g.trained()])


def band(name: str, a: Group, b: Group, metric_a: str, metric_b: str, tol: float) -> Part:
    """`|acc(a, metric_a) - acc(b, metric_b)| <= tol`: both one-sided decisions must hold."""
    upper = cmp.accuracy(a, b, metric_a, tol, metric_b=metric_b)
    lower = cmp.accuracy(a, b, metric_a, -tol, metric_b=metric_b)
    v_up, v_low = upper.verdict("at most"), lower.verdict("above")
    verdict = FAILS if FAILS in (v_up, v_low) else (HOLDS if v_up == v_low == HOLDS else WITHIN_NOISE)
    text = lower.text.replace(f" (threshold {-tol:+g} pp)", "")
    return Part(name, verdict, f"{name}: {text} (allowed +-{tol:g} pp)", lower.models)


def robust_at_most(name: str, a: Group, b: Group, threshold: float, claimed: Group) -> Part:
    """`acc(a) - acc(b) <= threshold` under the paper's PGD, then (if it holds) under the strongest attack; the claimed model's drop decides masking."""
    paper = cmp.accuracy(a, b, "pgd", threshold)
    if paper.verdict("at most") != HOLDS:
        return Part(name, paper.verdict("at most"), f"{name}: paper's attacks {paper.text}", paper.models)
    strong = cmp.accuracy(a, b, "strongest", threshold)
    return cmp.masking_check(name, paper, strong, strong.verdict("at most"), claimed, "pgd")


def cost_spread(ev: StudyEvidence, exclude: tuple[Group, ...] = ()) -> tuple[float, float, float] | None:
    """(median, min, max) of the measured per-iteration CPU cost of the models without adversarial training
    (those of `exclude` left out: a model compared is not its own noise floor)."""
    left_out = {m.id for g in exclude for m in g.models}
    costs = [c for g in ev.of_kind("natural", "noise", "ls", "ls_noise", "lsq", "lsq_noise", trained=False)
             for m in g.models if m.id not in left_out and (c := m.cost_per_iteration()) is not None]
    return (float(np.median(costs)), min(costs), max(costs)) if costs else None


def group_cost(g: Group) -> tuple[float, str] | None:
    """Mean total training cost over seeds, in passes when every seed has them, else CPU seconds."""
    costs = [m.training_cost() for m in g.models]
    if any(c is None for c in costs):
        return None
    units = {u for _, u in costs}
    if len(units) > 1:  # some seeds count passes and others seconds: use seconds for all
        secs = [m.cost_per_iteration() for m in g.models]
        if any(s is None for s in secs):
            return None
        return float(np.mean([s * g.params["k"] / 1000 for s in secs])), "CPU s"
    return float(np.mean([c for c, _ in costs])), units.pop()


def family_triples(ev: StudyEvidence, reg_kind: str, param: str) -> list[tuple[Group, Group, Group]]:
    """(regulariser + noise, regulariser alone, noise alone) at the same regulariser value, sigma and k."""
    out = []
    for combo in ev.of_kind(f"{reg_kind}_noise"):
        p = combo.params
        reg = [g for g in ev.of_kind(reg_kind) if g.params[param] == p[param] and g.params["k"] == p["k"]]
        noise = [g for g in ev.of_kind("noise") if g.params["sigma"] == p["sigma"] and g.params["k"] == p["k"]]
        if reg and noise:
            out.append((combo, reg[0], noise[0]))
    return out


# ---------------------------------------------------------------- C1-C4: adversarial training through Eq. 4


@claim(
    "C1", title="adversarial training: gradient gap shrinks more than logit gap",
    statement="Adversarial training decreases both the logit gap and the gradient gap of Eq. 4; the gradient gap shrinks more, so eps_L grows.",
    where="Sec. 1, Fig. 1 (MNIST), App. A Fig. 5 (CIFAR-10)", paper="histograms only (Figs. 1, 5)",
    reads=("analysis", "records"), needs="a natural and a PGD adversarially trained model",
    rule="""Medians over every analysed test image and every wrong class j (the *_all arrays), strong PGD
    adversarial training (most steps) minus natural: the logit gap z_y - z_j and the gradient gap
    ||grad z_y - grad z_j||_1 are lower, and eps_L = logit gap / gradient gap is higher ('the gradient
    gap shrinks more' is what a higher eps_L means), each beyond its noise floor.""",
)
def c1(ev: StudyEvidence) -> list[Part]:
    nat, adv = ev.natural(), next(iter(ev.pgd_adversarial()), None)
    if not (nat and adv):
        return [untested("natural vs PGD adversarial training", "a natural and a PGD adversarially trained model")]
    return [
        cmp.statistic(adv, nat, arr("logit_gap_all"), "logit gap").part("the logit gap decreases", "at most"),
        cmp.statistic(adv, nat, arr("grad_gap_all"), "gradient gap").part("the gradient gap decreases", "at most"),
        cmp.statistic(adv, nat, arr("eps_l_all"), "eps_L").part("eps_L grows", "above"),
    ]


@claim(
    "C2", title="adversarial training aligns the gradients slightly",
    statement="Adversarial training slightly increases gradient coherence.", where="Sec. 1", paper="Fig. 1",
    reads=("analysis", "records"), needs="a natural and a PGD adversarially trained model",
    rule="""Median cos(grad z_y, grad z_j) over every image and wrong class: strong PGD adversarial
    training above natural, beyond its noise floor.""",
)
def c2(ev: StudyEvidence) -> list[Part]:
    nat, adv = ev.natural(), next(iter(ev.pgd_adversarial()), None)
    if not (nat and adv):
        return [untested("natural vs PGD adversarial training", "a natural and a PGD adversarially trained model")]
    return [cmp.statistic(adv, nat, arr("cos_all"), "cos").part("the gradient cosine rises", "above")]


@claim(
    "C3", title="adversarial training squashes the logits, stronger more",
    statement="Adversarial training squashes the logits, stronger adversaries more.", where="Fig. 2, footnotes 1-2", paper="Fig. 2",
    reads=("analysis", "records"), needs="a natural model and PGD adversarial training with two step counts",
    rule="""Median true-class logit z_y: natural above weak (fewest-step) PGD adversarial training, and
    weak above strong (most-step) PGD adversarial training, each beyond its noise floor.""",
)
def c3(ev: StudyEvidence) -> list[Part]:
    nat, advs = ev.natural(), ev.pgd_adversarial()
    steps = sorted({g.params["adversarial"]["steps"] for g in advs})
    if not nat or len(steps) < 2:
        return [untested("natural > weak > strong adversarial", "a natural model and PGD adversarial training with two different step counts")]
    strong, weak = advs[0], advs[-1]
    return [
        cmp.statistic(nat, weak, arr("z_y"), "z_y").part("natural logits above weak adversarial training's", "above"),
        cmp.statistic(weak, strong, arr("z_y"), "z_y").part("weak adversarial training's logits above strong's", "above"),
    ]


@claim(
    "C4", title="Eq. 4 predicts robustness (0% for natural models)",
    statement="Eq. 4 predicts robustness fairly accurately on CIFAR-10 and as a ballpark on MNIST; 0% for natural models.",
    where="Table 1, Sec. 1.1",
    paper="MNIST adv: 56.73 predicted vs 95.25 / 95.41 FGSM; CIFAR adv: 54.97 vs 56.22 / 55.57; natural 0.0",
    reads=("analysis", "records"), needs="a natural and an adversarially trained model",
    rule=f"""Per image, Eq. 4 predicts 'robust' when the image is classified correctly and eps is below
    eps_L of every wrong class; compared, image by image (paired), with the record's FGSM attacks (worst
    per image; claims.md compares two totals, which hides images predicted robust that FGSM breaks and
    the reverse). Natural model: predicted accuracy at most {NATURAL_ZERO_PCT:g}% (Wilson). Every
    adversarially trained model: |predicted - FGSM| within {EQ4_TOLERANCE_PP['cifar10']:g} points on
    CIFAR-10 ('fairly accurately') and within {EQ4_TOLERANCE_PP['mnist']:g} on MNIST-like data (a
    'ballpark': the paper's own MNIST row is 38.5 points off).""",
)
def c4(ev: StudyEvidence) -> list[Part]:
    nat, advs = ev.natural(), ev.of_kind("adv")
    tol = EQ4_TOLERANCE_PP["cifar10" if ev.dataset in CIFAR else "mnist"]
    parts = [level(nat, "eq4", NATURAL_ZERO_PCT, "natural model predicted 0%") if nat else untested("natural model predicted 0%", "a natural model")]
    if not advs:
        parts.append(untested("prediction vs FGSM", "an adversarially trained model"))
    for g in advs:
        parts.append(band(f"{g.id}: predicted vs FGSM", g, g, "eq4", "fgsm", tol))
    return parts


# ---------------------------------------------------------------- C5-C12: regularisers and noise (Sec. 3)


@claim(
    "C5", title="regularisers alone: PGD about 0%",
    statement="Label smoothing or logit squeezing alone (no noise) worsen robustness; white-box PGD about 0%.",
    where="Fig. 3, Sec. 3.1, App. C", paper="Table 5 rows with sigma 0: PGD 0.00%",
    reads=("records", "analysis"), needs="label smoothing or logit squeezing without noise, and a natural model",
    rule=f"""For every label smoothing or logit squeezing model without noise: white-box PGD accuracy at
    most {ABOUT_ZERO_PCT:g}% (Wilson interval over the attacked images), and median eps_L (every wrong
    class) not above the natural model's ('worsen robustness' is what Fig. 3 measures with eps_L; an
    FGSM gain, which logit squeezing can show, is not what the paper claims). No audit: the strongest
    attack can only lower an accuracy already claimed to be about 0%.""",
)
def c5(ev: StudyEvidence) -> list[Part]:
    nat, regs = ev.natural(), ev.of_kind("ls", "lsq")
    if not regs:
        return [untested("regulariser without noise", "a label smoothing or logit squeezing model without noise")]
    parts = []
    for g in regs:
        parts.append(level(g, "pgd", ABOUT_ZERO_PCT, f"{g.id}: PGD about 0%"))
        if nat:
            parts.append(cmp.statistic(g, nat, arr("eps_l_all"), "eps_L").part(f"{g.id}: eps_L not above natural", "at most"))
        else:
            parts.append(untested(f"{g.id}: eps_L not above natural", "a natural model"))
    return parts


@claim(
    "C6", title="noise alone: black-box up a lot, white-box little",
    statement="Gaussian noise alone raises black-box robustness a lot, white-box little.",
    where="Sec. 3.1, App. C", paper="MNIST noise-only: black-box 79-90%, white-box PGD 1-23%",
    reads=("records",), needs="a noise-only model and a natural model",
    rule="""For every noise-only model against the natural model: the black-box accuracy (worst of the
    record's black-box sets per image) is higher, and its gain over natural exceeds the white-box PGD
    gain (per image: (black-box gain) - (white-box gain), bootstrap over images; claims.md's 'black-box
    vs white-box accuracy' leaves 'a lot' and 'little' without a yardstick, the difference of the two
    gains is one).""",
)
def c6(ev: StudyEvidence) -> list[Part]:
    nat, noises = ev.natural(), ev.of_kind("noise")
    if not (nat and noises):
        return [untested("noise alone vs natural", "a noise-only model and a natural model")]
    parts = []
    for g in noises:
        parts.append(cmp.accuracy(g, nat, "blackbox").part(f"{g.id}: black-box accuracy above natural"))
        parts.append(gain_gap(g, nat))
    return parts


def gain_gap(g: Group, nat: Group) -> Part:
    """(black-box gain) - (white-box PGD gain) of g over natural, per seed pair, across seeds."""
    name = f"{g.id}: black-box gain exceeds white-box gain"
    decisions, texts, models = [], [], set()
    for a, b in cmp.seed_pairs(g, nat):
        r = {(m.id, k): m.result(k) for m in (a, b) for k in ("blackbox", "pgd")}
        rs = list(r.values())
        if all(x.per_image for x in rs) and all(np.array_equal(x.indices, rs[0].indices) for x in rs):
            x = (r[a.id, "blackbox"].mask.astype(int) - r[b.id, "blackbox"].mask) - (r[a.id, "pgd"].mask.astype(int) - r[b.id, "pgd"].mask)
            from scipy import stats

            ci = stats.bootstrap((x,), np.mean, n_resamples=999, method="percentile", random_state=np.random.default_rng(0)).confidence_interval
            d = Diff(100 * x.mean(), 100 * ci.low, 100 * ci.high, f"bootstrap over {len(x)} images, paired")
        else:  # aggregate: the two Newcombe intervals combined (their half-widths add)
            bb = unpaired_diff(r[a.id, "blackbox"].accuracy, r[a.id, "blackbox"].n, r[b.id, "blackbox"].accuracy, r[b.id, "blackbox"].n)
            wb = unpaired_diff(r[a.id, "pgd"].accuracy, r[a.id, "pgd"].n, r[b.id, "pgd"].accuracy, r[b.id, "pgd"].n)
            d = Diff(bb.diff - wb.diff, bb.lo - wb.hi, bb.hi - wb.lo, "aggregate, two Newcombe intervals added")
        decisions.append(d.decide(0.0))
        texts.append(
            f"black-box {fmt_pct(r[a.id, 'blackbox'].accuracy)} vs {fmt_pct(r[b.id, 'blackbox'].accuracy)}, "
            f"PGD {fmt_pct(r[a.id, 'pgd'].accuracy)} vs {fmt_pct(r[b.id, 'pgd'].accuracy)}: gain difference {d.text()}"
        )
        models |= {a.id, b.id}
    if not decisions:
        return untested(name, "a trained seed of each")
    return Part(name, ABOVE[iv.across_seeds(decisions)], f"{name}: " + "; ".join(texts), sorted(models))


@claim(
    "C7", title="noise and regulariser are synergistic",
    statement="Noise and the regulariser are synergistic: together they cut the gradient gap and robustness surges beyond either alone.",
    where="Sec. 3.1, Figs. 3 and 7, App. B",
    paper="MNIST alpha 0.2: sigma 0 / 0.1 / 0.3 -> 0 / 15.6 / 71.0% PGD; noise 0.3 alone 3.3%",
    reads=("records", "audits", "analysis"),
    needs="a regulariser alone, noise alone, and both together (same alpha or beta, sigma and k)",
    rule="""For every regulariser + noise model whose regulariser-alone and noise-alone twins (same
    alpha or beta, same sigma, same k) are in the study: its PGD accuracy beats each twin's (so the max
    of both) beyond noise, checked again under the audit's strongest attack (gradient masking turns it
    into 'holds under the paper's attacks only'); and its median gradient gap (every wrong class) is
    below each twin's.""",
)
def c7(ev: StudyEvidence) -> list[Part]:
    parts = []
    for reg_kind, param in (("ls", "alpha"), ("lsq", "beta")):
        for combo, reg, noise in family_triples(ev, reg_kind, param):
            for other in (reg, noise):
                parts.append(cmp.robust(f"{combo.id} beats {other.id}", combo, other))
                parts.append(cmp.statistic(combo, other, arr("grad_gap_all"), "gradient gap").part(f"{combo.id} gradient gap below {other.id}", "at most"))
    return parts or [untested("synergy", "a regulariser alone, noise alone and both together at the same alpha or beta, sigma and k")]


@claim(
    "C8", title="smaller sigma: FGSM and eps_L; larger sigma: PGD",
    statement="Smaller sigma: stronger synergy, larger eps_L, better FGSM; larger sigma: better iterative robustness.",
    where="Sec. 3.2", paper="Table 5 alpha 0.2, sigma 0.1-0.7 (only partly monotone)",
    reads=("records", "audits", "analysis"), needs="regulariser + noise models that differ only in sigma",
    rule="""For every set of regulariser + noise models equal in all but sigma, smallest against largest
    sigma: the smaller sigma has the higher FGSM accuracy and the higher median eps_L; the larger sigma
    the higher PGD accuracy (checked again under the audit's strongest attack). 'Stronger synergy' is
    read through eps_L, as Sec. 3.2 does; the paper's own table is only partly monotone, so the rule
    compares the ends of each sweep, not every step.""",
)
def c8(ev: StudyEvidence) -> list[Part]:
    parts = []
    for series in ev.series("sigma", ("ls_noise", "lsq_noise")):
        small, large = series[0], series[-1]
        parts.append(cmp.accuracy(small, large, "fgsm").part(f"{small.id} FGSM above {large.id}"))
        parts.append(cmp.statistic(small, large, arr("eps_l_all"), "eps_L").part(f"{small.id} eps_L above {large.id}", "above"))
        parts.append(cmp.robust(f"{large.id} PGD above {small.id}", large, small))
    return parts or [untested("sigma sweep", "two or more regulariser + noise models that differ only in sigma")]


@claim(
    "C9", title="LS + noise shrinks and aligns gradients, larger alpha more",
    statement="Label smoothing + noise shrinks and aligns the gradients; larger alpha more so.",
    where="Sec. 3.3, Figs. 4, 6", paper="Figs. 4, 6 (alpha 0.75 and 0.2, sigma 0.5)",
    reads=("analysis", "records"), needs="label smoothing + noise, a natural model; for 'larger alpha', two alphas at one sigma",
    rule="""The label smoothing + noise model closest to the paper's (alpha 0.75, sigma 0.5) against
    natural: median ||grad z_y||_1 lower and median cos(grad z_y, grad z_j) higher. Between label
    smoothing + noise models equal in all but alpha (largest vs smallest alpha): the same two
    differences.""",
)
def c9(ev: StudyEvidence) -> list[Part]:
    nat, lsn = ev.natural(), ev.closest("ls_noise", alpha=0.75, sigma=0.5)
    parts = []
    if nat and lsn:
        parts.append(cmp.statistic(lsn, nat, arr("grad_norm_y"), "||grad z_y||_1").part("gradients shrink vs natural", "at most"))
        parts.append(cmp.statistic(lsn, nat, arr("cos_all"), "cos").part("gradients align vs natural", "above"))
    else:
        parts.append(untested("LS + noise vs natural", "a label smoothing + noise model and a natural model"))
    sweeps = ev.series("alpha", ("ls_noise",))
    for series in sweeps:
        lo, hi = series[0], series[-1]
        parts.append(cmp.statistic(hi, lo, arr("grad_norm_y"), "||grad z_y||_1").part(f"{hi.id} gradients smaller than {lo.id}", "at most"))
        parts.append(cmp.statistic(hi, lo, arr("cos_all"), "cos").part(f"{hi.id} gradients more aligned than {lo.id}", "above"))
    if not sweeps:
        parts.append(untested("larger alpha more so", "two label smoothing + noise models that differ only in alpha"))
    return parts


@claim(
    "C10", title="LSQ + noise: smaller gradients, wider cosines, larger logit gap",
    statement="Logit squeezing + noise shrinks gradients, widens the cosine spread and raises the logit gap; without noise the logit-gap rise disappears.",
    where="Sec. 3.3, App. B, Fig. 7", paper="Fig. 7 (beta 0.5, sigma 0.5)",
    reads=("analysis", "records"), needs="logit squeezing with and without noise, and a natural model",
    rule="""The logit squeezing + noise model closest to the paper's (beta 0.5, sigma 0.5) against
    natural: median ||grad z_y||_1 lower, the interquartile range of cos(grad z_y, grad z_j) wider
    (the 'spread'), the median logit gap (every wrong class) higher; the logit squeezing model without
    noise (closest beta): median logit gap not above natural's.""",
)
def c10(ev: StudyEvidence) -> list[Part]:
    nat, lsqn = ev.natural(), ev.closest("lsq_noise", beta=0.5, sigma=0.5)
    if not nat:
        return [untested("LSQ vs natural", "a natural model")]
    parts = []
    if lsqn:
        parts.append(cmp.statistic(lsqn, nat, arr("grad_norm_y"), "||grad z_y||_1").part("gradients shrink", "at most"))
        parts.append(cmp.statistic(lsqn, nat, arr("cos_all"), "cos", stat="spread").part("cosine spread widens", "above"))
        parts.append(cmp.statistic(lsqn, nat, arr("logit_gap_all"), "logit gap").part("logit gap rises", "above"))
    else:
        parts.append(untested("LSQ + noise vs natural", "a logit squeezing + noise model"))
    lsq = ev.closest("lsq", beta=lsqn.params["beta"] if lsqn else 0.5)
    if lsq:
        parts.append(cmp.statistic(lsq, nat, arr("logit_gap_all"), "logit gap").part("without noise no logit-gap rise", "at most"))
    else:
        parts.append(untested("without noise no logit-gap rise", "a logit squeezing model without noise"))
    return parts


@claim(
    "C11", title="more iterations k, more robust",
    statement="More training iterations k give more robust models.", where="Sec. 3.4, Table 2, App. C",
    paper="MNIST rows 1/3, 4/5, 8/9, 10/11, 12/13, 34-36, 37-39; CIFAR-10 Table 6 rows 2/7, 5/8, 11/13, 16/17, 18/19",
    reads=("records", "audits"), needs="models that differ only in k",
    rule="""For every set of models equal in all but k, the largest k against the smallest: PGD accuracy
    higher beyond noise, checked again under the audit's strongest attack.""",
)
def c11(ev: StudyEvidence) -> list[Part]:
    parts = [cmp.robust(f"{s[-1].id} above {s[0].id}", s[-1], s[0])
             for s in ev.series("k", ("natural", "adv", "noise", "ls", "ls_noise", "lsq", "lsq_noise"))]
    return parts or [untested("k sweep", "two models that differ only in k")]


@claim(
    "C12", title="larger alpha, beta more robust; sigma > eps helps",
    statement="Larger alpha and beta give more robustness; sigma greater than eps helps.", where="Sec. 3.4",
    paper="partly contradicted by Table 5 itself (sigma 0.5: alpha 0.5 79.1 > alpha 0.95 74.2)",
    reads=("records", "audits"), needs="models that differ only in alpha, only in beta, or in sigma across eps",
    rule="""For every set of regularised models equal in all but alpha (then beta), largest against
    smallest: PGD accuracy higher beyond noise, checked again under the audit's strongest attack. For
    every set of models with noise equal in all but sigma that has sigma on both sides of the study's
    eps: the smallest sigma above eps against the largest at or below it, the same way. Models whose
    training collapsed are left out (C17 counts them).""",
)
def c12(ev: StudyEvidence) -> list[Part]:
    parts = []
    for param, kinds in (("alpha", ("ls", "ls_noise")), ("beta", ("lsq", "lsq_noise"))):
        found = ev.series(param, kinds)
        parts += [cmp.robust(f"{s[-1].id} above {s[0].id} ({param})", s[-1], s[0]) for s in found]
        if not found:
            parts.append(untested(f"larger {param}", f"two models that differ only in {param}"))
    eps = ev.eps
    crossing = []
    for s in ev.series("sigma", ("noise", "ls_noise", "lsq_noise")):
        below = [g for g in s if g.params["sigma"] <= eps]
        above = [g for g in s if g.params["sigma"] > eps]
        if below and above:
            crossing.append(cmp.robust(f"{above[0].id} above {below[-1].id} (sigma > eps {eps:g})", above[0], below[-1]))
    parts += crossing or [untested("sigma > eps", f"two models with noise that differ only in sigma, one at or below eps {eps:g} and one above")]
    return parts


# ---------------------------------------------------------------- C13-C17: against adversarial training (Sec. 4)


@claim(
    "C13", title="MNIST: regularisers close to adversarial training, far cheaper",
    statement="On MNIST the regularisers do not beat adversarial training, but come close at a fraction of the cost.",
    where="Sec. 3.4, Table 2", paper="best regularised 83.6 / 85.4 vs Madry 93.2 / 93.9 (copied from Madry et al.)",
    reads=("records", "audits", "cost", "metrics"), datasets=MNIST_LIKE,
    needs="regulariser + noise models and PGD adversarial training on MNIST (digits, Fashion-MNIST stand in)",
    rule=f"""The regulariser + noise model with the best PGD accuracy against the strongest PGD
    adversarially trained model: (1) PGD accuracy not above it; (2) 'close': at most {CLOSE_PP:g}
    points below it (the paper's own gap), checked again under the audit's strongest attack (the
    regulariser's drop beyond noise makes it 'holds under the paper's attacks only'); (3) total
    training cost at most {COST_FRACTION:g} of it (passes, else measured CPU seconds; the spread of the
    per-iteration cost of the models without adversarial training is the noise floor). The best of
    several models is chosen on the data: a selection that favours the claim.""",
)
def c13(ev: StudyEvidence) -> list[Part]:
    reg = best(ev.of_kind("ls_noise", "lsq_noise"), "pgd")
    adv = next(iter(ev.pgd_adversarial()), None)
    if not (reg and adv):
        return [untested("regulariser vs adversarial training", "a regulariser + noise model and PGD adversarial training")]
    return [
        cmp.accuracy(reg, adv, "pgd").part("does not beat adversarial training", "at most"),
        robust_at_most(f"comes within {CLOSE_PP:g} pp", adv, reg, CLOSE_PP, claimed=reg),
        cost_part(ev, reg, adv),
    ]


def cost_part(ev: StudyEvidence, reg: Group, adv: Group) -> Part:
    name = f"costs at most {COST_FRACTION:g} of adversarial training"
    cr, ca = group_cost(reg), group_cost(adv)
    if not (cr and ca) or cr[1] != ca[1]:
        return untested(name, "the training cost of both (metrics training_passes or the cost table)")
    ratio = cr[0] / ca[0]
    spread = cost_spread(ev, (reg, adv)) if cr[1] == "CPU s" else None
    lo, hi = ratio, ratio
    how = "exact pass counts"
    if spread:
        med, mn, mx = spread
        lo, hi = ratio * mn / mx, ratio * mx / mn
        how = f"CPU s; noise floor: per-iteration cost of models without adversarial training {mn:.3g}-{mx:.3g} s / 1k it."
    verdict = AT_MOST[iv.decide(lo, hi, COST_FRACTION)]
    return Part(name, verdict, f"{name}: {reg.id} {cr[0]:.4g} vs {adv.id} {ca[0]:.4g} {cr[1]}: ratio {ratio:.3g} [{lo:.3g}, {hi:.3g}] ({how})",
                [m.id for m in reg.models + adv.models])


def _not_source(ev: StudyEvidence, groups: list[Group]) -> list[Group]:
    return [g for g in groups if ev.blackbox_source not in {m.id for m in g.models}]


@claim(
    "C14", title="CIFAR-10 black-box: LS + noise beats adversarial training",
    statement="On CIFAR-10, label smoothing + noise beats adversarial training under black-box attack: over 73% vs 64%.",
    where="Abstract, Intro, Table 4", paper="71.58-73.16 vs 63.39 / 64.38",
    reads=("records", "audits"), datasets=CIFAR,
    needs="label smoothing + noise and an adversarially trained model that is not the black-box source (a GPU study)",
    rule="""The label smoothing + noise model with the best black-box PGD accuracy (worst of the
    record's black-box PGD sets per image, where the paper takes the lowest column) against the PGD
    adversarially trained model that is not the black-box source (the source's black-box numbers are
    white-box): higher beyond noise, then checked under the audit's strongest attack (which includes the
    black-box sets).""",
)
def c14(ev: StudyEvidence) -> list[Part]:
    lsn = best(ev.of_kind("ls_noise"), "blackbox_pgd")
    adv = next(iter(_not_source(ev, ev.pgd_adversarial())), None)
    if not (lsn and adv):
        return [untested("LS + noise vs adversarial, black-box", "label smoothing + noise and an adversarially trained model other than the black-box source")]
    return [cmp.robust("LS + noise beats adversarial training under black-box PGD", lsn, adv, paper_metric="blackbox_pgd")]


@claim(
    "C15", title="CIFAR-10 white-box: LSQ / LS about 50% vs 47% adversarial",
    statement="On CIFAR-10, logit squeezing (and label smoothing) reach about 50% white-box vs about 47% for adversarial training, with higher clean accuracy.",
    where="Intro, Sec. 4, Table 3", paper="LSQ beta 10: 52.55 / 48.78 and 52.30 / 49.73 vs 45.84 / 46.90",
    reads=("records", "audits"), datasets=CIFAR, needs="logit squeezing or label smoothing + noise and PGD adversarial training (a GPU study)",
    rule="""For logit squeezing + noise and for label smoothing + noise, the model with the best PGD
    accuracy (worst of PGD-20 x-ent / CW per image) against the strongest PGD adversarially trained
    model: PGD accuracy higher beyond noise, checked again under the audit's strongest attack; and
    clean accuracy higher.""",
)
def c15(ev: StudyEvidence) -> list[Part]:
    adv = next(iter(ev.pgd_adversarial()), None)
    parts = []
    for kind in ("lsq_noise", "ls_noise"):
        reg = best(ev.of_kind(kind), "pgd")
        if reg and adv:
            parts.append(cmp.robust(f"{reg.id} PGD above {adv.id}", reg, adv))
            parts.append(cmp.accuracy(reg, adv, "clean").part(f"{reg.id} clean above {adv.id}"))
    return parts or [untested("regulariser vs adversarial, white-box", "a regulariser + noise model and PGD adversarial training")]


@claim(
    "C16", title="CIFAR-10: regularisers beat adversarial training on FGSM and clean",
    statement="Regularised models beat adversarial training on FGSM and on clean accuracy; a random start weakens FGSM.",
    where="Intro, Table 3 and its caption", paper="FGSM 64-76% vs 56%; clean 89.9-92.9% vs 87.25%",
    reads=("records",), datasets=CIFAR, needs="regulariser + noise models and PGD adversarial training (a GPU study); for the random start, an FGSM attack with a random start",
    rule="""Every regulariser + noise model against the strongest PGD adversarially trained model: FGSM
    accuracy (worst of the FGSM attacks per image) higher, and clean accuracy higher, beyond noise.
    Random start: on every model, a white-box FGSM attack with a random start leaves a higher accuracy
    than the same attack without (needs such an attack among the study's white-box attacks).""",
)
def c16(ev: StudyEvidence) -> list[Part]:
    adv = next(iter(ev.pgd_adversarial()), None)
    regs = ev.of_kind("ls_noise", "lsq_noise")
    if not (adv and regs):
        return [untested("regularisers vs adversarial", "regulariser + noise models and PGD adversarial training")]
    parts = []
    for g in regs:
        parts.append(cmp.accuracy(g, adv, "fgsm").part(f"{g.id} FGSM above {adv.id}"))
        parts.append(cmp.accuracy(g, adv, "clean").part(f"{g.id} clean above {adv.id}"))
    pairs = random_start_pairs(adv.models[0])
    if not pairs:
        parts.append(untested("a random start weakens FGSM", "a white-box FGSM attack with a random start beside one without"))
    for with_rs, without in pairs:
        for g in [adv, *regs]:
            parts.append(cmp.accuracy(g, g, with_rs, metric_b=without, what=f"{with_rs} vs {without}").part(f"{g.id}: random start weakens FGSM"))
    return parts


def random_start_pairs(m: Model) -> list[tuple[str, str]]:
    """(FGSM with a random start, the same loss without) among the record's white-box attacks, as result keys."""
    specs = m.need_record().get("attacks", {}).get("whitebox", {})
    fgsm = {n: s for n, s in specs.items() if s.get("method") == "fgsm"}
    return [(f"whitebox_{a}", f"whitebox_{b}") for a, sa in fgsm.items() if sa.get("random_start")
            for b, sb in fgsm.items() if not sb.get("random_start") and sb.get("loss") == sa.get("loss")]


@claim(
    "C17", title="CIFAR-10: large beta often fails to train, LS rarely",
    statement="On CIFAR-10 a large beta often fails to train; label smoothing rarely does.",
    where="App. D", paper="no failed run is tabulated", reads=("records", "metrics"), datasets=CIFAR,
    needs="logit squeezing and label smoothing models, several runs of each (a GPU study)",
    rule="""Share of training runs (every seed) that collapsed (training accuracy below twice chance):
    logit squeezing at the study's largest beta minus label smoothing (every alpha), with the
    Wilson/Newcombe interval over runs: above 0 holds, at or below fails.""",
)
def c17(ev: StudyEvidence) -> list[Part]:
    lsq = ev.of_kind("lsq", "lsq_noise", trained=False)
    ls = ev.of_kind("ls", "ls_noise", trained=False)
    if not (lsq and ls):
        return [untested("collapse rates", "logit squeezing and label smoothing models")]
    top = max(g.params["beta"] for g in lsq)
    large = [m for g in lsq if g.params["beta"] == top for m in g.models]
    smooth = [m for g in ls for m in g.models]
    ca, cb = sum(m.collapsed for m in large), sum(m.collapsed for m in smooth)
    d = unpaired_diff(100 * ca / len(large), len(large), 100 * cb / len(smooth), len(smooth), "runs")
    name = f"beta {top:g} collapses more often than label smoothing"
    return [Part(name, ABOVE[d.decide(0.0)], f"{name}: {ca} of {len(large)} vs {cb} of {len(smooth)} runs collapsed: {d.text()}",
                 [m.id for m in large + smooth])]


# ---------------------------------------------------------------- C18-C20: appendix and cost


@claim(
    "C18", title="larger sigma costs clean accuracy; very large sigma loses robustness",
    statement="Larger sigma costs clean accuracy; very large sigma loses robustness.", where="App. C",
    paper="Table 5 rows 14-17: PGD x-ent 2.9 / 11.8 / 13.7 / 1.9; test 99.42 -> 98.17",
    reads=("records",), needs="models with noise that differ only in sigma (three for 'very large')",
    rule="""For every set of models with noise equal in all but sigma: clean accuracy at the smallest
    sigma above that at the largest; with three or more sigmas, PGD accuracy at the best of the smaller
    sigmas above that at the largest (the best is chosen on the data). Beyond noise, paired per image.""",
)
def c18(ev: StudyEvidence) -> list[Part]:
    parts = []
    for s in ev.series("sigma", ("noise", "ls_noise", "lsq_noise")):
        parts.append(cmp.accuracy(s[0], s[-1], "clean").part(f"{s[0].id} clean above {s[-1].id}"))
        if len(s) >= 3:
            peak = best(s[:-1], "pgd")
            parts.append(cmp.accuracy(peak, s[-1], "pgd").part(f"{s[-1].id} PGD below {peak.id}"))
        else:
            parts.append(untested(f"very large sigma ({s[-1].id})", "three or more sigmas in one sweep"))
    return parts or [untested("sigma sweep", "models with noise that differ only in sigma")]


@claim(
    "C19", title="about 40% of penultimate neurons inactive, none after natural",
    statement="About 400 of the 1024 penultimate neurons are effectively inactive after adversarial training, LS + noise and LSQ + noise; none after natural training.",
    where="App. E, Fig. 8", paper="Fig. 8",
    reads=("analysis", "records"), needs="a natural model and adversarial training, LS + noise or LSQ + noise",
    rule=f"""A neuron is inactive when its summed |activation| over the analysed images is at most
    {INACTIVE_RELATIVE:g} of the model's mean neuron sum. Natural: at most {NATURAL_INACTIVE_MAX:g}% of
    the neurons. Strong PGD adversarial training and the LS + noise / LSQ + noise models closest to
    Fig. 8's (alpha 0.2, beta 0.5, sigma 0.5): a share above natural's by more than
    {INACTIVE_GAP_PP:g} points (with seeds: Welch's interval over seeds; with one seed the sums run over
    every image and have no sampling interval, so a gap under {INACTIVE_GAP_PP:g} points is 'within
    noise').""",
)
def c19(ev: StudyEvidence) -> list[Part]:
    nat = ev.natural()
    if not nat:
        return [untested("inactive neurons", "a natural model")]
    nat_shares = [inactive_share(m) for m in nat.trained()]
    parts = [Part("natural: none inactive", AT_MOST[iv.decide(min(nat_shares), max(nat_shares), NATURAL_INACTIVE_MAX)],
                  f"natural: none inactive: {nat.label()} {', '.join(f'{s:.1f}%' for s in nat_shares)} of the neurons (at most {NATURAL_INACTIVE_MAX:g}%)",
                  [m.id for m in nat.trained()])]
    others = [g for g in (next(iter(ev.pgd_adversarial()), None), ev.closest("ls_noise", alpha=0.2, sigma=0.5),
                          ev.closest("lsq_noise", beta=0.5, sigma=0.5)) if g]
    for g in others:
        shares = [inactive_share(m) for m in g.trained()]
        name = f"{g.id}: many inactive"
        if len(shares) > 1 or len(nat_shares) > 1:
            from .measure import seed_diff

            d = seed_diff(shares, nat_shares)
        else:
            d = Diff(shares[0] - nat_shares[0], shares[0] - nat_shares[0], shares[0] - nat_shares[0], "one seed, no sampling interval")
        if d.how.startswith("one seed"):
            verdict = HOLDS if d.diff > INACTIVE_GAP_PP else (FAILS if d.diff <= 0 else WITHIN_NOISE)
        else:
            verdict = ABOVE[d.decide(INACTIVE_GAP_PP)]
        parts.append(Part(name, verdict, f"{name}: {', '.join(f'{s:.1f}%' for s in shares)} of the neurons vs natural's: {d.text()}",
                          [m.id for m in g.trained()]))
    return parts if others else parts + [untested("inactive after the defenses", "adversarial training, LS + noise or LSQ + noise")]


@claim(
    "C20", title="PGD-k training costs about (k+1)x, regularisers about 1x",
    statement="Regularised training is far cheaper: 80k iterations of 7-step PGD cost as much as 640k plain iterations; adversarial training costs 10-100x.",
    where="Sec. 4, Intro", paper="the paper counts k + 1 passes: 8x (PGD-7), 41x (PGD-40)",
    reads=("cost", "metrics", "records"), needs="the cost table, a natural model and PGD adversarial training",
    rule=f"""Measured CPU seconds per training iteration (the cost table; same machine and precision):
    every PGD-k adversarially trained model costs at least (k + 1) / 2 times the median of the models
    without adversarial training (at least half the paper's pass count; their spread, min to max, is
    the noise floor), and every regulariser costs at most {REGULARISER_COST_MAX:g}x the natural
    model. Pass counts from metrics.json are printed beside them when present.""",
)
def c20(ev: StudyEvidence) -> list[Part]:
    spread, nat, advs = cost_spread(ev), ev.natural(), ev.pgd_adversarial()
    if not spread or not nat or not advs:
        return [untested("measured cost", "the cost table with a natural model and PGD adversarial training")]
    med, mn, mx = spread
    parts = []
    for g in advs:
        steps = g.params["adversarial"]["steps"]
        costs = [c for m in g.models if (c := m.cost_per_iteration()) is not None]
        if not costs:
            parts.append(untested(f"{g.id} cost", f"a cost table row of {g.id}"))
            continue
        c = float(np.mean(costs))
        ratio, lo, hi = c / med, c / mx, c / mn
        passes = [m.metrics.get("passes_per_iteration") for m in g.models if m.metrics and m.metrics.get("passes_per_iteration")]
        extra = f"; {passes[0]} passes per iteration" if passes else ""
        name = f"{g.id} costs at least {(steps + 1) / 2:g}x"
        parts.append(Part(name, ABOVE[iv.decide(lo, hi, (steps + 1) / 2)],
                          f"{name}: {c:.3g} CPU s / 1k it. = {ratio:.2f}x [{lo:.2f}, {hi:.2f}] (plain models {mn:.3g}-{mx:.3g}){extra}",
                          [m.id for m in g.models]))
    nat_cost = [c for m in nat.models if (c := m.cost_per_iteration()) is not None]
    regs = ev.of_kind("noise", "ls", "ls_noise", "lsq", "lsq_noise", trained=False)
    if nat_cost and regs:
        worst = max(regs, key=lambda g: max(m.cost_per_iteration() or 0 for m in g.models))
        wc = max(m.cost_per_iteration() or 0 for m in worst.models) / float(np.mean(nat_cost))
        name = f"regularisers cost at most {REGULARISER_COST_MAX:g}x natural"
        parts.append(Part(name, HOLDS if wc <= REGULARISER_COST_MAX else FAILS, f"{name}: the most expensive, {worst.id}, {wc:.2f}x",
                          [m.id for m in worst.models + nat.models]))
    return parts


# ---------------------------------------------------------------- C21: beyond the paper


@claim(
    "C21", title="regulariser + noise beats single-step adversarial training at equal cost",
    statement="At equal or lower training cost, a regulariser + noise model is more robust than single-step adversarial training.",
    where="beyond the paper: follows from Sec. 4 and C20; the baseline is Wong et al. 2020",
    paper="none (beyond the paper; Wong et al.'s published baseline is beside it)",
    reads=("records", "audits", "metrics", "cost"),
    needs="single-step adversarial training (grid adversarial.method: fgsm_rs or nfgsm) and regulariser + noise models",
    rule="""For every single-step adversarially trained model (FGSM with a random start, N-FGSM): among
    the regulariser + noise models whose total training cost is at most its cost (forward-backward
    passes from metrics.json, else the cost table's measured CPU seconds), the one most accurate under
    the audit's per-image strongest attack must be more accurate than it under that attack, beyond
    noise (paired per image on the audited images; every seed must agree). If it is less accurate under
    that attack but more accurate under the paper's PGD: 'holds under the paper's attacks only'. Collapsed models and single-step
    models flagged by the catastrophic-overfitting guard are left out. The best model is chosen on the
    data: a selection that favours the claim. The study's frontier (reports/<study>/frontier.pdf, .csv)
    shows every model's cost and strongest-attack accuracy side by side.""",
)
def c21(ev: StudyEvidence) -> list[Part]:
    single = ev.single_step()
    if not single:
        return [untested("single-step adversarial training", "single-step adversarial training in the grid (adversarial.method: fgsm_rs or nfgsm)")]
    regs = ev.of_kind("ls_noise", "lsq_noise")
    nat = ev.natural()
    nat_cost = group_cost(nat) if nat else None
    parts = []
    for ss in single:
        name = f"beats {ss.id} ({ss.adv_method}) at equal or lower cost"
        cs = group_cost(ss)
        if cs is None:
            parts.append(untested(name, f"the training cost of {ss.id}"))
            continue
        cheaper = [g for g in regs if (c := group_cost(g)) and c[1] == cs[1] and c[0] <= cs[0]]
        if not cheaper:
            parts.append(untested(name, "a regulariser + noise model at equal or lower training cost"))
            continue
        reg = best(cheaper, "strongest")
        strong = cmp.accuracy(reg, ss, "strongest")
        rel = (f"; cost vs natural {group_cost(reg)[0] / nat_cost[0]:.2f}x and {cs[0] / nat_cost[0]:.2f}x ({cs[1]})"
               if nat_cost and nat_cost[1] == cs[1] else f"; cost {group_cost(reg)[0]:.4g} vs {cs[0]:.4g} {cs[1]}")
        verdict = strong.verdict()
        text = f"{name}: strongest attack {strong.text}{rel}"
        if verdict == FAILS:
            paper = cmp.accuracy(reg, ss, "pgd")
            if paper.verdict() == HOLDS:
                verdict = PAPER_ONLY
            text += f"; paper's PGD {paper.text}"
        parts.append(Part(name, verdict, text, sorted(set(strong.models))))
    return parts


def get(claim_id: str) -> Claim:
    return CLAIMS[claim_id]


__all__ = ["CLAIMS", "Claim", "ARTIFACTS", "get", "Missing", "NOT_TESTABLE", "WITHIN_NOISE"]
