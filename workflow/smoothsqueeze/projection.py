"""Projected device time of a study before it runs: a few timed steps, scaled by the grid.

On the device it runs on, :func:`measure` times, with the study's settings and synthetic images
of the study's shape,

* a few training iterations of every kind of training the grid holds (natural, regularised,
  PGD-k for each k), through the pipeline's own `train.train_model`;
* one gradient step of an attack per image (eval mode, per attack loss) and one forward pass
  per image, on a batch of the study's attack batch size (smaller on a CPU).

:func:`project` multiplies these by the grid: each model's k iterations (plus its final
accuracy pass), its evaluation (clean accuracy, every white-box attack, every black-box set),
its analysis (one gradient per class and image), its gradient-masking audit, and the
black-box sets crafted once per study. The audit is an upper bound: every attack is counted on
every audited image, as if no image were broken early (AutoAttack and the restarts skip
images already broken, so robust models cost close to it, non-robust ones far less).

Figures are device seconds of one job alone on the device; jobs sharing a card (gpu_claim
slots) each run slower, but the card's total work is the same when it was not saturated.
:func:`job_runtime_minutes` turns a job's projected seconds into a Slurm `runtime` with a
margin; :func:`runtime_minutes` reads it back from a written projection CSV.

    python benchmarks/project_cost.py --study mnist --steps 3 --out projection.csv
    python -m smoothsqueeze project --study mnist --config-json '{...resolved config...}' --out p.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .audit.settings import resolve_settings as resolve_audit_settings
from .config import load_config, model_ids, resolve_attack, resolve_model, validate_config, study as study_config
from .data import SHAPES
from .errors import PipelineError

#: Per-model stages, in the order the CSV lists them; the black-box sets are crafted once per study.
STAGES = ("train", "evaluate", "analyze", "audit")
CRAFT = "craft_blackbox"
TOTAL_ROW = "TOTAL"
BLACKBOX_PREFIX = "blackbox:"
NUM_CLASSES = 10
#: Slurm runtime of a job: projected seconds x MARGIN + OVERHEAD_S (start, data, checkpoints), at least MINIMUM_MIN.
MARGIN = 1.5
OVERHEAD_S = 300.0
MINIMUM_MIN = 10
COLUMNS = (
    "study", "model", "kind", "k", "train_s", "evaluate_s", "analyze_s", "audit_s", "craft_s", "total_s", "device_hours",
    *(f"{stage}_runtime_min" for stage in (*STAGES, CRAFT)),
)


@dataclass
class Timings:
    """What one device measured for one study's architecture (seconds)."""

    study: str
    architecture: str
    device: str
    device_name: str
    train_step_s: dict[str, float] = field(default_factory=dict)  # training kind -> s per iteration
    grad_s: dict[str, float] = field(default_factory=dict)  # attack loss -> s per image per gradient step
    forward_s: float = 0.0  # s per image, one eval-mode forward pass
    timed_steps: int = 0
    attack_batch: int = 0
    clock: str = "wall"
    train_batch: int | None = None  # training steps timed at this batch, scaled linearly to the study's (None: the study's)


def train_kind(settings: dict[str, Any]) -> str:
    """Timing class of a resolved model: 'natural', 'regularized', 'pgd<steps>', 'fgsm_rs' or 'nfgsm'."""
    adv = settings.get("adversarial")
    if adv:
        method = adv.get("method", "pgd")
        return f"pgd{adv['steps']}" if method == "pgd" else method
    if settings.get("alpha") or settings.get("beta") or settings.get("sigma01"):
        return "regularized"
    return "natural"


def _counts(config: dict[str, Any], study_name: str) -> dict[str, Any]:
    """Image counts and attack lists of a study, from the resolved config."""
    st = study_config(config, study_name)
    if st["dataset"] not in SHAPES:
        raise PipelineError(f"studies.{study_name}.dataset = {st['dataset']!r}: no known image shape for a projection")
    shape, n_train, n_test = SHAPES[st["dataset"]]
    units = st.get("pixel_units", 1)
    attack = st["attack"]
    n_attack = n_test if attack.get("max_examples") is None else min(attack["max_examples"], n_test)
    analysis = st.get("analysis", {}) or {}
    n_analysis = analysis.get("max_examples", attack.get("max_examples"))
    audit = resolve_audit_settings(st, study_name)
    return {
        "shape": shape, "n_train": n_train, "n_test": n_test, "n_attack": n_attack,
        "n_analysis": n_test if n_analysis is None else min(int(n_analysis), n_test),
        "n_audit": n_test if audit["n_examples"] is None else min(int(audit["n_examples"]), n_test),
        "whitebox": [resolve_attack(a, attack["eps"], units) for a in attack["whitebox"]],
        "blackbox": [resolve_attack(a, attack["eps"], units) for a in st["blackbox"]["attacks"]],
        "audit": audit, "attack_batch": attack.get("batch_size", 500),
    }


def representatives(config: dict[str, Any], study_name: str) -> dict[str, dict[str, Any]]:
    """One resolved model of each training kind in the grid (the first of its kind)."""
    out: dict[str, dict[str, Any]] = {}
    for mid in model_ids(config, study_name):
        settings = resolve_model(config, study_name, mid)
        out.setdefault(train_kind(settings), settings)
    return out


# --------------------------------------------------------------------------- measuring


#: "wall": elapsed time; "cpu": this process's CPU time (a CPU device only: on a shared machine it
#: leaves out the time spent waiting for a core, so with one thread it measures core-seconds).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _clock(name: str, device: Any) -> Callable[[], float]:
    import torch

    if name not in CLOCKS:
        raise PipelineError(f"clock {name!r}: use one of {sorted(CLOCKS)}")
    if name == "cpu" and torch.device(device).type != "cpu":
        raise PipelineError("clock 'cpu' measures CPU work; use the wall clock on a GPU")
    return CLOCKS[name]


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic(shape: tuple[int, ...], n_train: int, n_test: int, seed: int = 0) -> Any:
    """Random uint8 images of `shape`, labels of 10 classes (speed does not depend on the pixels)."""
    import torch

    from .data import Dataset

    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, *shape), generator=gen, dtype=torch.uint8)
    y = torch.arange(n_train + n_test) % NUM_CLASSES
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 255.0)


def time_training(settings: dict[str, Any], device: Any, steps: int = 3, warmup: int = 2, clock: str = "wall") -> float:
    """Seconds per iteration of `train.train_model` with `settings`, after `warmup` iterations.

    Runs k = warmup * (1 + ceil(steps / warmup)) iterations logging every `warmup` (the log line
    syncs the device); the clock runs from the first log line to the last one, so model building,
    warm-up, checkpoint writing and the final accuracy pass are not counted.
    """
    from .train import train_model

    now = _clock(clock, device)
    if steps < 1 or warmup < 1:
        raise PipelineError(f"steps = {steps}, warmup = {warmup}: both must be >= 1")
    k = warmup * (1 + math.ceil(steps / warmup))
    batch = settings["train"]["batch_size"]
    shape = SHAPES[settings["dataset"]][0]
    data = _synthetic(shape, 2 * batch, 16).to(device)
    # No robust check (train.robust_check): it runs every N iterations, not in each timed one, and holds out images.
    train = {**settings["train"], "log_every": warmup, "checkpoint_every": 10**9, "validation_holdout": 0, "robust_check": None}
    timed = {**settings, "k": k, "train": train}
    stamps: list[float] = []

    def log(line: str) -> None:
        if line.startswith("iter "):
            stamps.append(now())

    with tempfile.TemporaryDirectory() as tmp:
        train_model(timed, data, Path(tmp), device, log=log)
    if len(stamps) != k // warmup:
        raise RuntimeError(f"expected {k // warmup} log lines from train_model, saw {len(stamps)}")
    return (stamps[-1] - stamps[0]) / (k - warmup)


def time_attack_parts(
    architecture: str, shape: tuple[int, ...], device: Any, batch: int, losses: list[str], steps: int = 3, clock: str = "wall",
) -> tuple[dict[str, float], float]:
    """(seconds per image per PGD gradient step for each loss, seconds per image per forward pass), eval mode."""
    import torch

    from .attacks import pgd
    from .models import build_model

    now = _clock(clock, device)
    model = build_model(architecture, shape[0], shape[1], NUM_CLASSES).to(device).eval()
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((batch, *shape), generator=gen, device=device)
    y = torch.arange(batch, device=device) % NUM_CLASSES
    grad: dict[str, float] = {}
    for loss in losses:
        pgd(model, x, y, eps=0.1, step_size=0.01, steps=1, loss=loss, random_start=True, generator=gen)  # warm-up
        _sync(device)
        start = now()
        pgd(model, x, y, eps=0.1, step_size=0.01, steps=steps, loss=loss, random_start=True, generator=gen)
        _sync(device)
        grad[loss] = (now() - start) / (steps * batch)
    with torch.no_grad():
        model(x)
        _sync(device)
        start = now()
        for _ in range(steps):
            model(x).argmax(1)
        _sync(device)
    forward = (now() - start) / (steps * batch)
    return grad, forward


def device_name(device: Any) -> str:
    """A readable name of the device ('NVIDIA H100 ...', or the CPU model and thread count)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def measure(
    config: dict[str, Any], study_name: str, device: Any, steps: int = 3, warmup: int = 2,
    attack_batch: int | None = None, log: Callable[[str], None] = print, clock: str = "wall", train_batch: int | None = None,
) -> Timings:
    """Time every training kind and the attack parts a study needs, on `device`.

    `attack_batch` (default: the study's attack batch size on a GPU, at most 64 images on a CPU)
    is the batch the attack and forward timings use; per-image costs are scaled from it.
    `train_batch` (a CPU shortcut for slow models) times training at that batch and scales the
    step time linearly to the study's batch size; None times the study's batch.
    """
    import torch

    counts = _counts(config, study_name)
    st = study_config(config, study_name)
    dev = torch.device(device)
    batch = attack_batch or (counts["attack_batch"] if dev.type == "cuda" else min(counts["attack_batch"], 64))
    _clock(clock, dev)
    timings = Timings(study_name, st["architecture"], str(dev), device_name(dev), timed_steps=steps, attack_batch=batch, clock=clock)
    study_batch = st["train"]["batch_size"]
    if train_batch is not None:
        if train_batch < 1:
            raise PipelineError(f"train batch {train_batch}: must be >= 1")
        train_batch = min(train_batch, study_batch)
        timings.train_batch = train_batch
    for kind, settings in sorted(representatives(config, study_name).items()):
        started = time.perf_counter()
        if train_batch is not None:
            settings = {**settings, "train": {**settings["train"], "batch_size": train_batch}}
        timings.train_step_s[kind] = time_training(settings, dev, steps, warmup, clock) * study_batch / (train_batch or study_batch)
        log(f"  {study_name} {st['architecture']} train {kind}: {1e3 * timings.train_step_s[kind]:.1f} ms/iteration "
            f"(timed in {time.perf_counter() - started:.0f} s)")
    losses = sorted({a["loss"] for a in counts["whitebox"] + counts["blackbox"]} | {"xent", "cw"})
    timings.grad_s, timings.forward_s = time_attack_parts(st["architecture"], counts["shape"], dev, batch, losses, steps, clock)
    log(f"  {study_name} {st['architecture']} attack step per image: "
        + ", ".join(f"{loss} {1e3 * s:.3f} ms" for loss, s in timings.grad_s.items())
        + f"; forward per image {1e3 * timings.forward_s:.4f} ms (batch {batch})")
    return timings


# --------------------------------------------------------------------------- projecting


def attack_seconds(attack: dict[str, Any], n: int, timings: Timings) -> float:
    """One resolved attack on `n` images, then the accuracy pass on its output."""
    grad = timings.grad_s.get(attack["loss"], max(timings.grad_s.values()))
    restarts = max(1, attack.get("restarts", 1))
    per_image = restarts * attack["steps"] * grad + (restarts if restarts > 1 else 0) * timings.forward_s
    return n * (per_image + timings.forward_s)


def audit_seconds(audit: dict[str, Any], n: int, timings: Timings) -> float:
    """Upper bound of one model's audit: every attack runs on every audited image."""
    g_ce, g_cw, fwd = timings.grad_s["xent"], timings.grad_s["cw"], timings.forward_s
    aa = audit["autoattack"]
    attacks = set(aa.get("attacks", ("apgd-ce", "apgd-t", "fab-t", "square")))
    per_image = fwd  # the clean pass
    if "apgd-ce" in attacks:
        per_image += aa["apgd_iter"] * (g_ce + fwd)
    if "apgd-t" in attacks:
        per_image += aa["apgd_iter"] * aa["apgd_t_targets"] * (g_cw + fwd)
    if "fab-t" in attacks:
        per_image += aa["fab_iter"] * aa["fab_targets"] * (g_cw + 2 * fwd)
    if "square" in attacks:
        per_image += aa["square_queries"] * fwd
    pg = audit["pgd"]
    for loss in pg["losses"]:
        per_image += pg["restarts"] * (pg["steps"] * timings.grad_s.get(loss, g_cw) + fwd)
    for steps in audit["sweep_steps"]:
        if not (steps == pg["steps"] and "xent" in pg["losses"]):
            per_image += steps * g_ce + fwd
    per_image += audit["large_eps_steps"] * (g_ce + g_cw) + 2 * fwd
    return n * per_image


def job_runtime_minutes(seconds: float, margin: float = MARGIN, overhead_s: float = OVERHEAD_S, minimum: int = MINIMUM_MIN) -> int:
    """A Slurm `runtime` (minutes) for a job projected to take `seconds` on its device."""
    if not math.isfinite(seconds) or seconds < 0:
        raise PipelineError(f"projected job time {seconds!r} s: must be a finite number >= 0")
    if margin < 1:
        raise PipelineError(f"runtime margin {margin!r}: must be >= 1")
    return max(int(minimum), math.ceil((seconds * margin + overhead_s) / 60.0))


def project(config: dict[str, Any], study_name: str, timings: Timings) -> list[dict[str, Any]]:
    """One row per model, one per black-box set, and a TOTAL row (seconds, device-hours, runtimes)."""
    counts = _counts(config, study_name)
    missing = sorted({train_kind(resolve_model(config, study_name, m)) for m in model_ids(config, study_name)} - set(timings.train_step_s))
    if missing:
        raise PipelineError(f"projection of {study_name!r}: no timing for training kind(s) {missing}; measure this study's timings")
    n_train, n_test, n_attack, fwd = counts["n_train"], counts["n_test"], counts["n_attack"], timings.forward_s
    rows: list[dict[str, Any]] = []
    for mid in model_ids(config, study_name):
        settings = resolve_model(config, study_name, mid)
        kind = train_kind(settings)
        train_s = settings["k"] * timings.train_step_s[kind] + (n_train + n_test) * fwd
        evaluate_s = (n_train + n_attack) * fwd
        evaluate_s += sum(attack_seconds(a, n_attack, timings) for a in counts["whitebox"])
        evaluate_s += len(counts["blackbox"]) * n_attack * fwd
        analyze_s = counts["n_analysis"] * (NUM_CLASSES * timings.grad_s["xent"] + fwd)
        audit_s = audit_seconds(counts["audit"], counts["n_audit"], timings)
        stage_s = {"train": train_s, "evaluate": evaluate_s, "analyze": analyze_s, "audit": audit_s}
        rows.append(_row(study_name, mid, kind, settings["k"], stage_s))
    for attack in counts["blackbox"]:
        rows.append(_row(study_name, BLACKBOX_PREFIX + attack["name"], CRAFT, None, {CRAFT: attack_seconds(attack, n_attack, timings)}))
    total = {stage: sum(r[f"{stage}_s"] or 0.0 for r in rows) for stage in STAGES}
    total[CRAFT] = sum(r["craft_s"] or 0.0 for r in rows)
    rows.append({**_row(study_name, TOTAL_ROW, "", None, total), **{f"{s}_runtime_min": None for s in (*STAGES, CRAFT)}})
    return rows


def _row(study_name: str, model: str, kind: str, k: int | None, stage_s: dict[str, float]) -> dict[str, Any]:
    total = sum(stage_s.values())
    row: dict[str, Any] = {"study": study_name, "model": model, "kind": kind, "k": k}
    for stage in STAGES:
        row[f"{stage}_s"] = stage_s.get(stage)
    row["craft_s"] = stage_s.get(CRAFT)
    row["total_s"] = total
    row["device_hours"] = total / 3600.0
    for stage in (*STAGES, CRAFT):
        row[f"{stage}_runtime_min"] = job_runtime_minutes(stage_s[stage]) if stage in stage_s else None
    return row


def summary_line(rows: list[dict[str, Any]], timings: Timings) -> str:
    """The projection in one line: total device-hours, per stage, and the largest model."""
    total = next(r for r in rows if r["model"] == TOTAL_ROW)
    models = [r for r in rows if r["kind"] not in ("", CRAFT)]
    largest = max(models, key=lambda r: r["total_s"])
    h = lambda s: (s or 0.0) / 3600.0  # noqa: E731
    return (
        f"projection {timings.study} on {timings.device_name}: {total['device_hours']:.1f} device-hours for {len(models)} models "
        f"(train {h(total['train_s']):.1f} h, evaluate {h(total['evaluate_s']):.1f} h, analysis {h(total['analyze_s']):.2f} h, "
        f"black-box sets {h(total['craft_s']):.2f} h, audit <= {h(total['audit_s']):.1f} h); "
        f"largest model {largest['model']} {largest['device_hours']:.1f} h; {timings.timed_steps} timed steps per kind, {timings.clock} clock"
        + (f", training timed at batch {timings.train_batch} and scaled linearly" if timings.train_batch else "")
    )


def write_projection(rows: list[dict[str, Any]], csv_path: str | Path, timings: Timings, line: str | None = None) -> Path:
    """Write the CSV (seconds rounded to 0.1 s) and the summary line beside it (<csv stem>.txt); returns the .txt path."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _fmt(row.get(key)) for key in COLUMNS})
    text_path = csv_path.with_suffix(".txt")
    text_path.write_text((line or summary_line(rows, timings)) + "\n")
    return text_path


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return value


def runtime_minutes(csv_path: str | Path, model: str, stage: str, default: int = 120) -> int:
    """A job's Slurm runtime (minutes) from a projection CSV; `default` when the file or its row is absent.

    `model` is a model id, or 'blackbox:<attack name>' for the craft_blackbox stage.
    """
    if stage not in (*STAGES, CRAFT):
        raise PipelineError(f"stage {stage!r}: not one of {[*STAGES, CRAFT]}")
    path = Path(csv_path)
    if not path.is_file():
        return default
    try:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("model") == model:
                    value = row.get(f"{stage}_runtime_min") or ""
                    return int(value) if value.strip() else default
    except (OSError, ValueError, csv.Error) as err:
        raise PipelineError(f"{path}: unreadable projection ({type(err).__name__}: {err})") from None
    return default


def timings_dict(timings: Timings) -> dict[str, Any]:
    """The timings as plain JSON-ready data."""
    return asdict(timings)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    """The projection command's options, on `parser`."""
    parser.add_argument("--study", nargs="+", required=True, help="studies of the config to project")
    source = parser.add_mutually_exclusive_group(required=default_config is None)
    source.add_argument("--config", default=default_config, help="config file (validated like the workflow's)")
    source.add_argument("--config-json", default=None, help="the config as JSON text (e.g. the workflow's resolved config)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per kind of job")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training iterations before the timed ones")
    parser.add_argument("--attack-batch", type=int, default=None, help="images per timed attack batch (default: the study's on a GPU, <= 64 on a CPU)")
    parser.add_argument("--train-batch", type=int, default=None,
                        help="time training steps at this batch and scale linearly to the study's (a CPU shortcut; default: the study's batch)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a free GPU when present, else the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (CPU device only; with --threads 1, core-seconds not inflated by other load)")
    parser.add_argument("--out", required=True, help="CSV path (the summary line goes beside it, .txt); with several studies it must hold '{study}'")
    parser.add_argument("--json", default=None, help="also write timings, rows and lines of every study to this JSON file")


def _load(args: argparse.Namespace) -> dict[str, Any]:
    if args.config_json is not None:
        try:
            config = json.loads(args.config_json)
        except json.JSONDecodeError as err:
            raise PipelineError(f"--config-json is not valid JSON: {err}") from None
        if not isinstance(config, dict):
            raise PipelineError("--config-json must be a JSON object")
        return validate_config(config)
    return load_config(args.config)


def run(args: argparse.Namespace) -> None:
    """Measure, project and write each study of `args`; print the largest rows and the summary line."""
    if args.steps < 1 or args.warmup < 1:
        raise PipelineError(f"--steps {args.steps} --warmup {args.warmup}: both must be >= 1")
    if len(args.study) > 1 and "{study}" not in args.out:
        raise PipelineError(f"--out {args.out!r}: with several studies it must hold '{{study}}'")
    config = _load(args)
    for name in args.study:
        study_config(config, name)  # an unknown study: one line before anything is timed
    import torch

    from .device import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    print(f"# projecting {', '.join(args.study)} on {device_name(device)} ({device}), {args.steps} timed steps per kind, "
          f"{args.clock} clock", flush=True)
    report: dict[str, Any] = {}
    for name in args.study:
        timings = measure(config, name, device, steps=args.steps, warmup=args.warmup, attack_batch=args.attack_batch, clock=args.clock,
                          train_batch=args.train_batch)
        rows = project(config, name, timings)
        out = Path(args.out.replace("{study}", name))
        line = summary_line(rows, timings)
        text = write_projection(rows, out, timings, line)
        for row in sorted((r for r in rows if r["kind"] not in ("", CRAFT)), key=lambda r: -r["total_s"])[:5]:
            print(f"  {row['model']:40s} {row['kind']:12s} k={row['k']:<8} {row['device_hours']:8.2f} h "
                  f"(train {row['train_s'] / 3600:.2f} h, audit <= {row['audit_s'] / 3600:.2f} h)")
        print(line, flush=True)
        print(f"wrote {out} and {text}")
        report[name] = {"timings": timings_dict(timings), "rows": rows, "line": line, "csv": str(out)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
