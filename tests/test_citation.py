"""Citing the work: CITATION.cff (CFF 1.2.0) and the README's BibTeX name the same paper, and the
licence the package declares is the LICENSE file's."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import ROOT

ARXIV = "1910.11585"
TITLE = "Label Smoothing and Logit Squeezing: A Replacement for Adversarial Training?"
AUTHORS = [("Shafahi", "Ali"), ("Ghiasi", "Amin"), ("Huang", "Furong"), ("Goldstein", "Tom")]


def _cff() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_citation_cff_has_the_keys_cff_1_2_0_requires() -> None:
    """The schema's required keys and types (checked against the CFF 1.2.0 JSON schema when written)."""
    cff = _cff()
    assert cff["cff-version"] == "1.2.0"
    assert isinstance(cff["message"], str) and cff["message"]
    assert isinstance(cff["title"], str) and cff["title"]
    assert cff["authors"] and all(isinstance(a, dict) and ("name" in a or "family-names" in a) for a in cff["authors"])
    assert cff["type"] == "software" and cff["license"] == "MIT"


def test_citation_cff_prefers_the_paper() -> None:
    cff = _cff()
    paper = cff["preferred-citation"]
    assert paper in cff["references"]
    assert paper["title"] == TITLE
    assert [(a["family-names"], a["given-names"]) for a in paper["authors"]] == AUTHORS
    assert paper["year"] == 2019 and ARXIV in paper["url"]
    assert any(ARXIV in i["value"] for i in paper["identifiers"])


def test_readme_bibtex_is_the_same_paper() -> None:
    text = (ROOT / "README.md").read_text()
    (entry,) = re.findall(r"```bibtex\n(.*?)```", text, re.S)
    assert f"title   = {{{TITLE}}}" in entry
    assert " and ".join(f"{family}, {given}" for family, given in AUTHORS) in entry
    assert ARXIV in entry and "year    = {2019}" in entry


def test_the_package_declares_the_license_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n") and "Copyright (c) 2026 the smoothsqueeze authors" in license_text
