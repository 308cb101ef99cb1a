"""The per-study audit table: claimed (evaluation record) vs audited robustness, one row per audit record."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from . import audit_flags as af
from .artifacts import atomic_path
from .render import Column, latex_escape, to_csv, to_html, to_latex



def _table_columns() -> list[Column]:
    claimed, audited, per = "Claimed (paper's attacks)", "Audited", "Per attack (audit)"
    return [
        Column("model", "Model", fmt="text"),
        Column("n", "n", fmt="num"),
        Column("clean", "Clean"),
        Column("claimed_pgd_xent", "PGD x-ent", group=claimed),
        Column("claimed_pgd_cw", "PGD CW", group=claimed),
        Column("autoattack", "AutoAttack", group=audited),
        Column("strongest", "Strongest", group=audited),
        Column("drop", "Drop", group=audited, fmt="diff"),
        Column("strongest_with_record_aggregate", "Strongest incl. record (aggregate min)", group=per, in_tex=False),
        *(Column(k, label, group=per, in_tex=False) for k, label in (
            ("apgd_ce", "APGD-CE"), ("apgd_t", "APGD-T"), ("fab_t", "FAB-T"), ("square", "Square"),
            ("pgd_xent", "PGD x-ent (restarts)"), ("pgd_cw", "PGD CW (restarts)"), ("large_eps", "Large eps"),
        )),
        Column("flags", "Flags", fmt="text"),
        Column("masking_suspected", "Masking suspected", tex="Masking?", fmt="text"),
    ]


def table_rows(audits: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per audit record: claimed robustness (the paper's PGD attacks, from the evaluation
    record) against audited robustness; drop = min(claimed) - strongest, in points."""
    rows = []
    for rec in audits:
        acc, claimed = rec["accuracy"], rec.get("claimed", {})
        claims = [v for v in (claimed.get("pgd_xent"), claimed.get("pgd_cw")) if v is not None]
        raised = [af.FLAG_LABELS[name].split(":")[0] for name in af.FLAG_NAMES if rec["flags"][name]["raised"]]
        rows.append(
            {
                "model": rec.get("model_id", "?"),
                "n": rec["n"],
                "clean": acc["clean"],
                "claimed_pgd_xent": claimed.get("pgd_xent"),
                "claimed_pgd_cw": claimed.get("pgd_cw"),
                "autoattack": acc.get("autoattack"),
                "strongest": acc["strongest"],
                "drop": min(claims) - acc["strongest"] if claims else None,
                "strongest_with_record_aggregate": acc.get("strongest_with_record_aggregate"),
                **{k: acc.get(k) for k in ("apgd_ce", "apgd_t", "fab_t", "square", "pgd_xent", "pgd_cw", "large_eps")},
                "flags": ",".join((["training collapsed"] if claimed.get("training_collapsed") else []) + raised) or "none",
                "masking_suspected": "yes" if rec["masking_suspected"] else "no",
            }
        )
    return rows


def table_caption(audits: list[Mapping[str, Any]]) -> str:
    """Plain-text settings of the audit (from the first record; the rule gives all records the same)."""
    if not audits:
        return "No models audited."
    rec = audits[0]
    s, units = rec["settings"], rec["settings"].get("pixel_units", 1)
    eps = f"{s['eps01'] * units:g}" + (f"/{units:g}" if units != 1 else "")
    aa, pg = s["autoattack"], s["pgd"]
    flags = "; ".join(f"{af.FLAG_LABELS[name]}" for name in af.FLAG_NAMES)
    return (
        f"Study {rec.get('study', '?')}, L-inf eps = {eps}; accuracies in %. Claimed: the evaluation record's white-box PGD "
        f"accuracy (x-ent, CW). AutoAttack ({', '.join(aa['attacks'])}; APGD {aa['apgd_iter']} it., {aa['apgd_t_targets']} targets; "
        f"FAB-T {aa['fab_iter']} it., {aa['fab_targets']} targets; Square {aa['square_queries']} queries): per-example worst case. "
        f"Strongest: per-example worst case over every audit attack (AutoAttack, PGD {pg['steps']} steps x {pg['restarts']} restarts "
        f"on {', '.join(pg['losses'])}, PGD sweep {s['sweep_steps']}). Drop = min(claimed) - strongest. Flags: {flags}."
    )


def _tex_caption(caption: str) -> str:
    """The caption in LaTeX, its notation in math mode."""
    return latex_escape(caption).replace("L-inf eps =", r"$L_\infty$ $\epsilon =$")


def write_table(audits: list[Mapping[str, Any]], csv_path: str | Path, tex_path: str | Path, html_path: str | Path) -> None:
    """reports/<study>/tables/audit.{csv,tex,html}: every column in CSV/HTML, the headline ones in LaTeX (booktabs)."""
    import pandas as pd

    columns = _table_columns()
    frame = pd.DataFrame(table_rows(audits), columns=[c.key for c in columns])
    caption = table_caption(audits)
    study = audits[0].get("study", "study") if audits else "study"
    title = "Gradient-masking audit: claimed vs audited robustness"
    texts = (
        to_csv(columns, frame),
        to_latex(columns, frame, f"{latex_escape(title)}. {_tex_caption(caption)}", f"tab:{study}-audit", resize=True),
        to_html(columns, frame, title, caption),
    )
    for path, text in zip((csv_path, tex_path, html_path), texts):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
