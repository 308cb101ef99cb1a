"""The robustness-per-cost frontier (smoothsqueeze.frontier): the Pareto set on planted points (ties,
a dominated point, an excluded point), the points built from planted records, audits, metrics and a
cost table written as files (a collapsed and an overfitted model marked and left out of the set), the
files the stage writes, and the frontier the real tiny-study run built (the shared `tiny_study` run).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smoothsqueeze import study as plan_mod
from smoothsqueeze.cli import main as cli_main
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.evidence import per_image
from smoothsqueeze.frontier import figure, pareto, points, stage

# ---------------------------------------------------------------- the Pareto set


def test_pareto_set_of_planted_points_with_ties_and_a_dominated_point() -> None:
    #            natural  reg A   reg A'  reg B   PGD-10  FGSM-RS  costly+weak  same-acc-costlier
    costs = [1.0, 1.0, 1.0, 1.0, 11.0, 2.0, 11.0, 3.0]
    accs = [0.0, 30.0, 30.0, 20.0, 60.0, 45.0, 40.0, 45.0]
    mask = pareto.pareto_mask(costs, accs)
    # A and A' tie exactly: both stay; B (same cost, less accurate) and natural are dominated by A;
    # 'costly+weak' is dominated by PGD-10 (same cost, more accurate); the point of equal accuracy
    # and higher cost than FGSM-RS is dominated by it.
    assert mask == [False, True, True, False, True, True, False, False]


def test_pareto_leaves_out_ineligible_and_missing_points_and_they_dominate_nothing() -> None:
    costs = [1.0, 2.0, 2.0, math.nan]
    accs = [10.0, 90.0, 50.0, 99.0]
    # the 90% point is flagged (catastrophic overfitting): out of the set, and the 50% point stays on it
    assert pareto.pareto_mask(costs, accs, [True, False, True, True]) == [True, False, True, False]
    with pytest.raises(ValueError, match="3 accuracies"):
        pareto.pareto_mask([1.0, 2.0], [1.0, 2.0, 3.0])


def test_step_line_is_the_best_accuracy_reachable_at_each_cost() -> None:
    xs, ys = pareto.step_line([(11.0, 60.0), (1.0, 30.0), (2.0, 45.0)])
    assert xs == [1.0, 2.0, 2.0, 11.0, 11.0] and ys == [30.0, 30.0, 45.0, 45.0, 60.0]


# ---------------------------------------------------------------- points from planted files

N, N_AUDIT = 100, 80


def first(k: int, n: int) -> np.ndarray:
    return np.arange(n) < k


def plant(root: Path, entry: dict[str, Any], *, clean: int, strongest: int, seed: int | None = None, collapsed: bool = False,
          overfitted: bool = False, cpu_per_1k: float = 10.0) -> dict[str, Any]:
    """One model's record, audit and metrics as the pipeline writes them; its spec item and cost row."""
    mid = plan_mod.model_id(entry | ({"seed": seed} if seed else {}))
    group = plan_mod.model_id(entry)
    k = entry["k"]
    ppi = plan_mod.passes_per_iteration(entry.get("adversarial"))
    record = {"model_id": mid, "entry": entry, "group": group, "n_test": N, "train_seed": seed or 0,
              "accuracy": {"train": 12.0 if collapsed else 99.0, "test": clean},
              "training": {"collapsed": collapsed, "overfitted": overfitted},
              "per_image": per_image.encode_results(np.arange(N), {"test": first(clean, N)})}
    audit = {"n": N_AUDIT, "accuracy": {"strongest": 100 * strongest / N_AUDIT},
             "per_image": per_image.encode_results(np.arange(N_AUDIT), {"strongest": first(strongest, N_AUDIT)})}
    metrics = {"training_passes": k * ppi, "check_passes": 40 if entry.get("adversarial", {}).get("method") else 0}
    if overfitted:
        metrics["guard"] = {"overfitting_detected": True, "reason": "planted: check fell from 60% to 1%"}
    paths = {"record": root / "records" / f"{mid}.json", "audit": root / "audit" / f"{mid}.json", "metrics": root / "models" / mid / "metrics.json"}
    for key, obj in (("record", record), ("audit", audit), ("metrics", metrics)):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        paths[key].write_text(json.dumps(obj))
    item = {"model_id": mid, "group": group, "entry": entry | ({"seed": seed} if seed else {}), **{k: str(v) for k, v in paths.items()}}
    cost = {"model": mid, "k": k, "train_loop_cpu_s_per_1k_iter": cpu_per_1k * ppi, "train_loop_s_per_1k_iter": cpu_per_1k * ppi * 1.1}
    return {"item": item, "cost": cost}


FGSM = {"method": "fgsm_rs", "eps": 0.2}
NFGSM = {"method": "nfgsm", "eps": 0.2}
PGD = {"steps": 10, "step_size": 0.05, "eps": 0.2}


def planted_spec(root: Path) -> dict[str, Any]:
    """Natural (2 seeds), LS + noise (2 seeds, one collapsed), LSQ + noise, PGD-10 at half k, FGSM-RS
    (its guard flagged catastrophic overfitting, and it would otherwise top everything) and N-FGSM."""
    planted = [
        plant(root, {"k": 1000}, clean=98, strongest=0),
        plant(root, {"k": 1000}, clean=97, strongest=0, seed=1, cpu_per_1k=12.0),
        plant(root, {"alpha": 0.95, "sigma": 0.3, "k": 1000}, clean=95, strongest=20),
        plant(root, {"alpha": 0.95, "sigma": 0.3, "k": 1000}, clean=11, strongest=8, seed=1, collapsed=True),
        plant(root, {"beta": 0.5, "sigma": 0.3, "k": 1000}, clean=96, strongest=16),
        plant(root, {"k": 500, "adversarial": PGD}, clean=93, strongest=48),
        plant(root, {"k": 1000, "adversarial": FGSM}, clean=97, strongest=70, overfitted=True),
        plant(root, {"k": 1000, "adversarial": NFGSM}, clean=92, strongest=32),
    ]
    cost = root / "cost.csv"
    with open(cost, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(planted[0]["cost"]))
        writer.writeheader()
        writer.writerows(p["cost"] for p in planted)
    return {"study": "planted", "dataset": "digits", "eps": 0.2, "pixel_units": 1, "seed": 0, "blackbox_source": "natural_k1000",
            "cost": str(cost), "models": [p["item"] for p in planted]}


def test_points_from_planted_files(tmp_path: Path) -> None:
    from smoothsqueeze.claims import inputs

    pts = {p.group: p for p in points.build(inputs.load(planted_spec(tmp_path)))}
    assert list(pts) == ["natural_k1000", "ls0.95_noise0.3_k1000", "sq0.5_noise0.3_k1000", "pgd10-eps0.2-step0.05_k500",
                         "fgsmrs-eps0.2-step0.25_k1000", "nfgsm-eps0.2-step0.2_k1000"]
    nat, ls, sq, pgd, fgsm, nfgsm = pts.values()
    # cost: passes in all over the natural model's (1000), exact; CPU seconds over the natural seeds' mean (11 s per 1k)
    assert nat.passes_ratio == 1.0 and ls.passes_ratio == 1.0
    assert pgd.passes_ratio == pytest.approx(500 * 11 / 1000) and fgsm.passes_ratio == pytest.approx((2000 + 40) / 1000)
    assert nat.cpu_ratio == pytest.approx(1.0) and nat.cpu_ratio_sd == pytest.approx(np.std([10 / 11, 12 / 11], ddof=1))
    assert pgd.cpu_ratio == pytest.approx(500 * 110 / 1000 / 11)
    # strongest attack: mean and sd over seeds, Wilson interval of the audited images pooled over seeds
    assert nat.seeds == 2 and nat.strongest.mean == 0.0 and nat.strongest.n == N_AUDIT and nat.strongest.lo == 0.0
    assert 0 < nat.strongest.hi < 3.0  # 0 of 160 images
    assert sq.strongest.mean == pytest.approx(20.0) and sq.strongest.lo < 20.0 < sq.strongest.hi and sq.clean.mean == 96.0
    # marked models: shown, never on the frontier (the overfitted FGSM-RS would dominate everything)
    assert ls.status == "collapsed (1 of 2 seeds)" and fgsm.status == "catastrophic overfitting"
    assert not ls.pareto and not fgsm.pareto
    assert [g for g, p in pts.items() if p.pareto] == ["sq0.5_noise0.3_k1000", "pgd10-eps0.2-step0.05_k500", "nfgsm-eps0.2-step0.2_k1000"]
    assert not nat.pareto  # dominated by LSQ + noise at equal cost


def test_frontier_without_a_natural_model_or_an_audit_says_so(tmp_path: Path) -> None:
    from smoothsqueeze.claims import inputs

    spec = planted_spec(tmp_path)
    no_natural = {**spec, "models": [m for m in spec["models"] if not m["group"].startswith("natural")]}
    with pytest.raises(PipelineError, match="no trained natural model"):
        points.build(inputs.load(no_natural))
    Path(spec["models"][4]["audit"]).unlink()
    with pytest.raises(PipelineError, match=r"missing input .*audit/sq0\.5_noise0\.3_k1000\.json"):
        points.build(inputs.load(spec))


def write_all(tmp_path: Path) -> dict[str, Path]:
    """The stage's every file for the planted study, through the command line, in `tmp_path`."""
    spec = planted_spec(tmp_path / "study")
    out = {name: tmp_path / f"frontier.{ext}" for name, ext in plan_mod.FRONTIER_FILES.items()}
    words = [w for name, path in out.items() for w in (f"--{name.replace('_', '-')}", str(path))]
    assert cli_main(["frontier", "--study", "planted", "--spec", json.dumps(spec), *words]) == 0
    return out


def test_stage_writes_table_figure_and_caption(tmp_path: Path) -> None:
    from test_latex_tables import latex_problems

    out = write_all(tmp_path)
    with open(out["csv"]) as fh:
        rows = {r["group"]: r for r in csv.DictReader(fh)}
    fgsm = rows["fgsmrs-eps0.2-step0.25_k1000"]
    assert fgsm["on_frontier"] == "no" and fgsm["status"] == "catastrophic overfitting" and float(fgsm["passes_ratio"]) == 2.04
    assert {"strongest", "strongest_sd", "strongest_lo", "strongest_hi", "strongest_n", "clean", "clean_sd", "cpu_ratio", "wall_ratio"} <= set(fgsm)
    tex = out["tex"].read_text()
    assert latex_problems(tex) == [] and r"\toprule" in tex and r"LS $\alpha$=0.95 + noise $\sigma$=0.3" in tex
    assert "fgsmrs" not in tex.split(r"\midrule")[1]  # the body names defenses, not model ids
    caption = out["figure_tex"].read_text()
    assert r"\includegraphics[width=\linewidth]{frontier.pdf}" in caption and "natural\\_k1000" in caption
    assert r"N-FGSM (2.04$\times$, 40.0\%)" in caption and "FGSM-RS (catastrophic overfitting)" in caption
    assert out["pdf"].read_bytes().startswith(b"%PDF") and out["png"].stat().st_size > 10_000
    assert "Pareto" in out["html"].read_text()


def test_print_writes_no_file_and_no_output_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = json.dumps(planted_spec(tmp_path / "study"))
    before = sorted(tmp_path.rglob("*"))
    assert cli_main(["frontier", "--study", "planted", "--spec", spec, "--print"]) == 0
    assert "nfgsm-eps0.2-step0.2_k1000" in capsys.readouterr().out and sorted(tmp_path.rglob("*")) == before
    assert cli_main(["frontier", "--study", "planted", "--spec", spec]) == 2
    assert "give --print or at least one of" in capsys.readouterr().err
    assert cli_main(["frontier", "--study", "other", "--spec", spec, "--print"]) == 2


@pytest.mark.slow
def test_frontier_table_and_figure_compile_at_iclr_width(tmp_path: Path) -> None:
    from test_latex_tables import _compile_all, pdflatex_or_skip

    pdflatex = pdflatex_or_skip()
    out = write_all(tmp_path)
    _compile_all(pdflatex, {"frontier_table": out["tex"].read_text(), "frontier_figure": out["figure_tex"].read_text()}, tmp_path)


def test_figure_is_paper_sized_with_readable_text_and_no_title(tmp_path: Path) -> None:
    from smoothsqueeze.claims import inputs

    fig = figure.draw(points.build(inputs.load(planted_spec(tmp_path))))
    assert tuple(fig.get_size_inches()) == (5.5, figure.HEIGHT)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_title() == "" and not fig.texts
    texts = [t for t in fig.findobj(match=lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text")) if t.get_text().strip()]
    assert texts and min(t.get_fontsize() for t in texts) >= 7
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Pareto frontier" in legend and "collapsed or overfitted (excluded)" in legend and "FGSM-RS adv. training" in legend


def test_frontier_spec_reads_exactly_records_audits_metrics_and_cost() -> None:
    from smoothsqueeze.config import load_config

    plan = plan_mod.Plan(load_config(Path(__file__).resolve().parent.parent / "config.yaml"))
    inputs_ = plan.frontier_inputs("digits")
    assert set(inputs_) == {"records", "audits", "metrics", "cost"} and len(inputs_["records"]) == len(plan.model_ids("digits"))
    targets = plan.study_targets("digits")
    assert plan.paths.frontier("digits", "pdf") in targets and plan.paths.frontier("digits", "png") in plan.report_inputs("digits")


# ---------------------------------------------------------------- the real tiny-study run


@pytest.mark.slow
def test_tiny_study_has_a_frontier(tiny_study: Path) -> None:
    reports = tiny_study / "reports" / "tiny"
    with open(reports / "frontier.csv") as fh:
        rows = {r["group"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"natural_k40", "noise0.3_k40", "ls0.9_k40", "sq0.5_noise0.3_k40", "pgd3-eps0.2-step0.1_k30"}
    assert float(rows["natural_k40"]["passes_ratio"]) == 1.0 and float(rows["pgd3-eps0.2-step0.1_k30"]["passes_ratio"]) == 3.0
    assert all(0 <= float(r["strongest"]) <= 100 and r["strongest_n"] for r in rows.values())
    assert any(r["on_frontier"] == "yes" for r in rows.values())
    assert (reports / "frontier.pdf").read_bytes().startswith(b"%PDF") and (reports / "frontier.tex").read_text().count(r"\midrule") == 1
    assert "Pareto frontier" in (reports / "frontier.figure.tex").read_text()
    assert "frontier" in (reports / "report.html").read_text()
    assert (reports / "logs" / "frontier.log").read_text().startswith("command: python -m smoothsqueeze frontier")
