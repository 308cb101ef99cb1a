"""Attack throughput: smoothsqueeze.attacks.pgd against torchattacks.PGD on the same model and batch.

Throughput is images x PGD steps per second (median of interleaved repeats). The models are
trained for a moment by the pipeline's own train_model on scikit-learn's digits, upsampled to
MNIST's 28x28 (madry_cnn) and CIFAR-10's 32x32x3 (resnet_small, wide_resnet), so that
accuracies under attack are neither 0 nor 100% and can be compared:
- with a random start the two libraries draw different starts: accuracies agree up to noise;
- without one (and for FGSM) both are deterministic: the adversarial batches should match.

    python benchmarks/bench_attacks.py
    python benchmarks/bench_attacks.py --archs madry_cnn --batch 500 --steps 40
    python benchmarks/bench_attacks.py --quick
"""
from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import (
    base_parser,
    machine_info,
    median,
    print_table,
    setup,
    timed,
    write_json,
)
from smoothsqueeze.attacks import pgd
from smoothsqueeze.config import load_config
from smoothsqueeze.data import Dataset, load_dataset, prepare_digits
from smoothsqueeze.inference import accuracy
from smoothsqueeze.train import train_model

try:
    import torchattacks
except ImportError:  # not a dependency of the pipeline
    torchattacks = None

#: arch -> (image shape, study whose train settings it uses, eps, step size, steps, training iterations)
ARCHS = {
    "madry_cnn": ((1, 28, 28), "mnist", 0.1, 0.01, 40, 300),
    "resnet_small": ((3, 32, 32), "cifar10", 8 / 255, 2 / 255, 20, 150),
    "wide_resnet": ((3, 32, 32), "cifar10", 8 / 255, 2 / 255, 20, 150),
}


def digits_at(shape: tuple[int, int, int], workdir: Path) -> Dataset:
    """scikit-learn's digits resized (bilinear) to `shape`, as uint8 in 0..255."""
    prepare_digits(workdir / "digits.npz")
    data = load_dataset(workdir / "digits.npz")

    def resize(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.float() / data.max_value, size=shape[1:], mode="bilinear", align_corners=False)
        return (x.expand(-1, shape[0], -1, -1) * 255).round().clamp(0, 255).to(torch.uint8).contiguous()

    return Dataset(resize(data.x_train), data.y_train, resize(data.x_test), data.y_test, 255.0)


def train_quickly(arch: str, data: Dataset, k: int, device: torch.device, config: dict[str, Any]) -> torch.nn.Module:
    study = config["studies"][ARCHS[arch][1]]
    settings = {
        "study": "bench", "model_id": arch, "dataset": "digits", "architecture": arch, "seed": 0, "alpha": 0, "beta": 0, "sigma01": 0, "k": k,
        "adversarial": None, "pixel_units": 1, "config_entry": {},
        "train": {**study["train"], "lr": 1e-3 if study["train"]["optimizer"] == "adam" else 0.05, "lr_milestones": [], "augmentation": "none",
                  "log_every": k, "checkpoint_every": 10**9, "validation_holdout": 0},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = train_model(settings, data, Path(tmp), device, log=lambda line: None)
    return model.eval()


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0], repeats=3)
    parser.add_argument("--archs", nargs="+", choices=list(ARCHS), default=None, help="default: madry_cnn, resnet_small (+ wide_resnet on a GPU)")
    parser.add_argument("--batch", type=int, default=200, help="images per attack batch")
    parser.add_argument("--steps", type=int, default=None, help="PGD steps (default: 40 madry_cnn, 20 CIFAR nets, as the studies evaluate)")
    args = parser.parse_args()
    device = setup(args)
    if torchattacks is None:
        print("torchattacks is not installed: `pip install --no-deps torchattacks` (its pins would downgrade requests); timing ours only")
    else:
        print(f"# torchattacks {torchattacks.__version__}")
    archs = args.archs or (["madry_cnn", "resnet_small"] + (["wide_resnet"] if device.type == "cuda" else []))
    config = load_config(Path(__file__).resolve().parent.parent / "config.yaml")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            shape, _, eps, step, steps, k = ARCHS[arch]
            steps = args.steps or steps
            batch = args.batch
            if args.quick:
                shape, steps, k, batch = (shape[0], 12, 12), 2, 4, 16
            data = digits_at(shape, Path(tmp)).to(device)
            model = train_quickly(arch, data, k, device, config)
            x, y = data.scale(data.x_test[:batch]), data.y_test[:batch]
            clean = accuracy(model, x, y)
            cases: list[tuple[str, int, float, bool]] = [("PGD, random start", steps, step, True), ("PGD, no random start", steps, step, False), ("FGSM", 1, eps, False)]
            for name, n_steps, size, rand in cases:
                gen = torch.Generator(device=device).manual_seed(0)

                ours = functools.partial(pgd, model, x, y, eps, size, n_steps, "xent", random_start=rand, generator=gen)
                theirs: Callable[[], torch.Tensor] | None = None
                if torchattacks is not None:
                    attack = (torchattacks.PGD(model, eps=eps, alpha=size, steps=n_steps, random_start=rand) if name != "FGSM"
                              else torchattacks.FGSM(model, eps=eps))
                    theirs = functools.partial(attack, x, y)

                ours()  # warm-up
                if theirs:
                    theirs()
                t_ours, t_theirs = [], []
                for _ in range(args.repeats):  # interleaved
                    t_ours.append(timed(ours, device))
                    if theirs:
                        t_theirs.append(timed(theirs, device))
                adv_ours = ours()
                row: dict[str, Any] = {
                    "arch": arch, "attack": name, "batch": batch, "steps": n_steps, "eps": eps, "clean_acc": clean,
                    "ours_s": median(t_ours), "ours_ips": batch * n_steps / median(t_ours), "ours_acc": accuracy(model, adv_ours, y),
                }
                if theirs:
                    adv_theirs = theirs()
                    with torch.no_grad():
                        pred_o, pred_t = model(adv_ours).argmax(1), model(adv_theirs).argmax(1)
                    row.update({
                        "theirs_s": median(t_theirs), "theirs_ips": batch * n_steps / median(t_theirs), "speedup": median(t_theirs) / median(t_ours),
                        "theirs_acc": accuracy(model, adv_theirs, y), "same_pred": 100 * (pred_o == pred_t).float().mean().item(),
                        "max_diff": (adv_ours - adv_theirs).abs().max().item(),
                    })
                rows.append(row)
                print(
                    f"{arch:12s} {name:22s} ours {row['ours_ips']:9.0f} img*step/s"
                    + (f"  torchattacks {row['theirs_ips']:9.0f}  speed ratio {row['speedup']:.2f}  acc {row['ours_acc']:.1f} vs {row['theirs_acc']:.1f}%" if theirs else ""),
                    flush=True,
                )
    print_table(
        rows,
        [("arch", "arch", ""), ("attack", "attack", ""), ("batch", "batch", "d"), ("steps", "steps", "d"), ("eps", "eps", ".3f"),
         ("ours_ips", "ours img*step/s", ".0f"), ("theirs_ips", "torchattacks img*step/s", ".0f"), ("speedup", "ours / torchattacks speed", ".2f"),
         ("clean_acc", "clean %", ".1f"), ("ours_acc", "ours acc %", ".1f"), ("theirs_acc", "torchattacks acc %", ".1f"),
         ("same_pred", "same prediction %", ".1f"), ("max_diff", "max |x_ours - x_ta|", ".1e")],
        title="PGD throughput and agreement, smoothsqueeze.attacks.pgd vs torchattacks",
    )
    write_json(args.json, {"machine": machine_info(device), "torchattacks": getattr(torchattacks, "__version__", None), "rows": rows})


if __name__ == "__main__":
    main()
