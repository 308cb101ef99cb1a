"""Tables stage: one CSV row per evaluated model, aggregated into the paper's tables.

Everything is rendered from the evaluation records (and, for Table 1, the analysis
summaries), never typed. Each table is written three times by :mod:`smoothsqueeze.render`:
CSV (2 decimals), LaTeX (a booktabs `table` float) and a small HTML page the Snakemake report
shows inline; this module holds the paper's vocabulary (labels, notes) they are given.

    table-row  records/<model>.json [+ analysis/<model>.json]  -> rows/<model>.csv
    table      rows/*.csv -> tables/<name>.{csv,tex,html}     name: accuracy | whitebox | blackbox | eq4
    compare    rows/*.csv + a paper CSV -> tables/paper_<table>.{csv,tex,html}

Columns come from the study's attack names (`--spec`), so any study gets its own tables;
a row file that does not exist is left out of the table (with a note on stderr).
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from . import paper
from . import study
from .artifacts import atomic_path
from .errors import PipelineError
from .evidence.seeds import aggregate_rows, group_key
from .render import STAT_PARTS, Column, latex_escape, missing, to_csv, to_html, to_latex

#: Identity columns of a row file; the accuracy columns (train, test, whitebox_*, blackbox_*)
#: and predicted_eq4 follow.
ROW_ID_COLUMNS = [
    "study", "model", "group", "train_seed", "kind", "defense", "alpha", "beta", "sigma", "k",
    "adv_steps", "adv_step_size", "adv_eps", "pixel_units", "eps", "n_test", "n_train",
]
STUDY_TABLES = {
    "accuracy": "Accuracy of every model, white-box and black-box (layout of the paper's Tables 2 and 5)",
    "whitebox": "White-box accuracy of every model (layout of the paper's Tables 3 and 6)",
    "blackbox": "Black-box accuracy of every model (layout of the paper's Tables 4 and 7)",
    "eq4": (
        "FGSM accuracy vs the accuracy Eq. 4 predicts, natural and adversarial training (layout of the paper's Table 1); "
        "Eq. 4 predicted: correct and ε below ε_L of every wrong class, top class: of the largest wrong logit only"
    ),
}
#: Row marks (the `note` column): never a robustness number without them.
COLLAPSED = "training collapsed"
#: A model whose training's robust check fell to near 0% (train.robust_check; evaluate.training_status).
OVERFITTED = "catastrophic overfitting"
SOURCE = "black-box source (its black-box numbers are white-box)"
#: A reproduced model this many points of test accuracy below the paper's row is marked.
FAR_BELOW = 20.0


# ---------------------------------------------------------------- rows


def model_kind(entry: dict[str, Any]) -> str:
    """natural | regularized | adversarial, from a grid entry (see `study.coarse_kind`)."""
    return study.coarse_kind(entry)


def defense_label(entry: dict[str, Any]) -> str:
    """Short name of a grid entry's defense, e.g. 'LS + noise' or 'PGD-10 adv. (eps 0.2, step 0.05)' (see `study.defense_label`)."""
    return study.defense_label(entry)


def build_row(record: dict[str, Any], summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """One table row from an evaluation record and (optionally) its analysis summary."""
    try:
        entry, accuracy, model = record["entry"], record["accuracy"], record["model_id"]
        adv = entry.get("adversarial") or {}
        row: dict[str, Any] = {
            "study": record["study"],
            "model": model,
            "group": record.get("group", model),
            "train_seed": record.get("train_seed"),
            "kind": model_kind(entry),
            "defense": defense_label(entry),
            "alpha": entry.get("alpha", 0),
            "beta": entry.get("beta", 0),
            "sigma": entry.get("sigma", 0),
            "k": entry["k"],
            "adv_steps": adv.get("steps"),
            "adv_step_size": adv.get("step_size"),
            "adv_eps": adv.get("eps"),
            "pixel_units": record.get("pixel_units", 1),
            "eps": record["eps"],
            "n_test": record.get("n_test"),
            "n_train": record.get("n_train"),
        }
        # train and test first, then the attacks in the record's order
        names = ["train", "test", *(n for n in accuracy if n not in ("train", "test"))]
        row.update({name: float(accuracy[name]) for name in names})
        row["note"] = row_note(record)
    except KeyError as err:
        raise PipelineError(f"evaluation record lacks {err}; rerun its evaluation") from None
    except (TypeError, ValueError) as err:
        raise PipelineError(f"evaluation record of {record.get('model_id')!r} holds a non-numeric accuracy ({err})") from None
    row["predicted_eq4"] = None
    row["predicted_eq4_top"] = None  # Eq. 4 with the top wrong class only (predicted_eq4: the nearest wrong class)
    if summary is not None:
        if summary.get("model_id", model) != model:
            raise PipelineError(f"analysis summary is of model {summary['model_id']!r}, the record of {model!r}")
        if "predicted_robust_accuracy" not in summary:
            raise PipelineError("analysis summary lacks 'predicted_robust_accuracy'; rerun the analysis")
        if "eps" in summary and not math.isclose(float(summary["eps"]), float(record["eps"])):
            raise PipelineError(f"analysis summary of {model!r} is at eps {summary['eps']}, its record at {record['eps']}; rerun the analysis")
        row["predicted_eq4"] = float(summary["predicted_robust_accuracy"])
        if summary.get("predicted_robust_accuracy_top") is not None:
            row["predicted_eq4_top"] = float(summary["predicted_robust_accuracy_top"])
    return row


def row_note(record: dict[str, Any]) -> str:
    """Marks a table row must carry: a model that failed to train, one whose robust check during training
    fell to near 0% (catastrophic overfitting), the black-box source model."""
    notes = []
    if record.get("training", {}).get("collapsed"):
        notes.append(COLLAPSED)
    if record.get("training", {}).get("overfitted"):
        notes.append(OVERFITTED)
    if record.get("blackbox_source") == record.get("model_id"):
        notes.append(SOURCE)
    return "; ".join(notes)


def marks(note: Any) -> list[str]:
    """The marks of a row's `note` cell ('' or NaN, as read back from a CSV, has none)."""
    return [] if missing(note) else [m for m in str(note).split("; ") if m]


def write_row(row: dict[str, Any], out: str | Path) -> None:
    with atomic_path(out) as tmp:
        pd.DataFrame([row]).to_csv(tmp, index=False)


def read_rows(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Row files in the given order; files that do not exist are left out."""
    frames = []
    for path in paths:
        if not Path(path).exists():
            print(f"note: {path} does not exist; its model is left out", file=sys.stderr)
            continue
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise PipelineError(f"{path}: not a row file ({err}); delete it and rerun") from None
        missing = [c for c in ("model", "kind", "k", "train", "test") if c not in frame.columns]
        if len(frame) != 1 or missing:
            raise PipelineError(f"{path}: not a row file (want one row with {missing or 'the row columns'}); delete it and rerun")
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*ROW_ID_COLUMNS, "train", "test", "predicted_eq4"])
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- columns


_TOKENS = {"xent": "x-ent", "cw": "CW", "fgsm": "FGSM", "rand": "rand.", "pgd": "PGD"}


def attack_label(name: str) -> str:
    """'pgd40_xent' -> 'PGD-40 x-ent', 'pgd7_rand_cw' -> 'PGD-7 rand. CW'."""
    words = []
    for token in name.split("_"):
        m = re.fullmatch(r"([a-z]+)(\d+)", token)
        words.append(f"{_TOKENS.get(m[1], m[1].upper())}-{m[2]}" if m else _TOKENS.get(token, token))
    return " ".join(words)


def metric_label(key: str) -> str:
    for prefix, word in (("whitebox_", "White-box "), ("blackbox_", "Black-box ")):
        if key.startswith(prefix):
            return word + attack_label(key[len(prefix):])
    return {"predicted_eq4": "Eq. 4 predicted", "predicted_eq4_top": "Eq. 4 top class"}.get(key, attack_label(key) if "_" in key else key)


PARAMS = [
    Column("model", "model", fmt="text", in_tex=False),
    Column("defense", "defense", "Defense", fmt="text"),
    Column("alpha", "α", r"$\alpha$", fmt="num"),
    Column("beta", "β", r"$\beta$", fmt="num"),
    Column("sigma", "σ", r"$\sigma$", fmt="num"),
    Column("k", "k", "$k$", fmt="num"),
]
#: Training seeds behind a row (CSV and HTML; the LaTeX caption says it).
SEEDS_COLUMN = Column("seeds", "seeds", fmt="num", in_tex=False)
CLEAN = [Column("train", "train", "Train", fmt="stat"), Column("test", "test", "Test", fmt="stat")]
NOTE_COLUMN = Column("note", "note", "Note", fmt="text")


def _attacks(spec: dict[str, Any], section: str, group: str, method: str | None = None) -> list[Column]:
    return [
        Column(f"{section}_{a['name']}", attack_label(a["name"]), group=group, fmt="stat")
        for a in spec[section]
        if method is None or a.get("method") == method
    ]


def study_columns(name: str, spec: dict[str, Any]) -> list[Column]:
    """The columns of study table `name`, from the study's attacks."""
    white = _attacks(spec, "whitebox", "White-box")
    black = _attacks(spec, "blackbox", "Black-box")
    if name == "accuracy":
        return [*PARAMS, SEEDS_COLUMN, *CLEAN, *white, *black]
    if name == "whitebox":
        return [*PARAMS, SEEDS_COLUMN, *CLEAN, *white]
    if name == "blackbox":
        return [*PARAMS, SEEDS_COLUMN, *black]
    if name == "eq4":
        fgsm = _attacks(spec, "whitebox", "FGSM accuracy", method="fgsm")
        fgsm = [Column(c.key, attack_label(c.key.removeprefix("whitebox_")).removeprefix("FGSM "), group=c.group, fmt="stat") for c in fgsm]
        return [
            PARAMS[0], PARAMS[1], PARAMS[5], SEEDS_COLUMN, *fgsm,
            Column("predicted_eq4", "Eq. 4 predicted", r"\shortstack{Eq.~4\\predicted}", fmt="stat"),  # nearest wrong class (min of eps_L)
            Column("predicted_eq4_top", "Eq. 4 top class", r"\shortstack{Eq.~4\\top class}", fmt="stat"),  # top wrong class only
        ]
    raise PipelineError(f"unknown table {name!r} (have {sorted(STUDY_TABLES)})")


def _with_note(columns: list[Column], rows: pd.DataFrame) -> list[Column]:
    """Add the note column when a row carries a mark (a collapsed model, the black-box source)."""
    if "note" in rows.columns and any(marks(note) for note in rows["note"]):
        return [*columns, NOTE_COLUMN]
    return columns


#: Row columns that are not accuracies (everything else numeric in a row is one, aggregated over seeds).
_NOT_METRICS = set(ROW_ID_COLUMNS) | {"note"}


def metric_columns(rows: pd.DataFrame) -> list[str]:
    """The accuracy columns of row files (train, test, whitebox_*, blackbox_*, predicted_eq4*)."""
    return [c for c in rows.columns if c not in _NOT_METRICS and not c.endswith(("_sd", "_lo", "_hi")) and c not in ("seeds", "models")]


def _images(metric: str, row: Any) -> int | None:
    """How many images a row's accuracy `metric` was measured on (train: the training set)."""
    n = row.get("n_train") if metric == "train" else row.get("n_test")
    return None if missing(n) else int(n)


def _merge_notes(notes: list[Any]) -> str:
    """A group's marks: each seed's marks once; a mark only some seeds carry says how many."""
    per_seed = [marks(n) for n in notes]
    out = []
    for mark in dict.fromkeys(m for ms in per_seed for m in ms):
        count = sum(mark in ms for ms in per_seed)
        out.append(mark)
        if count < len(per_seed):
            out.append(f"{count} of {len(per_seed)} seeds {mark}")
    return "; ".join(out)


#: The mark of a grid entry whose black-box columns leave out its seed that crafted the sets.
SOURCE_LEFT_OUT = "black-box columns: the other seeds' transfers (the source seed's own are white-box)"


def group_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per grid entry: the mean over its seeds, `_sd`, the pooled Wilson `_lo`/`_hi`, `seeds` (evidence.seeds).

    The black-box source's own black-box numbers are white-box: in a grid entry with other seeds
    they are left out of its black-box columns (the other seeds' are transfers, as the paper's are).
    """
    if rows.empty or "note" not in rows.columns:
        return aggregate_rows(rows, metric_columns(rows), _images, _merge_notes)
    rows = rows.copy()
    groups = [group_key(r) for r in rows.to_dict("records")]
    sizes = pd.Series(groups).value_counts()
    blackbox = [c for c in metric_columns(rows) if c.startswith("blackbox_")]
    for i, group in enumerate(groups):
        if sizes[group] > 1 and SOURCE in marks(rows.at[i, "note"]):
            rows.loc[i, blackbox] = math.nan
            rows.at[i, "note"] = "; ".join([m for m in marks(rows.at[i, "note"]) if m != SOURCE] + [SOURCE_LEFT_OUT])
    out = aggregate_rows(rows, metric_columns(rows), _images, _merge_notes)
    out["note"] = [_source_note(n) for n in out["note"]]
    return out


def _source_note(note: Any) -> str:
    """'black-box columns: ...' once, without the '1 of 3 seeds ...' count."""
    return "; ".join(m for m in marks(note) if not re.fullmatch(rf"\d+ of \d+ seeds {re.escape(SOURCE_LEFT_OUT)}", m))


def study_frame(name: str, rows: pd.DataFrame, spec: dict[str, Any]) -> tuple[list[Column], pd.DataFrame]:
    rows = group_rows(rows)
    columns = study_columns(name, spec)
    if name == "eq4":
        rows = rows[rows["kind"].isin(["natural", "adversarial"])]
    if name not in ("accuracy", "blackbox") and "note" in rows.columns:
        # The source's black-box numbers are white-box: only tables with black-box columns carry that mark.
        rows = rows.assign(note=["; ".join(m for m in marks(note) if m in (COLLAPSED, OVERFITTED)) for note in rows["note"]])
    columns = _with_note(columns, rows)
    keep = [c.key for c in columns] + [f"{c.key}{part}" for c in columns if c.fmt == "stat" for part in STAT_PARTS]
    return columns, rows.reindex(columns=keep).reset_index(drop=True)


# ---------------------------------------------------------------- paper comparison


_PAPER_KEYS = {
    "row": Column("row", "paper row", "Row", fmt="num"),
    "defense": Column("defense", "paper defense", "Defense", fmt="text"),
    "alpha": PARAMS[2],
    "beta": PARAMS[3],
    "sigma": PARAMS[4],
    "sigma_255": Column("sigma_255", "σ (/255)", r"$\sigma_{255}$", fmt="num"),
    "k": PARAMS[5],
    "training": Column("training", "training", "Training", fmt="text"),
    "epsilon": Column("epsilon", "eps", r"$\epsilon$", fmt="text"),
    **{f"in_table{n}": Column(f"in_table{n}", f"in Table {n}", fmt="text", in_tex=False) for n in (2, 3, 4)},
}
_PAPER_WORDS = {"madry_adv_train": "Madry adv. training", "regularized": "regularized", "natural": "natural"}


def comparison_frame(
    name: str, paper_rows: pd.DataFrame, rows: pd.DataFrame, spec: dict[str, Any]
) -> tuple[list[Column], pd.DataFrame]:
    """Every paper row that has a model in the study: its parameters, the model, and per metric ours / paper / difference."""
    table = paper.PAPER_TABLES[name]
    ours = {"train", "test", "predicted_eq4"} | {f"{s}_{a['name']}" for s in ("whitebox", "blackbox") for a in spec[s]}
    metrics = [(p, o) for p, o in table.metrics.items() if o in ours]
    columns = [_PAPER_KEYS[k] for k in table.key] + [PARAMS[0]]
    for p, _ in metrics:
        group = metric_label(p) if name != "table1" else {"predicted_eq4": "Eq. 4 predicted"}.get(p, attack_label(p))
        columns += [
            Column(f"{p}_ours", "ours", group=group),
            Column(f"{p}_paper", "paper", group=group),
            Column(f"{p}_diff", "Δ", r"$\Delta$", group=group, fmt="diff"),
        ]
    rows = group_rows(rows)
    by_model = {str(r["model"]): r for r in rows.to_dict("records")}
    records = []
    eps01 = spec["eps"] / spec["pixel_units"]
    stand_in = spec["dataset"] in paper.PAPER_STAND_INS
    matches = paper.match(name, paper_rows, rows, eps01, spec.get("blackbox_source"), match_k=not stand_in)
    for prow, model in zip(paper_rows.to_dict("records"), matches):
        if model is None:
            continue
        out = {k: prow[k] for k in table.key} | {"model": model}
        ours_row = by_model[model]
        notes = marks(ours_row.get("note"))
        if stand_in and "k" in prow:
            notes.append(f"k and training set differ: ours k {int(ours_row['k'])} on {spec['dataset']}, the paper's k {int(prow['k'])} on "
                         f"{paper.PAPER_STAND_INS[spec['dataset']]}")
        overrides = (table.row_metrics or {}).get(str(prow.get("defense")), {})
        for p, default in metrics:
            o = overrides.get(p, default)
            if o != default:
                notes.append(f"{metric_label(p)}: ours is {metric_label(o)}, as the paper's row")
            mine, theirs = _number(ours_row.get(o)), _number(prow[p])
            out |= {f"{p}_ours": mine, f"{p}_paper": theirs, f"{p}_diff": mine - theirs}
        if "test" in table.metrics and _number(ours_row.get("test")) < _number(prow.get("test")) - FAR_BELOW:
            notes.append(f"test accuracy more than {FAR_BELOW:g} points below the paper's")
        out["note"] = "; ".join(notes)
        records.append(out)
    frame = pd.DataFrame(records, columns=[c.key for c in columns] + ["note"])
    columns = _with_note(columns, frame)
    return columns, frame.reindex(columns=[c.key for c in columns])


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


# ---------------------------------------------------------------- vocabulary of the LaTeX and HTML views


#: Short LaTeX for a row mark (the CSV keeps the full words).
_TEX_MARKS = {SOURCE: "black-box source"}


def _short_defense(text: str) -> str:
    """'PGD-10 adv. (eps 0.2, step 0.05) + noise' -> 'PGD-10 adv. + noise': the budget goes to the caption."""
    return re.sub(r" \(eps [^)]*\)", "", text)


def html_words(key: str, text: str) -> str:
    return _PAPER_WORDS.get(text, text)


def tex_words(key: str, text: str) -> str:
    """A text cell in LaTeX: shorter defence labels and marks than the CSV's, then escaped."""
    if key == "defense":
        return latex_escape(_short_defense(text))
    if key == "note":
        return latex_escape("; ".join(_TEX_MARKS.get(m, m) for m in marks(text)))
    return latex_escape(_PAPER_WORDS.get(text, text))


#: The adversarial-training names of defence labels (study.adversarial_name): PGD-k, FGSM-RS, N-FGSM.
_ADV_LABEL = r"(?:PGD-\d+|FGSM-RS|N-FGSM)"


def adversarial_text(frame: pd.DataFrame) -> str:
    """Caption words for the adversarial-training budgets the LaTeX defence labels leave out."""
    if "defense" not in frame.columns:
        return ""
    found = sorted({m[0] for d in frame["defense"] if isinstance(d, str) for m in [re.findall(_ADV_LABEL + r" adv\. \(eps [^)]*\)", d)] if m})
    if not found:
        return ""
    parts = [re.sub("(" + _ADV_LABEL + r") adv\. \(eps ([^,]*), step ([^)]*)\)", r"\1 adv.\\ trained at $\\epsilon = \2$, step \3", f) for f in found]
    return "; " + "; ".join(parts)


def noise_text(columns: Sequence[Column], frame: pd.DataFrame) -> str:
    """The table's noise floor in words: seeds per row (mean ± standard deviation over seeds) and the
    widest 95% Wilson interval over the attacked images (pooled over seeds), from the frame itself."""
    stats = [c.key for c in columns if c.fmt == "stat" and f"{c.key}_lo" in frame.columns]
    if not stats or frame.empty:
        return ""
    seeds = sorted({int(s) for s in frame.get("seeds", pd.Series([1])).dropna()})
    half = max(
        ((float(r[f"{k}_hi"]) - float(r[f"{k}_lo"])) / 2 for r in frame.to_dict("records") for k in stats
         if not missing(r.get(f"{k}_lo")) and not missing(r.get(f"{k}_hi"))),
        default=math.nan,
    )
    if seeds and max(seeds) > 1:
        text = f"Mean ± standard deviation over {'/'.join(map(str, seeds))} seeds per row (training seeds; the images attacked are the same)"
    else:
        text = "One training seed per row"
    if not math.isnan(half):
        text += f"; 95% Wilson intervals over the attacked images (pooled over seeds) are at most ±{half:.1f} points wide"
    return text + "."


def eps_text(spec: dict[str, Any]) -> str:
    return study.units_text(spec["eps"], spec.get("pixel_units", 1))


def quoted(text: str, tex: bool) -> str:
    """`text` in quotes: LaTeX's ``...'' or plain '...'."""
    return f"``{text}''" if tex else f"'{text}'"


def headline_text(spec: dict[str, Any], tex: bool = False) -> str:
    """The sentence every table caption carries: study, threat model and unit, e.g.
    'Study mnist (mnist), $L_\\infty$ attacks at $\\epsilon = 0.3$; accuracies in \\%.'"""
    esc = latex_escape if tex else str
    if tex:
        return rf"Study {esc(spec['study'])} ({esc(spec['dataset'])}), $L_\infty$ attacks at $\epsilon = {eps_text(spec)}$; accuracies in \%."
    return f"Study {spec['study']} ({spec['dataset']}), L∞ attacks at ε = {eps_text(spec)}; accuracies in %."


def settings_text(name: str, spec: dict[str, Any], tex: bool = False) -> str:
    """What a table shows under which settings beyond the headline: the note after its LaTeX and the HTML caption."""
    esc = latex_escape if tex else str
    eps, sigma, pct = (r"$\epsilon$", r"$\sigma$", r"\%") if tex else ("ε", "σ", "%")
    units = spec.get("pixel_units", 1)
    parts = []
    if units != 1:
        parts.append(f"{sigma} and {eps} in units of 1/{units:g}")
    if name in ("accuracy", "blackbox", "table5", "table7"):
        parts.append(f"black-box sets crafted on {esc(spec['blackbox_source'])}")
    if spec.get("squeeze_norm"):
        norm = spec["squeeze_norm"]
        term = r"$\beta \|z\|$" if tex else "β‖z‖"
        parts.append(f"logit squeezing {term} normalised as {esc(norm)} ({esc(SQUEEZE_WORDS.get(norm, norm))})")
    if spec.get("lr_milestones"):
        parts.append("learning-rate drops at " + "/".join(f"{100 * m:g}{pct}" for m in spec["lr_milestones"]) + " of k (Madry's 40k/60k of 80k, scaled with k: an assumption for other k)")
    schedule = spec.get("lr_schedule") or {}
    if schedule.get("name") == "cyclic":
        parts.append(f"cyclic learning rate (Wong et al.): 0 to {schedule['lr']:g} at {100 * schedule['peak']:g}{pct} of k, then down to 0")
    if "noise_clip" in spec:
        parts.append("noisy training images " + ("clipped to [0, 1]" if spec["noise_clip"] else "not clipped to [0, 1] (the paper does not say)"))
    if name in ("accuracy", "whitebox", "blackbox", "eq4") or name in paper.PAPER_TABLES:
        parts.append(f"rows marked {quoted(COLLAPSED, tex)} failed to train (training accuracy below twice chance): not robustness results")
    if name in paper.PAPER_TABLES:
        parts.append("paper rows without a model in the study's grid are left out; difference = ours - paper")
        if spec["dataset"] in paper.PAPER_STAND_INS:
            parts.append(f"{esc(spec['dataset'])} stands in for the paper's {esc(paper.PAPER_STAND_INS[spec['dataset']])}: rows are matched on "
                         f"alpha, beta, {sigma} whatever k (ours train for far fewer iterations on fewer images; see each row's note)")
    return "; ".join(parts)[:1].upper() + "; ".join(parts)[1:] + "." if parts else ""


#: Plain words for each logit-squeeze normalisation (losses.SQUEEZE_NORMS), for captions.
SQUEEZE_WORDS = {
    "per_example": "mean over the batch of each image's logit norm",
    "batch": "Frobenius norm of the batch's logits / batch size, as Madry's summed MNIST loss",
    "batch_unscaled": "Frobenius norm of the batch's logits next to a mean cross-entropy",
}


def write_table(
    columns: list[Column], frame: pd.DataFrame, name: str, title: str, spec: dict[str, Any], paths: Sequence[str | Path]
) -> None:
    """Write the CSV, LaTeX and HTML versions of one table.

    The LaTeX caption is two sentences (what the table shows; study, threat model, unit); the
    settings and the noise floor follow the float as a note (comment lines), and lead the HTML caption.
    """
    label = f"tab:{spec['study']}-{name}"
    short, _, rest = title.partition("; ")
    caption = f"{latex_escape(short)}. {headline_text(spec, tex=True)}"
    extra = adversarial_text(frame)
    noise = noise_text(columns, frame)
    details = " ".join(t for t in ((rest[:1].upper() + rest[1:] + ".") if rest else "", settings_text(name, spec), extra_plain(extra), noise) if t)
    texts = (
        to_csv(columns, frame),
        to_latex(columns, frame, caption, label, tex_words, COMMENT, note=details),
        to_html(columns, frame, title, headline_text(spec) + (" " + details if details else ""), html_words),
    )
    for path, text in zip(paths, texts):
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def extra_plain(extra: str) -> str:
    """`adversarial_text`'s words without LaTeX markup, as a sentence."""
    if not extra:
        return ""
    text = extra.lstrip("; ").replace(r"adv.\ ", "adv. ").replace(r"$\epsilon = ", "ε = ").replace("$", "")
    return text[:1].upper() + text[1:] + "."


COMMENT = "Generated by smoothsqueeze.tables from the evaluation records; do not edit by hand."


def write_study_table(name: str, spec: dict[str, Any], row_paths: Iterable[str | Path], paths: Sequence[str | Path]) -> None:
    """tables/<name>.{csv,tex,html} of one study from its row files."""
    columns, frame = study_frame(name, read_rows(row_paths), spec)
    write_table(columns, frame, name, STUDY_TABLES[name], spec, paths)
    print(f"{paths[0]}: {len(frame)} rows")


def write_comparison_table(
    name: str, spec: dict[str, Any], row_paths: Iterable[str | Path], paper_csv: str | Path | None, paths: Sequence[str | Path]
) -> None:
    """tables/paper_<name>.{csv,tex,html}: ours vs the paper (wide by nature: set in panels in LaTeX)."""
    paper_rows = paper.load(name, spec["dataset"], paper_csv)
    columns, frame = comparison_frame(name, paper_rows, read_rows(row_paths), spec)
    write_table(columns, frame, name, f"Reproduced vs the paper's {paper.PAPER_TABLES[name].title}", spec, paths)
    print(f"{paths[0]}: {len(frame)} rows")
