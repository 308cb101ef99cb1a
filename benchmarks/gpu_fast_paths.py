"""The training fast paths that stay off until a GPU run has measured them (gpu_check.py's part 7).

Each variant trains a few steps through the pipeline's own `train_model` (synthetic data of the
study's image shape, the study's settings with one fast path switched on) and reports: ms per
step after warm-up (compile and CUDA-graph recording not counted), the whole call's seconds (they
are), the last logged loss, the largest weight difference from the same run in eager mode (a fast
path that is fast but trains another model must stay off) and whether compilation fell back to
eager. Variants:

- mnist_cnn: Madry's CNN (study mnist, batch 50, fp32): eager, eager + fused optimizer,
  compile (default), compile (reduce-overhead: CUDA graphs), compile (reduce-overhead) with the
  loss compiled in and the fused optimizer;
- wide_resnet: study cifar10's step (bf16 autocast, channels_last): eager, compile (default);
- pgd7_wide_resnet: study cifar10's PGD-7 adversarial-training step: training-time PGD in fp32
  (the default) and under the training forward's bf16 autocast (train.adversarial_amp); and
  `pgd_precision`: the same PGD-7 from the same random start on one batch in both precisions,
  the loss each reaches (scored in fp32) and the share of pixels where they differ.

Without `with_compile` (gpu_check --quick) the compiled variants are listed as skipped: compiling
on a CPU takes tens of seconds each.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from smoothsqueeze.attacks import attack_loss, check_budget, pgd
from smoothsqueeze.config import resolve_model
from smoothsqueeze.data import SHAPES
from smoothsqueeze.models import build_model
from smoothsqueeze.projection import _synthetic
from smoothsqueeze.train import train_model

FALLBACK_MARK = "running eagerly"


@dataclass
class Variant:
    """One fast path to time: the study model it starts from and the train settings it changes."""

    group: str
    name: str
    study: str
    model: str
    train: dict[str, Any] = field(default_factory=dict)
    compiles: bool = False
    #: Rough seconds on a GPU, compilation included: the variant is skipped when the time budget has less left.
    cost_s: float = 20.0


#: In the order they run: the cheap ones and adversarial_amp first, the compiled ones last (compiling
#: the wide ResNet takes minutes), so a tight time budget drops the most expensive figures.
VARIANTS = [
    Variant("mnist_cnn", "eager", "mnist", "natural_k100000", cost_s=10),
    Variant("mnist_cnn", "eager+fused", "mnist", "natural_k100000", {"fused_optimizer": True}, cost_s=10),
    Variant("pgd7_wide_resnet", "fp32 PGD", "cifar10", "pgd7-eps8-step2_k80000", cost_s=30),
    Variant("pgd7_wide_resnet", "adversarial_amp", "cifar10", "pgd7-eps8-step2_k80000", {"adversarial_amp": True}, cost_s=30),
    Variant("wide_resnet", "eager", "cifar10", "natural_k80000", cost_s=20),
    Variant("mnist_cnn", "compile", "mnist", "natural_k100000", {"compile": True}, True, 60),
    Variant("mnist_cnn", "compile:reduce-overhead", "mnist", "natural_k100000", {"compile": True, "compile_mode": "reduce-overhead"}, True, 60),
    Variant("mnist_cnn", "compile:reduce-overhead+loss+fused", "mnist", "natural_k100000",
            {"compile": True, "compile_mode": "reduce-overhead", "compile_loss": True, "fused_optimizer": True}, True, 60),
    Variant("wide_resnet", "compile", "cifar10", "natural_k80000", {"compile": True}, True, 150),
]


def counts(group: str, quick: bool, gpu: bool) -> tuple[int, int, int]:
    """(batch or 0 for the study's, timed steps, warm-up steps) of a variant group."""
    if quick:
        return {"mnist_cnn": (8, 2, 1), "wide_resnet": (2, 1, 1), "pgd7_wide_resnet": (2, 1, 1)}[group]
    if gpu:
        return {"mnist_cnn": (0, 300, 10), "wide_resnet": (0, 30, 5), "pgd7_wide_resnet": (0, 8, 3)}[group]
    return {"mnist_cnn": (0, 20, 3), "wide_resnet": (0, 3, 1), "pgd7_wide_resnet": (0, 2, 1)}[group]


def run_variant(settings: dict[str, Any], device: torch.device, steps: int, warmup: int,
                clock: Callable[[], float] = time.perf_counter) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train `settings` for warm-up + timed steps on synthetic data; (figures, final weights).

    The clock runs between the first and the last log line (each syncs the device), as
    projection.time_training does, so compiling and CUDA-graph recording before it are not counted.
    `clock`: time.process_time on a shared CPU (one thread) counts this process's work only.
    """
    k = warmup * (1 + math.ceil(steps / warmup))
    batch = settings["train"]["batch_size"]
    data = _synthetic(SHAPES[settings["dataset"]][0], 2 * batch, 16).to(device)
    train = {**settings["train"], "log_every": warmup, "checkpoint_every": 10**9, "validation_holdout": 0}
    stamps: list[float] = []
    fallbacks: list[str] = []

    def log(line: str) -> None:
        if line.startswith("iter "):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(clock())
        elif FALLBACK_MARK in line:
            fallbacks.append(line)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, metrics = train_model({**settings, "k": k, "train": train}, data, Path(tmp), device, log=log)
    total_s = time.perf_counter() - started
    figures = {"step_ms": 1e3 * (stamps[-1] - stamps[0]) / (k - warmup), "total_s": total_s, "steps": k - warmup, "warmup": warmup,
               "batch": batch, "final_loss": metrics["history"][-1]["loss"], "fell_back": fallbacks[0] if fallbacks else None}
    weights = {name: p.detach().float().clone() for name, p in model.state_dict().items() if p.is_floating_point()}
    return figures, weights


def weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |a - b| over all floating-point weights and buffers."""
    return max((a[name] - b[name]).abs().max().item() for name in a)


def measure(config: dict[str, Any], device: torch.device, quick: bool, with_compile: bool, fits: Callable[[float], bool],
            say: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    """Every variant that `with_compile` and the time budget (`fits(estimated seconds)`) allow; grouped rows."""
    gpu = device.type == "cuda"
    out: dict[str, list[dict[str, Any]]] = {}
    eager: dict[str, tuple[dict[str, Any], dict[str, torch.Tensor]]] = {}
    for v in VARIANTS:
        batch, steps, warmup = counts(v.group, quick, gpu)
        row: dict[str, Any] = {"variant": v.name, "train": v.train}
        skip = "compile skipped (--quick without --compile)" if v.compiles and not with_compile else None
        if skip is None and not fits(v.cost_s):
            skip = f"skipped: the time budget leaves less than the ~{v.cost_s:.0f} s it needs (run gpu_check.sh --fast-paths-only)"
        if skip is None:
            settings = resolve_model(config, v.study, v.model)
            settings["train"].update(v.train, **({"batch_size": batch} if batch else {}))
            try:
                figures, weights = run_variant(settings, device, steps, warmup)
            except Exception as err:  # noqa: BLE001 - a fast path that fails is a finding, not the end of the check
                skip = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            else:
                row.update(figures)
                if v.group not in eager:
                    eager[v.group] = (figures, weights)
                base, base_weights = eager[v.group]
                row["speedup_vs_first"] = base["step_ms"] / row["step_ms"]
                row["max_weight_diff_vs_first"] = weight_difference(base_weights, weights)
        if skip:
            row["skipped"] = skip
        out.setdefault(v.group, []).append(row)
        say(f"  {v.group} {v.name}: " + (row["skipped"] if skip else
            f"{row['step_ms']:.2f} ms/step (batch {row['batch']}, {row['steps']} timed), {row['speedup_vs_first']:.2f}x the first; "
            f"{row['total_s']:.1f} s in all; loss {row['final_loss']:.4f}, max |dw| vs the first {row['max_weight_diff_vs_first']:.2g}"
            + (f"; FELL BACK: {row['fell_back']}" if row["fell_back"] else "")))
    return out


def pgd_precision(settings: dict[str, Any], device: torch.device, batch: int) -> dict[str, Any]:
    """Training-time PGD of `settings` on one random batch, fp32 vs bf16 autocast, from the same start.

    A fresh model of the study's architecture and init in training mode (as Madry et al. craft
    training-time examples); both results are checked against their budget.
    """
    adv, shape = settings["adversarial"], SHAPES[settings["dataset"]][0]
    torch.manual_seed(0)
    model = build_model(settings["architecture"], shape[0], shape[1], 10, init=settings["train"].get("init", "pytorch")).to(device)
    memory_format = torch.channels_last if settings["train"].get("channels_last") else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    gen = torch.Generator(device=device)
    x = torch.rand((batch, *shape), generator=gen.manual_seed(1), device=device).contiguous(memory_format=memory_format)
    y = torch.arange(batch, device=device) % 10
    out: dict[str, Any] = {"batch": batch, "steps": adv["steps"], "eps01": adv["eps01"]}
    found = {}
    for name, amp in (("fp32", False), ("bf16", True)):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            x_adv = pgd(model, x, y, adv["eps01"], adv["step_size01"], adv["steps"], "xent", True, generator=gen.manual_seed(2))
        check_budget(x, x_adv, adv["eps01"])
        with torch.no_grad():
            out[f"xent_{name}"] = attack_loss(model(x_adv), y, "xent").mean().item()
        found[name] = x_adv
    out["pixels_differ"] = (found["fp32"] != found["bf16"]).float().mean().item()
    out["bf16_dtype"] = str(found["bf16"].dtype)
    return out
