"""Compare two builds of the same study (another processor, another CPU kernel set): do their verdicts agree?

    git clone . /tmp/second && (cd /tmp/second && ATEN_CPU_CAPABILITY=default snakemake --cores 2)   # a second build, PyTorch's default kernels
    python benchmarks/compare_builds.py --study digits --a . --b /tmp/second

Floating-point differences between processors (or between PyTorch's AVX2/AVX-512/default kernels)
change the trained weights in their last bits, and training amplifies that into other digits. A
verdict the pipeline draws must not depend on it. For every grid entry this prints each audit
flag of both builds (the audit table, flags decided across seeds) and, where both builds have a
claims ledger, each claim's verdict, and classifies each pair:

  same              the two builds agree;
  within noise      they differ, but one side is "within noise" (allowed: a verdict moved to or from the noise band);
  DIFFERENT         one build raised what the other did not, or a claim holds in one build and fails in the other.

It also prints the largest difference of any table number (mean over seeds) between the builds,
with its noise floor (the interval). Exit status 1 when any pair is DIFFERENT.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

from smoothsqueeze.audit import flags as af  # noqa: E402

#: Words that count as the noise band in flags (audit) and claims (ledger).
NOISE = {"within noise"}


def classify(a: str, b: str) -> str:
    """'same', 'within noise' (one side is the noise band) or 'DIFFERENT'."""
    if a == b:
        return "same"
    if a in NOISE or b in NOISE:
        return "within noise"
    return "DIFFERENT"


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def compare_flags(a: Path, b: Path, study: str) -> list[tuple[str, str, str, str, str]]:
    """(grid entry, flag, verdict in a, verdict in b, class) for every flag of the audit tables."""
    rows_a = {r["model"]: r for r in _read_csv(a / "reports" / study / "tables" / "audit.csv")}
    rows_b = {r["model"]: r for r in _read_csv(b / "reports" / study / "tables" / "audit.csv")}
    out = []
    for model in rows_a:
        if model not in rows_b:
            continue
        for name in af.FLAG_NAMES:
            va, vb = rows_a[model].get(f"flag_{name}", "?"), rows_b[model].get(f"flag_{name}", "?")
            out.append((model, af.FLAG_LABELS[name], va, vb, classify(va, vb)))
    return out


def compare_claims(a: Path, b: Path, study: str) -> list[tuple[str, str, str, str, str]]:
    """(claim, '', verdict in a, verdict in b, class) for every claim both ledgers hold."""
    rows_a = {r["id"]: r for r in _read_csv(a / "reports" / study / "claims.csv")}
    rows_b = {r["id"]: r for r in _read_csv(b / "reports" / study / "claims.csv")}
    return [(cid, "", rows_a[cid]["verdict"], rows_b[cid]["verdict"], classify(rows_a[cid]["verdict"], rows_b[cid]["verdict"]))
            for cid in rows_a if cid in rows_b]


def largest_number_difference(a: Path, b: Path, study: str) -> tuple[float, str]:
    """The largest |difference| of a mean accuracy between the builds' accuracy tables, and where."""
    table = next((n for n in ("accuracy", "whitebox") if (a / "reports" / study / "tables" / f"{n}.csv").exists()), "accuracy")
    rows_a = {r["model"]: r for r in _read_csv(a / "reports" / study / "tables" / f"{table}.csv")}
    rows_b = {r["model"]: r for r in _read_csv(b / "reports" / study / "tables" / f"{table}.csv")}
    worst, where = 0.0, ""
    for model, row in rows_a.items():
        other = rows_b.get(model)
        if other is None:
            continue
        for key, value in row.items():
            if key.endswith(("_sd", "_lo", "_hi")) or key in ("model", "defense", "seeds", "alpha", "beta", "sigma", "k"):
                continue
            try:
                diff = abs(float(value) - float(other[key]))
            except (TypeError, ValueError):
                continue
            if not math.isnan(diff) and diff > worst:
                half = (float(row.get(f"{key}_hi") or "nan") - float(row.get(f"{key}_lo") or "nan")) / 2
                worst, where = diff, f"{model} {key}: {float(value):.1f} vs {float(other[key]):.1f} (95% interval ±{half:.1f})"
    return worst, where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="digits")
    parser.add_argument("--a", required=True, type=Path, help="working folder of the first build (holds reports/)")
    parser.add_argument("--b", required=True, type=Path, help="working folder of the second build")
    args = parser.parse_args(argv)
    pairs = compare_flags(args.a, args.b, args.study)
    claims = compare_claims(args.a, args.b, args.study)
    if not pairs and not claims:
        print(f"nothing to compare: no audit table or claims ledger of {args.study} in both builds", file=sys.stderr)
        return 2
    print("| grid entry or claim | flag | first build | second build | |")
    print("| --- | --- | --- | --- | --- |")
    for row in [*pairs, *claims]:
        if row[4] != "same":
            print("| " + " | ".join(row) + " |")
    counts = {c: sum(1 for r in [*pairs, *claims] if r[4] == c) for c in ("same", "within noise", "DIFFERENT")}
    print(f"\nflags: {len(pairs)} compared; claims: {len(claims)} compared; " + ", ".join(f"{n} {c}" for c, n in counts.items()))
    worst, where = largest_number_difference(args.a, args.b, args.study)
    if where:
        print(f"largest difference of a table number: {worst:.1f} points ({where})")
    return 1 if counts["DIFFERENT"] else 0


if __name__ == "__main__":
    sys.exit(main())
