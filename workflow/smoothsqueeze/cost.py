"""Cost accounting: compute seconds per model from Snakemake `benchmark:` files, and what
regularized training costs against PGD adversarial training on the same machine.

The paper's central claim is cost: regularizers train at the price of natural training, PGD-k
adversarial training at roughly (k + 1)x. This table measures it from the jobs that ran.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from .artifacts import atomic_path, read_json
from .errors import PipelineError
from .render import Column, latex_escape, to_csv, to_html, to_latex
from .study import coarse_kind


def read_benchmark(path: str | Path) -> dict[str, float]:
    """First row of a Snakemake benchmark TSV: wall seconds `s`, `max_rss` (MB), `cpu_time`."""
    try:
        frame = pd.read_csv(path, sep="\t")
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise PipelineError(f"{path}: unreadable benchmark file ({type(err).__name__})") from None
    row = frame.iloc[0]
    return {"s": float(row["s"]), "max_rss_mb": float(row.get("max_rss", float("nan"))), "cpu_time": float(row.get("cpu_time", float("nan")))}


def kind_of(entry: dict[str, Any]) -> str:
    """natural | regularized | adversarial (PGD-n): the plan's coarse kind, with the attack steps."""
    coarse = coarse_kind(entry)
    return f"{coarse} (PGD-{entry['adversarial']['steps']})" if coarse == "adversarial" else coarse


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
                "kind": kind_of(settings["config_entry"]),
                "k": settings["k"],
                "train_job_s": round(train["s"], 2),
                "train_loop_s_per_1k_iter": round(1000 * loop_wall / settings["k"], 3),
                "train_loop_cpu_s_per_1k_iter": round(1000 * loop_cpu / settings["k"], 3),
                "evaluate_job_s": round(evaluate["s"], 2),
                # the job's own peak (metrics.json): a job the fork server ran is not what its benchmark file measured
                "train_max_rss_mb": round(metrics.get("max_rss_mb") or train["max_rss_mb"], 1),
            }
        )
    frame = pd.DataFrame(rows)
    # Ratios use CPU time: on a shared machine wall time also counts other jobs' load.
    regularized = [r["train_loop_cpu_s_per_1k_iter"] for r in rows if r["kind"] in ("regularized", "natural")]
    base = statistics.median(regularized) if regularized else float("nan")
    frame["cost_vs_regularized"] = (frame["train_loop_cpu_s_per_1k_iter"] / base).round(2)
    return frame


COLUMNS = [
    Column("model", "model", "Model", fmt="text"),
    Column("kind", "training", "Training", fmt="text"),
    Column("k", "k", "$k$", fmt="raw"),
    Column("train_job_s", "train job (s)", r"\shortstack{Train\\job (s)}", fmt="raw"),
    Column("train_loop_s_per_1k_iter", "s / 1k iter.", r"\shortstack{s /\\1k it.}", fmt="raw"),
    Column("train_loop_cpu_s_per_1k_iter", "CPU s / 1k iter.", r"\shortstack{CPU s\\/ 1k it.}", fmt="raw"),
    Column("evaluate_job_s", "eval. job (s)", r"\shortstack{Eval.\\job (s)}", fmt="raw"),
    Column("train_max_rss_mb", "max RSS (MB)", r"\shortstack{Max RSS\\(MB)}", fmt="raw"),
    Column("cost_vs_regularized", "cost vs. regularized", r"\shortstack{Cost vs.\\reg.}", fmt="raw"),
]


def write_tables(frame: pd.DataFrame, study: str, csv_path: str | Path, tex_path: str | Path, html_path: str | Path | None = None) -> None:
    """reports/<study>/tables/cost.{csv,tex[,html]}: the CSV holds the values as computed."""
    title = "Measured cost of every model"
    caption = (
        f"Study {study}: per-iteration training CPU time relative to the median regularized/natural model "
        "(ratios use CPU time: on a shared machine wall time also counts other jobs' load)."
    )
    tex_caption = f"Measured cost of every model of the {latex_escape(study)} study (per-iteration training CPU time relative to the median regularized/natural model)."
    texts = [(csv_path, to_csv(COLUMNS, frame)), (tex_path, to_latex(COLUMNS, frame, tex_caption, f"tab:{study}-cost", resize=True))]
    if html_path is not None:
        texts.append((html_path, to_html(COLUMNS, frame, title, caption)))
    for path, text in texts:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
