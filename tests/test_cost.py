"""Cost table: from benchmark files and metrics, the adversarial-to-regularized cost ratio."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from smoothsqueeze.cost import cost_table, kind_of, read_benchmark
from smoothsqueeze.errors import PipelineError

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _model(tmp_path: Path, mid: str, entry: dict, k: int, cpu: float, wall: float) -> dict[str, str]:
    folder = tmp_path / mid
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({"settings": {"model_id": mid, "k": k, "config_entry": entry}}))
    (folder / "metrics.json").write_text(json.dumps({"wall_seconds": wall, "cpu_seconds": cpu}))
    (folder / "train.tsv").write_text(BENCH_HEADER + f"{wall + 3}\t0:00:10\t800\t1\t1\t1\t0\t0\t50\t{cpu + 3}\n")
    (folder / "eval.tsv").write_text(BENCH_HEADER + "4.5\t0:00:04\t700\t1\t1\t1\t0\t0\t50\t4.2\n")
    return {"settings": str(folder / "settings.json"), "metrics": str(folder / "metrics.json"),
            "train_benchmark": str(folder / "train.tsv"), "evaluate_benchmark": str(folder / "eval.tsv")}


def test_ratio_is_cpu_time_per_iteration_against_the_median_regularized_model(tmp_path: Path) -> None:
    models = [
        _model(tmp_path, "natural_k1000", {"k": 1000}, 1000, cpu=10.0, wall=30.0),
        _model(tmp_path, "ls0.9_k2000", {"alpha": 0.9, "k": 2000}, 2000, cpu=22.0, wall=22.0),
        _model(tmp_path, "sq1_k1000", {"beta": 1, "k": 1000}, 1000, cpu=12.0, wall=12.0),
        _model(tmp_path, "pgd7_k1000", {"k": 1000, "adversarial": {"steps": 7, "step_size": 0.01, "eps": 0.3}}, 1000, cpu=88.0, wall=90.0),
    ]
    frame = cost_table(models).set_index("model")
    # per 1k iterations: 10, 11, 12 CPU s -> median 11; adversarial 88 -> 8x
    assert frame.loc["pgd7_k1000", "cost_vs_regularized"] == pytest.approx(8.0)
    assert frame.loc["natural_k1000", "train_loop_s_per_1k_iter"] == pytest.approx(30.0)
    assert frame.loc["ls0.9_k2000", "train_job_s"] == pytest.approx(25.0)
    assert frame.loc["pgd7_k1000", "kind"] == "adversarial (PGD-7)"


def test_kinds() -> None:
    assert kind_of({"k": 1}) == "natural" and kind_of({"sigma": 0.3, "k": 1}) == "regularized"


def test_unreadable_benchmark_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "b.tsv").write_text("")
    with pytest.raises(PipelineError, match="b.tsv: unreadable benchmark file"):
        read_benchmark(tmp_path / "b.tsv")


@pytest.mark.slow
def test_tiny_study_has_a_cost_table(tiny_study: Path) -> None:
    with open(tiny_study / "reports" / "tiny" / "tables" / "cost.csv") as fh:
        rows = {row["model"]: row for row in csv.DictReader(fh)}
    assert set(rows) == {"natural_k40", "noise0.3_k40", "ls0.9_k40", "sq0.5_noise0.3_k40", "pgd3-eps0.2-step0.1_k30"}
    assert all(float(row["train_job_s"]) > 0 for row in rows.values())
    assert (tiny_study / "reports" / "tiny" / "tables" / "cost.tex").read_text().count("\\midrule") == 1
