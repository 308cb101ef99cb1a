"""The frontier as a table: reports/<study>/frontier.csv (every value as computed), .tex (booktabs,
the defenses by name) and .html (the report's view), through smoothsqueeze.render."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..artifacts import atomic_path
from ..render import Column, latex_escape, to_csv, to_html, to_latex
from .points import Point

#: Unicode symbols of the legend labels, as LaTeX math.
GREEK = {"α": r"$\alpha$", "β": r"$\beta$", "σ": r"$\sigma$", "ε": r"$\epsilon$"}

COLUMNS = [
    Column("group", "model (grid entry)", fmt="text", in_tex=False),
    Column("defense", "defense", "Defense", fmt="text"),
    Column("k", "k", "$k$", fmt="raw"),
    Column("seeds", "seeds", fmt="raw", in_tex=False),
    Column("passes", "training passes (all)", fmt="raw", in_tex=False),
    Column("passes_ratio", "cost vs. natural (passes)", r"\shortstack{Cost\\(passes)}", fmt="raw"),
    Column("cpu_ratio", "cost vs. natural (CPU s)", r"\shortstack{Cost\\(CPU s)}", fmt="raw"),
    Column("cpu_ratio_sd", "CPU s ratio, sd over seeds", fmt="raw", in_tex=False),
    Column("wall_ratio", "cost vs. natural (wall s)", fmt="raw", in_tex=False),
    Column("strongest", "strongest attack", r"\shortstack{Strongest\\attack}", fmt="stat"),
    Column("strongest_n", "audited images per seed", fmt="raw", in_tex=False),
    Column("clean", "clean", "Clean", fmt="stat"),
    Column("on_frontier", "Pareto", "Pareto", fmt="text"),
    Column("status", "status", "Status", fmt="text"),
    Column("models", "models", fmt="text", in_tex=False),
]
RATIO_DIGITS = 3


def frame(points: Sequence[Point]) -> pd.DataFrame:
    """One row per point, ratios rounded to RATIO_DIGITS decimals."""
    rows = []
    for p in points:
        row = p.row()
        for key in ("passes_ratio", "cpu_ratio", "cpu_ratio_sd", "wall_ratio"):
            row[key] = round(row[key], RATIO_DIGITS) if math.isfinite(row[key]) else math.nan
        row["passes"] = int(row["passes"]) if math.isfinite(row["passes"]) and float(row["passes"]).is_integer() else row["passes"]
        row["on_frontier"] = "yes" if p.pareto else "no"
        rows.append(row)
    return pd.DataFrame(rows, columns=list(dict.fromkeys([c.key for c in COLUMNS] + (list(rows[0]) if rows else []))))


def tex_text(text: str) -> str:
    """Plain text as LaTeX: escaped, the legend's Greek letters and ± as math."""
    escaped = latex_escape(text)
    for char, tex in (GREEK | {"±": r"$\pm$", "×": r"$\times$"}).items():
        escaped = escaped.replace(char, tex)
    return escaped


def tex_words(key: str, text: str) -> str:
    """A text cell in LaTeX (tex_text); the Pareto mark as a bullet, the status in italics."""
    escaped = tex_text(text)
    if key == "on_frontier":
        return r"$\bullet$" if text == "yes" else ""
    return rf"\emph{{{escaped}}}" if key == "status" and text != "ok" else ("" if key == "status" else escaped)


def caption_facts(points: Sequence[Point], natural: str) -> dict[str, str]:
    """The numbers a caption states: the natural model, images per seed, seeds, widest interval."""
    widths = [(p.strongest.hi - p.strongest.lo, p) for p in points if math.isfinite(p.strongest.hi - p.strongest.lo)]
    widest = max(widths, key=lambda w: w[0], default=None)
    return {
        "natural": natural,
        "images": ", ".join(sorted({str(p.strongest.n) for p in points})) or "0",
        "seeds": ", ".join(sorted({str(p.seeds) for p in points})) or "0",
        "widest": f"{widest[0]:.1f} points ({widest[1].group})" if widest else "none",
        "pareto": ", ".join(p.group for p in points if p.pareto) or "none",
        "marked": ", ".join(f"{p.group} ({p.status})" for p in points if p.status != "ok") or "none",
    }


def write(points: Sequence[Point], study: str, natural: str, csv_path: str | Path | None, tex_path: str | Path | None,
          html_path: str | Path | None) -> None:
    """The table files that are asked for."""
    data, facts = frame(points), caption_facts(points, natural)
    text = (f"cost = training passes in all (training + robust checks) over those of the natural model {facts['natural']}; "
            f"strongest attack = the audit's per-image strongest attack on the {facts['images']} audited images per seed, mean "
            f"± sd over {facts['seeds']} seed(s) (widest 95% Wilson interval, images pooled over seeds: {facts['widest']}); "
            f"clean = test accuracy. Pareto: no other trained model costs at most as much and is at least as robust. "
            f"Marked models (never on the frontier): {facts['marked']}.")
    if csv_path:
        _put(csv_path, to_csv(COLUMNS, data))
    if tex_path:
        caption = (f"Robustness per training cost, study {latex_escape(study)}: accuracy (\\%) under the audit's per-image strongest "
                   f"attack on {facts['images']} images (mean $\\pm$ sd over seeds) against training cost relative to the natural "
                   f"model {latex_escape(natural)} (forward-backward passes; CPU seconds beside it). $\\bullet$: on the Pareto frontier.")
        _put(tex_path, to_latex(COLUMNS, data, caption, f"tab:{study}-frontier", words=tex_words))
    if html_path:
        _put(html_path, to_html(COLUMNS, data, f"Robustness per training cost: study {study}", text))


def _put(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
