"""One GPU check (benchmarks/gpu_check.sh runs it): step times, sharing, PGD, real training, projections.

On the device it runs on (a free GPU when present, else the CPU), it measures and prints, and
writes to <out>/gpu_check.json:

1. peak: the best bf16 (and fp32) matmul FLOP/s of this run (the reference for "% of peak");
2. sharing: the MNIST CNN's training step (pipeline's train_model, study mnist's settings)
   in 1, 2 and 4 separate processes at once on the device, each claiming a slot of it through
   gpu_claim (SMOOTHSQUEEZE_GPU_SLOTS=4, a private lock folder): ms per step per process, steps/s
   of all together, and the achieved FLOP/s as % of the bf16 peak;
3. wide ResNet: its training step (study cifar10's settings: bf16 autocast, channels_last) and % of peak;
4. PGD throughput: images/s of the evaluation's PGD on both models (eval mode, attack batch);
5. real training: a few hundred steps of Madry's CNN on Fashion-MNIST (Debian's files from
   /usr/share/datasets/fashion-mnist, or $SMOOTHSQUEEZE_FASHION_MNIST_DIR) when present, else on
   synthetic 28x28 images with learnable class patterns (the output says which), with accuracies;
6. the projection (smoothsqueeze.projection) of the mnist and cifar10 studies on this device;
7. the training fast paths that are off by default until measured on a GPU (gpu_fast_paths.py):
   the MNIST CNN's step eager / compiled (default, reduce-overhead, reduce-overhead with the loss and
   the fused optimizer), the wide ResNet's bf16 + channels_last step eager / compiled, and the PGD-7
   adversarial-training step with training-time PGD in fp32 / under bf16 autocast (adversarial_amp),
   each with its weight difference from eager; parts that would overrun the time limit
   ($GPU_CHECK_TIMEOUT, default 480 s) are skipped and say so (--fast-paths-only runs 1 and 7 alone).

--quick: tiny counts on the CPU (seconds to a minute), the small ResNet in place of the wide one,
synthetic data unless --real-data, no compiling unless --compile: it checks the script runs, figures mean nothing. The JSON is rewritten after every part.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, count_flops, machine_info, matmul_peak, timed  # noqa: F401 - also sets sys.path for a fresh clone

import gpu_fast_paths
import torch
from smoothsqueeze import gpu_claim, projection
from smoothsqueeze import device as ssdevice
from smoothsqueeze.attacks import pgd
from smoothsqueeze.config import load_config, resolve_model
from smoothsqueeze.data import Dataset, fashion_mnist_system_dir, load_dataset, prepare
from smoothsqueeze.device import pick_device
from smoothsqueeze.losses import training_loss
from smoothsqueeze.models import build_model
from smoothsqueeze.train import train_model

SHARING = (1, 2, 4)
SHARING_QUICK = (1, 2)
#: Seconds the check keeps in hand before $GPU_CHECK_TIMEOUT (gpu_check.sh's limit) when it decides to skip a part.
TIMEOUT_MARGIN_S = 30
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def say(line: str) -> None:
    print(line, flush=True)


def quick_overrides() -> dict[str, Any]:
    """Tiny batches for --quick, so a CPU runs every part in seconds. The cifar10 study's wide ResNet is
    replaced by the small ResNet of the same family (resnet_small): one PGD-7 training step of the wide
    one takes seconds on a CPU core, and its projection and fast-path parts took 8 minutes of --quick."""
    return {"studies": {
        "mnist": {"train": {"batch_size": 8}, "attack": {"batch_size": 8}},
        "cifar10": {"architecture": "resnet_small", "train": {"batch_size": 2}, "attack": {"batch_size": 2}},
    }}


def step_flops(settings: dict[str, Any], device: torch.device) -> int:
    """FLOPs of one training step of `settings` (forward + backward, the training PGD's steps included)."""
    from smoothsqueeze.data import SHAPES

    shape = SHAPES[settings["dataset"]][0]
    batch = settings["train"]["batch_size"]
    model = build_model(settings["architecture"], shape[0], shape[1], 10).to(device)
    x = torch.rand((batch, *shape), device=device)
    y = torch.arange(batch, device=device) % 10
    adv = settings["adversarial"]

    def step() -> None:
        xb = x
        if adv:
            xb = pgd(model, x, y, adv["eps01"], adv["step_size01"], adv["steps"], "xent", True)
        loss = training_loss(model(xb), y, settings["alpha"], settings["beta"], settings["train"].get("squeeze_norm", "per_example"))
        loss.backward()

    return count_flops(step)


# ------------------------------------------------------------------ one sharing worker (a subprocess)


def worker(args: argparse.Namespace) -> None:
    """Wait for the other workers, then time the MNIST CNN's training step; print one JSON line."""
    config = load_config(args.config, quick_overrides() if args.quick else None)
    settings = resolve_model(config, "mnist", "natural_k100000")
    device = pick_device(args.device)
    claim = ssdevice._CLAIM
    ready = Path(args.barrier)
    (ready / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 300
    while len(list(ready.glob("ready-*"))) < args.processes:
        if time.monotonic() > deadline:
            raise SystemExit("sharing worker: the other workers never became ready")
        time.sleep(0.01)
    step_s = projection.time_training(settings, device, steps=args.steps, warmup=args.warmup)
    print(json.dumps({"pid": os.getpid(), "device": str(device), "slots": list(claim.slots) if claim is not None else [],
                      "step_ms": 1e3 * step_s}), flush=True)


def sharing(args: argparse.Namespace, counts: tuple[int, ...], flops: int, peak: float, lock_dir: Path) -> list[dict[str, Any]]:
    """The MNIST CNN's step in 1, 2, 4 processes at once on this device, each on a gpu_claim slot."""
    rows = []
    env = {**os.environ, gpu_claim.SLOTS_ENV: str(max(counts)), gpu_claim.LOCK_DIR_ENV: str(lock_dir),
           gpu_claim.JOB_SLOTS_ENV: "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "workflow"), os.environ.get("PYTHONPATH")]))}
    env.pop("SMOOTHSQUEEZE_DEVICE", None)
    for n in counts:
        with tempfile.TemporaryDirectory() as barrier:
            cmd = [sys.executable, __file__, "--worker", "--processes", str(n), "--barrier", barrier, "--config", args.config,
                   "--steps", str(args.share_steps), "--warmup", str(args.warmup)] + (["--quick"] if args.quick else []) \
                + (["--device", args.device] if args.device else [])
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]
            outs = [p.communicate(timeout=600) for p in procs]
        results = []
        for proc, (out, err) in zip(procs, outs):
            if proc.returncode != 0:
                raise SystemExit(f"sharing worker ({n} processes) failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        steps_per_s = sum(1e3 / r["step_ms"] for r in results)
        row = {
            "processes": n, "step_ms_each": [round(r["step_ms"], 3) for r in results],
            "devices": [r["device"] for r in results], "slots": [r["slots"] for r in results],
            "steps_per_s_total": steps_per_s, "pct_bf16_peak": 100 * flops * steps_per_s / peak,
        }
        rows.append(row)
        say(f"  MNIST CNN x{n} processes: {', '.join(f'{t:.2f}' for t in row['step_ms_each'])} ms/step each; "
            f"{steps_per_s:.0f} steps/s in all ({row['pct_bf16_peak']:.2f}% of bf16 peak); devices {row['devices']} slots {row['slots']}")
    base = rows[0]["steps_per_s_total"]
    for row in rows:
        row["throughput_vs_1"] = row["steps_per_s_total"] / base
    return rows


def pgd_throughput(settings: dict[str, Any], config_attack: dict[str, Any], device: torch.device, steps: int, batch: int) -> dict[str, Any]:
    """Images/s of `steps`-step PGD (eval mode, fp32) on a fresh model of the study's architecture."""
    from smoothsqueeze.data import SHAPES

    shape = SHAPES[settings["dataset"]][0]
    model = build_model(settings["architecture"], shape[0], shape[1], 10).to(device).eval()
    x = torch.rand((batch, *shape), device=device)
    y = torch.arange(batch, device=device) % 10
    eps = config_attack["eps"] / settings["pixel_units"]
    pgd(model, x, y, eps, eps / 4, 1, "xent", True)  # warm-up
    seconds = timed(lambda: pgd(model, x, y, eps, eps / 4, steps, "xent", True), device)
    return {"architecture": settings["architecture"], "steps": steps, "batch": batch, "seconds": seconds,
            "images_per_s": batch / seconds, "gradient_steps_per_s": batch * steps / seconds}


def synthetic_28(n_train: int, n_test: int, seed: int = 0) -> Dataset:
    """28x28 uint8 images whose class is a fixed random template plus noise (learnable, unlike pure noise)."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.rand((10, 1, 28, 28), generator=gen)
    y = torch.arange(n_train + n_test) % 10
    x = (0.6 * templates[y] + 0.4 * torch.rand((n_train + n_test, 1, 28, 28), generator=gen)).mul(255).round().to(torch.uint8)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 255.0)


def real_training(device: torch.device, steps: int, work: Path, synthetic: bool) -> dict[str, Any]:
    """`steps` training iterations of Madry's CNN on Fashion-MNIST (or synthetic 28x28 data), Adam 1e-3, batch 50."""
    folder = fashion_mnist_system_dir()
    present = all((folder / name).is_file() for name in FASHION_FILES)
    have = present and not synthetic
    if have:
        npz = work / "fashion_mnist.npz"
        started = time.perf_counter()
        prepare("fashion_mnist", npz, system_dir=folder, download_dir=work / "downloads")
        data, source = load_dataset(npz, "fashion_mnist"), f"Fashion-MNIST from {folder}"
        prep_s = time.perf_counter() - started
    else:
        why = "asked for" if present else f"no Fashion-MNIST files in {folder}"
        data, source, prep_s = synthetic_28(6000, 1000), f"synthetic 28x28 images ({why})", 0.0
    say(f"  real training data: {source}")
    settings = {
        "study": "gpu_check", "model_id": f"fashion_natural_k{steps}", "dataset": "fashion_mnist", "architecture": "madry_cnn",
        "seed": 0, "alpha": 0, "beta": 0, "sigma01": 0, "k": steps, "adversarial": None, "config_entry": {}, "pixel_units": 1,
        "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 50, "weight_decay": 0, "lr_milestones": [], "augmentation": "none",
                  "squeeze_norm": "batch", "init": "madry", "log_every": max(1, steps // 4), "checkpoint_every": 10**9},
    }
    (work / "model").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _, metrics = train_model(settings, data.to(device), work / "model", device, log=lambda line: say(f"    {line}"))
    seconds = time.perf_counter() - started
    return {"data": source, "real_data": have, "steps": steps, "prepare_s": prep_s, "train_s": seconds,
            "train_accuracy": metrics["train_accuracy"], "test_accuracy": metrics["test_accuracy"],
            "ms_per_step_incl_eval": 1e3 * seconds / steps}


def write_report(report: dict[str, Any], out: Path) -> None:
    """(Re)write gpu_check.json: after every part, so a run stopped at its time limit keeps what it measured."""
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


def fast_paths(args: argparse.Namespace, config: dict[str, Any], device: torch.device, deadline: float) -> dict[str, Any]:
    """Part 7: the fast paths that are off by default, each timed against eager (see gpu_fast_paths)."""
    say(f"7. fast paths, off by default until measured on a GPU{'' if args.compile or not args.quick else ' (--quick: compiling skipped)'}:")
    fits = lambda seconds: time.perf_counter() + seconds < deadline  # noqa: E731
    adversarial = resolve_model(config, "cifar10", "pgd7-eps8-step2_k80000")
    precision: dict[str, Any] = {"skipped": "the time budget ran out"}
    if fits(30):
        precision = p = gpu_fast_paths.pgd_precision(adversarial, device, adversarial["train"]["batch_size"])
        say(f"  PGD-{p['steps']} on the wide ResNet (batch {p['batch']}, training mode), fp32 vs bf16 autocast from the same start: "
            f"x-ent reached {p['xent_fp32']:.4f} vs {p['xent_bf16']:.4f}; {100 * p['pixels_differ']:.1f}% of pixels differ; both within budget")
    rows: dict[str, Any] = gpu_fast_paths.measure(config, device, args.quick, args.compile or not args.quick, fits, say)
    rows["pgd_precision"] = precision
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts on the CPU: checks the script runs, figures mean nothing")
    parser.add_argument("--out", default="gpu_check-out", help="folder for gpu_check.json and the projection CSVs")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a free GPU when present, else the CPU)")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--synthetic", action="store_true", help="train on synthetic 28x28 data even when Fashion-MNIST is installed (--quick does)")
    parser.add_argument("--real-data", action="store_true", help="with --quick: train on Fashion-MNIST when installed")
    parser.add_argument("--compile", action="store_true", help="with --quick: also time the torch.compile fast paths (tens of seconds each on a CPU)")
    parser.add_argument("--fast-paths-only", action="store_true", help="run part 1 (the peak) and part 7 (the fast paths) only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--barrier", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.device = args.device or "cpu"
        torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    started = time.perf_counter()
    deadline = started + float(os.environ.get("GPU_CHECK_TIMEOUT", 480)) - TIMEOUT_MARGIN_S
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    args.warmup = args.warmup or (1 if args.quick else 5)
    args.share_steps = 3 if args.quick else 400
    train_steps = 2 if args.quick else 20
    real_steps = 20 if args.quick else 400
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"quick": args.quick, "machine": machine_info(device)}
    say(f"# gpu_check on {report['machine']['device_name']} ({device}), torch {torch.__version__}{' --quick: figures mean nothing' if args.quick else ''}")
    config = load_config(args.config, quick_overrides() if args.quick else None)

    n = 256 if args.quick else (8192 if gpu else 1024)
    peak = {"bf16": matmul_peak(device, torch.bfloat16, n=n, repeats=2 if args.quick else 5),
            "fp32": matmul_peak(device, torch.float32, n=n, repeats=2 if args.quick else 5), "n": n}
    report["peak_flops"] = peak
    say(f"1. matmul peak ({n}x{n}): bf16 {peak['bf16'] / 1e12:.2f} TFLOP/s, fp32 {peak['fp32'] / 1e12:.2f} TFLOP/s")
    write_report(report, out)
    if not args.fast_paths_only:
        other_parts(args, config, device, peak, train_steps, real_steps, report, out)
    report["fast_paths"] = fast_paths(args, config, device, deadline)
    report["wall_s"] = time.perf_counter() - started
    write_report(report, out)
    say(f"gpu_check done in {report['wall_s']:.0f} s; wrote {out / 'gpu_check.json'}")


def other_parts(args: argparse.Namespace, config: dict[str, Any], device: torch.device, peak: dict[str, Any], train_steps: int,
                real_steps: int, report: dict[str, Any], out: Path) -> None:
    """Parts 2-6: sharing, the wide ResNet's step, PGD throughput, real training, the projections."""
    cnn = resolve_model(config, "mnist", "natural_k100000")
    cnn_flops = step_flops(cnn, device)
    say(f"2. MNIST CNN training step (batch {cnn['train']['batch_size']}, {cnn_flops / 1e9:.3f} GFLOP/step), processes sharing {device}:")
    with tempfile.TemporaryDirectory() as locks:
        report["mnist_cnn_sharing"] = sharing(args, SHARING_QUICK if args.quick else SHARING, cnn_flops, peak["bf16"], Path(locks))
    write_report(report, out)

    wrn = resolve_model(config, "cifar10", "natural_k80000")
    wrn_flops = step_flops(wrn, device)
    wrn_s = projection.time_training(wrn, device, steps=train_steps, warmup=1 if args.quick else 3)
    report["wide_resnet"] = {"batch": wrn["train"]["batch_size"], "amp": bool(wrn["train"].get("amp")),
                             "channels_last": bool(wrn["train"].get("channels_last")), "step_ms": 1e3 * wrn_s,
                             "gflop_per_step": wrn_flops / 1e9, "pct_bf16_peak": 100 * wrn_flops / wrn_s / peak["bf16"]}
    w = report["wide_resnet"]
    say(f"3. wide ResNet training step{' (--quick: the small ResNet)' if args.quick else ''} (batch {w['batch']}, bf16 {w['amp']}, channels_last {w['channels_last']}): "
        f"{w['step_ms']:.1f} ms, {w['gflop_per_step']:.1f} GFLOP/step, {w['pct_bf16_peak']:.1f}% of bf16 peak")
    write_report(report, out)

    report["pgd"] = [
        pgd_throughput(cnn, config["studies"]["mnist"]["attack"], device, 2 if args.quick else 40, config["studies"]["mnist"]["attack"]["batch_size"]),
        pgd_throughput(wrn, config["studies"]["cifar10"]["attack"], device, 2 if args.quick else 20, config["studies"]["cifar10"]["attack"]["batch_size"]),
    ]
    for row in report["pgd"]:
        say(f"4. PGD-{row['steps']} on {row['architecture']} (batch {row['batch']}): {row['images_per_s']:.0f} images/s, "
            f"{row['gradient_steps_per_s']:.0f} image-gradient steps/s")
    write_report(report, out)

    with tempfile.TemporaryDirectory() as work:
        say(f"5. real training, {real_steps} steps of Madry's CNN at 28x28:")
        synthetic = args.synthetic or (args.quick and not args.real_data)
        report["real_training"] = r = real_training(device, real_steps, Path(work), synthetic)
    say(f"   {r['steps']} steps in {r['train_s']:.1f} s ({r['ms_per_step_incl_eval']:.2f} ms/step incl. the final accuracy pass): "
        f"train {r['train_accuracy']:.1f}%, test {r['test_accuracy']:.1f}% on {r['data']}")
    write_report(report, out)

    report["projection"] = {}
    for name in ("mnist", "cifar10"):
        timings = projection.measure(config, name, device, steps=1 if args.quick else 10, warmup=1 if args.quick else 3,
                                     attack_batch=2 if args.quick else None, log=lambda line: say(f"  {line.strip()}"))
        rows = projection.project(config, name, timings)
        line = projection.summary_line(rows, timings)
        projection.write_projection(rows, out / f"projection-{name}.csv", timings, line)
        report["projection"][name] = {"line": line, "total_device_hours": rows[-1]["device_hours"],
                                      "timings": projection.timings_dict(timings), "csv": str(out / f"projection-{name}.csv")}
        say(f"6. {line}")
        write_report(report, out)


if __name__ == "__main__":
    main()
