"""A study's artifacts as one object the claims read: per model its grid entry, evaluation record,
audit, analysis arrays, training metrics and cost row; models grouped by grid entry (seeds).

Torch-free. Nothing is computed here beyond looking up results: `Model.result(metric)` gives the
per-image results of one metric (or, for records written before per-image results were kept, the
aggregate accuracy and its image count, and says so). Metrics:

- "clean": the record's test accuracy;
- "pgd" / "fgsm": the record's white-box attacks of that method, worst case per image (with the
  aggregate fallback: the lowest accuracy of them);
- "blackbox" / "blackbox_pgd": the record's black-box attacks (all / PGD only), worst case per image;
- "whitebox_<name>" / "blackbox_<name>": one attack of the record;
- "strongest": the audit's per-image strongest attack (the audit's attacks and the record's, on the
  audited images); "autoattack": the audit's AutoAttack;
- "eq4": Eq. 4's prediction per analysed image (correct, and eps below eps_L of every wrong class),
  from the analysis arrays (the first analysed test images, in order).

A model whose input file is missing raises `Missing` when a claim asks for it, so that claim says
"not testable here" and names the file; it never guesses.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .. import study as plan
from ..errors import PipelineError
from ..evidence import per_image

#: Datasets that stand for MNIST (one channel, ten classes of digits or clothes) and real MNIST.
MNIST_LIKE = ("mnist", "mnist5k", "digits", "fashion_mnist")
REAL_MNIST = ("mnist", "mnist5k")
CIFAR = ("cifar10",)
#: Single-step adversarial training (grid `adversarial.method`); anything else adversarial is PGD-k.
SINGLE_STEP = ("fgsm_rs", "nfgsm")


class Missing(Exception):
    """An input a claim needs is not there (its message names it)."""


@dataclass
class Result:
    """One metric of one model: per-image (mask + test indices) or only the aggregate."""

    accuracy: float
    n: int
    mask: np.ndarray | None = None
    indices: np.ndarray | None = None
    what: str = ""

    @property
    def per_image(self) -> bool:
        return self.mask is not None


def _read_json(path: str | None) -> dict[str, Any] | None:
    if not path or not Path(path).exists():
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PipelineError(f"{path}: not valid JSON ({err}); delete it and rerun the stage that made it") from None


def normalized(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A grid entry with every regulariser present (0 when absent), no seed, adversarial as given."""
    return {
        "alpha": float(entry.get("alpha") or 0), "beta": float(entry.get("beta") or 0), "sigma": float(entry.get("sigma") or 0),
        "k": int(entry["k"]), "adversarial": dict(entry["adversarial"]) if entry.get("adversarial") else None,
    }


@dataclass
class Model:
    """One trained model (one seed of one grid entry) and the artifacts the claims read."""

    id: str
    entry: dict[str, Any]
    group: str
    seed: int | None
    paths: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    _arrays: dict[str, np.ndarray] | None = None
    _masks: dict[str, tuple[np.ndarray, dict[str, np.ndarray]] | None] = field(default_factory=dict)

    # -- what the model is

    @property
    def kind(self) -> str:
        """Fine kind (study.kind): natural, adv, noise, ls, ls_noise, lsq, lsq_noise, other."""
        return plan.kind(self.entry)

    @property
    def params(self) -> dict[str, Any]:
        return normalized(self.entry)

    @property
    def adv_method(self) -> str | None:
        """None (no adversarial training), 'pgd', 'fgsm_rs' or 'nfgsm'."""
        adv = self.entry.get("adversarial")
        return (adv.get("method") or "pgd") if adv else None

    @property
    def collapsed(self) -> bool:
        """Training failed: the record says training collapsed, or the single-step guard flagged catastrophic overfitting."""
        rec = self.need_record()
        guard = (self.metrics or {}).get("guard") or {}
        return bool(rec.get("training", {}).get("collapsed")) or bool(guard.get("overfitting_detected"))

    def label(self) -> str:
        return f"{plan.defense_label(self.entry)} {self.id}"

    # -- inputs

    def need_record(self) -> dict[str, Any]:
        if self.record is None:
            raise Missing(f"the evaluation record of {self.id} ({self.paths.get('record', 'no path')})")
        return self.record

    def need_audit(self) -> dict[str, Any]:
        if self.audit is None:
            raise Missing(f"the audit of {self.id} ({self.paths.get('audit', 'no path')})")
        return self.audit

    def arrays(self) -> dict[str, np.ndarray]:
        """The analysis arrays (.npz), read once."""
        if self._arrays is None:
            path = self.paths.get("analysis")
            if not path or not Path(path).exists():
                raise Missing(f"the analysis arrays of {self.id} ({path or 'no path'})")
            from ..artifacts import read_npz

            self._arrays = read_npz(path)
        return self._arrays

    def _decoded(self, which: str) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        if which not in self._masks:
            rec = self.need_record() if which == "record" else self.need_audit()
            self._masks[which] = per_image.record_masks(rec, f"{which} of {self.id}") if rec.get("per_image") else None
        return self._masks[which]

    # -- results

    def _record_keys(self, metric: str) -> tuple[list[str], str]:
        rec = self.need_record()
        acc, attacks = rec.get("accuracy", {}), rec.get("attacks", {})
        if metric == "clean":
            return ["test"], "clean"
        if metric in ("pgd", "fgsm"):
            names = [n for n, spec in attacks.get("whitebox", {}).items() if spec.get("method") == metric and f"whitebox_{n}" in acc]
            return [f"whitebox_{n}" for n in names], f"white-box {metric.upper()} ({', '.join(names) or 'none'})"
        if metric in ("blackbox", "blackbox_pgd"):
            names = [n for n, spec in attacks.get("blackbox", {}).items() if (metric == "blackbox" or spec.get("method") == "pgd") and f"blackbox_{n}" in acc]
            return [f"blackbox_{n}" for n in names], f"black-box{' PGD' if metric == 'blackbox_pgd' else ''} ({', '.join(names) or 'none'})"
        if metric in acc:
            return [metric], metric
        raise Missing(f"{metric} in the record of {self.id}")

    def result(self, metric: str) -> Result:
        """Per-image results of `metric` (worst case over its attacks), or the aggregate fallback."""
        if metric in ("strongest", "autoattack"):
            audit = self.need_audit()
            decoded = self._decoded("audit")
            if decoded is not None and metric in decoded[1]:
                idx, masks = decoded
                return Result(per_image.percent(masks[metric]), len(idx), masks[metric], idx, f"audit {metric}")
            value = audit.get("accuracy", {}).get(metric)
            if value is None:
                raise Missing(f"{metric} in the audit of {self.id}")
            return Result(float(value), int(audit["n"]), what=f"audit {metric} (aggregate)")
        if metric == "eq4":
            a = self.arrays()
            robust = (a["predictions"] == a["labels"]) & (np.min(a["eps_l_all"], axis=1) > float(a["eps"]))
            return Result(per_image.percent(robust), len(robust), robust, np.arange(len(robust)), "Eq. 4 predicted robust (nearest wrong class)")
        keys, what = self._record_keys(metric)
        if not keys:
            raise Missing(f"a {metric} attack in the record of {self.id}")
        rec = self.need_record()
        decoded = self._decoded("record")
        if decoded is not None and all(k in decoded[1] for k in keys):
            idx, masks = decoded
            mask = np.logical_and.reduce([masks[k] for k in keys])
            return Result(per_image.percent(mask), len(idx), mask, idx, what + (", worst per image" if len(keys) > 1 else ""))
        value = min(float(rec["accuracy"][k]) for k in keys)
        return Result(value, int(rec.get("n_test") or 0), what=what + (", lowest aggregate" if len(keys) > 1 else "") + " (no per-image results)")

    # -- cost

    def training_cost(self) -> tuple[float, str] | None:
        """Total training cost: forward-backward passes (metrics.json), else CPU seconds (cost table); None if neither."""
        if self.metrics and self.metrics.get("training_passes") is not None:
            return float(self.metrics["training_passes"]), "passes"
        if self.cost and self.cost.get("train_loop_cpu_s_per_1k_iter") not in (None, ""):
            return float(self.cost["train_loop_cpu_s_per_1k_iter"]) * float(self.cost.get("k") or self.params["k"]) / 1000.0, "CPU s"
        return None

    def cost_per_iteration(self) -> float | None:
        """Measured CPU seconds per 1,000 training iterations (cost table)."""
        if self.cost and self.cost.get("train_loop_cpu_s_per_1k_iter") not in (None, ""):
            return float(self.cost["train_loop_cpu_s_per_1k_iter"])
        return None


@dataclass
class Group:
    """One grid entry and its seeds (models)."""

    id: str
    models: list[Model]

    @property
    def entry(self) -> dict[str, Any]:
        return {k: v for k, v in self.models[0].entry.items() if k != "seed"}

    @property
    def kind(self) -> str:
        return self.models[0].kind

    @property
    def params(self) -> dict[str, Any]:
        return self.models[0].params

    @property
    def adv_method(self) -> str | None:
        return self.models[0].adv_method

    def trained(self) -> list[Model]:
        """The seeds that trained (collapsed ones are never a robustness result)."""
        return [m for m in self.models if not m.collapsed]

    def label(self) -> str:
        seeds = f", {len(self.models)} seeds" if len(self.models) > 1 else ""
        return f"{plan.defense_label(self.entry)} [{self.id}{seeds}]"


@dataclass
class StudyEvidence:
    """Everything the claims read of one study."""

    study: str
    dataset: str
    eps: float
    units: float
    blackbox_source: str | None
    models: dict[str, Model]
    cost_path: str | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def eps01(self) -> float:
        return self.eps / self.units

    def groups(self) -> list[Group]:
        """Grid entries in grid order, each with its seeds."""
        out: dict[str, list[Model]] = {}
        for m in self.models.values():
            out.setdefault(m.group, []).append(m)
        return [Group(g, ms) for g, ms in out.items()]

    def of_kind(self, *kinds: str, where: Callable[[Group], bool] | None = None, trained: bool = True) -> list[Group]:
        """Groups of these fine kinds (and `where`); `trained`: only those with a seed that trained."""
        groups = [g for g in self.groups() if g.kind in kinds and (where is None or where(g))]
        return [g for g in groups if g.trained()] if trained else groups

    # -- roles (as the figures choose them: study.FIGURES' roles)

    def natural(self) -> Group | None:
        """The natural model: the black-box source when it is natural, else the one with the largest k."""
        groups = self.of_kind("natural")
        for g in groups:
            if self.blackbox_source in {m.id for m in g.models}:
                return g
        return max(groups, key=lambda g: g.params["k"], default=None)

    def pgd_adversarial(self) -> list[Group]:
        """PGD-k adversarially trained groups (no regulariser), strongest first: most steps, largest eps, largest k."""
        groups = self.of_kind("adv", where=lambda g: g.adv_method == "pgd")
        return sorted(groups, key=lambda g: (-g.params["adversarial"]["steps"], -g.params["adversarial"]["eps"], -g.params["k"]))

    def single_step(self) -> list[Group]:
        """Single-step adversarially trained groups (FGSM-RS, N-FGSM)."""
        return self.of_kind("adv", where=lambda g: g.adv_method in SINGLE_STEP)

    def closest(self, kind: str, **target01: float) -> Group | None:
        """The group of `kind` closest to the paper's parameters `target01` (sigma in [0, 1]; log distance, then largest k)."""
        groups = self.of_kind(kind)
        if not groups:
            return None

        def distance(g: Group) -> tuple[float, int]:
            p = plan.params01(g.entry, self.units)
            return (sum(abs(math.log(p[k] / v)) for k, v in target01.items() if p[k] > 0), -g.params["k"])

        return min(groups, key=distance)

    def series(self, vary: str, kinds: Iterable[str], trained: bool = True) -> list[list[Group]]:
        """Sets of 2+ groups of `kinds` equal in every setting but `vary` (alpha, beta, sigma or k), each sorted by it."""
        buckets: dict[str, list[Group]] = {}
        for g in self.of_kind(*kinds, trained=trained):
            p = g.params
            key = json.dumps({k: v for k, v in p.items() if k != vary} | {"kind_family": _family(g.kind)}, sort_keys=True)
            buckets.setdefault(key, []).append(g)
        return [sorted(gs, key=lambda g: g.params[vary]) for gs in buckets.values() if len({g.params[vary] for g in gs}) > 1]


def _family(kind: str) -> str:
    """ls_noise and ls (etc.) are one family when sigma varies to 0; the regulariser names it."""
    return kind.replace("_noise", "").replace("noise", "none")


# ---------------------------------------------------------------- loading


def _cost_rows(path: str | None) -> dict[str, dict[str, Any]]:
    if not path or not Path(path).exists():
        return {}
    with open(path, newline="") as fh:
        return {row["model"]: row for row in csv.DictReader(fh)}


def load(spec: Mapping[str, Any]) -> StudyEvidence:
    """Read a study's artifacts as listed in `spec` (Plan.claims_spec); missing files are noted, not fatal."""
    missing: list[str] = []
    cost = _cost_rows(spec.get("cost"))
    if spec.get("cost") and not cost:
        missing.append(spec["cost"])
    models: dict[str, Model] = {}
    for item in spec["models"]:
        paths = {k: item[k] for k in ("record", "audit", "analysis", "metrics") if item.get(k)}
        for path in paths.values():
            if not Path(path).exists():
                missing.append(path)
        record = _read_json(paths.get("record"))
        entry = dict(item.get("entry") or (record or {}).get("entry") or {})
        if "k" not in entry:
            raise PipelineError(f"claims spec: model {item['model_id']!r} has no grid entry")
        seed = (record or {}).get("train_seed", entry.get("seed", spec.get("seed")))
        group = item.get("group") or (record or {}).get("group") or item["model_id"]
        models[item["model_id"]] = Model(
            item["model_id"], entry, group, seed, paths, record, _read_json(paths.get("audit")), _read_json(paths.get("metrics")),
            cost.get(item["model_id"]),
        )
    return StudyEvidence(
        spec["study"], spec["dataset"], float(spec["eps"]), float(spec.get("pixel_units", 1)), spec.get("blackbox_source"),
        models, spec.get("cost"), missing,
    )
