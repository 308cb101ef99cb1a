"""What ran, where: library versions, device, code version and the stage's own version recorded next to every artifact."""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .study import CODE_VERSION, STAGE_VERSIONS


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _version(package: str) -> str | None:
    """Installed version without importing the package (importing torchvision costs ~2 s a job)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def installed_packages() -> dict[str, str]:
    """Every installed distribution, name -> version (what `pip freeze` lists), sorted by name.

    Read from the distributions' metadata files, nothing imported: about 150 small files, tens
    of milliseconds, once per process. The first of duplicate installs wins, as for imports.
    """
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name and name not in packages:
            packages[name] = dist.version
    return dict(sorted(packages.items(), key=lambda item: item[0].lower()))


@functools.cache
def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo; else what platform reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """PyTorch's CPU kernel set in use (e.g. AVX2, AVX512, DEFAULT; ATEN_CPU_CAPABILITY picks it).

    Results differ in their last bits between kernel sets, so a record says which one made it.
    """
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def provenance(device: torch.device, stage: str) -> dict[str, Any]:
    """What a record of `stage` (a rule of study.STAGE_VERSIONS) carries about how it was made.

    `stage_version` is the version that stage's rule passes (bumping it reruns the stage), so a
    record says which version of its own stage wrote it; `code_version` is the pipeline's.
    """
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "stage": stage,
        "stage_version": STAGE_VERSIONS[stage],
        "code_version": CODE_VERSION,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "numpy": np.__version__,
        "device": str(device),
        "device_name": name,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_capability": cpu_capability(),
        "host": platform.node(),
        "packages": dict(installed_packages()),
    }
