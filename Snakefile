# smoothsqueeze: reproduce and audit "Label smoothing and logit squeezing: a replacement for
# adversarial training?" One cached stage per rule; logic lives in workflow/smoothsqueeze.
# The plan (model ids, job specs, paths, stage versions, each study's final files) is one
# torch-free module, smoothsqueeze/study.py; this file loads only it and the config checker,
# then includes the rules files in pipeline order.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

PACKAGE_ROOT = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, PACKAGE_ROOT)

import smoothsqueeze.console as console
from smoothsqueeze.config import ConfigError, validate_config
from smoothsqueeze.job_environment import prepare_job_environment
from smoothsqueeze.study import GPU_SLOTS_ENV, Plan

prepare_job_environment(PACKAGE_ROOT)

# One fork server per local run imports torch once for every job (smoothsqueeze.jobserver);
# never for dry runs (onstart does not run) or jobs on cluster nodes. SMOOTHSQUEEZE_JOBSERVER=off turns it off.
_JOBSERVER = {}


onstart:
    if workflow.is_main_process and workflow.local_exec:
        from smoothsqueeze import jobserver

        _JOBSERVER["server"] = jobserver.start()


onsuccess:
    from smoothsqueeze import jobserver

    jobserver.stop(_JOBSERVER.pop("server", None))
    # The run's last lines: each study report it built or found up to date, and that study's claims
    # ledger, one line per claim (smoothsqueeze.console.summary: extend it there).
    console.at_end(console.summary(config, console.dag_files(workflow)))


onerror:
    from smoothsqueeze import jobserver

    jobserver.stop(_JOBSERVER.pop("server", None))


configfile: "config.yaml"


try:
    validate_config(config)
except ConfigError as _err:
    sys.exit(str(_err))

# Jobs sharing one GPU: every job (local or Slurm) inherits the slots per device; a value already
# in the environment wins over the config's.
os.environ.setdefault(GPU_SLOTS_ENV, str(config["gpu_slots"]))


report: "workflow/report/workflow.rst"


wildcard_constraints:
    study="[A-Za-z0-9_-]+",
    model="[A-Za-z0-9_.-]+",
    dataset="digits|mnist|fashion_mnist|cifar10|mnist5k",
    attack="[a-z0-9_]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/cost.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/frontier.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        Plan(config).study_targets(config["default_study"]),


for _study in config["studies"]:

    rule:
        name:
            _study
        input:
            Plan(config).study_targets(_study),


# The console: a target no rule makes stops here, naming the studies and files that exist
# (Snakemake's own MissingRuleException names neither). A successful run ends on the path of each
# study's report it built (onsuccess, above) or found up to date (Snakemake then calls no handler).
_target_error = console.check_targets(workflow, config, sys.argv)
if _target_error:
    sys.exit(_target_error)

console.announce_when_nothing_to_do(workflow, config)
