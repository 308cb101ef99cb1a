"""Figures stage: the paper's Figures 1-9 (and training curves) for one study, PNG and PDF.

Which models a figure shows is decided from the grid entries alone (`select`), so the list of
figure files and their captions is known before anything runs. Each figure names roles
(natural, strong / weak adversarial training, label smoothing (LS), logit squeezing (LSQ),
noise, their combinations); a role takes the grid entry closest to the paper's parameters,
and a role the study lacks is left out and named on the figure. Every figure file is always
written (a figure with no eligible model says so), so the targets are static.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import study
from .artifacts import atomic_path, read_json, read_npz
from .cli_support import exit_status, json_object
from .errors import PipelineError


# The figure plan (roles, which model fills which, legend labels) lives in the torch-free plan module,
# so the Snakefile knows every figure file and caption without importing this one.
from .study import ADV_STRONG, ADV_WEAK, FIGURES, NATURAL, Role, assign, select, shown  # noqa: E402,F401 - re-exported
from .study import FIGURE_FORMATS as FORMATS  # noqa: E402
from .study import FIGURES_VERSION as VERSION  # noqa: E402,F401 - re-exported


def _params(entry: dict[str, Any], units: float) -> dict[str, float]:
    return study.params01(entry, units)


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


# ---------------------------------------------------------------- plotting


#: The Eq. 4 panels: (N, C-1) arrays, one entry per image and wrong class j (the paper's histograms).
EQ4_PANELS = (
    ("logit_gap_all", "logit gap  z_y − z_j"),
    ("grad_gap_all", "gradient gap  ‖∇z_y − ∇z_j‖₁"),
    ("eps_l_all", "ε_L (Eq. 4)  (z_y − z_j) / ‖∇z_y − ∇z_j‖₁"),
    ("cos_all", "cos(∇z_y, ∇z_j)"),
)
#: What the figures read from each analysis .npz.
ANALYSIS_KEYS = (*(key for key, _ in EQ4_PANELS), "grad_norm_y", "z_y", "feature_abs_sum", "logit_abs_sum")


@dataclass
class StudyData:
    """What the figures read: per model its entry, analysis arrays, summary and training history."""

    study: str
    eps: float
    units: float
    entries: dict[str, dict[str, Any]]
    analysis: dict[str, dict[str, np.ndarray]]
    summary: dict[str, dict[str, Any]]
    history: dict[str, list[dict[str, float]]]


def load_study(spec: dict[str, Any]) -> StudyData:
    entries, analysis, summary, history = {}, {}, {}, {}
    for model in spec["models"]:
        mid = model["model_id"]
        entries[mid] = model["entry"]
        analysis[mid] = read_npz(model["analysis"], required=ANALYSIS_KEYS)
        summary[mid] = read_json(model["summary"])
        metrics = read_json(model["metrics"])
        if not isinstance(metrics, dict) or not isinstance(metrics.get("history"), list):
            raise PipelineError(f"{model['metrics']}: no training 'history' list; delete it and retrain")
        history[mid] = metrics["history"]
    return StudyData(spec["study"], float(spec["eps"]), float(spec.get("pixel_units", 1)), entries, analysis, summary, history)


def _clip_range(values: list[np.ndarray], low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Common histogram range: the pooled 0.5th-99.5th percentiles of the finite values."""
    pooled = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    if pooled.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(pooled, [low, high])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)


def _histograms(ax, data: StudyData, models: list[str], key: str, names: dict[str, str], colors: dict[str, Any], bins: int = 50) -> None:  # type: ignore[no-untyped-def]
    """Step histograms of `key` per model; an (N, C-1) array counts every entry (image × wrong class)."""
    arrays = [data.analysis[m][key] for m in models]
    values = [a.astype(np.float64).ravel() for a in arrays]
    lo, hi = _clip_range(values)
    edges = np.linspace(lo, hi, bins + 1)
    for mid, v in zip(models, values):
        ax.hist(np.clip(v[np.isfinite(v)], lo, hi), bins=edges, histtype="step", linewidth=1.6, color=colors[mid], label=names[mid])
    ax.set_ylabel("test images × wrong classes" if any(a.ndim == 2 for a in arrays) else "test images")


def _note(fig, data: StudyData, name: str, selection: dict[str, list[str]]) -> None:  # type: ignore[no-untyped-def]
    paper = FIGURES[name][0]
    text = f"study {data.study}" + (f" · paper {paper}" if paper else " · not a figure of the paper")
    if selection["missing"]:
        text += " · not in this study: " + "; ".join(selection["missing"])
    fig.text(0.01, 0.005, text, fontsize=7, ha="left", va="bottom", wrap=True)


def plot_eq4(fig, data: StudyData, models: list[str], names: dict[str, str], colors: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, title) in zip(axes, EQ4_PANELS):
        _histograms(ax, data, models, key, names, colors)
        ax.set_xlabel(title + (f"  (per {_num(1, data.units)} pixel unit)" if key == "grad_gap_all" and data.units != 1 else ""))
        if key == "eps_l_all":
            ax.axvline(data.eps, color="black", linestyle="--", linewidth=1, label=f"ε = {_num(data.eps, data.units)}")
    shape = data.analysis[models[0]]["eps_l_all"].shape
    fig.suptitle(
        f"Eq. 4 over all wrong classes j ≠ y: {shape[1]} entries per test image ({shape[0]} images, {shape[0] * shape[1]} entries per model)",
        fontsize=9, y=0.995,
    )
    handles = [
        _line(colors[m], f"{names[m]}  (Eq. 4 predicted robust {data.summary[m]['predicted_robust_accuracy']:.1f}%)") for m in models
    ] + [_line("black", f"attack ε = {_num(data.eps, data.units)}  (robust: correct and ε < ε_L of every wrong class)", "--")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.975), ncol=2, fontsize=8, frameon=False)
    fig.subplots_adjust(top=0.86, bottom=0.1, hspace=0.35, wspace=0.25)


def _line(color: Any, text: str, style: str = "-"):  # type: ignore[no-untyped-def]
    from matplotlib.lines import Line2D

    return Line2D([0], [0], color=color, linestyle=style, linewidth=1.6, label=text)


def plot_single_hist(key: str, xlabel: str) -> Callable[..., None]:
    def plot(fig, data: StudyData, models: list[str], names: dict[str, str], colors: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
        ax = fig.subplots()
        _histograms(ax, data, models, key, names, colors)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8, frameon=False)
        fig.subplots_adjust(bottom=0.15)

    return plot


def plot_features(fig, data: StudyData, models: list[str], names: dict[str, str], colors: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    ax = fig.subplots()
    for mid in models:
        sums = np.sort(data.analysis[mid]["feature_abs_sum"])[::-1]
        inactive = int(np.sum(sums == 0))
        ax.plot(np.arange(1, len(sums) + 1), sums, color=colors[mid], linewidth=1.6, label=f"{names[mid]}  ({inactive} inactive)")
    ax.set_xlabel("penultimate-layer neuron (sorted by activation sum)")
    ax.set_ylabel("Σ |activation| over the test set")
    ax.legend(fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.15)


def plot_logit_sums(fig, data: StudyData, models: list[str], names: dict[str, str], colors: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    ax = fig.subplots()
    for mid in models:
        sums = data.analysis[mid]["logit_abs_sum"]
        ax.plot(np.arange(len(sums)), sums, marker="o", color=colors[mid], linewidth=1.2, label=names[mid])
    ax.set_xlabel("logit (class)")
    ax.set_ylabel("Σ |logit| over the test set")
    ax.set_xticks(np.arange(len(data.analysis[models[0]]["logit_abs_sum"])))
    ax.legend(fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.15)


def plot_training(fig, data: StudyData, models: list[str], names: dict[str, str], colors: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    axes = fig.subplots(1, 3)
    panels = (("loss", "training loss"), ("accuracy", "training batch accuracy (%)"), ("logit_norm", "mean ‖z‖₂ (logit norm)"))
    for ax, (key, ylabel) in zip(axes, panels):
        for mid in models:
            rows = [r for r in data.history[mid] if key in r]
            ax.plot([r["iteration"] for r in rows], [r[key] for r in rows], color=colors[mid], linewidth=1.2, label=names[mid])
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
    if all(r.get("loss", 0) > 0 for m in models for r in data.history[m]):
        axes[0].set_yscale("log")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(0.8, 0.5), fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.05, right=0.79, wspace=0.3, bottom=0.15)


PLOTTERS: dict[str, Callable[..., None]] = {
    "eq4": plot_eq4,
    "z_y": plot_single_hist("z_y", "true-class logit z_y"),
    "grad_norm": plot_single_hist("grad_norm_y", "‖∇ₓ z_y‖₁"),
    "features": plot_features,
    "logit_sums": plot_logit_sums,
    "training": plot_training,
}
SIZES = {"eq4": (10, 7.5), "training": (15, 4.8)}


def draw(name: str, data: StudyData, selection: dict[str, list[str]], out_dir: str | Path) -> list[Path]:
    """Draw one figure and write it as PNG and PDF (atomically); return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    what = FIGURES[name][1]
    models = selection["models"]
    fig = plt.figure(figsize=SIZES.get(what, (7, 4.5)))
    if models:
        palette = sns.color_palette("tab10" if len(models) <= 10 else "husl", len(models))
        colors = dict(zip(models, palette))
        PLOTTERS[what](fig, data, models, labels(models, data.entries, data.units), colors)
    else:
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no eligible models in this study", ha="center", va="center", fontsize=12)
    _note(fig, data, name, selection)
    paths = []
    for fmt in FORMATS:
        path = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
        paths.append(path)
    plt.close(fig)
    return paths


def run(spec: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Every figure of the study described by `spec` (study, eps, pixel_units, models[...])."""
    data = load_study(spec)
    selection = select(data.entries, data.units)
    paths = []
    for name in FIGURES:
        paths += draw(name, data, selection[name], out_dir)
        print(f"{name}: {', '.join(selection[name]['models']) or 'no models'}" + (f" (missing: {'; '.join(selection[name]['missing'])})" if selection[name]["missing"] else ""), flush=True)
    return paths




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smoothsqueeze.figures", description="The paper's figures for one study.")
    parser.add_argument("--spec", type=json_object("--spec", ("study", "eps", "models")), required=True, help="study, eps, pixel_units, models [{model_id, entry, analysis, summary, metrics}] (JSON)")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    def action() -> None:
        run(args.spec, args.out_dir)
    return exit_status(action)


if __name__ == "__main__":
    sys.exit(main())
