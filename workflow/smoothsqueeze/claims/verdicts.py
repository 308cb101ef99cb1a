"""The verdict vocabulary of the claims ledger: small and fixed (no imports, so the console can read it cheaply)."""
from __future__ import annotations

HOLDS = "holds"
FAILS = "fails"
PAPER_ONLY = "holds under the paper's attacks only"
WITHIN_NOISE = "within noise"
NOT_TESTABLE = "not testable here"
#: Every verdict a claim can get, in the order the ledger explains them.
VERDICTS = (HOLDS, FAILS, PAPER_ONLY, WITHIN_NOISE, NOT_TESTABLE)
VERDICT_MEANING = {
    HOLDS: "the study's models show what the paper says, beyond the noise floor",
    FAILS: "they show the opposite, beyond the noise floor",
    PAPER_ONLY: "it holds under the paper's attacks but not under the audit's per-image strongest attack (gradient masking)",
    WITHIN_NOISE: "the difference does not exceed its noise floor (or the seeds disagree)",
    NOT_TESTABLE: "the study lacks what the claim needs (a model kind, a dataset, an artifact); the row says what",
}

PARTLY = "partly tested"


def shown_verdict(row: dict) -> str:
    """The verdict as a reader sees it: 'holds (partly tested)' when some parts could not be tested."""
    v = row["verdict"]
    return f"{v} ({PARTLY})" if row.get("untested") and v != NOT_TESTABLE else v


def counts(rows: list) -> str:
    """'holds: 5, fails: 2, ...' over ledger rows."""
    n = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return ", ".join(f"{v}: {c}" for v, c in n.items() if c)
