"""The benchmark scripts still run (tiny sizes, --quick); their figures are never checked."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["bench_train.py", "bench_attacks.py", "bench_pipeline.py", "bench_cpu_paths.py"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_quick(script: str, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "| ---" in proc.stdout, f"{script} printed no table:\n{proc.stdout[-2000:]}"
    figures = json.loads(out.read_text())
    assert figures["rows"], f"{script} wrote no rows"
    assert figures["machine"]["device"] == "cpu"


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/digits.npz made by the real `prepare-data` command."""
    path = tmp_path_factory.mktemp("bench_data") / "digits.npz"
    subprocess.run([sys.executable, "-m", "smoothsqueeze", "prepare-data", "digits", "--out", str(path)], check=True, capture_output=True, timeout=120)
    return path


def run_script(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "| ---" in proc.stdout, f"{script} printed no table:\n{proc.stdout[-2000:]}"
    return proc


@pytest.mark.slow
def test_calibrate_squeeze_quick(digits_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "calibration"
    proc = run_script("calibrate_squeeze.py", ["--data", str(digits_npz), "--study", "digits", "--quick", "--jobs", "2", "--out-dir", str(out)], tmp_path)
    with open(out / "calibration.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "norm", "beta", "sigma", "k", "train_accuracy", "train_accuracy_clean", "test_accuracy", "logit_norm", "collapsed", "seconds", "error",
    ]
    # one beta-0 reference + every normalisation x the quick betas (2, 5, 10)
    assert [(r["norm"], float(r["beta"])) for r in rows] == [("none", 0.0)] + [
        (norm, beta) for norm in ("per_example", "batch", "batch_unscaled") for beta in (2.0, 5.0, 10.0)
    ]
    markdown = (out / "calibration.md").read_text()
    for norm in ("per_example", "batch", "batch_unscaled"):
        assert f"- {norm}: " in markdown and f"- {norm}: " in proc.stdout
    # the verdict rule, applied to the paper's own rows (read from mnist_table5.csv), finds the paper's pattern
    assert "paper, k 100000: matches the paper's MNIST pattern" in proc.stdout


def test_calibrate_squeeze_verdict_rule() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import calibrate_squeeze as cal
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    ok = {2.0: False, 5.0: False, 10.0: False}
    assert cal.verdict({2.0: 98.0, 5.0: 97.0, 10.0: 60.0}, ok, 99.0) == "matches the paper's MNIST pattern"
    assert cal.verdict({2.0: 98.0, 5.0: 97.0, 10.0: 98.5}, ok, 99.0).startswith("does not match (beta 10 trains")
    assert cal.verdict({2.0: 11.0, 5.0: 10.0, 10.0: 10.0}, {2.0: True, 5.0: True, 10.0: True}, 99.0).startswith("does not match (beta 2 collapsed")
    assert cal.verdict({2.0: 98.0, 10.0: 50.0}, ok, 99.0).startswith("undetermined (needs beta 5")
    assert cal.verdict({2.0: 98.0, 5.0: 97.0, 10.0: 60.0}, ok, 15.0, reference_collapsed=True).startswith("undetermined")


@pytest.mark.slow
def test_precision_check_quick(digits_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "precision.json"
    proc = run_script("precision_check.py", ["--data", str(digits_npz), "--quick", "--device", "cpu", "--seed-control", "--json", str(out)], tmp_path)
    figures = json.loads(out.read_text())
    assert [row["run"] for row in figures["rows"]] == ["fp32", "bf16", "fp32 seed+1"]
    assert [row["amp"] for row in figures["rows"]] == [False, True, False]
    for row in figures["rows"]:
        for key in ("train_accuracy", "train_accuracy_clean", "test_accuracy", "median_gap", "mean_logit_norm", "seconds"):
            assert isinstance(row[key], float), (row["run"], key)
    assert [c["comparison"] for c in figures["comparisons"]] == ["bf16 vs fp32", "fp32 seed+1 vs fp32 (control)"]
    assert set(figures["comparisons"][0]) >= {"test_accuracy_diff", "median_gap_rel_diff", "prediction_agreement", "agree"}
    assert figures["n_test"] == 128 and figures["machine"]["device"] == "cpu"
    assert "bf16 and fp32 " in proc.stdout


@pytest.mark.slow
def test_study_summary_renders_the_built_tiny_study(tiny_study: Path) -> None:
    """The README's results tables come from this script: every model of the tiny study, numbers from its records."""
    from conftest import TINY_CONFIG

    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "study_summary.py"), "--study", "tiny", "--config", str(TINY_CONFIG),
         "--results", str(tiny_study / "results")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(lines) == 1 + 5  # header + the tiny study's five models
    record = json.loads((tiny_study / "results/tiny/records/natural_k40.json").read_text())
    natural = next(line for line in lines if "`natural_k40`" in line)
    cells = [c.strip() for c in natural.strip("|").split("|")]
    assert cells[1] == "1" and cells[2] == f"{record['accuracy']['test']:.1f}" and "black-box source" in cells[-1]  # seeds, clean
