"""The benchmark scripts still run (tiny sizes, --quick); their figures are never checked."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["bench_train.py", "bench_attacks.py", "bench_pipeline.py"]


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
