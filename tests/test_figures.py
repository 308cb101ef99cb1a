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
        assert arrays["eps_l"].shape == (60,)
    log = (tiny_copy / "reports/tiny/logs/figures.log").read_text()
    assert "fig2_logits_adversarial: natural_k40, pgd3-eps0.2-step0.1_k30 (missing: weak adversarial)" in log
    # The figures carry report captions that render (Jinja + reStructuredText).
    run_snakemake(tiny_copy, *targets, "--report", "report.html")
    html = (tiny_copy / "report.html").read_text(errors="replace")
    assert "fig8_activations_penultimate.png" in html and "Models shown (study tiny): natural_k40, pgd3-eps0.2-step0.1_k30" in html
