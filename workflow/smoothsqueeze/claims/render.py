"""The ledger's outputs, through smoothsqueeze.render (CSV, Markdown, LaTeX, HTML), and its console lines.

Per study: claims.csv (every field, as computed), claims.md (a summary table, then one section per
claim), claims.tex (a booktabs table of the verdicts and numbers), claims.html (what the report
shows). Across studies: claims.{csv,md,html}, one row per claim, one column per built study.
The console lines at the end of a run are in `console` (csv module only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .. import render as base
from ..artifacts import atomic_path
from .registry import CLAIMS
from .verdicts import VERDICT_MEANING, VERDICTS, counts, shown_verdict


def _write(path: str | Path | None, text: str) -> None:
    if path:
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def _frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[base.Column]) -> pd.DataFrame:
    data = [{**r, "shown": shown_verdict(r)} for r in rows]
    return pd.DataFrame(data, columns=[c.key for c in columns]) if data else pd.DataFrame(columns=[c.key for c in columns])


#: LaTeX gets the verdicts (a float of 21 short rows: a page); the numbers, noise floors, models and
#: rules are in claims.md, .csv and .html.
STUDY_COLUMNS = [
    base.Column("id", "Claim", fmt="text"),
    base.Column("title", "Claim (short)", "Claim", fmt="text", tex_width="0.4\\linewidth"),
    base.Column("where", "Where in the paper", "Where", fmt="text", in_tex=True, tex_width="0.2\\linewidth"),
    base.Column("shown", "Verdict", fmt="text", tex_width="0.2\\linewidth"),
    base.Column("measured", "Measured (noise floor)", fmt="text", in_tex=False),
    base.Column("paper", "Paper's numbers", fmt="text", in_tex=False),
    base.Column("published", "Published re-evaluations", fmt="text", in_tex=False),
    base.Column("models", "Models", fmt="text", in_tex=False),
    base.Column("untested", "Not tested here (what it needs)", fmt="text", in_tex=False),
    base.Column("rule", "Rule", fmt="text", in_tex=False),
]


def legend() -> str:
    return "; ".join(f"'{v}': {VERDICT_MEANING[v]}" for v in VERDICTS)


def study_markdown(rows: Sequence[Mapping[str, Any]], study: str) -> str:
    from .ledger import DATASET_NAMES

    dataset = DATASET_NAMES.get(rows[0]["dataset"], rows[0]["dataset"]) if rows else "?"
    lines = [
        f"# Claims ledger: study `{study}` ({dataset})", "",
        f"Every claim of the paper (C1-C20) and C21 beyond it, decided from this study's records, audits, "
        f"analysis arrays, metrics and cost table by the rules in `smoothsqueeze/claims/registry.py`. "
        f"Verdicts: {counts(rows)}.", "",
        f"How to read a verdict: {legend()}.", "",
        base.to_markdown(STUDY_COLUMNS[:3], _frame(rows, STUDY_COLUMNS[:3])),
    ]
    for r in rows:
        lines += [f"## {r['id']}: {r['title']} -- {shown_verdict(r)}", "", f"*The paper ({r['where']}):* {r['statement']}", ""]
        if r["measured"]:
            lines += ["*Measured:*", *(f"- {part.strip()}" for part in r["measured"].split(" | ")), ""]
        if r["untested"]:
            lines += [f"*Not tested here:* {r['untested']}", ""]
        lines += [f"*The paper's numbers:* {r['paper']}", ""]
        if r["published"]:
            lines += [f"*Published re-evaluations:* {r['published']}", ""]
        if r["models"]:
            lines += [f"*Models:* {', '.join(f'`{m}`' for m in r['models'].split())}", ""]
        lines += [f"*Rule:* {r['rule']}", ""]
    return "\n".join(lines)


def brief_markdown(rows: Sequence[Mapping[str, Any]], study: str) -> str:
    """The ledger in one table, a line per claim: its verdict and what decided it (the README's findings)."""
    lines = [f"Claims ledger of `{study}` ({counts(rows)}):", "", "| claim | verdict | measured (or what it would need) |",
             "| --- | --- | --- |"]
    for r in rows:
        parts = [part.strip() for part in r["measured"].split(" | ") if part.strip()]
        decided = (parts[0] + (f" (and {len(parts) - 1} more part(s) in the ledger)" if len(parts) > 1 else "")) if parts \
            else f"needs {r['untested']}"
        decided = decided.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['id']} {r['title']} | {shown_verdict(r)} | {decided} |")
    return "\n".join(lines)


def landing_html(rows: Sequence[Mapping[str, Any]], study: str) -> str:
    """The report's first screen: the study's verdict counts and one short line per claim (an HTML fragment
    that workflow/report/workflow.rst embeds above the description, so a reader sees results before the rule graph)."""
    from html import escape

    # Snakemake's report centres its content pane vertically (flex items-center in a h-screen box), so a
    # landing taller than the window lost its top, out of reach of the scroll bar; 'safe center' aligns
    # an overflowing pane to its top instead.
    lines = ["<style>.h-screen.items-center{align-items:safe center}</style>",
             f'<div class="ledger-landing"><h2>Claims ledger of study {escape(study)}</h2>',
             f"<p><b>Verdicts:</b> {escape(counts(list(rows)))}. Every number, noise floor and rule: "
             f"<i>Claims</i> in the menu on the left.</p>",
             '<table style="font-size:0.85em;border-collapse:collapse">',
             "<tr><th style=\"text-align:left\">Claim</th><th style=\"text-align:left\">Verdict</th></tr>"]
    for r in rows:
        lines.append(f'<tr><td style="padding:0 0.8em 0 0">{escape(r["id"])} {escape(r["title"])}</td>'
                     f"<td>{escape(shown_verdict(dict(r)))}</td></tr>")
    return "\n".join([*lines, "</table></div>", ""])


def write_landing(ledger_csv: str | Path, study: str, out: str | Path) -> None:
    """reports/<study>/logs/report_landing.html from the study's claims.csv (the report job calls this)."""
    from .ledger import read_ledger

    _write(out, landing_html(read_ledger(ledger_csv), study))


_GREEK_WORDS = {"eps\\_L": r"$\epsilon_L$", "alpha": r"$\alpha$", "beta": r"$\beta$", "sigma": r"$\sigma$", "eps": r"$\epsilon$"}


def tex_words(key: str, text: str) -> str:
    """A ledger cell in LaTeX: escaped, the parameters' names as the tables write them ($\\alpha$, $\\epsilon$)."""
    import re

    escaped = base.latex_escape(text).replace(" > ", " $>$ ").replace(" < ", " $<$ ")
    return re.sub(r"\b(eps\\_L|alpha|beta|sigma|eps)\b", lambda m: _GREEK_WORDS[m[1]], escaped)


def write_study(rows: Sequence[Mapping[str, Any]], study: str, outputs: Mapping[str, str | Path | None]) -> None:
    """reports/<study>/claims.{csv,md,tex,html} (those of `outputs` given)."""
    from .ledger import FIELDS

    frame = pd.DataFrame(list(rows), columns=list(FIELDS))
    csv_columns = [base.Column(f, f, fmt="text") for f in FIELDS]
    title = f"Claims ledger of study {study}"
    caption = f"One row per claim; verdicts: {counts(rows)}. {legend()}."
    tex_caption = base.latex_escape(
        f"Claims ledger of study {study}: the paper's claims decided from the study's records ({counts(rows)}); "
        f"the numbers with their noise floors, the models and the rules are in claims.md and claims.csv."
    )
    _write(outputs.get("csv"), base.to_csv(csv_columns, frame))
    _write(outputs.get("md"), study_markdown(rows, study))
    html_columns = [c for c in STUDY_COLUMNS if c.key != "where"]
    _write(outputs.get("tex"), base.to_latex(STUDY_COLUMNS, _frame(rows, STUDY_COLUMNS), tex_caption, f"tab:{study}-claims", tex_words))
    _write(outputs.get("html"), base.to_html(html_columns, _frame(rows, html_columns), title, caption))


# ---------------------------------------------------------------- across studies


def overview_rows(studies: Sequence[Sequence[Mapping[str, str]]]) -> list[dict[str, Any]]:
    """One row per claim of the registry: its verdict in every study (by study name), and the published numbers."""
    from .ledger import published

    by_study = {s[0]["study"]: {r["id"]: r for r in s} for s in studies if s}
    out = []
    for cid, c in CLAIMS.items():
        row: dict[str, Any] = {"id": cid, "title": c.title, "paper": c.paper, "published": published(cid)}
        for name, claims in by_study.items():
            r = claims.get(cid)
            row[name] = shown_verdict(r) if r else "not in this study's ledger (rebuild it)"
        out.append(row)
    return out


def overview_markdown(rows: Sequence[Mapping[str, Any]], studies: Sequence[tuple[str, str]]) -> str:
    """The verdicts side by side, one line per claim and one column per study (the README's printout)."""
    columns = [base.Column("id", "claim", fmt="text"), base.Column("title", "claim (short)", fmt="text"),
               *(base.Column(name, f"{name} ({dataset})", fmt="text") for name, dataset in studies)]
    frame = pd.DataFrame(list(rows), columns=[c.key for c in columns])
    return base.to_markdown(columns, frame)


def write_overview(rows: Sequence[Mapping[str, Any]], studies: Sequence[tuple[str, str]], outputs: Mapping[str, str | Path | None]) -> None:
    """reports/claims.{csv,md,html}: claims x built studies."""
    columns = [
        base.Column("id", "Claim", fmt="text"),
        base.Column("title", "Claim (short)", fmt="text"),
        *(base.Column(name, f"{name} ({dataset})", fmt="text") for name, dataset in studies),
        base.Column("paper", "Paper's numbers", fmt="text"),
        base.Column("published", "Published re-evaluations", fmt="text"),
    ]
    frame = pd.DataFrame(list(rows), columns=[c.key for c in columns])
    names = ", ".join(f"{n} ({d})" for n, d in studies) or "none"
    title = "Claims ledger across studies"
    caption = (f"Every claim against every built study ({names}); each study's own ledger (reports/<study>/claims.md) has the "
               f"numbers, noise floors, models and rules; reports/<study>/frontier.pdf sets each study's models by training cost against "
               f"the strongest attack (C21 at a glance). {legend()}.")
    md = "\n".join([f"# {title}", "", caption, "", base.to_markdown(columns, frame)])
    _write(outputs.get("csv"), base.to_csv(columns, frame))
    _write(outputs.get("md"), md)
    _write(outputs.get("html"), base.to_html(columns, frame, title, caption))
