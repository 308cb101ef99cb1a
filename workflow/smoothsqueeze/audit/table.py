"""The per-study audit table: claimed vs audited robustness on the same images, one row per grid entry.

Each audit record (one model = one seed) compares, on its audited images, the claim (the
evaluation record's PGD attacks) with the per-image strongest attack (the audit's attacks and the
record's). A row aggregates a grid entry's seeds: accuracies as mean ± standard deviation over
seeds with the 95% Wilson interval of the pooled images; the drop (claim - strongest) with the
paired interval on the pooled images; each flag decided across seeds (`flags.combine_seeds`:
seeds on both sides of the threshold give "within noise", else the pooled images decide).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import flags as af
from ..artifacts import atomic_path
from ..errors import PipelineError
from ..evidence import intervals as iv
from ..evidence.per_image import record_masks
from ..evidence.seeds import group_key
from ..render import Column, latex_escape, tex_label, to_csv, to_html, to_latex, unique_labels
from ..study import defense_label, legend_label

#: Accuracy keys of the audit record shown per row (mean over seeds, interval over pooled images).
_AUDITED = ("clean", "autoattack", "strongest")
_PER_ATTACK = (("apgd_ce", "APGD-CE"), ("apgd_t", "APGD-T"), ("fab_t", "FAB-T"), ("square", "Square"),
               ("pgd_xent", "PGD x-ent (restarts)"), ("pgd_cw", "PGD CW (restarts)"), ("large_eps", "Large eps"))
#: Short verdict marks for the flags cell: raised, within noise.
_MARKS = {iv.RAISED: "", iv.WITHIN_NOISE: "?"}


def _table_columns() -> list[Column]:
    claimed, audited, per = "Claimed (paper's attacks)", "Audited (same images)", "Per attack (audit)"
    return [
        Column("model", "Model", fmt="text", in_tex=False),
        Column("defense", "Defense", fmt="text", in_tex=False),
        Column("name", "Defense (parameters)", "Defense", fmt="text", in_html=False),
        Column("seeds", "Seeds", fmt="num", in_tex=False),
        Column("n", "n", "$n$", fmt="num", in_tex=False),  # LaTeX: in the caption
        Column("clean", "Clean", fmt="stat"),
        Column("claimed_pgd_xent", "White-box PGD x-ent", r"\shortstack{PGD\\x-ent}", group=claimed, fmt="stat"),
        Column("claimed_pgd_cw", "White-box PGD CW", r"\shortstack{PGD\\CW}", group=claimed, fmt="stat"),
        Column("autoattack", "AutoAttack", group=audited, fmt="stat"),
        Column("strongest", "Strongest", group=audited, fmt="stat"),
        Column("drop", "Drop", group=audited, fmt="stat"),
        *(Column(k, label, group=per, in_tex=False, in_html=False) for k, label in _PER_ATTACK),
        *(Column(f"flag_{name}", af.FLAG_LABELS[name], group="Flags (across seeds)", fmt="text", in_tex=False, in_html=False) for name in af.FLAG_NAMES),
        Column("flags", "Flags", fmt="text", in_tex=False),  # LaTeX: the masking verdict; the letters in CSV/HTML
        Column("masking_suspected", "Masking suspected", tex=r"\shortstack{Masking\\suspected}", fmt="text"),
    ]


def _names(rec: Mapping[str, Any]) -> tuple[str, str]:
    """(name by parameters, the same with k) of an audited model; its id where the record has no grid entry."""
    if not rec.get("entry"):
        return (rec.get("model_id", "?"),) * 2
    units = rec.get("settings", {}).get("pixel_units", 1)
    return legend_label(rec["entry"], units), legend_label(rec["entry"], units, with_k=True)


def _stat(row: dict[str, Any], key: str, values: list[float | None], ns: list[int]) -> None:
    summary = iv.over_seeds(values)
    row[key], row[f"{key}_sd"] = (summary.mean, summary.sd) if summary.n else (math.nan, math.nan)
    present = [(v, n) for v, n in zip(values, ns) if v is not None and math.isfinite(v)]
    row[f"{key}_lo"], row[f"{key}_hi"] = iv.pooled_wilson([v for v, _ in present], [n for _, n in present]) if present else (math.nan, math.nan)


def _claim(rec: Mapping[str, Any]) -> float | None:
    claimed = rec.get("claimed", {})
    values = [v for v in (claimed.get("pgd_xent"), claimed.get("pgd_cw")) if v is not None]
    return min(values) if values else None


def group_row(audits: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One row from the audit records of one grid entry's seeds."""
    first = audits[0]
    ns = [int(rec["n"]) for rec in audits]
    row: dict[str, Any] = {
        "model": group_key({"group": first.get("group"), "model": first.get("model_id", "?")}),
        "defense": defense_label(first["entry"]) if first.get("entry") else first.get("model_id", "?"),
        "name": _names(first)[0],
        "_name_k": _names(first)[1],
        "seeds": len(audits),
        "n": ns[0] if len(set(ns)) == 1 else "/".join(map(str, ns)),
    }
    for key in _AUDITED:
        _stat(row, key, [rec["accuracy"].get(key) for rec in audits], ns)
    for loss in ("pgd_xent", "pgd_cw"):
        _stat(row, f"claimed_{loss}", [rec.get("claimed", {}).get(loss) for rec in audits], ns)
    drops = [rec.get("comparisons", {}).get("claim_vs_strongest") for rec in audits]
    summary = iv.over_seeds(d["diff_pp"] for d in drops if d)
    row["drop"], row["drop_sd"] = (summary.mean, summary.sd) if summary.n else (math.nan, math.nan)
    for key, _label in _PER_ATTACK:
        row[key] = iv.over_seeds(rec["accuracy"].get(key) for rec in audits).mean
    pooled, pooled_drop = _pooled(audits)
    row["drop_lo"], row["drop_hi"] = (pooled_drop.lo_pp, pooled_drop.hi_pp) if pooled_drop else (math.nan, math.nan)
    verdicts = {
        name: af.combine_seeds([af.verdict_of(rec["flags"][name]) for rec in audits], pooled[name].verdict if pooled else iv.NOT_CHECKED)
        if len(audits) > 1 else af.verdict_of(first["flags"][name])
        for name in af.FLAG_NAMES
    }
    for name, verdict in verdicts.items():
        row[f"flag_{name}"] = verdict
    collapsed = sum(bool(rec.get("claimed", {}).get("training_collapsed")) for rec in audits)
    marks = (["training collapsed" + (f" ({collapsed} of {len(audits)} seeds)" if collapsed < len(audits) else "")] if collapsed else [])
    overfitted = sum(bool(rec.get("claimed", {}).get("training_overfitted")) for rec in audits)
    marks += (["catastrophic overfitting" + (f" ({overfitted} of {len(audits)} seeds)" if overfitted < len(audits) else "")] if overfitted else [])
    marks += [af.FLAG_LABELS[name].split(":")[0] + _MARKS[v] for name, v in verdicts.items() if v in _MARKS]
    row["flags"] = ", ".join(marks) or "none"
    row["masking_suspected"] = "yes" if iv.RAISED in verdicts.values() else "within noise" if iv.WITHIN_NOISE in verdicts.values() else "no"
    return row


def _pooled(audits: list[Mapping[str, Any]]) -> tuple[dict[str, af.Flag] | None, iv.Paired | None]:
    """The flags and the claim-vs-strongest comparison on the seeds' audited images pooled (each
    seed's model on the same images: one image per seed and image), or (None, None) without per-image results."""
    try:
        per_seed = [record_masks(rec, f"audit of {rec.get('model_id', '?')}")[1] for rec in audits]
    except PipelineError:
        return None, None
    keys = set.intersection(*(set(m) for m in per_seed))
    masks = {key: np.concatenate([m[key] for m in per_seed]) for key in keys}
    first = audits[0]
    flags = af.flags_from_masks(masks, first["settings"], first.get("claim_attacks", {}), (first.get("large_eps") or {}).get("ceiling"))
    claims = {k: masks[f"record_whitebox_{name}"] for k, names in first.get("claim_attacks", {}).items() for name in names
              if f"record_whitebox_{name}" in masks}
    drop = None
    if claims and "strongest" in masks:
        claim = min(claims.values(), key=lambda m: float(np.mean(m)))
        drop = iv.paired(claim, masks["strongest"], first["settings"]["level"])
    return flags, drop


def table_rows(audits: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per grid entry (its seeds' audit records together), in the order of the records."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for rec in audits:
        groups.setdefault(group_key({"group": rec.get("group"), "model": rec.get("model_id", "?")}), []).append(rec)
    rows = [group_row(recs) for recs in groups.values()]
    for row, name in zip(rows, unique_labels([r["name"] for r in rows], [r.pop("_name_k") for r in rows])):
        row["name"] = name
    return rows


def table_caption(audits: list[Mapping[str, Any]]) -> str:
    """Plain-text settings of the audit (from the first record; the rule gives all records the same)."""
    if not audits:
        return "No models audited."
    return f"{headline(audits)} {details(audits)}"


def headline(audits: list[Mapping[str, Any]], tex: bool = False) -> str:
    """The caption's second sentence: study, threat model, images, unit."""
    if not audits:
        return "No models audited."
    rec = audits[0]
    s, units = rec["settings"], rec["settings"].get("pixel_units", 1)
    eps = f"{s['eps01'] * units:g}" + (f"/{units:g}" if units != 1 else "")
    if tex:
        return (rf"Study {latex_escape(str(rec.get('study', '?')))}, $L_\infty$ attacks at $\epsilon = {eps}$ on the first {rec['n']} test "
                r"images; accuracies in \%, mean over seeds.")
    return f"Study {rec.get('study', '?')}, L∞ attacks at ε = {eps} on the first {rec['n']} test images; accuracies in %, mean ± standard deviation over seeds."


def details(audits: list[Mapping[str, Any]]) -> str:
    """What each column means and how the flags are decided (the HTML caption; the note after the LaTeX)."""
    rec = audits[0]
    s = rec["settings"]
    aa, pg = s["autoattack"], s["pgd"]
    flags = "; ".join(f"{af.FLAG_LABELS[name]}" for name in af.FLAG_NAMES)
    return (
        f"Claimed: the evaluation record's white-box PGD (x-ent, CW) on those images. AutoAttack ({', '.join(aa['attacks'])}; "
        f"APGD {aa['apgd_iter']} it., {aa['apgd_t_targets']} targets; FAB-T {aa['fab_iter']} it., {aa['fab_targets']} targets; Square "
        f"{aa['square_queries']} queries). Strongest: per image, the worst case over every audit attack (AutoAttack, PGD {pg['steps']} "
        f"steps x {pg['restarts']} restarts on {', '.join(pg['losses'])}, PGD sweep {s['sweep_steps']}) and every attack of the "
        f"evaluation record (white-box and black-box). Drop = lower claim - strongest, image by image (interval: the seeds' images "
        f"pooled). Flags ({flags}) decided against their 95% interval (Wilson; paired on the same images) per seed and on the seeds' "
        f"images pooled: a letter = raised; '?' = within noise (above the threshold but not beyond its interval, or seeds on both "
        f"sides of it); differences of at most {s.get('min_effect_pp', 0):g} points count for no flag (a, b, d). The CSV has every "
        f"attack's accuracy and each flag's verdict; the HTML the flags raised."
    )


def _raw_name(key: str, text: str) -> str:
    """A text cell in LaTeX: the defense name is LaTeX already (`tex_label`), the rest is escaped."""
    return text if key == "name" else latex_escape(text)


def write_table(audits: list[Mapping[str, Any]], csv_path: str | Path, tex_path: str | Path, html_path: str | Path) -> None:
    """reports/<study>/tables/audit.{csv,tex,html}: every column in CSV/HTML, the headline ones in LaTeX (booktabs)."""
    import pandas as pd

    columns = _table_columns()
    rows = table_rows(audits)
    stat_keys = [f"{c.key}{p}" for c in columns if c.fmt == "stat" for p in ("_sd", "_lo", "_hi")]
    frame = pd.DataFrame(rows, columns=[c.key for c in columns] + stat_keys)
    caption = table_caption(audits)
    study = audits[0].get("study", "study") if audits else "study"
    title = "Gradient-masking audit: claimed vs audited robustness"
    tex_frame = frame.assign(name=[tex_label(n) for n in frame["name"]]) if len(frame) else frame
    texts = (
        to_csv(columns, frame),
        to_latex(columns, tex_frame, f"{latex_escape(title)}. {headline(audits, tex=True)}", f"tab:{study}-audit",
                 words=_raw_name, note=details(audits) if audits else ""),
        to_html(columns, frame, title, caption),
    )
    for path, text in zip((csv_path, tex_path, html_path), texts):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
