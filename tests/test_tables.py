"""Tables stage: exact rendering from known records, paper matching, single-row targets."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, TINY_CONFIG, run_snakemake
from smoothsqueeze import paper, tables
from smoothsqueeze.cli import main as cli_main

TOY_SPEC = {
    "study": "toy",
    "dataset": "digits",
    "eps": 0.3,
    "pixel_units": 1,
    "whitebox": [{"name": "pgd40_xent", "method": "pgd"}, {"name": "fgsm_cw", "method": "fgsm"}],
    "blackbox": [{"name": "fgsm_cw", "method": "fgsm"}],
    "blackbox_source": "natural_k100",
}
MNIST_SPEC = {
    "study": "mn",
    "dataset": "mnist",
    "eps": 0.3,
    "pixel_units": 1,
    "whitebox": [
        {"name": "pgd40_xent", "method": "pgd"},
        {"name": "pgd40_cw", "method": "pgd"},
        {"name": "fgsm_xent", "method": "fgsm"},
        {"name": "fgsm_cw", "method": "fgsm"},
    ],
    "blackbox": [{"name": "fgsm_cw", "method": "fgsm"}, {"name": "pgd40_cw", "method": "pgd"}],
    "blackbox_source": "natural_k100000",
}


def write_row(tmp: Path, study: str, model: str, entry: dict, accuracy: dict, predicted: float | None = None, predicted_top: float | None = None) -> Path:
    """A real evaluation record (and analysis summary) on disk, turned into a row file by the CLI."""
    record = {"study": study, "model_id": model, "entry": entry, "accuracy": accuracy, "eps": 0.3, "pixel_units": 1, "n_test": 100}
    (tmp / "records").mkdir(exist_ok=True)
    (tmp / "records" / f"{model}.json").write_text(json.dumps(record))
    args = ["table-row", "--record", str(tmp / "records" / f"{model}.json"), "--out", str(tmp / "rows" / f"{model}.csv")]
    if predicted is not None:
        (tmp / "analysis").mkdir(exist_ok=True)
        summary = {"model_id": model, "predicted_robust_accuracy": predicted}
        if predicted_top is not None:
            summary["predicted_robust_accuracy_top"] = predicted_top
        (tmp / "analysis" / f"{model}.json").write_text(json.dumps(summary))
        args += ["--analysis", str(tmp / "analysis" / f"{model}.json")]
    assert cli_main(args) == 0
    return tmp / "rows" / f"{model}.csv"


def render(tmp: Path, command: str, name: str, spec: dict, rows: list[Path]) -> tuple[str, str]:
    out = tmp / "tables"
    rc = cli_main(
        [command, name, "--spec", json.dumps(spec), "--rows", *map(str, rows),
         "--csv", str(out / f"{name}.csv"), "--tex", str(out / f"{name}.tex"), "--html", str(out / f"{name}.html")]
    )
    assert rc == 0
    assert (out / f"{name}.html").read_text().count("<tr>") >= 1
    return (out / f"{name}.csv").read_text(), (out / f"{name}.tex").read_text()


@pytest.fixture
def toy_rows(tmp_path: Path) -> list[Path]:
    return [
        write_row(tmp_path, "toy", "natural_k100", {"alpha": 0, "beta": 0, "sigma": 0, "k": 100},
                  {"train": 99.5, "test": 98.25, "whitebox_pgd40_xent": 0.0, "whitebox_fgsm_cw": 5.126, "blackbox_fgsm_cw": 10.0}, predicted=1.5),
        write_row(tmp_path, "toy", "ls0.95_noise0.3_k200", {"alpha": 0.95, "sigma": 0.3, "k": 200},
                  {"train": 99.0, "test": 98.0, "whitebox_pgd40_xent": 40.333, "whitebox_fgsm_cw": 60.0, "blackbox_fgsm_cw": 80.0}),
        write_row(tmp_path, "toy", "pgd40-eps0.3-step0.01_k50", {"k": 50, "adversarial": {"steps": 40, "step_size": 0.01, "eps": 0.3}},
                  {"train": 97.0, "test": 96.5, "whitebox_pgd40_xent": 90.0, "whitebox_fgsm_cw": 91.0, "blackbox_fgsm_cw": 95.0},
                  predicted=55.556, predicted_top=61.004),
    ]


def test_accuracy_table_from_known_records(tmp_path: Path, toy_rows: list[Path]) -> None:
    csv, tex = render(tmp_path, "table", "accuracy", TOY_SPEC, [*toy_rows, tmp_path / "rows" / "not_built_k1.csv"])
    # One seed per row: the mean is the value, the spread 0, and each accuracy's 95% Wilson interval over
    # its n = 100 images (0 of 100: [0, 3.70]; 98 of 100: [93.00, 99.45]; the toy records give no n_train).
    assert csv == (
        "model,defense,alpha,beta,sigma,k,seeds,train,train_sd,train_lo,train_hi,test,test_sd,test_lo,test_hi,"
        "whitebox_pgd40_xent,whitebox_pgd40_xent_sd,whitebox_pgd40_xent_lo,whitebox_pgd40_xent_hi,"
        "whitebox_fgsm_cw,whitebox_fgsm_cw_sd,whitebox_fgsm_cw_lo,whitebox_fgsm_cw_hi,"
        "blackbox_fgsm_cw,blackbox_fgsm_cw_sd,blackbox_fgsm_cw_lo,blackbox_fgsm_cw_hi\n"
        "natural_k100,natural,0,0,0,100,1,99.50,0.00,,,98.25,0.00,93.00,99.45,0.00,0.00,0.00,3.70,5.13,0.00,2.15,11.18,10.00,0.00,5.52,17.44\n"
        "ls0.95_noise0.3_k200,LS + noise,0.95,0,0.3,200,1,99.00,0.00,,,98.00,0.00,93.00,99.45,40.33,0.00,30.94,49.80,60.00,0.00,50.20,69.06,"
        "80.00,0.00,71.12,86.66\n"
        'pgd40-eps0.3-step0.01_k50,"PGD-40 adv. (eps 0.3, step 0.01)",0,0,0,50,1,97.00,0.00,,,96.50,0.00,90.16,98.43,90.00,0.00,82.56,94.48,'
        "91.00,0.00,83.77,95.19,95.00,0.00,88.82,97.85\n"
    )
    assert tex == (
        "% Generated by smoothsqueeze.tables from the evaluation records; do not edit by hand.\n"
        "\\begin{table}[htbp]\n"
        "\\centering\n"
        "\\footnotesize\n"
        "\\setlength{\\tabcolsep}{3pt}\n"
        "\\caption{Accuracy of every model, white-box and black-box (layout of the paper's Tables 2 and 5). "
        "Study toy (digits), $L_\\infty$ attacks at $\\epsilon = 0.3$; accuracies in \\%.}\n"
        "\\label{tab:toy-accuracy}\n"
        "\\begin{tabular}{lrrrrrrrrr}\n"
        "\\toprule\n"
        " &  &  &  &  &  &  & \\multicolumn{2}{c}{White-box} & \\multicolumn{1}{c}{Black-box} \\\\\n"
        "\\cmidrule(lr){8-9} \\cmidrule(lr){10-10}\n"
        "Defense & $\\alpha$ & $\\beta$ & $\\sigma$ & $k$ & Train & Test & \\shortstack{PGD-40\\\\x-ent} & "
        "\\shortstack{FGSM\\\\CW} & \\shortstack{FGSM\\\\CW} \\\\\n"
        "\\midrule\n"
        "natural & 0 & 0 & 0 & 100 & 99.5 & 98.2 & 0.0 & 5.1 & 10.0 \\\\\n"
        "LS + noise & 0.95 & 0 & 0.3 & 200 & 99.0 & 98.0 & 40.3 & 60.0 & 80.0 \\\\\n"
        "PGD-40 adv. & 0 & 0 & 0 & 50 & 97.0 & 96.5 & 90.0 & 91.0 & 95.0 \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
        "\\end{table}\n"
        # the settings behind the numbers follow the float as a note, kept out of the caption
        "% Note: Black-box sets crafted on natural_k100; rows marked 'training collapsed' failed to train\n"
        "% (training accuracy below twice chance): not robustness results. PGD-40 adv. trained at ε = 0.3,\n"
        "% step 0.01. One training seed per row; 95% Wilson intervals over the attacked images (pooled over\n"
        "% seeds) are at most ±9.4 points wide.\n"
    )
    html = (tmp_path / "tables" / "accuracy.html").read_text()
    assert '<td class="stat">40.3 [30.9, 49.8]</td>' in html and "at most ±9.4 points wide" in html


def test_eq4_table_has_natural_and_adversarial_models_only(tmp_path: Path, toy_rows: list[Path]) -> None:
    csv, tex = render(tmp_path, "table", "eq4", TOY_SPEC, toy_rows)
    # Eq. 4 predicted = the nearest wrong class (min of eps_L); top class = the largest wrong logit only
    # (blank where the analysis summary predates it).
    assert csv == (
        "model,defense,k,seeds,whitebox_fgsm_cw,whitebox_fgsm_cw_sd,whitebox_fgsm_cw_lo,whitebox_fgsm_cw_hi,"
        "predicted_eq4,predicted_eq4_sd,predicted_eq4_lo,predicted_eq4_hi,predicted_eq4_top,predicted_eq4_top_sd,predicted_eq4_top_lo,predicted_eq4_top_hi\n"
        "natural_k100,natural,100,1,5.13,0.00,2.15,11.18,1.50,0.00,0.55,7.00,,,,\n"
        'pgd40-eps0.3-step0.01_k50,"PGD-40 adv. (eps 0.3, step 0.01)",50,1,91.00,0.00,83.77,95.19,55.56,0.00,46.23,65.33,61.00,0.00,51.20,69.98\n'
    )
    assert "Defense & $k$ & CW & \\shortstack{Eq.~4\\\\predicted} & \\shortstack{Eq.~4\\\\top class} \\\\\n" in tex
    assert "natural & 100 & 5.1 & 1.5 & -- \\\\" in tex
    assert "every wrong class" in tex
    assert "\\multicolumn{1}{c}{\\shortstack{FGSM\\\\accuracy}}" in tex


def test_split_layout_and_missing_values(tmp_path: Path, toy_rows: list[Path]) -> None:
    csv, tex = render(tmp_path, "table", "blackbox", TOY_SPEC, toy_rows)
    assert csv.splitlines()[0] == "model,defense,alpha,beta,sigma,k,seeds,blackbox_fgsm_cw,blackbox_fgsm_cw_sd,blackbox_fgsm_cw_lo,blackbox_fgsm_cw_hi"
    spec = {**TOY_SPEC, "blackbox": [*TOY_SPEC["blackbox"], {"name": "pgd7_rand_cw", "method": "pgd"}]}
    csv, tex = render(tmp_path, "table", "blackbox", spec, toy_rows)
    assert csv.splitlines()[1] == "natural_k100,natural,0,0,0,100,1,10.00,0.00,5.52,17.44,,,,"  # not evaluated: blank in CSV
    assert "& 10.0 & -- \\\\" in tex and "\\shortstack{PGD-7\\\\rand. CW}" in tex


def test_seeds_of_a_grid_entry_make_one_row_with_mean_spread_and_pooled_interval(tmp_path: Path) -> None:
    """Three seeds of one entry and one of another: the table has two rows; mean, sample sd and the
    Wilson interval of the pooled images are computed by hand here."""
    entry = {"alpha": 0.95, "sigma": 0.3, "k": 200}
    rows = []
    for seed, pgd, collapsed in ((0, 40.0, False), (1, 44.0, False), (2, 42.0, True)):
        model = "ls0.95_noise0.3_k200" + (f"_seed{seed}" if seed else "")
        record = {"study": "toy", "model_id": model, "group": "ls0.95_noise0.3_k200", "train_seed": seed, "entry": {**entry, **({"seed": seed} if seed else {})},
                  "accuracy": {"train": 99.0, "test": 98.0, "whitebox_pgd40_xent": pgd, "whitebox_fgsm_cw": 60.0, "blackbox_fgsm_cw": 80.0},
                  "eps": 0.3, "pixel_units": 1, "n_test": 100, "n_train": 1000,
                  "training": {"collapsed": collapsed}}
        (tmp_path / "records").mkdir(exist_ok=True)
        (tmp_path / "records" / f"{model}.json").write_text(json.dumps(record))
        assert cli_main(["table-row", "--record", str(tmp_path / "records" / f"{model}.json"), "--out", str(tmp_path / "rows" / f"{model}.csv")]) == 0
        rows.append(tmp_path / "rows" / f"{model}.csv")
    rows.append(write_row(tmp_path, "toy", "natural_k100", {"k": 100}, {"train": 99.5, "test": 98.0, "whitebox_pgd40_xent": 0.0,
                                                                        "whitebox_fgsm_cw": 5.0, "blackbox_fgsm_cw": 10.0}))
    render(tmp_path, "table", "accuracy", TOY_SPEC, rows)
    table = pd.read_csv(tmp_path / "tables" / "accuracy.csv")
    assert table["model"].tolist() == ["ls0.95_noise0.3_k200", "natural_k100"]
    assert table["seeds"].tolist() == [3, 1]
    ls = table.iloc[0]
    assert ls["whitebox_pgd40_xent"] == pytest.approx(42.0) and ls["whitebox_pgd40_xent_sd"] == pytest.approx(2.0)
    # 40 + 44 + 42 = 126 correct of 300 pooled images
    lo, hi = _wilson_by_hand(126, 300)
    assert ls["whitebox_pgd40_xent_lo"] == pytest.approx(lo, abs=0.006) and ls["whitebox_pgd40_xent_hi"] == pytest.approx(hi, abs=0.006)
    lo, hi = _wilson_by_hand(2970, 3000)  # train: 99% of 1000 images per seed
    assert ls["train_lo"] == pytest.approx(lo, abs=0.006) and ls["train_hi"] == pytest.approx(hi, abs=0.006)
    assert ls["note"] == "training collapsed; 1 of 3 seeds training collapsed"
    tex = (tmp_path / "tables" / "accuracy.tex").read_text()
    assert "LS + noise & 0.95 & 0 & 0.3 & 200 & 99.0 $\\pm$ 0.0 & 98.0 $\\pm$ 0.0 & 42.0 $\\pm$ 2.0" in tex
    assert "% Note: " in tex and "Mean ± standard deviation over 1/3 seeds per row" in " ".join(
        line.removeprefix("% ") for line in tex.splitlines() if line.startswith("% "))  # the note after the float
    html = (tmp_path / "tables" / "accuracy.html").read_text()
    assert "42.0 ± 2.0 [" in html


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return 100 * (centre - half), 100 * (centre + half)


def test_row_file_is_one_line_with_every_column(toy_rows: list[Path]) -> None:
    row = pd.read_csv(toy_rows[2])
    assert len(row) == 1
    assert row.loc[0, "kind"] == "adversarial" and row.loc[0, "adv_steps"] == 40 and row.loc[0, "predicted_eq4"] == 55.556
    assert row.loc[0, "predicted_eq4_top"] == 61.004


def test_row_reads_both_eq4_predictions() -> None:
    record = {"study": "toy", "model_id": "m_k1", "entry": {"k": 1}, "accuracy": {"train": 1.0, "test": 2.0}, "eps": 0.3}
    row = tables.build_row(record, {"model_id": "m_k1", "eps": 0.3, "predicted_robust_accuracy": 20.0, "predicted_robust_accuracy_top": 35.0})
    assert row["predicted_eq4"] == 20.0 and row["predicted_eq4_top"] == 35.0
    older = tables.build_row(record, {"model_id": "m_k1", "predicted_robust_accuracy": 20.0})
    assert older["predicted_eq4"] == 20.0 and older["predicted_eq4_top"] is None
    assert tables.build_row(record)["predicted_eq4_top"] is None


def test_bad_record_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"study": "toy", "model_id": "m_k1", "entry": {"k": 1}, "eps": 0.3}))
    assert cli_main(["table-row", "--record", str(tmp_path / "r.json"), "--out", str(tmp_path / "row.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: evaluation record lacks 'accuracy'") and err.count("\n") == 1
    assert not (tmp_path / "row.csv").exists()


@pytest.fixture
def mnist_rows(tmp_path: Path) -> list[Path]:
    acc = {k: 50.0 for k in ("train", "test", "whitebox_pgd40_xent", "whitebox_pgd40_cw", "whitebox_fgsm_xent", "whitebox_fgsm_cw",
                             "blackbox_fgsm_cw", "blackbox_pgd40_cw")}
    adv = lambda steps, step: {"k": 100000, "adversarial": {"steps": steps, "step_size": step, "eps": 0.3}}  # noqa: E731
    return [
        write_row(tmp_path, "mn", "natural_k100000", {"k": 100000}, {**acc, "whitebox_fgsm_xent": 7.0}, predicted=0.0),
        write_row(tmp_path, "mn", "pgd2-eps0.3-step0.2_k100000", adv(2, 0.2), acc, predicted=10.0),
        write_row(tmp_path, "mn", "pgd40-eps0.3-step0.01_k100000", adv(40, 0.01), {**acc, "train": 99.0}, predicted=60.0),
        write_row(tmp_path, "mn", "noise0.3_k400000", {"sigma": 0.3, "k": 400000}, {**acc, "train": 99.5}),
        write_row(tmp_path, "mn", "noise0.5_k400000", {"sigma": 0.5, "k": 400000}, acc),
        write_row(tmp_path, "mn", "ls0.5_k7", {"alpha": 0.5, "k": 7}, acc),  # no paper row
    ]


def test_paper_rows_match_models_by_parameters(tmp_path: Path, mnist_rows: list[Path]) -> None:
    csv, tex = render(tmp_path, "compare", "table5", MNIST_SPEC, mnist_rows)
    table = pd.read_csv(tmp_path / "tables" / "table5.csv")
    # Rows 2/14 and 3/15 have identical parameters: both kept, next to the same model.
    assert table["row"].tolist() == [2, 3, 14, 15, 40]
    assert table["in_table2"].tolist() == ["no", "no", "no", "no", "yes"]
    assert table["model"].tolist() == [
        "noise0.3_k400000", "noise0.5_k400000", "noise0.3_k400000", "noise0.5_k400000", "pgd40-eps0.3-step0.01_k100000"
    ]
    assert table["train_paper"].tolist() == [99.97, 99.99, 100.0, 100.0, 100.0]
    assert table["train_ours"].tolist() == [99.5, 50.0, 99.5, 50.0, 99.0]
    assert table["train_diff"].tolist() == [-0.47, -49.99, -0.5, -50.0, -1.0]
    assert csv.splitlines()[0].startswith("row,defense,alpha,beta,sigma,k,in_table2,model,train_ours,train_paper,train_diff,test_ours")
    assert "\\multicolumn{3}{c}{train}" in tex and "ours & paper & $\\Delta$" in tex
    assert "2 & regularized & 0 & 0 & 0.3 & 400000 & 99.50 & 99.97 & -0.47" in tex


def test_table1_comparison_picks_natural_and_strongest_adversarial(tmp_path: Path, mnist_rows: list[Path]) -> None:
    csv, _ = render(tmp_path, "compare", "table1", MNIST_SPEC, mnist_rows)
    assert csv == (
        "training,epsilon,model,fgsm_xent_ours,fgsm_xent_paper,fgsm_xent_diff,fgsm_cw_ours,fgsm_cw_paper,fgsm_cw_diff,"
        "predicted_eq4_ours,predicted_eq4_paper,predicted_eq4_diff\n"
        "natural,0.3,natural_k100000,7.00,7.05,-0.05,50.00,0.23,49.77,0.00,0.00,0.00\n"
        "madry_adv_train,0.3,pgd40-eps0.3-step0.01_k100000,50.00,95.25,-45.25,50.00,95.41,-45.41,60.00,56.73,3.27\n"
    )


def test_studies_without_paper_counterpart_get_no_comparison() -> None:
    assert paper.tables_for("digits", 0.2) == []
    assert paper.tables_for("mnist", 0.2) == []  # another eps than the paper's
    assert paper.tables_for("mnist", 0.3) == ["table1", "table5"]
    assert paper.tables_for("cifar10", 8 / 255) == ["table1", "table6", "table7"]


def test_cifar_rows_match_sigma_255(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        [{"model": "ls0.95_noise30_k160000", "kind": "regularized", "alpha": 0.95, "beta": 0, "sigma": 30, "k": 160000,
          "pixel_units": 255, "adv_steps": None, "adv_eps": None}]
    )
    prows = paper.load("table6", "cifar10")
    matched = paper.match("table6", prows, rows, 8 / 255)
    assert [r for r, m in zip(prows["row"], matched) if m] == [11]


def test_shipped_paper_csvs_equal_the_shared_ones() -> None:
    shared = ROOT.parent / "shared" / "paper"
    if not shared.is_dir():
        pytest.skip("no shared/paper next to the repository")
    for name in paper.PAPER_TABLES:
        assert paper.paper_path(name).read_bytes() == (shared / paper.PAPER_TABLES[name].file).read_bytes()


# ---------------------------------------------------------------- Snakemake


def job_stats(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    block = stdout.split("Job stats:", 1)[1]
    stats = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if not parts or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


def dry_run_jobs(workdir: Path, target: str, configfile: Path = TINY_CONFIG) -> tuple[dict[str, int], dict[str, list[str]]]:
    proc = run_snakemake(workdir, target, "-n", "--resources", "gpu=2", configfile=configfile)
    models: dict[str, list[str]] = {}
    for rule, wildcards in re.findall(r"rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)\n", proc.stdout):
        model = dict(w.split("=", 1) for w in wildcards.split(", ")).get("model")
        if model:
            models.setdefault(rule, []).append(model)
    return job_stats(proc.stdout), {rule: sorted(ms) for rule, ms in models.items()}


@pytest.mark.slow
def test_single_row_target_runs_only_its_model(tmp_path: Path) -> None:
    stats, models = dry_run_jobs(tmp_path, "reports/tiny/rows/ls0.9_k40.csv")
    assert stats == {"prepare_data": 1, "train": 2, "craft_blackbox": 2, "evaluate": 1, "table_row": 1}
    assert models == {"train": ["ls0.9_k40", "natural_k40"], "evaluate": ["ls0.9_k40"], "table_row": ["ls0.9_k40"]}


@pytest.mark.slow
def test_single_row_of_an_adversarial_model_adds_its_analysis(tmp_path: Path) -> None:
    model = "pgd3-eps0.2-step0.1_k30"
    stats, models = dry_run_jobs(tmp_path, f"reports/tiny/rows/{model}.csv")
    assert stats == {"prepare_data": 1, "train": 2, "craft_blackbox": 2, "evaluate": 1, "analyze": 1, "table_row": 1}
    assert models["train"] == sorted([model, "natural_k40"]) and models["analyze"] == [model]


@pytest.mark.slow
def test_study_builds_tables_and_report(tiny_study: Path) -> None:
    accuracy = pd.read_csv(tiny_study / "reports/tiny/tables/accuracy.csv")
    config = yaml.safe_load(TINY_CONFIG.read_text())
    assert accuracy["model"].tolist() == ["natural_k40", "noise0.3_k40", "ls0.9_k40", "sq0.5_noise0.3_k40", "pgd3-eps0.2-step0.1_k30"]
    tiny = config["studies"]["tiny"]
    attacks = [f"whitebox_{a['name']}" for a in tiny["attack"]["whitebox"]] + [f"blackbox_{a['name']}" for a in tiny["blackbox"]["attacks"]]
    stats = [f"{m}{part}" for m in ("train", "test", *attacks) for part in ("", "_sd", "_lo", "_hi")]  # mean, seed sd, Wilson 95%
    assert accuracy.columns.tolist() == ["model", "defense", "alpha", "beta", "sigma", "k", "seeds", *stats, "note"]
    # the black-box source's own black-box numbers are white-box: its row says so, no other row carries a mark
    source = tiny["blackbox"]["source"]
    notes = dict(zip(accuracy["model"], accuracy["note"].fillna("")))
    assert notes.pop(source).startswith("black-box source") and not any(notes.values())
    eq4 = pd.read_csv(tiny_study / "reports/tiny/tables/eq4.csv")
    assert eq4["model"].tolist() == ["natural_k40", "pgd3-eps0.2-step0.1_k30"] and eq4["predicted_eq4"].notna().all()
    assert (eq4["predicted_eq4"] <= eq4["predicted_eq4_top"]).all()  # the nearest class is never farther than the top one
    assert not list((tiny_study / "reports/tiny/tables").glob("paper_*"))  # digits: no paper counterpart
    # The HTML report embeds every table and figure of the study, each with its own caption, and
    # loads or links nothing outside the file.
    from snakemake_report import data_uri_bytes, embedded_json, external_links, plain_text

    report = (tiny_study / "reports/tiny/report.html").read_text()
    results = embedded_json(report, "results")
    tables_dir, figures_dir = tiny_study / "reports/tiny/tables", tiny_study / "reports/tiny/figures"
    openings = {  # table -> the opening of its rendered caption (workflow/report/{tables,audit}/*.rst, cost.rst)
        "accuracy": "Accuracy (%) of every model of study tiny (digits), laid out like the paper's Tables 2 and 5",
        "whitebox": "White-box accuracy (%) of every model of study tiny (digits)",
        "blackbox": "Black-box accuracy (%) of every model of study tiny (digits)",
        "eq4": "Table 1 of the paper for study tiny (digits)",
        "audit": "Gradient-masking audit of study tiny (beyond the paper)",
        "cost": "Measured compute cost of every model of study tiny",
    }
    # every table in all three formats (the cost table too), every figure as PNG (the PDFs are the
    # same figures for print)
    expected = {p.name: openings[p.stem] for p in sorted(tables_dir.iterdir())}
    for png in sorted(figures_dir.glob("*.png")):
        rst = (ROOT / "workflow/report/figures" / f"{png.stem}.rst").read_text()
        expected[png.name] = rst.split(":", 1)[0].replace("{{ snakemake.wildcards.study }}", "tiny")  # its first clause
    assert {"accuracy.html", "eq4.tex", "audit.csv", "cost.csv", "cost.html", "cost.tex", "fig1_eq4_adversarial.png", "training_curves.png"} <= set(expected)
    # the study's ledger and frontier sit beside the tables and figures (their own tests check their captions)
    assert {"claims.html", "frontier.html", "frontier.png"} <= {Path(path).name for path in results}
    by_file = {Path(path).name: (path, entry) for path, entry in results.items() if Path(path).parent.name in ("tables", "figures")}
    assert sorted(by_file) == sorted(expected), set(by_file) ^ set(expected)
    for name, opening in expected.items():
        path, entry = by_file[name]
        folder = figures_dir if name.endswith(".png") else tables_dir
        assert Path(path).parent == Path("reports/tiny") / folder.name, path
        assert data_uri_bytes(entry["data_uri"]) == (folder / name).read_bytes(), name  # embedded, byte for byte
        caption = plain_text(entry["caption"])
        assert caption.startswith(opening), (name, caption[:300])
        if name.startswith(("accuracy", "whitebox", "blackbox", "eq4")):
            assert "Every attack is L-inf with eps = 0.2" in caption, name
        elif name.startswith("fig"):
            assert "Models shown (study tiny):" in caption, name
        assert external_links(entry["caption"]) == [], name
    assert external_links(report) == []  # no <script src>, <link href>, <img src>, CSS url() to another host
    assert external_links(embedded_json(report, "workflow-desc")) == []
    # Nor does the inline code set one. The report's JavaScript libraries do hold http(s) strings, all
    # inert: package metadata (repository / author / license URLs), XML namespace names, comments, and
    # vega-embed's "Open in Vega Editor" URL, used only if a reader clicks that menu item.
    assert not re.findall(r"""\b(?:src|href)\s*[=:]\s*["']?\s*(?:https?:)?//[^"'\s]*""", report, re.I)


@pytest.mark.slow
def test_new_grid_entry_builds_only_its_model_and_reaggregates(tiny_copy: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["studies"]["tiny"]["grid"].append({"alpha": 0.5, "k": 40})
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    stats, models = dry_run_jobs(tiny_copy, "tiny", configfile=configfile)
    assert models["train"] == ["ls0.5_k40"] and models["evaluate"] == ["ls0.5_k40"] and models["table_row"] == ["ls0.5_k40"]
    assert stats["study_table"] == 1  # accuracy; eq4 holds no regularized model
    assert "craft_blackbox" not in stats and "prepare_data" not in stats
