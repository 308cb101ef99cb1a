"""Figures stage: which models each figure shows, legend labels, and a real Snakemake run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_snakemake
from smoothsqueeze import figures
from smoothsqueeze.analysis import eq4 as analysis
from smoothsqueeze.models import build_model

ADV10 = {"k": 2000, "adversarial": {"steps": 10, "step_size": 0.05, "eps": 0.2}}
ADV2 = {"k": 2000, "adversarial": {"steps": 2, "step_size": 0.1, "eps": 0.2}}
DIGITS = {
    "natural_k3000": {"k": 3000},
    "noise0.3_k3000": {"sigma": 0.3, "k": 3000},
    "ls0.95_k3000": {"alpha": 0.95, "k": 3000},
    "ls0.95_noise0.3_k3000": {"alpha": 0.95, "sigma": 0.3, "k": 3000},
    "sq0.5_k3000": {"beta": 0.5, "k": 3000},
    "sq0.5_noise0.3_k3000": {"beta": 0.5, "sigma": 0.3, "k": 3000},
    "pgd10-eps0.2-step0.05_k2000": ADV10,
    "pgd2-eps0.2-step0.1_k2000": ADV2,
}


def test_selection_by_grid_entry() -> None:
    chosen = figures.select(DIGITS)
    assert chosen["fig1_eq4_adversarial"] == {"models": ["natural_k3000", "pgd10-eps0.2-step0.05_k2000"], "missing": []}
    assert chosen["fig2_logits_adversarial"]["models"] == ["natural_k3000", "pgd2-eps0.2-step0.1_k2000", "pgd10-eps0.2-step0.05_k2000"]
    assert chosen["fig3_eq4_label_smoothing"]["models"] == ["ls0.95_k3000", "noise0.3_k3000", "ls0.95_noise0.3_k3000", "natural_k3000"]
    # One LSQ + noise model: it takes the role it matches (paper beta 0.5), the beta 2 role is missing.
    fig4 = chosen["fig4_eq4_smoothing_squeezing"]
    assert fig4["models"] == ["ls0.95_noise0.3_k3000", "sq0.5_noise0.3_k3000", "natural_k3000"]
    assert any("β=2" in m for m in fig4["missing"]) and any("α=0.2" in m for m in fig4["missing"])
    assert chosen["training_curves"]["models"] == list(DIGITS)


def test_selection_prefers_the_papers_parameters_and_reports_absent_kinds() -> None:
    entries = {
        "ls0.2_noise0.5_k10": {"alpha": 0.2, "sigma": 0.5, "k": 10},
        "ls0.75_noise0.3_k10": {"alpha": 0.75, "sigma": 0.3, "k": 10},
        "ls0.75_noise0.5_k10": {"alpha": 0.75, "sigma": 0.5, "k": 10},
        "ls0.75_noise0.5_k20": {"alpha": 0.75, "sigma": 0.5, "k": 20},
        "adv_k5": ADV2 | {"k": 5},
    }
    chosen = figures.select(entries)
    assert chosen["fig4_eq4_smoothing_squeezing"]["models"] == ["ls0.75_noise0.5_k20", "ls0.2_noise0.5_k10"]
    assert chosen["fig2_logits_adversarial"]["models"] == ["adv_k5"]
    assert len(chosen["fig2_logits_adversarial"]["missing"]) == 2  # natural and a weaker adversary
    assert chosen["fig7_eq4_logit_squeezing"]["models"] == []


def test_labels_name_models_by_parameters() -> None:
    assert figures.label({"alpha": 0.95, "sigma": 0.3, "k": 3000}) == "LS α=0.95 + noise σ=0.3"
    assert figures.label({"beta": 0.5, "k": 3000}) == "LSQ β=0.5"
    assert figures.label({"k": 1}) == "natural"
    assert figures.label({"sigma": 30, "k": 1}, units=255) == "noise σ=30/255"
    assert figures.label(ADV10) == "PGD-10 adv. ε=0.2, step 0.05"
    both = figures.labels(["a", "b", "c"], {"a": {"alpha": 0.2, "k": 10}, "b": {"alpha": 0.2, "k": 20}, "c": {"k": 5}}, 1)
    assert both == {"a": "LS α=0.2, k=10", "b": "LS α=0.2, k=20", "c": "natural"}


def test_a_figure_without_eligible_models_is_still_written(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("madry_cnn", 1, 8, 10).eval()
    arrays = analysis.analyze_model(model, torch.rand(6, 1, 8, 8), torch.arange(6))
    entries = {"ls0.9_k5": {"alpha": 0.9, "k": 5}}
    data = figures.StudyData("s", 0.2, 1.0, entries, {"ls0.9_k5": arrays}, {"ls0.9_k5": analysis.summarize(arrays, 0.2)}, {"ls0.9_k5": []})
    selection = figures.select(entries)["fig1_eq4_adversarial"]
    assert selection["models"] == []
    paths = figures.draw("fig1_eq4_adversarial", data, selection, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)


def test_shown_names_each_models_parameters_and_the_target_it_misses() -> None:
    """What the captions print: the models actually shown, e.g. a beta-2 LSQ model standing in for a beta-0.5 role."""
    entries = {
        "natural_k10": {"k": 10},
        "noise0.5_k10": {"sigma": 0.5, "k": 10},
        "sq0.5_noise0.5_k10": {"beta": 0.5, "sigma": 0.5, "k": 10},
        "sq2_k10": {"beta": 2, "k": 10},
    }
    fig7 = figures.shown(entries)["fig7_eq4_logit_squeezing"]
    assert fig7 == [
        "LSQ β=0.5 + noise σ=0.5 [sq0.5_noise0.5_k10]",
        "LSQ β=2 [sq2_k10; role target β=0.5]",
        "noise σ=0.5 [noise0.5_k10]",
        "natural [natural_k10]",
    ]
    assert figures.select(entries)["fig7_eq4_logit_squeezing"]["models"] == ["sq0.5_noise0.5_k10", "sq2_k10", "noise0.5_k10", "natural_k10"]
    cifar = figures.shown({"noise30_k1": {"sigma": 30, "k": 1}}, units=255)["fig3_eq4_label_smoothing"]
    assert cifar == ["noise σ=30/255 [noise30_k1; role target σ=127.5/255]"]


def _study_of_two(n: int = 6) -> figures.StudyData:
    torch.manual_seed(0)
    entries = {"natural_k5": {"k": 5}, "pgd2-eps0.2-step0.1_k5": {"k": 5, "adversarial": {"steps": 2, "step_size": 0.1, "eps": 0.2}}}
    arrays = {mid: analysis.analyze_model(build_model("madry_cnn", 1, 8, 10).eval(), torch.rand(n, 1, 8, 8), torch.arange(n) % 10) for mid in entries}
    summaries = {mid: analysis.summarize(a, 0.2) for mid, a in arrays.items()}
    return figures.StudyData("s", 0.2, 1.0, entries, arrays, summaries, {mid: [] for mid in entries})


def _axes():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    return fig, fig.subplots()


def _drawn_counts(ax) -> list[float]:  # type: ignore[no-untyped-def]
    """Entries an Axes shows per model: the step histogram's counts plus its overflow markers (y = count)."""
    from matplotlib.patches import StepPatch

    steps = [float(p.get_data().values.sum()) for p in ax.patches if isinstance(p, StepPatch)]
    overflow = [float(line.get_ydata()[0]) for line in ax.lines if not line.get_clip_on()]
    return steps + [sum(overflow)]


def test_eq4_histograms_count_every_wrong_class() -> None:
    import matplotlib.pyplot as plt

    data = _study_of_two(n=6)
    models = list(data.entries)
    looks = figures.styles(models, data.entries)
    for key, _title in figures.EQ4_PANELS:
        assert data.analysis[models[0]][key].shape == (6, 9)
        fig, ax = _axes()
        figures._histograms(ax, data, models, key, {m: m for m in models}, looks)
        *steps, overflow = _drawn_counts(ax)
        assert len(steps) == 2 and sum(steps) + overflow == 2 * 6 * 9, key  # N * (C-1) entries per model, none lost
        assert ax.get_ylabel() == "test images × wrong classes"
        plt.close(fig)
    fig, ax = _axes()
    figures._histograms(ax, data, models, "z_y", {m: m for m in models}, looks)
    *steps, overflow = _drawn_counts(ax)
    assert sum(steps) + overflow == 2 * 6 and ax.get_ylabel() == "test images"
    plt.close(fig)


def test_small_and_large_models_get_a_log_axis_and_no_model_collapses_into_one_bin() -> None:
    """Label smoothing's logit gaps are ~100x smaller than natural training's: shared linear bins would put them all at 0."""
    rng = np.random.default_rng(0)
    small, large = rng.uniform(0.05, 0.5, 900), rng.uniform(5, 50, 900)
    b = figures.binning([small, large])
    assert b.scale == "log"
    for values in (small, large):
        counts, _under, _over = figures.bin_counts(values, b)
        assert np.count_nonzero(counts) >= 10  # spread over many bins, not piled at one end
    signed = figures.binning([np.concatenate([-small, small]), np.concatenate([-large, large])])
    assert signed.scale == "symlog" and signed.edges[0] < 0 < signed.edges[-1]
    assert np.allclose(signed.inverse(signed.forward(signed.edges)), signed.edges)
    alike = figures.binning([rng.normal(0, 1, 500), rng.normal(1, 1, 500)])
    assert alike.scale == "linear"


def test_values_beyond_the_range_are_overflow_not_edge_bins() -> None:
    values = np.concatenate([np.linspace(0, 1, 1000), [50.0, 60.0, -40.0]])
    b = figures.binning([values])
    counts, under, over = figures.bin_counts(values, b)
    assert under >= 1 and over >= 2 and counts.sum() + under + over == values.size
    # the clipped entries are not in the edge bins: those hold no more than their neighbours' share
    assert counts[-1] <= 2 * np.median(counts) and counts[0] <= 2 * np.median(counts)
    fig, ax = _axes()
    data = figures.StudyData("s", 0.2, 1.0, {"m": {"k": 1}}, {"m": {"z_y": values}}, {"m": {}}, {"m": []})
    figures._histograms(ax, data, ["m"], "z_y", {"m": "m"}, figures.styles(["m"], data.entries))
    labels = {t.get_text() for t in ax.texts}
    assert "above range ▶" in labels and "◀ below range" in labels


def test_one_colour_and_marker_per_model_kind_in_every_figure() -> None:
    seen: dict[str, set[tuple[str, str]]] = {}
    for name, chosen in figures.select(DIGITS).items():
        looks = figures.styles(chosen["models"], DIGITS)
        for mid, style in looks.items():
            seen.setdefault(figures.kind(DIGITS[mid]), set()).add((style.color, style.marker))
        # two models of one kind in one figure differ by line style
        by_kind: dict[str, list[str]] = {}
        for mid in chosen["models"]:
            by_kind.setdefault(figures.kind(DIGITS[mid]), []).append(looks[mid].linestyle)
        assert all(len(set(styles)) == len(styles) for styles in by_kind.values()), name
    assert len(seen) == 7 and all(len(pairs) == 1 for pairs in seen.values()), seen
    colors = [next(iter(p))[0] for p in seen.values()]
    markers = [next(iter(p))[1] for p in seen.values()]
    assert len(set(colors)) == len(colors) and len(set(markers)) == len(markers)
    assert figures.styles(["pgd10-eps0.2-step0.05_k2000"], DIGITS)["pgd10-eps0.2-step0.05_k2000"].linestyle == "-"


ADV_RECORD = {
    "model_id": "ls",
    "n_test": 300,
    "attacks": {"whitebox": {
        "fgsm_cw": {"method": "fgsm", "steps": 1}, "pgd40_xent": {"method": "pgd", "steps": 40}, "pgd40_cw": {"method": "pgd", "steps": 40},
    }},
    "accuracy": {"whitebox_fgsm_cw": 1.0, "whitebox_pgd40_xent": 5.0, "whitebox_pgd40_cw": 4.7},
}


def test_measured_accuracies_come_from_the_records_and_degrade_to_pgd_only() -> None:
    both = figures.measured(ADV_RECORD, {"n": 150, "accuracy": {"autoattack": 0.8}})
    assert both == {"pgd": 4.7, "pgd_name": "PGD-40", "pgd_n": 300, "autoattack": 0.8, "autoattack_n": 150}
    assert figures.measured(ADV_RECORD, None)["autoattack"] is None
    assert figures.measured(None, None)["pgd"] is None
    data = figures.StudyData("s", 0.2, 1.0, {"ls": {"alpha": 0.9, "k": 1}}, {}, {"ls": {"predicted_robust_accuracy": 66.7, "n_test": 300}}, {}, {"ls": both})
    assert figures.robust_text(data, "ls") == "Eq. 4 66.7% · PGD-40 4.7% · AA 0.8% (n=150)"
    data.measured["ls"] = figures.measured(ADV_RECORD, None)
    assert figures.robust_text(data, "ls") == "Eq. 4 66.7% · PGD-40 4.7%"


def _verdict_study(ls: tuple[float, float], natural: tuple[float, float]) -> figures.StudyData:
    entries = {"ls": {"alpha": 0.9, "k": 1}, "nat": {"k": 1}}
    summary = {m: {"predicted_robust_accuracy": v[0], "n_test": 300} for m, v in (("ls", ls), ("nat", natural))}
    measures = {m: {"pgd": v[1], "pgd_name": "PGD-40", "pgd_n": 300} for m, v in (("ls", ls), ("nat", natural))}
    return figures.StudyData("s", 0.2, 1.0, entries, {}, summary, {}, measures)


def test_figure3_caption_sentence_is_computed_from_the_data() -> None:
    disagree = figures.verdict_label_smoothing(_verdict_study((66.7, 4.7), (20.0, 0.3)), ["ls", "nat"])
    assert disagree is not None and "Eq. 4 66.7% vs 20.0% (higher)" in disagree and "disagrees with the paper" in disagree
    agree = figures.verdict_label_smoothing(_verdict_study((5.0, 0.0), (20.0, 10.0)), ["ls", "nat"])
    assert agree is not None and "agrees with the paper" in agree and "disagrees" not in agree
    same = figures.verdict_label_smoothing(_verdict_study((20.0, 1.0), (20.0, 1.0)), ["ls", "nat"])
    assert same is not None and "no difference beyond sampling noise" in same
    assert figures.verdict_label_smoothing(_verdict_study((1, 1), (1, 1)), ["nat"]) is None


def test_figure8_caption_sentence_counts_inactive_neurons() -> None:
    entries = {"nat": {"k": 1}, "lsn": {"alpha": 0.2, "sigma": 0.5, "k": 1}}
    few = {"nat": {"feature_abs_sum": np.ones(1024)}, "lsn": {"feature_abs_sum": np.r_[np.ones(1000), np.zeros(24)]}}
    data = figures.StudyData("s", 0.2, 1.0, entries, few, {}, {})
    text = figures.verdict_inactive(data, ["nat", "lsn"])
    assert text is not None and "natural 0/1024" in text and "24/1024" in text and "disagrees" in text
    data.analysis["lsn"] = {"feature_abs_sum": np.r_[np.ones(600), np.zeros(424)]}
    text = figures.verdict_inactive(data, ["nat", "lsn"])
    assert text is not None and "agrees within a factor of two" in text


def _type3_fonts(pdf: Path) -> int:
    """Number of Type 3 font dictionaries in a PDF (matplotlib writes font dictionaries uncompressed)."""
    return pdf.read_bytes().count(b"/Subtype /Type3")


def test_the_type3_check_finds_type3_fonts(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"pdf.fonttype": 3}):
        fig = plt.figure(figsize=(2, 1))
        fig.text(0.1, 0.5, "logit gap")
        fig.savefig(tmp_path / "t3.pdf")
        plt.close(fig)
    assert _type3_fonts(tmp_path / "t3.pdf") > 0


def _pdf_size_inches(pdf: Path) -> tuple[float, float]:
    import re

    box = re.search(rb"/MediaBox \[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]", pdf.read_bytes())
    assert box is not None, pdf
    x0, y0, x1, y1 = (float(v) for v in box.groups())
    return (x1 - x0) / 72, (y1 - y0) / 72


def _no_legend_covers_an_axes(fig) -> None:  # type: ignore[no-untyped-def]
    """No legend box overlaps a plotting area (so none hides a point or a bar); every figure has a legend."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (legend.get_texts()[0].get_text(), ax.get_xlabel())


def _texts_at_least_7pt(fig) -> list[str]:  # type: ignore[no-untyped-def]
    """Every visible text of a drawn figure (at print size: the figure is drawn at its print width) is at least 7 pt."""
    texts = fig.findobj(lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text") and o.get_visible() and o.get_text())
    assert texts
    return [f"{t.get_text()[:40]!r} at {t.get_fontsize()} pt" for t in texts if t.get_fontsize() < figures.MIN_FONT_PT]


def test_every_font_setting_is_at_least_7pt() -> None:
    import matplotlib.font_manager

    sizes = {key: value for key, value in figures.RC.items() if key.endswith(("size", "fontsize")) and "marker" not in key}
    assert sizes and all(matplotlib.font_manager.FontProperties(size=v).get_size_in_points() >= 7 for v in sizes.values()), sizes


def _every_plot_kind() -> tuple:
    """A two-model study whose every figure has data (dead neurons, a training history, an audit), the
    figures' model selection, and one figure name per plot kind."""
    data = _study_of_two(n=8)
    for mid in data.entries:
        n = len(data.analysis[mid]["feature_abs_sum"])
        data.analysis[mid]["feature_abs_sum"] = np.r_[np.linspace(5, 1, n - 40), np.zeros(40)]
        data.history[mid] = [{"iteration": i, "loss": 1 / i, "accuracy": 50 + i, "logit_norm": i} for i in range(1, 20)]
        data.measured[mid] = figures.measured(ADV_RECORD, {"n": 8, "accuracy": {"autoattack": 0.8}})
    selection = figures.select(data.entries)
    one_per_kind = {what: name for name, (_paper, what, _roles) in reversed(list(figures.FIGURES.items()))}
    return data, selection, one_per_kind


def test_paper_style_figures_fit_iclr_widths_with_7pt_text_and_no_title_or_footer(tmp_path: Path) -> None:
    """Each plot kind in the paper style: a full-width PDF at most 397 pt wide (ICLR's text), a column one at
    most 2.7 in; every text at least 7 pt; no footer or legend title (the numbers are in the caption file)."""
    data, selection, one_per_kind = _every_plot_kind()
    assert data.style == "paper" and figures.DEFAULT_WIDTHS == {"full": 5.5, "column": 2.7}
    for what, name in one_per_kind.items():
        small, words = [], []

        def inspect(fig) -> None:  # type: ignore[no-untyped-def]
            small.extend(_texts_at_least_7pt(fig))
            words.extend(t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text") and hasattr(o, "get_fontsize")))

        pdf = next(p for p in figures.draw(name, data, selection[name], tmp_path, inspect) if p.suffix == ".pdf")
        assert small == [], (name, small)
        assert not any(w.startswith("Study ") or "Eq. 4 " in w or ("inactive" in w and not w.startswith("paper:")) for w in words), (name, words)
        width_pt = 72 * _pdf_size_inches(pdf)[0]
        if figures.width_of(name) == "full":
            assert 380 <= width_pt <= 397, (name, width_pt)
        else:
            assert width_pt <= 72 * 2.7, (name, width_pt)
    # A study's analysis.figure_widths sets the sizes: a narrower column gives a narrower PDF.
    data.widths = {"full": 5.5, "column": 2.2}
    pdf = next(p for p in figures.draw("fig2_logits_adversarial", data, selection["fig2_logits_adversarial"], tmp_path) if p.suffix == ".pdf")
    assert 72 * _pdf_size_inches(pdf)[0] <= 72 * 2.2


def test_caption_files_and_selection_record_name_the_chosen_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Beside each figure: its caption (plain and LaTeX) with the chosen model ids and the numbers the image
    leaves out; selection.json holds every figure's models, and a change from the previous build is logged."""
    data = _study_of_two(n=8)
    selection = figures.select(data.entries)
    texts = figures.shown(data.entries)
    txt, tex = figures.write_captions("fig1_eq4_adversarial", data, selection["fig1_eq4_adversarial"], texts["fig1_eq4_adversarial"], tmp_path)
    caption = txt.read_text()
    assert txt.name == "fig1_eq4_adversarial.caption.txt" and tex.name == "fig1_eq4_adversarial.caption.tex"
    for mid in selection["fig1_eq4_adversarial"]["models"]:
        assert f"[{mid}" in caption and f"[{mid.replace('_', chr(92) + '_')}" in tex.read_text()
    assert caption.startswith("Figure 1 (MNIST) / Figure 5 (CIFAR-10), study s, L∞ attacks at ε = 0.2.") and "Eq. 4 " in caption
    assert r"$L_\infty$" in tex.read_text() and "ε" not in tex.read_text()
    assert figures.record_selection(selection, texts, tmp_path) == []  # a first build: nothing to compare
    record = json.loads((tmp_path / "selection.json").read_text())
    assert record["fig1_eq4_adversarial"]["models"] == selection["fig1_eq4_adversarial"]["models"]
    # A grid entry added: the figure that now shows another model says so.
    data.entries["pgd7-eps0.2-step0.05_k5"] = {"k": 5, "adversarial": {"steps": 7, "step_size": 0.05, "eps": 0.2}}
    changed = figures.record_selection(figures.select(data.entries), figures.shown(data.entries), tmp_path)
    assert any(line.startswith("fig1_eq4_adversarial: models changed from the previous build: natural_k5, pgd2-eps0.2-step0.1_k5 -> ")
               for line in changed), changed


def test_figures_are_print_sized_with_truetype_fonts(tmp_path: Path) -> None:
    """One figure per plot kind: column (2.7 in) or full (5.5 in) width, no Type 3 font, no legend over the data."""
    data, selection, one_per_kind = _every_plot_kind()
    for what, name in one_per_kind.items():
        paths = figures.draw(name, data, selection[name], tmp_path, inspect=_no_legend_covers_an_axes)
        pdf = next(p for p in paths if p.suffix == ".pdf")
        assert _type3_fonts(pdf) == 0 and b"/FontFile2" in pdf.read_bytes(), name  # embedded TrueType
        width, _height = _pdf_size_inches(pdf)
        target = figures.size(what, figures.DEFAULT_WIDTHS)[0]
        assert target - 0.4 <= width <= target, (name, width)


def test_eq4_legend_gives_the_nearest_class_prediction() -> None:
    """The annotated style's legend (the paper style's caption file holds the same text: `caption_text`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _study_of_two(n=8)
    mid = "natural_k5"
    # Make the two predictions differ, so the legend shows which one it uses.
    data.summary[mid] = {**data.summary[mid], "predicted_robust_accuracy": 12.5, "predicted_robust_accuracy_top": 37.5}
    data.measured[mid] = figures.measured(ADV_RECORD, None)
    data.style = "annotated"
    fig = plt.figure(layout="constrained")
    models = list(data.entries)
    figures.plot_eq4(fig, data, models, {m: m for m in models}, figures.styles(models, data.entries))
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert f"{mid}: Eq. 4 12.5% · PGD-40 4.7%" in texts
    title = legend.get_title().get_text()
    assert "all wrong classes" in title and "9 entries per test image" in title
    assert "z_j" in fig.axes[0].get_xlabel()
    plt.close(fig)
    caption = figures.caption_text("fig1_eq4_adversarial", data, figures.select(data.entries)["fig1_eq4_adversarial"], [])
    assert "natural: Eq. 4 12.5% · PGD-40 4.7%" in caption


def test_caption_selection_prints_one_line_in_the_report_but_compares_in_full() -> None:
    chosen = figures.caption_selection(DIGITS)
    assert chosen["fig1_eq4_adversarial"]["models"] == "natural_k3000, pgd10-eps0.2-step0.05_k2000"
    assert len(str(chosen)) < 80 and "\n" not in str(chosen)
    assert "natural_k3000" in repr(chosen)  # Snakemake's rerun trigger sees every model


def _job_command(log: Path) -> str:
    """The command a job ran: the first line of its log (every stage writes it there)."""
    return log.read_text().splitlines()[0].removeprefix("command: ")


def test_models_from_files_pairs_per_model_files(tmp_path: Path) -> None:
    paths = []
    for mid, entry in (("a_k1", {"k": 1}), ("b_k1", {"alpha": 0.2, "k": 1})):
        path = tmp_path / f"{mid}.json"
        path.write_text(json.dumps({"model_id": mid, "entry": entry}))
        paths.append(str(path))
    models = figures.models_from_files(paths, ["a.npz", "b.npz"], ["a.json", "b.json"], ["ra.json", "rb.json"])
    assert [m["model_id"] for m in models] == ["a_k1", "b_k1"] and models[1]["entry"] == {"alpha": 0.2, "k": 1}
    assert models[0]["record"] == "ra.json" and "audit" not in models[0]
    with pytest.raises(figures.PipelineError, match="1 metrics files for 2"):
        figures.models_from_files(paths, ["a.npz", "b.npz"], ["a.json"])


def _render_rst(text: str, config: dict, study: str | None = None, selection: dict | None = None, categories: dict | None = None) -> str:
    """Render a report text as Snakemake does: Jinja (trim_blocks, lstrip_blocks), then reStructuredText to HTML.
    `categories`: the report's results menu, {category name: [subcategory names]} (Snakemake passes Category objects)."""
    from collections import namedtuple
    from types import SimpleNamespace

    from docutils.core import publish_parts
    from jinja2 import Environment

    category = namedtuple("Category", "name")
    menu = {category(c): {category(sub): [] for sub in subs} for c, subs in (categories or {}).items()}
    snakemake = SimpleNamespace(config=config, wildcards=SimpleNamespace(study=study), params=SimpleNamespace(selection=selection))
    rst = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text).render(snakemake=snakemake, categories=menu, files={})
    return publish_parts(rst, writer="html")["html_body"]


def _plain_lines(html: str, chars_per_line: int = 70) -> int:
    """Screen lines the text takes at the landing page's width (prose-sm, max-w-lg: about 70 characters a line)."""
    import math
    import re

    blocks = re.findall(r"<(?:p|li|h1)[^>]*>(.*?)</(?:p|li|h1)>", html, flags=re.S)
    return sum(max(1, math.ceil(len(re.sub(r"<[^>]+>", "", b).replace("\n", " ")) / chars_per_line)) for b in blocks)


def test_landing_opens_on_the_ledger_names_every_category_and_only_its_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from smoothsqueeze.claims import render

    config = yaml.safe_load((ROOT / "config.yaml").read_text()) | {"reports_dir": "reports"}
    landing = tmp_path / "reports/digits/logs/report_landing.html"  # what the report job writes from claims.csv
    landing.parent.mkdir(parents=True)
    landing.write_text(render.landing_html([{"id": "C1", "title": "a claim", "verdict": "holds", "untested": ""}], "digits"))
    monkeypatch.chdir(tmp_path)  # the raw directive's file is relative to the report job's working directory
    menu = {name: ["digits"] for name in ("Claims", "Tables", "Figures", "Masking audit", "Cost", "Frontier")}
    html = _render_rst((ROOT / "workflow/report/workflow.rst").read_text(), config, categories=menu)
    for category in ("Claims", "Tables", "Figures", "Masking audit", "Cost", "Frontier"):
        assert f"<strong>{category}</strong>" in html, category
    assert html.index("Claims ledger of study digits") < html.index("C1 a claim") < html.index("This workflow retrains")
    assert ">digits</" in html and not any(f">{name}</" in html for name in config["studies"] if name != "digits"), "only this report's study"
    # Snakemake centres the pane vertically, where a text taller than the window cannot scroll to its top: the
    # landing's style aligns an overflowing pane to its top. The description after the ledger stays short.
    assert "align-items:safe center" in html
    assert _plain_lines(html[html.index("</table></div>"):]) <= 22, _plain_lines(html)
    assert "every caption" not in html
    # The report's menu lists categories alphabetically: the claims ledger is its first entry, and the text names it first.
    assert sorted(("Claims", "Tables", "Figures", "Masking audit", "Cost"))[0] == "Claims"
    assert html.index("<strong>Claims</strong>") < html.index("<strong>Tables</strong>")


def test_every_figure_caption_states_the_attack_budget_and_its_models() -> None:
    import yaml

    from smoothsqueeze import config as sscfg

    for config_path, study, eps in ((ROOT / "tests/data/tiny_config.yaml", "tiny", "0.2"), (ROOT / "config.yaml", "cifar10", "8/255")):
        config = yaml.safe_load(config_path.read_text())
        st = config["studies"][study]
        entries = {sscfg.model_id(e): e for e in st["grid"]}
        selection = figures.caption_selection(entries, st.get("pixel_units", 1))
        for name in figures.FIGURES:
            html = _render_rst((ROOT / f"workflow/report/figures/{name}.rst").read_text(), config, study, selection)
            assert f"Attack budget: L-inf eps = {eps} (white-box: " in html, (study, name)
            assert "one colour and one marker" in html, name
            if name != "training_curves":
                assert f"Models shown (study {study}): {selection[name]['models']}." in html, name
        for name in ("fig3_eq4_label_smoothing", "fig8_activations_penultimate"):
            html = _render_rst((ROOT / f"workflow/report/figures/{name}.rst").read_text(), config, study, selection)
            assert "Compare with the paper" in html and "footer under the figure" in html, name


@pytest.mark.slow
def test_snakemake_builds_every_figure_of_the_tiny_study(tiny_copy: Path) -> None:
    targets = [f"reports/tiny/figures/{name}.{fmt}" for name in figures.FIGURES for fmt in figures.FORMATS]
    run_snakemake(tiny_copy, *targets, "--resources", "gpu=2")
    for target in targets:
        data = (tiny_copy / target).read_bytes()
        assert data.startswith(b"\x89PNG" if target.endswith(".png") else b"%PDF"), target
        if target.endswith(".pdf"):
            assert _type3_fonts(tiny_copy / target) == 0, target
            width, _height = _pdf_size_inches(tiny_copy / target)
            assert 72 * width <= 397, target  # ICLR's text width
    for name, sel in json.loads((tiny_copy / "reports/tiny/figures/selection.json").read_text()).items():
        caption = (tiny_copy / f"reports/tiny/figures/{name}.caption.txt").read_text()
        assert all(f"[{mid}" in caption for mid in sel["models"]), name
    models = ["natural_k40", "noise0.3_k40", "ls0.9_k40", "sq0.5_noise0.3_k40", "pgd3-eps0.2-step0.1_k30"]
    for model in models:
        summary = json.loads((tiny_copy / f"results/tiny/analysis/{model}.json").read_text())
        assert summary["model_id"] == model and summary["n_test"] == 60  # the study's attack.max_examples
        arrays = np.load(tiny_copy / f"results/tiny/analysis/{model}.npz")
        assert arrays["eps_l"].shape == (60,) and arrays["eps_l_all"].shape == (60, 9)
        # What the legends print, recomputed from the arrays: correct and eps below eps_L of every wrong class.
        correct = arrays["predictions"] == arrays["labels"]
        robust = correct & (arrays["eps_l_all"].min(axis=1) > 0.2)
        assert summary["predicted_robust_count"] == int(robust.sum())
        assert summary["clean_accuracy"] == pytest.approx(100 * correct.mean())
    log = (tiny_copy / "reports/tiny/logs/figures.log").read_text()
    assert "fig2_logits_adversarial: natural_k40, pgd3-eps0.2-step0.1_k30 (missing: weak adversarial)" in log
    # The job drew its figures in 2 processes (threads: 2, --cores 2); drawn one by one they are the same images.
    assert "--workers 2" in _job_command(tiny_copy / "reports/tiny/logs/figures.log")
    from smoothsqueeze import config as sscfg
    from smoothsqueeze.study import Plan

    plan = Plan(sscfg.load_config(ROOT / "tests/data/tiny_config.yaml"))
    files = {kind: [str(tiny_copy / p) for p in paths] for kind, paths in plan.figure_inputs("tiny").items()}
    spec = plan.figures_spec("tiny") | {
        "models": figures.models_from_files(files["summaries"], files["analysis"], files["metrics"], files["records"], files["audits"])}
    one_by_one = figures.run(spec, tiny_copy / "serial", workers=1)
    for path in one_by_one:
        if path.suffix == ".png":
            assert path.read_bytes() == (tiny_copy / "reports/tiny/figures" / path.name).read_bytes(), path.name
    # The legends set measured PGD and AutoAttack beside Eq. 4, and Figure 3 compares LS alone with natural training.
    assert "fig3_eq4_label_smoothing: Paper: label smoothing alone slightly worsens robustness. This study (LS α=0.9 vs natural): Eq. 4 " in log
    assert "PGD-5 " in log and "AA " in log
    # The figures carry report captions that render (Jinja + reStructuredText).
    run_snakemake(tiny_copy, *targets, "--report", "report.html")
    html = (tiny_copy / "report.html").read_text(errors="replace")
    assert "fig8_activations_penultimate.png" in html and "Models shown (study tiny): natural_k40, pgd3-eps0.2-step0.1_k30" in html
    # Captions name the parameters of the models actually shown (not fixed paper values) and the attack budget.
    assert "[sq0.5_noise0.3_k40; role target" in html and "every wrong class" in html and "Attack budget: L-inf eps = 0.2" in html
    # The info panel's job parameters are a few short lines, not the per-model spec as escaped JSON.
    import re

    panels = re.findall(r'"rule": "figures", "wildcards": "study=tiny", "params": "((?:[^"\\]|\\.)*)"', html)
    assert panels and all(len(p) < 400 for p in panels), panels[:1]
