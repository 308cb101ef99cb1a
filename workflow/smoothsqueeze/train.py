"""Training stage: one model per grid point, resumable, with the paper's regularizers.

Objective: cross-entropy on label-smoothed targets + beta * ||z||_2, on images with Gaussian
noise of std sigma, or on adversarial examples: PGD (Madry et al.), FGSM from a random start
(Wong et al. 2020) or N-FGSM (de Jorge et al. 2022), optionally with an eps warm-up and a guard
against catastrophic overfitting (`train.robust_check`). The learning rate follows
`train.lr_schedule` (piecewise milestones, or Wong et al.'s cyclic schedule). The whole dataset
sits on the device as one uint8 tensor; batches are drawn, augmented and noised there, and metrics
are accumulated on the device so the loop never waits for the host between log lines.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import TRAIN_CODE_VERSION
from .artifacts import read_json, remove_stale_temps, sha256_file, write_json
from .attacks import BUDGET_TOLERANCE, AttackBudgetError, budget_excess, check_budget, nfgsm, nfgsm_bound, pgd
from .checkpoints import load_torch, model_state, save_model, save_torch
from .data import Dataset, load_dataset
from .device import pick_device
from .errors import PipelineError
from .inference import accuracy
from .losses import training_loss
from .models import build_model
from .provenance import provenance
from .study import ADV_METHODS, passes_per_iteration, upgrade_legacy_names

RESUME_NAME = "resume.pt"
#: Hidden folder in a model directory with hard links to the finished outputs, so that a
#: model the workflow deletes to redo it is kept (see `_keep_finished` and `_check_finished`).
KEPT_DIR = ".finished"
KEPT_SUMS = "sha256.json"
#: Settings that do not change the trained model: a change of them keeps a resume point / finished model valid.
_NOT_MODEL_SETTINGS = ("config_entry",)
_NOT_MODEL_TRAIN_SETTINGS = ("log_every", "checkpoint_every")
#: Training keys added after models were trained -> the value that trains as the code before them did.
_ADDED_TRAIN_SETTINGS: dict[str, Any] = {"fused_optimizer": False, "compile_mode": "default", "compile_loss": False, "adversarial_amp": False,
                                         "lr_schedule": "piecewise", "robust_check": None}
#: The same for keys of the resolved `adversarial` block (a PGD model trained before the methods existed has neither).
_ADDED_ADVERSARIAL_SETTINGS: dict[str, Any] = {"method": "pgd", "eps_warmup": 0}
#: train.lr_schedule values.
LR_SCHEDULES = ("piecewise", "cyclic")
#: The catastrophic-overfitting rule (train.robust_check): the last check below GUARD_FLOOR % and below
#: GUARD_FRACTION x the best check, which was at least GUARD_FLOOR %.
GUARD_FLOOR = 10.0
GUARD_FRACTION = 0.2
#: The robust check's PGD step: GUARD_STEP_FACTOR * eps / steps (the audit's step_factor).
GUARD_STEP_FACTOR = 2.5
#: train.compile_mode -> torch.compile's `mode` argument.
COMPILE_MODES: dict[str, str | None] = {"default": None, "reduce-overhead": "reduce-overhead", "max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs"}


class TrainingDiverged(PipelineError, FloatingPointError):
    """The training loss became NaN or infinite."""


def make_optimizer(model: nn.Module, train_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or momentum SGD; weight decay only on conv / linear weights (Madry's 'DW' variables).

    `fused_optimizer`: PyTorch's fused kernel (all parameters in one kernel; CPU and CUDA), not its
    per-parameter loop; the same update up to float rounding. A device without one is an error.
    """
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": train_cfg.get("weight_decay", 0.0)}, {"params": rest, "weight_decay": 0.0}]
    fused = {"fused": True} if train_cfg.get("fused_optimizer") else {}
    try:
        if train_cfg["optimizer"] == "adam":
            return torch.optim.Adam(groups, lr=train_cfg["lr"], **fused)
        return torch.optim.SGD(groups, lr=train_cfg["lr"], momentum=train_cfg.get("momentum", 0.0), **fused)
    except RuntimeError as err:
        device = next(model.parameters()).device
        raise PipelineError(f"train.fused_optimizer: no fused {train_cfg['optimizer']} on {device} ({str(err).splitlines()[0][:160]}); set it to false") from None


def learning_rate(train_cfg: dict[str, Any], iteration: int, k: int) -> float:
    """The learning rate of `iteration` (from 0) of k, as train.lr_schedule says.

    piecewise (default): lr * gamma^(milestones passed), milestones as fractions of k.
    cyclic: Wong et al.'s schedule (`cyclic_lr`) at (iteration + 1) / k, as their MNIST code
    evaluates it (lr_schedule(epoch + (i + 1) / len(loader))): the first step is already above 0,
    the last one is at 0.
    """
    schedule = train_cfg.get("lr_schedule", "piecewise")
    if schedule == "cyclic":
        return cyclic_lr(train_cfg["lr"], train_cfg.get("lr_peak", 0.4), (iteration + 1) / k)
    if schedule != "piecewise":
        raise PipelineError(f"train.lr_schedule = {schedule!r}: must be one of {list(LR_SCHEDULES)}")
    passed = sum(iteration >= int(m * k) for m in train_cfg.get("lr_milestones", []))
    return train_cfg["lr"] * train_cfg.get("lr_gamma", 0.1) ** passed


def cyclic_lr(lr: float, peak: float, t: float) -> float:
    """Wong et al.'s cyclic schedule at t in [0, 1] (fraction of training): 0 at t = 0, linear up to
    `lr` at t = `peak`, linear down to 0 at t = 1 (np.interp(t, [0, peak, 1], [0, lr, 0]))."""
    if t <= peak:
        return lr * max(t, 0.0) / peak
    return lr * max(1.0 - t, 0.0) / (1.0 - peak)


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Zero-pad by `pad` per side, take a random crop of the original size, flip half the images.

    Madry et al.'s CIFAR-10 input pipeline pads 32x32 to 36x36 (tf.image.resize_image_with_crop_or_pad),
    i.e. 2 pixels per side, crops 32x32 at random and flips left-right with probability 1/2.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


class BatchSampler:
    """Epoch-wise random permutations drawn from one generator; its state is checkpointable."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> None:
        self.n, self.batch_size, self.generator, self.device = n, min(batch_size, n), generator, device
        self.perm = torch.randperm(n, generator=generator, device=device)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state(self) -> dict[str, Any]:
        return {"perm": self.perm.cpu(), "pos": self.pos}

    def load(self, state: dict[str, Any]) -> None:
        self.perm, self.pos = state["perm"].to(self.device), int(state["pos"])


def _autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


ForwardLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _forward_loss(model: Callable[[torch.Tensor], torch.Tensor], settings: dict[str, Any], device: torch.device) -> ForwardLoss:
    """(loss, logits) of one training batch: the forward under train.amp's autocast, the loss in fp32."""
    cfg = settings["train"]
    amp, squeeze_norm = cfg.get("amp", False), cfg.get("squeeze_norm", "per_example")

    def forward_loss(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _autocast(amp, device):
            logits = model(xb)
        return training_loss(logits, yb, settings["alpha"], settings["beta"], squeeze_norm), logits

    return forward_loss


@contextlib.contextmanager
def _restoring(model: nn.Module):  # type: ignore[no-untyped-def]
    """Undo what a trial step does to `model`: its buffers (batch-norm statistics) and gradients."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.zero_grad(set_to_none=True)


def _maybe_compile(fn: Callable, cfg: dict[str, Any], trial: Callable[[Callable], None], model: nn.Module, log: Callable[[str], None], what: str) -> Callable:
    """torch.compile(fn) with train.compile_mode when train.compile is on, else `fn`.

    `trial` runs the compiled function once (a forward and backward at the training batch's
    shape, with `model`'s buffers and gradients restored after it), so that a failure to
    compile shows here: it is logged in one line and training runs `fn` eagerly.
    """
    if not cfg.get("compile"):
        return fn
    mode = cfg.get("compile_mode", "default")
    try:
        compiled = torch.compile(fn, mode=COMPILE_MODES.get(mode, mode))
        with _restoring(model):
            trial(compiled)
        return compiled
    except Exception as err:  # noqa: BLE001 - any compile failure falls back to eager
        log(f"torch.compile ({what}, mode {mode}) unavailable ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}); running eagerly")
        return fn


def _compiled_runners(model: nn.Module, settings: dict[str, Any], device: torch.device, sample: torch.Tensor, labels: torch.Tensor,
                      log: Callable[[str], None]) -> tuple[Callable[[torch.Tensor], torch.Tensor], ForwardLoss]:
    """(the model as training-time PGD runs it, the training forward + loss), compiled as train.compile* say.

    compile: the model is compiled (PGD and the training forward use it; the loss runs eagerly).
    compile + compile_loss: the model and the loss are compiled as one function for the training
    step (one forward graph, one backward graph); PGD gets the compiled model only when the model
    trains adversarially. The optimizer step stays outside both (train.fused_optimizer: one kernel).
    """
    cfg = settings["train"]

    def step_trial(forward_loss: ForwardLoss) -> None:
        forward_loss(sample, labels)[0].backward()

    if cfg.get("compile") and cfg.get("compile_loss"):
        runner: Callable[[torch.Tensor], torch.Tensor] = model
        if settings["adversarial"]:
            runner = _maybe_compile(model, cfg, lambda m: step_trial(_forward_loss(m, settings, device)), model, log, "model")
        step = _maybe_compile(_forward_loss(model, settings, device), cfg, step_trial, model, log, "model + loss")
        return runner, step
    runner = _maybe_compile(model, cfg, lambda m: step_trial(_forward_loss(m, settings, device)), model, log, "model")
    return runner, _forward_loss(runner, settings, device)


def _adversarial_amp(cfg: dict[str, Any]) -> bool:
    """Whether training-time PGD runs under the training forward's bf16 autocast (train.adversarial_amp), else fp32.

    The projection onto the eps ball and [0, 1] stays fp32 either way (the gradient comes back in
    the images' dtype). adversarial_amp without amp is an error, not a silent no-op.
    """
    if cfg.get("adversarial_amp") and not cfg.get("amp"):
        raise PipelineError("train.adversarial_amp needs train.amp: true (it crafts training-time PGD under the training forward's bf16 autocast)")
    return bool(cfg.get("adversarial_amp"))


def _check_training_budget(worst: torch.Tensor, iteration: int, adv: dict[str, Any] | None = None) -> None:
    """Raise AttackBudgetError when a training-time adversarial batch up to `iteration` left its L-inf bound or [0, 1].

    The bound is the method's own (`_training_attack`): eps for PGD and FGSM-RS, noise_factor * eps +
    step for N-FGSM; the current eps during a warm-up.
    """
    excess = worst.item()
    if excess > BUDGET_TOLERANCE:
        method = (adv or {}).get("method", "pgd")
        name = ADV_METHODS[method].name
        bound = " (N-FGSM's: noise_factor * eps + step)" if method == "nfgsm" else ""
        raise AttackBudgetError(f"a training-time {name} batch before iteration {iteration} left its L-inf ball{bound} or [0, 1] by {excess:.3g}")


def _current_budget(adv: dict[str, Any], iteration: int, k: int) -> tuple[float, float]:
    """(eps, step size) of `iteration` (from 0): the block's own, or with adversarial.eps_warmup both scaled
    by min(1, iteration / (eps_warmup * k)) (0 at the first iteration, full from eps_warmup * k on)."""
    warmup = adv.get("eps_warmup", 0)
    if not warmup:
        return adv["eps01"], adv["step_size01"]
    scale = min(1.0, iteration / (warmup * k))
    return adv["eps01"] * scale, adv["step_size01"] * scale


def _training_attack(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, adv: dict[str, Any],
                     eps: float, step: float, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """The training batch's adversarial examples by adversarial.method, and the L-inf bound they must keep.

    pgd: `steps` steps of `step` (random start as set), projected onto the eps ball and [0, 1].
    fgsm_rs: one such step from a uniform random start (Wong et al.: FGSM-RS), bound eps.
    nfgsm: de Jorge et al.'s N-FGSM (`attacks.nfgsm`), bound noise_factor * eps + step.
    """
    method = adv.get("method", "pgd")
    if method == "pgd":
        return pgd(model, x, y, eps, step, adv["steps"], "xent", adv["random_start"], generator=generator), eps
    if method == "fgsm_rs":
        return pgd(model, x, y, eps, step, 1, "xent", True, generator=generator), eps
    if method == "nfgsm":
        factor = adv.get("noise_factor", 2.0)
        return nfgsm(model, x, y, eps, step, factor, generator=generator), nfgsm_bound(eps, step, factor)
    raise PipelineError(f"adversarial.method = {method!r}: must be one of {list(ADV_METHODS)}")


def _robust_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int, batch_size: int) -> tuple[float, float]:
    """(PGD accuracy, clean accuracy) in % of `model` on the check images: x-ent PGD of `steps` steps of
    2.5 eps / steps from a random start drawn by its own generator (seeded with `seed`: the same start at
    every check; the training's random draws are untouched), in chunks of `batch_size`, model in eval mode."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    robust = clean = 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        x_adv = pgd(model, xb, yb, eps, GUARD_STEP_FACTOR * eps / steps, steps, "xent", True, generator=generator)
        check_budget(xb, x_adv, eps)
        with torch.no_grad():
            robust += int((model(x_adv).argmax(1) == yb).sum())
            clean += int((model(xb).argmax(1) == yb).sum())
    model.train(was_training)
    return 100.0 * robust / len(x), 100.0 * clean / len(x)


def overfitting_verdict(checks: list[dict[str, float]]) -> tuple[bool, str]:
    """Whether the robust check shows catastrophic overfitting, and why (one line).

    Flagged when the last check is below GUARD_FLOOR % and below GUARD_FRACTION x the best check,
    and the best check reached GUARD_FLOOR % (a model that never was robust did not fall).
    """
    if not checks:
        return False, "no robust check ran"
    best = max(checks, key=lambda c: c["accuracy"])
    last = checks[-1]
    floor, fraction = GUARD_FLOOR, GUARD_FRACTION
    fell = best["accuracy"] >= floor and last["accuracy"] < floor and last["accuracy"] < fraction * best["accuracy"]
    if fell:
        return True, (f"catastrophic overfitting: the robust check fell from {best['accuracy']:.1f}% (iteration {best['iteration']}) "
                      f"to {last['accuracy']:.1f}% (iteration {last['iteration']}), below {floor:g}% and below {fraction:g}x its best; "
                      f"the weights kept are those of iteration {best['iteration']}")
    return False, (f"no catastrophic overfitting: last check {last['accuracy']:.1f}% (iteration {last['iteration']}), "
                   f"best {best['accuracy']:.1f}% (iteration {best['iteration']}); flagged only below {floor:g}% and below "
                   f"{fraction:g}x a best of at least {floor:g}%")


def _max_rss_mb() -> float | None:
    """Peak resident memory of this process in MB (Linux and macOS), None where unknown."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    except (ImportError, OSError, ValueError):
        return None


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_model(
    settings: dict[str, Any],
    data: Dataset,
    work_dir: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    data_sha256: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model as `settings` (from config.resolve_model) says; resumes from work_dir/resume.pt.

    The resume point holds everything the loop's result depends on (model, optimizer, the
    generator that draws batches, noise and attack starts, the global RNG, the running log
    sums, the robust check's best weights), so a resumed run ends with the same weights, bit for bit, as an uninterrupted one
    on the CPU (on a GPU, as far as its kernels are deterministic). It is used only when it was written for the same model settings,
    code version and data (`data_sha256`); a key written before the settings named their unit is
    upgraded first (`_upgraded_key`). Otherwise training starts from the beginning.

    With train.robust_check (adversarial training only), the last n_images of the training split
    are held out of training and checked (`_robust_check`) every `every` iterations and at k; the
    model returned holds the weights of its best check (`metrics["guard"]`).
    """
    cfg, k = settings["train"], settings["k"]
    torch.manual_seed(settings["seed"])
    model = build_model(settings["architecture"], *data.image_shape[:2], data.num_classes, init=cfg.get("init", "pytorch")).to(device)
    holdout = int(cfg.get("validation_holdout", 0))
    if holdout >= len(data.x_train):
        raise PipelineError(f"train.validation_holdout = {holdout} leaves no training images (the dataset has {len(data.x_train)})")
    sigma, adv = settings["sigma01"], settings["adversarial"]
    guard = cfg.get("robust_check") if adv else None
    n_check = int(guard["n_images"]) if guard else 0
    if guard and holdout + n_check >= len(data.x_train):
        raise PipelineError(f"train.robust_check.n_images = {n_check} (with validation_holdout {holdout}) leaves no training images "
                            f"(the dataset has {len(data.x_train)})")
    end = len(data.x_train) - n_check  # the robust check's images: the last n_check of the training split, never trained on
    x_train, y_train = data.x_train[holdout:end], data.y_train[holdout:end]
    memory_format = torch.channels_last if cfg.get("channels_last") else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator(device=device).manual_seed(settings["seed"])
    sampler = BatchSampler(len(x_train), cfg["batch_size"], generator, device)
    history: list[dict[str, float]] = []
    start = 0
    resume_path = work_dir / RESUME_NAME
    key = _model_key(settings, data_sha256)
    sums = torch.zeros(3, device=device)  # loss, correct, logit norm; summed on the device
    seen = 0
    best: dict[str, Any] = {"iteration": None, "accuracy": -1.0, "model": None}  # the robust check's best weights (guard only)
    if resume_path.exists():
        state = _read_resume(resume_path, log)
        if state is not None and guard and "guard_best" not in state:
            log(f"ignoring {resume_path}: it holds no robust-check state; training from the start")
            state = None
        if state is not None and _upgraded_key(state.get("key")) == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            sampler.load(state["sampler"])
            history, start = list(state["history"]), int(state["iteration"])
            torch.set_rng_state(state["rng_cpu"])
            if state.get("device_type") == device.type:
                generator.set_state(state["generator"])
                if device.type == "cuda" and state.get("rng_cuda") is not None:
                    torch.cuda.set_rng_state(state["rng_cuda"], device)
            else:
                generator.manual_seed(settings["seed"] + start)
                log(f"{resume_path} was written on {state.get('device_type')}, this run is on {device.type}: "
                    "random draws are reseeded, so this model will not be bit-identical to an uninterrupted run")
            sums, seen = state["sums"].to(device), int(state["seen"])
            if guard:
                best = dict(state["guard_best"])
            log(f"resuming from {resume_path} at iteration {start}/{k}")
        elif state is not None:
            log(f"ignoring {resume_path}: it was written for other settings, data or code; training from the start")
    # A fixed, deterministic batch of the training shape for compile trials (no data or RNG drawn).
    sample = torch.full((sampler.batch_size, *data.image_shape), 0.5, device=device).contiguous(memory_format=memory_format)
    runner, forward_loss = _compiled_runners(model, settings, device, sample, torch.zeros(sampler.batch_size, dtype=torch.long, device=device), log)
    adversarial_amp = _adversarial_amp(cfg)
    worst_excess = torch.zeros((), device=device)  # how far any training-time adversarial batch left its bound (checked at log lines)
    # Madry et al. craft training-time PGD on the training-mode model (batch statistics, and the
    # running averages move with every attack step); "eval" uses the running statistics instead.
    attack_in_train_mode = cfg.get("adversarial_bn_mode", "train") == "train"
    crop_padding = int(cfg.get("crop_padding", 2))
    log_every, ckpt_every = cfg.get("log_every", 100), cfg.get("checkpoint_every", 1000)
    if guard:
        x_check = data.scale(data.x_train[end:]).contiguous(memory_format=memory_format)
        y_check = data.y_train[end:]
        check_every = int(guard["every"])
    tick, tick_iter = time.perf_counter(), start
    model.train()
    for it in range(start, k):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, it, k)
        idx = sampler.next()
        xb, yb = data.scale(x_train[idx]), y_train[idx]
        if cfg.get("augmentation") == "crop_flip":
            xb = crop_flip(xb, generator, crop_padding)
        if adv:
            model.train(attack_in_train_mode)
            eps, step = _current_budget(adv, it, k)
            with _autocast(adversarial_amp, device):
                x_adv, bound = _training_attack(runner, xb, yb, adv, eps, step, generator)
            worst_excess = torch.maximum(worst_excess, budget_excess(xb, x_adv, bound))
            xb = x_adv
            model.train()
        if sigma:
            xb = xb + sigma * torch.randn(xb.shape, generator=generator, device=device)
            if cfg.get("noise_clip"):
                xb = xb.clamp(0.0, 1.0)
        xb = xb.contiguous(memory_format=memory_format)
        loss, logits = forward_loss(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            sums += torch.stack([loss.detach() * len(yb), (logits.argmax(1) == yb).sum().float(), logits.detach().float().norm(dim=1).sum()])
        seen += len(yb)
        done = it + 1
        if adv and (done % log_every == 0 or done % ckpt_every == 0 or done == k):
            _check_training_budget(worst_excess, done, adv)
        checked = bool(guard) and (done % check_every == 0 or done == k)
        if done % log_every == 0 or done == k or checked:  # a check is also a log line: the history holds it
            loss_avg, acc, norm = (sums / max(seen, 1)).tolist()
            if not math.isfinite(loss_avg):
                raise TrainingDiverged(f"training loss became {loss_avg} at iteration {done}; lower the learning rate or beta")
            now = time.perf_counter()
            rate = (done - tick_iter) / max(now - tick, 1e-9)
            line = {"iteration": done, "loss": loss_avg, "accuracy": 100 * acc, "logit_norm": norm, "lr": learning_rate(cfg, it, k)}
            check_text = ""
            if checked:
                robust, clean = _robust_check(model, x_check, y_check, adv["eps01"], int(guard["steps"]), settings["seed"], sampler.batch_size)
                line.update(robust_check=robust, robust_check_clean=clean)
                check_text = f" | check PGD-{guard['steps']} {robust:.1f}% clean {clean:.1f}%"
                if robust > best["accuracy"]:
                    best = {"iteration": done, "accuracy": robust, "model": {name: t.clone() for name, t in model_state(model).items()}}
                    check_text += " (best)"
            history.append(line)
            log(
                f"iter {done}/{k} ({100 * done / k:.0f}%) loss {loss_avg:.4f} acc {100 * acc:.1f}% |z| {norm:.2f} "
                f"lr {learning_rate(cfg, it, k):.2g}{check_text} | {rate:.1f} it/s, eta {_fmt_time((k - done) / max(rate, 1e-9))}"
            )
            sums.zero_()
            seen, tick, tick_iter = 0, now, done
        if done % ckpt_every == 0 or done == k:
            # Also at k: a job killed while writing its outputs then resumes at the end, not at the last checkpoint.
            save_torch(
                resume_path,
                {
                    "key": key,
                    "iteration": done,
                    "model": model_state(model),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "device_type": device.type,
                    "sampler": sampler.state(),
                    "sums": sums.detach().cpu(),
                    "seen": seen,
                    "history": history,
                    **({"guard_best": best} if guard else {}),
                },
            )
    metrics: dict[str, Any] = {}
    if guard:
        metrics["guard"] = _guard_summary(guard, adv, history, best, holdout, end, len(data.x_train))
        metrics["best_iteration"], metrics["best_check_accuracy"] = best["iteration"], best["accuracy"]
        if best["model"] is not None:
            getattr(model, "_orig_mod", model).load_state_dict(best["model"])
        if metrics["guard"]["overfitting_detected"]:
            log(f"WARNING: {metrics['guard']['reason']}")
    model.eval()
    ppi = passes_per_iteration(adv)
    n_checks = sum("robust_check" in line for line in history)
    check_passes = n_checks * int(guard["steps"]) * math.ceil(n_check / sampler.batch_size) if guard else 0
    metrics = {
        "train_accuracy": accuracy(model, x_train, y_train, data.max_value),
        "test_accuracy": accuracy(model, data.x_test, data.y_test, data.max_value),
        "iterations": k,
        "history": history,
        # Forward-backward passes of one training batch (passes_per_iteration: 1, PGD-k k + 1, FGSM-RS / N-FGSM 2);
        # check_passes: the robust checks' forward-backward passes, in chunks of the training batch size.
        "passes_per_iteration": ppi,
        "training_passes": k * ppi,
        "check_passes": check_passes,
        **metrics,
    }
    return model, metrics


def _guard_summary(guard: dict[str, Any], adv: dict[str, Any], history: list[dict[str, Any]], best: dict[str, Any],
                   holdout: int, end: int, n_train: int) -> dict[str, Any]:
    """What metrics.json says of the robust check: its settings, every check, the weights kept and the verdict."""
    checks = [{"iteration": h["iteration"], "accuracy": h["robust_check"], "clean_accuracy": h["robust_check_clean"]}
              for h in history if "robust_check" in h]
    detected, reason = overfitting_verdict(checks)
    eps = adv["eps01"]
    return {
        "overfitting_detected": detected,
        "reason": reason,
        "rule": (f"flagged when the last check is below {GUARD_FLOOR:g}% and below {GUARD_FRACTION:g}x the best check, "
                 f"which reached at least {GUARD_FLOOR:g}%"),
        "check": {**guard, "eps01": eps, "step_size01": GUARD_STEP_FACTOR * eps / int(guard["steps"]), "loss": "xent",
                  "random_start": True, "model_mode": "eval"},
        "images": f"training images {end}..{n_train - 1} (the last {n_train - end} of the training split), held out of training",
        "trained_on": f"training images {holdout}..{end - 1}",
        "checks": checks,
        "best_iteration": best["iteration"],
        "best_check_accuracy": best["accuracy"],
        "last_check_accuracy": checks[-1]["accuracy"] if checks else None,
        "weights": f"those of the best check (iteration {best['iteration']} of {checks[-1]['iteration'] if checks else '?'})",
    }


def _model_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide the trained weights (not how often it logs or checkpoints).

    A training key added after models were trained is left out while it holds the value that
    reproduces the older code (`_ADDED_TRAIN_SETTINGS`; in the adversarial block
    `_ADDED_ADVERSARIAL_SETTINGS`: method pgd, eps_warmup 0), so those models stay valid; so is a key
    that cannot act on this model (`_inert_train_keys`).
    """
    out = {key: value for key, value in settings.items() if key not in _NOT_MODEL_SETTINGS}
    train = {key: value for key, value in settings.get("train", {}).items() if key not in _NOT_MODEL_TRAIN_SETTINGS}
    for key, older_behaviour in _ADDED_TRAIN_SETTINGS.items():
        if train.get(key, older_behaviour) == older_behaviour:
            train.pop(key, None)
    for key in _inert_train_keys(settings):
        train.pop(key, None)
    out["train"] = train
    if isinstance(out.get("adversarial"), dict):
        adv = dict(out["adversarial"])
        for key, older_behaviour in _ADDED_ADVERSARIAL_SETTINGS.items():
            if adv.get(key, older_behaviour) == older_behaviour:
                adv.pop(key, None)
        out["adversarial"] = adv
    return out


def _inert_train_keys(settings: dict[str, Any]) -> set[str]:
    """Training keys that do nothing for this model: compile_mode / compile_loss without compile,
    adversarial_amp and robust_check for a model that does not train on adversarial examples (turning
    them on for a study then keeps its other finished models valid), lr_peak without the cyclic schedule."""
    inert = set()
    train = settings.get("train", {})
    if not train.get("compile"):
        inert |= {"compile_mode", "compile_loss"}
    if not settings.get("adversarial"):
        inert |= {"adversarial_amp", "robust_check"}
    if train.get("lr_schedule", "piecewise") != "cyclic":
        inert.add("lr_peak")
    return inert


def _model_key(settings: dict[str, Any], data_sha256: str | None) -> str:
    return json.dumps({"settings": _model_settings(settings), "code_version": TRAIN_CODE_VERSION, "data_sha256": data_sha256}, sort_keys=True)


def _upgraded_key(key: Any) -> Any:
    """A resume point's key with its settings' legacy names upgraded (`study.upgrade_legacy_names`), as `_model_key` writes it.

    A key that is not such JSON is returned as it is (it then matches no current key).
    """
    try:
        parsed = json.loads(key)
        parsed["settings"] = upgrade_legacy_names(parsed["settings"])
    except (TypeError, ValueError, KeyError):
        return key
    return json.dumps(parsed, sort_keys=True)


def _read_resume(path: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The resume point, or None (logged) when it cannot be used; a resume point is never trusted blindly."""
    try:
        state = load_torch(path, map_location="cpu")
    except PipelineError as err:
        log(f"ignoring {path}: {str(err).removeprefix(f'{path}: ')}; training from the start")
        return None
    needed = ("key", "iteration", "model", "optimizer", "generator", "rng_cpu", "sampler", "sums", "seen", "history")
    if any(name not in state for name in needed):
        log(f"ignoring {path}: written by another version of this code; training from the start")
        return None
    return state


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flat(_model_settings(old)), _flat(_model_settings(new))
    return [f"{key} {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link `src` as `dst` (no extra disk space); copy where the file system has no hard links."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _keep_finished(outputs: dict[str, Path]) -> None:
    """Hard-link the finished outputs into <model dir>/.finished/, out of the workflow's reach.

    Snakemake deletes a job's outputs before it redoes the job (protected() cannot stop that
    for root, who may write read-only files), so these links are what keeps a finished model.
    """
    kept = outputs["checkpoint"].parent / KEPT_DIR
    kept.mkdir(exist_ok=True)
    write_json(kept / KEPT_SUMS, {f"{path.name}.kept": sha256_file(path) for path in outputs.values()})
    for path in (outputs["settings"], outputs["metrics"], outputs["checkpoint"]):  # the checkpoint last: it marks the set complete
        _link_or_copy(path, kept / f"{path.name}.kept")


def _check_finished(
    outputs: dict[str, Path], settings: dict[str, Any], data_sha256: str, log: Callable[[str], None]
) -> bool:
    """Never lose or silently redo a finished model: restore it, or refuse to replace it.

    Returns True when a finished model of the same settings, data and code was restored
    (nothing to train); raises PipelineError when the kept model was made otherwise. Kept
    settings named as before their rename are upgraded first (`study.upgrade_legacy_names`).
    """
    work_dir = outputs["checkpoint"].parent
    kept = work_dir / KEPT_DIR
    kept_files = {name: kept / f"{path.name}.kept" for name, path in outputs.items()}
    if not kept_files["checkpoint"].exists():
        return False
    damaged = _damaged(kept, kept_files)
    if damaged:
        # A hard link shares its file's bytes: a model damaged in place is damaged here too and worth nothing.
        shutil.rmtree(kept)
        log(f"the finished model kept in {kept}/ is damaged ({damaged}) and was removed; training again")
        return False
    try:
        old = read_json(kept_files["settings"])
        old_settings = upgrade_legacy_names(old["settings"])
    except (PipelineError, KeyError, TypeError, ValueError):
        old, old_settings = {}, None
    why = []
    if old_settings is None:
        why.append(f"its {kept_files['settings'].name} is missing or unreadable")
    else:
        why += _differences(old_settings, settings)
        if old.get("data_sha256") not in (None, data_sha256):
            why.append(f"data sha256 {old['data_sha256'][:12]}... -> {data_sha256[:12]}...")
        old_code = old.get("provenance", {}).get("code_version")
        if old_code != TRAIN_CODE_VERSION:
            why.append(f"code version {old_code!r} -> {TRAIN_CODE_VERSION!r}")
    if why:
        raise PipelineError(
            f"{work_dir}: holds a finished model made with other settings ({'; '.join(why)}); it is kept in {kept}/ and "
            f"nothing was retrained. To retrain it, delete {work_dir}; to keep it, set its settings back in the config"
        )
    missing = [path.name for path in kept_files.values() if not path.exists()]
    if missing:
        raise PipelineError(f"{work_dir}: the finished model kept in {kept}/ lacks {missing}; nothing was retrained. To retrain it, delete {work_dir}")
    for name, path in outputs.items():
        if not path.exists():
            _link_or_copy(kept_files[name], path)
        os.utime(path)  # newer than its inputs, so the workflow does not schedule it again
    (work_dir / RESUME_NAME).unlink(missing_ok=True)
    log(
        f"{outputs['checkpoint']}: restored the finished model made with these settings (kept in {kept}/); "
        f"nothing was retrained. To retrain it, delete {work_dir}"
    )
    return True


def _damaged(kept: Path, kept_files: dict[str, Path]) -> str:
    """Why the kept checkpoint is worth nothing ('' when it is intact)."""
    model = kept_files["checkpoint"]
    try:
        expected = read_json(kept / KEPT_SUMS).get(model.name)
    except (PipelineError, AttributeError):
        expected = None
    if expected is not None:
        return "" if sha256_file(model) == expected else f"{model.name} does not match its sha256"
    try:
        load_torch(model)
    except PipelineError as err:
        return str(err)
    return ""


def run(settings: dict[str, Any], data_path: str | Path, checkpoint: str | Path, metrics_path: str | Path, settings_path: str | Path, device: str | None = None) -> None:
    """Train, then write the resolved settings, metrics and checkpoint (each atomically, the checkpoint last).

    A finished model is never lost or silently redone: see `_check_finished`.
    """
    dev = pick_device(device)
    outputs = {"checkpoint": Path(checkpoint), "metrics": Path(metrics_path), "settings": Path(settings_path)}
    work_dir = outputs["checkpoint"].parent
    work_dir.mkdir(parents=True, exist_ok=True)
    for path in outputs.values():
        remove_stale_temps(path.parent, (path.name,))
    remove_stale_temps(work_dir, (RESUME_NAME,))
    data_cpu = load_dataset(data_path, settings.get("dataset"))
    data_sha256 = sha256_file(data_path)
    log = lambda line: print(line, flush=True)  # noqa: E731
    if _check_finished(outputs, settings, data_sha256, log):
        return
    data = data_cpu.to(dev)
    print(f"training {settings['study']}/{settings['model_id']} on {dev} ({settings['architecture']}, k={settings['k']})", flush=True)
    started, started_cpu = time.perf_counter(), time.process_time()
    model, metrics = train_model(settings, data, work_dir, dev, log=log, data_sha256=data_sha256)
    metrics["wall_seconds"] = time.perf_counter() - started
    # CPU seconds of this process (all its threads): unlike wall time, not inflated by other jobs sharing the cores.
    metrics["cpu_seconds"] = time.process_time() - started_cpu
    # This process's peak memory (a job run by the fork server is not what Snakemake's benchmark measures).
    metrics["max_rss_mb"] = _max_rss_mb()
    write_json(outputs["settings"], {"settings": settings, "data": str(data_path), "data_sha256": data_sha256, "provenance": provenance(dev, "train")})
    write_json(outputs["metrics"], metrics)
    # The checkpoint is written last: a later stage reads model.pt only, and it exists only when all outputs do.
    save_model(outputs["checkpoint"], model, settings["architecture"], data.image_shape, data.num_classes)
    _keep_finished(outputs)
    (work_dir / RESUME_NAME).unlink(missing_ok=True)
    print(f"done: train {metrics['train_accuracy']:.2f}% test {metrics['test_accuracy']:.2f}% in {metrics['wall_seconds']:.1f} s", flush=True)
