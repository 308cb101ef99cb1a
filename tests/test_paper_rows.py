"""Every row of the paper's Tables 1, 5, 6 and 7 (workflow/smoothsqueeze/resources/paper/*.csv) has a model in config.yaml's
mnist / cifar10 grid, checked without training: row files are built from the grid by the tables
stage's own `build_row` (as from evaluation records with no numbers yet), matched by `paper.match`,
and each match is checked against the paper row's parameters read straight from the CSV. A dry run
of each study lists one training job per grid entry and one comparison job per paper table."""
from __future__ import annotations

import copy
import csv
import re
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, run_snakemake
from smoothsqueeze import config as sscfg
from smoothsqueeze import paper, tables

CONFIG = sscfg.load_config(ROOT / "config.yaml")
PAPER_CSV = ROOT / "workflow" / "paper"
#: study -> (paper eps in [0, 1], its paper tables, the CSV column holding sigma and its units)
STUDIES = {
    "mnist": (0.3, ["table1", "table5"], "sigma", 1),
    "cifar10": (8 / 255, ["table1", "table6", "table7"], "sigma_255", 255),
}


def grid_rows(study: str) -> pd.DataFrame:
    """Row files of every grid model, as the tables stage would write them (accuracies left empty)."""
    st = CONFIG["studies"][study]
    records = [
        {"study": study, "model_id": sscfg.model_id(entry), "entry": copy.deepcopy(entry), "accuracy": {"train": 0, "test": 0},
         "eps": st["attack"]["eps"], "pixel_units": st.get("pixel_units", 1), "blackbox_source": st["blackbox"]["source"]}
        for entry in st["grid"]
    ]
    return pd.DataFrame([tables.build_row(r) for r in records])


def csv_rows(name: str, study: str) -> list[dict[str, str]]:
    with open(paper.paper_path(name), newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if r.get("dataset", study) == study]


def _num(text: str) -> float:
    return float(Fraction(text)) if text.strip() else 0.0


def _entries(study: str) -> dict[str, dict]:
    return {sscfg.model_id(e): e for e in CONFIG["studies"][study]["grid"]}


def _strongest_adversarial(study: str, eps01: float) -> set[str]:
    """Plain PGD-trained models at the paper's eps with the most attack steps (the Madry baseline)."""
    units = CONFIG["studies"][study].get("pixel_units", 1)
    adv = {mid: e for mid, e in _entries(study).items()
           if e.get("adversarial") and not any(e.get(p) for p in ("alpha", "beta", "sigma"))
           and abs(e["adversarial"]["eps"] / units - eps01) < 1e-9}
    most = max(e["adversarial"]["steps"] for e in adv.values())
    return {mid for mid, e in adv.items() if e["adversarial"]["steps"] == most}


@pytest.mark.parametrize(("study", "name"), [(s, t) for s, (_, names, _, _) in STUDIES.items() for t in names])
def test_every_paper_row_has_a_grid_model_with_its_parameters(study: str, name: str) -> None:
    eps01, _, sigma_col, sigma_units = STUDIES[study]
    st = CONFIG["studies"][study]
    units = st.get("pixel_units", 1)
    prows = csv_rows(name, study)
    assert prows, (study, name)
    frame = paper.load(name, study)
    assert len(frame) == len(prows)  # paper.load keeps every row of this dataset
    matched = paper.match(name, frame, grid_rows(study), eps01, st["blackbox"]["source"])
    entries = _entries(study)
    missing = [r.get("row", r.get("training")) for r, m in zip(prows, matched) if m is None]
    assert not missing, f"paper {name} rows without a model in config.yaml's {study} grid: {missing}"
    madry = _strongest_adversarial(study, eps01)
    for prow, model in zip(prows, matched):
        entry = entries[model]
        kind = prow.get("training") or prow["defense"]
        if kind == "natural":
            assert tables.model_kind(entry) == "natural", (prow, model)
        elif kind == "madry_adv_train":
            assert model in madry, (prow, model, madry)
            if name == "table7":  # the black-box source's numbers are white-box: never its own target
                assert model != st["blackbox"]["source"], model
        else:
            assert kind == "regularized", prow
            got = (entry.get("alpha", 0), entry.get("beta", 0), entry.get("sigma", 0) / units, entry["k"])
            want = (_num(prow["alpha"]), _num(prow["beta"]), _num(prow[sigma_col]) / sigma_units, int(prow["k"]))
            assert got == pytest.approx(want, abs=1e-9), (prow["row"], model)
            assert not entry.get("adversarial"), model


def test_table5_rows_14_and_15_repeat_rows_2_and_3() -> None:
    """Rows 14/15 of Table 5 have the parameters of rows 2/3 (the paper lists them twice): they map to
    the same models, and these are the only paper rows that share a model."""
    prows = csv_rows("table5", "mnist")
    matched = paper.match("table5", paper.load("table5", "mnist"), grid_rows("mnist"), 0.3, CONFIG["studies"]["mnist"]["blackbox"]["source"])
    by_row = {int(r["row"]): m for r, m in zip(prows, matched)}
    assert by_row[14] == by_row[2] == "noise0.3_k400000" and by_row[15] == by_row[3] == "noise0.5_k400000"
    assert len(set(matched)) == len(matched) - 2


def test_grid_rows_carry_what_paper_match_reads() -> None:
    rows = grid_rows("cifar10")
    assert {"model", "kind", "alpha", "beta", "sigma", "k", "adv_steps", "adv_eps", "pixel_units"} <= set(rows.columns)
    assert len(rows) == len(CONFIG["studies"]["cifar10"]["grid"]) and rows["model"].is_unique


def _job_stats(stdout: str) -> dict[str, int]:
    block = stdout.split("Job stats:", 1)[1]
    stats = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        stats[m.group(1)] = int(m.group(2))
    return stats


@pytest.mark.slow
@pytest.mark.parametrize("study", list(STUDIES))
def test_dry_run_lists_one_training_job_per_grid_entry_and_every_comparison(study: str, tmp_path: Path) -> None:
    st = CONFIG["studies"][study]
    n_models = len(st["grid"])
    out = run_snakemake(tmp_path, "-n", study, configfile=ROOT / "config.yaml").stdout
    stats = _job_stats(out)
    assert stats["train"] == n_models and stats["evaluate"] == n_models and stats["table_row"] == n_models, stats
    assert stats["craft_blackbox"] == len(st["blackbox"]["attacks"]), stats
    eps01, names, _, _ = STUDIES[study]
    assert stats["paper_comparison"] == len(names), stats
    for name in names:  # each paper table's comparison, in every format
        for ext in ("csv", "tex", "html"):
            assert f"reports/{study}/tables/paper_{name}.{ext}" in out, (name, ext)
    trained = set(re.findall(rf"results/{study}/models/([^/\s]+)/model\.pt", out))
    assert trained == set(_entries(study)), trained ^ set(_entries(study))
