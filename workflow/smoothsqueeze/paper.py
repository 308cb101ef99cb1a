"""The paper's published numbers (smoothsqueeze/resources/paper/*.csv) and which of our models each row is.

The CSVs are copies of shared/paper/*.csv shipped inside the repository, so a fresh clone can
build the comparison tables. A paper row is matched to a model of the study by its parameters:
regularized rows by (alpha, beta, sigma, k); `madry_adv_train` rows by the study's plain
adversarially trained model whose training eps equals the attack eps, most PGD steps first.
Paper rows without such a model are left out of the comparison, never filled in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pandas as pd

from .errors import PipelineError
from .study import PAPER_DIR, PAPER_EPS, PAPER_STAND_INS, paper_csv, paper_dataset, paper_tables_for  # noqa: F401 - the plan knows the files



@dataclass(frozen=True)
class PaperTable:
    name: str
    file: str
    title: str
    #: Columns that identify a paper row (shown in the comparison table, in this order;
    #: in_tableN = the row is also in the paper's short Table N).
    key: tuple[str, ...]
    #: Paper column -> column of our row files holding the same quantity.
    metrics: dict[str, str]
    #: Dataset every row belongs to; None: the CSV has a `dataset` column.
    dataset: str | None
    #: Per paper defense, metrics measured otherwise in the paper: paper column -> our column.
    #: (Table 5's Madry row, copied from Madry et al., used an x-ent black-box PGD set.)
    row_metrics: dict[str, dict[str, str]] | None = None


def _same(names: list[str]) -> dict[str, str]:
    return {name: name for name in names}


PAPER_TABLES: dict[str, PaperTable] = {
    "table1": PaperTable(
        "table1",
        "table1.csv",
        "Table 1: FGSM accuracy vs the accuracy Eq. 4 predicts",
        ("training", "epsilon"),
        {"fgsm_xent": "whitebox_fgsm_xent", "fgsm_cw": "whitebox_fgsm_cw", "predicted_eq4": "predicted_eq4"},
        None,
    ),
    "table5": PaperTable(
        "table5",
        "mnist_table5.csv",
        "Table 5 (MNIST; Table 2 is a subset)",
        ("row", "defense", "alpha", "beta", "sigma", "k", "in_table2"),
        _same(["train", "test", "whitebox_pgd40_xent", "whitebox_pgd40_cw", "blackbox_fgsm_cw", "blackbox_pgd40_cw"]),
        "mnist",
        {"madry_adv_train": {"blackbox_pgd40_cw": "blackbox_pgd40_xent"}},
    ),
    "table6": PaperTable(
        "table6",
        "cifar10_table6.csv",
        "Table 6 (CIFAR-10 white-box; Table 3 is a subset)",
        ("row", "defense", "alpha", "beta", "sigma_255", "k", "in_table3"),
        _same(["train", "test", "whitebox_pgd20_xent", "whitebox_pgd20_cw", "whitebox_fgsm_xent", "whitebox_fgsm_cw"]),
        "cifar10",
    ),
    "table7": PaperTable(
        "table7",
        "cifar10_table7.csv",
        "Table 7 (CIFAR-10 black-box; Table 4 is a subset)",
        ("row", "defense", "alpha", "beta", "sigma_255", "k", "in_table4"),
        _same(
            [
                "blackbox_pgd7_xent",
                "blackbox_pgd7_cw",
                "blackbox_pgd7_rand_xent",
                "blackbox_pgd7_rand_cw",
                "blackbox_fgsm_xent",
                "blackbox_fgsm_cw",
            ]
        ),
        "cifar10",
    ),
}


def paper_path(name: str) -> Path:
    return paper_csv(name)


def tables_for(dataset: str, eps01: float) -> list[str]:
    """Paper tables a study can be compared with (see `study.paper_tables_for`)."""
    return paper_tables_for(dataset, eps01)


def parse_eps(text: object) -> float:
    """'0.3' or '8/255' -> a float in [0, 1] pixel units."""
    try:
        return float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise PipelineError(f"paper table: epsilon {text!r} is not a number or fraction") from None


def load(name: str, dataset: str, path: str | Path | None = None) -> pd.DataFrame:
    """The paper rows of table `name` that belong to `dataset`, in the paper's order."""
    table = PAPER_TABLES[name]
    path = Path(path) if path else paper_path(name)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: paper table not found") from None
    missing = [c for c in (*table.key, *table.metrics) if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: not the paper's {name} (missing columns {missing})")
    if table.dataset is None:
        frame = frame[frame["dataset"] == paper_dataset(dataset)]
    return frame.reset_index(drop=True)


def _close(a: object, b: object) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)  # type: ignore[arg-type]


def _param(value: object) -> float:
    """A paper parameter; a blank cell means 0 (the paper leaves unused ones empty)."""
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)  # type: ignore[arg-type]


def _plain(rows: pd.DataFrame) -> pd.Series:
    return (rows["alpha"] == 0) & (rows["beta"] == 0) & (rows["sigma"] == 0)


def _natural(rows: pd.DataFrame) -> str | None:
    candidates = rows[(rows["kind"] == "natural")]
    if candidates.empty:
        return None
    return str(candidates.sort_values("k", ascending=False, kind="stable").iloc[0]["model"])


def _adversarial(rows: pd.DataFrame, eps01: float, paper_k: float | None, source: str | None = None) -> str | None:
    """The study's strongest plain PGD-trained model at the attack eps (the Madry baseline).

    A model other than the black-box source comes first: the source's black-box numbers are
    white-box (the paper's black-box Madry numbers are transfers between two models).
    """
    adv = rows[(rows["kind"] == "adversarial") & _plain(rows)]
    if "defense" in adv.columns:  # PGD training only, not FGSM-RS / N-FGSM (study.defense_label; every row file has it)
        adv = adv[adv["defense"].astype(str).str.startswith("PGD-")]
    adv = adv[[_close(e / u, eps01) for e, u in zip(adv["adv_eps"], adv["pixel_units"])]]
    if adv.empty:
        return None
    same_k = (adv["k"] == paper_k) if paper_k is not None else False
    ranked = adv.assign(_same_k=same_k, _target=adv["model"].astype(str) != str(source))
    ranked = ranked.sort_values(["adv_steps", "_target", "_same_k", "k"], ascending=False, kind="stable")
    return str(ranked.iloc[0]["model"])


def _regularized(rows: pd.DataFrame, alpha: float, beta: float, sigma01: float, k: float | None) -> str | None:
    """The model with the paper row's (alpha, beta, sigma) and k; any k when `k` is None (largest k first)."""
    cand = rows[rows["kind"] != "adversarial"]
    if k is None:
        cand = cand.sort_values("k", ascending=False, kind="stable")
    hits = [
        str(r.model)
        for r in cand.itertuples()
        if _close(r.alpha, alpha) and _close(r.beta, beta) and _close(r.sigma / r.pixel_units, sigma01) and (k is None or _close(r.k, k))
    ]
    return hits[0] if hits else None


def match(
    name: str, paper_rows: pd.DataFrame, rows: pd.DataFrame, eps01: float, source: str | None = None, match_k: bool = True
) -> list[str | None]:
    """For each paper row, the model id of the study that reproduces it, or None.

    `rows` are the study's row files (columns model, kind, alpha, beta, sigma, k, adv_steps,
    adv_eps, pixel_units). Paper rows with identical parameters map to the same model. With
    `match_k` False (a stand-in dataset such as mnist5k, trained for far fewer iterations), a
    regularized row matches the model of its (alpha, beta, sigma) whatever its k.
    """
    if rows.empty:
        return [None] * len(paper_rows)
    out: list[str | None] = []
    for prow in paper_rows.to_dict("records"):
        if name == "table1":
            if not _close(parse_eps(prow["epsilon"]), eps01):
                out.append(None)
            elif prow["training"] == "natural":
                out.append(_natural(rows))
            else:
                out.append(_adversarial(rows, eps01, None, source))
        elif prow["defense"] == "madry_adv_train":
            out.append(_adversarial(rows, eps01, _param(prow["k"]), source))
        else:
            sigma01 = _param(prow["sigma"]) if "sigma" in prow else _param(prow["sigma_255"]) / 255
            out.append(_regularized(rows, _param(prow["alpha"]), _param(prow["beta"]), sigma01, _param(prow["k"]) if match_k else None))
    return out
