"""Give each GPU job a device (or a share of one) of its own.

Snakemake's ``--resources gpu=N`` only limits how many GPU jobs run at once; it never
tells a job *which* GPU to use, so N concurrent jobs would all start on ``cuda:0``.
:func:`claim_device` fixes that: every candidate GPU has ``slots`` lock files (slots per
device, default 1), and a job takes ``job_slots`` of them on one GPU with an exclusive
``fcntl.flock`` each.  The kernel drops a flock when its process ends, crashes or is
killed (even by SIGKILL), so a dead job never leaves a slot claimed.

* **Slots.** With ``slots = 4`` (argument, else ``$SMOOTHSQUEEZE_GPU_SLOTS``, which wins
  over the configured value handed in, else 1) four one-slot jobs share each card: on a
  2-GPU machine ``--resources gpu=8`` runs eight small-CNN jobs, four per card.  One-slot
  claims spread over the devices (the device with the most free slots first).  A job that
  needs a whole card (the wide ResNet) asks for ``job_slots="all"`` (argument, else
  ``$SMOOTHSQUEEZE_GPU_JOB_SLOTS``, else 1): it takes every slot of one device, so nothing
  else shares it.  Slot 0 keeps the lock file name of the one-slot scheme
  (``gpu-<host>-<id>.lock``), slot s > 0 is ``gpu-<host>-<id>.slot<s>.lock``, so jobs with
  ``slots = 1`` and whole-device jobs exclude each other whatever setting the other has.
* Candidates honour ``CUDA_VISIBLE_DEVICES``: when it is set (by the user, or by Slurm
  for a job with ``--gpus``), only the devices it lists are candidates, and the returned
  index is relative to that list (``CUDA_VISIBLE_DEVICES=2,3`` gives ``cuda:0`` or
  ``cuda:1``).  Lock files are named after the listed ids, so shells with different
  lists still agree on which physical GPU is taken.
* Inside a Slurm job (``SLURM_JOB_ID`` set), Slurm has already given the job GPUs of
  its own; locks then live in a per-job subfolder, so jobs never wait for each other
  even when cgroups renumber every job's GPUs to ``0``.
* Without GPUs (``n_devices == 0``) the claim is ``"cpu"`` and takes no lock.

Lock folder: ``lock_dir`` argument, else ``$SMOOTHSQUEEZE_GPU_LOCK_DIR``, else
``/tmp/smoothsqueeze-gpu-locks``.  When no device has enough free slots, ``on_busy``
(argument, else ``$SMOOTHSQUEEZE_GPU_ON_BUSY``, else ``"wait"``) decides: ``"wait"`` polls
until one is free (``timeout`` seconds at most, then :class:`DeviceBusyError`), ``"cpu"``
falls back to the CPU, ``"error"`` raises :class:`DeviceBusyError` at once.

This module imports nothing from the package when loaded by path (tests and Slurm jobs
load it that way), so it stays importable without torch.

Usage::

    dev = claim_device()          # held until dev.release() or the process ends
    model.to(dev)

    with claim_device(job_slots="all") as dev:   # a whole card, released when the block ends
        ...
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import IO, Literal, Union

try:  # one-line user errors; absent when this file is loaded by path, outside the package
    from .errors import PipelineError
except ImportError:  # pragma: no cover - exercised by the by-path loaders (tests, Slurm jobs)
    class PipelineError(Exception):  # type: ignore[no-redef]
        """Stand-in for smoothsqueeze.errors.PipelineError when loaded by path."""

__all__ = [
    "DEFAULT_LOCK_DIR",
    "DeviceBusyError",
    "DeviceClaim",
    "SlotsError",
    "WHOLE_DEVICE_ARCHITECTURES",
    "candidate_ids",
    "claim_device",
    "job_slots_for",
    "resolve_job_slots",
    "slots_per_device",
]

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "/tmp/smoothsqueeze-gpu-locks"
LOCK_DIR_ENV = "SMOOTHSQUEEZE_GPU_LOCK_DIR"
ON_BUSY_ENV = "SMOOTHSQUEEZE_GPU_ON_BUSY"
#: Slots per device (jobs sharing one card); wins over the configured value.
SLOTS_ENV = "SMOOTHSQUEEZE_GPU_SLOTS"
#: Slots this job takes on its device: a number, or "all" for a whole card.
JOB_SLOTS_ENV = "SMOOTHSQUEEZE_GPU_JOB_SLOTS"
#: Architectures whose jobs keep a whole device (they fill one on their own).
WHOLE_DEVICE_ARCHITECTURES = frozenset({"wide_resnet"})
OnBusy = Literal["wait", "cpu", "error"]
JobSlots = Union[int, str]

# Claims made without a ``with`` block must outlive the caller's reference
# (``torch.device(claim_device())`` drops it at once): keep them here until released.
_HELD: dict[int, "DeviceClaim"] = {}


class DeviceBusyError(TimeoutError):
    """Every candidate GPU is claimed by another process."""


class SlotsError(PipelineError, ValueError):
    """A slot setting that is not a positive whole number (or 'all')."""


class DeviceClaim(str):
    """A device string (``"cuda:1"`` or ``"cpu"``) that holds its slots' locks.

    It is a ``str``, so ``torch.device(claim)`` and ``tensor.to(claim)`` accept it.
    ``release()`` (or leaving a ``with`` block) frees the slots; so does process exit.
    """

    _lock_files: list[IO[bytes]]
    lock_paths: tuple[Path, ...]
    slots: tuple[int, ...]

    def __new__(cls, device: str, lock_files: list[IO[bytes]] | None = None,
                lock_paths: list[Path] | None = None, slots: list[int] | None = None) -> "DeviceClaim":
        self = super().__new__(cls, device)
        self._lock_files = list(lock_files or [])
        self.lock_paths = tuple(lock_paths or ())
        self.slots = tuple(slots or ())
        if self._lock_files:
            _HELD[id(self)] = self
        return self

    @property
    def lock_path(self) -> Path | None:
        """The first lock file held (slot 0's for a whole device); None for the CPU."""
        return self.lock_paths[0] if self.lock_paths else None

    @property
    def held(self) -> bool:
        """True while this claim holds its locks."""
        return bool(self._lock_files)

    @property
    def index(self) -> int | None:
        """CUDA index of the claimed device, None for the CPU."""
        return int(self.split(":", 1)[1]) if self.startswith("cuda:") else None

    def release(self) -> None:
        """Free the slots for other processes; calling it again does nothing."""
        files, self._lock_files = self._lock_files, []
        _HELD.pop(id(self), None)
        _unlock(files)

    def __enter__(self) -> "DeviceClaim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # Pickle (e.g. to a DataLoader worker) as the plain string; the lock stays here.
        return (str, (str(self),))


def _unlock(files: list[IO[bytes]]) -> None:
    for handle in files:
        try:
            fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()


def _positive_int(value: object, what: str) -> int:
    """`value` (an int or its text) as an int >= 1, else SlotsError in one line."""
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise SlotsError(f"{what} = {value!r}: must be a whole number >= 1")
    return int(text)


def slots_per_device(configured: int | None = None) -> int:
    """Slots per device: ``$SMOOTHSQUEEZE_GPU_SLOTS`` when set, else ``configured``, else 1."""
    env = os.environ.get(SLOTS_ENV)
    if env is not None and env.strip():
        return _positive_int(env, SLOTS_ENV)
    return 1 if configured is None else _positive_int(configured, "gpu_slots")


def resolve_job_slots(job_slots: JobSlots | None, slots: int) -> int:
    """How many of a device's ``slots`` a job takes: 'all' (or more than there are) is all of them.

    ``job_slots=None`` reads ``$SMOOTHSQUEEZE_GPU_JOB_SLOTS`` (default 1).
    """
    if job_slots is None:
        job_slots = os.environ.get(JOB_SLOTS_ENV, "").strip() or 1
    if isinstance(job_slots, str) and job_slots.strip().lower() == "all":
        return slots
    return min(_positive_int(job_slots, JOB_SLOTS_ENV), slots)


def job_slots_for(architecture: str) -> JobSlots:
    """Slots a GPU job for `architecture` asks for: 'all' (a whole card) or 1."""
    return "all" if architecture in WHOLE_DEVICE_ARCHITECTURES else 1


def _default_device_count() -> int:
    """Number of CUDA devices torch sees (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a package dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def candidate_ids(n_devices: int | None = None,
                  visible: str | None = None) -> list[str]:
    """Ids naming the lock files of each candidate device, in CUDA index order.

    ``visible`` defaults to ``$CUDA_VISIBLE_DEVICES``.  When it is set, only its
    entries are candidates (at most ``n_devices`` of them); an empty value or ``-1``
    hides every GPU.  ``n_devices=None`` asks torch how many devices this process sees.
    """
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if n_devices is None:
        n_devices = _default_device_count()
    if n_devices < 0:
        raise ValueError(f"n_devices must be >= 0, got {n_devices}")
    if visible is None:
        return [str(i) for i in range(n_devices)]
    ids: list[str] = []
    for entry in visible.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break  # CUDA ignores everything from the first invalid entry on
        ids.append(entry)
    return ids[:n_devices]


def _lock_dir(lock_dir: str | os.PathLike[str] | None) -> Path:
    """The folder holding the lock files (per Slurm job inside a Slurm job)."""
    base = Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)
    job = os.environ.get("SLURM_JOB_ID")
    path = base / f"slurm-job-{job}" if job else base
    for folder in (base, path):
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            try:  # a /tmp-like folder, so that other users' jobs can lock in it too
                os.chmod(folder, 0o1777)
            except OSError:
                pass
    return path


def slot_lock_path(folder: Path, host: str, gpu_id: str, slot: int) -> Path:
    """Lock file of one slot: slot 0 keeps the one-slot name, ``gpu-<host>-<id>.lock``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", gpu_id)  # MIG ids may hold slashes
    return folder / (f"gpu-{host}-{safe}.lock" if slot == 0 else f"gpu-{host}-{safe}.slot{slot}.lock")


def _try_lock(path: Path) -> IO[bytes] | None:
    """Open and exclusively flock ``path``; None when another process holds it."""
    # os.open gives a non-inheritable fd: exec'd children do not keep the lock alive.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        writable = True
    except PermissionError:  # another user's lock file: flock works read-only too
        fd = os.open(path, os.O_RDONLY)
        writable = False
    handle = os.fdopen(fd, "r+b" if writable else "rb", buffering=0)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    if writable:  # for people wondering who holds the GPU
        try:
            os.fchmod(fd, 0o666)
        except OSError:
            pass
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} host {socket.gethostname()}\n".encode())
    return handle


def _free_slots(paths: list[Path]) -> int:
    """How many of one device's slot files no process holds now (probe: lock, then unlock)."""
    free = 0
    for path in paths:
        handle = _try_lock(path)
        if handle is not None:
            free += 1
            _unlock([handle])
    return free


def _take(paths: list[Path], need: int) -> tuple[list[IO[bytes]], list[int]] | None:
    """Lock `need` of one device's slot files (all of them in order for a whole device), or none."""
    files: list[IO[bytes]] = []
    taken: list[int] = []
    for slot, path in enumerate(paths):
        handle = _try_lock(path)
        if handle is None:
            if need == len(paths):  # a whole device: any busy slot means not now
                break
            continue
        files.append(handle)
        taken.append(slot)
        if len(files) == need:
            return files, taken
    _unlock(files)
    return None


def claim_device(n_devices: int | None = None, *,
                 lock_dir: str | os.PathLike[str] | None = None,
                 on_busy: OnBusy | None = None,
                 timeout: float | None = None,
                 poll_interval: float = 0.2,
                 slots: int | None = None,
                 job_slots: JobSlots | None = None) -> DeviceClaim:
    """Claim ``job_slots`` free slots of one GPU and return it as ``"cuda:i"`` (or ``"cpu"``).

    ``n_devices`` is how many CUDA devices this process sees (None: ask torch); tests
    pass a number to simulate GPUs on a CPU-only machine.  ``slots`` per device: None
    reads ``$SMOOTHSQUEEZE_GPU_SLOTS`` (default 1); ``job_slots``: a number or ``"all"``
    (None reads ``$SMOOTHSQUEEZE_GPU_JOB_SLOTS``, default 1).  The claim lasts until
    ``release()``, the end of a ``with`` block, or the end of the process.  See the
    module docstring for ``lock_dir`` and ``on_busy``; ``timeout`` bounds the wait.
    """
    policy = on_busy or os.environ.get(ON_BUSY_ENV) or "wait"
    if policy not in ("wait", "cpu", "error"):
        raise ValueError(f"on_busy must be 'wait', 'cpu' or 'error', got {policy!r}")
    per_device = slots_per_device() if slots is None else _positive_int(slots, "slots")
    need = resolve_job_slots(job_slots, per_device)
    ids = candidate_ids(n_devices)
    if not ids:
        return DeviceClaim("cpu")
    folder = _lock_dir(lock_dir)
    host = socket.gethostname()
    paths = [[slot_lock_path(folder, host, gpu_id, s) for s in range(per_device)] for gpu_id in ids]
    what = f"{need} of {per_device} slots" if per_device > 1 else "a GPU"
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting = False
    while True:
        # One-slot jobs spread: the device with the most free slots first (ties: lowest index).
        order = (sorted(range(len(ids)), key=lambda i: -_free_slots(paths[i]))
                 if per_device > 1 and need < per_device else range(len(ids)))
        for index in order:
            got = _take(paths[index], need)
            if got is not None:
                files, taken = got
                log.info("claimed cuda:%d, slots %s of %d (locks in %s)", index, taken, per_device, folder)
                return DeviceClaim(f"cuda:{index}", files, [paths[index][s] for s in taken], taken)
        if policy == "cpu":
            log.warning("no GPU has %s free; falling back to the CPU", what)
            return DeviceClaim("cpu")
        if policy == "error" or (deadline is not None and time.monotonic() >= deadline):
            raise DeviceBusyError(
                f"no GPU of {len(ids)} has {what} free: claimed by other processes (locks in {folder})")
        if not waiting:
            log.info("no GPU of %d has %s free; waiting for a release", len(ids), what)
            waiting = True
        time.sleep(poll_interval if deadline is None
                   else max(0.0, min(poll_interval, deadline - time.monotonic())))
