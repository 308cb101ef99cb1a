"""What the console says around a Snakemake run of the workflow (torch-free; the Snakefile imports it).

- `summary(config, targets)`: the lines a successful run ends with: for each study whose report the
  run built or found up to date, where it is. Extend it here (e.g. one line per claim under each
  study): the Snakefile prints whatever it returns, last.
- `check_targets(workflow, config, argv)`: a target that no rule makes (a mistyped study name,
  a file of no study) stops the run before the DAG is built, with one `error:` line naming the
  studies and the files that exist, instead of Snakemake's bare MissingRuleException.
- `at_end(text)`: print `text` after Snakemake's own closing lines ("Complete log", "Elapsed time").

The Snakemake-facing parts (`dag_files`, `requested_targets`, `check_targets`) use Snakemake's objects
(`workflow.dag.jobs`, `Rule.is_producer`, its argument parser); they never raise: when Snakemake
changes under them, the run goes on with Snakemake's own messages.
"""
from __future__ import annotations

import atexit
import difflib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .study import Plan


def _norm(path: str) -> str:
    return os.path.normpath(str(path))


def reports_in(config: Mapping[str, Any], targets: Iterable[str]) -> dict[str, str]:
    """study -> its report path, for every study whose report is among `targets` (config order)."""
    files = {_norm(t) for t in targets}
    plan = Plan(config)
    return {study: plan.paths.report(study) for study in config["studies"] if _norm(plan.paths.report(study)) in files}


def summary(config: Mapping[str, Any], targets: Iterable[str]) -> str:
    """The closing lines of a successful run ("" when it built no study's report and found none up to date).

    `targets`: every file of the run's jobs (built in this run or found up to date), as Snakemake
    names them (relative to the working directory). One block per study: its claims ledger, one
    line per claim, then the report's path, so that a run ends on where to look.
    """
    from .claims.console import console_lines

    lines = []
    for study, report in reports_in(config, targets).items():
        lines += console_lines(study, config["reports_dir"])
        lines.append(f"Report of study {study!r}: {Path(report).resolve()}")
    return "\n".join(lines)


def dag_files(workflow: Any) -> list[str]:
    """Every output file of the jobs in the run's DAG (needed or up to date); [] when there is no DAG."""
    try:
        return [str(f) for job in workflow.dag.jobs for f in job.output]
    except Exception:  # noqa: BLE001 - Snakemake internals: no summary rather than a failed run
        return []


_PENDING: list[str] = []


def at_end(text: str) -> None:
    """Print `text` to stderr (where Snakemake writes) when the process exits, after Snakemake's closing lines."""
    if not text:
        return
    if not _PENDING:
        atexit.register(lambda: print("\n".join(_PENDING), file=sys.stderr, flush=True))
    _PENDING.append(text)


def announce_when_nothing_to_do(workflow: Any, config: Mapping[str, Any]) -> None:
    """When Snakemake finds nothing to do (it then calls no onsuccess handler), still end on the report paths.

    Snakemake logs NOTHING_TO_BE_DONE_MSG exactly when the DAG holds no job to run; a filter on
    its logger sees that record and schedules the summary. Dry runs and non-default modes say nothing.
    """
    import logging

    try:
        from snakemake.common import NOTHING_TO_BE_DONE_MSG
    except ImportError:  # another Snakemake: no summary in this case
        return

    def watch(record: logging.LogRecord) -> bool:
        try:
            if record.getMessage() == NOTHING_TO_BE_DONE_MSG and not workflow.dryrun and not _PENDING:
                at_end(summary(config, dag_files(workflow)))
        except Exception:  # noqa: BLE001 - never break Snakemake's logging
            pass
        return True

    logging.getLogger("snakemake.logging").addFilter(watch)


# ---------------------------------------------------------------- targets that no rule makes


def example_targets(config: Mapping[str, Any], study: str) -> list[str]:
    """File targets of one study a user may ask for, with real ids (first model of its grid)."""
    plan = Plan(config)
    model = plan.model_ids(study)[0]
    p = plan.paths
    return [p.report(study), p.row(study, model), p.projection(study, "csv"), p.checkpoint(study, model), p.record(study, model)]


def unknown_target_message(config: Mapping[str, Any], target: str, problem: str | None = None) -> str:
    """The error for a target no rule makes (or, with `problem`, a file of no study or model): names what exists."""
    studies = list(config["studies"])
    default = config.get("default_study")
    close = difflib.get_close_matches(Path(target).name, studies, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close and problem is None else ""
    head = f"error: {problem}" if problem else f"error: no study, rule or file {target!r} in this workflow{hint}"
    listed = ", ".join(f"{s} (the default)" if s == default else s for s in studies)
    lines = [
        head,
        f"  studies (each a target: `snakemake {default or studies[0]} --cores 2`): {listed}",
        f"  files of a study, e.g.: {', '.join(example_targets(config, default or studies[0]))}",
        "  `snakemake --list-target-rules` lists the rules; put targets before options that take several values "
        "(`snakemake mnist --cores 8 --resources gpu=2`)",
    ]
    return "\n".join(lines)


def requested_targets(argv: Sequence[str]) -> list[str] | None:
    """The targets of a `snakemake ...` command line as Snakemake's own parser reads them.

    None when `argv` is not a user's Snakemake command (a remote job, another program importing
    the Snakefile) or cannot be parsed here.
    """
    if not argv or not (Path(argv[0]).name == "snakemake" or Path(argv[0]).parent.name == "snakemake"):
        return None
    try:
        from snakemake.cli import get_argument_parser
    except ImportError:
        return None
    try:
        args = get_argument_parser().parse_args(list(argv[1:]))
    except (Exception, SystemExit):  # noqa: BLE001 - Snakemake reports its own usage errors
        return None
    if str(getattr(args, "mode", "default")).lower().rsplit(".", 1)[-1] != "default":  # a remote or subprocess job
        return None
    return [str(t) for t in (args.targets or [])]


def target_problem(config: Mapping[str, Any], target: str, rule_names: set[str],
                   wildcards_of: Callable[[str], list[dict[str, str]]], exists: Callable[[str], bool]) -> str | None:
    """Why no rule can make `target` (the whole error text), or None when it is fine.

    `wildcards_of(target)`: the wildcards of each rule that produces it (empty list: none does).
    A file a rule makes for a study or model the config lacks is refused here too, in the same words.
    """
    if target in rule_names or exists(target):
        return None
    matches = wildcards_of(target)
    if not matches:
        return unknown_target_message(config, target)
    plan = Plan(config)
    for wildcards in matches:
        study = wildcards.get("study")
        if study is not None and study not in config["studies"]:
            close = difflib.get_close_matches(study, list(config["studies"]), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return unknown_target_message(config, target, f"{target}: no study {study!r} in the config{hint}")
        model = wildcards.get("model")
        if study is not None and model is not None and model not in plan.model_ids(study):
            close = difflib.get_close_matches(model, plan.model_ids(study), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return (f"error: {target}: study {study!r} has no model {model!r}{hint}; its models: "
                    f"{', '.join(plan.model_ids(study))}")
    return None


def check_targets(workflow: Any, config: Mapping[str, Any], argv: Sequence[str]) -> str | None:
    """The error text for the first requested target no rule makes, or None (also when Snakemake's API is not the expected one)."""
    targets = requested_targets(argv)
    if not targets:
        return None
    try:
        rules = list(workflow.rules)
        names = {rule.name for rule in rules}

        def wildcards_of(target: str) -> list[dict[str, str]]:
            return [dict(rule.get_wildcards(target)) for rule in rules if rule.is_producer(target)]

        for target in targets:
            problem = target_problem(config, target, names, wildcards_of, lambda t: Path(t).exists())
            if problem:
                return problem
    except Exception:  # noqa: BLE001 - Snakemake internals: leave the target to Snakemake
        return None
    return None
