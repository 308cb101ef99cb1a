"""The robustness-per-cost frontier of a study (issue 27): one point per defense (grid entry, over its
seeds), x its training cost relative to the study's natural model, y its accuracy under the audit's
per-image strongest attack, and the Pareto set of those points. Beyond the paper: it sets the paper's
regularisers beside PGD-k and single-step adversarial training (FGSM-RS, N-FGSM) at equal cost.

- `points`: one point per grid entry from the records, audits, metrics and cost table (read through
  `smoothsqueeze.claims.inputs`); collapsed and catastrophically overfitted models are marked.
- `pareto`: the Pareto set (lower cost, higher strongest-attack accuracy), ties documented there.
- `table`: reports/<study>/frontier.{csv,tex,html}; `figure`: frontier.{pdf,png} and the figure's
  LaTeX caption file, frontier_figure.tex.

Command line: `python -m smoothsqueeze frontier --study S ...` (the `frontier` rule).
"""
