"""What `snakemake` prints at the end of a study's run: the ledger's path and one line per claim.

Reads reports/<study>/claims.csv with the csv module only (no numpy, pandas or torch), so the
Snakefile's `onsuccess:` handler costs nothing.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .verdicts import counts, shown_verdict


def console_lines(study: str, reports_dir: str | Path, width: int = 120) -> list[str]:
    """One line per claim of a built study's ledger; [] when its claims.csv is not there."""
    path = Path(reports_dir) / study / "claims.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    pad = max((len(shown_verdict(r)) for r in rows), default=0)
    lines = [f"Claims ledger of {study} ({counts(rows)}): {path.with_suffix('.md')}, {path.with_suffix('.html')}"]
    for r in rows:
        line = f"  {r['id']:<4} {shown_verdict(r):<{pad}}  {r['title']}"
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    return lines
