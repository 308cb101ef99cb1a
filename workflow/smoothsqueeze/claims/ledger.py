"""The ledger: every claim of the registry evaluated on one study, and every built study side by side.

    evaluate(evidence)          -> one row per claim (verdict, numbers with their noise floor, ...)
    run(spec, outputs)          -> reports/<study>/claims.{csv,md,tex,html}
    overview(ledgers, outputs)  -> reports/claims.{csv,md,html}: every claim against every built study,
                                   with the published re-evaluations beside C13-C15 (and C21)

A claim whose dataset the study does not have, or whose inputs are missing, is "not testable here"
with the reason; a rule that fails for any other reason stops the job (a bug is not a verdict).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..study import RESOURCES
from . import inputs
from .measure import NOT_TESTABLE, VERDICTS, combine
from .registry import CLAIMS, Claim

PUBLISHED_CSV = RESOURCES / "claims" / "published.csv"
#: The per-study ledger's columns, in CSV order.
FIELDS = ("study", "dataset", "id", "title", "verdict", "untested", "measured", "paper", "published", "models", "rule", "statement", "where",
          "needs")
DATASET_NAMES = {"mnist": "MNIST", "mnist5k": "MNIST (5k)", "digits": "8x8 digits", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def published(claim_id: str, path: Path = PUBLISHED_CSV) -> str:
    """The published re-evaluation numbers of a claim (resources/claims/published.csv), one text."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["claim"] == claim_id]
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    notes: dict[tuple[str, str, str, str], str] = {}
    for r in rows:
        key = (r["source"], r["dataset"], r["eps"], r["model"])
        groups.setdefault(key, []).append(f"{r['measure']} {r['value']}%")
        if r.get("note"):
            notes[key] = r["note"]
    texts = []
    for (source, dataset, eps, model), values in groups.items():
        note = f" ({notes[(source, dataset, eps, model)]})" if (source, dataset, eps, model) in notes else ""
        texts.append(f"{source}, {dataset} eps {eps}, {model}: {', '.join(values)}{note}")
    return "; ".join(texts)


def _row(c: Claim, ev: inputs.StudyEvidence, verdict: str, measured: str, models: Sequence[str], untested: str) -> dict[str, Any]:
    return {
        "study": ev.study, "dataset": ev.dataset, "id": c.id, "title": c.title, "verdict": verdict, "untested": untested,
        "measured": measured, "paper": c.paper, "published": published(c.id), "models": " ".join(models), "rule": c.rule_text,
        "statement": c.statement, "where": c.where, "needs": (", ".join(DATASET_NAMES.get(d, d) for d in c.datasets) + " study: " if c.datasets else "") + c.needs,
    }


def evaluate_claim(c: Claim, ev: inputs.StudyEvidence) -> dict[str, Any]:
    """One claim on one study: its row."""
    if c.datasets and ev.dataset not in c.datasets:
        names = " or ".join(DATASET_NAMES.get(d, d) for d in c.datasets)
        return _row(c, ev, NOT_TESTABLE, "", [], f"a {names} study ({DATASET_NAMES.get(ev.dataset, ev.dataset)} here): {c.needs}")
    try:
        parts = c.rule(ev)
    except inputs.Missing as err:
        return _row(c, ev, NOT_TESTABLE, "", [], f"missing input: {err}")
    verdict, tested, rest = combine(parts)
    models = sorted({m for p in tested for m in p.models})
    measured = " | ".join(p.text for p in tested)
    untested = "; ".join(f"{p.name}: {p.need}" for p in rest)
    return _row(c, ev, verdict, measured, models, untested)


def evaluate(ev: inputs.StudyEvidence) -> list[dict[str, Any]]:
    """Every claim of the registry on one study, in id order."""
    rows = [evaluate_claim(c, ev) for c in CLAIMS.values()]
    for row in rows:
        assert row["verdict"] in VERDICTS, row
    return rows


def run(spec: Mapping[str, Any], outputs: Mapping[str, str | Path | None]) -> list[dict[str, Any]]:
    """Evaluate a study's claims from the artifacts its spec lists; write the ledger's formats given in `outputs` (csv, md, tex, html)."""
    from . import render

    ev = inputs.load(spec)
    if ev.missing:
        print(f"note: {len(ev.missing)} input file(s) missing; claims that need them say so: {', '.join(ev.missing[:5])}" + (" ..." if len(ev.missing) > 5 else ""))
    rows = evaluate(ev)
    render.write_study(rows, ev.study, outputs)
    return rows


def read_ledger(path: str | Path) -> list[dict[str, str]]:
    """A study's claims.csv as rows of text."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def overview(ledgers: Sequence[str | Path], outputs: Mapping[str, str | Path | None], show: bool = False) -> list[dict[str, Any]]:
    """Every claim against every study whose ledger is given (their claims.csv), with the published numbers;
    `show` prints the verdicts side by side (one line per claim)."""
    from . import render

    studies = [read_ledger(p) for p in ledgers]
    rows = render.overview_rows(studies)
    names = [(s[0]["study"], s[0]["dataset"]) for s in studies if s]
    render.write_overview(rows, names, outputs)
    if show:
        print(render.overview_markdown(rows, names))
    return rows
