"""Training stage: one model per grid point, resumable, with the paper's regularizers.

Objective: cross-entropy on label-smoothed targets + beta * ||z||_2, on images with Gaussian
noise of std sigma, or on PGD adversarial examples (Madry et al.). The whole dataset sits on
the device as one uint8 tensor; batches are drawn, augmented and noised there, and metrics
are accumulated on the device so the loop never waits for the host between log lines.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .artifacts import write_json
from .attacks import pgd
from .checkpoints import load_torch, model_state, save_model, save_torch
from .data import Dataset, load_dataset
from .device import pick_device
from .inference import accuracy
from .losses import training_loss
from .models import build_model
from .provenance import provenance

RESUME_NAME = "resume.pt"


def make_optimizer(model: nn.Module, train_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or momentum SGD; weight decay only on conv / linear weights (Madry's 'DW' variables)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": train_cfg.get("weight_decay", 0.0)}, {"params": rest, "weight_decay": 0.0}]
    if train_cfg["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=train_cfg["lr"])
    return torch.optim.SGD(groups, lr=train_cfg["lr"], momentum=train_cfg.get("momentum", 0.0))


def learning_rate(train_cfg: dict[str, Any], iteration: int, k: int) -> float:
    """Piecewise-constant schedule: lr * gamma^(milestones passed), milestones as fractions of k."""
    passed = sum(iteration >= int(m * k) for m in train_cfg.get("lr_milestones", []))
    return train_cfg["lr"] * train_cfg.get("lr_gamma", 0.1) ** passed


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Zero-pad by `pad`, take a random crop of the original size, flip half the images."""
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


def _maybe_compile(model: nn.Module, enabled: bool, sample: torch.Tensor, log: Callable[[str], None]) -> nn.Module:
    if not enabled:
        return model
    try:
        compiled = torch.compile(model)
        compiled(sample)
        return compiled
    except Exception as err:  # noqa: BLE001 - any compile failure falls back to eager
        log(f"torch.compile unavailable ({type(err).__name__}: {str(err).splitlines()[0][:120]}); running eagerly")
        return model


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_model(
    settings: dict[str, Any],
    data: Dataset,
    work_dir: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model as `settings` (from config.resolve_model) says; resumes from work_dir/resume.pt."""
    cfg, k = settings["train"], settings["k"]
    torch.manual_seed(settings["seed"])
    model = build_model(settings["architecture"], *data.image_shape[:2], data.num_classes).to(device)
    memory_format = torch.channels_last if cfg.get("channels_last") else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator(device=device).manual_seed(settings["seed"])
    sampler = BatchSampler(len(data.x_train), cfg["batch_size"], generator, device)
    history: list[dict[str, float]] = []
    start = 0
    resume_path = work_dir / RESUME_NAME
    if resume_path.exists():
        state = load_torch(resume_path, map_location=device)
        if state.get("settings_key") == _settings_key(settings):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"].cpu())
            sampler.load(state["sampler"])
            history, start = list(state["history"]), int(state["iteration"])
            log(f"resuming from {resume_path} at iteration {start}/{k}")
        else:
            log(f"ignoring {resume_path}: it was written for other settings")
    runner = _maybe_compile(model, cfg.get("compile", False), data.scale(data.x_train[:2]).to(memory_format=memory_format), log)
    alpha, beta, sigma, adv = settings["alpha"], settings["beta"], settings["sigma"], settings["adversarial"]
    log_every, ckpt_every = cfg.get("log_every", 100), cfg.get("checkpoint_every", 1000)
    sums = torch.zeros(3, device=device)  # loss, correct, logit norm; summed on the device
    seen = 0
    tick, tick_iter = time.perf_counter(), start
    model.train()
    for it in range(start, k):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, it, k)
        idx = sampler.next()
        xb, yb = data.scale(data.x_train[idx]), data.y_train[idx]
        if cfg.get("augmentation") == "crop_flip":
            xb = crop_flip(xb, generator)
        if adv:
            model.eval()
            xb = pgd(runner, xb, yb, adv["eps"], adv["step_size"], adv["steps"], "xent", adv["random_start"], generator=generator)
            model.train()
        if sigma:
            xb = xb + sigma * torch.randn(xb.shape, generator=generator, device=device)
            if cfg.get("noise_clip"):
                xb = xb.clamp(0.0, 1.0)
        xb = xb.contiguous(memory_format=memory_format)
        with _autocast(cfg.get("amp", False), device):
            logits = runner(xb)
        loss = training_loss(logits, yb, alpha, beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            sums += torch.stack([loss.detach() * len(yb), (logits.argmax(1) == yb).sum().float(), logits.detach().float().norm(dim=1).sum()])
        seen += len(yb)
        done = it + 1
        if done % log_every == 0 or done == k:
            loss_avg, acc, norm = (sums / max(seen, 1)).tolist()
            if not math.isfinite(loss_avg):
                raise FloatingPointError(f"training loss became {loss_avg} at iteration {done}; lower the learning rate or beta")
            now = time.perf_counter()
            rate = (done - tick_iter) / max(now - tick, 1e-9)
            history.append({"iteration": done, "loss": loss_avg, "accuracy": 100 * acc, "logit_norm": norm, "lr": learning_rate(cfg, it, k)})
            log(
                f"iter {done}/{k} ({100 * done / k:.0f}%) loss {loss_avg:.4f} acc {100 * acc:.1f}% |z| {norm:.2f} "
                f"lr {learning_rate(cfg, it, k):.2g} | {rate:.1f} it/s, eta {_fmt_time((k - done) / max(rate, 1e-9))}"
            )
            sums.zero_()
            seen, tick, tick_iter = 0, now, done
        if done % ckpt_every == 0 and done < k:
            save_torch(
                resume_path,
                {
                    "settings_key": _settings_key(settings),
                    "iteration": done,
                    "model": model_state(model),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "sampler": sampler.state(),
                    "history": history,
                },
            )
    model.eval()
    metrics = {
        "train_accuracy": accuracy(model, data.x_train, data.y_train, data.max_value),
        "test_accuracy": accuracy(model, data.x_test, data.y_test, data.max_value),
        "iterations": k,
        "history": history,
    }
    return model, metrics


def _settings_key(settings: dict[str, Any]) -> str:
    import json

    return json.dumps(settings, sort_keys=True)


def run(settings: dict[str, Any], data_path: str | Path, checkpoint: str | Path, metrics_path: str | Path, settings_path: str | Path, device: str | None = None) -> None:
    """Train, then write the checkpoint, metrics and resolved settings (each atomically)."""
    dev = pick_device(device)
    data = load_dataset(data_path).to(dev)
    work_dir = Path(checkpoint).parent
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"training {settings['study']}/{settings['model_id']} on {dev} ({settings['architecture']}, k={settings['k']})", flush=True)
    started = time.perf_counter()
    model, metrics = train_model(settings, data, work_dir, dev, log=lambda line: print(line, flush=True))
    metrics["wall_seconds"] = time.perf_counter() - started
    save_model(checkpoint, model, settings["architecture"], data.image_shape, data.num_classes)
    write_json(metrics_path, metrics)
    write_json(settings_path, {"settings": settings, "data": str(data_path), "provenance": provenance(dev)})
    (work_dir / RESUME_NAME).unlink(missing_ok=True)
    print(f"done: train {metrics['train_accuracy']:.2f}% test {metrics['test_accuracy']:.2f}% in {metrics['wall_seconds']:.1f} s", flush=True)
