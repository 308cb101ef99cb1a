"""benchmarks/compare_builds.py: two builds' verdicts compared on planted tables."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import compare_builds  # noqa: E402

FLAGS = ["blackbox_beats_whitebox", "square_beats_gradients", "large_eps_not_broken", "more_steps_weaker", "xent_gap", "claimed_overstated"]


def _build(root: Path, overstated: str, claim: str) -> Path:
    tables = root / "reports" / "s" / "tables"
    tables.mkdir(parents=True)
    with (tables / "audit.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["model", *(f"flag_{f}" for f in FLAGS)])
        w.writeheader()
        w.writerow({"model": "m_k1", **{f"flag_{f}": "not raised" for f in FLAGS}, "flag_claimed_overstated": overstated})
    with (tables / "accuracy.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["model", "test", "test_lo", "test_hi"])
        w.writeheader()
        w.writerow({"model": "m_k1", "test": 90.0 if overstated == "raised" else 88.0, "test_lo": 85.0, "test_hi": 93.0})
    with (root / "reports" / "s" / "claims.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["id", "verdict"])
        w.writeheader()
        w.writerow({"id": "C5", "verdict": claim})
    return root


@pytest.mark.parametrize(("a", "b", "want"), [("raised", "raised", "same"), ("raised", "within noise", "within noise"),
                                               ("not raised", "raised", "DIFFERENT"), ("holds", "fails", "DIFFERENT")])
def test_classify(a: str, b: str, want: str) -> None:
    assert compare_builds.classify(a, b) == want


@pytest.mark.slow
def test_two_builds_that_differ_only_within_noise_pass_and_others_fail(tmp_path: Path) -> None:
    a = _build(tmp_path / "a", "raised", "holds")
    b = _build(tmp_path / "b", "within noise", "holds")
    c = _build(tmp_path / "c", "not raised", "fails")
    script = [sys.executable, str(ROOT / "benchmarks" / "compare_builds.py"), "--study", "s"]
    ok = subprocess.run([*script, "--a", str(a), "--b", str(b)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "0 DIFFERENT" in ok.stdout and "| m_k1 | f:overstated | raised | within noise | within noise |" in ok.stdout
    assert "largest difference of a table number: 2.0 points (m_k1 test: 90.0 vs 88.0 (95% interval ±4.0))" in ok.stdout
    bad = subprocess.run([*script, "--a", str(a), "--b", str(c)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "| C5 |  | holds | fails | DIFFERENT |" in bad.stdout
