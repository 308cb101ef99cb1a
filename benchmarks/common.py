"""Shared helpers for the benchmark scripts: options, timing, FLOP counting, peaks, tables.

The scripts print figures; they are never tests of speed. Run them from a fresh clone
(`python benchmarks/bench_train.py`): the package is imported from workflow/ when it is not
installed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
try:  # an installed (or editable) package wins; a fresh clone imports it from workflow/
    import smoothsqueeze  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "workflow"))

import torch
from smoothsqueeze.data import Dataset
from smoothsqueeze.device import pick_device
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry


def base_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks the script runs, figures mean little")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present, else CPU)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats per measurement (medians are reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (with --threads 1 it ignores time spent waiting for a core "
        "on a shared machine; CPU devices only)",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every figure to this JSON file")
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads, pick the device, print what machine the figures come from."""
    if args.quick:
        args.repeats = min(args.repeats, 1)
        args.threads = args.threads or 1  # two threads on a busy 2-core machine can be 10x slower
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    global _CLOCK
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu measures CPU work; use --clock wall on a GPU")
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    info = machine_info(device)
    print(
        f"# {info['device_name']} | {info['device']} | torch {info['torch']} | {info['torch_threads']} threads | "
        f"{info['cpu_count']} CPUs | load average {info['load_average']} | {args.clock} clock"
    )
    return device


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": str(device),
        "device_name": name,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


_CLOCK = time.perf_counter


def now() -> float:
    """The clock chosen with --clock (wall by default)."""
    return _CLOCK()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of `fn` takes, the device drained before and after."""
    sync(device)
    start = now()
    fn()
    sync(device)
    return now() - start


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5, quick: bool = False) -> float:
    """Best achieved FLOP/s of an n x n matmul in `dtype` (the reference 'peak' of this run)."""
    if quick:
        n, repeats = 256, 2
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    inner = 1 if device.type == "cpu" else 20
    a @ b  # warm-up
    best = min(timed(lambda: [a @ b for _ in range(inner)], device) for _ in range(repeats))
    return 2 * n**3 * inner / best


def peaks(device: torch.device, quick: bool = False) -> dict[str, float]:
    return {"fp32": matmul_peak(device, torch.float32, quick=quick), "bf16": matmul_peak(device, torch.bfloat16, quick=quick)}


class _RegistryFlopCounter(TorchDispatchMode):
    """FlopCounterMode's per-op formulas without its module tracker.

    The tracker's backward hooks break `torch.autograd.grad` with respect to a leaf input
    ("A leaf node was passed to _will_engine_execute_node"), which is what every PGD step does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (matmuls and convolutions, forward and backward) of one call of `fn`.

    torch.utils.flop_counter.FlopCounterMode when it can; its formulas without the module
    tracker when the call takes input gradients (attacks), where the tracker fails.
    """
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        return int(counter.get_total_flops())
    except RuntimeError as err:
        if "leaf node" not in str(err):
            raise
    counter2 = _RegistryFlopCounter()
    with counter2:
        fn()
    return int(counter2.total)


def synthetic_dataset(shape: Sequence[int], n_train: int, n_test: int, max_value: float = 255.0, seed: int = 0) -> Dataset:
    """Random uint8 images and labels of 10 classes (speed does not depend on the pixels)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, int(max_value) + 1, (n_train + n_test, *shape), generator=gen, dtype=torch.uint8)
    y = torch.arange(n_train + n_test) % 10
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], float(max_value))


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if spec else str(value)


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]], title: str | None = None) -> None:
    """A Markdown table of `rows`; columns are (key, header, format spec)."""
    if title:
        print(f"\n## {title}\n")
    cells = [[fmt(row.get(key), spec) for key, _, spec in columns] for row in rows]
    heads = [head for _, head, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for c in cells:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(c, widths)) + " |")
    sys.stdout.flush()


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"\nwrote {path}")


def gflops(value: float) -> float:
    return value / 1e9
