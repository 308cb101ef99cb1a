"""What the console says: a run ends on the path of each study's report, a target no rule makes names
the studies and files there are, and the shell commands stay out of the console (they are in each
job's log)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_CONFIG, run_snakemake
from smoothsqueeze import console
from smoothsqueeze.config import load_config

CONFIG = load_config(ROOT / "config.yaml")


def test_summary_names_each_report_of_the_run() -> None:
    targets = ["results/digits/records/natural_k500.json", "reports/digits/report.html", "./reports/fashion/report.html"]
    text = console.summary(CONFIG, targets)
    # each study's claims ledger (when built) comes before its report's path; the run ends on a path
    assert [line for line in text.splitlines() if line.startswith("Report of study")] == [
        f"Report of study 'digits': {Path('reports/digits/report.html').resolve()}",
        f"Report of study 'fashion': {Path('reports/fashion/report.html').resolve()}",
    ]
    assert console.summary(CONFIG, ["reports/digits/rows/natural_k500.csv"]) == ""


def test_requested_targets_are_read_as_snakemake_reads_them() -> None:
    snakemake = "/venv/bin/snakemake"
    assert console.requested_targets([snakemake, "mnist", "--cores", "8", "--resources", "gpu=2"]) == ["mnist"]
    assert console.requested_targets([snakemake, "-n", "--configfile", "a.yaml", "--", "mnist", "x.csv"]) == ["mnist", "x.csv"]
    assert console.requested_targets(["/lib/python3/site-packages/snakemake/__main__.py", "digits"]) == ["digits"]
    assert console.requested_targets([snakemake, "--cores", "2"]) == []
    assert console.requested_targets(["pytest", "digits"]) is None  # not a Snakemake command line
    assert console.requested_targets([snakemake, "--mode", "remote", "x"]) is None  # a job inside a run


def _problem(target: str, rules: dict[str, dict[str, str]] | None = None, exists: bool = False) -> str | None:
    """target_problem with fake rules: pattern prefix -> wildcards they would give."""
    matches = [w for prefix, w in (rules or {}).items() if target.startswith(prefix)]
    return console.target_problem(CONFIG, target, {"all", "digits", "mnist"}, lambda t: matches, lambda t: exists)


def test_a_target_no_rule_makes_names_the_studies_and_files_there_are() -> None:
    assert _problem("digits") is None and _problem("results/x.txt", exists=True) is None
    text = _problem("digitz")
    assert text is not None
    head, *rest = text.splitlines()
    assert head == "error: no study, rule or file 'digitz' in this workflow (did you mean 'digits'?)"
    assert "digits (the default), fashion, mnist5k, mnist, cifar10" in rest[0]
    assert "reports/digits/report.html" in rest[1] and "results/digits/models/natural_k500/model.pt" in rest[1]
    assert all(not line.startswith("error: ") for line in rest)


def test_a_file_of_no_study_or_model_is_refused_in_the_same_words() -> None:
    rows = {"reports/": {"study": "digitz", "model": "natural_k500"}}
    text = _problem("reports/digitz/rows/natural_k500.csv", rows)
    assert text is not None and text.startswith("error: reports/digitz/rows/natural_k500.csv: no study 'digitz' in the config (did you mean 'digits'?)")
    rows = {"reports/": {"study": "digits", "model": "natural_k50"}}
    text = _problem("reports/digits/rows/natural_k50.csv", rows)
    assert text is not None and text.startswith("error: reports/digits/rows/natural_k50.csv: study 'digits' has no model 'natural_k50' "
                                                "(did you mean 'natural_k500'?); its models: natural_k500, ")
    assert _problem("reports/digits/rows/natural_k500.csv", {"reports/": {"study": "digits", "model": "natural_k500"}}) is None


def test_the_console_module_is_torch_free() -> None:
    """The Snakefile imports it: it may import only the plan and, lazily, Snakemake."""
    import ast

    tree = ast.parse((ROOT / "workflow" / "smoothsqueeze" / "console.py").read_text())
    modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in modules if m.split(".")[0] in ("torch", "torchvision", "numpy", "pandas")}, modules


def test_the_snakefile_registers_each_handler_once() -> None:
    """Snakemake keeps only the last `onsuccess:` (and onstart, onerror): a second one would silently replace the first."""
    import re

    text = (ROOT / "Snakefile").read_text()
    for handler in ("onstart", "onsuccess", "onerror"):
        assert len(re.findall(rf"^{handler}:", text, re.M)) <= 1, handler
    assert "console.summary(config, console.dag_files(workflow))" in text.split("onsuccess:", 1)[1].split("\n\n\n", 1)[0]


def test_the_default_profile_keeps_shell_commands_off_the_console() -> None:
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert "printshellcmds" not in profile


# ---------------------------------------------------------------- through the real command


@pytest.mark.slow
@pytest.mark.parametrize(("target", "says"), [
    ("nosuch", "error: no study, rule or file 'nosuch' in this workflow"),
    ("tinyy", "error: no study, rule or file 'tinyy' in this workflow (did you mean 'tiny'?)"),
    ("reports/tiny/rows/natural_k4.csv", "error: reports/tiny/rows/natural_k4.csv: study 'tiny' has no model 'natural_k4' (did you mean 'natural_k40'?)"),
])
def test_snakemake_with_a_target_no_rule_makes(tmp_path: Path, target: str, says: str) -> None:
    proc = run_snakemake(tmp_path, target, check=False)
    assert proc.returncode != 0
    assert says in proc.stderr, proc.stderr[-3000:]
    assert "MissingRuleException" not in proc.stderr and "Traceback" not in proc.stderr
    if "no study, rule or file" in says:
        assert "tiny (the default)" in proc.stderr and "reports/tiny/report.html" in proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def _last_line(text: str) -> str:
    return text.rstrip().splitlines()[-1]


@pytest.mark.slow
def test_a_run_ends_on_the_report_path(tiny_copy: Path) -> None:
    report = tiny_copy / "reports" / "tiny" / "report.html"
    line = f"Report of study 'tiny': {report.resolve()}"
    # Up to date: Snakemake calls no onsuccess handler, the path is still the last line.
    proc = run_snakemake(tiny_copy, "tiny", configfile=TINY_CONFIG)
    assert "Nothing to be done" in proc.stderr and _last_line(proc.stderr) == line, proc.stderr[-2000:]
    # Built in this run: after Snakemake's own closing lines.
    report.unlink()
    proc = run_snakemake(tiny_copy, configfile=TINY_CONFIG)
    assert report.exists() and _last_line(proc.stderr) == line, proc.stderr[-2000:]
    assert proc.stderr.count("Report of study") == 1 and "Elapsed time" in proc.stderr
    # the study's claims ledger, one line per claim, just above the report's path
    lines = proc.stderr.rstrip().splitlines()
    ledger = next(i for i, text in enumerate(lines) if text.startswith("Claims ledger of tiny"))
    assert all(lines[i].lstrip().startswith("C") for i in range(ledger + 1, len(lines) - 1)), lines[ledger:]
    assert len(lines) - 1 - ledger - 1 >= 20, lines[ledger:]
    assert "Shell command" not in proc.stderr + proc.stdout  # the commands are in the jobs' logs
    # A run that does not reach a report, and a dry run, say nothing of one.
    for args in (["reports/tiny/rows/natural_k40.csv"], ["-n"]):
        proc = run_snakemake(tiny_copy, *args, configfile=TINY_CONFIG)
        assert "Report of study" not in proc.stderr, (args, proc.stderr[-2000:])
