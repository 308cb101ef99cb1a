"""Cost accounting: compute seconds per model from Snakemake `benchmark:` files, and what
regularized training costs against PGD adversarial training on the same machine.

The paper's central claim is cost: regularizers train at the price of natural training, PGD-k
adversarial training at roughly (k + 1)x. This table measures it from the jobs that ran.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from .study import coarse_kind
from .artifacts import atomic_path, read_json
from .cli_support import exit_status
from .errors import PipelineError


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
                "train_max_rss_mb": round(train["max_rss_mb"], 1),
            }
        )
    frame = pd.DataFrame(rows)
    # Ratios use CPU time: on a shared machine wall time also counts other jobs' load.
    regularized = [r["train_loop_cpu_s_per_1k_iter"] for r in rows if r["kind"] in ("regularized", "natural")]
    base = statistics.median(regularized) if regularized else float("nan")
    frame["cost_vs_regularized"] = (frame["train_loop_cpu_s_per_1k_iter"] / base).round(2)
    return frame


def write_tables(frame: pd.DataFrame, csv_path: str | Path, tex_path: str | Path, study: str) -> None:
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    header = {
        "model": "Model", "kind": "Training", "k": "$k$", "train_job_s": "Train job (s)",
        "train_loop_s_per_1k_iter": "s / 1k iter",
        "train_loop_cpu_s_per_1k_iter": "CPU s / 1k iter", "evaluate_job_s": "Eval job (s)",
        "train_max_rss_mb": "Max RSS (MB)", "cost_vs_regularized": "Cost vs. reg.",
    }
    body = frame.rename(columns=header).to_latex(index=False, escape=True, float_format="%.2f")
    caption = f"Measured cost of every model of the {study.replace('_', chr(92) + '_')} study (per-iteration training CPU time relative to the median regularized/natural model)."
    with atomic_path(tex_path) as tmp:
        tmp.write_text("\\begin{table}[t]\n\\centering\n\\caption{" + caption + "}\n" + body + "\\end{table}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smoothsqueeze.cost", description=__doc__)
    parser.add_argument("--study", required=True)
    parser.add_argument("--model", nargs=4, action="append", default=[], metavar=("SETTINGS", "METRICS", "TRAIN_BENCH", "EVAL_BENCH"))
    parser.add_argument("--csv", required=True)
    parser.add_argument("--tex", required=True)
    args = parser.parse_args(argv)
    def action() -> None:
        models = [dict(zip(("settings", "metrics", "train_benchmark", "evaluate_benchmark"), m)) for m in args.model]
        frame = cost_table(models)
        write_tables(frame, args.csv, args.tex, args.study)
        print(frame.to_string(index=False))
    return exit_status(action)


if __name__ == "__main__":
    sys.exit(main())
