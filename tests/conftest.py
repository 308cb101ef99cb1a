"""Shared fixtures: the repository root, a tiny study config, and a Snakemake runner."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import copy

from smoothsqueeze import config as sscfg
from smoothsqueeze.data import Dataset, load_dataset, prepare_digits

ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = ROOT / "tests" / "data" / "tiny_config.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_snakemake(workdir: Path, *args: str, configfile: Path = TINY_CONFIG, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real workflow (CLI, subprocess) in `workdir` with `configfile`."""
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile", str(configfile), "--cores", "2", *args]
    full_env = {**os.environ, "SMOOTHSQUEEZE_DEVICE": "cpu", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work directory where the tiny study has been built once (train + evaluate), shared read-only."""
    workdir = tmp_path_factory.mktemp("tiny_study")
    run_snakemake(workdir, "--resources", "gpu=2")
    return workdir


@pytest.fixture
def tiny_copy(tiny_study: Path, tmp_path: Path) -> Path:
    """A private copy of the built tiny study that a test may change."""
    dest = tmp_path / "study"
    shutil.copytree(tiny_study, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """scikit-learn's digits prepared as the pipeline stores them (read-only for tests)."""
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    prepare_digits(path)
    return load_dataset(path)


def digits_settings(entry: dict, k: int, **train: object) -> dict:
    """Resolved settings of one digits model of config.yaml's study (grid entry `entry`, k iterations, train overrides)."""
    config = copy.deepcopy(sscfg.load_config(ROOT / "config.yaml"))
    study = config["studies"]["digits"]
    study["grid"] = [entry | {"k": k}]
    study["train"]["robust_check"] = None  # the demo's study-level check is not the loop's default
    study["train"].update(train, log_every=k)
    return sscfg.resolve_model(config, "digits", sscfg.model_id(entry | {"k": k}))
