"""profiles/slurm against a real single-node Slurm (tests/slurm/cluster.py), fake GPUs included.

Select with ``pytest -m slurm``.  Needs root (and Debian's slurm packages, installed by apt
when missing); where Slurm cannot be started the tests are skipped with the reason.
The profile is used as it is; only the plugin's status checks are adapted on the command
line (this cluster has no slurmdbd, so ``squeue`` instead of ``sacct``, polled sooner).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
GPU_CLAIM = REPO / "workflow" / "smoothsqueeze" / "gpu_claim.py"
TINY_CONFIG = REPO / "tests" / "data" / "tiny_config.yaml"
# Settings for a cluster without slurmdbd: the lead's profile stays untouched.
SLURM_TEST_ARGS = [
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2",
    "--slurm-keep-successful-logs",
]


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location(
        "smoothsqueeze_test_slurm_cluster", REPO / "tests" / "slurm" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running cluster whose partition is the profile's default one; stopped afterwards."""
    if sys.platform != "linux":
        pytest.skip("the test Slurm cluster needs Linux")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster needs root (to install packages and run daemons)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed")
    cluster_mod = _load_cluster_module()
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    partition = profile["default-resources"]["slurm_partition"]
    cluster = cluster_mod.SlurmCluster(tmp_path_factory.mktemp("slurm"), n_gpus=2,
                                       partition=partition)
    try:
        timings = cluster.start()
    except cluster_mod.ClusterUnavailable as exc:
        pytest.skip(f"cannot start a Slurm cluster here: {exc}")
    print(f"slurm cluster up: {timings}")
    try:
        yield cluster
    finally:
        cluster.stop()


def run_snakemake(workdir: Path, env: dict[str, str], *args: str,
                  timeout: float = 240) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", *args]
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-6000:]}")
    return result


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
        shell: "{PYTHON} {REPORT} --claim --sleep 3 > {output}"
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
    if "--sleep" in sys.argv:
        time.sleep(float(sys.argv[sys.argv.index("--sleep") + 1]))
    info.update(start=start, end=time.time())
    print(json.dumps(info))
""")


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
    # both jobs ran at once (2 CPUs, 2 GPUs, 3 s each), so they must hold different GPUs
    assert min(j["end"] for j in jobs) > max(j["start"] for j in jobs), jobs
    assert {j["CUDA_VISIBLE_DEVICES"] for j in jobs} == {"0", "1"}
    logs = list((workdir / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    assert len(logs) == 2


def _copy_pipeline(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "workflow", dest / "workflow",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(TINY_CONFIG, dest / "tiny_config.yaml")
    return dest


def _records(root: Path) -> dict[str, dict]:
    files = sorted((root / "results").glob("*/records/*.json"))
    return {str(f.relative_to(root)): json.loads(f.read_text()) for f in files}


VOLATILE = ("time", "seconds", "duration", "host", "date", "device", "path", "timestamp")


def _comparable(obj):
    """A record without run-dependent fields (timings, hosts, paths, devices)."""
    if isinstance(obj, dict):
        return {k: _comparable(v) for k, v in obj.items()
                if not any(word in k.lower() for word in VOLATILE)}
    if isinstance(obj, list):
        return [_comparable(v) for v in obj]
    return obj


def test_tiny_study_on_slurm_matches_local_run(slurm_cluster, tmp_path):
    if not (REPO / "Snakefile").exists() or not TINY_CONFIG.exists():
        pytest.skip(f"the pipeline or its tiny test config ({TINY_CONFIG}) is missing")
    local = _copy_pipeline(tmp_path / "local")
    on_slurm = _copy_pipeline(tmp_path / "slurm")
    env = {**slurm_cluster.env, "SMOOTHSQUEEZE_GPU_LOCK_DIR": str(tmp_path / "locks")}
    common = ["--configfile", "tiny_config.yaml"]
    t0 = time.monotonic()
    run_snakemake(local, env, "--profile", str(REPO / "profiles" / "default"), *common)
    t1 = time.monotonic()
    result = run_snakemake(on_slurm, env, "--profile", str(PROFILE), *SLURM_TEST_ARGS, *common)
    t2 = time.monotonic()
    print(f"tiny study: local {t1 - t0:.1f} s, through Slurm {t2 - t1:.1f} s")
    assert "submitted with SLURM jobid" in result.stdout + result.stderr
    local_records, slurm_records = _records(local), _records(on_slurm)
    assert local_records, "the local run wrote no records"
    assert slurm_records.keys() == local_records.keys()
    for name, record in local_records.items():
        assert _comparable(slurm_records[name]) == _comparable(record), name
