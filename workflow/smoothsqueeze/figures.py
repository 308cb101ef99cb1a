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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .artifacts import atomic_path, read_json, read_npz
from .errors import PipelineError


@dataclass(frozen=True)
class Role:
    """A kind of model a figure wants; `target` = the paper's parameters ([0, 1] pixel units)."""

    kind: str
    target: dict[str, float] = field(default_factory=dict)
    pick: str = "closest"  # closest | most_steps | fewest_steps

    def describe(self) -> str:
        names = {"natural": "natural", "adv": "adversarial", "noise": "noise", "ls": "LS", "ls_noise": "LS + noise",
                 "lsq": "LSQ", "lsq_noise": "LSQ + noise"}
        symbols = {"alpha": "α", "beta": "β", "sigma": "σ"}
        text = names[self.kind]
        if self.pick != "closest":
            text = ("strong " if self.pick == "most_steps" else "weak ") + text
        if self.target:
            text += " (paper, MNIST: " + ", ".join(f"{symbols[k]}={v:g}" for k, v in self.target.items()) + ")"
        return text


NATURAL = Role("natural")
ADV_STRONG = Role("adv", pick="most_steps")
ADV_WEAK = Role("adv", pick="fewest_steps")
#: name -> (paper figure, what it plots, roles). The paper's targets are its MNIST settings.
FIGURES: dict[str, tuple[str, str, tuple[Role, ...]]] = {
    "fig1_eq4_adversarial": ("Figure 1 (MNIST) / Figure 5 (CIFAR-10)", "eq4", (NATURAL, ADV_STRONG)),
    "fig2_logits_adversarial": ("Figure 2", "z_y", (NATURAL, ADV_WEAK, ADV_STRONG)),
    "fig3_eq4_label_smoothing": (
        "Figure 3", "eq4",
        (Role("ls", {"alpha": 0.75}), Role("noise", {"sigma": 0.5}), Role("ls_noise", {"alpha": 0.75, "sigma": 0.5}), NATURAL),
    ),
    "fig4_eq4_smoothing_squeezing": (
        "Figure 4", "eq4",
        (Role("ls_noise", {"alpha": 0.75, "sigma": 0.5}), Role("ls_noise", {"alpha": 0.2, "sigma": 0.5}),
         Role("lsq_noise", {"beta": 2.0, "sigma": 0.5}), Role("lsq_noise", {"beta": 0.5, "sigma": 0.5}), NATURAL),
    ),
    "fig6_gradient_norm": (
        "Figure 6", "grad_norm",
        (Role("ls_noise", {"alpha": 0.75, "sigma": 0.5}), Role("ls_noise", {"alpha": 0.2, "sigma": 0.5}),
         Role("lsq_noise", {"beta": 2.0, "sigma": 0.5}), Role("lsq_noise", {"beta": 0.5, "sigma": 0.5}), NATURAL),
    ),
    "fig7_eq4_logit_squeezing": (
        "Figure 7", "eq4",
        (Role("lsq_noise", {"beta": 0.5, "sigma": 0.5}), Role("lsq", {"beta": 0.5}), Role("noise", {"sigma": 0.5}), NATURAL),
    ),
    "fig8_activations_penultimate": (
        "Figure 8", "features",
        (NATURAL, ADV_STRONG, Role("noise", {"sigma": 0.5}), Role("ls_noise", {"alpha": 0.2, "sigma": 0.5}),
         Role("lsq_noise", {"beta": 0.5, "sigma": 0.5})),
    ),
    "fig9_activations_logits": (
        "Figure 9", "logit_sums",
        (NATURAL, ADV_STRONG, Role("noise", {"sigma": 0.5}), Role("ls_noise", {"alpha": 0.2, "sigma": 0.5}),
         Role("lsq_noise", {"beta": 0.5, "sigma": 0.5})),
    ),
    "training_curves": ("", "training", ()),
}
FORMATS = ("png", "pdf")
#: Bump when the figures change (the rule passes it, so Snakemake redraws them).
VERSION = "2"  # 2: Eq. 4 histograms over every wrong class


# ---------------------------------------------------------------- selection (no plotting libraries)


def _params(entry: dict[str, Any], units: float) -> dict[str, float]:
    return {"alpha": entry.get("alpha") or 0, "beta": entry.get("beta") or 0, "sigma": (entry.get("sigma") or 0) / units}


def kind(entry: dict[str, Any]) -> str:
    """natural | adv | noise | ls | ls_noise | lsq | lsq_noise | other (combinations the paper has no role for)."""
    a, b, s, adv = bool(entry.get("alpha")), bool(entry.get("beta")), bool(entry.get("sigma")), bool(entry.get("adversarial"))
    table = {
        (False, False, False, False): "natural", (False, False, False, True): "adv", (False, False, True, False): "noise",
        (True, False, False, False): "ls", (True, False, True, False): "ls_noise",
        (False, True, False, False): "lsq", (False, True, True, False): "lsq_noise",
    }
    return table.get((a, b, s, adv), "other")


def _rank(role: Role, index: int, entry: dict[str, Any], units: float) -> tuple[float, ...]:
    adv = entry.get("adversarial") or {}
    if role.pick == "most_steps":
        return (-adv.get("steps", 0), -adv.get("eps", 0), -entry["k"], index)
    if role.pick == "fewest_steps":
        return (adv.get("steps", 0), -adv.get("eps", 0), -entry["k"], index)
    params = _params(entry, units)
    distance = sum(abs(math.log(params[key] / value)) for key, value in role.target.items())
    return (distance, -entry["k"], index)


def assign(entries: dict[str, dict[str, Any]], units: float = 1.0) -> dict[str, list[tuple[Role, str | None]]]:
    """For each figure: its roles in order, each with the model id that fills it (None: the study lacks one).

    `entries` maps model id -> grid entry (study units), in grid order. A model fills at most
    one role of a figure. Roles with no target (training curves) get every model.
    """
    out: dict[str, list[tuple[Role, str | None]]] = {}
    for name, (_paper, _what, roles) in FIGURES.items():
        if not roles:
            out[name] = [(Role("other"), mid) for mid in entries]
            continue
        # Best (role, model) pairs first, so a model goes to the role it matches most closely.
        pairs = sorted(
            (_rank(role, i, entry, units), r, mid)
            for r, role in enumerate(roles)
            for i, (mid, entry) in enumerate(entries.items())
            if kind(entry) == role.kind
        )
        filled: dict[int, str] = {}
        for _rank_key, r, mid in pairs:
            if r not in filled and mid not in filled.values():
                filled[r] = mid
        out[name] = [(role, filled.get(r)) for r, role in enumerate(roles)]
    return out


def select(entries: dict[str, dict[str, Any]], units: float = 1.0) -> dict[str, dict[str, list[str]]]:
    """For each figure: the model ids it shows (role order) and the roles the study lacks.

    `entries` maps model id -> grid entry (study units), in grid order. A model fills at most
    one role of a figure; a role with no model left is 'missing'.
    """
    return {
        name: {
            "models": [mid for _role, mid in pairs if mid is not None],
            "missing": [role.describe() for role, mid in pairs if mid is None],
        }
        for name, pairs in assign(entries, units).items()
    }


def shown(entries: dict[str, dict[str, Any]], units: float = 1.0) -> dict[str, list[str]]:
    """For each figure, per model shown: its parameters and id, and the role's target where the model differs from it.

    E.g. 'LSQ β=2 [sq2_k400000; role target β=0.5]': what a caption says the figure shows.
    """
    out: dict[str, list[str]] = {}
    symbols = {"alpha": "α", "beta": "β", "sigma": "σ"}
    for name, pairs in assign(entries, units).items():
        texts = []
        for role, mid in pairs:
            if mid is None:
                continue
            text = f"{label(entries[mid], units)} [{mid}"
            params = _params(entries[mid], units)
            if role.target and any(not math.isclose(params[k], v) for k, v in role.target.items()):
                text += "; role target " + ", ".join(
                    f"{symbols[k]}={_num(v * units, units) if k == 'sigma' else format(v, 'g')}" for k, v in role.target.items()
                )
            texts.append(text + "]")
        out[name] = texts
    return out


def _num(value: float, units: float) -> str:
    return f"{value:g}" if units == 1 else f"{value:g}/{units:g}"


def label(entry: dict[str, Any], units: float = 1.0, with_k: bool = False) -> str:
    """Legend text naming a model by its parameters, e.g. 'LS α=0.95 + noise σ=0.3'."""
    parts = []
    adv = entry.get("adversarial")
    if adv:
        parts.append(f"PGD-{adv['steps']} adv. ε={_num(adv['eps'], units)}, step {_num(adv['step_size'], units)}")
    if entry.get("alpha"):
        parts.append(f"LS α={entry['alpha']:g}")
    if entry.get("beta"):
        parts.append(f"LSQ β={entry['beta']:g}")
    if entry.get("sigma"):
        parts.append(f"noise σ={_num(entry['sigma'], units)}")
    text = " + ".join(parts) or "natural"
    return f"{text}, k={entry['k']}" if with_k else text


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
