"""Structure of every LaTeX table the pipeline writes: each row has as many cells as the tabular
spec has columns (multicolumns counted by their span), environments are balanced, and text outside
math mode has `_`, `%`, `&` and `#` escaped. The study and paper-comparison tables are rendered
from row files built from config.yaml's mnist and cifar10 grids (no training); the tiny study's
own tables (audit and cost included) are checked where it is built. When `pdflatex` is installed,
the tables also compile in a plain article with booktabs."""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from smoothsqueeze import config as sscfg
from smoothsqueeze import paper, render, tables
from smoothsqueeze.cli import main as cli_main
from smoothsqueeze.evaluate import training_status
from smoothsqueeze.study import Plan

CONFIG = sscfg.load_config(ROOT / "config.yaml")
RULES = re.compile(r"\\(?:toprule|midrule|bottomrule|hline)|\\cmidrule(?:\([^)]*\))?\{[^}]*\}")


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` outside braces (`\\\\` inside \\shortstack{...} is not a row end), never at `\\sep`."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text.startswith(sep, i) and sep == "\\\\" and depth == 0:
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        if ch == "\\":  # an escaped character or a command name: skip the character after it
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _spec_columns(spec: str) -> int:
    spec = re.sub(r"[@<>!]\{[^}]*\}", "", spec)  # inserted material is no column
    return len(re.findall(r"[lrcX]|[pmb]\{[^}]*\}", spec))


def _outside_math(line: str) -> str:
    return re.sub(r"(?<!\\)\$.*?(?<!\\)\$", "", line)


def latex_problems(tex: str) -> list[str]:
    """What is wrong with one generated LaTeX table (empty: nothing found)."""
    problems: list[str] = []
    stack: list[str] = []
    for kind, env in re.findall(r"\\(begin|end)\{([A-Za-z*]+)\}", tex):
        if kind == "begin":
            stack.append(env)
        elif not stack or stack.pop() != env:
            problems.append(f"\\end{{{env}}} without its \\begin")
    problems += [f"\\begin{{{env}}} never ended" for env in stack]
    tabulars = re.findall(r"\\begin\{tabular\}\{((?:[^{}]|\{[^}]*\})*)\}(.*?)\\end\{tabular\}", tex, re.S)
    if not tabulars:
        problems.append("no tabular")
    for spec, body in tabulars:
        ncols = _spec_columns(spec)
        for row in _split_top(body, "\\\\"):
            row = RULES.sub("", row).strip()
            if not row:
                continue
            cells = _split_top(row, "&")
            width = sum(int(m.group(1)) if (m := re.match(r"\s*\\multicolumn\{(\d+)\}", c)) else 1 for c in cells)
            if width != ncols:
                problems.append(f"{width} cells in a {ncols}-column tabular: {row[:80]!r}")
    outside = re.sub(r"\\begin\{tabular\}.*?\\end\{tabular\}", "", tex, flags=re.S)
    for n, line in enumerate(tex.splitlines(), 1):
        if line.lstrip().startswith("%"):
            continue  # a comment line
        text = _outside_math(re.sub(r"\\(?:label|ref)\{[^}]*\}", "", line))
        for char in "_%#":
            if re.search(rf"(?<!\\){re.escape(char)}", text):
                problems.append(f"line {n}: unescaped {char!r}: {line[:100]!r}")
        if line in outside.splitlines() and re.search(r"(?<!\\)&", text):
            problems.append(f"line {n}: unescaped '&' outside the tabular: {line[:100]!r}")
    return problems


def paper_problems(tex: str) -> list[str]:
    """What keeps a well-formed table from pasting into a paper: scaling (\resizebox), a size other than
    every table's (render.TEX_SIZE), a caption of more than two sentences, straight quotes, plain notation."""
    problems = []
    body = "\n".join(line for line in tex.splitlines() if not line.lstrip().startswith("%"))
    if "\\resizebox" in body or "\\scalebox" in body:
        problems.append("scaled (\\resizebox/\\scalebox)")
    sizes = re.findall(r"\\(tiny|scriptsize|footnotesize|small|normalsize|large)\b", body)
    if sizes != [render.TEX_SIZE.lstrip("\\")]:
        problems.append(f"font sizes {sizes}, want one {render.TEX_SIZE}")
    caption = re.search(r"\\caption\{(.*)\}\s*$", body, re.M)
    if caption is None:
        problems.append("no caption")
    else:
        text = re.sub(r"\$[^$]*\$", "x", caption.group(1))
        sentences = len(re.findall(r"(?<!Eq)(?<!vs)(?<!adv)\.(?:\s+[A-Z(]|\s*$)", text))
        if sentences > 2:
            problems.append(f"caption of {sentences} sentences: {caption.group(1)[:120]!r}")
    if re.search(r"(?<![`'\w])'[^'\n]+'(?!')", body):
        problems.append("straight quotes (LaTeX wants ``...'')")
    for plain in ("eps_L", "L-inf", "eps "):
        if plain in _outside_math(body):
            problems.append(f"plain notation {plain!r}")
    return problems


# ---------------------------------------------------------------- the checker itself


GOOD = r"""% a comment: 100% fine_here
\begin{table}[htbp]
\caption{Study my\_study, 50\% of $x_i$ \& more.}
\label{tab:my_study-x}
\begin{tabular}{lrr}
\toprule
 & \multicolumn{2}{c}{\shortstack{White-box\\x-ent}} \\
\cmidrule(lr){2-3}
Defense & A & B \\
\midrule
natural & 1.00 & -- \\
\bottomrule
\end{tabular}
\end{table}
"""


def test_paper_checker_finds_scaling_sizes_long_captions_and_quotes() -> None:
    good = GOOD.replace("\\begin{tabular}", "\\footnotesize\n\\begin{tabular}")
    assert paper_problems(good) == []
    assert any("scaled" in p for p in paper_problems(good.replace("\\begin{tabular}{lrr}", "\\resizebox{\\textwidth}{!}{\\begin{tabular}{lrr}")))
    assert any("font sizes" in p for p in paper_problems(good.replace("\\footnotesize", "\\small")))
    assert any("sentences" in p for p in paper_problems(good.replace("more.}", "more. One. Two. Three.}")))
    assert any("quotes" in p for p in paper_problems(good.replace("more.}", "more 'quoted'.}")))
    assert any("notation" in p for p in paper_problems(good.replace("more.}", "more, L-inf.}")))


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (GOOD.replace("natural & 1.00 & --", "natural & 1.00 & -- & 3"), "4 cells in a 3-column tabular"),
        (GOOD.replace(r"\multicolumn{2}{c}", r"\multicolumn{1}{c}"), "2 cells in a 3-column tabular"),
        (GOOD.replace(r"my\_study,", "my_study,"), "unescaped '_'"),
        (GOOD.replace(r"50\%", "50%"), "unescaped '%'"),
        (GOOD.replace(r"\& more", "& more"), "unescaped '&' outside the tabular"),
        (GOOD.replace("natural &", "n#1 &"), "unescaped '#'"),
        (GOOD.replace("\\end{table}\n", ""), "\\begin{table} never ended"),
        (GOOD.replace("\\bottomrule\n\\end{tabular}", "\\bottomrule\n\\end{tabular}\n\\end{center}"), "\\end{center} without its \\begin"),
    ],
)
def test_checker_finds_planted_faults(broken: str, problem: str) -> None:
    assert latex_problems(GOOD) == []
    found = latex_problems(broken)
    assert any(problem in p for p in found), found


# ---------------------------------------------------------------- the pipeline's tables


def _spec(study: str) -> dict:
    """What the workflow hands the tables stage (the plan's tables_spec)."""
    return Plan(CONFIG).tables_spec(study)


def _row_files(study: str, tmp: Path) -> list[Path]:
    """One row file per grid model with made-up accuracies in every column; one model collapsed, one
    left without its Eq. 4 prediction, so that notes and '--' appear."""
    st, spec = CONFIG["studies"][study], _spec(study)
    names = ["train", "test", *(f"whitebox_{a['name']}" for a in spec["whitebox"]), *(f"blackbox_{a['name']}" for a in spec["blackbox"])]
    paths = []
    for i, entry in enumerate(st["grid"]):
        mid = sscfg.model_id(entry)
        accuracy = {name: round(100 - 2.4 * i - 0.1 * j, 2) for j, name in enumerate(names)}  # in [0, 100] for the 40 MNIST models
        collapsed = i == 1
        record = {"study": study, "model_id": mid, "entry": copy.deepcopy(entry), "accuracy": accuracy, "eps": spec["eps"],
                  "pixel_units": spec["pixel_units"], "n_test": 10000, "blackbox_source": spec["blackbox_source"],
                  "training": training_status(11.0 if collapsed else 99.0, 10)}
        summary = {"model_id": mid, "predicted_robust_accuracy": 12.5, "predicted_robust_accuracy_top": 20.0} if i % 3 else None
        path = tmp / "rows" / f"{mid}.csv"
        tables.write_row(tables.build_row(record, summary), path)
        paths.append(path)
    return paths


def _render(study: str, tmp: Path) -> dict[str, str]:
    """Every LaTeX table of the study: the study tables and the comparisons with the paper."""
    rows, spec = _row_files(study, tmp), _spec(study)
    jobs = [("table", name) for name in tables.STUDY_TABLES] + [("compare", name) for name in paper.tables_for(spec["dataset"], spec["eps"] / spec["pixel_units"])]
    out = {}
    for command, name in jobs:
        files = [str(tmp / "tables" / f"{name}.{ext}") for ext in ("csv", "tex", "html")]
        assert cli_main([command, name, "--spec", json.dumps(spec), "--rows", *map(str, rows),
                            "--csv", files[0], "--tex", files[1], "--html", files[2]]) == 0
        out[name] = Path(files[1]).read_text()
    return out


@pytest.fixture(scope="module", params=["mnist", "cifar10"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _render(request.param, tmp_path_factory.mktemp(request.param))


def test_every_table_of_the_paper_studies_is_well_formed(rendered: dict[str, str]) -> None:
    assert {"accuracy", "whitebox", "blackbox", "eq4", "table1"} <= set(rendered)
    for name, tex in rendered.items():
        assert latex_problems(tex) == [], name
        assert paper_problems(tex) == [], name
        assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex, name
    # what needed escaping did occur and was escaped (percent signs); the settings note after the float
    # is comment lines and names the source model as it is
    assert re.search(r"(?m)^% .*crafted on \S+_k\d+", rendered["accuracy"]), rendered["accuracy"][-600:]
    assert r"\%" in rendered["accuracy"] and "training collapsed" in rendered["accuracy"]


def test_latex_escape_covers_every_special_character() -> None:
    escaped = render.latex_escape(r"a_b 5% x&y #1 $z$ {c} ~ ^")
    assert escaped == r"a\_b 5\% x\&y \#1 \$z\$ \{c\} \textasciitilde{} \textasciicircum{}"


def test_latex_escape_of_a_backslash() -> None:
    """One pass: the braces of the \\textbackslash{} just written are not escaped again."""
    assert render.latex_escape("back\\slash {x}") == r"back\textbackslash{}slash \{x\}"


@pytest.mark.slow
def test_every_table_of_the_tiny_study_is_well_formed(tiny_study: Path) -> None:
    # every table (figure captions and figure floats are .tex too, but hold no tabular)
    texs = sorted(p for p in (tiny_study / "reports" / "tiny").rglob("*.tex") if not p.name.endswith((".caption.tex", ".figure.tex")))
    names = {p.stem for p in texs}
    assert {"accuracy", "eq4", "cost", "audit"} <= names, names  # digits: the combined layout (Tables 2/5)
    for path in texs:
        assert latex_problems(path.read_text()) == [], path.name
        assert paper_problems(path.read_text()) == [], path.name


# A plain article at ICLR's text width (397pt), with the packages a paper has anyway.
DOCUMENT = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n\\usepackage{amsmath}\n"
            "\\setlength{\\textwidth}{397pt}\n\\begin{document}\n%s\n\\end{document}\n")


@pytest.mark.slow
def test_generated_tables_compile_with_pdflatex(tmp_path: Path) -> None:
    pdflatex = pdflatex_or_skip()
    texs = {**{f"mnist_{k}": v for k, v in _render("mnist", tmp_path / "mnist").items()},
            **{f"cifar10_{k}": v for k, v in _render("cifar10", tmp_path / "cifar10").items()}}
    _compile_all(pdflatex, texs, tmp_path)


def pdflatex_or_skip() -> str:
    """pdflatex's path; skip without it, except in CI, where .ci/run installs it and the test must run."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("pdflatex is missing: .ci/run installs texlive-latex-recommended, and in CI this test must run")
        pytest.skip("pdflatex is not installed (Debian: apt-get install texlive-latex-recommended)")
    return pdflatex


def _compile_all(pdflatex: str, texs: dict[str, str], where: Path) -> None:
    """Each table compiles in the plain article, and none is wider than the 397pt text (no overfull box),
    nor fits it by scaling (one font size for every table: no \\resizebox)."""
    assert texs
    for name, tex in texs.items():
        assert "\\resizebox" not in tex, f"{name}: scaled to fit"
        doc = where / f"{name}.tex"
        doc.write_text(DOCUMENT % tex)
        proc = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=where,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and (where / f"{name}.pdf").exists(), f"{name}:\n{proc.stdout[-3000:]}"
        log = (where / f"{name}.log").read_text(errors="replace")
        assert "Overfull \\hbox" not in log, f"{name}: wider than 397pt:\n" + "\n".join(
            line for line in log.splitlines() if "Overfull" in line)


@pytest.mark.slow
def test_the_tiny_study_tables_fit_iclr_text_width(tiny_study: Path, tmp_path: Path) -> None:
    """Every .tex the workflow wrote (study, audit, cost tables) compiles at 397pt without an overfull box."""
    pdflatex = pdflatex_or_skip()
    texs = {p.stem: p.read_text() for p in sorted((tiny_study / "reports" / "tiny" / "tables").glob("*.tex"))}
    texs["claims"] = (tiny_study / "reports" / "tiny" / "claims.tex").read_text()
    assert {"accuracy", "eq4", "audit", "cost"} <= set(texs), sorted(texs)
    _compile_all(pdflatex, texs, tmp_path)
