# Shared helpers: config validation at load time, paths, and the per-model settings each rule passes.
import json
import sys
from pathlib import Path

PACKAGE_ROOT = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, PACKAGE_ROOT)

from smoothsqueeze.job_environment import prepare_job_environment

prepare_job_environment(PACKAGE_ROOT)


from smoothsqueeze import CODE_VERSION, TRAIN_CODE_VERSION
from smoothsqueeze import config as sscfg
from smoothsqueeze.errors import PipelineError

try:
    sscfg.validate_config(config)
except PipelineError as _err:
    sys.exit(str(_err))

RESULTS = config["results_dir"]
REPORTS = config["reports_dir"]
DATA = config["data_dir"]
TORCH_ENV = "../../envs/torch.yaml"
ANALYSIS_ENV = "../../envs/analysis.yaml"


wildcard_constraints:
    study="[A-Za-z0-9_-]+",
    model="[A-Za-z0-9_.-]+",
    dataset="digits|mnist|fashion_mnist|cifar10",
    attack="[a-z0-9_]+",


def study_cfg(study):
    return sscfg.study(config, study)


def dataset_file(study):
    return f"{DATA}/{study_cfg(study)['dataset']}.npz"


def model_dir(study, model):
    return f"{RESULTS}/{study}/models/{model}"


def checkpoint_file(study, model):
    return f"{model_dir(study, model)}/model.pt"


def model_ids(study):
    return sscfg.model_ids(config, study)


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def resolved_attacks(study, attacks):
    st = study_cfg(study)
    return [sscfg.resolve_attack(a, st["attack"]["eps"], st.get("pixel_units", 1)) for a in attacks]


#: Functions study -> list of final files; each stage's .smk appends its own.
STUDY_TARGETS = []


def study_targets(study):
    """Every final file of a study, from all registered stages."""
    return [path for targets in STUDY_TARGETS for path in targets(study)]


# Each stage's helper functions live in functions/<stage>.smk (rules files hold rules only).
for _helpers in sorted(Path(workflow.basedir, "workflow", "rules", "functions").glob("*.smk")):

    include: str(_helpers)
