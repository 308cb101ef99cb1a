"""Folders with a space in their names: every rule quotes its paths (`{input:q}`, `{output:q}`, `{log:q}`, ...).

Real Snakemake runs (CLI, subprocess): the working directory, the config file, `results_dir`,
`data_dir`, `reports_dir` and `data_root` all sit under folders named with a space.
"""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY_CONFIG, run_snakemake
from smoothsqueeze.data import load_dataset

SPACED = "my results"


def spaced_config(tmp_path: Path, **changes: object) -> Path:
    """The tiny study with its three output folders under 'my results/', written to 'my config.yaml'."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config.update(results_dir=f"{SPACED}/results dir", data_dir=f"{SPACED}/data dir", reports_dir=f"{SPACED}/reports dir", **changes)
    path = tmp_path / "my config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_tiny_study_runs_with_spaces_in_every_folder(tmp_path: Path) -> None:
    """Every rule under spaced folders: data, training, black-box crafting, evaluation, analysis, audit,
    figures, table rows and tables, cost, and the HTML report (whose `run:` block calls Snakemake again).

    The tiny study with one model (the black-box source) keeps this to about a minute and a half.
    """
    configfile = spaced_config(tmp_path)
    config = yaml.safe_load(configfile.read_text())
    config["studies"]["tiny"]["grid"] = [{"k": 40}]
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    run_snakemake(workdir, "tiny", configfile=configfile)

    results, reports = workdir / SPACED / "results dir" / "tiny", workdir / SPACED / "reports dir" / "tiny"
    assert (workdir / SPACED / "data dir" / "digits.npz").is_file()
    assert (results / "models" / "natural_k40" / "model.pt").is_file()
    assert sorted(p.name for p in (results / "blackbox").glob("*.npz")) == ["fgsm_cw.npz", "pgd5_cw.npz"]
    for done in ("records/natural_k40.json", "analysis/natural_k40.json", "audit/natural_k40.json"):
        assert (results / done).is_file(), done
    with open(reports / "rows" / "natural_k40.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and "natural_k40" in rows[0].values(), rows
    for done in ("tables/accuracy.csv", "tables/audit.csv", "tables/cost.csv", "figures", "report.html"):
        assert (reports / done).exists(), done
    assert (reports / "report.html").stat().st_size > 10_000
    # Nothing went to a path cut at the space ('my', 'results', ...): only the spaced folder and Snakemake's own.
    assert sorted(p.name for p in workdir.iterdir()) == [".snakemake", SPACED]
    logs = [*results.rglob("logs/**/*.log"), *reports.rglob("logs/**/*.log")]
    assert logs and all("Traceback" not in log.read_text() for log in logs)


def idx_files(raw: Path, n_train: int = 30, n_test: int = 20) -> None:
    """Four small, well-formed MNIST IDX files (.gz), not the published ones (their checksums differ)."""
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes()
        labels = (np.arange(n) % 10).astype(np.uint8).tobytes()
        header = lambda magic, *dims: b"".join(int(v).to_bytes(4, "big") for v in (magic, *dims))  # noqa: E731
        (raw / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header(0x803, n, 28, 28) + images))
        (raw / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header(0x801, n) + labels))


@pytest.mark.slow
def test_data_root_with_a_space_and_checksums_off_from_the_command_line(tmp_path: Path) -> None:
    """`data_root` under a spaced folder, and `--config verify_checksums=false` (a string from Snakemake) takes effect."""
    data_root = tmp_path / "my data root"
    idx_files(data_root / "MNIST" / "raw")
    configfile = spaced_config(tmp_path, data_root=str(data_root))
    config = yaml.safe_load(configfile.read_text())
    config["studies"]["tiny"]["dataset"] = "mnist"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    target = f"{SPACED}/data dir/mnist.npz"

    checked = run_snakemake(workdir, target, configfile=configfile, check=False)
    assert checked.returncode != 0 and "MD5 checksum does not match" in checked.stdout + checked.stderr
    assert not (workdir / target).exists()

    run_snakemake(workdir, target, "--config", "verify_checksums=false", configfile=configfile)
    data = load_dataset(workdir / target, "mnist")
    assert data.image_shape == (1, 28, 28) and len(data.y_train) == 30 and len(data.y_test) == 20
