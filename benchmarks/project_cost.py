"""Projected device-hours of a study on this machine's device, before launching it.

Times a few steps of every kind of job the study's grid holds (smoothsqueeze.projection) and
scales them by the grid's iteration and attack counts. Writes a CSV (one row per model, one per
black-box set, a TOTAL row; seconds per stage, device-hours, Slurm runtimes with a margin), the
summary line beside it (<out stem>.txt) and prints both. Same command as
`python -m smoothsqueeze project`, with this checkout's config.yaml as the default --config.

    python benchmarks/project_cost.py --study mnist --steps 3 --out projection.csv
    python benchmarks/project_cost.py --study mnist cifar10 --out 'projection-{study}.csv' --json timings.json
    python benchmarks/project_cost.py --study mnist --device cpu --threads 1 --clock cpu --out p.csv   # core-hours on a shared CPU
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:  # an installed (or editable) package wins; a fresh clone imports it from workflow/
    import smoothsqueeze  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "workflow"))

from smoothsqueeze import projection  # noqa: E402
from smoothsqueeze.cli_support import OneLineParser, exit_status  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """`python -m smoothsqueeze project` with this checkout's config.yaml as the default --config."""
    parser = OneLineParser(prog="benchmarks/project_cost.py", description=__doc__.splitlines()[0])
    projection.add_arguments(parser, default_config=str(ROOT / "config.yaml"))
    args = parser.parse_args(argv)
    return exit_status(lambda: projection.run(args))


if __name__ == "__main__":
    sys.exit(main())
