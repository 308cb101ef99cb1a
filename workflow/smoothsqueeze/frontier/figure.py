"""The frontier as a figure: reports/<study>/frontier.pdf (print, 5.5 in wide, TrueType fonts), .png (the
HTML report) and frontier_figure.tex (a LaTeX figure float with the caption and its numbers: the figure
itself carries no title and no numbers beyond its axes).

x: training cost relative to the natural model (forward-backward passes, log scale); y: accuracy under
the audit's per-image strongest attack, error bars its 95% Wilson interval (audited images pooled over
seeds). Colours and markers: the model kind's, as in every figure of the study (figures.look); the
adversarial methods differ by marker. Pareto points are joined by a step line (the best accuracy
reachable at each cost); collapsed or overfitted models are drawn hollow and never joined.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..artifacts import atomic_path
from .pareto import step_line
from .points import Point
from .table import tex_text

#: Print width (inches) and the smallest text size (pt) at that width.
WIDTH, HEIGHT = 5.5, 3.3
MIN_PT = 7
RC: dict[str, Any] = {
    "pdf.fonttype": 42, "ps.fonttype": 42, "font.family": "DejaVu Sans", "mathtext.fontset": "dejavusans",
    "font.size": 8, "axes.labelsize": 8, "xtick.labelsize": MIN_PT, "ytick.labelsize": MIN_PT, "legend.fontsize": MIN_PT,
    "axes.linewidth": 0.6, "grid.linewidth": 0.4, "lines.linewidth": 1.0, "legend.frameon": False,
}
#: Adversarial methods: marker (the colour is the adversarial kind's).
METHOD_MARKERS = {"pgd": "s", "fgsm_rs": "<", "nfgsm": ">"}
METHOD_NAMES = {"pgd": "PGD-k adv. training", "fgsm_rs": "FGSM-RS adv. training", "nfgsm": "N-FGSM adv. training"}
#: At most this many points are labelled one by one (the Pareto points and adversarial training first).
MAX_LABELS = 14


def _style(p: Point) -> tuple[str, str, str]:
    """(colour, marker, legend name) of a point."""
    from ..figures import look
    from ..study import KIND_NAMES

    base = look({"k": p.k, **_entry_of(p)})
    if p.method:
        return base.color, METHOD_MARKERS.get(p.method, base.marker), METHOD_NAMES.get(p.method, "adv. training")
    return base.color, base.marker, KIND_NAMES.get(p.kind, p.kind)


def _entry_of(p: Point) -> dict[str, Any]:
    """A stand-in grid entry of the point's kind (figures.look colours by kind only)."""
    parts = {"ls": {"alpha": 1}, "lsq": {"beta": 1}, "noise": {"sigma": 1}}
    entry: dict[str, Any] = {}
    for part in p.kind.split("_"):
        entry |= parts.get(part, {})
    if p.kind.startswith("adv"):
        entry["adversarial"] = {"method": p.method or "pgd", "eps": 1, "steps": 1, "step_size": 1}
    return entry


def draw(points: Sequence[Point]):  # -> matplotlib.figure.Figure
    """The frontier figure (not saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    shown = [p for p in points if math.isfinite(p.passes_ratio) and math.isfinite(p.strongest.mean)]
    with matplotlib.rc_context(RC):
        fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT), layout="constrained")
        from matplotlib.lines import Line2D

        kinds: dict[str, Line2D] = {}  # legend: one filled marker per kind (a hollow first point would mislead)
        for p in shown:
            color, marker, name = _style(p)
            lo, hi = p.strongest.lo, p.strongest.hi
            yerr = [[max(p.strongest.mean - lo, 0)], [max(hi - p.strongest.mean, 0)]] if math.isfinite(lo) and math.isfinite(hi) else None
            kinds.setdefault(name, Line2D([], [], linestyle="none", marker=marker, color=color, markersize=5, label=name))
            ax.errorbar([p.passes_ratio], [p.strongest.mean], yerr=yerr, fmt=marker, color=color, ecolor=color, elinewidth=0.6, capsize=1.5,
                        markersize=5, markerfacecolor=color if p.eligible else "none", markeredgewidth=0.8, zorder=3)
        handles = list(kinds.values())
        frontier = [(p.passes_ratio, p.strongest.mean) for p in shown if p.pareto]
        if frontier:
            xs, ys = step_line(frontier)
            handles += ax.plot(xs, ys, color="0.25", linewidth=0.9, zorder=2, label="Pareto frontier")
        if any(not p.eligible for p in shown):
            handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="0.4", markersize=5,
                                  label="collapsed or overfitted (excluded)"))
        for p in _labelled(shown):
            ax.annotate(p.short, (p.passes_ratio, p.strongest.mean), textcoords="offset points", xytext=(4, 3), fontsize=MIN_PT, color="0.15")
        ax.set_xscale("log")
        ratios = [p.passes_ratio for p in shown] or [1.0]
        ax.set_xlim(min(ratios) / 1.5, max(ratios) * 1.8)
        ax.set_ylim(bottom=min(0.0, *(p.strongest.lo for p in shown if math.isfinite(p.strongest.lo))), top=100)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}×"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda _x, _pos: ""))
        ax.set_xlabel("training cost relative to natural training (passes, log scale)")
        ax.set_ylabel("accuracy under the strongest attack (%)")
        ax.grid(True, which="major", color="0.88")
        fig.legend(handles=handles, loc="outside lower center", ncol=3, handletextpad=0.4, columnspacing=1.2)
    return fig


def _labelled(points: Sequence[Point]) -> list[Point]:
    """The points named on the figure: the Pareto points and the adversarially trained ones, at most MAX_LABELS
    (the rest are told apart by their kind's colour and marker)."""
    return sorted((p for p in points if p.pareto or p.method), key=lambda p: not p.pareto)[:MAX_LABELS]


def caption(points: Sequence[Point], study: str, natural: str) -> str:
    """The figure's caption (LaTeX): what is drawn, and the numbers behind it."""
    e = tex_text
    frontier = sorted((p for p in points if p.pareto), key=lambda p: p.passes_ratio)
    on = "; ".join(f"{e(p.short)} ({p.passes_ratio:.3g}$\\times$, {p.strongest.mean:.1f}\\%)" for p in frontier) or "none"
    marked = "; ".join(f"{e(p.short)} ({e(p.status)})" for p in points if p.status != "ok") or "none"
    images = ", ".join(sorted({str(p.strongest.n) for p in points}))
    seeds = ", ".join(sorted({str(p.seeds) for p in points}))
    return (f"Robustness per training cost, study {e(study)}. Each point is one defense (mean over {seeds} seed(s)): its training "
            f"cost in forward-backward passes relative to the natural model {e(natural)} (log scale) and its accuracy under the "
            f"audit's per-image strongest attack on {images} audited images per seed; error bars are 95\\% Wilson intervals of "
            f"the images pooled over seeds. The step line joins the Pareto frontier (no other trained model costs at most as "
            f"much and is at least as robust): {on}. Hollow markers (never on the frontier): {marked}.")


def write(points: Sequence[Point], study: str, natural: str, pdf: str | Path | None, png: str | Path | None, tex: str | Path | None) -> None:
    """The figure files that are asked for."""
    import matplotlib.pyplot as plt

    fig = draw(points)
    for path, fmt in ((pdf, "pdf"), (png, "png")):
        if path:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=200, bbox_inches="tight", pad_inches=0.03)
    plt.close(fig)
    if tex:
        name = Path(pdf).name if pdf else "frontier.pdf"
        float_text = "\n".join([
            "% Generated by smoothsqueeze; do not edit by hand.",
            r"\begin{figure}[htbp]",
            r"\centering",
            rf"\includegraphics[width=\linewidth]{{{name}}}",
            rf"\caption{{{caption(points, study, natural)}}}",
            rf"\label{{fig:{study}-frontier}}",
            r"\end{figure}",
        ]) + "\n"
        with atomic_path(tex) as tmp:
            tmp.write_text(float_text)
