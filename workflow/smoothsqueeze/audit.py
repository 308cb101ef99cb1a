"""Gradient-masking audit of one model, and the per-study audit table.

Beyond the paper: later work (Mosbach et al. 2018; Croce & Hein 2020) found the robustness
of label smoothing and logit squeezing to be largely gradient masking. Every model gets, at
the study's eps: AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square; package
`pyautoattack`, imported as `pyautoattack`) with budgets from the study's `audit:` block,
multi-restart PGD on the x-ent and CW losses, a PGD steps sweep, and PGD at a large eps;
then the sanity checks of :mod:`smoothsqueeze.audit_flags`. Every adversarial batch is
checked against its budget (attacks.check_budget).

Command line: `python -m smoothsqueeze audit ...`; the study's table: :mod:`smoothsqueeze.audit_table`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from . import audit_flags as af
from .artifacts import read_json, sha256_file, write_json
from .attacks import check_budget, pgd_restarts
from .attacks import correct


from .audit_settings import AA_ATTACKS, AA_KEYS, DEFAULTS, SETTINGS_SCHEMA, resolve_settings  # noqa: E402,F401 - re-exported


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
) -> tuple[torch.Tensor, list[float]]:
    """Survivor-only PGD (attacks.pgd_restarts) on the clean-correct examples, step size step_factor
    * eps / steps (Madry et al.'s 2.5 eps / steps): the robust mask and the accuracy (%) after each restart."""
    found = pgd_restarts(
        model, x, y, eps, step_factor * eps / steps, steps, loss, restarts,  # type: ignore[arg-type]
        generator=generator, batch_size=batch_size, candidates=correct(model, x, y, batch_size),
    )
    return found.robust, found.curve


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
    strong: dict[str, tuple[int, int, float]] = {}
    for loss in pg["losses"]:
        key = f"pgd_{loss}"
        masks[key], curves[key] = _timed(
            seconds, key, lambda: _pgd(model, x, y, eps, pg["steps"], pg["restarts"], loss, pg["step_factor"], bs, generator)
        )
        strong[key] = (pg["steps"], pg["restarts"], _pct(masks[key]))
    sweep: dict[int, float] = {}
    for steps in sorted(settings["sweep_steps"]):
        if steps == pg["steps"] and "pgd_xent" in curves:
            sweep[steps] = curves["pgd_xent"][0]  # the first restart of pgd_xent is this run
            continue
        key = f"sweep_pgd{steps}_xent"
        masks[key], _ = _timed(seconds, key, lambda: _pgd(model, x, y, eps, steps, 1, "xent", pg["step_factor"], bs, generator))
        sweep[steps] = _pct(masks[key])
    for key, value in masks.items():
        log(f"{key}: {_pct(value):.2f}% ({seconds[key]:.1f} s)")

    large_eps = settings["large_eps01"]
    large: dict[str, float] = {}
    large_mask = clean.clone()
    for loss in ("xent", "cw"):
        mask, _ = _timed(
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
    strongest = clean.clone()
    for mask in masks.values():
        strongest &= mask
    accuracy = {"clean": _pct(clean), **{k: _pct(v) for k, v in masks.items()}}
    accuracy["autoattack"] = _pct(autoattack) if aa_keys else None
    accuracy["strongest"] = _pct(strongest)
    accuracy["large_eps"] = _pct(large_mask)

    claimed = claimed_accuracies(record) if record is not None else {}
    accuracy["strongest_with_record_aggregate"] = min([accuracy["strongest"], *claimed.get("all", {}).values()])

    gradient_keys = [k for k in ("apgd_ce", "apgd_t", "fab_t", "pgd_xent", "pgd_cw") if k in masks]
    only_square = 0
    if "square" in masks and gradient_keys:
        grad_robust = clean.clone()
        for key in gradient_keys:
            grad_robust &= masks[key]
        only_square = int((grad_robust & ~masks["square"]).sum().item())
    z = settings["noise_z"]
    ceiling = _class_ceiling(y) if large_eps >= 0.5 else None
    flags = {
        "blackbox_beats_whitebox": af.blackbox_beats_whitebox(claimed.get("whitebox", {}), claimed.get("blackbox", {}), claimed.get("n", n), z)
        if record is not None
        else af.Flag(False, "not checked: no evaluation record"),
        "square_beats_gradients": af.square_beats_gradients(
            accuracy.get("square"), {k: accuracy[k] for k in gradient_keys}, n, z, only_square
        ),
        "large_eps_not_broken": af.large_eps_not_broken(accuracy["large_eps"], large_eps, settings["large_eps_max_accuracy"], ceiling),
        "more_steps_weaker": af.more_steps_weaker(sweep, strong, n, z),
        "xent_gap": af.xent_gap(
            {k: accuracy[k] for k in ("apgd_ce", "pgd_xent") if k in masks},
            {k: accuracy[k] for k in ("apgd_t", "pgd_cw") if k in masks},
            n, settings["xent_gap_pp"], z,
        ),
        "claimed_overstated": af.claimed_overstated(
            {f"record {k}": claimed[k] for k in ("pgd_xent", "pgd_cw") if claimed.get(k) is not None},
            accuracy["strongest"], n, settings["overstated_pp"], settings["overstated_fraction"], z,
        ),
    }
    for name, flag in flags.items():
        log(f"flag {name}: {'RAISED' if flag.raised else 'ok'} - {flag.evidence}")
    return {
        "n": n,
        "eps01": eps,
        "accuracy": accuracy,
        "claimed": {k: v for k, v in claimed.items() if k != "all"},
        "restart_curves": curves,
        "steps_sweep": [{"steps": k, "accuracy": v} for k, v in sorted(sweep.items())],
        "large_eps": {"eps01": large_eps, "steps": settings["large_eps_steps"], "accuracy": large, "worst": accuracy["large_eps"], "ceiling": ceiling},
        "flags": {name: flags[name].to_dict() for name in af.FLAG_NAMES},
        "masking_suspected": af.masking_suspected(flags),
        "autoattack_warnings": aa_warnings,
        "seconds": seconds,
    }


def _class_ceiling(y: torch.Tensor) -> float:
    """Largest class share (%): what a perfect attack leaves when every image can reach one point."""
    return 100.0 * torch.bincount(y).max().item() / max(len(y), 1) if len(y) else float("nan")


def claimed_accuracies(record: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation record's numbers: the paper's PGD attacks (x-ent, CW) and all white/black-box ones."""
    acc = record.get("accuracy", {})
    whitebox = {k[len("whitebox_") :]: v for k, v in acc.items() if k.startswith("whitebox_")}
    blackbox = {k[len("blackbox_") :]: v for k, v in acc.items() if k.startswith("blackbox_")}
    specs = record.get("attacks", {}).get("whitebox", {})
    out: dict[str, Any] = {"whitebox": whitebox, "blackbox": blackbox, "n": record.get("n_test", 0), "test": acc.get("test")}
    for loss in ("xent", "cw"):
        names = [name for name, spec in specs.items() if spec.get("method") == "pgd" and spec.get("loss") == loss and name in whitebox]
        out[f"pgd_{loss}"] = min((whitebox[name] for name in names), default=None)
        out[f"pgd_{loss}_attacks"] = sorted(names)
    out["training_collapsed"] = bool(record.get("training", {}).get("collapsed", False))
    out["all"] = {**{f"whitebox_{k}": v for k, v in whitebox.items()}, **{f"blackbox_{k}": v for k, v in blackbox.items()}}
    return out


def run(
    spec: Mapping[str, Any], checkpoint: str | Path, data_path: str | Path, record_path: str | Path | None, out: str | Path,
    device: str | None = None,
) -> dict[str, Any]:
    """Audit one stored model; writes one JSON record."""
    from .prologue import open_stage
    from .provenance import provenance

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
