"""Print a study's results as the Markdown table the README quotes, from the pipeline's own artifacts.

    python benchmarks/study_summary.py --study digits            # after `snakemake --cores 2`
    python benchmarks/study_summary.py --study fashion --results /path/to/results

Columns: clean accuracy; white-box PGD (x-ent, CW) and FGSM (x-ent); black-box PGD (CW) from the
study's source model; Eq. 4's predicted robust accuracy (nearest wrong class); AutoAttack and the
strongest attack per example from the audit; flags (training collapsed, black-box source, audit
flags). Every number comes from results/<study>/{records,analysis,audit}/<model>.json, never typed;
it also prints each model's training time (CPU seconds) and the CPU time of the benchmarked jobs.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

from smoothsqueeze import config as sscfg  # noqa: E402
from smoothsqueeze.audit_flags import FLAG_LABELS  # noqa: E402
from smoothsqueeze.tables import defense_label  # noqa: E402

#: Flag names as the README's tables word them.
FLAG_WORDS = {
    "blackbox_beats_whitebox": "black-box beats white-box", "square_beats_gradients": "Square beats gradients",
    "large_eps_not_broken": "large eps not broken", "more_steps_weaker": "more steps weaker", "xent_gap": "x-ent gap",
    "claimed_overstated": "claim overstated",
}


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _first(acc: dict, *names: str) -> float | None:
    for name in names:
        if name in acc:
            return acc[name]
    return None


def _label(entry: dict) -> str:
    text = defense_label(entry)
    params = [f"{sym} {entry[key]:g}" for key, sym in (("alpha", "α"), ("beta", "β"), ("sigma", "σ")) if entry.get(key)]
    return f"{text} ({', '.join(params)})" if params and not entry.get("adversarial") else text


def summary_rows(study: str, results: Path, config: dict) -> list[list[str]]:
    st = config["studies"][study]
    rows = []
    for entry in st["grid"]:
        mid = sscfg.model_id(entry)
        record = _read(results / study / "records" / f"{mid}.json")
        if record is None:
            continue
        analysis = _read(results / study / "analysis" / f"{mid}.json") or {}
        audit = _read(results / study / "audit" / f"{mid}.json") or {}
        acc = record["accuracy"]
        flags = []
        if record.get("training", {}).get("collapsed"):
            flags.append("training collapsed")
        if mid == st["blackbox"]["source"]:
            flags.append("black-box source")
        for name, flag in (audit.get("flags") or {}).items():
            if flag.get("raised"):
                flags.append(FLAG_WORDS.get(name, FLAG_LABELS.get(name, name)))
        aacc = audit.get("accuracy", {})
        rows.append([
            f"{_label(entry)} `{mid}`", _pct(acc.get("test")),
            _pct(_first(acc, "whitebox_pgd40_xent", "whitebox_pgd20_xent")), _pct(_first(acc, "whitebox_pgd40_cw", "whitebox_pgd20_cw")),
            _pct(acc.get("whitebox_fgsm_xent")), _pct(_first(acc, "blackbox_pgd40_cw", "blackbox_pgd7_cw")),
            _pct(analysis.get("predicted_robust_accuracy")), _pct(aacc.get("autoattack")), _pct(aacc.get("strongest")),
            ", ".join(flags),
        ])
    return rows


def benchmarked_cpu_seconds(study: str, results: Path) -> float | None:
    """CPU seconds of the study's benchmarked jobs (Snakemake's benchmark files: train, black-box, evaluate)."""
    total = 0.0
    for tsv in (results / study / "benchmarks").rglob("*.tsv"):
        with tsv.open() as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                total += float(row.get("cpu_time", 0) or 0)
    return total or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="digits")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--results", default=None, help="results folder (default: the config's results_dir)")
    args = parser.parse_args(argv)
    config = sscfg.load_config(args.config)
    results = Path(args.results or config["results_dir"])
    header = ["model", "clean", "PGD x-ent", "PGD CW", "FGSM x-ent", "black-box PGD CW", "Eq. 4 predicted",
              "AutoAttack", "strongest", "flags"]
    rows = summary_rows(args.study, results, config)
    if not rows:
        print(f"no records under {results / args.study / 'records'}: build the study first", file=sys.stderr)
        return 1
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for entry in config["studies"][args.study]["grid"]:
        mid = sscfg.model_id(entry)
        metrics = _read(results / args.study / "models" / mid / "metrics.json")
        if metrics:
            print(f"- {mid}: trained {metrics['iterations']} iterations in {metrics.get('cpu_seconds', float('nan')):.0f} CPU s "
                  f"(train {metrics['train_accuracy']:.1f}%, test {metrics['test_accuracy']:.1f}%)")
    cpu = benchmarked_cpu_seconds(args.study, results)
    if cpu:
        print(f"- CPU time of the benchmarked jobs (train, black-box, evaluate): {cpu:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
