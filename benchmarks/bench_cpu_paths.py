"""Madry's CNN on one device: its training step and a PGD step, in each memory format and optimizer kernel.

The settings compared are the study keys `train.channels_last`, `train.fused_optimizer` and
`attack.channels_last`: on a CPU the default NCHW layout sends max-pooling through a slow kernel
and Adam's per-parameter loop costs as much as a convolution for the 8x8 network. Ratios are
against the default (NCHW, per-parameter optimizer), measured in this one run, repeats interleaved.

    python benchmarks/bench_cpu_paths.py --threads 1            # digits 8x8 and MNIST-size 28x28
    python benchmarks/bench_cpu_paths.py --quick
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from common import base_parser, machine_info, median, print_table, setup, timed, write_json
from smoothsqueeze.losses import training_loss
from smoothsqueeze.models import build_model
from smoothsqueeze.train import make_optimizer

VARIANTS = {  # name -> (channels_last, fused_optimizer)
    "default (NCHW, per-parameter Adam)": (False, False),
    "channels_last": (True, False),
    "fused Adam": (False, True),
    "channels_last + fused Adam": (True, True),
}


def _train_step(size: int, batch: int, channels_last: bool, fused: bool, device: torch.device) -> Any:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("madry_cnn", 1, size, 10, init="madry").to(device).to(memory_format=fmt)
    optimizer = make_optimizer(model, {"optimizer": "adam", "lr": 1e-3, "fused_optimizer": fused})
    x = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        loss = training_loss(model(x), y, 0.95, 2.0, "batch")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _attack_step(size: int, batch: int, channels_last: bool, device: torch.device) -> Any:
    """One PGD step's work: logits and the input gradient of a frozen model (the images stay NCHW)."""
    torch.manual_seed(0)
    model = build_model("madry_cnn", 1, size, 10, init="madry").to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch, 1, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        xx = x.clone().requires_grad_()
        torch.autograd.grad(F.cross_entropy(model(xx), y), xx)

    return step


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 28], help="image sides (8 = digits, 28 = MNIST / Fashion-MNIST)")
    parser.add_argument("--train-batch", type=int, default=50, help="Madry's batch")
    parser.add_argument("--attack-batch", type=int, nargs="+", default=[360, 500], help="per size: digits attack all 360 test images, MNIST 500")
    args = parser.parse_args()
    device = setup(args)
    sizes = [8] if args.quick else args.sizes
    inner = 2 if args.quick else 10
    rows: list[dict[str, Any]] = []
    report = {"machine": machine_info(device), "rows": rows}
    for i, size in enumerate(sizes):
        attack_batch = args.attack_batch[min(i, len(args.attack_batch) - 1)]
        jobs: dict[str, Any] = {}
        for name, (cl, fused) in VARIANTS.items():
            jobs[("train", name)] = _train_step(size, args.train_batch, cl, fused, device)
        jobs[("attack", "default (NCHW, per-parameter Adam)")] = _attack_step(size, attack_batch, False, device)
        jobs[("attack", "channels_last")] = _attack_step(size, attack_batch, True, device)
        times: dict[Any, list[float]] = {key: [] for key in jobs}
        for step in jobs.values():
            step()  # warm-up
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits every variant alike
            for key, step in jobs.items():
                times[key].append(timed(lambda s=step: [s() for _ in range(inner)], device) / inner)
        for what in ("train", "attack"):
            base = median(times[(what, "default (NCHW, per-parameter Adam)")])
            for (kind, name), values in times.items():
                if kind != what:
                    continue
                ms = 1e3 * median(values)
                label = name if what == "train" else name.replace(", per-parameter Adam", "")
                batch = args.train_batch if what == "train" else attack_batch
                row = {"images": f"{size}x{size}", "step": f"{what} step (batch {batch})", "variant": label, "ms": ms, "speedup": base / median(values)}
                rows.append(row)
    columns = [("images", "images", "s"), ("step", "step", "s"), ("variant", "variant", "s"), ("ms", "ms", ".2f"), ("speedup", "x default", ".2f")]
    print_table(rows, columns, title="Madry CNN steps by memory format and optimizer kernel")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
