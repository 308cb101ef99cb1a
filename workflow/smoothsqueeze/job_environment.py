"""Environment the workflow's shell jobs inherit (called once when the Snakefile loads)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def prepare_job_environment(package_root: str) -> None:
    """Jobs run `python -m smoothsqueeze ...`: put the interpreter running Snakemake first on
    PATH (under --sdm conda, Snakemake puts the rule's env before it), and make the package
    importable in jobs without installing it (conda envs do not hold it)."""
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
