"""Training step time: the pipeline's train.train_model against a bare PyTorch loop of the same math.

For each architecture and kind of training (natural; label smoothing + noise; logit squeezing
+ noise; PGD-k adversarial training), prints the median time of one training step through
`smoothsqueeze.train.train_model` (the code the pipeline runs, with the study's settings from
config.yaml), the same for a minimal hand-written loop (same model, loss, batch, optimizer,
precision), their ratio, the FLOPs of one step (torch.utils.flop_counter, forward + backward,
attack included) and the achieved FLOP/s against a large matmul's peak measured in the same run.
Then the cost of adversarial training relative to LS + noise, next to the paper's 8x / 41x.

How the pipeline's step is timed without editing train.py: train_model runs k = W + M
iterations on a Dataset whose `scale` (called once per iteration on the batch) drains the
device and stamps the clock when iteration W + 1 begins; the log callback stamps it again at
the last log line (after a `.tolist()` that syncs). Per step = (t_end - t_start) / M, so model
building, warm-up (and compilation) and the final accuracy pass are excluded.

    python benchmarks/bench_train.py                       # the default plan for this device
    python benchmarks/bench_train.py --archs madry_cnn --kinds natural pgd40
    python benchmarks/bench_train.py --fastpaths           # fp32 / bf16 / channels_last / compile
    python benchmarks/bench_train.py --quick               # seconds; checks the script runs
"""
from __future__ import annotations

import contextlib
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import (
    ROOT,
    base_parser,
    count_flops,
    gflops,
    machine_info,
    median,
    now,
    peaks,
    print_table,
    setup,
    sync,
    synthetic_dataset,
    timed,
    write_json,
)
from smoothsqueeze.config import load_config
from smoothsqueeze.data import Dataset
from smoothsqueeze.models import build_model
from smoothsqueeze.train import train_model

#: architecture -> (study in config.yaml whose train settings it uses, image shape, batch size)
ARCHS = {
    "madry_cnn": ("mnist", (1, 28, 28), 50),
    "resnet_small": ("cifar10", (3, 32, 32), 128),
    "wide_resnet": ("cifar10", (3, 32, 32), 128),
}
#: kind -> regularizer / adversary, per study, in the study's pixel units (as config.yaml writes them)
KINDS = {
    "natural": {"mnist": {}, "cifar10": {}},
    "ls_noise": {"mnist": {"alpha": 0.95, "sigma": 0.3}, "cifar10": {"alpha": 0.95, "sigma": 30}},
    "lsq_noise": {"mnist": {"beta": 0.5, "sigma": 0.5}, "cifar10": {"beta": 10, "sigma": 30}},
    "pgd7": {"mnist": {"adversarial": {"steps": 7, "step_size": 0.1, "eps": 0.3}}, "cifar10": {"adversarial": {"steps": 7, "step_size": 2, "eps": 8}}},
    "pgd10": {"mnist": {"adversarial": {"steps": 10, "step_size": 0.05, "eps": 0.3}}, "cifar10": {"adversarial": {"steps": 10, "step_size": 2, "eps": 8}}},
    "pgd40": {"mnist": {"adversarial": {"steps": 40, "step_size": 0.01, "eps": 0.3}}, "cifar10": {"adversarial": {"steps": 40, "step_size": 2, "eps": 8}}},
}
PAPER_RATIO = {7: 8, 40: 41}  # paper: each PGD step costs one forward + backward, so k + 1 times LS training
FASTPATH_VARIANTS = ["fp32", "bf16", "fp32+cl", "bf16+cl"]  # torch.compile: --variants study+compile (minutes to compile on a CPU)


def default_plan(device: torch.device, quick: bool) -> dict[str, list[str]]:
    if quick:
        return {"madry_cnn": ["natural", "ls_noise", "pgd7"], "resnet_small": ["natural", "lsq_noise"]}
    if device.type == "cpu":  # a WRN step is tens of seconds on 2 cores: natural and LS only, 1 timed step
        return {
            "madry_cnn": ["natural", "ls_noise", "lsq_noise", "pgd7", "pgd40"],
            "resnet_small": ["natural", "ls_noise", "lsq_noise", "pgd7", "pgd40"],
            "wide_resnet": ["natural", "ls_noise"],
        }
    return {arch: ["natural", "ls_noise", "lsq_noise", "pgd7", "pgd40"] for arch in ARCHS}


def resolve_variant(variant: str, study_train: dict[str, Any]) -> dict[str, bool]:
    """'study' = config.yaml's amp / channels_last / compile; else tokens fp32|bf16 [+cl] [+compile]."""
    tokens = variant.split("+")
    if tokens[0] == "study":
        flags = {"amp": bool(study_train.get("amp")), "channels_last": bool(study_train.get("channels_last")), "compile": bool(study_train.get("compile"))}
    elif tokens[0] in ("fp32", "bf16"):
        flags = {"amp": tokens[0] == "bf16", "channels_last": False, "compile": False}
    else:
        raise SystemExit(f"unknown variant {variant!r}: use study, fp32 or bf16, optionally +cl and +compile")
    for token in tokens[1:]:
        if token not in ("cl", "compile"):
            raise SystemExit(f"unknown variant token {token!r} in {variant!r}")
        flags["channels_last" if token == "cl" else "compile"] = True
    return flags


def variant_name(flags: dict[str, bool]) -> str:
    return ("bf16" if flags["amp"] else "fp32") + ("+cl" if flags["channels_last"] else "") + ("+compile" if flags["compile"] else "")


def make_settings(arch: str, kind: str, study_train: dict[str, Any], units: float, flags: dict[str, bool], k: int, batch: int) -> dict[str, Any]:
    """Settings as config.resolve_model would give them ([0, 1] pixel units)."""
    study = ARCHS[arch][0]
    entry = KINDS[kind][study]
    adv = entry.get("adversarial")
    # validation_holdout 0: the benchmark's synthetic data is smaller than MNIST's 5,000 held-out images
    train = {**study_train, **flags, "batch_size": batch, "log_every": k, "checkpoint_every": 10**9, "validation_holdout": 0}
    return {
        "study": "bench", "model_id": f"{arch}-{kind}", "dataset": study, "architecture": arch, "seed": 0,
        "alpha": entry.get("alpha", 0), "beta": entry.get("beta", 0), "sigma01": entry.get("sigma", 0) / units, "k": k,
        "adversarial": None if not adv else {"steps": adv["steps"], "step_size01": adv["step_size"] / units, "eps01": adv["eps"] / units, "random_start": True},
        "train": train, "config_entry": entry, "pixel_units": units,
    }


class StampedDataset(Dataset):
    """A Dataset whose `scale` stamps the clock (device drained) when training iteration `start_at` begins."""

    def arm(self, batch: int, start_at: int, device: torch.device) -> None:
        self._batch, self._start_at, self._device, self.calls, self.t_start = batch, start_at, device, 0, None

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == self._batch:  # a training batch (the compile sample before the loop has 2 images)
            self.calls += 1
            if self.calls == self._start_at:
                sync(self._device)
                self.t_start = now()
        return super().scale(x)


def time_pipeline(settings: dict[str, Any], data: Dataset, device: torch.device, warmup: int) -> float:
    """Seconds per step of train_model, iterations warmup+1 .. k."""
    k = settings["k"]
    stamped = StampedDataset(data.x_train, data.y_train, data.x_test, data.y_test, data.max_value)
    stamped.arm(min(settings["train"]["batch_size"], len(data.x_train)), warmup + 1, device)
    t_end: list[float] = []
    messages: list[str] = []

    def log(line: str) -> None:
        if re.match(rf"iter {k}/{k}\b", line):
            t_end.append(now())
        else:
            messages.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        train_model(settings, stamped, Path(tmp), device, log=log)
    if stamped.calls != k or stamped.t_start is None or not t_end:
        raise RuntimeError(f"timing hooks saw {stamped.calls} batches for k={k}; train.py no longer calls data.scale once per iteration")
    for line in messages:
        print(f"  (train_model: {line})", file=sys.stderr)
    return (t_end[0] - stamped.t_start) / (k - warmup)


def crop_flip_bare(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Pad-4 random crop + horizontal flip per image, written independently of train.crop_flip."""
    n, _, h, w = x.shape
    windows = F.pad(x, (pad,) * 4).unfold(2, h, 1).unfold(3, w, 1)  # n, c, 2p+1, 2p+1, h, w
    rows = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    cols = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    out = windows[torch.arange(n, device=x.device), :, rows, cols]
    return torch.where(torch.rand(n, 1, 1, 1, device=x.device) < 0.5, out.flip(3), out)


def pgd_bare(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int) -> torch.Tensor:
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def bare_step_fn(settings: dict[str, Any], data: Dataset, device: torch.device):  # type: ignore[no-untyped-def]
    """One training step of a minimal hand-written loop with the same math as the pipeline."""
    cfg, shape = settings["train"], data.image_shape
    torch.manual_seed(1)
    mf = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    model = build_model(settings["architecture"], shape[0], shape[1], 10).to(device).to(memory_format=mf)
    groups = [
        {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": cfg.get("weight_decay", 0.0)},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if cfg["optimizer"] == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(groups, lr=cfg["lr"])
    else:
        opt = torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0))
    runner = torch.compile(model) if cfg["compile"] else model
    alpha, beta, sigma, adv = settings["alpha"], settings["beta"], settings["sigma01"], settings["adversarial"]
    batch, n = min(cfg["batch_size"], len(data.x_train)), len(data.x_train)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if cfg["amp"] else contextlib.nullcontext()

    def step() -> None:
        idx = torch.randint(0, n, (batch,), device=device)
        x, y = data.x_train[idx].float() / data.max_value, data.y_train[idx]
        if cfg.get("augmentation") == "crop_flip":
            x = crop_flip_bare(x)
        if adv:
            model.eval()
            x = pgd_bare(runner, x, y, adv["eps01"], adv["step_size01"], adv["steps"])
            model.train()
        if sigma:
            x = x + sigma * torch.randn_like(x)
        x = x.contiguous(memory_format=mf)
        with amp:
            logits = runner(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=alpha)
        if beta:
            loss = loss + beta * logits.float().norm(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_bare(step, device: torch.device, warmup: int, measured: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        step()
    return timed(lambda: [step() for _ in range(measured)], device) / measured


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0], repeats=3)
    parser.add_argument("--archs", nargs="+", choices=list(ARCHS), default=None, help="default: a plan that fits the device")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=None)
    parser.add_argument("--variants", nargs="+", default=["study"], help="study, or fp32|bf16 with optional +cl, +compile (e.g. bf16+cl)")
    parser.add_argument("--fastpaths", action="store_true", help=f"natural training of each architecture in {FASTPATH_VARIANTS}")
    parser.add_argument("--target-seconds", type=float, default=None, help="timed seconds per measurement (sets the step count); default 2 (CPU) / 1 (GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 2, 4 with compile)")
    args = parser.parse_args()
    device = setup(args)
    target = args.target_seconds or (0.2 if args.quick else 2.0 if device.type == "cpu" else 1.0)

    plan = default_plan(device, args.quick)
    if args.archs:
        plan = {a: plan.get(a, ["natural", "ls_noise", "lsq_noise", "pgd7", "pgd40"]) for a in args.archs}
    if args.kinds:
        plan = {a: list(args.kinds) for a in plan}
    variants = args.variants
    if args.fastpaths:
        plan, variants = {a: ["natural"] for a in (args.archs or plan)}, FASTPATH_VARIANTS

    config = load_config(ROOT / "config.yaml")
    pk = peaks(device, quick=args.quick)
    print(f"# matmul peak (2048x2048, best of 5): fp32 {gflops(pk['fp32']):.0f} GFLOP/s, bf16 {gflops(pk['bf16']):.0f} GFLOP/s")
    rows: list[dict[str, Any]] = []
    for arch, kinds in plan.items():
        study, shape, batch = ARCHS[arch]
        if args.quick:
            shape, batch = (shape[0], 8, 8) if arch == "madry_cnn" else (shape[0], 16, 16), 8
        study_cfg = config["studies"][study]
        units = study_cfg.get("pixel_units", 1)
        data = synthetic_dataset(shape, batch, 8).to(device)
        for variant in variants:
            flags = resolve_variant(variant, study_cfg["train"])
            for kind in kinds:
                warmup = args.warmup or (4 if flags["compile"] else 1 if (arch == "wide_resnet" and device.type == "cpu") else 2)
                probe = make_settings(arch, kind, study_cfg["train"], units, flags, 1, batch)
                step = bare_step_fn(probe, data, device)
                for _ in range(warmup):
                    step()
                est = timed(step, device)
                flops = count_flops(bare_step_fn({**probe, "train": {**probe["train"], "compile": False}}, data, device))
                measured = max(1, min(200, round(target / est)))
                pipe_t, bare_t = [], []
                for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
                    settings = make_settings(arch, kind, study_cfg["train"], units, flags, warmup + measured, batch)
                    pipe_t.append(time_pipeline(settings, data, device, warmup))
                    bare_t.append(time_bare(bare_step_fn(settings, data, device), device, warmup, measured))
                p, b = median(pipe_t), median(bare_t)
                peak = pk["bf16" if flags["amp"] else "fp32"]
                row = {
                    "arch": arch, "kind": kind, "variant": variant_name(flags), "batch": batch, "steps": measured,
                    "pipeline_ms": 1e3 * p, "bare_ms": 1e3 * b, "ratio": p / b,
                    "paired_ratio": median(x / y for x, y in zip(pipe_t, bare_t)),
                    "gflop_per_step": gflops(flops), "gflops": gflops(flops / p), "pct_peak": 100 * flops / p / peak,
                    "img_per_s": batch / p, "pipeline_all_ms": [1e3 * t for t in pipe_t], "bare_all_ms": [1e3 * t for t in bare_t],
                }
                rows.append(row)
                print(
                    f"{arch:12s} {kind:9s} {row['variant']:14s} pipeline {row['pipeline_ms']:9.1f} ms  bare {row['bare_ms']:9.1f} ms  "
                    f"ratio {row['ratio']:.3f}  {row['gflops']:.0f} GFLOP/s ({row['pct_peak']:.0f}% of peak)",
                    flush=True,
                )

    print_table(
        rows,
        [("arch", "arch", ""), ("kind", "kind", ""), ("variant", "precision", ""), ("batch", "batch", "d"), ("steps", "timed steps", "d"),
         ("pipeline_ms", "pipeline ms/step", ".1f"), ("bare_ms", "bare ms/step", ".1f"), ("ratio", "pipeline/bare", ".3f"),
         ("gflop_per_step", "GFLOP/step", ".2f"), ("gflops", "GFLOP/s", ".0f"), ("pct_peak", "% of peak", ".0f"), ("img_per_s", "img/s", ".0f")],
        title=f"Training step, pipeline vs bare loop (peak fp32 {gflops(pk['fp32']):.0f}, bf16 {gflops(pk['bf16']):.0f} GFLOP/s)",
    )
    ratios = cost_ratios(rows)
    if ratios:
        print_table(
            ratios,
            [("arch", "arch", ""), ("variant", "precision", ""), ("adversary", "adversarial training", ""), ("pipeline", "time ratio (pipeline)", ".1f"),
             ("bare", "time ratio (bare)", ".1f"), ("flops", "FLOP ratio", ".1f"), ("paper", "paper's count (k+1)", "d")],
            title="Cost of adversarial training per step, relative to LS + noise on the same architecture",
        )
    write_json(args.json, {"machine": machine_info(device), "peaks_flops": pk, "rows": rows, "cost_ratios": ratios})


def cost_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for base in (r for r in rows if r["kind"] == "ls_noise"):
        for adv in (r for r in rows if r["kind"].startswith("pgd") and r["arch"] == base["arch"] and r["variant"] == base["variant"]):
            k = int(adv["kind"][3:])
            out.append({
                "arch": base["arch"], "variant": base["variant"], "adversary": f"PGD-{k}",
                "pipeline": adv["pipeline_ms"] / base["pipeline_ms"], "bare": adv["bare_ms"] / base["bare_ms"],
                "flops": adv["gflop_per_step"] / base["gflop_per_step"], "paper": PAPER_RATIO.get(k, k + 1),
            })
    return out


if __name__ == "__main__":
    main()
