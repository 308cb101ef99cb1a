"""Reliability under real failures: SIGKILLed jobs, resumable training, finished models kept.

Every test runs the real workflow (Snakemake CLI in a subprocess) or the real stage code and
kills real processes; nothing is mocked.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, SNAKEMAKE, run_snakemake
from smoothsqueeze.artifacts import read_npz, remove_stale_temps
from smoothsqueeze.checkpoints import load_torch, save_torch
from smoothsqueeze.config import load_config, model_id, resolve_model
from smoothsqueeze.data import load_dataset, prepare_digits
from smoothsqueeze import train
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.study import STAGE_VERSIONS

MODEL = "noise0.3_k300"
MODEL_FILE = f"results/rs/models/{MODEL}/model.pt"
RECORD_FILE = f"results/rs/records/{MODEL}.json"

# One model that uses every random draw of the training loop (batch order, crop/flip, noise)
# and a learning-rate milestone, checkpointed every 50 of its 300 iterations. Logging every
# 40 iterations puts checkpoints between log lines, so the running log sums must resume too.
RESUME_STUDY = {
    "default_study": "rs",
    "studies": {
        "rs": {
            "dataset": "digits",
            "architecture": "madry_cnn",
            "seed": 3,
            "train": {
                "optimizer": "adam", "lr": 0.001, "batch_size": 50, "log_every": 40, "checkpoint_every": 50,
                "augmentation": "crop_flip", "lr_milestones": [0.5],
            },
            "attack": {"eps": 0.2, "max_examples": 20, "whitebox": [{"name": "fgsm_xent", "method": "fgsm", "loss": "xent"}]},
            "blackbox": {"source": MODEL, "attacks": []},
            "grid": [{"sigma": 0.3, "k": 300}],
        }
    },
}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def start_snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.Popen:
    """The workflow in a process group of its own, so that it and its jobs can be killed together."""
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile", str(configfile), "--cores", "2", *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "SMOOTHSQUEEZE_DEVICE": "cpu"}, start_new_session=True,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


class Reference:
    """The resume study trained without interruption, in the background while other tests run."""

    def __init__(self, workdir: Path, configfile: Path) -> None:
        self.workdir, self.configfile = workdir, configfile
        self.proc = start_snakemake(workdir, configfile, MODEL_FILE)
        self._out: str | None = None

    def wait(self) -> Path:
        if self._out is None:
            self._out, _ = self.proc.communicate(timeout=900)
        assert self.proc.returncode == 0, f"uninterrupted reference run failed:\n{self._out[-4000:]}"
        return self.workdir


@pytest.fixture(scope="module")
def resume_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("resume_config") / "resume.yaml", RESUME_STUDY)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, resume_config: Path):
    ref = Reference(tmp_path_factory.mktemp("reference"), resume_config)
    yield ref
    if ref.proc.poll() is None:
        os.killpg(ref.proc.pid, signal.SIGKILL)
        ref.proc.wait()


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_same_model(tmp_path: Path, resume_config: Path, reference: Reference) -> None:
    workdir = tmp_path / "killed"
    model_dir = workdir / "results" / "rs" / "models" / MODEL
    resume = model_dir / "resume.pt"
    proc = start_snakemake(workdir, resume_config, MODEL_FILE)
    deadline = time.monotonic() + 600
    while not resume.exists():
        assert proc.poll() is None, f"training ended before its first resume point:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no resume point after 10 minutes"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its job, as a node failure or OOM kill would
    proc.wait()
    proc.stdout.close()

    # Nothing a later stage reads was left behind; the resume point was.
    assert resume.exists()
    leftovers = sorted(p.name for p in model_dir.iterdir() if p.name != "resume.pt")
    assert all(name.startswith(".resume.pt.") and name.endswith(".tmp") for name in leftovers), leftovers
    for name in ("model.pt", "metrics.json", "settings.json"):
        assert not (model_dir / name).exists(), name
    # A hard kill leaves Snakemake's lock behind (a Ctrl-C does not): users run --unlock once.
    run_snakemake(workdir, "--unlock", configfile=resume_config)
    dry = run_snakemake(workdir, "-n", RECORD_FILE, configfile=resume_config)
    assert "rule train:" in dry.stdout and "Missing output files" in dry.stdout

    # The rerun needs no --rerun-incomplete (no output existed): run it without the profile that sets it.
    run_snakemake(workdir, MODEL_FILE, "--workflow-profile", "none", configfile=resume_config)
    log = (workdir / "results" / "rs" / "logs" / "train" / f"{MODEL}.log").read_text()
    resumed_at = [line for line in log.splitlines() if line.startswith("resuming from")]
    assert len(resumed_at) == 1, log
    iteration = int(resumed_at[0].rsplit(" ", 1)[1].split("/")[0])
    assert 50 <= iteration < 300 and iteration % 50 == 0, resumed_at
    assert not resume.exists()

    ref_dir = reference.wait() / "results" / "rs" / "models" / MODEL
    resumed, uninterrupted = state_dict(model_dir / "model.pt"), state_dict(ref_dir / "model.pt")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (model_dir, ref_dir))
    assert got["history"] == want["history"]  # the log lines' losses and accuracies, exactly
    assert (got["train_accuracy"], got["test_accuracy"]) == (want["train_accuracy"], want["test_accuracy"])


# A child that writes one large incompressible array through write_npz and never finishes in time.
SLOW_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from smoothsqueeze.artifacts import write_npz
    rng = np.random.default_rng(0)
    write_npz(sys.argv[1], x_adv=rng.integers(0, 256, size=(400 * 2**20,), dtype=np.uint8), y=np.zeros(3, dtype=np.int64))
""")


@pytest.mark.slow
def test_sigkilled_npz_write_leaves_no_file_a_stage_accepts(tmp_path: Path) -> None:
    target = tmp_path / "blackbox" / "pgd40_cw.npz"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], start_new_session=True)
    deadline = time.monotonic() + 120

    def writing() -> bool:  # the temporary file exists and has data in it
        return target.parent.exists() and any(p.stat().st_size > 0 for p in target.parent.glob(".pgd40_cw.npz.*.tmp"))

    while not writing():
        assert proc.poll() is None, "the writer finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    partial = list(target.parent.glob(".pgd40_cw.npz.*.tmp"))
    assert len(partial) == 1
    with pytest.raises(PipelineError) as err:  # even read by name, the partial file is refused in one line
        read_npz(partial[0], required=("x_adv", "y"))
    assert str(partial[0]) in str(err.value) and "\n" not in str(err.value)
    assert remove_stale_temps(target.parent, (target.name,)) == partial and not partial[0].exists()


# --- a pickled payload in a resume point never runs -------------------------------------------------

EVIL_SAVER = textwrap.dedent("""
    import os, sys, torch
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + sys.argv[2],))
    torch.save({"key": "x", "iteration": 1, "model": Payload()}, sys.argv[1])
""")


@pytest.mark.slow
def test_resume_point_with_a_pickled_payload_is_ignored_and_never_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "payload_ran"
    data = tmp_path / "data" / "digits.npz"
    prepare_digits(data)
    config = load_config(ROOT / "tests" / "data" / "tiny_config.yaml")
    settings = resolve_model(config, "tiny", "natural_k40")
    settings["k"] = 5
    model_dir = tmp_path / "results" / "tiny" / "models" / "natural_k40"
    model_dir.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", EVIL_SAVER, str(model_dir / "resume.pt"), str(marker)], check=True)
    assert not marker.exists()
    train.run(settings, data, model_dir / "model.pt", model_dir / "metrics.json", model_dir / "settings.json", device="cpu")
    ignored = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ignoring")]
    assert len(ignored) == 1 and "refused to load" in ignored[0] and "GLOBAL posix.system" in ignored[0], ignored
    assert not marker.exists()
    assert (model_dir / "model.pt").exists() and not (model_dir / "resume.pt").exists()


# --- finished models are never lost or silently redone ------------------------------------------------

def finished_copy(reference: Reference, tmp_path: Path) -> Path:
    dest = tmp_path / "study"
    shutil.copytree(reference.wait(), dest, symlinks=True)
    return dest


@pytest.mark.slow
def test_forced_rerun_of_a_finished_model_keeps_it(reference: Reference, tmp_path: Path, resume_config: Path) -> None:
    study = finished_copy(reference, tmp_path)
    model = study / MODEL_FILE
    before = sha256(model)
    assert model.stat().st_mode & 0o222 == 0  # protected(): read-only
    out = run_snakemake(study, "-f", MODEL_FILE, configfile=resume_config, check=False)
    if os.geteuid() != 0:
        # Snakemake itself refuses before deleting anything.
        assert out.returncode != 0 and "ProtectedOutputException" in out.stderr + out.stdout
    else:
        # root may delete read-only files, so Snakemake does; the job restores the kept model instead of retraining.
        assert out.returncode == 0, out.stderr[-3000:]
        log = (study / "results" / "rs" / "logs" / "train" / f"{MODEL}.log").read_text()
        assert "restored the finished model" in log and "iter " not in log, log
    assert sha256(model) == before


@pytest.mark.slow
def test_changed_settings_do_not_replace_a_finished_model(reference: Reference, tmp_path: Path, resume_config: Path) -> None:
    study = finished_copy(reference, tmp_path)
    model = study / MODEL_FILE
    before = sha256(model)
    changed = json.loads(json.dumps(RESUME_STUDY))
    changed["studies"]["rs"]["train"]["lr"] = 0.002
    changed_config = write_config(tmp_path / "changed.yaml", changed)
    out = run_snakemake(study, MODEL_FILE, configfile=changed_config, check=False)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    if os.geteuid() != 0:
        assert "ProtectedOutputException" in text
        assert sha256(model) == before
        return
    ours = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1, text[-3000:]
    assert "train.lr 0.001 -> 0.002" in ours[0] and "nothing was retrained" in ours[0] and "delete" in ours[0]
    kept = study / "results" / "rs" / "models" / MODEL / ".finished" / "model.pt.kept"
    assert sha256(kept) == before
    # Setting the value back brings the same model back, without training.
    run_snakemake(study, MODEL_FILE, configfile=resume_config)
    assert sha256(model) == before
    assert "restored the finished model" in (study / "results" / "rs" / "logs" / "train" / f"{MODEL}.log").read_text()


# --- the same rules at the stage level (no Snakemake), one branch each ------------------------------

def tiny_settings(k: int = 5) -> dict:
    settings = resolve_model(load_config(ROOT / "tests" / "data" / "tiny_config.yaml"), "tiny", "natural_k40")
    settings["k"] = k
    return settings


def train_stage(tmp_path: Path, settings: dict) -> dict[str, Path]:
    data = tmp_path / "data" / "digits.npz"
    if not data.exists():
        prepare_digits(data)
    model_dir = tmp_path / "models" / "natural_k40"
    outputs = {"checkpoint": model_dir / "model.pt", "metrics": model_dir / "metrics.json", "settings": model_dir / "settings.json"}
    train.run(settings, data, outputs["checkpoint"], outputs["metrics"], outputs["settings"], device="cpu")
    return outputs


def delete_outputs(outputs: dict[str, Path]) -> None:
    """What Snakemake does to a job's outputs before it redoes the job (as root, protected or not)."""
    for path in outputs.values():
        path.unlink()


def test_stage_restores_or_refuses_but_never_retrains_a_finished_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = train_stage(tmp_path, tiny_settings())
    before = sha256(outputs["checkpoint"])
    provenance = json.loads(outputs["settings"].read_text())["provenance"]
    assert (provenance["stage"], provenance["stage_version"]) == ("train", STAGE_VERSIONS["train"])
    capsys.readouterr()

    delete_outputs(outputs)
    quieter = tiny_settings()
    quieter["train"]["log_every"] = 1  # how often it logs does not change the model
    train_stage(tmp_path, quieter)
    out = capsys.readouterr().out
    assert "restored the finished model" in out and "training " not in out, out
    assert sha256(outputs["checkpoint"]) == before and all(p.exists() for p in outputs.values())

    delete_outputs(outputs)
    other = tiny_settings()
    other["train"]["lr"] = 0.01
    with pytest.raises(PipelineError) as err:
        train_stage(tmp_path, other)
    message = str(err.value)
    assert "\n" not in message and "train.lr 0.001 -> 0.01" in message and "nothing was retrained" in message
    assert not outputs["checkpoint"].exists()
    assert sha256(outputs["checkpoint"].parent / ".finished" / "model.pt.kept") == before


def test_stage_trains_again_when_the_kept_model_was_damaged_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = train_stage(tmp_path, tiny_settings())
    with open(outputs["checkpoint"], "r+b") as fh:  # in place: the kept hard link shares these bytes
        fh.seek(200)
        fh.write(b"\xff" * 64)
    delete_outputs(outputs)
    capsys.readouterr()
    train_stage(tmp_path, tiny_settings())
    out = capsys.readouterr().out
    assert "is damaged (model.pt.kept does not match its sha256)" in out and "training tiny/natural_k40" in out, out
    assert torch.load(outputs["checkpoint"], weights_only=True)["format"] == "smoothsqueeze-model/1"


# --- models finished and resume points written before the settings named their unit ------------------

def noisy_adversarial_settings() -> dict:
    """A tiny model that uses every renamed setting (noise sigma01, adversarial eps01 and step_size01)."""
    entry = {"sigma": 0.3, "k": 6, "adversarial": {"steps": 2, "step_size": 0.1, "eps": 0.2}}
    config = load_config(ROOT / "tests" / "data" / "tiny_config.yaml", {"studies": {"tiny": {"grid": [entry], "blackbox": {"source": model_id(entry)}}}})
    settings = resolve_model(config, "tiny", model_id(entry))
    settings["train"].update(log_every=2, checkpoint_every=3)
    return settings


def with_previous_names(settings: dict) -> dict:
    """Training settings as the code before the rename wrote them: the same [0, 1] values as sigma, adversarial.eps / step_size."""
    old = copy.deepcopy(settings)
    old["sigma"] = old.pop("sigma01")
    adv = old["adversarial"]
    adv["eps"], adv["step_size"] = adv.pop("eps01"), adv.pop("step_size01")
    return old


def test_a_model_kept_with_the_previous_names_is_restored_and_a_real_change_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = noisy_adversarial_settings()
    outputs = train_stage(tmp_path, settings)
    before = sha256(outputs["checkpoint"])
    kept = outputs["settings"].parent / ".finished" / "settings.json.kept"
    previous = json.loads(kept.read_text())
    previous["settings"] = with_previous_names(previous["settings"])
    for name in ("stage", "stage_version"):
        del previous["provenance"][name]
    delete_outputs(outputs)
    kept.unlink()  # a file of its own, no longer the hard link of settings.json
    kept.write_text(json.dumps(previous))
    capsys.readouterr()

    train_stage(tmp_path, settings)
    out = capsys.readouterr().out
    assert "restored the finished model" in out and "training " not in out, out
    assert sha256(outputs["checkpoint"]) == before

    delete_outputs(outputs)
    other = noisy_adversarial_settings()
    other["sigma01"] = 0.4
    with pytest.raises(PipelineError) as err:
        train_stage(tmp_path, other)
    message = str(err.value)
    assert "\n" not in message and "other settings (sigma01 0.3 -> 0.4);" in message and "nothing was retrained" in message, message
    assert sha256(kept.parent / "model.pt.kept") == before


class Interrupted(Exception):
    """Stands for a job killed between two resume points."""


def interrupt_at(line_start: str):  # type: ignore[no-untyped-def]
    def log(line: str) -> None:
        if line.startswith(line_start):
            raise Interrupted(line)
    return log


@pytest.mark.parametrize(("sigma_in_key", "resumed"), [(0.3, True), (0.4, False)])
def test_a_resume_point_keyed_with_the_previous_names_resumes_when_nothing_else_changed(
    sigma_in_key: float, resumed: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = noisy_adversarial_settings()
    data = tmp_path / "digits.npz"
    prepare_digits(data)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with pytest.raises(Interrupted):  # after the resume point at iteration 3
        train.train_model(settings, load_dataset(data), model_dir, torch.device("cpu"), log=interrupt_at("iter 4/6 "), data_sha256=sha256(data))
    resume = model_dir / train.RESUME_NAME
    state = load_torch(resume)
    assert state["iteration"] == 3
    key = json.loads(state["key"])
    key["settings"] = with_previous_names({**key["settings"], "sigma01": sigma_in_key})
    state["key"] = json.dumps(key, sort_keys=True)  # as the previous code's _model_key wrote it
    save_torch(resume, state)
    capsys.readouterr()

    train.run(settings, data, model_dir / "model.pt", model_dir / "metrics.json", model_dir / "settings.json", device="cpu")
    out = capsys.readouterr().out
    if resumed:
        assert f"resuming from {resume} at iteration 3/6" in out and "ignoring" not in out, out
    else:
        assert "ignoring" in out and "other settings" in out and "resuming" not in out, out
    uninterrupted, _ = train.train_model(settings, load_dataset(data), tmp_path / "reference", torch.device("cpu"), log=lambda _: None)
    got = state_dict(model_dir / "model.pt")
    assert got.keys() == uninterrupted.state_dict().keys()
    assert all(torch.equal(got[name], uninterrupted.state_dict()[name]) for name in got)
