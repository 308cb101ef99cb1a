"""The fast subset (`pytest -m "not slow and not slurm"`) stays fast: every test that builds a study
or starts a subprocess carries the `slow` (or `slurm`) marker. Checked on the test sources (ast), so
a new test that forgets its marker fails here instead of slowing the subset down unnoticed.

A test counts as starting processes when its body, a helper it calls or a fixture it requests
(conftest's tiny_study / tiny_copy included, transitively) calls `subprocess.run/Popen/...` or the
Snakemake runners."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: Calls that start a process (attribute calls on `subprocess`, and the test suite's runners).
PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
RUNNERS = {"run_snakemake", "start_snakemake"}
MARKS = {"slow", "slurm"}


def _calls(node: ast.AST) -> set[str]:
    """Names a function body calls: plain names, and `subprocess.X` as 'subprocess.X'."""
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            f = sub.func
            if isinstance(f, ast.Name):
                out.add(f.id)
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                out.add(f"{f.value.id}.{f.attr}")
    return out


def _starts_process(calls: set[str], slow_names: set[str]) -> bool:
    return bool(calls & slow_names) or any(c.startswith("subprocess.") and c.split(".", 1)[1] in PROCESS_CALLS for c in calls)


def _decorator_names(fn: ast.FunctionDef) -> set[str]:
    names = set()
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def _is_fixture(fn: ast.FunctionDef) -> bool:
    return "fixture" in _decorator_names(fn) or any(isinstance(d, ast.Name) and d.id == "fixture" for d in fn.decorator_list)


def _module_marks(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            return {a.attr for a in ast.walk(node.value) if isinstance(a, ast.Attribute)} & MARKS
    return set()


def _slow_definitions(tree: ast.Module, known: set[str]) -> set[str]:
    """Module-level functions, classes and fixtures that (transitively) start processes."""
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    slow = set(known)
    changed = True
    while changed:
        changed = False
        for name, node in defs.items():
            if name in slow:
                continue
            args = {a.arg for a in node.args.args} if isinstance(node, ast.FunctionDef) and _is_fixture(node) else set()
            if _starts_process(_calls(node), slow) or args & slow:
                slow.add(name)
                changed = True
    return slow


def unmarked_process_tests() -> list[str]:
    conftest = ast.parse((TESTS / "conftest.py").read_text())
    shared = _slow_definitions(conftest, RUNNERS) & {n.name for n in conftest.body if isinstance(n, ast.FunctionDef) and _is_fixture(n)}
    missing = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        slow = _slow_definitions(tree, RUNNERS | shared)
        if _module_marks(tree):
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                args = {a.arg for a in node.args.args}
                if (_starts_process(_calls(node), slow) or args & slow) and not (_decorator_names(node) & MARKS):
                    missing.append(f"{path.name}::{node.name}")
    return missing


def test_every_test_that_starts_processes_is_marked_slow() -> None:
    missing = unmarked_process_tests()
    assert not missing, "mark these @pytest.mark.slow (they build a study or start subprocesses): " + ", ".join(missing)


def test_the_check_sees_fixtures_helpers_and_conftest(tmp_path: Path) -> None:
    source = (
        "import subprocess, pytest\n"
        "class Holder:\n    def __init__(self):\n        self.p = subprocess.Popen(['true'])\n"
        "@pytest.fixture\ndef holders():\n    return Holder()\n"
        "def test_direct():\n    subprocess.run(['true'])\n"
        "def test_by_fixture(holders):\n    pass\n"
        "def test_by_conftest(tiny_study):\n    pass\n"
        "def test_by_helper():\n    Holder()\n"
        "@pytest.mark.slow\ndef test_marked():\n    subprocess.run(['true'])\n"
        "def test_plain():\n    assert 1\n"
    )
    tree = ast.parse(source)
    slow = _slow_definitions(tree, RUNNERS | {"tiny_study"})
    flagged = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
               and (_starts_process(_calls(n), slow) or {a.arg for a in n.args.args} & slow) and not _decorator_names(n) & MARKS}
    assert flagged == {"test_direct", "test_by_fixture", "test_by_conftest", "test_by_helper"}
