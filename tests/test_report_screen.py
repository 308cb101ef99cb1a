"""The tiny study's report as a reader first sees it: the claims ledger leads the landing text and the
results menu, and the page renders at 1366x768 in headless Chromium (skipped only where Chromium is
not installed, as in CI)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from snakemake_report import embedded_json, plain_text

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.mark.slow
def test_the_report_opens_on_the_claims_ledger(tiny_study: Path) -> None:
    report = (tiny_study / "reports/tiny/report.html").read_text(errors="replace")
    categories = sorted(embedded_json(report, "categories"))
    assert categories[0] == "Claims" and "Masking audit" in categories, categories  # the menu sorts them alphabetically
    landing = plain_text(str(embedded_json(report, "workflow-desc")))
    assert landing.index("Claims") < landing.index("Tables") < landing.index("Masking audit"), landing[:400]
    # The first screen holds results: the ledger's verdict counts and a line per claim come before the
    # description (and the rule graph beside it), and only the study of this report is listed.
    ledger = (tiny_study / "reports/tiny/claims.csv").read_text()
    assert landing.index("Claims ledger of study tiny") < landing.index("Verdicts:") < landing.index("This workflow retrains"), landing[:600]
    for claim_id in (f"C{i}" for i in range(1, 22)):
        assert f",{claim_id}," in ledger and f"{claim_id} " in landing[:landing.index("This workflow retrains")], claim_id
    assert "This report: study tiny" in landing and "cifar10 (" not in landing, landing[-400:]
    # Snakemake centres its content pane, so a landing taller than the window would lose its top (title and
    # verdicts) beyond the scroll bar's reach; the landing's style aligns an overflowing pane to its top.
    assert "align-items:safe center" in str(embedded_json(report, "workflow-desc"))
    # The audit table's HTML holds its headline columns only (every attack and flag is in the CSV), with
    # wrapping headers, and the same header words as the accuracy tables ("White-box PGD-5 x-ent").
    audit = (tiny_study / "reports/tiny/tables/audit.html").read_text()
    assert "white-space:normal" in audit and "APGD-CE" not in audit and "Masking suspected" in audit
    assert "<th>White-box PGD-5 x-ent</th>" in (tiny_study / "reports/tiny/tables/accuracy.html").read_text()


@pytest.mark.slow
def test_the_report_renders_at_1366x768(tiny_study: Path, tmp_path: Path) -> None:
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the screenshot needs it")
    shot = tmp_path / "report.png"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1366,768",
                           "--virtual-time-budget=5000", (tiny_study / "reports/tiny/report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000, len(data)  # a drawn page, not a blank one
    assert ROOT.exists()
