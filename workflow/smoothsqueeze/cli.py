"""Command line of every stage: `python -m smoothsqueeze <stage> [--spec JSON] <paths>`.

The Snakemake rules call these. A stage's settings travel as one JSON object (`--spec`), its
files as options; each stage function takes that spec as one argument. `python -m smoothsqueeze`
alone (or --help) lists the stages. Errors the user can act on print as one line and exit 2.

By hand, a model's stage is run by study and model id instead (`python -m smoothsqueeze train
--study digits --model ls0.95_noise0.3_k1500 [--config config.yaml]`): the spec and the files are
those of the workflow's job (smoothsqueeze.study.Plan, as the rule resolves them; `--dry-run`
prints that job's command), and torch runs on the job's thread count (the rule's `threads`, 1),
so the files it writes are the job's, bit for bit on a CPU. A stage run from a job or with its
output redirected writes its command line as the first line of its log.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from .cli_support import OneLineParser, exit_status, json_object
from .errors import PipelineError


@dataclass(frozen=True)
class Stage:
    """One command: its help line, its arguments and what it runs (modules import lazily: torch only when a stage runs).

    `job`: for a model's stage, how `--study` / `--model` (or `--attack`) resolve into the job's
    spec and files; `threads`: torch's thread count, the rule's `threads` (Snakemake gives a job
    OMP_NUM_THREADS = threads), None for stages that do not compute with torch.
    """

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    job: "Job | None" = None
    threads: int | None = None


def _spec(p: argparse.ArgumentParser, required: tuple[str, ...], what: str) -> None:
    p.add_argument("--spec", type=json_object("--spec", required), required=True, help=f"{what} (JSON object)")


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: $SMOOTHSQUEEZE_DEVICE, else auto)")


def _table_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True)
    p.add_argument("--tex", required=True)
    p.add_argument("--html", required=True)


# ---------------------------------------------------------------- a model's stage by study and model id


@dataclass(frozen=True)
class Job:
    """How a stage's job is resolved from the config: the spec and each file option, as its rule does.

    `resolve(plan, study, name)` returns (spec or None, {dest: value}); `name` is the model id
    (or, for craft-blackbox, the attack name: `by = "attack"`). `files`: the file options
    (dest -> help); given on the command line they replace the resolved ones.
    """

    resolve: Callable[[Any, str, str], tuple[dict[str, Any] | None, dict[str, Any]]]
    files: dict[str, str]
    by: str = "model"
    optional: tuple[str, ...] = ()  # file options a --spec run may leave out


def _job_args(p: argparse.ArgumentParser, job: Job, required: tuple[str, ...] = (), what: str | None = None) -> None:
    """--spec (or --study/--model/--config), the stage's file options, --threads and --dry-run."""
    if what is not None:
        p.add_argument("--spec", type=json_object("--spec", required), default=None,
                       help=f"{what} (JSON object; the job's, as its log shows); or give --study and --{job.by}")
    group = p.add_argument_group("by study and model id (the spec and files of the workflow's job, from the config)")
    group.add_argument("--study", default=None, help="a study of the config")
    group.add_argument(f"--{job.by}", default=None, help="a model id of the study (its folder name)" if job.by == "model"
                       else "a black-box attack of the study (blackbox.attacks[].name)")
    group.add_argument("--config", default="config.yaml", help="the config file (default: config.yaml, as the workflow's)")
    group.add_argument("--dry-run", action="store_true", help="print the job's command (as Snakemake runs it) and exit")
    for dest, text in job.files.items():
        option = "--" + dest.replace("_", "-")
        if dest == "blackbox":
            p.add_argument(option, nargs="*", default=None, metavar="NAME=PATH", help=text)
        else:
            p.add_argument(option, default=None, help=text)


def _resolve_job(args: argparse.Namespace, stage: str, parser: argparse.ArgumentParser) -> None:
    """Fill `args` from --study/--model (spec and files of the workflow's job), or check that a --spec run names its files."""
    job = STAGES[stage].job
    assert job is not None
    name = getattr(args, job.by)
    has_spec = getattr(args, "spec", None) is not None
    if args.study is None and name is None:
        if not has_spec and hasattr(args, "spec"):
            parser.error(f"give --study and --{job.by} (the job's spec and files come from the config), or --spec and the files")
        missing = ["--" + d.replace("_", "-") for d in job.files if getattr(args, d) is None and d not in job.optional]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)} (or give --study and --{job.by})")
        if args.dry_run:
            parser.error(f"--dry-run needs --study and --{job.by}")
        return
    if args.study is None or name is None:
        parser.error(f"--study and --{job.by} go together")
    if has_spec:
        parser.error("--spec and --study exclude each other (the spec comes from the config)")
    from .config import load_config
    from .study import GPU_SLOTS_ENV, Plan

    config = load_config(args.config)
    plan = Plan(config)
    plan.study(args.study)  # an unknown study: one line naming the studies
    spec, files = job.resolve(plan, args.study, name)
    if hasattr(args, "spec"):
        args.spec = spec
    for dest, value in files.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    # What the Snakefile and the rule export for a GPU job (slots per card, this job's share of one).
    from .gpu_claim import JOB_SLOTS_ENV

    os.environ.setdefault(GPU_SLOTS_ENV, str(config["gpu_slots"]))
    os.environ.setdefault(JOB_SLOTS_ENV, plan.gpu_job_slots(args.study))


def job_command(stage: str, args: argparse.Namespace) -> list[str]:
    """The command line of the job for `args` (spec and files as the rule writes them)."""
    from .study import as_json

    job = STAGES[stage].job
    assert job is not None
    words = ["python", "-m", "smoothsqueeze", stage]
    if getattr(args, "spec", None) is not None:
        words += ["--spec", as_json(args.spec)]
    for dest in job.files:
        value = getattr(args, dest)
        if value is None:
            continue
        words += ["--" + dest.replace("_", "-"), *(value if isinstance(value, list) else [value])]
    return words


def _model_not_in(plan: Any, study: str, model: str) -> None:
    plan.entry(study, model)  # one line naming the study's models when it has no such model


def _train_job(plan: Any, study: str, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    _model_not_in(plan, study, model)
    p = plan.paths
    return plan.train_spec(study, model), {"data": plan.dataset_file(study), "checkpoint": p.checkpoint(study, model),
                                          "metrics": p.metrics(study, model), "settings_out": p.settings(study, model)}


def _blackbox_job(plan: Any, study: str, attack: str) -> tuple[dict[str, Any], dict[str, Any]]:
    names = plan.blackbox_names(study)
    if attack not in names:
        raise PipelineError(f"config error: study {study!r} has no black-box attack {attack!r} (have {names})")
    return plan.blackbox_spec(study, attack), {"source": plan.blackbox_source_checkpoint(study), "data": plan.dataset_file(study),
                                               "out": plan.paths.blackbox(study, attack)}


def _evaluate_job(plan: Any, study: str, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    _model_not_in(plan, study, model)
    p = plan.paths
    sets = [f"{name}={p.blackbox(study, name)}" for name in plan.blackbox_names(study)]
    return plan.evaluate_spec(study, model), {"checkpoint": p.checkpoint(study, model), "data": plan.dataset_file(study),
                                              "blackbox": sets, "metrics": p.metrics(study, model), "out": p.record(study, model)}


def _analysis_job(plan: Any, study: str, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    _model_not_in(plan, study, model)
    p = plan.paths
    return plan.analysis_spec(study, model), {"checkpoint": p.checkpoint(study, model), "data": plan.dataset_file(study),
                                              "out": p.analysis(study, model), "summary": p.analysis_summary(study, model)}


def _audit_job(plan: Any, study: str, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    _model_not_in(plan, study, model)
    p = plan.paths
    return plan.audit_spec(study, model), {"checkpoint": p.checkpoint(study, model), "data": plan.dataset_file(study),
                                           "record": p.record(study, model), "out": p.audit(study, model)}


def _table_row_job(plan: Any, study: str, model: str) -> tuple[None, dict[str, Any]]:
    _model_not_in(plan, study, model)
    inputs = plan.row_inputs(study, model)
    return None, {"record": inputs["record"], "analysis": inputs.get("analysis"), "out": plan.paths.row(study, model)}


CHECKPOINT = "the model's checkpoint (model.pt)"
DATA = "the prepared dataset (.npz)"
TRAIN_JOB = Job(_train_job, {"data": DATA, "checkpoint": "where the model goes (model.pt)", "metrics": "training metrics (.json)",
                             "settings_out": "resolved settings (settings.json)"})
BLACKBOX_JOB = Job(_blackbox_job, {"source": "source model checkpoint", "data": DATA, "out": "the black-box set (.npz)"}, by="attack")
EVALUATE_JOB = Job(_evaluate_job, {"checkpoint": CHECKPOINT, "data": DATA,
                                    "metrics": "the model's training metrics.json (its robust check's verdict goes into the record)",
                                    "blackbox": "stored black-box sets", "out": "the record (.json)"}, optional=("blackbox", "metrics"))
ANALYSIS_JOB = Job(_analysis_job, {"checkpoint": CHECKPOINT, "data": DATA, "out": "per-image arrays (.npz)",
                                   "summary": "summary for the tables (.json)"})
AUDIT_JOB = Job(_audit_job, {"checkpoint": CHECKPOINT, "data": DATA, "record": "the model's evaluation record (claimed accuracies)",
                             "out": "the audit record (.json)"}, optional=("record",))
TABLE_ROW_JOB = Job(_table_row_job, {"record": "evaluation record (JSON)",
                                     "analysis": "analysis summary (.json) with predicted_robust_accuracy", "out": "the row (.csv)"},
                    optional=("analysis",))


def _run_threads(threads: int | None, action: Callable[[], None]) -> None:
    """Run `action` with torch on `threads` threads (as the job: Snakemake sets OMP_NUM_THREADS to the rule's threads)."""
    if threads is None:
        action()
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        action()
    finally:
        torch.set_num_threads(before)


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
    _job_args(p, TRAIN_JOB, TRAIN_SPEC_KEYS, "the model's resolved settings")
    _threads(p)
    _device(p)


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the job's, the rule's `threads`)")


def _train(args: argparse.Namespace) -> None:
    from .train import run

    run(args.spec, args.data, args.checkpoint, args.metrics, args.settings_out, device=args.device)


# ---------------------------------------------------------------- attacks and analysis


def _craft_blackbox_args(p: argparse.ArgumentParser) -> None:
    _job_args(p, BLACKBOX_JOB, BLACKBOX_SPEC_KEYS, "attack, batch_size, max_examples, seed, architecture")
    _threads(p)
    _device(p)


def _craft_blackbox(args: argparse.Namespace) -> None:
    from .evaluate import craft_blackbox

    craft_blackbox(args.spec, args.source, args.data, args.out, args.device)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _job_args(p, EVALUATE_JOB, EVALUATE_SPEC_KEYS, "whitebox attacks, batch_size, max_examples, seed, info, architecture")
    _threads(p)
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

    evaluate(args.spec, args.checkpoint, args.data, named_paths(args.blackbox or [], "--blackbox"), args.out, args.device, metrics=args.metrics)


def _analysis_args(p: argparse.ArgumentParser) -> None:
    _job_args(p, ANALYSIS_JOB, ("eps",), "eps, pixel_units, batch_size, max_examples, architecture, info")
    _threads(p)
    _device(p)


def _analysis(args: argparse.Namespace) -> None:
    from .analysis.eq4 import run

    run(args.spec, args.checkpoint, args.data, args.out, args.summary, args.device)


def _audit_args(p: argparse.ArgumentParser) -> None:
    _job_args(p, AUDIT_JOB, ("settings",), "settings (resolved audit settings), architecture, info")
    _threads(p)
    _device(p)


def _audit(args: argparse.Namespace) -> None:
    from .audit.model_audit import run

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
    from .audit.table import write_table

    write_table([read_json(path) for path in args.audits], args.csv, args.tex, args.html)


def _table_row_args(p: argparse.ArgumentParser) -> None:
    _job_args(p, TABLE_ROW_JOB)


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
    p.add_argument("--brief", action="store_true", help="with --print: one table row per claim (verdict and what decided it)")
    for ext in ("csv", "md", "tex", "html"):
        p.add_argument(f"--{ext}", default=None, help=f"write the ledger as {ext}")


def _study_spec(args: argparse.Namespace, plan_method: str) -> dict:
    """--spec, or the study's spec resolved from --configfile by Plan.<plan_method>; it must be of --study."""
    spec = args.spec
    if spec is None:
        from .config import load_config
        from .study import Plan

        spec = getattr(Plan(load_config(args.configfile)), plan_method)(args.study)
    if spec["study"] != args.study:
        raise PipelineError(f"--spec is of study {spec['study']!r}, --study says {args.study!r}")
    return spec


def _claims(args: argparse.Namespace) -> None:
    from .claims import inputs, ledger, render

    spec = _study_spec(args, "claims_spec")
    outputs = {ext: getattr(args, ext) for ext in ("csv", "md", "tex", "html")}
    if args.print:
        rows = ledger.evaluate(inputs.load(spec))
        print(render.brief_markdown(rows, args.study) if args.brief else render.study_markdown(rows, args.study))
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
    p.add_argument("--print", action="store_true", help="print the verdicts side by side, one line per claim (no file written unless named)")


def _claims_overview(args: argparse.Namespace) -> None:
    from .claims import ledger

    ledger.overview(args.ledgers, {"csv": args.csv, "md": args.md, "html": args.html}, show=args.print)


def _frontier_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True)
    p.add_argument("--spec", type=json_object("--spec", ("study", "dataset", "eps", "models")), default=None,
                   help="the study's facts, its cost table and, per model, its record, audit and metrics paths (JSON object; "
                   "default: from --configfile)")
    p.add_argument("--configfile", default="config.yaml", help="without --spec: the config whose results folder holds the study")
    p.add_argument("--print", action="store_true", help="print the frontier (one line per defense); no files written unless named")
    for ext in ("csv", "tex", "html", "pdf", "png"):
        p.add_argument(f"--{ext}", default=None, help=f"write the frontier's {ext}")
    p.add_argument("--figure-tex", default=None, help="write the figure's LaTeX float (its caption holds the numbers)")


def _frontier(args: argparse.Namespace) -> None:
    from .frontier import stage

    spec = _study_spec(args, "frontier_spec")
    outputs = {key: getattr(args, key) for key in stage.OUTPUTS}
    if not args.print and not any(outputs.values()):
        raise PipelineError("frontier: give --print or at least one of --csv, --tex, --html, --pdf, --png, --figure-tex")
    print(stage.summary(stage.run(spec, outputs)))


#: Every stage, in pipeline order.
STAGES: dict[str, Stage] = {
    "prepare-data": Stage("write a dataset's train/test split as one .npz", _prepare_data_args, _prepare_data),
    "train": Stage("train one grid point", _train_args, _train, TRAIN_JOB, threads=1),
    "craft-blackbox": Stage("craft one black-box adversarial test set on the source model", _craft_blackbox_args, _craft_blackbox,
                            BLACKBOX_JOB, threads=1),
    "evaluate": Stage("clean, white-box and black-box accuracy of one model", _evaluate_args, _evaluate, EVALUATE_JOB, threads=1),
    "analysis": Stage("Eq. 4 quantities and activation sums of one model", _analysis_args, _analysis, ANALYSIS_JOB, threads=1),
    "audit": Stage("gradient-masking audit of one model", _audit_args, _audit, AUDIT_JOB, threads=1),
    "table-row": Stage("one model's table row from its record (+ analysis summary)", _table_row_args, _table_row, TABLE_ROW_JOB),
    "table": Stage("a study table from row files (CSV, LaTeX, HTML)", _study_table_args, _study_table),
    "compare": Stage("ours vs the paper for every paper row with a model in the study", _compare_args, _compare),
    "audit-table": Stage("the study's audit table from its audit records", _audit_table_args, _audit_table),
    "cost": Stage("measured cost of every model from Snakemake benchmark files", _cost_args, _cost),
    "figures": Stage("the paper's figures for one study", _figures_args, _figures),
    "frontier": Stage("robustness per training cost: one point per defense, the Pareto frontier (table and figure)", _frontier_args, _frontier),
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


def _stage_parser(parser: argparse.ArgumentParser, stage: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[stage]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in STAGES else ""  # "": list the stages, or refuse an unknown one
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    if args.stage is None:  # no stage: list them (exit 0), as --help does
        parser.print_help()
        return 0
    stage = STAGES[args.stage]
    command = ["python", "-m", "smoothsqueeze", *argv]
    threads = getattr(args, "threads", None) or stage.threads
    if stage.job is not None:
        status = exit_status(lambda: _resolve_job(args, args.stage, _stage_parser(parser, args.stage)))
        if status:
            return status
        if args.study is not None:  # by hand: the workflow's job, said in one line
            command = job_command(args.stage, args)
            if args.dry_run:
                print(shlex.join(command))
                return 0
            name = getattr(args, stage.job.by)
            outputs = ", ".join(str(getattr(args, d)) for d in ("checkpoint", "out") if getattr(args, d, None))
            print(f"{args.stage} {args.study}/{name}: the workflow's job, torch on {threads or 'its default'} thread(s)"
                  f"{' -> ' + outputs if outputs else ''}", file=sys.stderr, flush=True)
    if not sys.stdout.isatty() and not getattr(args, "print", False):  # a job's log (or a redirected run): first, what ran
        print(f"command: {shlex.join(command)}", flush=True)  # (not when the stage prints its result on stdout)
    return exit_status(lambda: _run_threads(threads, lambda: stage.run(args)))
