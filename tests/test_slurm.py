"""profiles/slurm against a real single-node Slurm (tests/slurm/cluster.py), fake GPUs included.

Select with ``pytest -m slurm`` (deselect with ``-m "not slurm"``).  The cluster installs
Debian's slurm packages (apt, when missing) and makes device nodes, as root: it only does so
when ``SMOOTHSQUEEZE_SLURM_TESTS=1`` says it may (``.ci/run`` sets it).  Without the switch
the Slurm tests are skipped with that reason; with it, a cluster that cannot start FAILS them.
The profile is used as it is; only the plugin's status checks are adapted on the command
line (this cluster has no slurmdbd, so ``squeue`` instead of ``sacct``, polled sooner).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from smoothsqueeze.artifacts import read_npz

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
GPU_CLAIM = REPO / "workflow" / "smoothsqueeze" / "gpu_claim.py"
TINY_CONFIG = REPO / "tests" / "data" / "tiny_config.yaml"
#: The explicit switch: "1" lets the tests install packages and make device nodes as root.
SWITCH = "SMOOTHSQUEEZE_SLURM_TESTS"
#: Only a guard against a hung run (a loaded machine may be slow): never a speed requirement.
HANG_GUARD_S = 1800
# Settings for a cluster without slurmdbd: the lead's profile stays untouched.
SLURM_TEST_ARGS = [
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2",
    "--slurm-keep-successful-logs",
]


@functools.cache
def _load_cluster_module():
    spec = importlib.util.spec_from_file_location(
        "smoothsqueeze_test_slurm_cluster", REPO / "tests" / "slurm" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def slurm_tests_enabled() -> bool:
    return os.environ.get(SWITCH) == "1"


def cluster_unavailable(reason: str) -> None:
    """Skip (switch off: a developer's machine) or fail (switch on: CI) with the reason."""
    if slurm_tests_enabled():
        pytest.fail(f"{SWITCH}=1 but the test Slurm cluster cannot start: {reason}", pytrace=False)
    pytest.skip(f"Slurm tests are off: set {SWITCH}=1 to run them (they install Debian's slurm packages "
                f"and make /dev/fakegpu* as root); here: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running cluster whose partition is the profile's default one; stopped afterwards."""
    if not slurm_tests_enabled():
        cluster_unavailable(f"{SWITCH} is not 1")
    if sys.platform != "linux":
        cluster_unavailable("the test Slurm cluster needs Linux")
    if os.geteuid() != 0:
        cluster_unavailable("the test Slurm cluster needs root (to install packages and run daemons)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        cluster_unavailable("snakemake-executor-plugin-slurm is not installed")
    cluster_mod = _load_cluster_module()
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    partition = profile["default-resources"]["slurm_partition"]
    cluster = cluster_mod.SlurmCluster(tmp_path_factory.mktemp("slurm"), n_gpus=2,
                                       partition=partition)
    try:
        timings = cluster.start()
    except cluster_mod.ClusterUnavailable as exc:
        cluster_unavailable(str(exc))
    print(f"slurm cluster up: {timings}")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_switch_decides_between_skip_and_fail(monkeypatch):
    """Off: skipped with the switch named in the reason. On: a cluster that cannot start fails."""
    monkeypatch.delenv(SWITCH, raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"set {SWITCH}=1"):
        cluster_unavailable("no apt-get")
    monkeypatch.setenv(SWITCH, "0")
    with pytest.raises(pytest.skip.Exception, match="no apt-get"):
        cluster_unavailable("no apt-get")
    monkeypatch.setenv(SWITCH, "1")
    with pytest.raises(pytest.fail.Exception, match="cannot start: no apt-get"):
        cluster_unavailable("no apt-get")


def run_snakemake(workdir: Path, env: dict[str, str], *args: str,
                  timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", *args]
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-6000:]}")
    return result


def test_cluster_reports_why_it_cannot_start(monkeypatch):
    """Without Slurm and without root, or when apt fails, start() says why (the fixture
    turns that into a skip with the reason)."""
    cluster_mod = _load_cluster_module()
    monkeypatch.setattr(cluster_mod.shutil, "which",
                        lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(cluster_mod.os, "geteuid", lambda: 1000)
    with pytest.raises(cluster_mod.ClusterUnavailable, match="needs root"):
        cluster_mod.ensure_installed()
    monkeypatch.setattr(cluster_mod.os, "geteuid", lambda: 0)
    calls = []

    def failing_apt(cmd, **kwargs):
        calls.append(cmd[:2])
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package slurmd")

    monkeypatch.setattr(cluster_mod, "_run", failing_apt)
    with pytest.raises(cluster_mod.ClusterUnavailable, match="Unable to locate package"):
        cluster_mod.ensure_installed()
    assert calls == [["apt-get", "install"], ["apt-get", "update"], ["apt-get", "install"]]

    # a hung apt-get is stopped after minutes (not a quarter hour) and reported, not raised as is
    timeouts = []

    def hanging_apt(cmd, timeout=30, **kwargs):
        timeouts.append(timeout)
        raise subprocess.TimeoutExpired(cmd, timeout)

    monkeypatch.setattr(cluster_mod, "_run", hanging_apt)
    with pytest.raises(cluster_mod.ClusterUnavailable, match="timed out after 300 s"):
        cluster_mod.ensure_installed()
    assert timeouts and max(timeouts) <= 300, timeouts


TRIVIAL_SNAKEFILE = textwrap.dedent("""
    localrules: download

    rule all:
        input: expand("out/train_{i}.json", i=[1, 2])

    rule download:  # stays on the submit host
        output: "out/data.json"
        shell: "{PYTHON} {REPORT} > {output}"

    rule train:  # a GPU rule: one Slurm job with --gpus=1 each
        input: "out/data.json"
        output: "out/train_{i}.json"
        resources: gpu=1
        shell: "{PYTHON} {REPORT} --claim --barrier out/started 2 > {output}"
""")

# What a job saw: its Slurm job, GPUs and times; with --claim also gpu_claim's device.
REPORT_SCRIPT = textwrap.dedent("""
    import importlib.util, json, os, sys, time
    start = time.time()
    info = {k: os.environ.get(k) for k in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    if "--claim" in sys.argv:
        spec = importlib.util.spec_from_file_location("gpu_claim", os.environ["GPU_CLAIM"])
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        visible = (os.environ.get("CUDA_VISIBLE_DEVICES") or "").split(",")
        claim = mod.claim_device(len([v for v in visible if v]), on_busy="error",
                                 lock_dir=os.environ["LOCK_DIR"])
        info.update(claim=str(claim), lock=str(claim.lock_path))
    if "--barrier" in sys.argv:  # wait until N jobs run at once (no deadline: a slow machine only waits longer)
        folder, n = sys.argv[sys.argv.index("--barrier") + 1:][:2]
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, str(os.getpid())), "w").close()
        while len(os.listdir(folder)) < int(n):
            time.sleep(0.1)
        info["together"] = True
    info.update(start=start, end=time.time())
    print(json.dumps(info))
""")


@pytest.mark.slurm
@pytest.mark.slow
def test_trivial_workflow_runs_as_sbatch_jobs(slurm_cluster, tmp_path):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "report.py").write_text(REPORT_SCRIPT)
    (workdir / "Snakefile").write_text(
        f"PYTHON = {sys.executable!r}\nREPORT = 'report.py'\n" + TRIVIAL_SNAKEFILE)
    env = {**slurm_cluster.env, "GPU_CLAIM": str(GPU_CLAIM), "LOCK_DIR": str(tmp_path / "locks")}
    t0 = time.monotonic()
    result = run_snakemake(workdir, env, "--profile", str(PROFILE), *SLURM_TEST_ARGS)
    print(f"trivial workflow through Slurm: {time.monotonic() - t0:.1f} s")
    log = result.stdout + result.stderr
    assert "submitted with SLURM jobid" in log

    download = json.loads((workdir / "out" / "data.json").read_text())
    assert download["SLURM_JOB_ID"] is None, "a localrule must not become a Slurm job"

    jobs = [json.loads((workdir / "out" / f"train_{i}.json").read_text()) for i in (1, 2)]
    assert all(j["SLURM_JOB_ID"] for j in jobs)
    assert jobs[0]["SLURM_JOB_ID"] != jobs[1]["SLURM_JOB_ID"]
    # Slurm gave each job one GPU (the profile's `gpu: 1` -> --gpus=1) ...
    assert all(j["CUDA_VISIBLE_DEVICES"] in ("0", "1") for j in jobs)
    # ... and gpu_claim inside the job takes that one GPU, as cuda:0, in a per-job folder.
    for job in jobs:
        assert job["claim"] == "cuda:0"
        lock = Path(job["lock"])
        assert lock.parent.name == f"slurm-job-{job['SLURM_JOB_ID']}"
        assert lock.name.endswith(f"-{job['CUDA_VISIBLE_DEVICES']}.lock")
    # both jobs ran at once (2 CPUs, 2 GPUs), so they must hold different GPUs
    assert all(j["together"] for j in jobs), jobs
    assert {j["CUDA_VISIBLE_DEVICES"] for j in jobs} == {"0", "1"}
    logs = list((workdir / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    assert len(logs) == 2


@pytest.mark.slurm
@pytest.mark.slow
def test_failed_slurm_job_fails_the_run(slurm_cluster, tmp_path):
    """A job that fails on the cluster is reported (squeue status checks), not waited on."""
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(textwrap.dedent("""
        rule broken:
            output: "out/never.txt"
            resources: gpu=1
            shell: "echo failing on purpose; exit 3"
    """))
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(PROFILE), *SLURM_TEST_ARGS]
    result = subprocess.run(cmd, cwd=workdir, env=slurm_cluster.env, capture_output=True,
                            text=True, timeout=HANG_GUARD_S)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]
    assert "Error in rule broken" in log and "FAILED" in log, log[-3000:]
    assert not (workdir / "out" / "never.txt").exists()


def _tiny_target() -> str:
    """The record of the tiny study's black-box source model: four Slurm jobs (train,
    two craft_blackbox, evaluate), three levels deep.  The whole tiny study would take
    several minutes through Slurm on 2 cores."""
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    name = cfg["default_study"]
    source = cfg["studies"][name]["blackbox"]["source"]
    return f"{cfg.get('results_dir', 'results')}/{name}/records/{source}.json"


def _comparable(record: dict) -> dict:
    """A record without what may differ between two runs: its provenance (host, threads, git
    commit) and the black-box sets' file checksums (each .npz stores its provenance too; the
    sets' arrays are compared element by element instead).  The checkpoint checksum stays:
    training on the CPU is reproducible bit for bit, through Slurm or not."""
    out = {k: v for k, v in record.items() if k != "provenance"}
    out["attacks"] = {**out["attacks"], "blackbox": {
        name: {k: v for k, v in detail.items() if k != "set_sha256"}
        for name, detail in out["attacks"]["blackbox"].items()}}
    return out


def test_comparable_keeps_the_checkpoint_checksum():
    record = {"provenance": {"host": "a"}, "inputs": {"checkpoint_sha256": "c1"},
              "attacks": {"whitebox": {}, "blackbox": {"fgsm_cw": {"set_sha256": "s1", "n": 60}}}}
    other = {**record, "provenance": {"host": "b"},
             "attacks": {"whitebox": {}, "blackbox": {"fgsm_cw": {"set_sha256": "s2", "n": 60}}}}
    assert _comparable(record) == _comparable(other)
    changed = {**record, "inputs": {"checkpoint_sha256": "c2"}}
    assert _comparable(changed) != _comparable(record)
    assert _comparable(record)["inputs"] == {"checkpoint_sha256": "c1"}


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_study_on_slurm_matches_local_run(slurm_cluster, tiny_study, tmp_path):
    """The same record through Slurm as in the local build (conftest's tiny_study)."""
    target = _tiny_target()
    local = json.loads((tiny_study / target).read_text())
    env = {**slurm_cluster.env, "SMOOTHSQUEEZE_DEVICE": "cpu",  # as conftest's runs
           "SMOOTHSQUEEZE_GPU_LOCK_DIR": str(tmp_path / "locks")}
    workdir = tmp_path / "slurm"
    workdir.mkdir()
    t0 = time.monotonic()
    result = run_snakemake(workdir, env, "-s", str(REPO / "Snakefile"),
                           "--configfile", str(TINY_CONFIG), "--profile", str(PROFILE),
                           *SLURM_TEST_ARGS, "--", target)
    print(f"tiny study record through Slurm: {time.monotonic() - t0:.1f} s")
    log = result.stdout + result.stderr
    slurm_rules = {p.name for p in (workdir / ".snakemake" / "slurm_logs").iterdir()}
    assert {"rule_train", "rule_craft_blackbox", "rule_evaluate"} <= slurm_rules, log[-3000:]
    assert "localrule prepare_data" in log  # downloads stay on the submit host
    on_slurm = json.loads((workdir / target).read_text())
    assert on_slurm["accuracy"] == local["accuracy"]
    assert on_slurm["inputs"]["checkpoint_sha256"] == local["inputs"]["checkpoint_sha256"]
    assert _comparable(on_slurm) == _comparable(local)
    # the black-box sets, array by array (their files' bytes hold each run's provenance)
    for name, detail in local["attacks"]["blackbox"].items():
        a, b = (read_npz(root / detail["set"]) for root in (tiny_study, workdir))
        assert np.array_equal(a["x_adv"], b["x_adv"]) and np.array_equal(a["y"], b["y"]), name
