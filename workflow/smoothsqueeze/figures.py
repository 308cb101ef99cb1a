"""Figures stage: the paper's Figures 1-9 (and training curves) for one study, PNG and PDF.

Which models a figure shows is decided from the grid entries alone (`select`), so the list of
figure files and their captions is known before anything runs. Each figure names roles
(natural, strong / weak adversarial training, label smoothing (LS), logit squeezing (LSQ),
noise, their combinations); a role takes the grid entry closest to the paper's parameters,
and a role the study lacks is left out and named on the figure. Every figure file is always
written (a figure with no eligible model says so), so the targets are static.
"""
from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import study
from .artifacts import atomic_path, read_json, read_npz
from .errors import PipelineError


# The figure plan (roles, which model fills which, legend labels) lives in the torch-free plan module,
# so the Snakefile knows every figure file and caption without importing this one.
from .study import ADV_STRONG, ADV_WEAK, FIGURES, NATURAL, Role, assign, select, shown  # noqa: E402,F401 - re-exported
from .study import FIGURE_FORMATS as FORMATS  # noqa: E402
from .study import FIGURES_VERSION as VERSION  # noqa: E402,F401 - re-exported


# ---------------------------------------------------------------- selection (no plotting libraries)


def kind(entry: dict[str, Any]) -> str:
    """natural | adv | noise | ls | ls_noise | lsq | lsq_noise | other (see `study.kind`)."""
    return study.kind(entry)


def _num(value: float, units: float) -> str:
    return study.units_text(value, units)


def label(entry: dict[str, Any], units: float = 1.0, with_k: bool = False) -> str:
    """Legend text naming a model by its parameters, e.g. 'LS α=0.95 + noise σ=0.3' (see `study.legend_label`)."""
    return study.legend_label(entry, units, with_k)


def labels(models: list[str], entries: dict[str, dict[str, Any]], units: float) -> dict[str, str]:
    """Legend labels of `models`; k is added only where two would otherwise read the same."""
    plain = {mid: label(entries[mid], units) for mid in models}
    counts = {text: list(plain.values()).count(text) for text in plain.values()}
    return {mid: label(entries[mid], units, with_k=counts[plain[mid]] > 1) for mid in models}


def caption_selection(entries: dict[str, dict[str, Any]], units: float = 1.0) -> study.CaptionSelection:
    """Per figure: the models shown, the same with their parameters, and the roles missing (see `study.caption_selection`)."""
    return study.caption_selection(entries, units)


# ---------------------------------------------------------------- styles: one colour and marker per model kind


@dataclass(frozen=True)
class Look:
    """Colour and marker of one model kind, the same in every figure."""

    color: str
    marker: str


#: One colour (Okabe-Ito, colour-blind safe) and one marker per model kind (`kind(...)`), for every figure.
KIND_LOOKS: dict[str, Look] = {
    "natural": Look("#000000", "o"),
    "adv": Look("#D55E00", "s"),
    "noise": Look("#56B4E9", "^"),
    "ls": Look("#E69F00", "D"),
    "ls_noise": Look("#009E73", "v"),
    "lsq": Look("#CC79A7", "P"),
    "lsq_noise": Look("#0072B2", "X"),
}
#: Any kind not above (combinations the paper has no role for).
OTHER_LOOK = Look("#7F7F7F", "*")
#: Models of one kind in one figure differ by line style, in the order the figure lists them.
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Style:
    """How one model is drawn in one figure: its kind's look plus a line style."""

    color: str
    marker: str
    linestyle: str | tuple[float, tuple[float, ...]]  # a name or matplotlib's (offset, dashes)


def look(entry: dict[str, Any]) -> Look:
    """The colour and marker of a grid entry's model kind."""
    return KIND_LOOKS.get(kind(entry), OTHER_LOOK)


def styles(models: list[str], entries: dict[str, dict[str, Any]]) -> dict[str, Style]:
    """Per model: its kind's colour and marker; the n-th model of a kind in this figure gets the n-th line style."""
    seen: dict[str, int] = {}
    out = {}
    for mid in models:
        k = kind(entries[mid])
        n = seen.get(k, 0)
        seen[k] = n + 1
        base = look(entries[mid])
        out[mid] = Style(base.color, base.marker, LINESTYLES[n % len(LINESTYLES)])
    return out


#: Print widths (inches) by default: ICLR's full text width (397pt = 5.5 in) and a half-width column
#: (two figures side by side); a study's `analysis.figure_widths` sets others.
DEFAULT_WIDTHS: dict[str, float] = {"full": 5.5, "column": 2.7}
COLUMN_WIDTH, FULL_WIDTH = DEFAULT_WIDTHS["column"], DEFAULT_WIDTHS["full"]
#: paper: the image holds axes, labels and a legend of model names only; the numbers, the paper's
#: statement and the models chosen go to the caption file beside it. annotated: the same numbers
#: are also drawn in the image (legends with accuracies, a footer), for reading the PNG alone.
STYLES = ("paper", "annotated")
#: The smallest text (pt) at print size anywhere in a figure.
MIN_FONT_PT = 7.0
#: Matplotlib settings of every figure: 7-8 pt text at print size, TrueType (Type 42) fonts in PDF/PS.
RC: dict[str, Any] = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "font.family": "DejaVu Sans",
    "mathtext.fontset": "dejavusans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 8,
    "lines.linewidth": 1.1,
    "lines.markersize": 4,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "legend.frameon": False,
    "legend.handlelength": 2.6,
}
#: Footer text size (pt).
NOTE_SIZE = 7


# ---------------------------------------------------------------- inputs


#: The Eq. 4 panels: (N, C-1) arrays, one entry per image and wrong class j (the paper's histograms).
EQ4_PANELS = (
    ("logit_gap_all", "logit gap  z_y − z_j"),
    ("grad_gap_all", "gradient gap  ‖∇z_y − ∇z_j‖₁"),
    ("eps_l_all", "ε_L (Eq. 4) = logit gap / gradient gap"),
    ("cos_all", "cos(∇z_y, ∇z_j)"),
)
#: What the figures read from each analysis .npz.
ANALYSIS_KEYS = (*(key for key, _ in EQ4_PANELS), "grad_norm_y", "z_y", "feature_abs_sum", "logit_abs_sum")


@dataclass
class StudyData:
    """What the figures read: per model its entry, analysis arrays, summary, training history and measured attacks."""

    study: str
    eps: float
    units: float
    entries: dict[str, dict[str, Any]]
    analysis: dict[str, dict[str, np.ndarray]]
    summary: dict[str, dict[str, Any]]
    history: dict[str, list[dict[str, float]]]
    #: model -> {"pgd", "pgd_name", "pgd_n", "autoattack", "autoattack_n"} (None where not measured).
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: paper | annotated (see STYLES) and the print widths (inches) {"full", "column"}.
    style: str = "paper"
    widths: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WIDTHS))

    @property
    def annotated(self) -> bool:
        return self.style == "annotated"


def measured(record: dict[str, Any] | None, audit: dict[str, Any] | None) -> dict[str, Any]:
    """The measured robust accuracies of one model: the strongest white-box PGD of its evaluation
    record (lowest accuracy over its PGD attacks) and AutoAttack from its audit record; None where absent."""
    out: dict[str, Any] = {"pgd": None, "pgd_name": None, "pgd_n": None, "autoattack": None, "autoattack_n": None}
    if record:
        attacks = record.get("attacks", {}).get("whitebox", {})
        found = [
            (record["accuracy"][f"whitebox_{name}"], spec.get("steps"))
            for name, spec in attacks.items()
            if spec.get("method") == "pgd" and record.get("accuracy", {}).get(f"whitebox_{name}") is not None
        ]
        if found:
            value, steps = min(found, key=lambda pair: pair[0])
            out.update(pgd=float(value), pgd_name=f"PGD-{steps}" if steps else "PGD", pgd_n=record.get("n_test"))
    if audit and audit.get("accuracy", {}).get("autoattack") is not None:
        out.update(autoattack=float(audit["accuracy"]["autoattack"]), autoattack_n=audit.get("n"))
    return out


def load_study(spec: dict[str, Any]) -> StudyData:
    """Read every model's artifacts; a model's 'record' (evaluation) and 'audit' paths are optional."""
    entries, analysis, summary, history, measures = {}, {}, {}, {}, {}
    for model in spec["models"]:
        mid = model["model_id"]
        analysis[mid] = read_npz(model["analysis"], required=ANALYSIS_KEYS)
        summary[mid] = read_json(model["summary"])
        entries[mid] = model.get("entry") or summary[mid]["entry"]
        metrics = read_json(model["metrics"])
        if not isinstance(metrics, dict) or not isinstance(metrics.get("history"), list):
            raise PipelineError(f"{model['metrics']}: no training 'history' list; delete it and retrain")
        history[mid] = metrics["history"]
        record = read_json(model["record"]) if model.get("record") else None
        audit = read_json(model["audit"]) if model.get("audit") else None
        for path, rec in ((model.get("record"), record), (model.get("audit"), audit)):
            if rec is not None and rec.get("model_id", mid) != mid:
                raise PipelineError(f"{path}: holds model {rec.get('model_id')!r}, expected {mid!r}")
        measures[mid] = measured(record, audit)
    style = spec.get("style", "paper")
    if style not in STYLES:
        raise PipelineError(f"figure style {style!r} is not one of {', '.join(STYLES)} (analysis.figure_style)")
    widths = {**DEFAULT_WIDTHS, **(spec.get("widths") or {})}
    return StudyData(spec["study"], float(spec["eps"]), float(spec.get("pixel_units", 1)), entries, analysis, summary, history, measures,
                     style, widths)


def models_from_files(
    summaries: list[str], analysis: list[str], metrics: list[str], records: list[str] | None = None, audits: list[str] | None = None
) -> list[dict[str, Any]]:
    """The spec's `models` list from per-model file lists in one order (model id and grid entry come from the summaries)."""
    lists = {"analysis": analysis, "metrics": metrics, "record": records or [], "audit": audits or []}
    for name, paths in lists.items():
        if paths and len(paths) != len(summaries):
            raise PipelineError(f"{len(paths)} {name} files for {len(summaries)} analysis summaries; pass one per model, in the same order")
    models = []
    for i, path in enumerate(summaries):
        info = read_json(path)
        if not isinstance(info, dict) or "model_id" not in info or "entry" not in info:
            raise PipelineError(f"{path}: not an analysis summary (no model_id / entry); delete it and rerun")
        model = {"model_id": info["model_id"], "entry": info["entry"], "summary": path}
        model.update({name: paths[i] for name, paths in lists.items() if paths})
        models.append(model)
    return models


# ---------------------------------------------------------------- histograms: log axes where models differ in scale


@dataclass(frozen=True)
class Binning:
    """Histogram bins over [lo, hi] on a linear, log or symlog axis; values beyond fall in marked overflow bins."""

    edges: np.ndarray
    scale: str  # linear | log | symlog
    linthresh: float = 1.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The axis coordinate (bins are even in it)."""
        x = np.asarray(x, dtype=np.float64)
        if self.scale == "log":
            return np.log10(x)
        if self.scale == "symlog":
            a = np.abs(x)
            return np.sign(x) * np.where(a <= self.linthresh, a / self.linthresh, 1 + np.log10(np.maximum(a, self.linthresh) / self.linthresh))
        return x

    def inverse(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.scale == "log":
            return 10.0**t
        if self.scale == "symlog":
            a = np.abs(t)
            return np.sign(t) * self.linthresh * np.where(a <= 1, a, 10.0 ** (a - 1))
        return t

    def axis_note(self) -> str:
        return {"linear": "", "log": "  (log axis)", "symlog": f"  (symlog axis, linear in ±{self.linthresh:.2g})"}[self.scale]


def binning(values: list[np.ndarray], bins: int = 50, low: float = 0.5, high: float = 99.5) -> Binning:
    """Common bins: range = pooled low-high percentiles; log (all positive) or symlog (signed) when the
    models' typical magnitudes (median |value|) differ more than tenfold, so no model collapses into one bin."""
    finite = [v[np.isfinite(v)] for v in values]
    pooled = np.concatenate(finite) if finite else np.zeros(0)
    if pooled.size == 0:
        return Binning(np.linspace(0.0, 1.0, bins + 1), "linear")
    lo, hi = (float(p) for p in np.percentile(pooled, [low, high]))
    medians = [float(np.median(np.abs(v))) for v in finite if v.size]
    positive = [m for m in medians if m > 0]
    spread = max(positive) / min(positive) if positive else 1.0
    if hi <= lo:
        return Binning(np.linspace(lo - 0.5, lo + 0.5, bins + 1), "linear")
    if lo > 0 and (spread > 10 or hi / lo > 1000):
        return Binning(np.geomspace(lo, hi, bins + 1), "log")
    if spread > 10 and positive:
        b = Binning(np.zeros(0), "symlog", linthresh=min(positive) / 3)
        return Binning(b.inverse(np.linspace(b.forward(np.array(lo)), b.forward(np.array(hi)), bins + 1)), "symlog", b.linthresh)
    return Binning(np.linspace(lo, hi, bins + 1), "linear")


def bin_counts(values: np.ndarray, b: Binning) -> tuple[np.ndarray, int, int]:
    """(counts per bin, entries below the range, entries above it) of the finite values; nothing is lost."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    lo, hi = float(b.edges[0]), float(b.edges[-1])
    counts, _ = np.histogram(v[(v >= lo) & (v <= hi)], bins=b.edges)
    return counts, int(np.sum(v < lo)), int(np.sum(v > hi))


def _set_scale(ax, b: Binning) -> None:  # type: ignore[no-untyped-def]
    if b.scale == "log":
        ax.set_xscale("log")
    elif b.scale == "symlog":
        ax.set_xscale("symlog", linthresh=b.linthresh, linscale=0.9)  # 0.9: the linear part spans one decade, as in Binning


def _histograms(ax, data: StudyData, models: list[str], key: str, names: dict[str, str], looks: dict[str, Style], bins: int = 50) -> Binning:  # type: ignore[no-untyped-def]
    """Step histograms of `key` per model; an (N, C-1) array counts every entry (image × wrong class).

    Values beyond the common range are not piled into the edge bins: they are counted in overflow
    bins outside the range, drawn as hollow markers on a grey band labelled 'clipped'.
    """
    arrays = [data.analysis[m][key] for m in models]
    values = [a.astype(np.float64).ravel() for a in arrays]
    b = binning(values, bins)
    _set_scale(ax, b)
    lo, hi = float(b.edges[0]), float(b.edges[-1])
    t_lo, t_hi = b.forward(np.array(lo)), b.forward(np.array(hi))
    width = 2.5 * (t_hi - t_lo) / bins
    under_x, over_x = float(b.inverse(t_lo - width / 2)), float(b.inverse(t_hi + width / 2))
    outside = {"under": False, "over": False}
    for mid, v in zip(models, values):
        counts, n_under, n_over = bin_counts(v, b)
        st = looks[mid]
        ax.stairs(counts, b.edges, color=st.color, linestyle=st.linestyle, linewidth=1.1, label=names[mid])
        for side, n, x in (("under", n_under, under_x), ("over", n_over, over_x)):
            if n:
                outside[side] = True
                ax.plot([x], [n], linestyle="none", marker=st.marker, markersize=4, markerfacecolor="none", markeredgecolor=st.color, clip_on=False)
    for side, edge, far in (("under", lo, float(b.inverse(t_lo - width))), ("over", hi, float(b.inverse(t_hi + width)))):
        if outside[side]:
            ax.axvspan(min(edge, far), max(edge, far), color="0.88", linewidth=0, zorder=0)
            ax.text(0.0 if side == "under" else 1.0, 1.0, "◀ below range" if side == "under" else "above range ▶", transform=ax.transAxes,
                    ha="left" if side == "under" else "right", va="bottom", fontsize=MIN_FONT_PT, color="0.35")
    left = float(b.inverse(t_lo - width)) if outside["under"] else lo
    right = float(b.inverse(t_hi + width)) if outside["over"] else hi
    ax.set_xlim(left, right)
    ax.set_ylabel("test images × wrong classes" if any(a.ndim == 2 for a in arrays) else "test images")
    return b


# ---------------------------------------------------------------- legends and the paper's statements


def robust_text(data: StudyData, mid: str, predicted: bool = True) -> str:
    """'Eq. 4 66.7% · PGD-40 4.7% · AA 0.8%': the prediction next to what the attacks measured."""
    m = data.measured.get(mid, {})
    parts = [f"Eq. 4 {data.summary[mid]['predicted_robust_accuracy']:.1f}%"] if predicted else []
    if m.get("pgd") is not None:
        parts.append(f"{m['pgd_name']} {m['pgd']:.1f}%")
    if m.get("autoattack") is not None:
        n_eq4 = data.summary[mid].get("n_test")
        suffix = f" (n={m['autoattack_n']})" if m.get("autoattack_n") and n_eq4 and m["autoattack_n"] != n_eq4 else ""
        parts.append(f"AA {m['autoattack']:.1f}%{suffix}")
    return " · ".join(parts)


def _noise_pp(p1: float, p2: float, n: int) -> float:
    """Two standard errors of a difference of two accuracies (pp) on n examples each; at least one example."""
    p = (p1 + p2) / 200
    return max(200 * math.sqrt(2 * p * (1 - p) / n), 100 / n) if n else 0.0


def _metrics(data: StudyData, mid: str) -> dict[str, tuple[float, int]]:
    """Robust accuracy by method: Eq. 4 prediction, measured PGD and AutoAttack, each with its n."""
    m = data.measured.get(mid, {})
    out = {"Eq. 4": (float(data.summary[mid]["predicted_robust_accuracy"]), int(data.summary[mid].get("n_test") or 0))}
    if m.get("pgd") is not None:
        out[m["pgd_name"]] = (m["pgd"], int(m.get("pgd_n") or out["Eq. 4"][1]))
    if m.get("autoattack") is not None:
        out["AA"] = (m["autoattack"], int(m.get("autoattack_n") or out["Eq. 4"][1]))
    return out


def verdict_label_smoothing(data: StudyData, models: list[str]) -> str | None:
    """Figure 3: the paper says label smoothing alone (slightly) worsens robustness; compare LS alone with natural."""
    ls = next((m for m in models if kind(data.entries[m]) == "ls"), None)
    nat = next((m for m in models if kind(data.entries[m]) == "natural"), None)
    if ls is None or nat is None:
        return None
    a, b = _metrics(data, ls), _metrics(data, nat)
    parts, higher, lower = [], [], []
    for name in a:
        if name not in b:
            continue
        (x, n), (y, _n) = a[name], b[name]
        noise = _noise_pp(x, y, n)
        word = "higher" if x - y > noise else "lower" if y - x > noise else f"same within ±{noise:.1f} pp"
        (higher if word == "higher" else lower if word == "lower" else []).append(name)
        parts.append(f"{name} {x:.1f}% vs {y:.1f}% ({word})")
    if higher:
        end = f"disagrees with the paper: label smoothing alone is more robust than natural training by {', '.join(higher)}"
    elif lower:
        end = f"agrees with the paper by {', '.join(lower)}"
    else:
        end = "shows no difference beyond sampling noise"
    return (f"Paper: label smoothing alone slightly worsens robustness. This study ({label(data.entries[ls], data.units)} vs natural): "
            + "; ".join(parts) + f". It {end}.")


#: The paper's Figure 8 statement: regularisers with noise (and adversarial training) deactivate about 400 of 1024 neurons.
PAPER_INACTIVE, PAPER_FEATURES = 400, 1024


def inactive(data: StudyData, mid: str) -> tuple[int, int]:
    """(inactive, total) penultimate neurons: a neuron is inactive when its |activation| sums to 0 over the test set."""
    sums = np.asarray(data.analysis[mid]["feature_abs_sum"])
    return int(np.sum(sums == 0)), int(sums.size)


def verdict_inactive(data: StudyData, models: list[str]) -> str | None:
    """Figure 8: the paper says LS + noise and LSQ + noise switch off about 400 of 1024 neurons, as adversarial training does."""
    regs = [m for m in models if kind(data.entries[m]) in ("ls_noise", "lsq_noise")]
    if not regs:
        return None
    share = PAPER_INACTIVE / PAPER_FEATURES
    counts = {m: inactive(data, m) for m in models}
    listed = "; ".join(f"{label(data.entries[m], data.units)} {i}/{n}" for m, (i, n) in counts.items())
    fractions = [counts[m][0] / counts[m][1] for m in regs if counts[m][1]]
    if all(f < share / 2 for f in fractions):
        end = f"disagrees: the regularisers with noise leave at most {max(fractions):.0%} inactive, under half the paper's share"
    elif all(share / 2 <= f <= share * 2 for f in fractions):
        end = "agrees within a factor of two"
    else:
        end = "agrees for some regularisers only"
    return f"Paper: label smoothing or logit squeezing with noise deactivate about {PAPER_INACTIVE} of {PAPER_FEATURES} neurons ({share:.0%}). Inactive here: {listed}. The study {end}."


VERDICTS: dict[str, Callable[[StudyData, list[str]], str | None]] = {
    "fig3_eq4_label_smoothing": verdict_label_smoothing,
    "fig8_activations_penultimate": verdict_inactive,
}


# ---------------------------------------------------------------- plotting


def _proxy(st: Style, text: str, marker: bool = False):  # type: ignore[no-untyped-def]
    from matplotlib.lines import Line2D

    return Line2D([0], [0], color=st.color, linestyle=st.linestyle, marker=st.marker if marker else None, markersize=4, linewidth=1.1, label=text)


def _bottom(fig, pad_pt: float = 3.0) -> float:  # type: ignore[no-untyped-def]
    """Just below the lowest thing the figure draws so far, in figure coordinates (negative: below the canvas)."""
    fig.canvas.draw()  # runs the layout engine
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    return float((box.y0 - pad_pt / 72) / fig.get_figheight())


def _fit_legends(fig) -> None:  # type: ignore[no-untyped-def]
    """A legend wider than the figure (long labels) goes to one column, so the print width holds."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for legend in fig.legends:
        if legend.get_window_extent(renderer).width > fig.bbox.width and legend._ncols > 1:
            legend.set_ncols(1)


#: Margin (inches) the saved PDF keeps around the drawn content.
PAD_INCHES = 0.02


def _fit_width(fig, width: float, tries: int = 4) -> None:  # type: ignore[no-untyped-def]
    """Narrow the canvas until the drawn content (labels, legends sticking out included) plus the saved
    margin is at most `width` inches: the PDF's page is never wider than its print width."""
    for _ in range(tries):
        fig.canvas.draw()
        box = fig.get_tightbbox(fig.canvas.get_renderer())
        excess = box.width + 2 * PAD_INCHES - width
        if excess <= 0:
            return
        fig.set_figwidth(fig.get_figwidth() - excess - 0.01)


def _legend_below(fig, handles: list[Any], ncol: int = 1, title: str | None = None):  # type: ignore[no-untyped-def]
    """A figure legend under the axes, clear of them: the saved (tight) figure grows to hold it; it covers no data."""
    return fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, _bottom(fig)), ncol=ncol, title=title)


def plot_eq4(fig, data: StudyData, models: list[str], names: dict[str, str], looks: dict[str, Style]) -> None:  # type: ignore[no-untyped-def]
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, title) in zip(axes, EQ4_PANELS):
        b = _histograms(ax, data, models, key, names, looks)
        unit = f", per {_num(1, data.units)} pixel unit" if key == "grad_gap_all" and data.units != 1 else ""
        ax.set_xlabel(title + unit + b.axis_note())
        if key == "eps_l_all":
            ax.axvline(data.eps, color="0.3", linestyle=(0, (1, 1)), linewidth=1)
    shape = data.analysis[models[0]]["eps_l_all"].shape
    if data.annotated:
        title = (f"Eq. 4 over all wrong classes j ≠ y: {shape[1]} entries per test image, {shape[0]} images\n"
                 "robust accuracy: Eq. 4 predicted · measured white-box PGD · AutoAttack (AA)")
        handles = [_proxy(looks[m], f"{names[m]}: {robust_text(data, m)}") for m in models]
        handles.append(_proxy(Style("0.3", "", (0, (1, 1))), f"attack ε = {_num(data.eps, data.units)} (robust: correct, ε < ε_L of every j)"))
        fig.legend(handles=handles, loc="outside upper center", ncol=2, title=title)
        return
    handles = [_proxy(looks[m], names[m]) for m in models]
    handles.append(_proxy(Style("0.3", "", (0, (1, 1))), f"attack ε = {_num(data.eps, data.units)}"))
    fig.legend(handles=handles, loc="outside upper center", ncol=3)


def plot_single_hist(key: str, xlabel: str) -> Callable[..., None]:
    def plot(fig, data: StudyData, models: list[str], names: dict[str, str], looks: dict[str, Style]) -> None:  # type: ignore[no-untyped-def]
        ax = fig.subplots()
        b = _histograms(ax, data, models, key, names, looks)
        ax.set_xlabel(xlabel + b.axis_note())
        _legend_below(fig, [_proxy(looks[m], names[m]) for m in models])

    return plot


def _markevery(n_points: int, index: int, count: int) -> tuple[int, int]:
    """Markers every ~n/6 points, offset per curve so curves' markers do not coincide."""
    step = max(1, n_points // 6)
    return (min(n_points - 1, index * step // max(1, count)), step)


def plot_features(fig, data: StudyData, models: list[str], names: dict[str, str], looks: dict[str, Style]) -> None:  # type: ignore[no-untyped-def]
    ax = fig.subplots()
    n_total = 0
    for i, mid in enumerate(models):
        sums = np.sort(np.asarray(data.analysis[mid]["feature_abs_sum"], dtype=np.float64))[::-1]
        n_total = max(n_total, sums.size)
        off, n = inactive(data, mid)
        active = sums[sums > 0]
        st = looks[mid]
        ax.plot(np.arange(1, active.size + 1), active, color=st.color, linestyle=st.linestyle, marker=st.marker,
                markevery=_markevery(active.size, i, len(models)) if active.size else None, markersize=3.5)
        if active.size:  # where the curve ends, the inactive neurons begin (0 has no place on a log axis)
            ax.plot([active.size], [active[-1]], marker="|", markersize=8, color=st.color)
        ax.plot([], [], color=st.color, linestyle=st.linestyle, marker=st.marker, markersize=3.5,
                label=f"{names[mid]}: {off}/{n} inactive" if data.annotated else names[mid])
    if n_total:
        x = n_total - round(PAPER_INACTIVE / PAPER_FEATURES * n_total)
        ax.axvline(x, color="0.5", linestyle=(0, (1, 1)), linewidth=0.8, label=f"paper: last ~{PAPER_INACTIVE}/{PAPER_FEATURES} inactive")
    ax.set_yscale("log")
    ax.set_xlim(0, n_total * 1.02 + 1)
    ax.set_xlabel(f"neuron (of {n_total}), by activation sum")
    ax.set_ylabel("Σ |activation| over test set (log)")
    title = "a curve ends (|) where its inactive neurons\n(activation sum 0, off the log axis) begin" if data.annotated else None
    _legend_below(fig, ax.get_legend_handles_labels()[0], title=title)


def plot_logit_sums(fig, data: StudyData, models: list[str], names: dict[str, str], looks: dict[str, Style]) -> None:  # type: ignore[no-untyped-def]
    ax = fig.subplots()
    n = len(data.analysis[models[0]]["logit_abs_sum"])
    for i, mid in enumerate(models):
        sums = np.asarray(data.analysis[mid]["logit_abs_sum"], dtype=np.float64)
        st = looks[mid]
        x = np.arange(len(sums)) + (i - (len(models) - 1) / 2) * 0.08  # a small dodge: no marker hides another
        ax.plot(x, np.where(sums > 0, sums, np.nan), color=st.color, linestyle=st.linestyle, marker=st.marker, markersize=4, linewidth=0.9, label=names[mid])
    ax.set_yscale("log")
    ax.set_xlabel("logit (class)")
    ax.set_ylabel("Σ |logit| over test set (log)")
    ax.set_xticks(np.arange(n))
    _legend_below(fig, ax.get_legend_handles_labels()[0])


def plot_training(fig, data: StudyData, models: list[str], names: dict[str, str], looks: dict[str, Style]) -> None:  # type: ignore[no-untyped-def]
    axes = fig.subplots(1, 3)
    panels = (("loss", "training loss"), ("accuracy", "batch accuracy (%)"), ("logit_norm", "mean ‖z‖₂ (logit norm)"))
    for ax, (key, ylabel) in zip(axes, panels):
        for i, mid in enumerate(models):
            rows = [r for r in data.history[mid] if key in r]
            st = looks[mid]
            ax.plot([r["iteration"] for r in rows], [r[key] for r in rows], color=st.color, linestyle=st.linestyle, marker=st.marker,
                    markevery=_markevery(len(rows), i, len(models)) if rows else None, markersize=3.5, linewidth=1.0, label=names[mid])
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
    if all(r.get("loss", 0) > 0 for m in models for r in data.history[m]):
        axes[0].set_yscale("log")
    _legend_below(fig, axes[0].get_legend_handles_labels()[0], ncol=3)
    fig.get_layout_engine().set(w_pad=0.02, wspace=0.04)


PLOTTERS: dict[str, Callable[..., None]] = {
    "eq4": plot_eq4,
    "z_y": plot_single_hist("z_y", "true-class logit z_y"),
    "grad_norm": plot_single_hist("grad_norm_y", "‖∇ₓ z_y‖₁"),
    "features": plot_features,
    "logit_sums": plot_logit_sums,
    "training": plot_training,
}
#: Which width each kind of figure spans: the Eq. 4 panels and training curves the full text width, the rest a
#: column; and its plotting area's height as a share of that width (legends below the axes add height,
#: and the saved figure is cropped to its content, never wider than its width).
LAYOUT: dict[str, tuple[str, float]] = {
    "eq4": ("full", 0.78),
    "training": ("full", 0.36),
    "z_y": ("column", 0.72),
    "grad_norm": ("column", 0.72),
    "features": ("column", 0.8),
    "logit_sums": ("column", 0.72),
}


def size(what: str, widths: dict[str, float]) -> tuple[float, float]:
    """(width, height) in inches of a figure of kind `what` at the study's print widths."""
    which, ratio = LAYOUT.get(what, ("column", 0.9))
    width = float(widths[which])
    return width, width * ratio


def width_of(name: str) -> str:
    """full | column: the print width figure `name` is drawn for."""
    return LAYOUT.get(FIGURES[name][1], ("column", 0.0))[0]


def _note(fig, data: StudyData, name: str, selection: dict[str, list[str]], verdict: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """The footer: study, paper figure, roles the study lacks, and the comparison with the paper's statement."""
    import textwrap

    paper = FIGURES[name][0]
    text = f"Study {data.study}" + (f" · paper {paper}" if paper else " · not a figure of the paper")
    if selection["missing"]:
        text += " · not in this study: " + "; ".join(selection["missing"])
    lines = [text] + ([verdict] if verdict else [])
    width = int(fig.get_figwidth() * 72 / (NOTE_SIZE * 0.55))
    wrapped = "\n".join(textwrap.fill(line, width) for line in lines)
    fig.text(0.01, _bottom(fig), wrapped, fontsize=NOTE_SIZE, ha="left", va="top")


def draw(
    name: str, data: StudyData, selection: dict[str, list[str]], out_dir: str | Path, inspect: Callable[[Any], None] | None = None
) -> list[Path]:
    """Draw one figure at print size and write it as PNG and PDF (TrueType fonts, atomically); return the paths.

    `inspect`, if given, sees the finished matplotlib Figure before it is written (tests).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", rc=RC)
    what = FIGURES[name][1]
    models = selection["models"]
    with matplotlib.rc_context(RC):
        fig = plt.figure(figsize=size(what, data.widths), layout="constrained")
        verdict = None
        if models:
            PLOTTERS[what](fig, data, models, labels(models, data.entries, data.units), styles(models, data.entries))
            verdict = VERDICTS[name](data, models) if name in VERDICTS else None
        else:
            ax = fig.subplots()
            ax.axis("off")
            ax.text(0.5, 0.5, "no eligible models in this study", ha="center", va="center", fontsize=8)
        _fit_legends(fig)
        if data.annotated:
            _note(fig, data, name, selection, verdict)
        _fit_width(fig, size(what, data.widths)[0])
        if inspect is not None:
            inspect(fig)
        paths = []
        for fmt in FORMATS:
            path = Path(out_dir) / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=200, bbox_inches="tight", pad_inches=PAD_INCHES)
            paths.append(path)
        plt.close(fig)
    return paths


# ---------------------------------------------------------------- captions and the selection record


#: Unicode of the captions and its LaTeX (after latex_escape).
_TEX_SYMBOLS = {"α": r"$\alpha$", "β": r"$\beta$", "σ": r"$\sigma$", "ε": r"$\epsilon$", "·": r"$\cdot$", "≠": r"$\neq$",
                "‖": r"$\|$", "∇": r"$\nabla$", "−": "-", "₁": r"$_1$", "×": r"$\times$", "∞": r"$\infty$"}


def caption_text(name: str, data: StudyData, selection: dict[str, list[str]], shown_models: list[str]) -> str:
    """The caption of figure `name` in plain text: paper figure, study, the models chosen (parameters and
    ids), the roles the study lacks, the numbers the paper style leaves out of the image, the verdict."""
    paper, what, _roles = FIGURES[name]
    models = selection["models"]
    parts = [f"{paper or 'Training curves (not a figure of the paper)'}, study {data.study}, "
             f"L∞ attacks at ε = {_num(data.eps, data.units)}."]
    parts.append("Models shown: " + ("; ".join(shown_models) if shown_models else "none (no eligible model in this study)") + ".")
    if selection["missing"]:
        parts.append("Not in this study: " + "; ".join(selection["missing"]) + ".")
    names = labels(models, data.entries, data.units) if models else {}
    if what == "eq4" and models:
        parts.append("Robust accuracy, Eq. 4 predicted · measured white-box PGD · AutoAttack (AA): "
                     + "; ".join(f"{names[m]}: {robust_text(data, m)}" for m in models) + ".")
        shape = data.analysis[models[0]]["eps_l_all"].shape
        parts.append(f"Histograms over all wrong classes j ≠ y ({shape[1]} per test image, {shape[0]} images); "
                     "dotted line: the attack ε (robust: correct, ε < ε_L of every j).")
    if what == "features" and models:
        parts.append("Inactive penultimate neurons (activation sum 0; a curve ends where they begin): "
                     + "; ".join(f"{names[m]} {inactive(data, m)[0]}/{inactive(data, m)[1]}" for m in models) + ".")
    verdict = VERDICTS[name](data, models) if name in VERDICTS and models else None
    if verdict:
        parts.append(verdict)
    return " ".join(parts)


def caption_tex(text: str) -> str:
    """A plain caption in LaTeX: escaped, its Greek and symbols in math mode."""
    from .render import latex_escape

    out = latex_escape(text).replace("L∞", r"$L_\infty$")
    for char, tex in _TEX_SYMBOLS.items():
        out = out.replace(char, tex)
    return out.replace("ε_L", r"$\epsilon_L$").replace(r"$\epsilon$\_L", r"$\epsilon_L$")


def write_captions(name: str, data: StudyData, selection: dict[str, list[str]], shown_models: list[str], out_dir: str | Path) -> list[Path]:
    """<name>.caption.txt (plain) and <name>.caption.tex (for \\caption{...}) beside the figure."""
    text = caption_text(name, data, selection, shown_models)
    paths = []
    for ext, body in (("caption.txt", text), ("caption.tex", caption_tex(text))):
        path = Path(out_dir) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            tmp.write_text(body + "\n")
        paths.append(path)
    return paths


SELECTION_FILE = "selection.json"


def record_selection(selection: dict[str, dict[str, list[str]]], texts: dict[str, list[str]], out_dir: str | Path) -> list[str]:
    """Write <out_dir>/selection.json (per figure: the model ids chosen, with parameters, and the roles
    missing) and return one line per figure whose models differ from the previous build's record."""
    import json

    path = Path(out_dir) / SELECTION_FILE
    record = {name: {"models": sel["models"], "shown": texts.get(name, []), "missing": sel["missing"]} for name, sel in selection.items()}
    changes = []
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            before = {}
        for name, now in record.items():
            was = (before.get(name) or {}).get("models")
            if was is not None and was != now["models"]:
                changes.append(f"{name}: models changed from the previous build: {', '.join(was) or 'none'} -> {', '.join(now['models']) or 'none'}")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return changes


def run(spec: dict[str, Any], out_dir: str | Path, workers: int = 1) -> list[Path]:
    """Every figure of the study described by `spec` (study, eps, pixel_units, models[...]).

    `workers` > 1 draws the figures in that many forked processes (the workflow's figures job
    runs last, with the cores to itself); where fork is unavailable they are drawn one by one.
    """
    data = load_study(spec)
    selection = select(data.entries, data.units)
    names = list(FIGURES)
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        _FORKED.update(data=data, selection=selection, out_dir=out_dir)
        try:
            with multiprocessing.get_context("fork").Pool(min(workers, len(names))) as pool:
                drawn = pool.map(_draw_forked, names, chunksize=1)
        finally:
            _FORKED.clear()
    else:
        drawn = [draw(name, data, selection[name], out_dir) for name in names]
    texts = shown(data.entries, data.units)
    paths = []
    for name, written in zip(names, drawn):
        paths += written + write_captions(name, data, selection[name], texts[name], out_dir)
        print(f"{name}: {', '.join(selection[name]['models']) or 'no models'}" + (f" (missing: {'; '.join(selection[name]['missing'])})" if selection[name]["missing"] else ""), flush=True)
        verdict = VERDICTS[name](data, selection[name]["models"]) if name in VERDICTS and selection[name]["models"] else None
        if verdict:
            print(f"{name}: {verdict}", flush=True)
    for line in record_selection(selection, texts, out_dir):
        print(f"note: {line}", flush=True)
    return paths


#: What forked workers draw from (set by `run` just before it forks; nothing is pickled).
_FORKED: dict[str, Any] = {}


def _draw_forked(name: str) -> list[Path]:
    return draw(name, _FORKED["data"], _FORKED["selection"][name], _FORKED["out_dir"])
