"""Give each GPU job a device of its own.

Snakemake's ``--resources gpu=N`` only limits how many GPU jobs run at once; it never
tells a job *which* GPU to use, so N concurrent jobs would all start on ``cuda:0``.
:func:`claim_device` fixes that: every candidate GPU has one lock file, and a job takes
the first GPU whose file it can ``fcntl.flock`` exclusively.  The kernel drops a flock
when its process ends, crashes or is killed (even by SIGKILL), so a dead job never
leaves a GPU claimed.

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
``/tmp/smoothsqueeze-gpu-locks``.  When every GPU is taken, ``on_busy`` (argument, else
``$SMOOTHSQUEEZE_GPU_ON_BUSY``, else ``"wait"``) decides: ``"wait"`` polls until one is
free (``timeout`` seconds at most, then :class:`DeviceBusyError`), ``"cpu"`` falls
back to the CPU, ``"error"`` raises :class:`DeviceBusyError` at once.

Usage::

    dev = claim_device()          # held until dev.release() or the process ends
    model.to(dev)

    with claim_device() as dev:   # released when the block ends
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
from typing import IO, Literal

__all__ = [
    "DEFAULT_LOCK_DIR",
    "DeviceBusyError",
    "DeviceClaim",
    "candidate_ids",
    "claim_device",
]

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "/tmp/smoothsqueeze-gpu-locks"
LOCK_DIR_ENV = "SMOOTHSQUEEZE_GPU_LOCK_DIR"
ON_BUSY_ENV = "SMOOTHSQUEEZE_GPU_ON_BUSY"
OnBusy = Literal["wait", "cpu", "error"]

# Claims made without a ``with`` block must outlive the caller's reference
# (``torch.device(claim_device())`` drops it at once): keep them here until released.
_HELD: dict[int, "DeviceClaim"] = {}


class DeviceBusyError(TimeoutError):
    """Every candidate GPU is claimed by another process."""


class DeviceClaim(str):
    """A device string (``"cuda:1"`` or ``"cpu"``) that holds its GPU's lock.

    It is a ``str``, so ``torch.device(claim)`` and ``tensor.to(claim)`` accept it.
    ``release()`` (or leaving a ``with`` block) frees the GPU; so does process exit.
    """

    _lock_file: IO[bytes] | None
    lock_path: Path | None

    def __new__(cls, device: str, lock_file: IO[bytes] | None = None,
                lock_path: Path | None = None) -> "DeviceClaim":
        self = super().__new__(cls, device)
        self._lock_file = lock_file
        self.lock_path = lock_path
        if lock_file is not None:
            _HELD[id(self)] = self
        return self

    @property
    def held(self) -> bool:
        """True while this claim holds a GPU lock."""
        return self._lock_file is not None

    @property
    def index(self) -> int | None:
        """CUDA index of the claimed device, None for the CPU."""
        return int(self.split(":", 1)[1]) if self.startswith("cuda:") else None

    def release(self) -> None:
        """Free the GPU for other processes; calling it again does nothing."""
        if self._lock_file is not None:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            finally:
                self._lock_file.close()
                self._lock_file = None
                _HELD.pop(id(self), None)

    def __enter__(self) -> "DeviceClaim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # Pickle (e.g. to a DataLoader worker) as the plain string; the lock stays here.
        return (str, (str(self),))


def _default_device_count() -> int:
    """Number of CUDA devices torch sees (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a package dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def candidate_ids(n_devices: int | None = None,
                  visible: str | None = None) -> list[str]:
    """Ids naming the lock file of each candidate device, in CUDA index order.

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


def claim_device(n_devices: int | None = None, *,
                 lock_dir: str | os.PathLike[str] | None = None,
                 on_busy: OnBusy | None = None,
                 timeout: float | None = None,
                 poll_interval: float = 0.2) -> DeviceClaim:
    """Claim a GPU no other process holds and return it as ``"cuda:i"`` (or ``"cpu"``).

    ``n_devices`` is how many CUDA devices this process sees (None: ask torch); tests
    pass a number to simulate GPUs on a CPU-only machine.  The claim lasts until
    ``release()``, the end of a ``with`` block, or the end of the process.  See the
    module docstring for ``lock_dir`` and ``on_busy``; ``timeout`` bounds the wait.
    """
    policy = on_busy or os.environ.get(ON_BUSY_ENV) or "wait"
    if policy not in ("wait", "cpu", "error"):
        raise ValueError(f"on_busy must be 'wait', 'cpu' or 'error', got {policy!r}")
    ids = candidate_ids(n_devices)
    if not ids:
        return DeviceClaim("cpu")
    folder = _lock_dir(lock_dir)
    host = socket.gethostname()
    paths = [folder / f"gpu-{host}-{re.sub(r'[^A-Za-z0-9._-]', '_', gpu_id)}.lock"
             for gpu_id in ids]  # MIG ids may hold slashes
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting = False
    while True:
        for index, path in enumerate(paths):
            handle = _try_lock(path)
            if handle is not None:
                log.info("claimed cuda:%d (lock %s)", index, path)
                return DeviceClaim(f"cuda:{index}", handle, path)
        if policy == "cpu":
            log.warning("all %d GPUs are claimed; falling back to the CPU", len(paths))
            return DeviceClaim("cpu")
        if policy == "error" or (deadline is not None and time.monotonic() >= deadline):
            raise DeviceBusyError(
                f"all {len(paths)} GPUs are claimed by other processes (locks in {folder})")
        if not waiting:
            log.info("all %d GPUs are claimed; waiting for one to be released", len(paths))
            waiting = True
        time.sleep(poll_interval if deadline is None
                   else max(0.0, min(poll_interval, deadline - time.monotonic())))
