"""One command-line style: every stage is `python -m smoothsqueeze <stage>`, the rules call only
those, `python -m smoothsqueeze` lists them, and usage errors of every stage are one line."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from smoothsqueeze import cli
from smoothsqueeze.errors import PipelineError

PACKAGE = ROOT / "workflow" / "smoothsqueeze"
#: Where a stage command may be written: the rules, the tests, the benchmarks, the README.
CALLERS = [*sorted((ROOT / "workflow" / "rules").rglob("*.smk")), *sorted((ROOT / "tests").glob("*.py")),
           *sorted((ROOT / "benchmarks").glob("*.py")), ROOT / "README.md", ROOT / "benchmarks" / "README.md"]


def test_no_stage_lists_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name, stage in cli.STAGES.items():
        assert re.search(rf"^\s+{re.escape(name)}\b", out, re.M), name
    assert "evaluate" in out and "audit-table" in out


def test_help_lists_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.STAGES)


def test_the_rules_call_only_stages_of_the_one_command() -> None:
    """Every `python -m smoothsqueeze...` in the rules names a stage; the per-module form is gone everywhere."""
    rule_stages = set()
    for path in CALLERS:
        text = path.read_text()
        assert not re.search(r"-m smoothsqueeze\.\w", text), f"{path.name}: calls a module's own command line"
        if path.suffix == ".smk":
            rule_stages |= set(re.findall(r"python -m smoothsqueeze (\S+)", text))
    assert rule_stages, "no rule calls python -m smoothsqueeze"
    assert rule_stages <= set(cli.STAGES), rule_stages - set(cli.STAGES)
    # every stage but none is run by a rule
    assert set(cli.STAGES) == rule_stages, set(cli.STAGES) - rule_stages


def test_no_module_keeps_a_command_line_of_its_own() -> None:
    own = [p.name for p in PACKAGE.glob("*.py") if p.name != "cli.py" and re.search(r"^def main\(|__name__ == .__main__.|ArgumentParser\(", p.read_text(), re.M)]
    assert own == []


def _options(stage: str) -> set[str]:
    parser = cli.build_parser(stage)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[stage]
    return {option for action in sub._actions for option in action.option_strings}


SPEC_STAGES = [name for name in cli.STAGES if "--spec" in _options(name)]


def test_every_model_stage_takes_one_spec() -> None:
    assert {"train", "craft-blackbox", "evaluate", "analysis", "audit", "figures", "table", "compare"} <= set(SPEC_STAGES)


@pytest.mark.parametrize("stage", SPEC_STAGES)
def test_a_spec_that_is_not_a_json_object_is_one_line(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([stage, "--spec", "[1]"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: python -m smoothsqueeze {stage}: ") and "--spec must be a JSON object" in err


def test_named_paths() -> None:
    assert cli.named_paths(["a=x/y.npz", "b=z=1.npz"], "--blackbox") == {"a": "x/y.npz", "b": "z=1.npz"}
    with pytest.raises(PipelineError, match="expected NAME=PATH"):
        cli.named_paths(["x.npz"], "--blackbox")


@pytest.mark.slow
def test_the_package_command_without_a_stage_lists_them() -> None:
    proc = subprocess.run([sys.executable, "-m", "smoothsqueeze"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in cli.STAGES)
