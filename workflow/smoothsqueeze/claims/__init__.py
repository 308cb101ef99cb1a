"""The claims ledger: the paper's claims (C1-C20, and C21 beyond it) decided, study by study, from
the pipeline's own artifacts. Torch-free (numpy, scipy, pandas).

- `verdicts`: the fixed vocabulary: holds; fails; holds under the paper's attacks only (the audit's
  per-image strongest attack breaks it: gradient masking); within noise; not testable here.
- `registry`: every claim as one unit (statement, place, the paper's numbers, what it reads, what it
  needs, its rule in words and in code). Start reading here.
- `measure`: differences with their noise floor (paired per image, Wilson/Newcombe, bootstrap over
  images, Welch over seeds) and how parts of a claim combine; `compare`: comparisons of two grid
  entries over their seeds, and the gradient-masking check against the audit.
- `inputs`: a study's records, audits, analysis arrays, metrics and cost table as one object.
- `ledger`: evaluate every claim on a study, write its ledger, and the ledger across studies.
- `render`: the ledger as CSV, Markdown, LaTeX and HTML (through smoothsqueeze.render);
  `console`: one line per claim at the end of a `snakemake` run.

Command line: `python -m smoothsqueeze claims --study S ...` (the `claims` rule), `python -m
smoothsqueeze claims --study S --print` (the ledger from the records, to stdout), and
`python -m smoothsqueeze claims-overview ...` (every built study).
"""
