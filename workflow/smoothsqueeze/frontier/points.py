"""One frontier point per defense (grid entry), over its seeds, from a study's records, audits,
training metrics and cost table (read through `smoothsqueeze.claims.inputs`, as the ledger reads them).

- x, the training cost relative to the study's natural model: forward-backward passes of training
  batches in all (training plus the robust checks, metrics.json; exact, the same on every machine),
  over the natural model's; beside it the training loop's measured CPU and wall seconds (cost table)
  over the natural model's, mean and sd over seeds. The natural model is the one the claims use:
  the black-box source when it is natural, else the natural model with the largest k (its seeds
  averaged). Not "of the same k": a model trained for fewer iterations costs less.
- y, accuracy under the audit's per-image strongest attack on the audited images: mean and sample sd
  over seeds, and the 95% Wilson interval of the audited images pooled over seeds
  (`evidence.intervals.pooled_wilson`). Clean accuracy (the record's test accuracy) beside it, the same way.
- status: "ok", "collapsed" (the record's training collapsed) or "catastrophic overfitting" (the
  robust check of single-step training fell to near 0%: metrics guard or the record's
  training.overfitted); with several seeds, how many. A marked point is shown but never in the
  Pareto set.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .. import study as plan
from ..claims import inputs
from ..errors import PipelineError
from ..evidence import intervals as iv
from . import pareto

OK, COLLAPSED, OVERFITTED = "ok", "collapsed", "catastrophic overfitting"


@dataclass(frozen=True)
class Stat:
    """An accuracy over seeds: mean, sd over seeds, the pooled Wilson interval, images per seed."""

    mean: float
    sd: float
    lo: float
    hi: float
    n: int


@dataclass
class Point:
    """One grid entry on the frontier."""

    group: str
    defense: str  # the defense with its parameters (study.legend_label), e.g. "LS α=0.95 + noise σ=0.3"
    short: str  # a few words for the figure, e.g. "LS α=0.95 + noise σ=0.3" or "FGSM-RS"
    kind: str  # study.kind: natural, adv, noise, ls, ls_noise, lsq, lsq_noise, other
    method: str  # "" (no adversarial training), pgd, fgsm_rs or nfgsm
    k: int
    models: list[str]
    passes: float  # forward-backward passes in all, mean over seeds
    passes_ratio: float
    cpu_ratio: float
    cpu_ratio_sd: float
    wall_ratio: float
    strongest: Stat
    clean: Stat
    status: str
    pareto: bool = False

    @property
    def seeds(self) -> int:
        return len(self.models)

    @property
    def eligible(self) -> bool:
        return self.status == OK and math.isfinite(self.passes_ratio) and math.isfinite(self.strongest.mean)

    def row(self) -> dict[str, Any]:
        """The point as one table row (the stats spread into <name>, <name>_sd, _lo, _hi, _n)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("strongest", "clean")}
        out["models"] = " ".join(self.models)
        out["seeds"] = self.seeds
        for name in ("strongest", "clean"):
            stat: Stat = getattr(self, name)
            out |= {name: stat.mean, f"{name}_sd": stat.sd, f"{name}_lo": stat.lo, f"{name}_hi": stat.hi, f"{name}_n": stat.n}
        return out


def total_passes(model: inputs.Model) -> float:
    """Forward-backward passes of a model's training in all: metrics.json's training + check passes,
    else k times its method's passes per iteration (models trained before training counted them)."""
    metrics = model.metrics or {}
    training = metrics.get("training_passes")
    if training is None:
        training = model.params["k"] * plan.passes_per_iteration(model.entry.get("adversarial"))
    return float(training) + float(metrics.get("check_passes") or 0)


def seconds(model: inputs.Model, column: str) -> float:
    """The training loop's seconds in all (cost table: `column` per 1000 iterations, times k); NaN without a cost row."""
    row = model.cost or {}
    value = row.get(column)
    if value in (None, ""):
        return math.nan
    return float(value) * float(row.get("k") or model.params["k"]) / 1000.0


def _stat(model_results: list[inputs.Result]) -> Stat:
    summary = iv.over_seeds(r.accuracy for r in model_results)
    lo, hi = iv.pooled_wilson([r.accuracy for r in model_results], [r.n for r in model_results])
    ns = {r.n for r in model_results}
    return Stat(summary.mean, summary.sd, lo, hi, ns.pop() if len(ns) == 1 else min(ns, default=0))


def status(models: list[inputs.Model]) -> str:
    """OK, or what failed and in how many seeds (collapse is named first)."""
    def overfitted(m: inputs.Model) -> bool:
        guard = (m.metrics or {}).get("guard") or {}
        return bool(guard.get("overfitting_detected")) or bool((m.record or {}).get("training", {}).get("overfitted"))

    for name, failed in ((COLLAPSED, [m for m in models if (m.record or {}).get("training", {}).get("collapsed")]),
                         (OVERFITTED, [m for m in models if overfitted(m)])):
        if failed:
            return name if len(models) == 1 else f"{name} ({len(failed)} of {len(models)} seeds)"
    return OK


def short_label(entry: Mapping[str, Any], units: float) -> str:
    """The figure's name of a defense: the training attack's name (with its eps when the study has
    several), else the regularisers with their values."""
    adv = entry.get("adversarial")
    if adv:
        return plan.adversarial_name(adv) + (", ε warm-up" if adv.get("eps_warmup") else "")
    return plan.legend_label(entry, units)


def _ratio(value: float, base: float) -> float:
    """value / base, NaN when either is missing or the base is not positive."""
    return value / base if math.isfinite(value) and math.isfinite(base) and base > 0 else math.nan


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _sd(values: list[float]) -> float:
    return iv.over_seeds(values).sd if any(math.isfinite(v) for v in values) else math.nan


def build(ev: inputs.StudyEvidence) -> list[Point]:
    """Every grid entry of the study as a point, in grid order, with its Pareto membership."""
    if ev.missing:
        raise PipelineError(f"frontier of {ev.study}: missing input {ev.missing[0]} (rerun the stage that makes it)")
    natural = ev.natural()
    if natural is None:
        raise PipelineError(f"frontier of {ev.study}: the study has no trained natural model to set the costs against (add {{k: ...}} to its grid)")
    base_models = natural.trained()
    base = {"passes": _mean([total_passes(m) for m in base_models]),
            "cpu": _mean([seconds(m, "train_loop_cpu_s_per_1k_iter") for m in base_models]),
            "wall": _mean([seconds(m, "train_loop_s_per_1k_iter") for m in base_models])}
    points = []
    for group in ev.groups():
        models = group.models
        try:
            strongest = _stat([m.result("strongest") for m in models])
            clean = _stat([m.result("clean") for m in models])
        except inputs.Missing as err:
            raise PipelineError(f"frontier of {ev.study}: {err} is missing (rerun its audit)") from None
        cpu = [_ratio(seconds(m, "train_loop_cpu_s_per_1k_iter"), base["cpu"]) for m in models]
        points.append(Point(
            group=group.id, defense=plan.legend_label(group.entry, ev.units), short=short_label(group.entry, ev.units), kind=group.kind,
            method=group.adv_method or "", k=int(group.params["k"]), models=[m.id for m in models],
            passes=_mean([total_passes(m) for m in models]),
            passes_ratio=_ratio(_mean([total_passes(m) for m in models]), base["passes"]),
            cpu_ratio=_mean(cpu), cpu_ratio_sd=_sd(cpu),
            wall_ratio=_mean([_ratio(seconds(m, "train_loop_s_per_1k_iter"), base["wall"]) for m in models]),
            strongest=strongest, clean=clean, status=status(models),
        ))
    mask = pareto.pareto_mask([p.passes_ratio for p in points], [p.strongest.mean for p in points], [p.eligible for p in points])
    for point, on in zip(points, mask):
        point.pareto = on
    return points


def natural_of(ev: inputs.StudyEvidence) -> str:
    """The group the costs are set against (for captions)."""
    natural = ev.natural()
    return natural.id if natural is not None else "none"
