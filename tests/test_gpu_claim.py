"""gpu_claim: concurrent GPU jobs get devices of their own (GPUs simulated on the CPU)."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from smoothsqueeze import gpu_claim
from smoothsqueeze.gpu_claim import DeviceBusyError, candidate_ids, claim_device

#: Timeouts here only stop a hung test; they are no speed requirement (a loaded machine is slow).
HANG_GUARD_S = 300

# A claimer in its own process: loads gpu_claim by path (no torch import, fast start),
# claims, prints the device and holds it until its stdin closes or it is killed.
HOLDER = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("gpu_claim", sys.argv[1])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    dev = mod.claim_device(int(sys.argv[2]), lock_dir=sys.argv[3], on_busy=sys.argv[4])
    print(dev, flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def lock_dir(tmp_path, monkeypatch) -> Path:
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpu_claim.LOCK_DIR_ENV,
                gpu_claim.ON_BUSY_ENV):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path / "locks"
    for claim in list(gpu_claim._HELD.values()):
        claim.release()


class Holder:
    """A claiming subprocess; `device` is what it claimed."""

    def __init__(self, n: int, lock_dir: Path, on_busy: str = "wait",
                 env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, gpu_claim.__file__, str(n), str(lock_dir), on_busy],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})

    def read_device(self) -> str:
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=HANG_GUARD_S)


@pytest.fixture
def holders():
    started: list[Holder] = []

    def start(*args, **kwargs) -> Holder:
        started.append(Holder(*args, **kwargs))
        return started[-1]

    yield start
    for holder in started:
        if holder.proc.poll() is None:
            holder.proc.kill()
        holder.proc.wait(timeout=HANG_GUARD_S)


def test_candidate_ids_follow_cuda_visible_devices():
    assert candidate_ids(3, visible=None) == ["0", "1", "2"]
    assert candidate_ids(2, visible="2,3") == ["2", "3"]
    assert candidate_ids(1, visible="2,3") == ["2"]
    assert candidate_ids(4, visible="GPU-aa, GPU-bb") == ["GPU-aa", "GPU-bb"]
    assert candidate_ids(2, visible="") == []
    assert candidate_ids(2, visible="-1") == []
    assert candidate_ids(3, visible="1,-1,0") == ["1"]
    with pytest.raises(ValueError):
        candidate_ids(-1, visible=None)


def test_no_gpu_means_cpu_and_no_lock(lock_dir):
    dev = claim_device(0, lock_dir=lock_dir)
    assert dev == "cpu" and not dev.held and dev.index is None
    assert not lock_dir.exists()


def test_cuda_visible_devices_empty_means_cpu(lock_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert claim_device(4, lock_dir=lock_dir) == "cpu"


@pytest.mark.slow
def test_concurrent_processes_get_different_devices(lock_dir, holders):
    first, second = holders(2, lock_dir), holders(2, lock_dir)
    devices = {first.read_device(), second.read_device()}
    assert devices == {"cuda:0", "cuda:1"}
    # a third claimer finds both taken: falls back, or fails, as configured
    assert claim_device(2, lock_dir=lock_dir, on_busy="cpu") == "cpu"
    with pytest.raises(DeviceBusyError):
        claim_device(2, lock_dir=lock_dir, on_busy="error")
    t0 = time.monotonic()
    with pytest.raises(DeviceBusyError):
        claim_device(2, lock_dir=lock_dir, timeout=0.5, poll_interval=0.05)
    # it waited its timeout before giving up; no upper bound: a loaded machine may take longer
    assert time.monotonic() - t0 >= 0.5


@pytest.mark.slow
def test_third_claimer_waits_until_a_device_is_released(lock_dir, holders):
    first, second = holders(3, lock_dir), holders(3, lock_dir)
    held_by_second = second.read_device()
    assert {first.read_device(), held_by_second} == {"cuda:0", "cuda:1"}
    third = claim_device(3, lock_dir=lock_dir, on_busy="error")
    assert third == "cuda:2"
    timer = threading.Timer(0.5, second.stop)
    timer.start()
    t0 = time.monotonic()
    fourth = claim_device(3, lock_dir=lock_dir, on_busy="wait", timeout=HANG_GUARD_S, poll_interval=0.05)
    timer.join()
    assert time.monotonic() - t0 >= 0.4  # it did wait for the release (the timer fires 0.5 s after it started)
    assert fourth == held_by_second


@pytest.mark.slow
def test_waiting_is_the_default_and_env_can_change_it(lock_dir, holders, monkeypatch):
    holder = holders(1, lock_dir)
    assert holder.read_device() == "cuda:0"
    with pytest.raises(DeviceBusyError):  # default policy: wait (here bounded by timeout)
        claim_device(1, lock_dir=lock_dir, timeout=0.2, poll_interval=0.05)
    monkeypatch.setenv(gpu_claim.ON_BUSY_ENV, "cpu")
    assert claim_device(1, lock_dir=lock_dir) == "cpu"
    monkeypatch.setenv(gpu_claim.ON_BUSY_ENV, "bogus")
    with pytest.raises(ValueError):
        claim_device(1, lock_dir=lock_dir)


@pytest.mark.slow
def test_sigkilled_holder_frees_its_device(lock_dir, holders):
    holder = holders(1, lock_dir)
    assert holder.read_device() == "cuda:0"
    with pytest.raises(DeviceBusyError):
        claim_device(1, lock_dir=lock_dir, on_busy="error")
    os.kill(holder.proc.pid, signal.SIGKILL)
    assert holder.proc.wait(timeout=HANG_GUARD_S) == -signal.SIGKILL
    dev = claim_device(1, lock_dir=lock_dir, on_busy="error")
    assert dev == "cuda:0" and dev.held
    assert f"pid {os.getpid()}" in dev.lock_path.read_text()


@pytest.mark.slow
def test_visible_devices_are_locked_by_their_physical_id(lock_dir, holders, monkeypatch):
    # another shell sees only GPU 1 and holds it (as its cuda:0)
    other = holders(1, lock_dir, env={"CUDA_VISIBLE_DEVICES": "1"})
    assert other.read_device() == "cuda:0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    mine = claim_device(2, lock_dir=lock_dir, on_busy="error")
    assert mine == "cuda:0" and mine.lock_path.name.endswith("-0.lock")
    # physical GPU 1 (my cuda:1) is the other shell's
    assert claim_device(2, lock_dir=lock_dir, on_busy="cpu") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
    assert claim_device(2, lock_dir=lock_dir, on_busy="error").lock_path.name.endswith("-3.lock")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-GPU-ab/1/0")
    mig = claim_device(1, lock_dir=lock_dir, on_busy="error")
    assert mig == "cuda:0" and mig.lock_path.name.endswith("-MIG-GPU-ab_1_0.lock")


def test_context_manager_and_release(lock_dir):
    with claim_device(1, lock_dir=lock_dir) as dev:
        assert dev == "cuda:0" and dev.index == 0 and dev.held
        assert claim_device(1, lock_dir=lock_dir, on_busy="cpu") == "cpu"
    assert not dev.held
    again = claim_device(1, lock_dir=lock_dir, on_busy="error")
    assert again == "cuda:0"
    again.release()
    again.release()  # twice is harmless
    assert claim_device(1, lock_dir=lock_dir, on_busy="error") == "cuda:0"


def test_claim_outlives_a_dropped_reference(lock_dir):
    import gc

    import torch

    device = torch.device(claim_device(1, lock_dir=lock_dir))  # the claim object is dropped
    gc.collect()
    assert device == torch.device("cuda:0")
    assert claim_device(1, lock_dir=lock_dir, on_busy="cpu") == "cpu"


def test_claim_is_a_plain_device_string_for_torch_and_pickle(lock_dir):
    import torch

    dev = claim_device(2, lock_dir=lock_dir)
    assert isinstance(dev, str) and torch.device(dev).index == 0
    clone = pickle.loads(pickle.dumps(dev))
    assert clone == "cuda:0" and type(clone) is str
    assert torch.zeros(1).to(claim_device(0, lock_dir=lock_dir)).device.type == "cpu"


def test_lock_dir_from_environment_and_slurm_jobs_are_separate(lock_dir, monkeypatch):
    monkeypatch.setenv(gpu_claim.LOCK_DIR_ENV, str(lock_dir))
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    a = claim_device(1, on_busy="error")
    assert a.lock_path.parent == lock_dir / "slurm-job-101"
    # another Slurm job on the node has GPUs of its own: it must not wait for job 101
    monkeypatch.setenv("SLURM_JOB_ID", "102")
    b = claim_device(1, on_busy="error")
    assert a == b == "cuda:0" and a.lock_path != b.lock_path
