"""A --configfile that is missing, not YAML, or not a mapping stops the real command with a non-zero
exit before any job, and says what is wrong.

Snakemake reads --configfile itself, before the Snakefile runs (snakemake.settings.types.ConfigSettings),
so neither the Snakefile nor smoothsqueeze.config can shape these messages: Snakemake 9 prints one
`WorkflowError` line for a file that is not YAML or not a mapping (without naming the file), and a
traceback ending in `FileNotFoundError: ... '<path>'` for a missing file (its own `except
FileNotFoundError` does not cover the `open`). These tests pin what the command does today, so an
upgrade that changes it is noticed; the pipeline's own config errors (schema) are one line, see
test_config.py and test_bad_inputs.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_snakemake


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "No such file or directory"),
        ("studies: [1, 2\n", "Config file is not valid JSON or YAML"),
        ("- 1\n- 2\n", "Config file must be given as JSON or YAML with keys at top level"),
    ],
    ids=["missing", "not-yaml", "not-a-mapping"],
)
def test_bad_configfile_stops_before_any_job(tmp_path: Path, content: str | None, says: str) -> None:
    configfile = tmp_path / "my config.yaml"
    if content is not None:
        configfile.write_text(content)
    workdir = tmp_path / "work"
    workdir.mkdir()
    proc = run_snakemake(workdir, "-n", configfile=configfile, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert says in output, output
    if content is None:
        assert str(configfile) in output, output  # the missing file is named
    assert not any(p.name in ("results", "data", "reports") for p in workdir.iterdir())
