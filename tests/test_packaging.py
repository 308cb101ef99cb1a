"""The package carries its data: a non-editable install, used outside the repository, finds the
config schema and the paper's tables (both read relative to the package, not from ../schemas or
../paper next to it)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Run by the installed package's interpreter, from a folder outside the repository.
CHECK = """
import sys
from pathlib import Path
import smoothsqueeze
from smoothsqueeze import config, paper, study
here = Path(smoothsqueeze.__file__).resolve().parent
assert here.is_relative_to(Path(sys.argv[1]).resolve()), here
assert not here.is_relative_to(Path(sys.argv[2]).resolve()), here
schema = config.load_schema()
assert schema["$defs"]["study"]["properties"]["audit"]["properties"]["pgd"], "audit block not typed"
cfg = config.load_config(sys.argv[3])
assert cfg["studies"]["digits"]["audit"]["pgd"]["steps"] >= 1
for name, (_file, dataset) in study.PAPER_TABLE_FILES.items():
    rows = paper.load(name, dataset or "mnist")
    assert len(rows) > 0, name
print("ok", here)
"""


@pytest.mark.slow
def test_non_editable_install_reads_schema_and_paper_tables_from_the_package(tmp_path: Path) -> None:
    # Build from a copy of what the package is made of, so the checkout gets no build/ or egg-info.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "workflow" / "smoothsqueeze", src / "workflow" / "smoothsqueeze", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)], check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("smoothsqueeze-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "smoothsqueeze/resources/config.schema.yaml" in names
    assert {f"smoothsqueeze/resources/paper/{f}" for f in ("table1.csv", "mnist_table5.csv", "cifar10_table6.csv", "cifar10_table7.csv")} <= names
    # The licence travels with the wheel and its metadata names it (PEP 639).
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata, metadata[:2000]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True, timeout=300)
    target = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", target, str(wheel)], check=True, capture_output=True, timeout=600)

    # The dependencies (yaml, jsonschema, pandas) come from this environment's site-packages, put on
    # PYTHONPATH: a plain path entry, so its .pth files (this checkout's editable install) stay inactive.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK, target, str(ROOT), str(ROOT / "config.yaml")],
        cwd=outside, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("ok "), proc.stdout + proc.stderr
