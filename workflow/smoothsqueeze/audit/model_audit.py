"""Gradient-masking audit of one model, and the per-study audit table.

Beyond the paper: later work (Mosbach et al. 2018; Croce & Hein 2020) found the robustness
of label smoothing and logit squeezing to be largely gradient masking. Every model gets, at
the study's eps: AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square; package
`pyautoattack`, imported as `pyautoattack`) with budgets from the study's `audit:` block,
multi-restart PGD on the x-ent and CW losses, a PGD steps sweep, and PGD at a large eps;
then the sanity checks of :mod:`smoothsqueeze.audit.flags`. Every adversarial batch is
checked against its budget (attacks.check_budget).

Command line: `python -m smoothsqueeze audit ...`; the study's table: :mod:`smoothsqueeze.audit.table`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

import numpy as np

from . import flags as af
from ..artifacts import read_json, sha256_file, write_json
from ..attacks import check_budget, correct, pgd_restarts
from ..errors import PipelineError
from ..evidence import intervals as iv
from ..evidence.per_image import encode_results, record_masks, restrict


from .settings import AA_ATTACKS, AA_KEYS, DEFAULTS, SETTINGS_SCHEMA, resolve_settings  # noqa: E402,F401 - re-exported


# --------------------------------------------------------------------------- attacks


class _Collect(logging.Handler):
    """Echo AutoAttack's log lines to stdout (the job log) and keep its warnings."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.warnings: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        print(f"[autoattack] {msg}", flush=True)
        if record.levelno >= logging.WARNING:
            self.warnings[msg] = self.warnings.get(msg, 0) + 1


def run_autoattack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, aa: Mapping[str, Any], batch_size: int, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, int]]:
    """Each AutoAttack attack on every clean-correct example (its 'individual' mode).

    Returns per-attack robust masks, seconds per attack, and AutoAttack's warnings.
    Budgets as AutoAttack's version='standard' except the iteration, target and query
    counts given in `aa`.
    """
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    device = x.device
    runner = AutoAttack(model, attacks=list(aa["attacks"]), version="custom", eps=eps, seed=seed, device=device)
    logger = runner.logger
    runner.apgd = APGDAttack(model, n_iter=aa["apgd_iter"], n_restarts=1, eps=eps, seed=seed, loss="ce", rho=0.75, device=device, logger=logger)
    runner.apgd_targeted = APGDAttack_targeted(
        model, n_iter=aa["apgd_iter"], n_restarts=1, n_target_classes=aa["apgd_t_targets"], eps=eps, seed=seed, rho=0.75, device=device, logger=logger
    )
    runner.fab = FABAttack_PT(model, n_iter=aa["fab_iter"], n_restarts=1, n_target_classes=aa["fab_targets"], eps=eps, seed=seed, device=device)
    # AutoAttack uses resc_schedule=False with its 5000 queries; fewer queries get the schedule rescaled.
    runner.square = SquareAttack(
        model, n_queries=aa["square_queries"], p_init=0.8, n_restarts=1, eps=eps, seed=seed, device=device, resc_schedule=aa["square_queries"] < 5000
    )
    handler = _Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    masks: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    try:
        for name in aa["attacks"]:
            runner.attacks_to_run = [name]
            started = time.perf_counter()
            x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=batch_size)
            check_budget(x, x_adv, eps)
            masks[AA_KEYS[name]] = correct(model, x_adv, y, batch_size)
            seconds[AA_KEYS[name]] = time.perf_counter() - started
    finally:
        logger.removeHandler(handler)
    return masks, seconds, handler.warnings


def _pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, restarts: int, loss: str,
    step_factor: float, batch_size: int, generator: torch.Generator,
) -> tuple[torch.Tensor, list[float], torch.Tensor]:
    """Survivor-only PGD (attacks.pgd_restarts) on the clean-correct examples, step size step_factor
    * eps / steps (Madry et al.'s 2.5 eps / steps): the robust mask, the accuracy (%) after each
    restart, and the robust mask after the first restart alone."""
    found = pgd_restarts(
        model, x, y, eps, step_factor * eps / steps, steps, loss, restarts,  # type: ignore[arg-type]
        generator=generator, batch_size=batch_size, candidates=correct(model, x, y, batch_size),
    )
    return found.robust, found.curve, found.first


def _pct(mask: torch.Tensor) -> float:
    return 100.0 * mask.float().mean().item() if len(mask) else float("nan")


def _timed(seconds: dict[str, float], key: str, fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    out = fn()
    seconds[key] = time.perf_counter() - started
    return out


def audit_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Mapping[str, Any], record: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every audit attack on float images `x` in [0, 1] (on the model's device) and the checks.

    `record` is the model's evaluation record (claimed accuracies, black-box accuracies);
    without it, flag (a) is not checked. Returns the audit part of the record.
    """
    eps, bs, n = settings["eps01"], settings["batch_size"], len(x)
    generator = torch.Generator(device=x.device).manual_seed(settings["seed"])
    masks: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    clean = correct(model, x, y, bs)
    log(f"auditing {n} images at eps {eps:g}: clean {_pct(clean):.2f}%")

    aa_masks, aa_seconds, aa_warnings = run_autoattack(model, x, y, eps, settings["autoattack"], bs, settings["seed"])
    masks.update(aa_masks)
    seconds.update(aa_seconds)
    pg = settings["pgd"]
    curves: dict[str, list[float]] = {}
    firsts: dict[str, torch.Tensor] = {}
    strong: list[str] = []
    for loss in pg["losses"]:
        key = f"pgd_{loss}"
        masks[key], curves[key], firsts[key] = _timed(
            seconds, key, lambda: _pgd(model, x, y, eps, pg["steps"], pg["restarts"], loss, pg["step_factor"], bs, generator)
        )
        strong.append(key)
    sweep: dict[int, float] = {}
    sweep_keys: dict[int, str] = {}
    for steps in sorted(settings["sweep_steps"]):
        key = f"sweep_pgd{steps}_xent"
        if steps == pg["steps"] and "pgd_xent" in firsts:
            masks[key] = firsts["pgd_xent"]  # the first restart of pgd_xent is this run
            seconds[key] = 0.0
        else:
            masks[key], _, _ = _timed(seconds, key, lambda: _pgd(model, x, y, eps, steps, 1, "xent", pg["step_factor"], bs, generator))
        sweep[steps], sweep_keys[steps] = _pct(masks[key]), key
    for key, value in masks.items():
        log(f"{key}: {_pct(value):.2f}% ({seconds[key]:.1f} s)")

    large_eps = settings["large_eps01"]
    large: dict[str, float] = {}
    large_mask = clean.clone()
    for loss in ("xent", "cw"):
        mask, _, _ = _timed(
            seconds, f"large_eps_{loss}",
            lambda: _pgd(model, x, y, large_eps, settings["large_eps_steps"], 1, loss, pg["step_factor"], bs, generator),
        )
        large[loss] = _pct(mask)
        large_mask &= mask
    log(f"large eps {large_eps:g}: {_pct(large_mask):.2f}%")

    aa_keys = [AA_KEYS[a] for a in settings["autoattack"]["attacks"]]
    autoattack = clean.clone()
    for key in aa_keys:
        autoattack &= masks[key]
    strongest_audit = clean.clone()
    for mask in masks.values():
        strongest_audit &= mask
    np_masks = {"clean": clean.cpu().numpy(), **{k: v.cpu().numpy() for k, v in masks.items()}}
    np_masks["large_eps"] = large_mask.cpu().numpy()
    if aa_keys:
        np_masks["autoattack"] = autoattack.cpu().numpy()
    np_masks["strongest_audit"] = strongest_audit.cpu().numpy()

    # The record's attacks on the audited images (a prefix of the record's): the claim, and the
    # per-image strongest attack over the audit's attacks and the record's, on the same images.
    claimed = claimed_results(record, n) if record is not None else None
    strongest = np_masks["strongest_audit"].copy()
    if claimed is not None:
        for section in ("whitebox", "blackbox"):
            for name, mask in claimed[section].items():
                np_masks[f"record_{section}_{name}"] = mask
                strongest &= mask
    np_masks["strongest"] = strongest
    accuracy = {key: _pct_np(mask) for key, mask in np_masks.items() if not key.startswith("record_")}
    accuracy["autoattack"] = accuracy.get("autoattack") if aa_keys else None

    level = settings["level"]
    ceiling = _class_ceiling(y) if large_eps >= 0.5 else None
    claim_attacks = {} if claimed is None else {f"pgd_{loss}": claimed[f"pgd_{loss}_attacks"] for loss in ("xent", "cw")}
    flags = af.flags_from_masks(np_masks, settings, claim_attacks, ceiling)
    paper_pgd = {} if claimed is None else {f"record {k}": claimed[k] for k in ("pgd_xent", "pgd_cw") if claimed.get(k) is not None}
    for name, flag in flags.items():
        log(f"flag {name}: {flag.verdict.upper()} - {flag.evidence}")
    comparisons = {}
    if paper_pgd:
        claim_name, claim_mask = min(paper_pgd.items(), key=lambda kv: _pct_np(kv[1]))
        comparisons["claim_vs_strongest"] = {"claim": claim_name, **iv.paired(claim_mask, strongest, level).to_dict()}
    return {
        "n": n,
        "eps01": eps,
        "accuracy": accuracy,
        "intervals": {key: list(iv.wilson(int(mask.sum()), len(mask), level)) for key, mask in np_masks.items()},
        "claimed": {} if claimed is None else claimed_summary(claimed),
        "comparisons": comparisons,
        "restart_curves": curves,
        "steps_sweep": [{"steps": k, "accuracy": v} for k, v in sorted(sweep.items())],
        "large_eps": {"eps01": large_eps, "steps": settings["large_eps_steps"], "accuracy": large, "worst": accuracy["large_eps"], "ceiling": ceiling},
        "claim_attacks": claim_attacks,
        "flags": {name: flags[name].to_dict() for name in af.FLAG_NAMES},
        "masking_suspected": af.masking_suspected(flags),
        "autoattack_warnings": aa_warnings,
        "seconds": seconds,
        # Which audited images (the first n of the test set) each result got right: one bit per image.
        "per_image": encode_results(np.arange(n), np_masks),
    }


def _pct_np(mask: np.ndarray) -> float:
    return 100.0 * float(np.mean(mask)) if len(mask) else float("nan")


def _class_ceiling(y: torch.Tensor) -> float:
    """Largest class share (%): what a perfect attack leaves when every image can reach one point."""
    return 100.0 * torch.bincount(y).max().item() / max(len(y), 1) if len(y) else float("nan")


def claimed_results(record: Mapping[str, Any], n: int) -> dict[str, Any]:
    """The evaluation record's per-image results: on the first `n` test images (the audited ones)
    `whitebox` and `blackbox` ({attack: mask}), `test`, and `pgd_xent` / `pgd_cw` (the paper's PGD
    attack of that loss with the lowest accuracy there); on all its images `whitebox_all`, `blackbox_all`."""
    indices, masks = record_masks(record)
    if len(indices) < n:
        raise PipelineError(f"the evaluation record of {record.get('model_id', '?')} attacked {len(indices)} images, the audit {n}: "
                            "audit.n_examples must not exceed the evaluation's images")
    on_audited = restrict(indices, masks, np.arange(n))
    section = lambda prefix, ms: {k[len(prefix):]: v for k, v in ms.items() if k.startswith(prefix)}  # noqa: E731
    specs = record.get("attacks", {}).get("whitebox", {})
    out: dict[str, Any] = {
        "whitebox": section("whitebox_", on_audited), "blackbox": section("blackbox_", on_audited),
        "whitebox_all": section("whitebox_", masks), "blackbox_all": section("blackbox_", masks),
        "test": on_audited.get("test"), "n": n, "n_record": len(indices),
        "training_collapsed": bool(record.get("training", {}).get("collapsed", False)),
        "training_overfitted": bool(record.get("training", {}).get("overfitted", False)),
    }
    for loss in ("xent", "cw"):
        names = sorted(name for name, spec in specs.items() if spec.get("method") == "pgd" and spec.get("loss") == loss and name in out["whitebox"])
        out[f"pgd_{loss}"] = min((out["whitebox"][name] for name in names), key=_pct_np, default=None)
        out[f"pgd_{loss}_attacks"] = names
    return out


def claimed_summary(claimed: Mapping[str, Any]) -> dict[str, Any]:
    """The record's numbers on the audited images, as the audit record keeps them (percentages)."""
    pct = lambda m: None if m is None else _pct_np(m)  # noqa: E731
    return {
        "n": claimed["n"], "n_record": claimed["n_record"], "test": pct(claimed["test"]),
        "pgd_xent": pct(claimed["pgd_xent"]), "pgd_cw": pct(claimed["pgd_cw"]),
        "pgd_xent_attacks": claimed["pgd_xent_attacks"], "pgd_cw_attacks": claimed["pgd_cw_attacks"],
        "whitebox": {k: _pct_np(v) for k, v in claimed["whitebox"].items()},
        "blackbox": {k: _pct_np(v) for k, v in claimed["blackbox"].items()},
        "training_collapsed": claimed["training_collapsed"],
    }


def run(
    spec: Mapping[str, Any], checkpoint: str | Path, data_path: str | Path, record_path: str | Path | None, out: str | Path,
    device: str | None = None,
) -> dict[str, Any]:
    """Audit one stored model; writes one JSON record."""
    from ..prologue import open_stage
    from ..provenance import provenance

    started = time.perf_counter()
    settings = spec["settings"]
    stage = open_stage(
        checkpoint, data_path, settings["n_examples"] or None, spec.get("architecture"), device, frozen=True,
        channels_last=bool(spec.get("channels_last")),
    )
    x, y = stage.test_images()
    record = read_json(record_path) if record_path else None
    result = audit_model(stage.model, x, y, settings, record)
    inputs = dict(stage.inputs)
    if record_path:
        inputs.update(record=str(record_path), record_sha256=sha256_file(record_path))
    out_record = {
        **spec.get("info", {}),
        **result,
        "settings": settings,
        "inputs": inputs,
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time(),  # this process's CPU time so far, imports included
        "provenance": provenance(stage.device, "audit"),
    }
    write_json(out, out_record)
    print(f"audit done in {out_record['wall_seconds']:.1f} s: AutoAttack {result['accuracy']['autoattack']}, "
          f"strongest {result['accuracy']['strongest']:.2f}%, masking suspected: {result['masking_suspected']}", flush=True)
    return out_record
