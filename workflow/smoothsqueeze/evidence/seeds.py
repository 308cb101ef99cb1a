"""Rows of several seeds of one grid entry, aggregated into one row: mean, spread and interval.

A table row stands for a grid entry (`group`); its seeds are its models. For every accuracy
column `c` the aggregated row holds `c` (mean over seeds), `c_sd` (sample standard deviation over
seeds, 0 for one seed), `c_lo` / `c_hi` (the 95% Wilson interval of the images pooled over seeds:
each seed's accuracy on its `n` images), and `seeds`, `models`. The columns that name the entry
are taken from its first seed.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd

from ..errors import PipelineError
from . import intervals as iv

STAT_SUFFIXES = ("_sd", "_lo", "_hi")


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def group_key(row: Mapping[str, Any]) -> str:
    """The grid entry a row belongs to: its `group`, else (rows written before seeds) its model id."""
    group = row.get("group")
    return str(group) if _present(group) and str(group) else str(row["model"])


def aggregate_rows(
    rows: pd.DataFrame,
    metrics: Sequence[str],
    n_of: Callable[[str, Mapping[str, Any]], int | None],
    merge_notes: Callable[[list[Any]], str] | None = None,
    level: float = iv.LEVEL,
) -> pd.DataFrame:
    """One row per group, in order of first appearance (see the module docstring).

    `n_of(metric, row)`: how many images that row's accuracy was measured on (None: no interval).
    `merge_notes`: the group's `note` from its seeds' notes (default: the distinct notes joined).
    """
    if rows.empty:
        return rows.assign(seeds=pd.Series(dtype=int), models=pd.Series(dtype=str))
    records = rows.to_dict("records")
    order: list[str] = []
    by_group: dict[str, list[dict[str, Any]]] = {}
    for row in records:
        key = group_key(row)
        if key not in by_group:
            order.append(key)
            by_group[key] = []
        by_group[key].append(row)
    out = []
    for key in order:
        members = by_group[key]
        first = dict(members[0])
        first["model"] = key
        first["models"] = " ".join(str(m["model"]) for m in members)
        first["seeds"] = len(members)
        for metric in metrics:
            if metric not in rows.columns:
                continue
            values = [m.get(metric) for m in members]
            present = [(float(v), m) for v, m in zip(values, members) if _present(v)]
            for value, member in present:
                if not 0.0 <= value <= 100.0:
                    raise PipelineError(f"row of {member['model']}: {metric} = {value:g} is not an accuracy in [0, 100]; rerun its evaluation")
            summary = iv.over_seeds(v for v, _m in present)
            ns = [n_of(metric, m) for _v, m in present]
            if present and all(n for n in ns):
                lo, hi = iv.pooled_wilson([v for v, _m in present], ns, level)  # type: ignore[arg-type]
            else:
                lo = hi = math.nan
            first[metric] = summary.mean if summary.n else math.nan
            first[f"{metric}_sd"] = summary.sd if summary.n else math.nan
            first[f"{metric}_lo"], first[f"{metric}_hi"] = lo, hi
        if "note" in rows.columns:
            notes = [m.get("note") for m in members]
            first["note"] = merge_notes(notes) if merge_notes else "; ".join(dict.fromkeys(str(n) for n in notes if _present(n) and str(n)))
        out.append(first)
    return pd.DataFrame(out)


def stat_columns(metrics: Iterable[str]) -> list[str]:
    """The columns `aggregate_rows` adds next to each metric."""
    return [f"{m}{s}" for m in metrics for s in STAT_SUFFIXES]
