"""Every command line of the README runs, as typed, in a copy of the repository.

What counts as a command line (`readme_commands`): each line of a ```bash block (a trailing
`# comment` is dropped; a comment `# or: <command>` is one more command), and each `$ `-prompted line
of an unlabelled block, whose following lines are the output the README shows (each must appear
in what the command prints). Each ```python block is executed against a tiny trained model
(`test_readme_python_block_runs`). A line a new section adds is picked up and run by default.

How a line runs is decided in one place, `RULES` (first match wins): a `snakemake` line runs as a dry
run (`-n` inserted right after `snakemake`), Slurm's profile included; a stage run by hand with
`--study` prints its job's command (`--dry-run`); the test-suite lines only collect; the install
lines are skipped with their reason. Anything else runs for real, within `TIMEOUT` seconds: a line
too slow or needing what a fresh clone lacks gets a rule here, with its reason.

The copy holds the repository's tracked and untracked-but-not-ignored files (what a clone has, plus
work in progress), and a stand-in `.venv` whose `python` is this interpreter, except that `python -m pip
install` is recorded and not run (no network, no change to the real environment): `scripts/demo.sh`
and `scripts/test.sh` run their real install script. Commands run with the copy's package on
PYTHONPATH and SMOOTHSQUEEZE_DEVICE=cpu.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from conftest import ROOT

README = ROOT / "README.md"
#: Seconds a line may take (a dry run takes 3-8 s, the test-suite collection about 15 s, more on a loaded machine).
TIMEOUT = 600


# ---------------------------------------------------------------- reading the README


@dataclass(frozen=True)
class Command:
    """One command line of the README: where it is, the command as typed, what the README shows it printing."""

    line: int
    text: str
    comment: str = ""
    shown: tuple[str, ...] = ()  # output lines the README shows after a `$ ` prompt
    prompt: bool = False

    @property
    def id(self) -> str:
        return f"L{self.line}:{self.text[:60]}"


def _split_comment(line: str) -> tuple[str, str]:
    """`cmd  # comment` -> ('cmd', 'comment'), a `#` inside quotes or a word kept."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def _blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """Fenced blocks as (language, line number of the first content line, lines)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            out.append((fence.group(1), i + 2, lines[i + 1:end]))
            i = end
        i += 1
    return out


def readme_commands(text: str) -> list[Command]:
    """Every command line of a README text (see the module docstring)."""
    commands: list[Command] = []
    for lang, first, lines in _blocks(text):
        if lang == "bash":
            pending, start = "", first
            for offset, raw in enumerate(lines):
                if not pending:
                    start = first + offset
                if raw.rstrip().endswith("\\"):
                    pending += raw.rstrip()[:-1] + " "
                    continue
                command, comment = _split_comment(pending + raw)
                pending = ""
                if command.strip():
                    commands.append(Command(start, command.strip(), comment))
                alternative = re.match(r"or:\s*(.+)", comment)
                if alternative:
                    commands.append(Command(start, _split_comment(alternative.group(1))[0].strip(), "or"))
        elif lang == "":
            prompts = [k for k, raw in enumerate(lines) if raw.startswith("$ ")]
            for n, k in enumerate(prompts):
                end = prompts[n + 1] if n + 1 < len(prompts) else len(lines)
                command, comment = _split_comment(lines[k][2:])
                shown = tuple(raw for raw in lines[k + 1:end] if raw.strip())
                commands.append(Command(first + k, command.strip(), comment, shown, prompt=True))
    return commands


def python_blocks(text: str) -> list[tuple[int, str]]:
    return [(first, "\n".join(lines)) for lang, first, lines in _blocks(text) if lang == "python"]


# ---------------------------------------------------------------- how each line runs (the one place)


@dataclass(frozen=True)
class How:
    """How a README line runs here. `words(words)` rewrites it (its cheap or dry form); `skip` gives the reason it cannot run."""

    why: str
    words: Callable[[list[str]], list[str]] | None = None
    skip: bool = False
    needs: str | None = None  # a module the line needs (skipped, with the reason, when it is not installed)
    setup: Callable[[Path], None] | None = None  # prepares the copy (a config edit the README's comment describes)


def dry_run(words: list[str]) -> list[str]:
    """`-n` right after `snakemake`."""
    return [words[0], "-n", *words[1:]]


def append(*extra: str) -> Callable[[list[str]], list[str]]:
    return lambda words: [*words, *extra]


def edit_config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(copy: Path) -> None:
        config = yaml.safe_load((copy / "config.yaml").read_text())
        edit(config)
        (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return setup


#: How the README's lines run, first match on the command (regex) wins; the last rule runs a line as typed.
RULES: list[tuple[str, How]] = [
    (r"^(sudo )?apt(-get)? ", How("installs a Debian package as root from the network (CI's .ci/run installs it)", skip=True)),
    (r"^(python -m )?pip install ", How("installs from PyPI (network)", skip=True)),
    (r"^(python -m pytest|scripts/test\.sh)\b",
     How("runs the whole test suite: only collected (--collect-only -q), which checks its options and markers", append("--collect-only", "-q"))),
    (r"^scripts/demo\.sh\b", How("installs (pip stubbed), then builds the demo: Snakemake dry-runs (-n, passed on by demo.sh)", append("-n"))),
    (r"^snakemake\b.*--profile profiles/slurm\b",
     How("submits to a Slurm cluster: a dry run with the profile, which needs no cluster", dry_run, needs="snakemake_executor_plugin_slurm")),
    (r"^snakemake\b", How("would train: a dry run, -n right after snakemake", dry_run)),
    (r"^python -m smoothsqueeze (train|craft-blackbox|evaluate|analysis|audit|table-row)\b.*--study\b",
     How("a stage by hand: --dry-run prints its job's command (study, model and files resolved)", append("--dry-run"))),
    (r"^python -m smoothsqueeze project\b", How("times real steps of every kind of job: one of each (--steps 1 --warmup 1, small batches)",
                                                append("--steps", "1", "--warmup", "1", "--attack-batch", "8", "--train-batch", "4"))),
    (r"^(nice -n \d+ )?python benchmarks/calibrate_mnist5k\.py\b",
     How("trains models for an hour or more: --quick (k 20, 50 images) checks its options and that it runs", append("--quick"))),
    (r"", How("as typed")),
]
#: A `$ ` line whose comment says how the config differs from the shipped one: that edit, in the copy.
SETUPS: dict[str, Callable[[Path], None]] = {
    "with alpha: 1.5 in the third digits grid entry": edit_config(lambda c: c["studies"]["digits"]["grid"][2].update(alpha=1.5)),
}


def how(command: Command) -> How:
    rule = next(rule for pattern, rule in RULES if re.search(pattern, command.text))
    if command.comment in SETUPS:
        return How(rule.why + "; " + command.comment, rule.words, rule.skip, rule.needs, SETUPS[command.comment])
    return rule


def unique(commands: list[Command]) -> list[Command]:
    """Each distinct command once (the first line that has it): the same line typed twice runs once."""
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    out = []
    for command in commands:
        key = (command.text, command.comment if command.comment in SETUPS else "", command.shown)
        if key not in seen:
            seen.add(key)
            out.append(command)
    return out


COMMANDS = unique(readme_commands(README.read_text()))


# ---------------------------------------------------------------- the copy it runs in

STUB_PYTHON = """#!/bin/sh
# The README test's .venv/bin/python: `python -m pip install ...` is recorded, not run; the rest is the real interpreter.
if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "install" ]; then
    echo "$*" >> "$(dirname "$0")/../pip-installs.log"
    exit 0
fi
exec {python} "$@"
"""
STUB_ACTIVATE = """# The README test's .venv/bin/activate: this interpreter's environment, the copy's package first.
VIRTUAL_ENV={venv}
export VIRTUAL_ENV
PATH="{venv}/bin:{real_bin}:$PATH"
export PATH
"""


def _repository_files() -> list[str]:
    """What a clone holds, plus work in progress: tracked files and untracked ones git does not ignore."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True, timeout=60).stdout.decode()
        return [name for name in out.split("\0") if name and (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but what the pipeline and tools write
        skip = {".git", ".venv", "results", "data", ".snakemake", "benchmarks_out", "__pycache__", ".pytest_cache", "gpu_check-out"}
        return [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(ROOT).parts) and not p.relative_to(ROOT).as_posix().startswith("reports/")
                or p == ROOT / "reports" / "README.md"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository (see the module docstring), copied again for each line."""
    root = tmp_path_factory.mktemp("readme") / "repo"
    for name in _repository_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    return root


def _copy(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template with its stand-in .venv (its paths are the copy's own)."""
    copy = tmp_path / "repo"
    shutil.copytree(template, copy, symlinks=True)
    venv_bin = copy / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(STUB_PYTHON.format(python=shlex.quote(sys.executable)))
    (venv_bin / "python").chmod(0o755)
    (venv_bin / "activate").write_text(STUB_ACTIVATE.format(venv=shlex.quote(str(copy / ".venv")), real_bin=shlex.quote(str(Path(sys.executable).parent))))
    return copy


def _env(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SNAKEMAKE_")) and k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join([str(copy / ".venv" / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(copy / "workflow")
    env["SMOOTHSQUEEZE_DEVICE"] = "cpu"
    return env


def run_line(template: Path, tmp_path: Path, command: Command) -> tuple[list[str], subprocess.CompletedProcess]:
    rule = how(command)
    if rule.skip:
        pytest.skip(f"README line {command.line} `{command.text}`: {rule.why}")
    if rule.needs and importlib.util.find_spec(rule.needs) is None:
        pytest.skip(f"README line {command.line} `{command.text}`: {rule.why}; needs {rule.needs}, not installed")
    copy = _copy(template, tmp_path)
    if rule.setup:
        rule.setup(copy)
    words = shlex.split(command.text)
    if rule.words:
        words = rule.words(words)
    proc = subprocess.run(["bash", "-c", shlex.join(words)], cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=TIMEOUT)
    return words, proc


# ---------------------------------------------------------------- the tests


def test_the_readme_has_the_command_lines_it_is_known_for() -> None:
    """The parser finds the lines (a parser that found none would make the slow test pass vacuously)."""
    texts = [c.text for c in COMMANDS]
    assert "scripts/demo.sh" in texts and "snakemake mnist --cores 8 --resources gpu=2" in texts
    assert "python -m smoothsqueeze project --study mnist --config config.yaml --out p.csv" in texts  # a `# or:` comment
    prompts = [c for c in COMMANDS if c.prompt]
    assert prompts and all(c.shown for c in prompts)
    assert python_blocks(README.read_text())
    for command in COMMANDS:
        assert how(command).why, command


def test_the_parser_reads_comments_continuations_and_prompts() -> None:
    text = "```bash\nsnakemake a \\\n  --cores 2   # two cores\necho '# not a comment'  # or: ls -l\n```\n```\n$ snakemake x  # note\nsome output\n```\n"
    got = readme_commands(text)
    assert [(c.line, c.text, c.comment) for c in got] == [
        (2, "snakemake a    --cores 2", "two cores"), (4, "echo '# not a comment'", "or: ls -l"), (4, "ls -l", "or"), (7, "snakemake x", "note")]
    assert got[-1].shown == ("some output",) and got[-1].prompt


#: Options that take several values: a target written after one is read as one more value.
SEVERAL_VALUES = {"--resources": r"\w+=\S+", "--config": r"\S+=\S*", "--configfile": r"\S+\.(ya?ml|json)"}


def _snakemake_lines() -> list[tuple[str, str]]:
    """(where, command) for every `snakemake ...` in the docs, scripts, profiles and error messages."""
    files = [README, ROOT / "benchmarks" / "README.md", ROOT / "reports" / "README.md", *sorted((ROOT / "profiles").rglob("*.yaml")),
             *sorted((ROOT / "scripts").glob("*.sh")), ROOT / "config.yaml", ROOT / "Snakefile", *sorted((ROOT / "workflow").rglob("*.py")),
             *sorted((ROOT / "workflow").rglob("*.smk")), *sorted((ROOT / "workflow").rglob("*.yaml")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    out = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"snakemake\s[^`'\"\n#]*", line):
                out.append((f"{path.relative_to(ROOT)}:{n}", match.group(0)))
    return out


def test_no_target_is_written_after_an_option_that_takes_several_values() -> None:
    """`snakemake --cores 8 --resources gpu=2 mnist` reads `mnist` as a resource (a traceback); the target goes first."""
    bad = []
    for where, text in _snakemake_lines():
        words = text.split()
        for i, word in enumerate(words):
            if word in SEVERAL_VALUES:
                for value in words[i + 1:]:
                    if value.startswith("-") or value == "#":
                        break
                    if not re.fullmatch(SEVERAL_VALUES[word], value) and not re.fullmatch(r"\{[^}]+\}", value):  # a rule's placeholder
                        bad.append(f"{where}: {text.strip()}")
                        break
    assert bad == [], "put the target first:\n" + "\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command_runs_as_typed(command: Command, template: Path, tmp_path: Path) -> None:
    words, proc = run_line(template, tmp_path, command)
    output = proc.stdout + proc.stderr
    context = f"README line {command.line}: {shlex.join(words)} ({how(command).why})\n{output[-4000:]}"
    assert "Traceback" not in output, context
    if command.shown:  # the README shows what it prints: those lines, whatever the exit status (an error example)
        for line in command.shown:
            assert line.strip() in output, f"{context}\nmissing: {line}"
    else:
        assert proc.returncode == 0, context
    if words[0] == "snakemake" and "-n" in words:
        assert "This was a dry-run" in output or "config error" in output, context
    if words[0] in ("scripts/demo.sh", "scripts/test.sh"):  # the real install script ran up to its pip steps
        installs = (tmp_path / "repo" / ".venv" / "pip-installs.log").read_text()
        assert "-c constraints.txt -e ." in installs, f"{context}\n{installs}"


@pytest.mark.slow
@pytest.mark.parametrize(("line", "code"), python_blocks(README.read_text()), ids=lambda v: f"L{v}" if isinstance(v, int) else "")
def test_readme_python_block_runs(line: int, code: str, template: Path, tmp_path: Path) -> None:
    """Each ```python block, run in a copy whose data and named checkpoints exist (tiny models: 20 iterations)."""
    copy = _copy(template, tmp_path)
    env = _env(copy)
    sys.path.insert(0, str(copy / "workflow"))
    try:
        from smoothsqueeze.config import load_config
        from smoothsqueeze.study import Plan, as_json
    finally:
        sys.path.pop(0)
    plan = Plan(load_config(copy / "config.yaml"))
    for data in sorted(set(re.findall(r"data/(\w+)\.npz", code))):
        subprocess.run([sys.executable, "-m", "smoothsqueeze", "prepare-data", data, "--out", f"data/{data}.npz"], cwd=copy, env=env,
                       check=True, capture_output=True, timeout=TIMEOUT)
    for study, model in sorted(set(re.findall(r"results/([\w-]+)/models/([\w.-]+)/model\.pt", code))):
        spec = plan.train_spec(study, model)  # a model the study does not build fails here, naming the study's models
        spec["k"], spec["train"]["log_every"], spec["train"]["checkpoint_every"] = 20, 10, 20
        p = plan.paths
        subprocess.run([sys.executable, "-m", "smoothsqueeze", "train", "--spec", as_json(spec), "--data", plan.dataset_file(study),
                        "--checkpoint", p.checkpoint(study, model), "--metrics", p.metrics(study, model), "--settings-out", p.settings(study, model)],
                       cwd=copy, env=env, check=True, capture_output=True, timeout=TIMEOUT)
    proc = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"README line {line}:\n{code}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
