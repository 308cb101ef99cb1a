"""Provenance: every artifact records the installed distributions' versions (what `pip freeze`
lists), read from their metadata without importing them."""
from __future__ import annotations

import importlib.metadata
import json

import numpy as np
import torch

from smoothsqueeze import provenance as ssprov


def test_packages_name_every_installed_distribution_with_its_version() -> None:
    # Read afresh, as the comparison below does: an import of setuptools earlier in this process (torch's
    # compile path imports it) puts setuptools/_vendor on sys.path, and with it ten more distributions.
    ssprov.installed_packages.cache_clear()
    packages = ssprov.provenance(torch.device("cpu"), "evaluate")["packages"]
    for name in ("torch", "torchvision", "numpy", "snakemake", "pandas", "scikit-learn", "pytest", "smoothsqueeze"):
        assert packages[name] == importlib.metadata.version(name), name
    assert packages["numpy"] == np.__version__
    # every distribution importlib.metadata finds, none made up
    installed = {d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata and d.metadata["Name"]}
    assert set(packages) == installed
    assert list(packages) == sorted(packages, key=str.lower)
    assert json.loads(json.dumps(packages)) == packages  # goes into JSON records as it is


def test_packages_are_read_once_per_process_and_handed_out_as_copies() -> None:
    assert ssprov.installed_packages() is ssprov.installed_packages()  # cached: no metadata re-read per artifact
    first = ssprov.provenance(torch.device("cpu"), "evaluate")["packages"]
    first["torch"] = "0"
    assert ssprov.provenance(torch.device("cpu"), "evaluate")["packages"]["torch"] == importlib.metadata.version("torch")
