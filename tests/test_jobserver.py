"""The fork server (smoothsqueeze.jobserver): a served stage gives the same files as a fresh process,
errors and exit codes come through, a killed client's job is killed, and no server means no change."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, digits_settings
from smoothsqueeze import jobserver
from smoothsqueeze.data import prepare_digits

pytestmark = pytest.mark.slow  # starts servers and stage subprocesses

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "workflow"), "SMOOTHSQUEEZE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("js_data") / "digits.npz"
    prepare_digits(path)
    return path


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    saved = os.environ.get(jobserver.ENV)
    started = jobserver.start()
    assert started is not None
    yield started
    jobserver.stop(started)
    if saved is not None:
        os.environ[jobserver.ENV] = saved
    assert not Path(started[1]).exists()


def _train(out: Path, data: Path, k: int, env: dict[str, str], **popen: object) -> subprocess.Popen | subprocess.CompletedProcess:
    spec = digits_settings({"sigma": 0.3}, k)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "smoothsqueeze", "train", "--spec", json.dumps(spec), "--data", str(data),
           "--checkpoint", str(out / "model.pt"), "--metrics", str(out / "metrics.json"), "--settings-out", str(out / "settings.json")]
    if popen.pop("background", False):
        return subprocess.Popen(cmd, env=env, cwd=out, **popen)  # type: ignore[call-overload]
    return subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, timeout=600)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_served_job_writes_the_same_model_as_a_fresh_process(server, data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _proc, path = server
    served = _train(tmp_path / "served", data, 30, {**ENV, jobserver.ENV: path})
    fresh = _train(tmp_path / "fresh", data, 30, {**ENV, jobserver.ENV: "off"})
    assert served.returncode == 0 and fresh.returncode == 0, served.stderr + fresh.stderr
    assert "done: train" in served.stdout  # the job's output reached the client's stdout
    assert _sha(tmp_path / "served" / "model.pt") == _sha(tmp_path / "fresh" / "model.pt")
    assert json.loads((tmp_path / "served" / "settings.json").read_text())["provenance"]["torch_threads"] == 1


def test_errors_and_exit_codes_come_through(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _proc, path = server
    proc = subprocess.run([sys.executable, "-m", "smoothsqueeze", "evaluate", "--spec", "{}", "--checkpoint", "x.pt", "--data", "x.npz",
                           "--out", "r.json"], env={**ENV, jobserver.ENV: path}, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_without_a_server_the_stage_runs_itself(data: Path, tmp_path: Path) -> None:
    done = _train(tmp_path / "m", data, 5, {**ENV, jobserver.ENV: str(tmp_path / "no-such-socket")})
    assert done.returncode == 0 and (tmp_path / "m" / "model.pt").exists()


def test_a_killed_client_takes_its_job_with_it(server, data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc, path = server
    client = _train(tmp_path / "long", data, 10**7, {**ENV, jobserver.ENV: path}, background=True,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server_process = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while not server_process.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server_process.children(), "the server never started the job"
    client.send_signal(signal.SIGTERM)
    client.wait(timeout=30)
    deadline = time.monotonic() + 30
    while server_process.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server_process.children(), "the job outlived its client"


def test_the_server_stops_when_its_parent_is_gone(tmp_path: Path) -> None:
    """A shell starts the server (its parent) and is killed: the server notices, stops and removes its socket."""
    sock = tmp_path / "s"
    shell = subprocess.Popen(["bash", "-c", f'"{sys.executable}" -c "$0" "{sock}" $$ & sleep 600', jobserver.SERVE], env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists()
        (server,) = [p for p in psutil.Process(shell.pid).children() if "jobserver" in " ".join(p.cmdline())]
        shell.kill()
        shell.wait()
        server.wait(timeout=30)
        assert not sock.exists()
    finally:
        shell.kill()
