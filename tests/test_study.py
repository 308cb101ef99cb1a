"""The plan (smoothsqueeze/study.py), tested without Snakemake: names, kinds, labels, units, job
specs, paths, stage versions, and that the Snakefile and rules files reach the package only
through the plan and the config checker."""
from __future__ import annotations

import ast
import copy
import itertools
import re
from pathlib import Path

import pytest
import yaml

from smoothsqueeze import config as cfg
from smoothsqueeze import study
from smoothsqueeze.study import CLAIMS_OVERVIEW_FORMATS, Plan

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "workflow" / "rules"
PIPELINE_ORDER = ["data", "train", "evaluate", "analysis", "audit", "tables", "cost", "claims", "frontier", "report"]


@pytest.fixture(scope="module")
def config() -> dict:
    return cfg.validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))


@pytest.fixture(scope="module")
def plan(config: dict) -> Plan:
    return Plan(config)


# ---------------------------------------------------------------- names, kinds, labels


ADV = {"steps": 10, "step_size": 0.05, "eps": 0.2}


@pytest.mark.parametrize(
    ("entry", "mid", "fine", "coarse", "table", "legend"),
    [
        ({"k": 5}, "natural_k5", "natural", "natural", "natural", "natural"),
        ({"sigma": 0.3, "k": 5}, "noise0.3_k5", "noise", "regularized", "noise", "noise σ=0.3"),
        ({"alpha": 0.95, "k": 5}, "ls0.95_k5", "ls", "regularized", "LS", "LS α=0.95"),
        ({"alpha": 0.95, "sigma": 0.3, "k": 5}, "ls0.95_noise0.3_k5", "ls_noise", "regularized", "LS + noise", "LS α=0.95 + noise σ=0.3"),
        ({"beta": 2, "k": 5}, "sq2_k5", "lsq", "regularized", "LSQ", "LSQ β=2"),
        ({"beta": 2, "sigma": 0.3, "k": 5}, "sq2_noise0.3_k5", "lsq_noise", "regularized", "LSQ + noise", "LSQ β=2 + noise σ=0.3"),
        ({"alpha": 0.5, "beta": 2, "k": 5}, "ls0.5_sq2_k5", "other", "regularized", "LS + LSQ", "LS α=0.5 + LSQ β=2"),
        ({"adversarial": ADV, "k": 5}, "pgd10-eps0.2-step0.05_k5", "adv", "adversarial",
         "PGD-10 adv. (eps 0.2, step 0.05)", "PGD-10 adv. ε=0.2, step 0.05"),
        ({"adversarial": ADV, "sigma": 0.3, "k": 5, "seed": 1}, "noise0.3_pgd10-eps0.2-step0.05_k5_seed1", "other", "adversarial",
         "PGD-10 adv. (eps 0.2, step 0.05) + noise", "PGD-10 adv. ε=0.2, step 0.05 + noise σ=0.3"),
        ({"adversarial": {**ADV, "random_start": False}, "k": 5}, "pgd10-eps0.2-step0.05-norand_k5", "adv", "adversarial",
         "PGD-10 adv. (eps 0.2, step 0.05)", "PGD-10 adv. ε=0.2, step 0.05"),
    ],
)
def test_one_entry_one_name_kind_and_labels(entry: dict, mid: str, fine: str, coarse: str, table: str, legend: str) -> None:
    assert study.model_id(entry) == mid
    assert study.kind(entry) == fine and study.coarse_kind(entry) == coarse
    assert study.defense_label(entry) == table
    assert study.legend_label(entry) == legend
    assert study.legend_label(entry, with_k=True) == f"{legend}, k=5"


def test_zero_parameters_are_absent() -> None:
    """A filled-in default of 0 (the schema's) names and classifies like a missing key."""
    entry = {"alpha": 0, "beta": 0, "sigma": 0, "k": 7, "adversarial": None}
    assert study.model_id(entry) == "natural_k7" and study.kind(entry) == "natural" and study.defense_label(entry) == "natural"


def test_coarse_kind_is_derived_from_the_fine_kind_for_every_combination() -> None:
    """The old rule (any adversarial -> adversarial, else any regulariser -> regularized) for all 16 combinations."""
    for a, b, s, adv in itertools.product([0, 0.5], [0, 2], [0, 0.3], [None, ADV]):
        entry = {"alpha": a, "beta": b, "sigma": s, "adversarial": adv, "k": 1}
        expected = "adversarial" if adv else ("regularized" if a or b or s else "natural")
        assert study.coarse_kind(entry) == expected, entry
        assert study.kind(entry) in (*study.FINE_KINDS, "other")


def test_vocabulary_orders_every_rendering_the_same_way() -> None:
    entry = {"alpha": 0.1, "beta": 0.2, "sigma": 0.3, "k": 1}
    prefixes = [t.id_prefix for t in study.VOCABULARY]
    assert [p for p in re.findall(r"[a-z]+", study.model_id(entry)) if p in prefixes] == prefixes
    assert study.defense_label(entry) == " + ".join(t.short for t in study.VOCABULARY)
    assert [part.split()[0] for part in study.legend_label(entry).split(" + ")] == [t.short for t in study.VOCABULARY]


def test_study_units_are_for_display_only() -> None:
    entry = {"sigma": 30, "k": 1, "adversarial": {"steps": 7, "step_size": 2, "eps": 8}}
    assert study.legend_label(entry, 255) == "PGD-7 adv. ε=8/255, step 2/255 + noise σ=30/255"
    assert study.params01(entry, 255)["sigma"] == pytest.approx(30 / 255)
    assert study.units_text(0.3, 1) == "0.3" and study.units_text(8, 255) == "8/255"


# ---------------------------------------------------------------- resolved settings and job specs


def test_cifar10_specs_are_in_unit_interval_where_named_so(plan: Plan) -> None:
    mid = plan.model_ids("cifar10")[0]
    audit = plan.audit_spec("cifar10", mid)["settings"]
    large = plan.study("cifar10")["audit"]["large_eps"]
    assert audit["eps01"] == pytest.approx(8 / 255) and audit["large_eps01"] == pytest.approx(large / 255 if large else 0.5)
    assert "eps" not in audit and "large_eps" not in audit
    evaluate = plan.evaluate_spec("cifar10", mid)
    assert evaluate["info"]["eps"] == 8 and evaluate["info"]["pixel_units"] == 255  # study units, for display
    assert all(a["eps01"] == pytest.approx(8 / 255) for a in evaluate["whitebox"])  # resolved attacks: [0, 1]
    assert plan.analysis_spec("cifar10", mid)["eps"] == 8  # Eq. 4 is computed per study pixel unit
    noisy = next(m for m, e in plan.entries("cifar10").items() if e.get("sigma"))
    assert plan.train_spec("cifar10", noisy)["sigma01"] == pytest.approx(plan.entry("cifar10", noisy)["sigma"] / 255)


def test_no_unit_interval_value_goes_by_a_study_unit_name(plan: Plan) -> None:
    """`eps`, `step_size` and `sigma` mean the study's units; resolved [0, 1] values never use them."""
    for name in plan.config["studies"]:
        for mid in plan.model_ids(name):
            train = plan.train_spec(name, mid)
            assert "sigma" not in train and "sigma01" in train, (name, mid)
            assert not {"eps", "step_size"} & set(train["adversarial"] or {}), (name, mid)
        attacks = plan.evaluate_spec(name, plan.model_ids(name)[0])["whitebox"]
        attacks += [plan.blackbox_spec(name, bb)["attack"] for bb in plan.blackbox_names(name)]
        assert attacks and all({"eps01", "step_size01"} <= set(a) and not {"eps", "step_size"} & set(a) for a in attacks), name


def test_legacy_names_are_upgraded_to_the_names_that_say_their_unit(plan: Plan) -> None:
    """Training settings as the code before the rename wrote them (finished models, resume keys) read as today's."""
    mid = "pgd7-eps8-step2_k80000"
    settings = plan.train_spec("cifar10", mid)
    old = copy.deepcopy(settings)
    old["sigma"] = old.pop("sigma01")
    old["adversarial"]["eps"] = old["adversarial"].pop("eps01")
    old["adversarial"]["step_size"] = old["adversarial"].pop("step_size01")
    assert study.upgrade_legacy_names(old) == settings
    assert old["adversarial"]["eps"] == pytest.approx(8 / 255)  # a copy: the old settings are left as they were
    assert study.upgrade_legacy_names(settings) == settings  # today's names pass unchanged
    # The grid entry inside the settings is in study units and keeps its names.
    entry = study.upgrade_legacy_names(old)["config_entry"]
    assert entry == plan.entry("cifar10", mid) and (entry["adversarial"]["eps"], entry["adversarial"]["step_size"]) == (8, 2)
    natural = plan.train_spec("cifar10", next(m for m, e in plan.entries("cifar10").items() if study.kind(e) == "natural"))
    old_natural = {**{k: v for k, v in natural.items() if k != "sigma01"}, "sigma": 0}
    assert study.upgrade_legacy_names(old_natural) == natural and natural["adversarial"] is None


def test_audit_and_analysis_blocks_get_their_schema_defaults(config: dict, plan: Plan) -> None:
    digits = config["studies"]["digits"]
    assert digits["analysis"]["batch_size"] == study.ANALYSIS_BATCH_SIZE
    assert set(digits["audit"]) >= {"autoattack", "pgd", "sweep_steps", "large_eps", "level"}
    spec = plan.audit_spec("digits", plan.model_ids("digits")[0])
    assert spec["settings"]["seed"] == digits["seed"] and spec["settings"]["batch_size"] == digits["attack"]["batch_size"]


@pytest.mark.parametrize(
    ("block", "value", "message"),
    [
        ("analysis", {"table_layout": "wide"}, "config error: studies.digits.analysis.table_layout = 'wide': must be one of ['combined', 'split']"),
        ("analysis", {"batch_size": 0}, "config error: studies.digits.analysis.batch_size = 0: must be >= 1"),
        ("audit", {"pgd": {"steps": 0}}, "config error: studies.digits.audit.pgd.steps = 0: must be >= 1"),
        ("audit", {"autoattack": {"attacks": ["pgd"]}}, "config error: studies.digits.audit.autoattack.attacks[0] = 'pgd'"),
        ("audit", {"stepz": 3}, "config error: studies.digits.audit: unknown key"),
    ],
)
def test_analysis_and_audit_errors_are_one_line_naming_the_key(block: str, value: dict, message: str) -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["studies"]["digits"][block] = value
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate_config(config)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), err.value


def test_table_layout_default_follows_the_dataset(config: dict, plan: Plan) -> None:
    assert plan.study_table_names("digits") == ["accuracy", "eq4"]
    assert plan.study_table_names("cifar10") == ["whitebox", "blackbox", "eq4"]
    changed = copy.deepcopy(config)
    changed["studies"]["cifar10"]["analysis"]["table_layout"] = "combined"
    assert Plan(changed).study_table_names("cifar10") == ["accuracy", "eq4"]


def test_paper_tables_only_at_the_papers_eps(plan: Plan) -> None:
    assert plan.paper_table_names("digits") == []
    assert plan.paper_table_names("mnist") == ["table1", "table5"]
    assert plan.paper_table_names("cifar10") == ["table1", "table6", "table7"]
    assert all(study.paper_csv(name).is_file() for name in study.PAPER_TABLE_FILES)


def test_eq4_table_rows_leave_regularised_models_out(plan: Plan) -> None:
    rows = plan.table_rows("digits", "eq4")
    kinds = {study.coarse_kind(plan.entry("digits", Path(r).stem)) for r in rows}
    assert kinds == {"natural", "adversarial"} and len(plan.table_rows("digits")) == len(plan.model_ids("digits"))
    natural = plan.model_ids("digits")[0]
    assert "analysis" in plan.row_inputs("digits", natural)


# ---------------------------------------------------------------- paths and targets


def test_each_path_pattern_is_one_function_for_wildcards_and_values(plan: Plan) -> None:
    p = plan.paths
    for fn in (p.checkpoint, p.metrics, p.settings, p.record, p.analysis, p.analysis_summary, p.audit, p.row):
        assert fn("{study}", "{model}").format(study="digits", model="natural_k3000") == fn("digits", "natural_k3000")
    assert p.table("{study}", "{table}", "csv").format(study="s", table="eq4") == p.table("s", "eq4", "csv")


def test_study_targets_are_unique_and_end_in_the_report(plan: Plan) -> None:
    for name in plan.config["studies"]:
        targets = plan.study_targets(name)
        assert len(targets) == len(set(targets))
        assert plan.paths.report(name) in targets and plan.paths.report(name) not in plan.report_inputs(name)
        # the across-studies ledger is built with every study but is no input of one study's report
        overview = [plan.paths.claims_overview(ext) for ext in CLAIMS_OVERVIEW_FORMATS]
        assert set(overview) <= set(targets) and not set(overview) & set(plan.report_inputs(name))
        assert len(plan.report_inputs(name)) == len(targets) - 1 - len(overview)


# ---------------------------------------------------------------- versions and the rules files


def _rules() -> dict[str, str]:
    """rule name -> its text, over every rules file."""
    out: dict[str, str] = {}
    for path in RULES.glob("*.smk"):
        for block in re.split(r"\n(?=rule )", path.read_text()):
            match = re.match(r"rule (\w+):", block)
            if match:
                out[match.group(1)] = block
    return out


def test_every_versioned_rule_reads_its_own_entry_of_the_one_version_table() -> None:
    rules = _rules()
    versioned = {name: re.findall(r"version=(.+),", text) for name, text in rules.items() if "version=" in text}
    assert set(versioned) == set(study.STAGE_VERSIONS)
    for name, found in versioned.items():
        assert found == [f'STAGE_VERSIONS["{name}"]'], (name, found)
    from smoothsqueeze import CODE_VERSION, TRAIN_CODE_VERSION
    from smoothsqueeze.analysis import settings as analysis_settings

    assert (CODE_VERSION, TRAIN_CODE_VERSION) == (study.CODE_VERSION, study.TRAIN_CODE_VERSION)
    assert analysis_settings.VERSION == study.ANALYSIS_VERSION


def test_snakefile_includes_rules_in_pipeline_order() -> None:
    included = re.findall(r'^include: "workflow/rules/(\w+)\.smk"', (ROOT / "Snakefile").read_text(), flags=re.M)
    assert included == PIPELINE_ORDER
    assert sorted(included) == sorted(p.stem for p in RULES.glob("*.smk"))
    assert not (RULES / "functions").exists()


def test_workflow_files_import_only_the_plan_and_the_config_checker() -> None:
    allowed = {"smoothsqueeze.study", "smoothsqueeze.config", "smoothsqueeze.job_environment", "smoothsqueeze.console"}  # console: torch-free too
    for path in [ROOT / "Snakefile", *RULES.glob("*.smk")]:
        modules = set(re.findall(r"^from (smoothsqueeze[\w.]*) import", path.read_text(), flags=re.M))
        modules |= set(re.findall(r"^import (smoothsqueeze[\w.]*)", path.read_text(), flags=re.M))
        assert modules <= allowed, (path.name, modules - allowed)


def test_each_rules_file_imports_the_plan_names_it_uses() -> None:
    """No rules file leans on a name that another rules file happened to define."""
    tree = ast.parse((ROOT / "workflow" / "smoothsqueeze" / "study.py").read_text())
    exported = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    exported |= {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign)) for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                 if isinstance(t, ast.Name)}
    exported = {n for n in exported if not n.startswith("_")}
    for path in RULES.glob("*.smk"):
        text = path.read_text()
        imported = set()
        for block in re.findall(r"^from smoothsqueeze\.study import \(?([^)\n]*(?:\n[^)]*)?)\)?", text, flags=re.M):
            imported |= {name.strip() for name in block.replace("\n", ",").split(",") if name.strip()}
        used = {name for name in exported if re.search(rf"(?<![\w.]){name}\b", text)}
        assert used <= imported | {"plan"}, (path.name, used - imported)
        assert "plan = Plan(config)" in text or "plan." not in text, path.name


def test_plan_module_is_torch_free_and_io_free() -> None:
    tree = ast.parse((ROOT / "workflow" / "smoothsqueeze" / "study.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert modules <= {"__future__", "copy", "json", "math", "dataclasses", "pathlib", "typing"}, modules
    calls = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert not calls & {"read_text", "read_bytes", "open", "write_text", "exists", "glob"}, calls & {"read_text", "open"}


def test_gpu_slots_a_wide_resnet_job_holds_a_whole_card_and_a_small_cnn_one_slot(config: dict) -> None:
    shared = copy.deepcopy(config)
    shared["gpu_slots"] = 4
    plan4 = Plan(shared)
    assert plan4.gpu_slots("cifar10") == 4 and plan4.gpu_job_slots("cifar10") == "all"  # wide ResNet
    assert plan4.gpu_slots("mnist") == 1 and plan4.gpu_job_slots("mnist") == "1"
    assert Plan(config).gpu_slots("cifar10") == 1  # default: one job per card
    from smoothsqueeze.gpu_claim import SLOTS_ENV, WHOLE_DEVICE_ARCHITECTURES

    assert study.WHOLE_DEVICE_ARCHITECTURES == WHOLE_DEVICE_ARCHITECTURES and study.GPU_SLOTS_ENV == SLOTS_ENV  # plan and claimer agree


def test_gpu_slots_must_be_a_positive_integer(config: dict) -> None:
    bad = copy.deepcopy(config)
    bad["gpu_slots"] = 0
    with pytest.raises(cfg.ConfigError, match="gpu_slots"):
        cfg.validate_config(bad)


def test_training_jobs_start_with_the_blackbox_source_then_adversarial_training() -> None:
    plan = study.Plan(cfg.load_config(Path(__file__).resolve().parent.parent / "config.yaml"))
    source = plan.study("digits")["blackbox"]["source"]
    priorities = {m: plan.train_priority("digits", m) for m in plan.model_ids("digits")}
    assert priorities[source] == 3 and max(p for m, p in priorities.items() if m != source) == 2
    assert {m for m, p in priorities.items() if p == 2} == {m for m in priorities if m.startswith(("pgd", "fgsmrs", "nfgsm"))}
    assert min(priorities.values()) == 1  # above every later stage's default 0: all training first
    rules = (Path(__file__).resolve().parent.parent / "workflow" / "rules").glob("*.smk")
    assert [r.name for r in rules if "priority:" in r.read_text()] == ["train.smk"]
