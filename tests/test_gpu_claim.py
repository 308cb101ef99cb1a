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
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.gpu_claim import (
    DeviceBusyError,
    SlotsError,
    candidate_ids,
    claim_device,
    job_slots_for,
    resolve_job_slots,
    slots_per_device,
)

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
                gpu_claim.ON_BUSY_ENV, gpu_claim.SLOTS_ENV, gpu_claim.JOB_SLOTS_ENV):
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
    t0 = time.monotonic()  # before the timer starts: the release comes >= 0.5 s after t0 however slow the machine
    timer.start()
    fourth = claim_device(3, lock_dir=lock_dir, on_busy="wait", timeout=HANG_GUARD_S, poll_interval=0.05)
    timer.join()
    assert time.monotonic() - t0 >= 0.5  # it did wait for the release (no upper bound: a loaded machine is slow)
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


# ---------------------------------------------------------------- slots: several jobs per GPU


def test_slots_per_device_environment_wins_over_the_setting(lock_dir, monkeypatch):
    assert slots_per_device() == 1
    assert slots_per_device(4) == 4
    monkeypatch.setenv(gpu_claim.SLOTS_ENV, "2")
    assert slots_per_device(4) == 2
    monkeypatch.setenv(gpu_claim.SLOTS_ENV, "")
    assert slots_per_device(3) == 3  # an empty variable counts as unset
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv(gpu_claim.SLOTS_ENV, bad)
        with pytest.raises(SlotsError, match=gpu_claim.SLOTS_ENV) as err:
            slots_per_device(4)
        assert "\n" not in str(err.value) and isinstance(err.value, PipelineError)
    monkeypatch.delenv(gpu_claim.SLOTS_ENV)
    for bad in (0, -2, True, "x"):
        with pytest.raises(SlotsError, match="gpu_slots"):
            slots_per_device(bad)
    with pytest.raises(SlotsError):
        claim_device(2, lock_dir=lock_dir, slots=0)


def test_job_slots_all_and_capped_at_the_device(monkeypatch):
    assert resolve_job_slots(None, 4) == 1
    assert resolve_job_slots("all", 4) == 4
    assert resolve_job_slots("ALL", 1) == 1
    assert resolve_job_slots(2, 4) == 2
    assert resolve_job_slots(8, 4) == 4  # more than a card has: the whole card
    monkeypatch.setenv(gpu_claim.JOB_SLOTS_ENV, "all")
    assert resolve_job_slots(None, 3) == 3
    monkeypatch.setenv(gpu_claim.JOB_SLOTS_ENV, "0")
    with pytest.raises(SlotsError, match=gpu_claim.JOB_SLOTS_ENV):
        resolve_job_slots(None, 3)
    assert job_slots_for("wide_resnet") == "all"
    assert job_slots_for("madry_cnn") == 1 and job_slots_for("resnet_small") == 1


def test_four_jobs_per_card_on_two_cards(lock_dir):
    claims = [claim_device(2, lock_dir=lock_dir, slots=4, on_busy="error") for _ in range(8)]
    assert [str(c) for c in claims[:2]] == ["cuda:0", "cuda:1"]  # one-slot jobs spread over the cards
    assert sorted(str(c) for c in claims) == ["cuda:0"] * 4 + ["cuda:1"] * 4
    for device in ("cuda:0", "cuda:1"):  # each card's four slots, each held once
        held = sorted(c.slots[0] for c in claims if c == device)
        assert held == [0, 1, 2, 3]
    assert len({c.lock_path for c in claims}) == 8 and all(len(c.lock_paths) == 1 for c in claims)
    # slot exhaustion: a ninth job finds no free slot
    assert claim_device(2, lock_dir=lock_dir, slots=4, on_busy="cpu") == "cpu"
    with pytest.raises(DeviceBusyError, match="1 of 4 slots"):
        claim_device(2, lock_dir=lock_dir, slots=4, on_busy="error")
    # release: the freed slot (and only it) is taken again
    freed = next(c for c in claims if c == "cuda:1" and c.slots == (2,))
    freed.release()
    assert not freed.held
    again = claim_device(2, lock_dir=lock_dir, slots=4, on_busy="error")
    assert again == "cuda:1" and again.slots == (2,) and again.lock_path == freed.lock_path
    assert claim_device(2, lock_dir=lock_dir, slots=4, on_busy="cpu") == "cpu"


def test_one_slot_jobs_go_to_the_card_with_most_free_slots(lock_dir):
    first = [claim_device(2, lock_dir=lock_dir, slots=3, on_busy="error") for _ in range(4)]
    assert sorted(str(c) for c in first) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    for claim in first:
        if claim == "cuda:0":
            claim.release()
    # cuda:0 now has 3 free slots, cuda:1 one: the next two jobs go to cuda:0
    assert claim_device(2, lock_dir=lock_dir, slots=3, on_busy="error") == "cuda:0"
    assert claim_device(2, lock_dir=lock_dir, slots=3, on_busy="error") == "cuda:0"


def test_whole_device_job_keeps_a_card_to_itself(lock_dir):
    small = claim_device(2, lock_dir=lock_dir, slots=4, on_busy="error")
    assert small == "cuda:0"
    wide = claim_device(2, lock_dir=lock_dir, slots=4, job_slots="all", on_busy="error")
    assert wide == "cuda:1" and wide.slots == (0, 1, 2, 3) and len(wide.lock_paths) == 4
    # a second whole-card job finds no empty card; one-slot jobs fill cuda:0 only
    with pytest.raises(DeviceBusyError, match="4 of 4 slots"):
        claim_device(2, lock_dir=lock_dir, slots=4, job_slots="all", on_busy="error")
    others = [claim_device(2, lock_dir=lock_dir, slots=4, on_busy="error") for _ in range(3)]
    assert all(c == "cuda:0" for c in others)
    assert claim_device(2, lock_dir=lock_dir, slots=4, on_busy="cpu") == "cpu"
    wide.release()
    assert claim_device(2, lock_dir=lock_dir, slots=4, on_busy="error") == "cuda:1"
    # a partial claim (2 slots) needs two free slots on one card: cuda:1 has 3
    pair = claim_device(2, lock_dir=lock_dir, slots=4, job_slots=2, on_busy="error")
    assert pair == "cuda:1" and len(pair.slots) == 2
    with pytest.raises(DeviceBusyError):
        claim_device(2, lock_dir=lock_dir, slots=4, job_slots=2, on_busy="error")


def test_whole_device_waits_for_every_slot_and_env_sets_the_job_size(lock_dir, monkeypatch):
    monkeypatch.setenv(gpu_claim.SLOTS_ENV, "2")
    monkeypatch.setenv(gpu_claim.JOB_SLOTS_ENV, "all")
    small = claim_device(1, lock_dir=lock_dir, job_slots=1, on_busy="error")
    assert small == "cuda:0" and small.slots == (0,)
    with pytest.raises(DeviceBusyError):  # the environment's "all": one held slot is enough to wait
        claim_device(1, lock_dir=lock_dir, timeout=0.2, poll_interval=0.05)
    small.release()
    whole = claim_device(1, lock_dir=lock_dir, on_busy="error")
    assert whole.slots == (0, 1)


def test_one_slot_setting_and_whole_device_claims_exclude_each_other(lock_dir):
    # a job run with slots = 1 holds slot 0's file, the one-slot scheme's name
    single = claim_device(1, lock_dir=lock_dir, slots=1, on_busy="error")
    assert single.lock_path.name.endswith("-0.lock")
    with pytest.raises(DeviceBusyError):
        claim_device(1, lock_dir=lock_dir, slots=4, job_slots="all", on_busy="error")
    single.release()
    whole = claim_device(1, lock_dir=lock_dir, slots=4, job_slots="all", on_busy="error")
    assert whole.lock_path.name.endswith("-0.lock") and whole.lock_paths[3].name.endswith("-0.slot3.lock")
    assert claim_device(1, lock_dir=lock_dir, slots=1, on_busy="cpu") == "cpu"


@pytest.mark.slow
def test_slots_are_shared_between_processes_and_freed_by_sigkill(lock_dir, holders):
    env = {gpu_claim.SLOTS_ENV: "2"}
    first, second = holders(1, lock_dir, env=env), holders(1, lock_dir, env=env)
    assert first.read_device() == second.read_device() == "cuda:0"  # two jobs share the one card
    with pytest.raises(DeviceBusyError):
        claim_device(1, lock_dir=lock_dir, slots=2, on_busy="error")
    os.kill(second.proc.pid, signal.SIGKILL)
    assert second.proc.wait(timeout=HANG_GUARD_S) == -signal.SIGKILL
    mine = claim_device(1, lock_dir=lock_dir, slots=2, on_busy="error")
    assert mine == "cuda:0" and mine.held
    mine.release()
    # a whole-card holder in another process: killed, it frees every slot at once
    first.stop()
    wide = holders(1, lock_dir, env={**env, gpu_claim.JOB_SLOTS_ENV: "all"})
    assert wide.read_device() == "cuda:0"
    assert claim_device(1, lock_dir=lock_dir, slots=2, on_busy="cpu") == "cpu"
    os.kill(wide.proc.pid, signal.SIGKILL)
    wide.proc.wait(timeout=HANG_GUARD_S)
    assert claim_device(1, lock_dir=lock_dir, slots=2, job_slots="all", on_busy="error").slots == (0, 1)


def test_slots_follow_cuda_visible_devices(lock_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
    whole = claim_device(2, lock_dir=lock_dir, slots=2, job_slots="all", on_busy="error")
    assert whole == "cuda:0" and [p.name.split("-")[-1] for p in whole.lock_paths] == ["3.lock", "3.slot1.lock"]
    # another shell that sees only physical GPU 3 finds both of its slots taken
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert claim_device(1, lock_dir=lock_dir, slots=2, on_busy="cpu") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    part = claim_device(2, lock_dir=lock_dir, slots=2, on_busy="error")
    assert part == "cuda:0" and part.lock_path.name.endswith("-2.lock")  # physical GPU 2 is this shell's cuda:0
