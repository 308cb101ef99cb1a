"""A fork server for the workflow's jobs: `import torch` once per run, not once per job.

Every PyTorch job of a local Snakemake run is a fresh `python -m smoothsqueeze <stage>` process,
and importing torch costs about 2 CPU seconds each time: a third of the digits demo's CPU time
went to imports. So the Snakefile's `onstart` starts one server per local run; it imports torch
and the stage modules once, runs nothing on them (no thread pool, no CUDA), and waits on a Unix
socket. A job's `python -m smoothsqueeze <stage>` (the client, ~50 ms) sends its arguments,
environment, working directory and its stdin/stdout/stderr (SCM_RIGHTS) to the server, which forks
a child: the child takes over those file descriptors, environment and folder, sets the job's
thread count and runs the same `cli.main(argv)` a fresh process would, so its outputs are the
same bit for bit. The client waits for the child's exit status and exits with it.

Robustness:
- The server is single-threaded (a selector loop): forking a process that runs other threads is unsafe.
- A client that dies (Snakemake killed the job) closes its socket: the server kills the child's
  process group. A server whose parent (Snakemake) died shuts down, killing its children.
- No server, or a socket that does not answer: the client runs the stage itself, as before.
  `SMOOTHSQUEEZE_JOBSERVER=off` (or unset) turns it off; the Snakefile starts it only for a local,
  non-dry run (no cluster job ever sees it).
- Only stages that read and write files are served (not `figures`, which draws in worker
  processes, nor `project` or `prepare-data`).

What it changes: Snakemake's benchmark files measure the client, so their CPU time and memory are
the client's (wall time stays right); the stages record their own CPU seconds (metrics.json,
audit records), which the cost table reads.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Environment variable naming the server's socket (unset or "off": no server).
ENV = "SMOOTHSQUEEZE_JOBSERVER"
#: Stages a server runs (the rest always run in their own process).
SERVED = frozenset({"train", "craft-blackbox", "evaluate", "analysis", "audit", "table-row", "table", "compare", "audit-table", "cost", "claims"})
#: Modules the server imports before it forks (what the served stages import).
WARM = ("torch", "numpy", "scipy.stats", "pandas", "smoothsqueeze.cli", "smoothsqueeze.train", "smoothsqueeze.evaluate",
        "smoothsqueeze.analysis.eq4", "smoothsqueeze.audit.model_audit", "smoothsqueeze.tables", "smoothsqueeze.audit.table", "smoothsqueeze.cost",
        "pyautoattack")
_HEADER = struct.Struct("!Q")


# ---------------------------------------------------------------- client


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the job server closed the connection")
        data += chunk
    return data


def run_remote(argv: list[str]) -> int | None:
    """Run `argv` (a stage and its options) on the job server; None when there is none to use.

    None means: run the stage in this process (no server configured or reachable, or a stage
    the server does not run). Once the server has accepted the job, its exit status is returned.
    """
    path = os.environ.get(ENV, "")
    if not path or path == "off" or not argv or argv[0] not in SERVED:
        return None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    except OSError:
        return None
    with sock:
        payload = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
        try:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            socket.send_fds(sock, [_HEADER.pack(len(payload))], [0, 1, 2])
            sock.sendall(payload)
            status = _recv_exact(sock, 4)
        except (OSError, ConnectionError):
            # The server died before it answered: the child (if any) was killed with it, and every
            # stage writes atomically, so running the stage here is safe.
            return None
    return struct.unpack("!i", status)[0]


# ---------------------------------------------------------------- server


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become the job (its fds, environment, folder, threads) and run its stage."""
    os.setpgid(0, 0)
    _die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ENV, None)
    os.chdir(request["cwd"])
    code = 1
    try:
        import torch

        threads = os.environ.get("OMP_NUM_THREADS")
        if threads and threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
        from .cli import main

        sys.argv = [sys.argv[0], *request["argv"]]
        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the job's traceback goes to its own stderr, as in a fresh process
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _die_with_parent() -> None:
    """Linux: the child is killed when the server dies (so a client that then runs its job itself
    never races an orphaned copy of it). Elsewhere the server's shutdown kills its children."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve(path: str, parent: int, idle_exit: float | None = None) -> None:
    """Accept jobs on the Unix socket `path` until the process `parent` is gone (or SIGTERM)."""
    import importlib

    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    last = time.monotonic()
    try:
        while not stopping and os.getppid() == parent:
            for key, _ in selector.select(timeout=0.2):
                if key.fileobj is listener:
                    _accept(listener, selector, children)
                    continue
                conn = key.fileobj
                try:
                    gone = not conn.recv(1)
                except OSError:
                    gone = True
                if gone:  # the client died (Snakemake killed the job): so does its job
                    pid = next((p for p, c in children.items() if c is conn), None)
                    if pid is not None:
                        _kill(pid)
                        children.pop(pid, None)
                    selector.unregister(conn)
                    conn.close()
            for pid, status in _reaped():
                conn = children.pop(pid, None)
                if conn is not None:
                    try:
                        conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
                    except OSError:
                        pass
                    selector.unregister(conn)
                    conn.close()
            if children:
                last = time.monotonic()
            elif idle_exit is not None and time.monotonic() - last > idle_exit:
                break
    finally:
        for pid in list(children):
            _kill(pid)
        listener.close()
        Path(path).unlink(missing_ok=True)


def _accept(listener: socket.socket, selector: selectors.BaseSelector, children: dict[int, socket.socket]) -> None:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return
    conn.setblocking(True)
    try:
        head, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
        if len(head) != _HEADER.size or len(fds) != 3:
            raise ConnectionError("malformed request")
        request = json.loads(_recv_exact(conn, _HEADER.unpack(head)[0]))
    except (OSError, ConnectionError, ValueError):
        conn.close()
        return
    pid = os.fork()
    if pid == 0:
        # The child keeps only its job's file descriptors: another job's connection held open here
        # would keep that job's client waiting if the server died.
        for other in (listener, conn, *children.values()):
            other.close()
        selector.close()
        _child(request, fds)
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    selector.register(conn, selectors.EVENT_READ)


def _reaped() -> list[tuple[int, int]]:
    out = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append((pid, status))


def _kill(pid: int) -> None:
    """Stop a child and everything it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        for _ in range(20):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.05)


# ---------------------------------------------------------------- starting and stopping (the Snakefile's hooks)


# The server process: no command line of its own (the package has one, `python -m smoothsqueeze`).
SERVE = "import sys; from smoothsqueeze.jobserver import serve; serve(sys.argv[1], int(sys.argv[2]))"


def start(log: str | Path | None = None) -> tuple[Any, str] | None:
    """Start a server for this process's jobs and point them to it (os.environ); None when turned off.

    Returns (the server's Popen, its socket path). The server stops when this process does.
    """
    import subprocess

    if os.environ.get(ENV) == "off":
        return None
    folder = tempfile.mkdtemp(prefix="smoothsqueeze-jobs-")
    path = os.path.join(folder, "socket")
    out = open(log or os.path.join(folder, "server.log"), "ab")  # noqa: SIM115 - the server writes there for its whole life
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, path, str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            return None
        time.sleep(0.05)
    os.environ[ENV] = path
    return proc, path


def stop(server: tuple[Any, str] | None) -> None:
    """Stop a server `start` returned (its children are killed with it) and forget it."""
    if not server:
        return
    proc, path = server
    if os.environ.get(ENV) == path:
        del os.environ[ENV]
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001
        proc.kill()
    Path(path).unlink(missing_ok=True)
    folder = Path(path).parent
    if folder.name.startswith("smoothsqueeze-jobs-"):
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
