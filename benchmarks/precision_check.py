"""bf16 autocast vs fp32 training on a short CIFAR-shaped run with label smoothing 0.95 + noise.

The cifar10 study trains under bf16 autocast (`train.amp: true`), while Madry et al. trained in
fp32. With label smoothing alpha = 0.95 the loss is minimised at a small logit gap (about 0.4 for
10 classes), so rounding could matter. This script trains the same model twice with the
pipeline's own `train_model` (same seed, same data, same batches): the cifar10 study's recipe
from config.yaml (momentum SGD, its lr schedule over k, weight decay, batch 128, pad-4 crop +
flip, `channels_last` as the study has it), once with `amp: false`, once with `amp: true`.

Model: `resnet_small` by default (`--arch wide_resnet` for the study's own network; slow on a
CPU). Training: alpha 0.95 and Gaussian noise of std `--sigma` (default 20/255, in 1/255 units:
the smallest noise the paper pairs with alpha 0.95 on CIFAR-10, Tables 6/7 row 10).

Data: real images made CIFAR-shaped by `cifar_shaped`: grey images are replicated to 3 channels,
28x28 images (Fashion-MNIST, MNIST) are zero-padded by 2 pixels to 32x32, other sizes (8x8
digits) are first resized bilinearly to 28x28; pixels become uint8 0..255. Default data:
data/fashion_mnist.npz when present, else data/digits.npz.

Reported for both precisions: final training accuracy (last logged window, noisy batches, and
the whole training set clean), test accuracy, the median logit gap z_y - max_{j != y} z_j on the
test set and the mean logit norm ||z||_2, all computed in fp32 (the median gap under bf16
autocast inference too), and the per-image agreement of the two models' test predictions.

"Agree" means: test accuracies within 1 point AND median test logit gaps within 10% of the fp32
model's. With `--seed-control` a third model (fp32, seed + 1) is trained and compared with the
fp32 one by the same figures, which shows how far two fp32 runs differ by the seed alone: a bf16
difference of that size is noise, not precision.

    python benchmarks/precision_check.py                       # default data, resnet_small, k 300
    python benchmarks/precision_check.py --data data/digits.npz --k 400 --seed-control
    python benchmarks/precision_check.py --arch wide_resnet --device cuda --k 2000
    python benchmarks/precision_check.py --quick --data data/digits.npz
"""
from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401  (puts workflow/ on sys.path in a fresh clone)
import torch
import torch.nn.functional as F
from common import ROOT, machine_info, print_table, write_json
from smoothsqueeze import config as sscfg
from smoothsqueeze.data import Dataset, load_dataset
from smoothsqueeze.train import train_model

ALPHA = 0.95
DEFAULT_SIGMA_255 = 20.0
DEFAULT_K = 300
#: The "agree" rule (module docstring).
ACC_POINTS = 1.0
GAP_RELATIVE = 0.10
QUICK = {"k": 3, "n_train": 256, "n_test": 128}


def cifar_shaped(data: Dataset) -> Dataset:
    """`data` as 3x32x32 uint8 images in 0..255 (see the module docstring); 3x32x32 data passes through, rescaled to 0..255."""

    def convert(x: torch.Tensor) -> torch.Tensor:
        x = x.float() / data.max_value
        if x.shape[1] not in (1, 3):
            raise SystemExit(f"images with {x.shape[1]} channels cannot be made CIFAR-shaped")
        if tuple(x.shape[2:]) != (32, 32):
            if tuple(x.shape[2:]) != (28, 28):
                x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
            x = F.pad(x, (2, 2, 2, 2))  # zero (black) border, as MNIST's own
        x = x.expand(-1, 3, -1, -1)
        return (x * 255).round().clamp(0, 255).to(torch.uint8).contiguous()

    return Dataset(convert(data.x_train), data.y_train, convert(data.x_test), data.y_test, 255.0)


def subset(data: Dataset, n_train: int | None, n_test: int | None) -> Dataset:
    return Dataset(data.x_train[:n_train], data.y_train[:n_train], data.x_test[:n_test], data.y_test[:n_test], data.max_value)


def make_settings(config: dict[str, Any], study: str, arch: str, sigma_255: float, k: int, amp: bool, seed: int | None) -> dict[str, Any]:
    """Settings as `config.resolve_model` gives them for an alpha-0.95 + noise model of `study`, with `amp` set."""
    cfg = copy.deepcopy(config)
    units = cfg["studies"][study].get("pixel_units", 1)
    entry = {"alpha": ALPHA, "sigma": sigma_255 / 255 * units, "k": k}
    cfg["studies"][study]["grid"] = [entry]
    settings = sscfg.resolve_model(cfg, study, sscfg.model_id(entry))
    settings["architecture"] = arch
    if seed is not None:
        settings["seed"] = seed
    settings["train"].update(amp=amp, compile=False, log_every=max(1, k // 10), checkpoint_every=10**9)
    return settings


@torch.no_grad()
def logit_stats(model: torch.nn.Module, data: Dataset, bf16: bool = False, batch: int = 500) -> dict[str, torch.Tensor]:
    """Test-set logits (fp32, or under bf16 autocast when `bf16`), their predictions, gaps z_y - max_{j != y} z_j and norms."""
    model.eval()
    device = next(model.parameters()).device
    logits = []
    for start in range(0, len(data.x_test), batch):
        xb = data.scale(data.x_test[start : start + batch].to(device))
        if bf16:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                logits.append(model(xb).float())
        else:
            logits.append(model(xb).float())
    z = torch.cat(logits).cpu()
    y = data.y_test.cpu()
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    return {"pred": z.argmax(1), "gap": true - other, "norm": z.norm(dim=1), "correct": z.argmax(1) == y}


def train_one(name: str, settings: dict[str, Any], data: Dataset, device: torch.device) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    lines: list[str] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="precision_check.") as tmp:
        model, metrics = train_model(settings, data, Path(tmp), device, log=lines.append)
    seconds = time.perf_counter() - start
    stats = logit_stats(model, data)
    gap_bf16 = logit_stats(model, data, bf16=True)["gap"]
    last = metrics["history"][-1]
    row = {
        "run": name, "amp": settings["train"]["amp"], "seed": settings["seed"],
        "train_accuracy": last["accuracy"], "train_accuracy_clean": metrics["train_accuracy"], "test_accuracy": metrics["test_accuracy"],
        "final_loss": last["loss"], "median_gap": stats["gap"].median().item(), "mean_gap": stats["gap"].mean().item(),
        "median_gap_bf16_eval": gap_bf16.median().item(), "mean_logit_norm": stats["norm"].mean().item(), "seconds": seconds,
        "history": metrics["history"],
    }
    print(
        f"  {name:14s} train {row['train_accuracy']:5.1f}%  test {row['test_accuracy']:5.1f}%  median gap {row['median_gap']:.4f}  "
        f"|z| {row['mean_logit_norm']:.3f}  {seconds:.1f} s",
        flush=True,
    )
    return row, stats


def compare(name: str, ref: tuple[dict[str, Any], dict[str, torch.Tensor]], other: tuple[dict[str, Any], dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Differences of `other` from `ref` and the "agree" rule of the module docstring."""
    (r, rs), (o, os_) = ref, other
    acc_diff = o["test_accuracy"] - r["test_accuracy"]
    gap_rel = (o["median_gap"] - r["median_gap"]) / abs(r["median_gap"]) if r["median_gap"] else math.inf
    return {
        "comparison": name, "test_accuracy_diff": acc_diff, "median_gap_rel_diff": gap_rel,
        "prediction_agreement": 100.0 * (rs["pred"] == os_["pred"]).float().mean().item(),
        "both_correct": 100.0 * (rs["correct"] & os_["correct"]).float().mean().item(),
        "agree": abs(acc_diff) <= ACC_POINTS and abs(gap_rel) <= GAP_RELATIVE,
    }


RUN_TABLE = [
    ("run", "run", ""), ("train_accuracy", "train acc (last window) %", ".1f"), ("train_accuracy_clean", "train acc clean %", ".1f"),
    ("test_accuracy", "test acc %", ".1f"), ("final_loss", "final loss", ".4f"), ("median_gap", "median gap (fp32)", ".4f"),
    ("median_gap_bf16_eval", "median gap (bf16 eval)", ".4f"), ("mean_logit_norm", "mean logit norm", ".3f"), ("seconds", "seconds", ".1f"),
]
CMP_TABLE = [
    ("comparison", "comparison", ""), ("test_accuracy_diff", "test acc diff (points)", "+.2f"), ("median_gap_rel_diff", "median gap rel diff", "+.1%"),
    ("prediction_agreement", "same prediction %", ".1f"), ("both_correct", "both correct %", ".1f"), ("agree_text", "agree", ""),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default=None, help="a prepared dataset .npz (default: data/fashion_mnist.npz if present, else data/digits.npz)")
    parser.add_argument("--arch", choices=["resnet_small", "wide_resnet"], default="resnet_small")
    parser.add_argument("--study", default="cifar10", help="study of config.yaml whose training recipe is used")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="training iterations (the lr schedule's milestones scale with it)")
    parser.add_argument("--sigma", type=float, default=DEFAULT_SIGMA_255, help="noise std in 1/255 units")
    parser.add_argument("--n-train", type=int, default=None, help="use the first N training images (default: all)")
    parser.add_argument("--n-test", type=int, default=None, help="use the first N test images (default: all)")
    parser.add_argument("--seed-control", action="store_true", help="also train fp32 with seed + 1: the seed-to-seed spread")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice; 1 with --quick)")
    parser.add_argument("--json", default=None, metavar="PATH", help="default: benchmarks_out/precision_check/<dataset>_<arch>.json")
    parser.add_argument("--quick", action="store_true", help=f"k {QUICK['k']}, {QUICK['n_train']} train / {QUICK['n_test']} test images: checks the script runs")
    args = parser.parse_args()

    if args.quick:
        args.k, args.threads = QUICK["k"], args.threads or 1
        args.n_train, args.n_test = args.n_train or QUICK["n_train"], args.n_test or QUICK["n_test"]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.data is None:
        found = [p for p in (Path("data/fashion_mnist.npz"), Path("data/digits.npz")) if p.exists()]
        if not found:
            raise SystemExit("no --data given and neither data/fashion_mnist.npz nor data/digits.npz exists: "
                             "python -m smoothsqueeze prepare-data digits --out data/digits.npz")
        args.data = str(found[0])
    dataset = Path(args.data).stem
    config = sscfg.load_config(args.config)
    sscfg.study(config, args.study)  # a clear error for an unknown study
    st = config["studies"][args.study]
    raw = load_dataset(args.data)
    data = subset(cifar_shaped(raw), args.n_train, args.n_test).to(device)
    info = machine_info(device)
    recipe = {key: st["train"].get(key) for key in ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "lr_milestones", "augmentation", "channels_last")}
    print(
        f"# {info['device_name']} | {device} | torch {info['torch']} | {info['torch_threads']} threads\n"
        f"# {dataset} {tuple(raw.image_shape)} -> {tuple(data.image_shape)}, {len(data.x_train)} train / {len(data.x_test)} test; "
        f"{args.arch}, alpha {ALPHA}, sigma {args.sigma:g}/255, k {args.k}; study {args.study}: "
        + ", ".join(f"{key} {value}" for key, value in recipe.items()),
        flush=True,
    )

    runs = {}
    for name, amp, seed in [("fp32", False, None), ("bf16", True, None)] + ([("fp32 seed+1", False, st["seed"] + 1)] if args.seed_control else []):
        runs[name] = train_one(name, make_settings(config, args.study, args.arch, args.sigma, args.k, amp, seed), data, device)
    comparisons = [compare("bf16 vs fp32", runs["fp32"], runs["bf16"])]
    if args.seed_control:
        comparisons.append(compare("fp32 seed+1 vs fp32 (control)", runs["fp32"], runs["fp32 seed+1"]))
    for c in comparisons:
        c["agree_text"] = "yes" if c["agree"] else "no"

    rows = [row for row, _ in runs.values()]
    print_table(rows, RUN_TABLE, title=f"bf16 autocast vs fp32: {args.arch} on CIFAR-shaped {dataset}, LS {ALPHA} + noise {args.sigma:g}/255, k {args.k}")
    print_table(comparisons, CMP_TABLE, title="Differences from the fp32 model (test set)")
    verdict = comparisons[0]["agree"]
    print(f"\nbf16 and fp32 {'agree' if verdict else 'DO NOT agree'} (rule: test accuracy within {ACC_POINTS:g} point, "
          f"median logit gap within {GAP_RELATIVE:.0%})")

    out = args.json or str(Path("benchmarks_out") / "precision_check" / f"{dataset}_{args.arch}.json")
    write_json(out, {
        "machine": info, "dataset": dataset, "data": str(args.data), "arch": args.arch, "study": args.study, "alpha": ALPHA,
        "sigma_255": args.sigma, "k": args.k, "n_train": len(data.x_train), "n_test": len(data.x_test), "recipe": recipe,
        "rule": {"test_accuracy_points": ACC_POINTS, "median_gap_relative": GAP_RELATIVE},
        "rows": rows, "comparisons": [{k: v for k, v in c.items() if k != "agree_text"} for c in comparisons], "agree": verdict,
    })


if __name__ == "__main__":
    main()
