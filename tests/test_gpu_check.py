"""benchmarks/gpu_check.sh --quick runs end to end on the CPU and writes every part of its report.

Its figures are never checked for speed (tiny counts on a CPU mean nothing): only that each part
ran, is positive where it must be, and is consistent with the others."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smoothsqueeze.config import load_config

ROOT = Path(__file__).resolve().parent.parent
#: Only stops a hung run; no speed requirement (a loaded 2-core machine is slow).
HANG_GUARD_S = 1800


@pytest.mark.slow
def test_gpu_check_quick_writes_the_whole_report(tmp_path: Path) -> None:
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_TIMEOUT": str(HANG_GUARD_S)}
    env.pop("SMOOTHSQUEEZE_DEVICE", None)
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--quick", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S + 60, check=False)
    assert proc.returncode == 0, f"gpu_check.sh --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for part in ("1. matmul peak", "2. MNIST CNN", "3. wide ResNet", "4. PGD-", "5. real training", "6. projection mnist",
                 "6. projection cifar10", "7. fast paths, off by default", "figures mean nothing"):
        assert part in proc.stdout, f"no {part!r} in the output:\n{proc.stdout[-3000:]}"
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["quick"] is True and report["machine"]["device"] == "cpu"
    assert report["peak_flops"]["bf16"] > 0 and report["peak_flops"]["fp32"] > 0

    sharing = report["mnist_cnn_sharing"]
    assert [row["processes"] for row in sharing] == [1, 2]
    for row in sharing:  # one timing per separate process, each on the CPU (no GPU, no slot claimed)
        assert len(row["step_ms_each"]) == row["processes"] and all(t > 0 for t in row["step_ms_each"])
        assert row["devices"] == ["cpu"] * row["processes"] and row["slots"] == [[]] * row["processes"]
        assert row["steps_per_s_total"] == pytest.approx(sum(1e3 / t for t in row["step_ms_each"]), rel=1e-3)
        assert row["pct_bf16_peak"] > 0
    assert sharing[0]["throughput_vs_1"] == 1.0

    wrn = report["wide_resnet"]
    assert wrn["step_ms"] > 0 and wrn["gflop_per_step"] > 0 and wrn["pct_bf16_peak"] > 0
    assert wrn["amp"] is True and wrn["channels_last"] is True  # the cifar10 study's settings
    assert {row["architecture"] for row in report["pgd"]} == {"madry_cnn", "resnet_small"}  # --quick: the small ResNet
    assert all(row["images_per_s"] > 0 and row["gradient_steps_per_s"] == pytest.approx(row["images_per_s"] * row["steps"])
               for row in report["pgd"])

    real = report["real_training"]
    assert real["steps"] == 20 and real["real_data"] is False and real["data"].startswith("synthetic 28x28")
    assert 0 <= real["test_accuracy"] <= 100 and 0 <= real["train_accuracy"] <= 100

    for study in ("mnist", "cifar10"):
        part = report["projection"][study]
        assert part["total_device_hours"] > 0 and part["line"].startswith(f"projection {study} on ")
        with Path(part["csv"]).open() as handle:
            rows = list(csv.DictReader(handle))
        assert rows[-1]["model"] == "TOTAL"
        assert float(rows[-1]["device_hours"]) == pytest.approx(part["total_device_hours"], rel=1e-2, abs=1e-4)
        assert Path(part["csv"]).with_suffix(".txt").read_text().strip() == part["line"]
    check_fast_paths(report["fast_paths"])
    assert report["wall_s"] > 0


def check_fast_paths(fast: dict) -> None:
    """Part 7 in --quick: every eager variant and adversarial_amp timed against the first of its group,
    the compiled variants listed as skipped (compiling on a CPU takes tens of seconds each)."""
    expected = {"mnist_cnn": ["eager", "eager+fused", "compile", "compile:reduce-overhead", "compile:reduce-overhead+loss+fused"],
                "wide_resnet": ["eager", "compile"], "pgd7_wide_resnet": ["fp32 PGD", "adversarial_amp"]}
    for group, names in expected.items():
        rows = fast[group]
        assert [row["variant"] for row in rows] == names
        for row in rows:
            if "compile" in row["train"]:
                assert row["skipped"] == "compile skipped (--quick without --compile)" and "step_ms" not in row, row
                continue
            assert "skipped" not in row and row["fell_back"] is None, row
            assert row["step_ms"] > 0 and row["total_s"] > 0 and row["speedup_vs_first"] > 0, row
            assert row["max_weight_diff_vs_first"] >= 0 and math.isfinite(row["final_loss"]), row
        assert rows[0]["speedup_vs_first"] == 1.0 and rows[0]["max_weight_diff_vs_first"] == 0.0
    assert fast["pgd7_wide_resnet"][1]["train"] == {"adversarial_amp": True}
    assert fast["pgd7_wide_resnet"][1]["max_weight_diff_vs_first"] > 0  # bf16 PGD crafted other examples
    precision = fast["pgd_precision"]
    assert precision["steps"] == 7 and precision["bf16_dtype"] == "torch.float32"
    assert 0 < precision["pixels_differ"] <= 1 and precision["xent_fp32"] > 0 and precision["xent_bf16"] > 0


def test_fast_paths_skip_what_the_time_budget_cannot_hold() -> None:
    """Out of time, every variant says it was skipped and why, instead of being killed at the limit."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_fast_paths
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    config = load_config(ROOT / "config.yaml")
    asked: list[float] = []
    rows = gpu_fast_paths.measure(config, torch.device("cpu"), True, True, lambda seconds: bool(asked.append(seconds)), lambda _: None)
    assert sum(len(group) for group in rows.values()) == len(gpu_fast_paths.VARIANTS) == len(asked)
    for group in rows.values():
        for row in group:
            assert row["skipped"].startswith("skipped: the time budget leaves less than") and "step_ms" not in row
