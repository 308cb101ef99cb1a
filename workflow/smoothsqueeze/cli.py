"""Command line of every stage: `python -m smoothsqueeze <stage> [--spec JSON] <paths>`.

The Snakemake rules call these. A stage's settings travel as one JSON object (`--spec`), its
files as options; each stage function takes that spec as one argument. `python -m smoothsqueeze`
alone (or --help) lists the stages. Errors the user can act on print as one line and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from .cli_support import OneLineParser, exit_status, json_object
from .errors import PipelineError


@dataclass(frozen=True)
class Stage:
    """One command: its help line, its arguments and what it runs (modules import lazily: torch only when a stage runs)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def _spec(p: argparse.ArgumentParser, required: tuple[str, ...], what: str) -> None:
    p.add_argument("--spec", type=json_object("--spec", required), required=True, help=f"{what} (JSON object)")


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: $SMOOTHSQUEEZE_DEVICE, else auto)")


def _table_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True)
    p.add_argument("--tex", required=True)
    p.add_argument("--html", required=True)


# ---------------------------------------------------------------- data and training


def _prepare_data_args(p: argparse.ArgumentParser) -> None:
    from .data import DATASETS  # numpy only

    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", required=True)
    p.add_argument("--data-root", default=None, help="folder with torchvision-layout files (no download)")
    p.add_argument("--download-dir", default=None)
    p.add_argument("--no-verify", action="store_true", help="skip MD5 checks")


def _prepare_data(args: argparse.Namespace) -> None:
    from .data import prepare

    prepare(args.dataset, args.out, data_root=args.data_root, download_dir=args.download_dir, verify=not args.no_verify)


#: Keys each JSON spec must hold (the workflow always passes them; a hand-written one may not).
TRAIN_SPEC_KEYS = ("study", "model_id", "architecture", "seed", "alpha", "beta", "sigma01", "k", "adversarial", "train")
BLACKBOX_SPEC_KEYS = ("attack", "batch_size", "seed")
EVALUATE_SPEC_KEYS = ("whitebox", "batch_size", "seed")
TABLE_SPEC_KEYS = ("study", "dataset", "eps", "whitebox", "blackbox", "blackbox_source")


def _train_args(p: argparse.ArgumentParser) -> None:
    _spec(p, TRAIN_SPEC_KEYS, "the model's resolved settings")
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--settings-out", required=True)
    _device(p)


def _train(args: argparse.Namespace) -> None:
    from .train import run

    run(args.spec, args.data, args.checkpoint, args.metrics, args.settings_out, device=args.device)


# ---------------------------------------------------------------- attacks and analysis


def _craft_blackbox_args(p: argparse.ArgumentParser) -> None:
    _spec(p, BLACKBOX_SPEC_KEYS, "attack, batch_size, max_examples, seed, architecture")
    p.add_argument("--source", required=True, help="source model checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    _device(p)


def _craft_blackbox(args: argparse.Namespace) -> None:
    from .evaluate import craft_blackbox

    craft_blackbox(args.spec, args.source, args.data, args.out, args.device)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _spec(p, EVALUATE_SPEC_KEYS, "whitebox attacks, batch_size, max_examples, seed, info, architecture")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--blackbox", nargs="*", default=[], metavar="NAME=PATH", help="stored black-box sets")
    p.add_argument("--out", required=True)
    _device(p)


def named_paths(items: list[str], option: str) -> dict[str, str]:
    """NAME=PATH arguments as a dict."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise PipelineError(f"{option} {item!r}: expected NAME=PATH")
        out[name] = path
    return out


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate

    evaluate(args.spec, args.checkpoint, args.data, named_paths(args.blackbox, "--blackbox"), args.out, args.device)


def _analysis_args(p: argparse.ArgumentParser) -> None:
    _spec(p, ("eps",), "eps, pixel_units, batch_size, max_examples, architecture, info")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="per-image arrays (.npz)")
    p.add_argument("--summary", required=True, help="summary for the tables (.json)")
    _device(p)


def _analysis(args: argparse.Namespace) -> None:
    from .analysis import run

    run(args.spec, args.checkpoint, args.data, args.out, args.summary, args.device)


def _audit_args(p: argparse.ArgumentParser) -> None:
    _spec(p, ("settings",), "settings (resolved audit settings), architecture, info")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--record", default=None, help="the model's evaluation record (claimed accuracies)")
    p.add_argument("--out", required=True)
    _device(p)


def _audit(args: argparse.Namespace) -> None:
    from .audit import run

    run(args.spec, args.checkpoint, args.data, args.record, args.out, args.device)


# ---------------------------------------------------------------- reports


def _figures_args(p: argparse.ArgumentParser) -> None:
    _spec(p, ("study", "eps"), "study, eps, pixel_units and, unless the file lists below are given, models "
          "[{model_id, entry, analysis, summary, metrics, record?, audit?}]")
    p.add_argument("--summaries", nargs="+", help="analysis summaries (.json), one per model in grid order: model ids and grid entries come from them")
    p.add_argument("--analysis", nargs="+", help="analysis arrays (.npz), same order")
    p.add_argument("--metrics", nargs="+", help="training metrics.json files, same order")
    p.add_argument("--records", nargs="*", default=[], help="evaluation records (measured PGD), same order; optional")
    p.add_argument("--audits", nargs="*", default=[], help="audit records (AutoAttack), same order; optional")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--workers", type=int, default=1, help="figures drawn in parallel processes")


def _figures(args: argparse.Namespace) -> None:
    from .figures import models_from_files, run

    spec = dict(args.spec)
    if args.summaries:
        if not (args.analysis and args.metrics):
            raise PipelineError("--summaries needs --analysis and --metrics (one per model, same order)")
        spec["models"] = models_from_files(args.summaries, args.analysis, args.metrics, args.records, args.audits)
    elif "models" not in spec:
        raise PipelineError("--spec has no 'models' and no --summaries/--analysis/--metrics were given")
    run(spec, args.out_dir, workers=max(1, args.workers))


def _audit_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audits", nargs="+", required=True, help="audit records (JSON)")
    _table_outputs(p)


def _audit_table(args: argparse.Namespace) -> None:
    from .artifacts import read_json
    from .audit_table import write_table

    write_table([read_json(path) for path in args.audits], args.csv, args.tex, args.html)


def _table_row_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record", required=True, help="evaluation record (JSON)")
    p.add_argument("--analysis", default=None, help="analysis summary (.json) with predicted_robust_accuracy")
    p.add_argument("--out", required=True)


def _table_row(args: argparse.Namespace) -> None:
    from .artifacts import read_json
    from .tables import build_row, write_row

    summary = read_json(args.analysis) if args.analysis else None
    write_row(build_row(read_json(args.record), summary), args.out)


def _study_table_args(p: argparse.ArgumentParser) -> None:
    from .tables import STUDY_TABLES  # pandas only

    p.add_argument("name", choices=sorted(STUDY_TABLES))
    _spec(p, TABLE_SPEC_KEYS, "study, dataset, eps, pixel_units, whitebox/blackbox attacks")
    p.add_argument("--rows", nargs="*", default=[], help="row files, in table order")
    _table_outputs(p)


def _study_table(args: argparse.Namespace) -> None:
    from .tables import write_study_table

    write_study_table(args.name, args.spec, args.rows, (args.csv, args.tex, args.html))


def _compare_args(p: argparse.ArgumentParser) -> None:
    from .paper import PAPER_TABLES

    p.add_argument("name", choices=sorted(PAPER_TABLES))
    _spec(p, TABLE_SPEC_KEYS, "study, dataset, eps, pixel_units, whitebox/blackbox attacks")
    p.add_argument("--rows", nargs="*", default=[], help="row files, in table order")
    p.add_argument("--paper-csv", default=None, help="the paper's CSV (default: workflow/paper/)")
    _table_outputs(p)


def _compare(args: argparse.Namespace) -> None:
    from .tables import write_comparison_table

    write_comparison_table(args.name, args.spec, args.rows, args.paper_csv, (args.csv, args.tex, args.html))


def _cost_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True)
    p.add_argument("--model", nargs=4, action="append", default=[], metavar=("SETTINGS", "METRICS", "TRAIN_BENCH", "EVAL_BENCH"))
    p.add_argument("--csv", required=True)
    p.add_argument("--tex", required=True)
    p.add_argument("--html", default=None, help="also an HTML view of the table")


def _cost(args: argparse.Namespace) -> None:
    from .cost import cost_table, write_tables

    models = [dict(zip(("settings", "metrics", "train_benchmark", "evaluate_benchmark"), m)) for m in args.model]
    frame = cost_table(models)
    write_tables(frame, args.study, args.csv, args.tex, args.html)
    print(frame.to_string(index=False))


def _project_args(p: argparse.ArgumentParser) -> None:
    from .projection import add_arguments

    add_arguments(p)


def _project(args: argparse.Namespace) -> None:
    from .projection import run

    run(args)


def _claims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True)
    p.add_argument("--spec", type=json_object("--spec", ("study", "dataset", "eps", "models")), default=None,
                   help="the study's facts and, per model, its record, audit, analysis and metrics paths (JSON object; "
                   "default: from --configfile)")
    p.add_argument("--configfile", default="config.yaml", help="without --spec: the config whose results folder holds the study")
    p.add_argument("--print", action="store_true", help="print the ledger (Markdown) computed from the study's records; no files written")
    for ext in ("csv", "md", "tex", "html"):
        p.add_argument(f"--{ext}", default=None, help=f"write the ledger as {ext}")


def _claims(args: argparse.Namespace) -> None:
    from .claims import inputs, ledger, render

    spec = args.spec
    if spec is None:
        from .config import load_config
        from .study import Plan

        spec = Plan(load_config(args.configfile)).claims_spec(args.study)
    if spec["study"] != args.study:
        raise PipelineError(f"--spec is of study {spec['study']!r}, --study says {args.study!r}")
    outputs = {ext: getattr(args, ext) for ext in ("csv", "md", "tex", "html")}
    if args.print:
        print(render.study_markdown(ledger.evaluate(inputs.load(spec)), args.study))
    if any(outputs.values()):
        rows = ledger.run(spec, outputs)
        print(render.counts(rows))
    elif not args.print:
        raise PipelineError("claims: give --print or at least one of --csv, --md, --tex, --html")


def _claims_overview_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledgers", nargs="*", default=[], help="the studies' claims.csv files")
    p.add_argument("--csv", default=None)
    p.add_argument("--md", default=None)
    p.add_argument("--html", default=None)


def _claims_overview(args: argparse.Namespace) -> None:
    from .claims import ledger

    ledger.overview(args.ledgers, {"csv": args.csv, "md": args.md, "html": args.html})


#: Every stage, in pipeline order.
STAGES: dict[str, Stage] = {
    "prepare-data": Stage("write a dataset's train/test split as one .npz", _prepare_data_args, _prepare_data),
    "train": Stage("train one grid point", _train_args, _train),
    "craft-blackbox": Stage("craft one black-box adversarial test set on the source model", _craft_blackbox_args, _craft_blackbox),
    "evaluate": Stage("clean, white-box and black-box accuracy of one model", _evaluate_args, _evaluate),
    "analysis": Stage("Eq. 4 quantities and activation sums of one model", _analysis_args, _analysis),
    "audit": Stage("gradient-masking audit of one model", _audit_args, _audit),
    "table-row": Stage("one model's table row from its record (+ analysis summary)", _table_row_args, _table_row),
    "table": Stage("a study table from row files (CSV, LaTeX, HTML)", _study_table_args, _study_table),
    "compare": Stage("ours vs the paper for every paper row with a model in the study", _compare_args, _compare),
    "audit-table": Stage("the study's audit table from its audit records", _audit_table_args, _audit_table),
    "cost": Stage("measured cost of every model from Snakemake benchmark files", _cost_args, _cost),
    "figures": Stage("the paper's figures for one study", _figures_args, _figures),
    "claims": Stage("the claims ledger of one study: every claim's verdict from its records (or --print it)", _claims_args, _claims),
    "claims-overview": Stage("every claim against every built study, beside the published re-evaluations", _claims_overview_args, _claims_overview),
    "project": Stage("projected device-hours of a study on this machine's device, before launching it", _project_args, _project),
}


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `stage`'s arguments are defined (None: all), so a stage imports only what it needs."""
    parser = OneLineParser(prog="python -m smoothsqueeze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", title="stages")
    for name, entry in STAGES.items():
        p = sub.add_parser(name, help=entry.help, description=entry.help)
        if stage is None or name == stage:
            entry.arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in STAGES else ""  # "": list the stages, or refuse an unknown one
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    if args.stage is None:  # no stage: list them (exit 0), as --help does
        parser.print_help()
        return 0
    return exit_status(lambda: STAGES[args.stage].run(args))
