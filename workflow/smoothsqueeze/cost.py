"""Cost accounting: compute seconds per model from Snakemake `benchmark:` files, and what
regularized training costs against PGD adversarial training on the same machine.

The paper's central claim is cost: regularizers train at the price of natural training, PGD-k
adversarial training at roughly (k + 1)x. This table measures it from the jobs that ran, and counts
it exactly: forward-backward passes of a training batch (1 per iteration natural or regularised,
k + 1 for PGD-k, 2 for FGSM-RS and N-FGSM, plus the robust checks' passes), each set beside the
natural model of the same study and k (passes and measured seconds), where the study has one.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from .artifacts import atomic_path, read_json
from .errors import PipelineError
from .render import Column, latex_escape, tex_label, to_csv, to_html, to_latex, unique_labels
from .study import adversarial_name, coarse_kind, legend_label, passes_per_iteration


def read_benchmark(path: str | Path) -> dict[str, float]:
    """First row of a Snakemake benchmark TSV: wall seconds `s`, `max_rss` (MB), `cpu_time`."""
    try:
        frame = pd.read_csv(path, sep="\t")
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise PipelineError(f"{path}: unreadable benchmark file ({type(err).__name__})") from None
    row = frame.iloc[0]
    return {"s": float(row["s"]), "max_rss_mb": float(row.get("max_rss", float("nan"))), "cpu_time": float(row.get("cpu_time", float("nan")))}


def kind_of(entry: dict[str, Any]) -> str:
    """natural | regularized | adversarial (PGD-n | FGSM-RS | N-FGSM): the plan's coarse kind, with the training attack."""
    coarse = coarse_kind(entry)
    return f"{coarse} ({adversarial_name(entry['adversarial'])})" if coarse == "adversarial" else coarse


def passes(settings: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """Forward-backward passes of one model: per iteration, in training, and in all (training + robust checks).

    From metrics.json where training wrote them; a model trained before it did is counted from its
    settings (no robust check then existed).
    """
    ppi = metrics.get("passes_per_iteration", passes_per_iteration(settings.get("adversarial")))
    training = metrics.get("training_passes", settings["k"] * ppi)
    return {"passes_per_iteration": ppi, "training_passes": training, "check_passes": metrics.get("check_passes", 0),
            "total_passes": training + metrics.get("check_passes", 0)}


def cost_table(models: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per model: job seconds, training seconds per 1000 iterations, ratio to regularized."""
    rows = []
    for m in models:
        settings = read_json(m["settings"])["settings"]
        metrics = read_json(m["metrics"])
        train = read_benchmark(m["train_benchmark"])
        evaluate = read_benchmark(m["evaluate_benchmark"])
        loop_wall = metrics.get("wall_seconds", train["s"])
        loop_cpu = metrics.get("cpu_seconds", train["cpu_time"])
        rows.append(
            {
                "model": settings["model_id"],
                "defense": legend_label(settings["config_entry"], settings.get("pixel_units", 1)),
                "_defense_k": legend_label(settings["config_entry"], settings.get("pixel_units", 1), with_k=True),
                "kind": kind_of(settings["config_entry"]),
                "k": settings["k"],
                **passes(settings, metrics),
                "_natural": coarse_kind(settings["config_entry"]) == "natural",
                "_loop_wall": loop_wall,
                "_loop_cpu": loop_cpu,
                "train_job_s": round(train["s"], 2),
                "train_loop_s_per_1k_iter": round(1000 * loop_wall / settings["k"], 3),
                "train_loop_cpu_s_per_1k_iter": round(1000 * loop_cpu / settings["k"], 3),
                "evaluate_job_s": round(evaluate["s"], 2),
                # the job's own peak (metrics.json): a job the fork server ran is not what its benchmark file measured
                "train_max_rss_mb": round(metrics.get("max_rss_mb") or train["max_rss_mb"], 1),
            }
        )
    frame = pd.DataFrame(rows)
    frame["defense"] = unique_labels(list(frame["defense"]), list(frame.pop("_defense_k"))) if rows else []
    # Ratios use CPU time: on a shared machine wall time also counts other jobs' load.
    regularized = [r["train_loop_cpu_s_per_1k_iter"] for r in rows if r["kind"] in ("regularized", "natural")]
    base = statistics.median(regularized) if regularized else float("nan")
    frame["cost_vs_regularized"] = (frame["train_loop_cpu_s_per_1k_iter"] / base).round(2)
    for column, measure in (("passes_vs_natural", "total_passes"), ("cpu_s_vs_natural", "_loop_cpu"), ("wall_s_vs_natural", "_loop_wall")):
        frame[column] = [_vs_natural(frame, row, measure) for _, row in frame.iterrows()]
    return frame.drop(columns=["_natural", "_loop_wall", "_loop_cpu"])


def _vs_natural(frame: pd.DataFrame, row: pd.Series, measure: str) -> float:
    """`measure` of a row over that of the natural model of the same k (the median of several, e.g. seeds); NaN without one."""
    natural = frame[frame["_natural"] & (frame["k"] == row["k"])][measure]
    if natural.empty or not statistics.median(natural) > 0:
        return float("nan")
    return round(float(row[measure]) / statistics.median(natural), 2)


COLUMNS = [
    Column("model", "model", fmt="text", in_tex=False),
    Column("defense", "defense", "Defense", fmt="text"),
    Column("kind", "training", "Training", fmt="text", in_tex=False),
    Column("k", "k", "$k$", fmt="raw", in_tex=False),
    Column("train_job_s", "train job (s)", r"\shortstack{Train\\job (s)}", fmt="raw"),
    Column("train_loop_s_per_1k_iter", "s / 1k iter.", r"\shortstack{s /\\1k it.}", fmt="raw", in_tex=False),
    Column("train_loop_cpu_s_per_1k_iter", "CPU s / 1k iter.", r"\shortstack{CPU s\\/ 1k it.}", fmt="raw"),
    Column("evaluate_job_s", "eval. job (s)", r"\shortstack{Eval.\\job (s)}", fmt="raw", in_tex=False),
    Column("train_max_rss_mb", "max RSS (MB)", r"\shortstack{Max RSS\\(MB)}", fmt="raw", in_tex=False),
    Column("cost_vs_regularized", "cost vs. regularized", r"\shortstack{Cost vs.\\reg.}", fmt="raw"),
    Column("passes_per_iteration", "passes / iter.", r"\shortstack{Passes\\/ it.}", fmt="raw"),
    Column("training_passes", "training passes", fmt="raw", in_tex=False),
    Column("check_passes", "robust-check passes", fmt="raw", in_tex=False),
    Column("total_passes", "passes (training + checks)", r"\shortstack{Passes\\(all)}", fmt="raw", in_tex=False),
    Column("passes_vs_natural", "passes vs. natural, same k", r"\shortstack{Passes vs.\\natural}", fmt="raw"),
    Column("cpu_s_vs_natural", "CPU s vs. natural, same k", r"\shortstack{CPU s vs.\\natural}", fmt="raw"),
    Column("wall_s_vs_natural", "wall s vs. natural, same k", r"\shortstack{Wall s vs.\\natural}", fmt="raw", in_tex=False),
]


def _raw_defense(key: str, text: str) -> str:
    """A text cell in LaTeX: the defense name is LaTeX already (`tex_label`)."""
    return text if key == "defense" else latex_escape(text)


def write_tables(frame: pd.DataFrame, study: str, csv_path: str | Path, tex_path: str | Path, html_path: str | Path | None = None) -> None:
    """reports/<study>/tables/cost.{csv,tex[,html]}: the CSV holds the values as computed; the LaTeX the headline columns."""
    title = "Measured cost of every model"
    caption = (
        f"Study {study}: per-iteration training CPU time relative to the median regularized/natural model "
        "(ratios use CPU time: on a shared machine wall time also counts other jobs' load); forward-backward passes of a "
        "training batch (per iteration: 1 natural or regularised, k + 1 for PGD-k, 2 for FGSM-RS and N-FGSM; in all: "
        "training plus the robust checks), and passes and the training loop's CPU and wall seconds relative to the natural "
        "model of the same k ('--' where the study has none)."
    )
    tex_caption = (f"Measured cost of every model of the {latex_escape(study)} study. Training CPU seconds per 1000 iterations "
                   "relative to the median regularized or natural model, and forward-backward passes relative to natural training.")
    tex_frame = frame.assign(defense=[tex_label(d) for d in frame["defense"]]) if len(frame) else frame
    texts = [(csv_path, to_csv(COLUMNS, frame)),
             (tex_path, to_latex(COLUMNS, tex_frame, tex_caption, f"tab:{study}-cost", words=_raw_defense, note=caption))]
    if html_path is not None:
        texts.append((html_path, to_html(COLUMNS, frame, title, caption)))
    for path, text in texts:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
