"""Print a study's results as the Markdown table the README quotes, from the pipeline's own artifacts.

    python benchmarks/study_summary.py --study digits            # after `snakemake --cores 2`
    python benchmarks/study_summary.py --study fashion --results /path/to/results
    python benchmarks/study_summary.py --study digits --per-seed # every seed's PGD and AutoAttack accuracy

One row per grid entry (its seeds together): clean accuracy; white-box PGD (x-ent, CW) and FGSM
(x-ent); black-box PGD (CW) from the study's source model; Eq. 4's predicted robust accuracy
(nearest wrong class); AutoAttack and the per-image strongest attack from the audit (on the audited
images); every number the mean ± standard deviation over seeds. Flags: training collapsed, the
black-box source, and the audit's flags decided across seeds (a name = raised in every seed; a
name with '?' = within noise). The machine that built the records (processor, PyTorch's CPU
kernel set, device) is printed under the table. Every number comes from
results/<study>/{records,analysis,audit}/<model>.json, never typed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

from smoothsqueeze.audit import flags as af  # noqa: E402
from smoothsqueeze import config as sscfg  # noqa: E402
from smoothsqueeze import tables  # noqa: E402
from smoothsqueeze.audit.table import table_rows as audit_rows  # noqa: E402
from smoothsqueeze.study import Plan  # noqa: E402

#: Flag names as the README's tables word them.
FLAG_WORDS = {
    "a": "black-box beats white-box", "b": "Square beats gradients", "c": "large eps not broken", "d": "more steps weaker",
    "e": "x-ent gap", "f": "claim overstated",
}
HEADER = ["defense", "seeds", "clean", "PGD x-ent", "PGD CW", "FGSM x-ent", "black-box PGD CW", "Eq. 4 predicted", "AutoAttack",
          "strongest", "flags"]


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _stat(row: dict, key: str | None) -> str:
    if key is None or row.get(key) is None or (isinstance(row.get(key), float) and math.isnan(row[key])):
        return ""
    text = f"{row[key]:.1f}"
    if int(row.get("seeds") or 1) > 1 and row.get(f"{key}_sd") is not None and not math.isnan(row[f"{key}_sd"]):
        text += f" ± {row[f'{key}_sd']:.1f}"
    return text


def _first(row: dict, *names: str) -> str | None:
    return next((n for n in names if n in row and row[n] is not None and not (isinstance(row[n], float) and math.isnan(row[n]))), None)


def _label(entry: dict) -> str:
    text = tables.defense_label(entry)
    params = [f"{sym} {entry[key]:g}" for key, sym in (("alpha", "α"), ("beta", "β"), ("sigma", "σ")) if entry.get(key)]
    return f"{text} ({', '.join(params)})" if params and not entry.get("adversarial") else text


def _flag_words(flags: str) -> list[str]:
    out = []
    for mark in (m.strip() for m in flags.split(",")):
        if not mark or mark == "none":
            continue
        letter, noisy = mark.rstrip("?"), mark.endswith("?")
        word = FLAG_WORDS.get(letter, mark)
        out.append(f"{word} (within noise)" if noisy else word)
    return out


def load(study: str, results: Path, config: dict) -> tuple[Plan, list[dict], list[dict]]:
    """The study's evaluation records (with their analysis summaries) and audit records that exist, in grid order."""
    plan = Plan(config)
    records, audits = [], []
    for model in plan.model_ids(study):
        record = _read(results / study / "records" / f"{model}.json")
        if record is None:
            continue
        records.append({"record": record, "summary": _read(results / study / "analysis" / f"{model}.json")})
        audit = _read(results / study / "audit" / f"{model}.json")
        if audit is not None:
            audits.append(audit)
    return plan, records, audits


def summary_rows(study: str, results: Path, config: dict) -> list[list[str]]:
    import pandas as pd

    plan, records, audits = load(study, results, config)
    if not records:
        return []
    rows = pd.DataFrame([tables.build_row(r["record"], r["summary"]) for r in records])
    grouped = tables.group_rows(rows).to_dict("records")
    audited = {row["model"]: row for row in audit_rows(audits)}
    entries = plan.entries(study)
    source = config["studies"][study]["blackbox"]["source"]
    out = []
    for row in grouped:
        audit = audited.get(row["model"], {})
        flags = [m for m in tables.marks(row.get("note")) if not m.startswith("black-box source")]
        if source in str(row.get("models", "")).split() and int(row.get("seeds") or 1) == 1:
            flags.append("black-box source")
        flags += [w for w in _flag_words(audit.get("flags", "")) if not w.startswith("training collapsed")]
        first = str(row.get("models", row["model"])).split()[0]
        out.append([
            f"{_label(entries[first])} `{row['model']}`", str(int(row.get("seeds") or 1)), _stat(row, "test"),
            _stat(row, _first(row, "whitebox_pgd40_xent", "whitebox_pgd20_xent")), _stat(row, _first(row, "whitebox_pgd40_cw", "whitebox_pgd20_cw")),
            _stat(row, _first(row, "whitebox_fgsm_xent")), _stat(row, _first(row, "blackbox_pgd40_cw", "blackbox_pgd7_cw")),
            _stat(row, _first(row, "predicted_eq4")), _stat(audit, "autoattack"), _stat(audit, "strongest"), ", ".join(dict.fromkeys(flags)),
        ])
    return out


def per_seed_lines(study: str, results: Path, config: dict) -> list[str]:
    """Every seed's white-box PGD and AutoAttack / strongest accuracy, per grid entry."""
    plan, _records, _audits = load(study, results, config)
    lines = []
    for group, models in plan.groups(study).items():
        parts = []
        for model in models:
            record, audit = _read(results / study / "records" / f"{model}.json"), _read(results / study / "audit" / f"{model}.json")
            if record is None:
                continue
            acc = record["accuracy"]
            pgd = min((v for k, v in acc.items() if k.startswith("whitebox_pgd")), default=float("nan"))
            aa = (audit or {}).get("accuracy", {})
            parts.append(f"seed {plan.train_seed(study, model)}: PGD {pgd:.1f}, AA {aa.get('autoattack', float('nan')):.1f}, "
                         f"strongest {aa.get('strongest', float('nan')):.1f}")
        if parts:
            lines.append(f"- `{group}`: " + "; ".join(parts))
    return lines


def machines(study: str, results: Path) -> list[str]:
    """Where the records were made: processor, PyTorch CPU kernel set, device (from their provenance)."""
    seen: Counter[str] = Counter()
    for path in sorted((results / study / "records").glob("*.json")):
        prov = json.loads(path.read_text()).get("provenance", {})
        seen[f"{prov.get('cpu_model', prov.get('device_name', '?'))}, PyTorch CPU kernels {prov.get('cpu_capability', '?')}, "
             f"device {prov.get('device', '?')}, torch {prov.get('torch', '?')}"] += 1
    return [f"{machine} ({count} records)" for machine, count in seen.items()]


def training_cpu_seconds(study: str, results: Path, config: dict) -> float | None:
    """CPU seconds of the training loops (each model's metrics.json: the job's own count, also when the fork server ran it)."""
    total = 0.0
    for model in Plan(config).model_ids(study):
        metrics = _read(results / study / "models" / model / "metrics.json")
        total += float((metrics or {}).get("cpu_seconds") or 0)
    return total or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="digits")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--results", default=None, help="results folder (default: the config's results_dir)")
    parser.add_argument("--per-seed", action="store_true", help="also print every seed's PGD, AutoAttack and strongest accuracy")
    args = parser.parse_args(argv)
    config = sscfg.load_config(args.config)
    results = Path(args.results or config["results_dir"])
    rows = summary_rows(args.study, results, config)
    if not rows:
        print(f"no records under {results / args.study / 'records'}: build the study first", file=sys.stderr)
        return 1
    print("| " + " | ".join(HEADER) + " |")
    print("| " + " | ".join("---" for _ in HEADER) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("Built on: " + "; ".join(machines(args.study, results)))
    if args.per_seed:
        print()
        print("\n".join(per_seed_lines(args.study, results, config)))
    cpu = training_cpu_seconds(args.study, results, config)
    if cpu:
        print(f"Training CPU time, all models (metrics.json): {cpu:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
