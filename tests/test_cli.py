"""One command-line style: every stage is `python -m smoothsqueeze <stage>`, the rules call only
those, `python -m smoothsqueeze` lists them, and usage errors of every stage are one line."""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_snakemake
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
    scanned = [p for p in PACKAGE.rglob("*.py") if p.name != "cli.py"]
    assert {"audit", "analysis", "claims"} <= {p.parent.name for p in scanned}  # the stage subpackages are searched too
    own = [str(p.relative_to(PACKAGE)) for p in scanned if re.search(r"^def main\(|__name__ == .__main__.|ArgumentParser\(", p.read_text(), re.M)]
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


# ---------------------------------------------------------------- one stage by hand, by study and model id

TINY = ROOT / "tests" / "data" / "tiny_config.yaml"
JOB_STAGES = [name for name, stage in cli.STAGES.items() if stage.job is not None]


def _rule_threads() -> dict[str, int]:
    """Stage -> the `threads:` of the rule that runs it (1 when the rule says none), read from the rules files."""
    out = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule \w+:)", path.read_text()):
            stage = re.search(r"python -m smoothsqueeze (\S+)", block)
            if block.startswith("rule ") and stage:
                threads = re.search(r"^    threads: (\d+)", block, re.M)
                out[stage.group(1)] = int(threads.group(1)) if threads else 1
    return out


def test_a_stage_run_by_hand_gets_the_threads_of_its_job() -> None:
    """Snakemake sets OMP_NUM_THREADS to the rule's threads; every torch stage sets torch to the same by itself."""
    rules = _rule_threads()
    torch_stages = {"train", "craft-blackbox", "evaluate", "analysis", "audit"}
    assert {name for name, stage in cli.STAGES.items() if stage.threads is not None} == torch_stages
    for name in torch_stages:
        assert cli.STAGES[name].threads == rules[name], name


def test_every_model_stage_runs_by_study_and_model_id() -> None:
    assert {"train", "craft-blackbox", "evaluate", "analysis", "audit", "table-row"} <= set(JOB_STAGES)


def _dry_run(capsys: pytest.CaptureFixture[str], stage: str, *args: str) -> list[str]:
    by = "--attack" if stage == "craft-blackbox" else "--model"
    name = "pgd5_cw" if stage == "craft-blackbox" else "noise0.3_k40"
    assert cli.main([stage, "--study", "tiny", by, name, "--config", str(TINY), "--dry-run", *args]) == 0
    return shlex.split(capsys.readouterr().out)


@pytest.mark.parametrize("stage", JOB_STAGES)
def test_by_hand_the_spec_and_files_come_from_the_config(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    words = _dry_run(capsys, stage)
    assert words[:4] == ["python", "-m", "smoothsqueeze", stage]
    out = words[words.index("--out") + 1] if "--out" in words else words[words.index("--checkpoint") + 1]
    assert out.startswith(("results/tiny/", "reports/tiny/")), words
    if "--spec" in words:
        spec = json.loads(words[words.index("--spec") + 1])
        assert spec.get("study", spec.get("info", {}).get("study", "tiny")) == "tiny"
    # A file option given on the command line replaces the resolved one.
    assert "elsewhere.out" in _dry_run(capsys, stage, "--out" if "--out" in words else "--checkpoint", "elsewhere.out")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["train", "--study", "tiny"], "--study and --model go together"),
        (["train"], "give --study and --model"),
        (["train", "--spec", "{}", "--study", "tiny", "--model", "natural_k40"], "--spec lacks"),
        (["evaluate", "--spec", json.dumps({"whitebox": [], "batch_size": 1, "seed": 0})], "required: --checkpoint, --data, --out"),
        (["craft-blackbox", "--study", "tiny", "--model", "natural_k40"], "unrecognized arguments: --model natural_k40"),
    ],
)
def test_by_hand_usage_errors_are_one_line(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--config", str(TINY)] if "--study" in args else args)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and says in err, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["train", "--study", "tiny", "--model", "natural_k4"], "config error: study 'tiny' has no model 'natural_k4' (have ["),
        (["train", "--study", "tinyy", "--model", "natural_k40"], "config error: unknown study 'tinyy' (have ['tiny'])"),
        (["craft-blackbox", "--study", "tiny", "--attack", "pgd"], "config error: study 'tiny' has no black-box attack 'pgd' (have ['fgsm_cw', 'pgd5_cw'])"),
    ],
)
def test_by_hand_an_unknown_study_model_or_attack_names_those_there_are(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*args, "--config", str(TINY), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(says) and len(err.splitlines()) == 1, err


def _job_words(shell: str) -> list[str]:
    """A rule's shell command as words, without the environment prefix and the log redirection."""
    words = shlex.split(shell.split(" > ", 1)[0])
    return words[words.index("python"):]


@pytest.mark.slow
def test_by_hand_is_the_command_snakemake_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--dry-run` prints, word for word, the shell command of the workflow's job (spec JSON and files)."""
    targets = ["results/tiny/audit/noise0.3_k40.json", "reports/tiny/rows/noise0.3_k40.csv", "results/tiny/analysis/noise0.3_k40.json"]
    out = run_snakemake(tmp_path, "-n", "-p", *targets, configfile=TINY).stdout
    shells = [line.removeprefix("Shell command: ") for line in out.splitlines() if line.startswith("Shell command: ")]
    jobs = {}
    for shell in shells:
        words = _job_words(shell)
        name = words[words.index("--out") + 1] if "--out" in words else words[words.index("--checkpoint") + 1]
        if "noise0.3_k40" in name or "/blackbox/pgd5_cw" in name:
            jobs[words[3]] = words
    assert set(jobs) == set(JOB_STAGES), sorted(jobs)
    for stage, words in jobs.items():
        assert _dry_run(capsys, stage) == words, stage


@pytest.mark.slow
def test_a_model_trained_by_hand_is_the_job_s_model_bit_for_bit(tmp_path: Path) -> None:
    """The job trains with OMP_NUM_THREADS=1 (the rule's threads); a hand run, in a shell that sets none, gets 1 thread too."""
    model = "sq0.5_noise0.3_k40"
    job, hand = tmp_path / "job", tmp_path / "hand"
    job.mkdir()
    run_snakemake(job, f"results/tiny/models/{model}/model.pt", configfile=TINY)
    hand.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} | {"SMOOTHSQUEEZE_DEVICE": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "workflow"), env.get("PYTHONPATH", "")])
    for args in (["prepare-data", "digits", "--out", "data/digits.npz"], ["train", "--study", "tiny", "--model", model, "--config", str(TINY)]):
        proc = subprocess.run([sys.executable, "-m", "smoothsqueeze", *args], cwd=hand, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the workflow's job, torch on 1 thread(s)" in proc.stderr, proc.stderr
    import torch

    made = {d: torch.load(d / f"results/tiny/models/{model}/model.pt", weights_only=True)["state_dict"] for d in (job, hand)}
    assert made[job].keys() == made[hand].keys()
    assert all(torch.equal(made[job][k], made[hand][k]) for k in made[job]), "the hand-trained model differs from the job's"
    for d in (job, hand):
        settings = json.loads((d / f"results/tiny/models/{model}/settings.json").read_text())
        assert settings["provenance"]["torch_threads"] == 1, (d, settings["provenance"])
    # The job's log starts with the command it ran (the console no longer prints it).
    first = (job / f"results/tiny/logs/train/{model}.log").read_text().splitlines()[0]
    assert first.startswith("command: python -m smoothsqueeze train --spec "), first
