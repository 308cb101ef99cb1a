"""One table, three renderings: CSV (values as stored), LaTeX (a booktabs `table` float) and HTML.

A leaf: it knows columns, cells and markup, not the paper. What a cell's text reads as in the
LaTeX and HTML views (e.g. a defence's short label) comes in as `words`, a function of the CSV
text; captions and titles come in written.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import pandas as pd

MISSING = "--"
LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
_SPECIAL = re.compile("|".join(re.escape(c) for c in LATEX_SPECIALS))

Words = Callable[[str, str], str]  # (column key, CSV text) -> displayed text


@dataclass(frozen=True)
class Column:
    key: str  # CSV header and the frame column it shows
    label: str  # header in HTML
    tex: str | None = None  # header in LaTeX (None: the escaped label, several words stacked)
    group: str = ""  # spanning header over consecutive columns
    fmt: str = "pct"  # pct (2 decimals) | stat (mean over seeds with `_sd`, `_lo`, `_hi` beside it) | diff (signed in LaTeX/HTML) | num (%g) | text | raw (CSV as stored, 2 decimals shown)
    in_tex: bool = True
    tex_width: str | None = None  # LaTeX: a paragraph column of this width (p{...}), for long text
    in_html: bool = True


def _plain(key: str, text: str) -> str:
    return text


def latex_escape(text: str) -> str:
    """Text with every LaTeX special character escaped, in one pass (nothing is escaped twice)."""
    return _SPECIAL.sub(lambda m: LATEX_SPECIALS[m.group(0)], text)


_GREEK = {"α": r"\alpha", "β": r"\beta", "σ": r"\sigma", "ε": r"\epsilon"}


def tex_label(text: str) -> str:
    """A model's name by its parameters in LaTeX: 'LS α=0.95 + noise σ=0.3' -> 'LS $\\alpha = 0.95$ + noise $\\sigma = 0.3$'."""
    escaped = latex_escape(text)
    return re.sub("([αβσεk])=([^\\s,]+)", lambda m: f"${_GREEK.get(m[1], m[1])} = {m[2]}$", escaped)


def unique_labels(labels: Sequence[str], with_k: Sequence[str]) -> list[str]:
    """`labels`, each replaced by its `with_k` form where two would otherwise read the same."""
    return [w if list(labels).count(t) > 1 else t for t, w in zip(labels, with_k)]


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def format_cell(value: Any, fmt: str, for_csv: bool) -> str:
    """A cell's text: in CSV as stored (numbers to 2 decimals), else with '--' for missing values."""
    if missing(value):
        return "" if for_csv else MISSING
    if fmt == "text":
        return str(value)
    if fmt == "raw":
        if for_csv:
            return str(value)
        return f"{value:.2f}" if isinstance(value, float) else str(value)
    number = float(value)
    if fmt == "num":
        return str(int(number)) if number.is_integer() else format(number, "g")
    if fmt == "stat" and not for_csv:
        return f"{number:.1f}"
    if fmt == "diff" and not for_csv:
        return f"{number:+.2f}"
    return f"{number:.2f}"


def groups(columns: Sequence[Column]) -> list[tuple[str, int, int]]:
    """Runs of equal `group`: (group, first, last), 1-based column numbers."""
    runs: list[tuple[str, int, int]] = []
    for i, col in enumerate(columns, start=1):
        if runs and runs[-1][0] == col.group:
            runs[-1] = (col.group, runs[-1][1], i)
        else:
            runs.append((col.group, i, i))
    return runs


def check_columns(columns: Sequence[Column]) -> None:
    """No two columns share a key, nor a group and label (they would read as one)."""
    keys = [c.key for c in columns]
    names = [(c.group, c.label) for c in columns]
    if len(set(keys)) != len(keys) or len(set(names)) != len(names):
        raise ValueError(f"table columns repeat a key or a (group, label): {keys}")


#: The columns a `stat` column carries beside its mean: spread over seeds and the interval's ends.
STAT_PARTS = ("_sd", "_lo", "_hi")


def _csv_columns(columns: Sequence[Column]) -> list[tuple[str, str]]:
    """(frame key, fmt) of every CSV column: a `stat` column is written as its mean, sd, lo and hi."""
    out = []
    for c in columns:
        out.append((c.key, "pct" if c.fmt == "stat" else c.fmt))
        if c.fmt == "stat":
            out += [(c.key + part, "pct") for part in STAT_PARTS]
    return out


def stat_text(row: Any, key: str, tex: bool) -> str:
    """A `stat` cell: 'mean' (1 decimal) with '± sd' over seeds when there are several, and in HTML
    the 95% interval over the images, e.g. '43.9 ± 1.2 [40.1, 47.8]'; LaTeX prints mean ± sd only."""
    mean = row.get(key)
    if missing(mean):
        return MISSING
    text = f"{float(mean):.1f}"
    sd, seeds = row.get(key + "_sd"), row.get("seeds")
    if not missing(sd) and not missing(seeds) and int(seeds) > 1:
        text += (r" $\pm$ " if tex else " ± ") + f"{float(sd):.1f}"
    lo, hi = row.get(key + "_lo"), row.get(key + "_hi")
    if not tex and not missing(lo) and not missing(hi):
        text += f" [{float(lo):.1f}, {float(hi):.1f}]"
    return text


def to_csv(columns: Sequence[Column], frame: pd.DataFrame) -> str:
    keys = _csv_columns(columns)
    cells = pd.DataFrame(
        [[format_cell(row.get(k), fmt, True) for k, fmt in keys] for row in frame.to_dict("records")],
        columns=[k for k, _fmt in keys],
    )
    return cells.to_csv(index=False, lineterminator="\n")


def _stacked(label: str) -> str:
    """LaTeX for a header; a label of several words is stacked on two lines ('PGD-40' over 'x-ent')."""
    words = label.split(" ", 1)
    return latex_escape(label) if len(words) == 1 else rf"\shortstack{{{latex_escape(words[0])}\\{latex_escape(words[1])}}}"


def _tex_header(col: Column) -> str:
    return col.tex if col.tex is not None else _stacked(col.label)


def _escaped(key: str, text: str) -> str:
    return latex_escape(text)


#: Every LaTeX table of every study is set in one size with one column gap, and fits the text width
#: (ICLR: 397pt) by its columns alone: never scaled. A table wider than that is set as panels stacked
#: in its float, each repeating the row-identifying columns (see `panels`).
TEX_SIZE = r"\footnotesize"
TEX_TABCOLSEP = "3pt"
TEX_TEXTWIDTH_PT = 397.0
#: Estimated width of one character at TEX_SIZE (8pt type: a digit is 4pt; capitals and rules add, so it errs wide).
_CHAR_PT = 4.4
#: A text column wider than this (a long note) is set as a paragraph column of this width.
TEX_TEXT_COLUMN_PT = 140
_TEX_COMMANDS = re.compile(r"\\(?:shortstack|textbf|emph|mathrm|multicolumn\{\d+\}\{[lcr]\})|\\[A-Za-z]+\s*|[{}$~]")


def _tex_text_width(tex: str) -> float:
    """Estimated printed width (pt) of a cell's LaTeX at TEX_SIZE: its longest line, commands dropped."""
    lines = re.split(r"\\\\", tex)
    return max(len(_TEX_COMMANDS.sub("", line).replace("\\", "")) for line in lines) * _CHAR_PT


def _column_width(col: "Column", cells: list[str]) -> float:
    if col.tex_width:
        m = re.fullmatch(r"([\d.]+)\\(?:linewidth|textwidth)", col.tex_width)
        return (float(m[1]) * TEX_TEXTWIDTH_PT if m else 100.0) + 2 * float(TEX_TABCOLSEP.removesuffix("pt"))
    return max([_tex_text_width(_tex_header(col))] + [_tex_text_width(c) for c in cells]) + 2 * float(TEX_TABCOLSEP.removesuffix("pt"))


def panels(cols: Sequence["Column"], cells: list[list[str]], width: float = TEX_TEXTWIDTH_PT) -> list[list[int]]:
    """Column indices of each panel: the leading identity columns (those before the first number
    column) in every panel, the others filled in order (a spanning group kept whole where it fits)."""
    widths = [_column_width(c, [row[i] for row in cells]) for i, c in enumerate(cols)]
    lead = next((i for i, c in enumerate(cols) if c.fmt != "text" and c.fmt != "num"), len(cols))
    base = sum(widths[:lead])
    out: list[list[int]] = []
    current: list[int] = []
    used = base
    i = lead
    while i < len(cols):
        run = [j for j in range(i, len(cols)) if cols[j].group == cols[i].group] if cols[i].group else [i]
        run = run[: next((n for n, j in enumerate(run) if j != i + n), len(run))]
        need = sum(widths[j] for j in run)
        if current and used + need > width:
            if used + widths[i] <= width and need > width - base:
                run = [i]  # a group wider than a whole panel is split column by column
                need = widths[i]
            else:
                out.append(current)
                current, used = [], base
        current += run
        used += need
        i = run[-1] + 1
    if current or not out:
        out.append(current)
    return [list(range(lead)) + p for p in out]


def _narrowed(col: "Column", cells: list[str]) -> "Column":
    """A text column (not the first) whose widest cell is wider than TEX_TEXT_COLUMN_PT wraps in a paragraph column."""
    if col.fmt != "text" or col.tex_width or _column_width(col, cells) <= TEX_TEXT_COLUMN_PT:
        return col
    return replace(col, tex_width=f"{TEX_TEXT_COLUMN_PT}pt")


def _tabular(cols: Sequence["Column"], cells: list[list[str]]) -> list[str]:
    spec = "".join(f"p{{{c.tex_width}}}" if c.tex_width else "l" if c.fmt == "text" else "r" for c in cols)
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule"]
    runs = groups(cols)
    if any(group for group, _, _ in runs):
        head, rules = [], []
        for group, first, last in runs:
            if group:
                head.append(rf"\multicolumn{{{last - first + 1}}}{{c}}{{{_stacked(group)}}}")
                rules.append(rf"\cmidrule(lr){{{first}-{last}}}")
            else:
                head += [""] * (last - first + 1)
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    lines += [" & ".join(_tex_header(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in cells]
    return lines + [r"\bottomrule", r"\end{tabular}"]


def note_lines(note: str, width: int = 98) -> list[str]:
    """A table's note as LaTeX comment lines after the float: kept with the table, never typeset."""
    import textwrap

    return [f"% {line}" for line in textwrap.wrap("Note: " + " ".join(note.split()), width)] if note.strip() else []


def to_latex(
    columns: Sequence[Column], frame: pd.DataFrame, caption: str, label: str, words: Words = _escaped,
    comment: str = "Generated by smoothsqueeze; do not edit by hand.", note: str = "",
) -> str:
    """A booktabs `table` float with a \\label; `caption` and the `words` of text cells are LaTeX already.

    Every table has the same size (TEX_SIZE, TEX_TABCOLSEP); one wider than the text width is set as
    panels (`panels`), not scaled. `note` (plain text: the settings behind the numbers) follows the
    float as comment lines, so the caption stays one or two sentences.
    """
    cols = [c for c in columns if c.in_tex]
    check_columns(cols)
    cells: list[list[str]] = []
    for row in frame.to_dict("records"):
        line = []
        for c in cols:
            if c.fmt == "stat":
                line.append(stat_text(row, c.key, tex=True))
                continue
            text = format_cell(row[c.key], c.fmt, False)
            line.append(words(c.key, text) if c.fmt == "text" and not missing(row[c.key]) else text)
        cells.append(line)
    cols = [_narrowed(c, [row[i] for row in cells]) if i else c for i, c in enumerate(cols)]
    body: list[str] = []
    for n, idx in enumerate(panels(cols, cells)):
        if n:
            body.append(r"\par\medskip")
        body += _tabular([cols[i] for i in idx], [[row[i] for i in idx] for row in cells])
    lines = [
        f"% {comment}",
        r"\begin{table}[htbp]",
        r"\centering",
        TEX_SIZE,
        rf"\setlength{{\tabcolsep}}{{{TEX_TABCOLSEP}}}",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        *body,
        r"\end{table}",
        *note_lines(note),
    ]
    return "\n".join(lines) + "\n"


def html_headers(columns: Sequence[Column]) -> list[str]:
    """Each column's visible header: its label, or 'group label' where a label repeats (no two alike)."""
    counts: dict[str, int] = {}
    for c in columns:
        counts[c.label] = counts.get(c.label, 0) + 1
    return [f"{c.group} {c.label}" if c.group and (counts[c.label] > 1 or c.group in ATTACK_GROUPS) else c.label for c in columns]


#: Groups whose columns' headers always carry the group's name in HTML: "White-box PGD-40 x-ent" everywhere.
ATTACK_GROUPS = ("White-box", "Black-box")


def to_html(columns: Sequence[Column], frame: pd.DataFrame, title: str, caption: str, words: Words = _plain) -> str:
    """A standalone HTML page holding the table (what the Snakemake report shows inline).

    Group headers are centred over their columns with a rule under them.
    """
    columns = [c for c in columns if c.in_html]
    check_columns(columns)
    esc = html.escape
    head = []
    runs = groups(columns)
    if any(group for group, _, _ in runs):
        head.append(
            '<tr class="groups">'
            + "".join(
                f'<th colspan="{last - first + 1}"' + (' class="group"' if group else "") + f">{esc(group)}</th>" for group, first, last in runs
            )
            + "</tr>"
        )
    head.append("<tr>" + "".join(f"<th>{esc(text)}</th>" for text in html_headers(columns)) + "</tr>")
    body = []
    for row in frame.to_dict("records"):
        cells = []
        for c in columns:
            if c.fmt == "stat":
                cells.append(f'<td class="stat">{esc(stat_text(row, c.key, tex=False))}</td>')
                continue
            text = format_cell(row[c.key], c.fmt, False)
            shown = words(c.key, text) if c.fmt == "text" and not missing(row[c.key]) else text
            cells.append(f'<td class="{c.fmt}">{esc(shown)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    style = (
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:separate;border-spacing:0}"
        "th,td{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}td.text{text-align:left}"
        # headers and cells wrap, so a wide table (the audit's) fits a 1366 px screen without being cut
        "th{max-width:9em;white-space:normal;vertical-align:bottom}td.text{max-width:16em}td.stat{min-width:5.5em}"
        "tr.groups th{border-bottom:none}tr.groups th.group{text-align:center;border-bottom:1px solid #444}"
        "thead tr:last-child th{border-bottom:2px solid #444}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title><style>{style}</style></head>\n'
        f"<body>\n<p><b>{esc(title)}</b>. {esc(caption)}</p>\n<table>\n<thead>\n" + "\n".join(head) + "\n</thead>\n<tbody>\n"
        + "\n".join(body) + "\n</tbody>\n</table>\n</body></html>\n"
    )


def to_markdown(columns: Sequence[Column], frame: pd.DataFrame, words: Words = _plain) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped, line breaks flattened)."""
    check_columns(columns)

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in html_headers(columns)) + " |",
             "| " + " | ".join("---" if c.fmt == "text" else "---:" for c in columns) + " |"]
    for row in frame.to_dict("records"):
        cells = []
        for c in columns:
            text = format_cell(row[c.key], c.fmt, False)
            cells.append(cell(words(c.key, text) if c.fmt == "text" and not missing(row[c.key]) else text))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
