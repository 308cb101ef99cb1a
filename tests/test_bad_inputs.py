"""Bad input, end to end: each is refused by the real CLI with one line naming its cause.

Every case runs the real command (`snakemake` or `python -m smoothsqueeze`) in a fresh
directory and must exit non-zero, print one `config error: ...` / `error: ...` line that
names the key or file at fault, and leave nothing half-written (only logs). The cases run
concurrently in one module fixture to keep the suite short; each is reported as its own test.
"""
from __future__ import annotations

import copy
import gzip
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, SNAKEMAKE
from smoothsqueeze.checkpoints import load_model, save_model
from smoothsqueeze.data import prepare_digits
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.models import build_model

BASE = {
    "default_study": "s",
    "studies": {
        "s": {
            "dataset": "digits",
            "architecture": "madry_cnn",
            "seed": 0,
            "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 50},
            "attack": {"eps": 0.2, "max_examples": 20, "whitebox": [{"name": "fgsm_xent", "method": "fgsm", "loss": "xent"}]},
            "blackbox": {"source": "natural_k5", "attacks": [{"name": "fgsm_cw", "method": "fgsm", "loss": "cw"}]},
            "grid": [{"k": 5}],
        }
    },
}
MODEL_TARGET = "results/s/models/natural_k5/model.pt"
MNIST_GZ = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
EVAL_SPEC = {
    "whitebox": [], "batch_size": 100, "max_examples": 20, "seed": 0, "architecture": "madry_cnn",
    "info": {"study": "s", "model_id": "natural_k5", "dataset": "digits", "architecture": "madry_cnn"},
}
EVIL_SAVER = textwrap.dedent("""
    import os, sys, torch
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + sys.argv[2],))
    torch.save({"format": "smoothsqueeze-model/1", "architecture": "madry_cnn", "state_dict": Payload()}, sys.argv[1])
""")


@dataclass
class Case:
    """One bad input: `setup(dir)` builds it and returns the command; `expect` must be in our one error line."""

    setup: Callable[[Path], list[str]]
    expect: tuple[str, ...]
    prefix: str = "error: "  # how our line starts; None: Snakemake reports it (not our code)
    inputs: tuple[str, ...] = ()  # files the case placed under results/ or data/ itself
    out: str | None = None  # a file the command must not have written
    marker: bool = False  # a pickled payload must not have run
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the command
    result: subprocess.CompletedProcess | None = field(default=None, repr=False)


def snakemake(workdir: Path, config: dict, *args: str) -> list[str]:
    configfile = workdir / "case.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile", str(configfile), "--cores", "1", *args]


def config_with(edit: Callable[[dict], None]) -> dict:
    config = copy.deepcopy(BASE)
    edit(config)
    return config


def bad_config(edit: Callable[[dict], None], *args: str) -> Callable[[Path], list[str]]:
    return lambda d: snakemake(d, config_with(edit), *args)


def grid0(key: str, value: object) -> Callable[[dict], None]:
    return lambda c: c["studies"]["s"]["grid"][0].update({key: value})


def study_key(key: str, value: object) -> Callable[[dict], None]:
    return lambda c: c["studies"]["s"].update({key: value})


def mnist_study(config: dict, data_root: Path) -> None:
    config["studies"]["s"]["dataset"] = "mnist"
    config["data_root"] = str(data_root)


def empty_data_root(d: Path) -> list[str]:
    (d / "user").mkdir()
    return snakemake(d, config_with(lambda c: mnist_study(c, d / "user")), "data/mnist.npz")


def absent_data_root(d: Path) -> list[str]:
    return snakemake(d, config_with(lambda c: mnist_study(c, d / "not here")), "data/mnist.npz")


def mnist_download(d: Path) -> list[str]:
    return snakemake(d, config_with(lambda c: c["studies"]["s"].update(dataset="mnist")), "data/mnist.npz")


#: No network, also on a host that has one: every download goes to a proxy on a closed local port.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


def mnist_with_wrong_checksums(d: Path) -> list[str]:
    raw = d / "user" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_GZ:  # well-formed gzip files, but not the published MNIST ones
        (raw / name).write_bytes(gzip.compress(b"\0\0\x08\x03" + bytes(64)))
    return snakemake(d, config_with(lambda c: mnist_study(c, d / "user")), "data/mnist.npz")


def digits_file(d: Path, image_shape: tuple[int, int, int] = (1, 8, 8)) -> Path:
    """data/digits.npz where the pipeline reads it, real or with another image shape."""
    path = d / "data" / "digits.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    if image_shape == (1, 8, 8):
        prepare_digits(path)
    else:
        rng = np.random.default_rng(0)
        np.savez(
            path, x_train=rng.integers(0, 17, (40, *image_shape), dtype=np.uint8), y_train=np.arange(40) % 10,
            x_test=rng.integers(0, 17, (20, *image_shape), dtype=np.uint8), y_test=np.arange(20) % 10, max_value=np.float32(16),
        )
    return path


def wrong_shape_dataset(d: Path) -> list[str]:
    digits_file(d, (1, 9, 9))
    return snakemake(d, BASE, MODEL_TARGET)


def truncated_dataset(d: Path) -> list[str]:
    path = digits_file(d)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return snakemake(d, BASE, MODEL_TARGET)


def evaluate(d: Path, checkpoint: Path, *blackbox: str) -> list[str]:
    data = digits_file(d)
    out = d / "results" / "s" / "records" / "natural_k5.json"
    return [sys.executable, "-m", "smoothsqueeze", "evaluate", "--spec", json.dumps(EVAL_SPEC), "--checkpoint", str(checkpoint),
            "--data", str(data), "--blackbox", *blackbox, "--out", str(out), "--device", "cpu"]


def model_file(d: Path, architecture: str = "madry_cnn") -> Path:
    path = d / "results" / "s" / "models" / "natural_k5" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_model(path, build_model(architecture, 1, 8, 10), architecture, (1, 8, 8), 10)
    return path


def other_architecture(d: Path) -> list[str]:
    return evaluate(d, model_file(d, "resnet_small"))


def pickled_payload(d: Path) -> list[str]:
    path = d / "results" / "s" / "models" / "natural_k5" / "model.pt"
    path.parent.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", EVIL_SAVER, str(path), str(d / "payload_ran")], check=True)
    return evaluate(d, path)


def truncated_checkpoint(d: Path) -> list[str]:
    path = model_file(d)
    path.write_bytes(path.read_bytes()[:-200])
    return evaluate(d, path)


def blackbox_set(d: Path, pickled: bool) -> list[str]:
    path = d / "results" / "s" / "blackbox" / "fgsm_cw.npz"
    path.parent.mkdir(parents=True)
    if pickled:
        np.savez(path, x_adv=np.zeros((2, 1, 8, 8), np.float32), y=np.zeros(2, np.int64), meta=np.array([{"attack": None}], dtype=object))
    else:
        np.savez_compressed(path, x_adv=np.zeros((20, 1, 8, 8), np.float32), y=np.zeros(20, np.int64), meta=np.array("{}"))
        path.write_bytes(path.read_bytes()[:100])
    return evaluate(d, model_file(d), f"fgsm_cw={path}")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "smoothsqueeze", *args]


def results_dir_is_a_file(d: Path) -> list[str]:
    (d / "results").write_text("not a folder\n")
    return snakemake(d, BASE, MODEL_TARGET)


def data_root_is_a_file(d: Path) -> list[str]:
    (d / "mnist.tar").write_text("not a folder\n")
    return snakemake(d, config_with(lambda c: mnist_study(c, d / "mnist.tar")), "data/mnist.npz")


def pgd_without_step_size(c: dict) -> None:
    c["studies"]["s"]["attack"]["whitebox"].append({"name": "pgd10_xent", "method": "pgd", "loss": "xent", "steps": 10})


def checkpoint_is_a_folder(d: Path) -> list[str]:
    path = d / "results" / "s" / "models" / "natural_k5" / "model.pt"
    path.mkdir(parents=True)
    return evaluate(d, path)


def output_is_a_folder(d: Path) -> list[str]:
    (d / RECORD).mkdir(parents=True)
    return evaluate(d, model_file(d))


def output_under_a_file(d: Path) -> list[str]:
    (d / "results" / "s").mkdir(parents=True)
    (d / "results" / "s" / "records").write_text("not a folder\n")
    return evaluate(d, model_file(d))


RECORD = "results/s/records/natural_k5.json"
CHECKPOINT = "results/s/models/natural_k5/model.pt"
NAN, INF = float("nan"), float("inf")
CASES: dict[str, Case] = {
    # config values, checked when the workflow loads (nothing runs)
    "alpha_above_1": Case(bad_config(grid0("alpha", 1.5)), ("studies.s.grid[0].alpha = 1.5", "<= 1"), "config error: "),
    "beta_negative": Case(bad_config(grid0("beta", -1)), ("studies.s.grid[0].beta = -1", ">= 0"), "config error: "),
    "sigma_negative": Case(bad_config(grid0("sigma", -0.1)), ("studies.s.grid[0].sigma = -0.1", ">= 0"), "config error: "),
    "k_zero": Case(bad_config(grid0("k", 0)), ("studies.s.grid[0].k = 0", ">= 1"), "config error: "),
    "unknown_dataset": Case(bad_config(study_key("dataset", "svhn")), ("studies.s.dataset = 'svhn'", "digits"), "config error: "),
    "unknown_architecture": Case(bad_config(study_key("architecture", "vgg16")), ("studies.s.architecture = 'vgg16'", "madry_cnn"), "config error: "),
    "missing_key": Case(bad_config(lambda c: c["studies"]["s"].pop("seed")), ("studies.s.seed is missing",), "config error: "),
    "unknown_default_study": Case(bad_config(lambda c: c.update(default_study="nosuch")), ("default_study = 'nosuch'", "no such study"), "config error: "),
    "bad_config_override": Case(bad_config(lambda c: None, "--config", "verify_checksums=maybe"), ("verify_checksums = 'maybe'", "boolean"), "config error: "),
    "unknown_study_target": Case(bad_config(lambda c: None, "nosuch"), ("no study, rule or file 'nosuch'",)),
    "file_of_an_unknown_study": Case(bad_config(lambda c: None, "reports/t/report.html"), ("reports/t/report.html: no study 't' in the config",)),
    # numbers must be finite everywhere (JSON-schema bounds are false for NaN), also in the open blocks
    "alpha_nan": Case(bad_config(grid0("alpha", NAN)), ("studies.s.grid[0].alpha = nan: must be a finite number",), "config error: "),
    "sigma_inf": Case(bad_config(grid0("sigma", INF)), ("studies.s.grid[0].sigma = inf: must be a finite number",), "config error: "),
    "audit_setting_inf": Case(bad_config(study_key("audit", {"pgd": {"steps": INF}})), ("studies.s.audit.pgd.steps = inf", "finite"), "config error: "),
    "analysis_setting_nan": Case(bad_config(study_key("analysis", {"max_examples": NAN})), ("studies.s.analysis.max_examples = nan", "finite"), "config error: "),
    # --config strings are converted only in their exact forms ('false', '3', '0.5')
    "nested_override_not_a_number": Case(
        bad_config(lambda c: None, "--config", "studies={s: {attack: {max_examples: ten}}}"),
        ("studies.s.attack.max_examples = 'ten'", "must be of type"), "config error: ",
    ),
    # values the schema alone would let through, or a cross-check catches
    "max_examples_zero": Case(bad_config(lambda c: c["studies"]["s"]["attack"].update(max_examples=0)), ("studies.s.attack.max_examples = 0", ">= 1"), "config error: "),
    "same_model_id_twice_via_seed": Case(
        bad_config(lambda c: c["studies"]["s"]["grid"].extend([{"k": 5, "seed": 1}, {"k": 5, "seed": 1}])),
        ("studies.s.grid[2] repeats model 'natural_k5_seed1'",), "config error: ",
    ),
    "blackbox_source_not_in_grid": Case(
        bad_config(lambda c: c["studies"]["s"]["blackbox"].update(source="natural_k7")),
        ("studies.s.blackbox.source = 'natural_k7'", "not a model of the grid"), "config error: ",
    ),
    "pgd_without_step_size": Case(bad_config(pgd_without_step_size), ("studies.s.attack.whitebox[1].step_size = 0", "method pgd"), "config error: "),
    "eps_above_pixel_units": Case(bad_config(lambda c: c["studies"]["s"]["attack"].update(eps=8)), ("studies.s.attack.eps = 8", "pixel_units (1)"), "config error: "),
    "momentum_of_one": Case(bad_config(lambda c: c["studies"]["s"]["train"].update(momentum=1)), ("studies.s.train.momentum = 1", "< 1"), "config error: "),
    "results_dir_empty": Case(bad_config(lambda c: c.update(results_dir="")), ("results_dir = ''", "must not be empty"), "config error: "),
    "results_dir_is_a_file": Case(results_dir_is_a_file, ("results_dir = 'results'", "'results' is a file, not a folder"), "config error: "),
    "data_root_is_a_file": Case(data_root_is_a_file, ("data_root = ", "mnist.tar' is a file, not a folder"), "config error: "),
    # data
    "data_root_does_not_exist": Case(absent_data_root, ("mnist: data_root ", "not here does not exist (no such folder)", "MNIST/raw/"), out="data/mnist.npz"),
    "mnist_download_without_network": Case(
        mnist_download, ("mnist: download failed (could not download train-images-idx3-ubyte.gz: tried ", ": Connection refused"),
        out="data/mnist.npz", env=NO_NETWORK,
    ),
    "data_root_without_files": Case(empty_data_root, ("mnist: no usable files under data_root", "MNIST/raw"), out="data/mnist.npz"),
    "mnist_checksum_mismatch": Case(mnist_with_wrong_checksums, ("train-images-idx3-ubyte.gz: MD5 checksum does not match",), out="data/mnist.npz"),
    "dataset_of_wrong_shape": Case(wrong_shape_dataset, ("data/digits.npz: x_train has images of shape (1, 9, 9)", "(1, 8, 8)"), inputs=("data/digits.npz",), out=CHECKPOINT),
    "truncated_dataset": Case(truncated_dataset, ("data/digits.npz: unreadable or corrupt", "delete it"), inputs=("data/digits.npz",), out=CHECKPOINT),
    # checkpoints and black-box sets, given to the evaluate stage
    "checkpoint_of_another_architecture": Case(other_architecture, ("model.pt: holds a 'resnet_small' model, the study expects 'madry_cnn'",), inputs=("data/digits.npz", CHECKPOINT), out=RECORD),
    "checkpoint_with_pickled_payload": Case(pickled_payload, ("model.pt: refused to load", "GLOBAL posix.system", "nothing in it was run"), inputs=("data/digits.npz", CHECKPOINT), out=RECORD, marker=True),
    "truncated_checkpoint": Case(truncated_checkpoint, ("model.pt: truncated or corrupt", "delete it"), inputs=("data/digits.npz", CHECKPOINT), out=RECORD),
    "truncated_blackbox_set": Case(lambda d: blackbox_set(d, pickled=False), ("fgsm_cw.npz: unreadable or corrupt",), inputs=("data/digits.npz", CHECKPOINT, "results/s/blackbox/fgsm_cw.npz"), out=RECORD),
    "blackbox_set_with_pickled_objects": Case(lambda d: blackbox_set(d, pickled=True), ("fgsm_cw.npz: refused to load", "pickled"), inputs=("data/digits.npz", CHECKPOINT, "results/s/blackbox/fgsm_cw.npz"), out=RECORD),
    "checkpoint_is_a_folder": Case(checkpoint_is_a_folder, ("model.pt: is a folder, not a checkpoint file",), inputs=("data/digits.npz",), out=RECORD),
    "output_is_a_folder": Case(output_is_a_folder, ("natural_k5.json: is a folder, not a file",), inputs=("data/digits.npz", CHECKPOINT)),
    "output_under_a_file": Case(output_under_a_file, ("records: a file is in the way of a folder",), inputs=("data/digits.npz", CHECKPOINT, "results/s/records")),
    # the command line itself: usage errors are one line too
    "unknown_stage": Case(lambda d: cli("nosuch"), ("smoothsqueeze: argument <stage>: invalid choice: 'nosuch'",)),
    "spec_not_a_json_object": Case(
        lambda d: cli("evaluate", "--spec", "[1]", "--checkpoint", "m.pt", "--data", "d.npz", "--out", "o.json"), ("--spec must be a JSON object",),
    ),
    "spec_missing_keys": Case(
        lambda d: cli("craft-blackbox", "--spec", '{"architecture": "madry_cnn"}', "--source", "m.pt", "--data", "d.npz", "--out", "o.npz"),
        ("--spec lacks ['attack', 'batch_size', 'seed']",),
    ),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Run every case once, three at a time (most of each is Python starting up)."""
    commands = {}
    for name, case in CASES.items():
        workdir = tmp_path_factory.mktemp(name)
        commands[name] = (workdir, case.setup(workdir))
    env = {**os.environ, "SMOOTHSQUEEZE_DEVICE": "cpu"}

    def run(item: tuple[str, tuple[Path, list[str]]]) -> tuple[str, tuple[Path, subprocess.CompletedProcess]]:
        name, (workdir, cmd) = item
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env={**env, **CASES[name].env}, timeout=600)
        return name, (workdir, proc)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, commands.items()))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_in_one_line(name: str, outcomes: dict) -> None:
    case, (workdir, proc) = CASES[name], outcomes[name]
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    if case.prefix is None:
        assert all(word in proc.stderr for word in case.expect), proc.stderr[-3000:]
    else:
        ours = sorted({line for line in text.splitlines() if line.startswith(case.prefix)})
        assert len(ours) == 1, text[-3000:]  # one distinct line (Snakemake may echo the job's log)
        assert all(word in ours[0] for word in case.expect), ours[0]
    assert "Traceback" not in text, text[-3000:]
    for logfile in workdir.rglob("logs/**/*.log"):
        log = logfile.read_text()
        assert "Traceback" not in log and sum(line.startswith("error: ") for line in log.splitlines()) <= 1, log
    # Nothing half-written: under results/ and data/ only logs and the case's own inputs.
    written = [
        p.relative_to(workdir).as_posix() for top in ("results", "data") if (workdir / top).exists()
        for p in (workdir / top).rglob("*") if p.is_file()
    ]
    assert [p for p in written if "/logs/" not in f"/{p}" and p not in case.inputs] == []
    if case.out:
        assert not (workdir / case.out).exists()
    if case.marker:
        assert not (workdir / "payload_ran").exists()


def test_checkpoint_of_another_architecture_is_refused_by_load_model(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_model(path, build_model("resnet_small", 1, 8, 10), "resnet_small", (1, 8, 8), 10)
    with pytest.raises(PipelineError) as err:
        load_model(path, expect_architecture="madry_cnn")
    assert str(err.value) == f"{path}: holds a 'resnet_small' model, the study expects 'madry_cnn'; delete it and retrain"
    assert isinstance(load_model(path, expect_architecture="resnet_small"), torch.nn.Module)


# --- input that must work where a user would expect it to -----------------------------------------------

def dry_run(tmp_path: Path, config: dict, *args: str) -> str:
    """`snakemake -n -p` (real CLI); returns what it printed, after checking it succeeded."""
    proc = subprocess.run(snakemake(tmp_path, config, "-n", "-p", *args), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_boolean_and_nested_number_overrides_from_the_command_line(tmp_path: Path) -> None:
    """Snakemake hands `--config verify_checksums=false` and every nested value over as strings."""
    text = dry_run(tmp_path, BASE, "--config", "verify_checksums=false", "studies={s: {attack: {max_examples: 7, eps: 0.1}}}")
    prepare = [line for line in text.splitlines() if "smoothsqueeze prepare-data" in line]
    assert prepare and all("--no-verify" in line for line in prepare), prepare
    evaluate = [line for line in text.splitlines() if "smoothsqueeze evaluate" in line]
    assert evaluate and '"max_examples": 7' in evaluate[0] and '"eps": 0.1' in evaluate[0], evaluate


@pytest.mark.slow
def test_integral_float_and_trailing_slash_give_the_usual_paths(tmp_path: Path) -> None:
    """`k: 5.0` names the model natural_k5 (not natural_k5.0); `results_dir: ./results/` still matches results/... targets."""
    config = config_with(lambda c: (c["studies"]["s"]["grid"][0].update(k=5.0), c.update(results_dir="./results/")))
    text = dry_run(tmp_path, config, MODEL_TARGET)
    assert f"output: {MODEL_TARGET}" in text and "k5.0" not in text, text[-3000:]
