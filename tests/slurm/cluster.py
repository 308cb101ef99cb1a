"""A throw-away single-node Slurm cluster with fake GPUs, for tests (no systemd needed).

Uses Debian's packages (slurm-wlm 22.05: ``munge slurmctld slurmd slurm-client``),
installing them with apt when missing (root only).  Everything lives in one folder:
a private munge key and socket, ``slurm.conf``, ``gres.conf``, state, spool and logs;
daemons run in the foreground as children of this process and are stopped by pid.

* No slurmdbd: ``sacct`` does not work, so the Snakemake Slurm plugin must be run with
  ``slurm-status-command: squeue``; ``MinJobAge`` (default 300 s here) keeps finished
  jobs visible to ``squeue`` long enough.
* GPUs: ``GresTypes=gpu`` and ``Gres=gpu:N`` with a gres.conf ``File=`` per GPU naming a
  character device (``/dev/fakegpuI``, made with ``mknod c 1 3``, i.e. /dev/null's
  numbers); Slurm sets ``CUDA_VISIBLE_DEVICES`` in jobs that ask for GPUs.
* The plugin's in-job ``srun`` runs with every ``SLURM_*`` variable removed, including
  ``SLURM_CONF``, so it reads ``/etc/slurm/slurm.conf``: while the cluster runs, that
  path is a symlink to this cluster's config (refused if a real config is there).

Command line::

    python tests/slurm/cluster.py start DIR [--gpus 2] [--partition compute]
    export SLURM_CONF=DIR/slurm.conf     # for sbatch, squeue and snakemake
    python tests/slurm/cluster.py stop DIR
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client"]
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel"]
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = ".smoothsqueeze-test-slurm"  # marks a folder as one of these clusters


class ClusterUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; the message says why."""


def _run(cmd: list[str], timeout: float = 30, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


#: apt-get may take minutes on a slow mirror, never a quarter hour: a hung apt-get is reported.
APT_TIMEOUT_S = 300


def _apt(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return _run(cmd, timeout=APT_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise ClusterUnavailable(f"`{' '.join(cmd)}` timed out after {APT_TIMEOUT_S} s") from None


def ensure_installed() -> float:
    """Install the Slurm and munge packages when missing; return seconds spent."""
    if all(shutil.which(b) for b in BINARIES):
        return 0.0
    if os.geteuid() != 0:
        raise ClusterUnavailable("Slurm is not installed and installing it needs root")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("Slurm is not installed and there is no apt-get")
    t0 = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    result = _apt(install, env)
    if result.returncode != 0:  # maybe stale package lists
        _apt(["apt-get", "update", "-q"], env)
        result = _apt(install, env)
    if result.returncode != 0 or not all(shutil.which(b) for b in BINARIES):
        raise ClusterUnavailable(
            "apt-get could not install Slurm: " + (result.stderr or result.stdout)[-800:])
    return time.monotonic() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> str:
    """The ``CPUs=... RealMemory=...`` part of ``slurmd -C``, so the node is not drained."""
    out = _run(["slurmd", "-C"]).stdout.split("\n", 1)[0]
    return " ".join(w for w in out.split() if not w.startswith("NodeName="))


@dataclass
class SlurmCluster:
    """One controller, one node (this host), one partition; ``n_gpus`` fake GPUs."""

    root: Path
    n_gpus: int = 2
    partition: str = "debug"
    min_job_age: int = 300
    pids: dict[str, int] = field(default_factory=dict)
    made_devices: list[str] = field(default_factory=list)
    linked_system_conf: bool = False

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands (sbatch, squeue, snakemake)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # --- set-up -------------------------------------------------------------------
    def _fake_gpus(self) -> list[str]:
        files = []
        for i in range(self.n_gpus):
            dev = Path(f"/dev/fakegpu{i}")
            if not (dev.exists() and stat.S_ISCHR(dev.stat().st_mode)):
                try:
                    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
                except OSError as exc:
                    raise ClusterUnavailable(f"cannot make fake GPU device {dev}: {exc}")
                self.made_devices.append(str(dev))
            files.append(str(dev))
        return files

    def _link_system_conf(self) -> None:
        if SYSTEM_CONF.is_symlink():
            target = Path(os.readlink(SYSTEM_CONF))
            if target.exists() and not (target.parent / MARKER).exists():
                raise ClusterUnavailable(f"{SYSTEM_CONF} points to a real config ({target})")
            state = target.parent / "cluster.json"
            if state.exists():
                ctld = json.loads(state.read_text())["pids"].get("slurmctld")
                if ctld and _alive(ctld):
                    raise ClusterUnavailable(
                        f"another test cluster ({target.parent}) is running; stop it with "
                        f"`python tests/slurm/cluster.py stop {target.parent}`")
            SYSTEM_CONF.unlink()  # left by an earlier test cluster that was not stopped
        elif SYSTEM_CONF.exists():
            raise ClusterUnavailable(
                f"{SYSTEM_CONF} exists (a real Slurm?); the test cluster would need it")
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)
        self.linked_system_conf = True

    def _write_config(self, host: str, munge_socket: Path) -> None:
        gpus = self._fake_gpus()
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).touch()
        gres = f" Gres=gpu:{self.n_gpus}" if self.n_gpus else ""
        self.conf.write_text(f"""\
# single-node test cluster written by tests/slurm/cluster.py
ClusterName=smoothsqueeze-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
PlugStackConfig={self.root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
MinJobAge={self.min_job_age}
KillWait=5
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 {_node_hardware()}{gres} State=UNKNOWN
PartitionName={self.partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        (self.root / "plugstack.conf").write_text("")
        (self.root / "gres.conf").write_text("".join(
            f"NodeName={host} Name=gpu File={dev}\n" for dev in gpus))

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        log.close()
        self.pids[name] = proc.pid
        self._save()

    def _save(self) -> None:
        (self.root / "cluster.json").write_text(json.dumps({
            "pids": self.pids, "made_devices": self.made_devices,
            "linked_system_conf": self.linked_system_conf, "partition": self.partition}))

    def start(self, timeout: float = 300) -> dict[str, float]:
        """Install if needed, write configs, start munged/slurmctld/slurmd; wait for idle.

        `timeout` only guards against daemons that never come up (a loaded machine is
        slow to start them): it is no speed requirement.  Returns timings in seconds.
        Raises ClusterUnavailable (daemons stopped).
        """
        timings = {"install_s": ensure_installed()}
        if os.geteuid() != 0:
            raise ClusterUnavailable("the test cluster runs its daemons as root")
        t0 = time.monotonic()
        self.root = Path(self.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # munged wants a socket folder others may enter
        host = socket.gethostname().split(".")[0]
        munge_dir = self.root / "munge"
        munge_dir.mkdir(mode=0o755, exist_ok=True)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        socket_path = munge_dir / "munge.socket"
        try:
            self._write_config(host, socket_path)
            self._link_system_conf()
            self._spawn("munged", [
                "munged", "--foreground", "--force", f"--socket={socket_path}",
                f"--key-file={key}", f"--pid-file={munge_dir}/munged.pid",
                f"--log-file={munge_dir}/munged.log", f"--seed-file={munge_dir}/munged.seed"])
            self._wait(lambda: socket_path.exists(), timeout, "munged did not create its socket")
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", host])
            self._wait(self._node_idle, timeout, "the node did not become idle")
        except BaseException:
            self.stop()
            raise
        timings["daemons_s"] = time.monotonic() - t0
        return timings

    def _node_idle(self) -> bool:
        for name, pid in self.pids.items():
            if not _alive(pid):
                raise ClusterUnavailable(f"{name} exited at start:\n{self.logs()}")
        out = _run(["sinfo", "-h", "-N", "-o", "%T|%E"], env=self.env).stdout.strip()
        state = out.split("|")[0]
        if state.startswith("drain"):  # e.g. a gres.conf the node cannot honour
            raise ClusterUnavailable(f"node drained: {out}\n{self.logs()}")
        return state == "idle"  # "unknown*" / "down*" until slurmd registers

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"{what} within {timeout:.0f} s:\n{self.logs()}")
            time.sleep(0.2)

    def logs(self, lines: int = 15) -> str:
        """The last lines of each daemon log, for error messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # --- tear-down ----------------------------------------------------------------
    def stop(self) -> None:
        """Cancel jobs, stop the daemons this cluster started, undo system changes."""
        if self.pids.get("slurmctld") and _alive(self.pids["slurmctld"]):
            _run(["scancel", "--full", "--user", str(os.getuid())], env=self.env, timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                out = _run(["squeue", "-h", "-t", "PD,R,CG,S", "-o", "%i"],
                           env=self.env, timeout=10).stdout
                if not out.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid:
                _terminate(pid)
        for dev in self.made_devices:
            Path(dev).unlink(missing_ok=True)
        self.made_devices = []
        if self.linked_system_conf and SYSTEM_CONF.is_symlink() \
                and Path(os.readlink(SYSTEM_CONF)) == self.conf:
            SYSTEM_CONF.unlink()
        self.linked_system_conf = False
        if self.root.is_dir():
            self._save()

    @classmethod
    def load(cls, root: Path) -> "SlurmCluster":
        """The cluster whose state `start` saved in ``root/cluster.json``."""
        state = json.loads((Path(root) / "cluster.json").read_text())
        return cls(Path(root).resolve(), partition=state["partition"], pids=state["pids"],
                   made_devices=state["made_devices"],
                   linked_system_conf=state["linked_system_conf"])

    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap our own child
        return done == 0
    except ChildProcessError:  # not our child (CLI `stop`): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _terminate(pid: int, grace: float = 10) -> None:
    """SIGTERM one daemon we started, SIGKILL it after ``grace`` seconds."""
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("root", type=Path, help="folder for configs, state and logs")
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--partition", default="compute",
                        help="partition name (profiles/slurm's default is 'compute')")
    args = parser.parse_args(argv)
    if args.action == "stop":
        SlurmCluster.load(args.root).stop()
        return 0
    cluster = SlurmCluster(args.root, n_gpus=args.gpus, partition=args.partition)
    try:
        timings = cluster.start()
    except ClusterUnavailable as exc:
        print(f"Slurm unavailable: {exc}", file=sys.stderr)
        return 1
    # The daemons are our children; they keep running in their own sessions after we exit.
    print(json.dumps(timings), file=sys.stderr)
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
