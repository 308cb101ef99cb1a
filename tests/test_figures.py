"""Figures stage: which models each figure shows, legend labels, and a real Snakemake run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_snakemake
from smoothsqueeze import analysis, figures
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


class _RecordingAxes:
    """Stands in for a matplotlib Axes: records what `_histograms` plots."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.ylabel = ""

    def hist(self, values, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.sizes.append(len(values))

    def set_ylabel(self, text: str) -> None:
        self.ylabel = text


def _study_of_two(n: int = 6) -> figures.StudyData:
    torch.manual_seed(0)
    entries = {"natural_k5": {"k": 5}, "pgd2-eps0.2-step0.1_k5": {"k": 5, "adversarial": {"steps": 2, "step_size": 0.1, "eps": 0.2}}}
    arrays = {mid: analysis.analyze_model(build_model("madry_cnn", 1, 8, 10).eval(), torch.rand(n, 1, 8, 8), torch.arange(n) % 10) for mid in entries}
    summaries = {mid: analysis.summarize(a, 0.2) for mid, a in arrays.items()}
    return figures.StudyData("s", 0.2, 1.0, entries, arrays, summaries, {mid: [] for mid in entries})


def test_eq4_histograms_count_every_wrong_class() -> None:
    data = _study_of_two(n=6)
    models = list(data.entries)
    for key, _title in figures.EQ4_PANELS:
        assert data.analysis[models[0]][key].shape == (6, 9)
        ax = _RecordingAxes()
        figures._histograms(ax, data, models, key, {m: m for m in models}, {m: "k" for m in models})
        assert ax.sizes == [6 * 9, 6 * 9], key  # N * (C-1) entries per model (all finite here)
        assert ax.ylabel == "test images × wrong classes"
    ax = _RecordingAxes()
    figures._histograms(ax, data, models, "z_y", {m: m for m in models}, {m: "k" for m in models})
    assert ax.sizes == [6, 6] and ax.ylabel == "test images"


def test_eq4_legend_gives_the_nearest_class_prediction() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _study_of_two(n=8)
    mid = "natural_k5"
    # Make the two predictions differ, so the legend shows which one it uses.
    data.summary[mid] = {**data.summary[mid], "predicted_robust_accuracy": 12.5, "predicted_robust_accuracy_top": 37.5}
    fig = plt.figure()
    models = list(data.entries)
    figures.plot_eq4(fig, data, models, {m: m for m in models}, {m: "k" for m in models})
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"{mid}  (Eq. 4 predicted robust 12.5%)" in texts
    assert "all wrong classes" in fig._suptitle.get_text() and "9 entries per test image" in fig._suptitle.get_text()
    assert "z_j" in fig.axes[0].get_xlabel()
    plt.close(fig)


@pytest.mark.slow
def test_snakemake_builds_every_figure_of_the_tiny_study(tiny_copy: Path) -> None:
    targets = [f"reports/tiny/figures/{name}.{fmt}" for name in figures.FIGURES for fmt in figures.FORMATS]
    run_snakemake(tiny_copy, *targets, "--resources", "gpu=2")
    for target in targets:
        data = (tiny_copy / target).read_bytes()
        assert data.startswith(b"\x89PNG" if target.endswith(".png") else b"%PDF"), target
    models = ["natural_k40", "noise0.3_k40", "ls0.9_k40", "sq0.5_noise0.3_k40", "pgd3-eps0.2-step0.1_k30"]
    for model in models:
        summary = json.loads((tiny_copy / f"results/tiny/analysis/{model}.json").read_text())
        assert summary["model_id"] == model and summary["n_test"] == 60  # the study's attack.max_examples
        assert 0 <= summary["predicted_robust_accuracy"] <= summary["clean_accuracy"] <= 100
        arrays = np.load(tiny_copy / f"results/tiny/analysis/{model}.npz")
        assert arrays["eps_l"].shape == (60,) and arrays["eps_l_all"].shape == (60, 9)
        assert summary["predicted_robust_accuracy"] <= summary["predicted_robust_accuracy_top"] <= summary["clean_accuracy"]
    log = (tiny_copy / "reports/tiny/logs/figures.log").read_text()
    assert "fig2_logits_adversarial: natural_k40, pgd3-eps0.2-step0.1_k30 (missing: weak adversarial)" in log
    # The figures carry report captions that render (Jinja + reStructuredText).
    run_snakemake(tiny_copy, *targets, "--report", "report.html")
    html = (tiny_copy / "report.html").read_text(errors="replace")
    assert "fig8_activations_penultimate.png" in html and "Models shown (study tiny): natural_k40, pgd3-eps0.2-step0.1_k30" in html
    # Captions name the parameters of the models actually shown (not fixed paper values).
    assert "[sq0.5_noise0.3_k40; role target" in html and "every wrong class" in html
