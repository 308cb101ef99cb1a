"""The `frontier` stage: a study's spec (study.Plan.frontier_spec) in, the frontier's files out."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..claims import inputs
from . import figure, points, table

#: Output keys (the CLI's options and the rule's named outputs).
OUTPUTS = ("csv", "tex", "html", "pdf", "png", "figure_tex")


def run(spec: Mapping[str, Any], outputs: Mapping[str, str | Path | None]) -> list[points.Point]:
    """Build the study's points from the files of `spec` and write every output that is given."""
    ev = inputs.load(spec)
    pts = points.build(ev)
    natural = points.natural_of(ev)
    table.write(pts, spec["study"], natural, outputs.get("csv"), outputs.get("tex"), outputs.get("html"))
    if any(outputs.get(k) for k in ("pdf", "png", "figure_tex")):
        figure.write(pts, spec["study"], natural, outputs.get("pdf"), outputs.get("png"), outputs.get("figure_tex"))
    return pts


def summary(pts: list[points.Point]) -> str:
    """One line per point (the job's log and `--print`)."""
    lines = [f"{'model':<40} {'cost':>8} {'strongest':>16} {'clean':>6}  pareto  status"]
    for p in pts:
        s = p.strongest
        lines.append(f"{p.group:<40} {p.passes_ratio:>7.3g}x {s.mean:>6.1f} ± {s.sd:>4.1f} [{s.lo:.0f}, {s.hi:.0f}] "
                     f"{p.clean.mean:>6.1f}  {'yes' if p.pareto else 'no':<6}  {p.status}")
    return "\n".join(lines)
