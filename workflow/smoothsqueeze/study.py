"""The study plan: which jobs exist, what each job is told, and how a model is named and labelled.

Torch-free and I/O-free: the Snakefile imports only this module and `config` when it loads, and
every rule's job spec, path, target list and version comes from here. To follow a setting from
config.yaml to a table cell, read this module:

- names: `model_id(entry)` (the folder; `adversarial_tag` for the adversarial-training part, whose
  `method` is pgd, fgsm_rs or nfgsm: `ADV_METHODS`), `kind(entry)` (fine: natural, adv, noise, ls, ls_noise,
  lsq, lsq_noise, other) and `coarse_kind(entry)` (natural | regularized | adversarial, derived
  from the fine kind), `defense_label` (tables), `legend_label` (figures): all rendered from one
  ordered vocabulary, `VOCABULARY` (+ `ADVERSARIAL`).
- units: a study writes `eps`, `sigma` and step sizes in its `pixel_units` (255 for CIFAR-10).
  Resolved settings say which unit they hold: `eps01` / `step_size01` / `sigma01` /
  `large_eps01` are in [0, 1] pixel units (training settings from `resolve_model`, attacks from
  `resolve_attack`, the audit's `audit_settings`); `eps` is the study's units, kept for display
  (`units_text`). Models finished, and resume points written, before training settings said
  their unit hold the old names (`sigma`, `adversarial.eps`, `adversarial.step_size`):
  `upgrade_legacy_names` (table `LEGACY_NAMES`) renames them before training compares settings,
  so such a model is restored or resumed, not refused or retrained.
- jobs: `Plan(config)` gives each stage's spec (the JSON its job is told), its paths
  (`Paths`, each pattern written once, also used with wildcards in rule outputs) and a study's
  final files (`study_targets`).
- versions: `STAGE_VERSIONS`, the `version` param of every rule (bump one to rerun that stage).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

#: Data the package carries (installed with it: see pyproject.toml's package-data).
RESOURCES = Path(__file__).resolve().parent / "resources"
SCHEMA_FILE = RESOURCES / "config.schema.yaml"
PAPER_DIR = RESOURCES / "paper"

# ---------------------------------------------------------------- versions

#: Bump when a change alters what a stage computes; rules pass their stage's version as a param
#: so Snakemake reruns the affected jobs (edits to an imported package do not trigger reruns).
CODE_VERSION = "2"
#: The training stage's own version: bumping it retrains (and, for finished models, is refused
#: until their folders are deleted), so it moves only when training itself changes.
TRAIN_CODE_VERSION = "2"
ANALYSIS_VERSION = "2"  # 2: Eq. 4 over every wrong class (eps_l_all ...), prediction by the nearest class
FIGURES_VERSION = "4"  # 4: paper style (numbers in caption files), ICLR widths, selection.json; 3: print sizes, TrueType fonts, one style per model kind
AUDIT_VERSION = "audit2"  # 2: per-image results, claim and strongest attack on the same images, three-way flags
TABLES_VERSION = "tables4"  # 4: one renderer, \label on every table, shrink-to-width boxes, math-mode notation
CLAIMS_VERSION = "claims2"  # the claims ledger (smoothsqueeze.claims): bump when a rule changes (2: C21 and the overview name the frontier)
FRONTIER_VERSION = "frontier1"  # robustness per training cost (smoothsqueeze.frontier)

#: rule name -> the version it passes as a param. The one table of stage versions.
#: Slots per GPU, for the jobs (as smoothsqueeze.gpu_claim.SLOTS_ENV; the Snakefile exports the config's value).
GPU_SLOTS_ENV = "SMOOTHSQUEEZE_GPU_SLOTS"
#: Architectures whose GPU jobs keep a whole device (as smoothsqueeze.gpu_claim.WHOLE_DEVICE_ARCHITECTURES).
WHOLE_DEVICE_ARCHITECTURES = frozenset({"wide_resnet"})

STAGE_VERSIONS: dict[str, str] = {
    "prepare_data": CODE_VERSION,
    "train": TRAIN_CODE_VERSION,
    "craft_blackbox": CODE_VERSION,
    "evaluate": CODE_VERSION,
    "analyze": f"{CODE_VERSION}-{ANALYSIS_VERSION}",
    "figures": f"{CODE_VERSION}-{FIGURES_VERSION}",
    "audit": f"{CODE_VERSION}-{AUDIT_VERSION}",
    "audit_table": f"{CODE_VERSION}-{AUDIT_VERSION}",
    "table_row": f"{CODE_VERSION}-{TABLES_VERSION}",
    "study_table": f"{CODE_VERSION}-{TABLES_VERSION}",
    "paper_comparison": f"{CODE_VERSION}-{TABLES_VERSION}",
    "cost_table": f"{CODE_VERSION}-{TABLES_VERSION}",
    "projection": CODE_VERSION,
    "claims": f"{CODE_VERSION}-{CLAIMS_VERSION}",
    "claims_overview": f"{CODE_VERSION}-{CLAIMS_VERSION}",
    "frontier": f"{CODE_VERSION}-{FRONTIER_VERSION}",
}

# ---------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Term:
    """One regulariser of a grid entry: its config key and how ids, tables and legends write it."""

    key: str  # grid entry key
    id_prefix: str  # model id part: f"{id_prefix}{value}"
    short: str  # table / kind name ("LS")
    symbol: str  # legend symbol ("α")
    kind: str  # fine-kind part ("ls")
    in_pixel_units: bool = False  # True: the value is in the study's pixel_units


#: The regularisers in the order every text names them (ids, legends, table labels, kinds).
VOCABULARY: tuple[Term, ...] = (
    Term("alpha", "ls", "LS", "α", "ls"),
    Term("beta", "sq", "LSQ", "β", "lsq"),
    Term("sigma", "noise", "noise", "σ", "noise", in_pixel_units=True),
)
TERMS = {t.key: t for t in VOCABULARY}
#: Adversarial training: last in a model id, first in a label.
ADVERSARIAL = "adversarial"
ADV_KIND = "adv"


@dataclass(frozen=True)
class AdversarialMethod:
    """How one adversarial-training method (`adversarial.method`) is named, and what it costs."""

    id_prefix: str  # model id: f"{id_prefix}-eps..-step.." ("pgd" adds its steps)
    name: str  # tables and legends ("FGSM-RS"; "PGD" adds "-<steps>")
    single_step: bool
    default_step: float | None  # default step size as a multiple of eps (None: step_size is required)


#: `adversarial.method` -> its names. pgd: Madry et al.; fgsm_rs: Wong, Rice and Kolter 2020 (FGSM from a
#: uniform random start, step 1.25 eps, projected back to the eps ball); nfgsm: de Jorge et al. 2022
#: (noise uniform in noise_factor * eps, a step of eps, no projection back to the eps ball).
ADV_METHODS: dict[str, AdversarialMethod] = {
    "pgd": AdversarialMethod("pgd", "PGD", False, None),
    "fgsm_rs": AdversarialMethod("fgsmrs", "FGSM-RS", True, 1.25),
    "nfgsm": AdversarialMethod("nfgsm", "N-FGSM", True, 1.0),
}
#: N-FGSM's noise: uniform in [-noise_factor * eps, noise_factor * eps] (de Jorge et al.'s default 2).
NFGSM_NOISE_FACTOR = 2.0


def adversarial_method(adv: Mapping[str, Any] | None) -> str:
    """An `adversarial:` block's method ('pgd' when it names none, as every block before the methods)."""
    return (adv or {}).get("method") or "pgd"


def adversarial_steps(adv: Mapping[str, Any]) -> int:
    """Gradient steps of the attack: PGD's `steps`, 1 for the single-step methods."""
    return 1 if ADV_METHODS[adversarial_method(adv)].single_step else int(adv["steps"])


def adversarial_step_size(adv: Mapping[str, Any]) -> float:
    """The step size in the study's units: `step_size`, else the method's default multiple of eps."""
    if adv.get("step_size") is not None:
        return adv["step_size"]
    default = ADV_METHODS[adversarial_method(adv)].default_step
    if default is None:
        raise KeyError("step_size")
    return default * adv["eps"]


def noise_factor(adv: Mapping[str, Any]) -> float:
    """N-FGSM's noise as a multiple of eps."""
    value = adv.get("noise_factor")
    return NFGSM_NOISE_FACTOR if value is None else value


def passes_per_iteration(adv: Mapping[str, Any] | None) -> int:
    """Forward-backward passes of one training batch per iteration: 1 without adversarial training,
    steps + 1 with (PGD-k: k + 1; FGSM-RS and N-FGSM: 2)."""
    return 1 if not adv else adversarial_steps(adv) + 1


def adversarial_name(adv: Mapping[str, Any]) -> str:
    """'PGD-10', 'FGSM-RS' or 'N-FGSM'."""
    method = adversarial_method(adv)
    return f"PGD-{adv['steps']}" if method == "pgd" else ADV_METHODS[method].name


#: Fine kinds: the combinations the paper has; anything else is "other".
FINE_KINDS = ("natural", "adv", "noise", "ls", "ls_noise", "lsq", "lsq_noise")
KIND_NAMES = {"natural": "natural", "adv": "adversarial", "noise": "noise", "ls": "LS", "ls_noise": "LS + noise",
              "lsq": "LSQ", "lsq_noise": "LSQ + noise", "other": "other"}
COARSE_KINDS = ("natural", "regularized", "adversarial")


def num(value: float) -> str:
    """A parameter as ids and labels print it ('0.3', '100000')."""
    return format(value, "g")


def units_text(value: float, units: float) -> str:
    """A value in the study's units as captions print it: '0.3', or '8/255' when pixel_units is 255."""
    return f"{value:g}" if units == 1 else f"{value:g}/{units:g}"


def _present(entry: Mapping[str, Any]) -> list[Term]:
    return [t for t in VOCABULARY if entry.get(t.key)]


def model_id(entry: Mapping[str, Any]) -> str:
    """Directory name of a grid entry, built from its parameters (e.g. 'ls0.95_noise0.3_k2000')."""
    parts = [f"{t.id_prefix}{num(entry[t.key])}" for t in _present(entry)]
    adv = entry.get(ADVERSARIAL)
    if adv:
        parts.append(adversarial_tag(adv))
    seed = f"_seed{entry['seed']}" if entry.get("seed") is not None else ""
    return "_".join(parts or ["natural"]) + f"_k{entry['k']}" + seed


#: Keys of a grid entry that say how many models it stands for, not what one model is.
SEED_KEYS = ("seeds",)


def model_entries(study: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every model of a study as (group id, entry): each grid entry once per seed, in grid order.

    A grid entry's seeds are its own `seeds`, else the study's `seeds`, else the study's `seed`.
    The expanded entry holds `seed` only when the seed differs from the study's `seed`, so the
    study seed's model keeps the id it had before seeds existed (finished models stay valid) and
    every other seed gets `_seed<N>`. An entry with the single `seed` key (an independently seeded
    twin, e.g. CIFAR-10's black-box target) is one model and its own group, id unchanged.
    """
    study_seed = study["seed"]
    default = list(study.get("seeds") or [study_seed])
    out: list[tuple[str, dict[str, Any]]] = []
    for entry in study["grid"]:
        base = {key: value for key, value in entry.items() if key not in SEED_KEYS}
        if base.get("seed") is not None:
            out.append((model_id(base), base))
            continue
        group = model_id(base)
        for seed in entry.get("seeds") or default:
            out.append((group, base if seed == study_seed else {**base, "seed": seed}))
    return out


def seeds_of(study: Mapping[str, Any]) -> dict[str, list[int]]:
    """group id -> the training seeds of its models, in order."""
    out: dict[str, list[int]] = {}
    for group, entry in model_entries(study):
        out.setdefault(group, []).append(study["seed"] if entry.get("seed") is None else entry["seed"])
    return out


def adversarial_tag(adv: Mapping[str, Any]) -> str:
    """The model-id part of an `adversarial:` block: 'pgd10-eps0.2-step0.05' (as before the methods),
    'fgsmrs-eps0.2-step0.25', 'nfgsm-eps0.2-step0.2' ('-noise<f>' when noise_factor is not 2);
    '-norand' for PGD without a random start, '-warm<f>' with an eps warm-up."""
    method = adversarial_method(adv)
    body = f"eps{num(adv['eps'])}-step{num(adversarial_step_size(adv))}"
    if method == "pgd":
        tag = f"pgd{adv['steps']}-{body}" + ("" if adv.get("random_start", True) else "-norand")
    else:
        tag = f"{ADV_METHODS[method].id_prefix}-{body}"
        if method == "nfgsm" and noise_factor(adv) != NFGSM_NOISE_FACTOR:
            tag += f"-noise{num(noise_factor(adv))}"
    if adv.get("eps_warmup"):
        tag += f"-warm{num(adv['eps_warmup'])}"
    return tag


def kind(entry: Mapping[str, Any]) -> str:
    """Fine kind: natural | adv | noise | ls | ls_noise | lsq | lsq_noise | other (combinations the paper has no role for)."""
    parts = [t.kind for t in _present(entry)]
    if entry.get(ADVERSARIAL):
        parts = [ADV_KIND, *parts]
    name = "_".join(parts) or "natural"
    return name if name in FINE_KINDS else "other"


def coarse_kind(entry: Mapping[str, Any]) -> str:
    """natural | regularized | adversarial: any adversarial training, else any regulariser, else natural."""
    fine = kind(entry)
    if fine in ("natural", ADV_KIND):
        return "natural" if fine == "natural" else "adversarial"
    return "adversarial" if entry.get(ADVERSARIAL) else "regularized"


def defense_label(entry: Mapping[str, Any]) -> str:
    """Table name of a grid entry's defense, e.g. 'LS + noise' or 'PGD-10 adv. (eps 0.2, step 0.05)' (study units)."""
    parts = [t.short for t in _present(entry)]
    adv = entry.get(ADVERSARIAL)
    if adv:
        extra = ""
        if adversarial_method(adv) == "nfgsm":
            extra += f", noise {noise_factor(adv):g} eps"
        if adv.get("eps_warmup"):
            extra += f", eps warm-up {adv['eps_warmup']:g} k"
        parts.insert(0, f"{adversarial_name(adv)} adv. (eps {adv['eps']:g}, step {adversarial_step_size(adv):g}{extra})")
    return " + ".join(parts) or "natural"


def legend_label(entry: Mapping[str, Any], units: float = 1.0, with_k: bool = False) -> str:
    """Legend text naming a model by its parameters, e.g. 'LS α=0.95 + noise σ=0.3'."""
    parts = []
    adv = entry.get(ADVERSARIAL)
    if adv:
        text = f"{adversarial_name(adv)} adv. ε={units_text(adv['eps'], units)}, step {units_text(adversarial_step_size(adv), units)}"
        if adversarial_method(adv) == "nfgsm":
            text += f", noise {noise_factor(adv):g}ε"
        if adv.get("eps_warmup"):
            text += f", ε warm-up {adv['eps_warmup']:g}k"
        parts.append(text)
    for t in _present(entry):
        value = units_text(entry[t.key], units) if t.in_pixel_units else f"{entry[t.key]:g}"
        parts.append(f"{t.short} {t.symbol}={value}")
    text = " + ".join(parts) or "natural"
    return f"{text}, k={entry['k']}" if with_k else text


def params01(entry: Mapping[str, Any], units: float) -> dict[str, float]:
    """alpha, beta and sigma of a grid entry, sigma in [0, 1] units (the keys figure roles target)."""
    return {t.key: (entry.get(t.key) or 0) / (units if t.in_pixel_units else 1) for t in VOCABULARY}


# ---------------------------------------------------------------- resolved settings ([0, 1] units)


def resolve_attack(attack: Mapping[str, Any], eps: float, units: float) -> dict[str, Any]:
    """An attack's settings ready for `attacks.pgd`: `eps01`, `step_size01` in [0, 1] pixel units."""
    eps01 = eps / units
    return {
        "name": attack["name"],
        "method": attack["method"],
        "loss": attack["loss"],
        "eps01": eps01,
        "steps": 1 if attack["method"] == "fgsm" else attack.get("steps", 1),
        "step_size01": eps01 if attack["method"] == "fgsm" else attack.get("step_size", 0) / units,
        "random_start": attack.get("random_start", False),
        "restarts": attack.get("restarts", 1),
    }


def resolve_model(study: Mapping[str, Any], study_name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that determines one trained model; `sigma01` and `adversarial`'s `eps01`, `step_size01` in [0, 1] pixel units."""
    units = study.get("pixel_units", 1)
    adv = entry.get(ADVERSARIAL)
    return {
        "study": study_name,
        "model_id": model_id(entry),
        "dataset": study["dataset"],
        "architecture": study["architecture"],
        "seed": entry["seed"] if entry.get("seed") is not None else study["seed"],
        "alpha": entry.get("alpha", 0),
        "beta": entry.get("beta", 0),
        "sigma01": entry.get("sigma", 0) / units,
        "k": entry["k"],
        "adversarial": None if not adv else resolve_adversarial(adv, units),
        "train": copy.deepcopy(study["train"]),
        "config_entry": copy.deepcopy(dict(entry)),
        "pixel_units": units,
    }


def resolve_adversarial(adv: Mapping[str, Any], units: float) -> dict[str, Any]:
    """An `adversarial:` block for training: `eps01`, `step_size01` in [0, 1] pixel units, the method,
    its steps (1 for the single-step methods), the eps warm-up, and N-FGSM's noise factor."""
    method = adversarial_method(adv)
    out = {
        "method": method,
        "steps": adversarial_steps(adv),
        "step_size01": adversarial_step_size(adv) / units,
        "eps01": adv["eps"] / units,
        "random_start": adv.get("random_start", True),
        "eps_warmup": adv.get("eps_warmup", 0),
    }
    if method == "nfgsm":
        out["noise_factor"] = noise_factor(adv)
    return out


#: Names training settings had before they said their unit: path of the old name -> new name.
#: Settings kept with a finished model, and resume points' keys, written before the rename hold them.
LEGACY_NAMES: dict[tuple[str, ...], str] = {
    ("sigma",): "sigma01",
    ("adversarial", "eps"): "eps01",
    ("adversarial", "step_size"): "step_size01",
}


def upgrade_legacy_names(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of resolved training settings with `LEGACY_NAMES` renamed (values untouched; new names left as they are)."""
    out = copy.deepcopy(dict(settings))
    for (*parents, old), new in LEGACY_NAMES.items():
        node: Any = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and old in node and new not in node:
            node[new] = node.pop(old)
    return out


#: AutoAttack attack name -> accuracy key in the audit record.
AA_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
AA_KEYS = {"apgd-ce": "apgd_ce", "apgd-t": "apgd_t", "fab-t": "fab_t", "square": "square"}


def _channels_last(study: Mapping[str, Any]) -> bool:
    """attack.channels_last: the memory format of the trained models in every stage after training."""
    return bool(study["attack"].get("channels_last", False))


def audit_settings(study: Mapping[str, Any]) -> dict[str, Any]:
    """The study's `audit:` block (schema defaults filled in by config validation) resolved for the job.

    Null settings take the study's values; `eps01` and `large_eps01` are in [0, 1] units.
    """
    s = copy.deepcopy(dict(study["audit"]))
    units = float(study.get("pixel_units", 1))
    attack = study["attack"]
    s.pop("large_eps", None)
    s["eps01"] = attack["eps"] / units
    large = study["audit"].get("large_eps")
    s["large_eps01"] = (large if large is not None else 0.5 * units) / units
    s["batch_size"] = s.get("batch_size") or attack.get("batch_size", 500)
    s["n_examples"] = s.get("n_examples") or attack.get("max_examples")
    s["seed"] = study["seed"] if s.get("seed") is None else s["seed"]
    s["pixel_units"] = units
    return s


ANALYSIS_BATCH_SIZE = 200
TABLE_LAYOUTS = ("combined", "split")
#: Study tables (layouts of the paper's tables; tables.STUDY_TABLES holds their titles).
STUDY_TABLE_NAMES = ("accuracy", "whitebox", "blackbox", "eq4")


def table_layout(study: Mapping[str, Any]) -> str:
    """'split' (Tables 3/6 + 4/7) for CIFAR-10, else 'combined' (Tables 2/5); `analysis.table_layout` overrides."""
    return (study.get("analysis") or {}).get("table_layout") or ("split" if study["dataset"] == "cifar10" else "combined")


# ---------------------------------------------------------------- paper tables (names only: paper.py reads them)

#: The attack budget of the paper's experiments, in [0, 1] pixel units.
PAPER_EPS = {"mnist": 0.3, "cifar10": 8 / 255}
#: Datasets compared with another dataset's paper rows: mnist5k (4,000 of MNIST's training digits)
#: against the paper's MNIST rows, matched without k (its k and training set differ from the paper's).
PAPER_STAND_INS = {"mnist5k": "mnist"}


def paper_dataset(dataset: str) -> str:
    """The dataset whose paper rows a study of `dataset` is compared with (itself, or what it stands in for)."""
    return PAPER_STAND_INS.get(dataset, dataset)
#: Paper table -> (CSV under the package's resources/paper/, dataset; None: every dataset, a `dataset` column).
PAPER_TABLE_FILES: dict[str, tuple[str, str | None]] = {
    "table1": ("table1.csv", None),
    "table5": ("mnist_table5.csv", "mnist"),
    "table6": ("cifar10_table6.csv", "cifar10"),
    "table7": ("cifar10_table7.csv", "cifar10"),
}


def paper_csv(name: str) -> Path:
    """The paper's CSV of table `name`, inside the package."""
    return PAPER_DIR / PAPER_TABLE_FILES[name][0]


def paper_tables_for(dataset: str, eps01: float) -> list[str]:
    """Paper tables a study can be compared with: same dataset (or the one it stands in for) and the paper's attack eps.

    A study of another eps (or the digits demo) has no paper counterpart, so none.
    """
    dataset = paper_dataset(dataset)
    if dataset not in PAPER_EPS or not math.isclose(eps01, PAPER_EPS[dataset], rel_tol=1e-6):
        return []
    return [name for name, (_file, ds) in PAPER_TABLE_FILES.items() if ds in (dataset, None)]


# ---------------------------------------------------------------- figures: which model shows in which role


@dataclass(frozen=True)
class Role:
    """A kind of model a figure wants; `target` = the paper's parameters ([0, 1] pixel units)."""

    kind: str
    target: dict[str, float] = field(default_factory=dict)
    pick: str = "closest"  # closest | most_steps | fewest_steps

    def describe(self) -> str:
        text = KIND_NAMES[self.kind]
        if self.pick != "closest":
            text = ("strong " if self.pick == "most_steps" else "weak ") + text
        if self.target:
            text += " (paper, MNIST: " + ", ".join(f"{TERMS[k].symbol}={v:g}" for k, v in self.target.items()) + ")"
        return text


NATURAL = Role("natural")
ADV_STRONG = Role("adv", pick="most_steps")
ADV_WEAK = Role("adv", pick="fewest_steps")
#: name -> (paper figure, what it plots, roles). The paper's targets are its MNIST settings.
FIGURES: dict[str, tuple[str, str, tuple[Role, ...]]] = {
    "fig1_eq4_adversarial": ("Figure 1 (MNIST) / Figure 5 (CIFAR-10)", "eq4", (NATURAL, ADV_STRONG)),
    "fig2_logits_adversarial": ("Figure 2", "z_y", (NATURAL, ADV_WEAK, ADV_STRONG)),
    "fig3_eq4_label_smoothing": (
        "Figure 3", "eq4",
        (Role("ls", {"alpha": 0.75}), Role("noise", {"sigma": 0.5}), Role("ls_noise", {"alpha": 0.75, "sigma": 0.5}), NATURAL),
    ),
    "fig4_eq4_smoothing_squeezing": (
        "Figure 4", "eq4",
        (Role("ls_noise", {"alpha": 0.75, "sigma": 0.5}), Role("ls_noise", {"alpha": 0.2, "sigma": 0.5}),
         Role("lsq_noise", {"beta": 2.0, "sigma": 0.5}), Role("lsq_noise", {"beta": 0.5, "sigma": 0.5}), NATURAL),
    ),
    "fig6_gradient_norm": (
        "Figure 6", "grad_norm",
        (Role("ls_noise", {"alpha": 0.75, "sigma": 0.5}), Role("ls_noise", {"alpha": 0.2, "sigma": 0.5}),
         Role("lsq_noise", {"beta": 2.0, "sigma": 0.5}), Role("lsq_noise", {"beta": 0.5, "sigma": 0.5}), NATURAL),
    ),
    "fig7_eq4_logit_squeezing": (
        "Figure 7", "eq4",
        (Role("lsq_noise", {"beta": 0.5, "sigma": 0.5}), Role("lsq", {"beta": 0.5}), Role("noise", {"sigma": 0.5}), NATURAL),
    ),
    "fig8_activations_penultimate": (
        "Figure 8", "features",
        (NATURAL, ADV_STRONG, Role("noise", {"sigma": 0.5}), Role("ls_noise", {"alpha": 0.2, "sigma": 0.5}),
         Role("lsq_noise", {"beta": 0.5, "sigma": 0.5})),
    ),
    "fig9_activations_logits": (
        "Figure 9", "logit_sums",
        (NATURAL, ADV_STRONG, Role("noise", {"sigma": 0.5}), Role("ls_noise", {"alpha": 0.2, "sigma": 0.5}),
         Role("lsq_noise", {"beta": 0.5, "sigma": 0.5})),
    ),
    "training_curves": ("", "training", ()),
}
FIGURE_FORMATS = ("png", "pdf")
#: The caption files written beside each figure (plain text, and LaTeX for \caption{...}).
CAPTION_FORMATS = ("caption.txt", "caption.tex")


def _rank(role: Role, index: int, entry: Mapping[str, Any], units: float) -> tuple[float, ...]:
    adv = entry.get(ADVERSARIAL) or {}
    if role.pick == "most_steps":
        return (-adv.get("steps", 0), -adv.get("eps", 0), -entry["k"], index)
    if role.pick == "fewest_steps":
        return (adv.get("steps", 0), -adv.get("eps", 0), -entry["k"], index)
    params = params01(entry, units)
    distance = sum(abs(math.log(params[key] / value)) for key, value in role.target.items())
    return (distance, -entry["k"], index)


def _fills(role: Role, entry: Mapping[str, Any]) -> bool:
    """The paper's adversarial roles (Figures 1, 2, 8, 9: strong / weak PGD training) take PGD-trained models only."""
    return role.kind != ADV_KIND or adversarial_method(entry.get(ADVERSARIAL)) == "pgd"


def assign(entries: Mapping[str, Mapping[str, Any]], units: float = 1.0) -> dict[str, list[tuple[Role, str | None]]]:
    """For each figure: its roles in order, each with the model id that fills it (None: the study lacks one).

    `entries` maps model id -> grid entry (study units), in grid order. A model fills at most
    one role of a figure. Roles with no target (training curves) get every model.
    """
    out: dict[str, list[tuple[Role, str | None]]] = {}
    for name, (_paper, _what, roles) in FIGURES.items():
        if not roles:
            out[name] = [(Role("other"), mid) for mid in entries]
            continue
        # Best (role, model) pairs first, so a model goes to the role it matches most closely.
        pairs = sorted(
            (_rank(role, i, entry, units), r, mid)
            for r, role in enumerate(roles)
            for i, (mid, entry) in enumerate(entries.items())
            if kind(entry) == role.kind and _fills(role, entry)
        )
        filled: dict[int, str] = {}
        for _rank_key, r, mid in pairs:
            if r not in filled and mid not in filled.values():
                filled[r] = mid
        out[name] = [(role, filled.get(r)) for r, role in enumerate(roles)]
    return out


def select(entries: Mapping[str, Mapping[str, Any]], units: float = 1.0) -> dict[str, dict[str, list[str]]]:
    """For each figure: the model ids it shows (role order) and the roles the study lacks."""
    return {
        name: {
            "models": [mid for _role, mid in pairs if mid is not None],
            "missing": [role.describe() for role, mid in pairs if mid is None],
        }
        for name, pairs in assign(entries, units).items()
    }


def shown(entries: Mapping[str, Mapping[str, Any]], units: float = 1.0) -> dict[str, list[str]]:
    """For each figure, per model shown: its parameters and id, and the role's target where the model differs from it.

    E.g. 'LSQ β=2 [sq2_k400000; role target β=0.5]': what a caption says the figure shows.
    """
    out: dict[str, list[str]] = {}
    for name, pairs in assign(entries, units).items():
        texts = []
        for role, mid in pairs:
            if mid is None:
                continue
            text = f"{legend_label(entries[mid], units)} [{mid}"
            params = params01(entries[mid], units)
            if role.target and any(not math.isclose(params[k], v) for k, v in role.target.items()):
                text += "; role target " + ", ".join(
                    f"{TERMS[k].symbol}={units_text(v * units, units) if TERMS[k].in_pixel_units else format(v, 'g')}"
                    for k, v in role.target.items()
                )
            texts.append(text + "]")
        out[name] = texts
    return out


# ---------------------------------------------------------------- paths


@dataclass(frozen=True)
class Paths:
    """Every file pattern of the pipeline, written once. Pass "{study}", "{model}" ... for rule outputs."""

    results: str
    reports: str
    data: str

    def dataset(self, dataset: str) -> str:
        return f"{self.data}/{dataset}.npz"

    def prepare_log(self, dataset: str) -> str:
        return f"{self.data}/logs/prepare_{dataset}.log"

    def download_dir(self, dataset: str) -> str:
        return f"{self.data}/downloads/{dataset}"

    def model_dir(self, study: str, model: str) -> str:
        return f"{self.results}/{study}/models/{model}"

    def checkpoint(self, study: str, model: str) -> str:
        return f"{self.model_dir(study, model)}/model.pt"

    def metrics(self, study: str, model: str) -> str:
        return f"{self.model_dir(study, model)}/metrics.json"

    def settings(self, study: str, model: str) -> str:
        return f"{self.model_dir(study, model)}/settings.json"

    def log(self, study: str, stage: str, name: str) -> str:
        """A job's log under results/ (stage: train, blackbox, evaluate, analysis, audit)."""
        return f"{self.results}/{study}/logs/{stage}/{name}.log"

    def benchmark(self, study: str, stage: str, name: str) -> str:
        return f"{self.results}/{study}/benchmarks/{stage}/{name}.tsv"

    def blackbox(self, study: str, attack: str) -> str:
        return f"{self.results}/{study}/blackbox/{attack}.npz"

    def record(self, study: str, model: str) -> str:
        return f"{self.results}/{study}/records/{model}.json"

    def analysis(self, study: str, model: str) -> str:
        return f"{self.results}/{study}/analysis/{model}.npz"

    def analysis_summary(self, study: str, model: str) -> str:
        return f"{self.results}/{study}/analysis/{model}.json"

    def audit(self, study: str, model: str) -> str:
        return f"{self.results}/{study}/audit/{model}.json"

    def cost_log(self, study: str) -> str:
        return f"{self.results}/{study}/logs/cost.log"

    def figures_dir(self, study: str) -> str:
        return f"{self.reports}/{study}/figures"

    def figure(self, study: str, name: str, fmt: str) -> str:
        return f"{self.figures_dir(study)}/{name}.{fmt}"

    def row(self, study: str, model: str) -> str:
        return f"{self.reports}/{study}/rows/{model}.csv"

    def table(self, study: str, name: str, ext: str) -> str:
        return f"{self.reports}/{study}/tables/{name}.{ext}"

    def projection(self, study: str, ext: str) -> str:
        """The projected cost of a study on the machine that built it (csv; txt: its summary line)."""
        return f"{self.reports}/{study}/projection.{ext}"

    def report_log(self, study: str, name: str) -> str:
        """A log under reports/ (figures, rows/<model>, tables/<name>, report)."""
        return f"{self.reports}/{study}/logs/{name}.log"

    def report(self, study: str) -> str:
        return f"{self.reports}/{study}/report.html"

    def claims(self, study: str, ext: str) -> str:
        """The study's claims ledger (csv, md, tex, html)."""
        return f"{self.reports}/{study}/claims.{ext}"

    def frontier(self, study: str, ext: str) -> str:
        """The study's robustness-per-cost frontier (csv, tex, html, pdf, png; figure.tex: the figure's LaTeX float)."""
        return f"{self.reports}/{study}/frontier.{ext}"

    def claims_overview(self, ext: str) -> str:
        """Every claim against every built study (csv, md, html)."""
        return f"{self.reports}/claims.{ext}"

    def report_config(self, study: str) -> str:
        return f"{self.reports}/{study}/logs/report_config.json"

    def report_landing(self, study: str) -> str:
        """The report's first screen (the claims ledger's verdicts), written by the report job from claims.csv."""
        return f"{self.reports}/{study}/logs/report_landing.html"

    def report_partial(self, study: str) -> str:
        return f"{self.reports}/{study}/.report.partial.html"


TABLE_FORMATS = ("html", "csv", "tex")
CLAIMS_FORMATS = ("csv", "md", "tex", "html")
CLAIMS_OVERVIEW_FORMATS = ("csv", "md", "html")
#: The frontier's files: output name (the rule's and the CLI's) -> extension.
FRONTIER_FILES = {"csv": "csv", "tex": "tex", "html": "html", "pdf": "pdf", "png": "png", "figure_tex": "figure.tex"}
FORMAT_LABELS = {"html": "view", "csv": "CSV", "tex": "LaTeX"}


def as_json(obj: Any) -> str:
    """How a spec is handed to a job: one JSON word, keys sorted (so equal specs are equal params)."""
    return json.dumps(obj, sort_keys=True)


# ---------------------------------------------------------------- the plan of one config



class CaptionSelection(dict):  # type: ignore[type-arg]
    """The per-figure caption texts, a dict whose str() is one short line.

    Snakemake's report prints every job parameter with str() in each figure's info panel, while
    rerun triggers compare repr(); so the captions index the full texts, the panel shows a line.
    """

    def __str__(self) -> str:
        return f"per-figure model lists for the captions ({len(self)} figures)"


def caption_selection(entries: dict[str, dict[str, Any]], units: float = 1.0) -> CaptionSelection:
    """Per figure: the models shown, the same with their parameters, and the roles missing (caption text)."""
    chosen, texts = select(entries, units), shown(entries, units)
    return CaptionSelection(
        {
            name: {
                "models": ", ".join(sel["models"]) or "none",
                "shown": "; ".join(texts[name]) or "none",
                "missing": "; ".join(sel["missing"]) or "none",
            }
            for name, sel in chosen.items()
        }
    )

class Plan:
    """A validated config's jobs: ids, specs, paths and final files of each study."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.paths = Paths(config["results_dir"], config["reports_dir"], config["data_dir"])

    # -- studies and models

    def study(self, name: str) -> dict[str, Any]:
        if name not in self.config["studies"]:
            from .errors import PipelineError

            raise PipelineError(f"config error: unknown study {name!r} (have {sorted(self.config['studies'])})")
        return self.config["studies"][name]

    def units(self, study: str) -> float:
        return self.study(study).get("pixel_units", 1)

    def model_ids(self, study: str) -> list[str]:
        """Every model of the study: each grid entry once per seed (`model_entries`), in grid order."""
        return [model_id(e) for _group, e in model_entries(self.study(study))]

    def entries(self, study: str) -> dict[str, dict[str, Any]]:
        """model id -> grid entry (study units, `seed` set for seeds other than the study's), in grid order."""
        return {model_id(e): e for _group, e in model_entries(self.study(study))}

    def groups(self, study: str) -> dict[str, list[str]]:
        """group id (one grid entry) -> its model ids (one per seed), in grid order."""
        out: dict[str, list[str]] = {}
        for group, entry in model_entries(self.study(study)):
            out.setdefault(group, []).append(model_id(entry))
        return out

    def group_of(self, study: str, model: str) -> str:
        for group, models in self.groups(study).items():
            if model in models:
                return group
        self.entry(study, model)  # raises the one-line error naming the study's models
        raise AssertionError("unreachable")

    def primary_model_ids(self, study: str) -> list[str]:
        """The first model of every group (the study seed's, where the group has it): what figures show."""
        return [models[0] for models in self.groups(study).values()]

    def train_seed(self, study: str, model: str) -> int:
        entry = self.entry(study, model)
        return entry["seed"] if entry.get("seed") is not None else self.study(study)["seed"]

    def entry(self, study: str, model: str) -> dict[str, Any]:
        entries = self.entries(study)
        if model not in entries:
            from .errors import PipelineError

            raise PipelineError(f"config error: study {study!r} has no model {model!r} (have {list(entries)})")
        return entries[model]

    def gpu_slots(self, study: str) -> int:
        """The `gpu` resource a GPU job of `study` holds: 1 slot, or every slot of a card (wide ResNet)."""
        return self.config.get("gpu_slots", 1) if self.study(study)["architecture"] in WHOLE_DEVICE_ARCHITECTURES else 1

    def gpu_job_slots(self, study: str) -> str:
        """What a GPU job of `study` claims on its device ($SMOOTHSQUEEZE_GPU_JOB_SLOTS): '1' or 'all'."""
        return "all" if self.study(study)["architecture"] in WHOLE_DEVICE_ARCHITECTURES else "1"

    def train_priority(self, study: str, model: str) -> int:
        """Scheduling priority of a training job, above every later stage's (0): all training first,
        the black-box source first of all (every evaluation waits for its sets), then adversarial
        training (the longest jobs). A model trained last would otherwise leave its evaluation,
        audit, figures and report to run one after another on one core."""
        if model == self.study(study)["blackbox"]["source"]:
            return 3
        return 2 if self.entry(study, model).get("adversarial") else 1

    def dataset_file(self, study: str) -> str:
        return self.paths.dataset(self.study(study)["dataset"])

    def blackbox_names(self, study: str) -> list[str]:
        return [a["name"] for a in self.study(study)["blackbox"]["attacks"]]

    def blackbox_source_checkpoint(self, study: str) -> str:
        return self.paths.checkpoint(study, self.study(study)["blackbox"]["source"])

    def resolved_attacks(self, study: str, attacks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        st = self.study(study)
        return [resolve_attack(a, st["attack"]["eps"], st.get("pixel_units", 1)) for a in attacks]

    def resolve_model(self, study: str, model: str) -> dict[str, Any]:
        return resolve_model(self.study(study), study, self.entry(study, model))

    # -- job specs (what each job is told)

    def train_spec(self, study: str, model: str) -> dict[str, Any]:
        return self.resolve_model(study, model)

    def blackbox_spec(self, study: str, attack: str) -> dict[str, Any]:
        st = self.study(study)
        attacks = {a["name"]: a for a in self.resolved_attacks(study, st["blackbox"]["attacks"])}
        return {
            "attack": attacks[attack],
            "batch_size": st["attack"]["batch_size"],
            "max_examples": st["attack"].get("max_examples"),
            "seed": st["seed"],
            "architecture": st["architecture"],
            "channels_last": _channels_last(st),
        }

    def evaluate_spec(self, study: str, model: str) -> dict[str, Any]:
        st = self.study(study)
        settings = self.resolve_model(study, model)
        return {
            "whitebox": self.resolved_attacks(study, st["attack"]["whitebox"]),
            "batch_size": st["attack"]["batch_size"],
            "max_examples": st["attack"].get("max_examples"),
            "seed": st["seed"],
            "architecture": st["architecture"],
            "channels_last": _channels_last(st),
            "info": {
                "study": study,
                "model_id": model,
                "dataset": st["dataset"],
                "architecture": st["architecture"],
                "entry": settings["config_entry"],
                "pixel_units": settings["pixel_units"],
                "eps": st["attack"]["eps"],
                "blackbox_source": st["blackbox"]["source"],
                "squeeze_norm": settings["train"].get("squeeze_norm"),
                "noise_clip": bool(settings["train"].get("noise_clip", False)),
                "group": self.group_of(study, model),
                "train_seed": settings["seed"],
            },
        }

    def analysis_spec(self, study: str, model: str) -> dict[str, Any]:
        """Eq. 4 is computed in the study's units: `eps` (study units) with `pixel_units`."""
        st = self.study(study)
        analysis = st.get("analysis") or {}
        return {
            "eps": st["attack"]["eps"],
            "pixel_units": st.get("pixel_units", 1),
            "batch_size": analysis.get("batch_size", ANALYSIS_BATCH_SIZE),
            "max_examples": analysis.get("max_examples", st["attack"].get("max_examples")),
            "architecture": st["architecture"],
            "channels_last": _channels_last(st),
            "info": {
                "study": study,
                "model_id": model,
                "dataset": st["dataset"],
                "architecture": st["architecture"],
                "entry": self.resolve_model(study, model)["config_entry"],
            },
        }

    def figures_spec(self, study: str) -> dict[str, Any]:
        """What the figures job is told besides its input files (one per model, in grid order)."""
        st = self.study(study)
        analysis = st.get("analysis") or {}
        widths = {"full": 5.5, "column": 2.7, **(analysis.get("figure_widths") or {})}
        return {"study": study, "eps": st["attack"]["eps"], "pixel_units": st.get("pixel_units", 1),
                "style": analysis.get("figure_style", "paper"), "widths": widths}

    def figure_inputs(self, study: str) -> dict[str, list[str]]:
        """The figures job's input files, one list per kind, each in grid order: the first seed of every grid entry."""
        ids = self.primary_model_ids(study)
        return {
            "summaries": [self.paths.analysis_summary(study, m) for m in ids],
            "analysis": [self.paths.analysis(study, m) for m in ids],
            "metrics": [self.paths.metrics(study, m) for m in ids],
            "records": [self.paths.record(study, m) for m in ids],
            "audits": [self.paths.audit(study, m) for m in ids],
        }

    def figure_selection(self, study: str) -> "CaptionSelection":
        """Per figure the models shown, the same with their parameters, and the roles missing, as text for the report captions."""
        entries = self.entries(study)
        return caption_selection({m: entries[m] for m in self.primary_model_ids(study)}, self.units(study))

    def audit_spec(self, study: str, model: str) -> dict[str, Any]:
        st = self.study(study)
        return {
            "settings": audit_settings(st),
            "architecture": st["architecture"],
            "channels_last": _channels_last(st),
            "info": {
                "study": study,
                "model_id": model,
                "dataset": st["dataset"],
                "entry": self.entry(study, model),
                "study_eps": st["attack"]["eps"],
                "group": self.group_of(study, model),
                "train_seed": self.train_seed(study, model),
            },
        }

    def tables_spec(self, study: str) -> dict[str, Any]:
        """The study facts the tables need (attack names decide the columns)."""
        st = self.study(study)
        return {
            "study": study,
            "dataset": st["dataset"],
            "eps": st["attack"]["eps"],
            "pixel_units": st.get("pixel_units", 1),
            "whitebox": [{"name": a["name"], "method": a["method"]} for a in st["attack"]["whitebox"]],
            "blackbox": [{"name": a["name"], "method": a["method"]} for a in st["blackbox"]["attacks"]],
            "blackbox_source": st["blackbox"]["source"],
            "squeeze_norm": st["train"].get("squeeze_norm"),
            "lr_milestones": st["train"].get("lr_milestones", []),
            "lr_schedule": {"name": st["train"].get("lr_schedule", "piecewise"), "lr": st["train"]["lr"], "peak": st["train"].get("lr_peak", 0.4)},
            "noise_clip": bool(st["train"].get("noise_clip", False)),
        }

    def table_caption_facts(self, study: str) -> dict[str, str]:
        """Plain-text settings for the report captions (workflow/report/tables/*.rst)."""
        spec = self.tables_spec(study)
        return {
            "eps": units_text(spec["eps"], spec["pixel_units"]),
            "whitebox": ", ".join(a["name"] for a in spec["whitebox"]),
            "blackbox": ", ".join(a["name"] for a in spec["blackbox"]),
            "source": spec["blackbox_source"],
            "dataset": spec["dataset"],
            "squeeze_norm": spec.get("squeeze_norm") or "n/a",
        }

    # -- tables

    def study_table_names(self, study: str) -> list[str]:
        """Paper layout: 'accuracy' (Tables 2/5), or 'whitebox' + 'blackbox' (Tables 3/6, 4/7); then 'eq4'."""
        return (["whitebox", "blackbox"] if table_layout(self.study(study)) == "split" else ["accuracy"]) + ["eq4"]

    def paper_table_names(self, study: str) -> list[str]:
        st = self.study(study)
        return paper_tables_for(st["dataset"], st["attack"]["eps"] / st.get("pixel_units", 1))

    def row_inputs(self, study: str, model: str) -> dict[str, str]:
        """A row needs its record, and for Table 1's natural and adversarial models their analysis summary."""
        inputs = {"record": self.paths.record(study, model)}
        if coarse_kind(self.entry(study, model)) in ("natural", "adversarial"):
            inputs["analysis"] = self.paths.analysis_summary(study, model)
        return inputs

    def table_rows(self, study: str, table: str | None = None) -> list[str]:
        """Row files of a table; Table 1's layout (eq4) has natural and adversarial models only."""
        models = self.model_ids(study)
        if table == "eq4":
            models = [m for m in models if coarse_kind(self.entry(study, m)) != "regularized"]
        return [self.paths.row(study, m) for m in models]

    # -- the claims ledger

    def claims_spec(self, study: str) -> dict[str, Any]:
        """What the claims job reads: the study's facts and, per model (every seed of every grid entry), its
        group, record, audit, analysis arrays and metrics."""
        st = self.study(study)
        p = self.paths
        return {
            "study": study,
            "dataset": st["dataset"],
            "eps": st["attack"]["eps"],
            "pixel_units": st.get("pixel_units", 1),
            "seed": st["seed"],
            "blackbox_source": st["blackbox"]["source"],
            "cost": p.table(study, "cost", "csv"),
            "models": [
                {"model_id": m, "group": group, "entry": self.entry(study, m), "record": p.record(study, m), "audit": p.audit(study, m),
                 "analysis": p.analysis(study, m), "metrics": p.metrics(study, m)}
                for group, models in self.groups(study).items() for m in models
            ],
        }

    def claims_inputs(self, study: str) -> dict[str, list[str]]:
        """The claims job's inputs: exactly the files its spec lists (so the ledger reruns when one of them changes, and only then)."""
        return _spec_inputs(self.claims_spec(study), ("record", "audit", "analysis", "metrics"))

    # -- the frontier

    def frontier_spec(self, study: str) -> dict[str, Any]:
        """What the frontier job reads: the claims job's spec without the analysis arrays."""
        spec = self.claims_spec(study)
        spec["models"] = [{k: v for k, v in m.items() if k != "analysis"} for m in spec["models"]]
        return spec

    def frontier_inputs(self, study: str) -> dict[str, list[str]]:
        """The frontier job's inputs: exactly the files its spec lists."""
        return _spec_inputs(self.frontier_spec(study), ("record", "audit", "metrics"))

    def requested_studies(self, targets: Iterable[str]) -> list[str]:
        """The studies a Snakemake run builds: named as targets (a study rule, or a file under its results or
        reports folder), or the default study when no target is named (or `all`)."""
        names = list(self.config["studies"])
        found: list[str] = []
        targets = list(targets)
        for target in targets or ["all"]:
            if target == "all":
                hit = self.config["default_study"]
            elif target in names:
                hit = target
            else:
                parts = Path(target).parts
                roots = (Path(self.paths.results).parts, Path(self.paths.reports).parts)
                hit = next((parts[len(r)] for r in roots if len(parts) > len(r) and parts[: len(r)] == r and parts[len(r)] in names), None)
            if hit and hit not in found:
                found.append(hit)
        return found

    def claims_overview_inputs(self, targets: Iterable[str], built: Callable[[str], bool]) -> list[str]:
        """The ledgers the overview sets side by side: every study built when the DAG is made (`built(path)`
        of its claims.csv, e.g. os.path.exists: this module does no I/O) and every study this run builds.
        Known at DAG time, so a newly built study enters the overview in the run that builds it, and a
        study never built is never built for it."""
        requested = set(self.requested_studies(targets))
        return [self.paths.claims(s, "csv") for s in self.config["studies"] if s in requested or built(self.paths.claims(s, "csv"))]

    # -- final files

    def study_targets(self, study: str) -> list[str]:
        """Every final file of a study (the study's target and the report's inputs, plus the report)."""
        p, models = self.paths, self.model_ids(study)
        tables = self.study_table_names(study) + [f"paper_{t}" for t in self.paper_table_names(study)]
        return [
            *(f(study, m) for m in models for f in (p.analysis, p.analysis_summary)),
            *(p.figure(study, name, fmt) for name in FIGURES for fmt in FIGURE_FORMATS),
            *(p.audit(study, m) for m in models),
            *(p.table(study, "audit", ext) for ext in ("csv", "tex", "html")),
            p.table(study, "cost", "csv"),
            p.table(study, "cost", "tex"),
            p.table(study, "cost", "html"),
            *(p.record(study, m) for m in models),
            p.report(study),
            *(p.row(study, m) for m in models),
            *(p.table(study, name, ext) for name in tables for ext in ("csv", "tex", "html")),
            *(p.checkpoint(study, m) for m in models),
            *(p.frontier(study, ext) for ext in FRONTIER_FILES.values()),
            *(p.claims(study, ext) for ext in CLAIMS_FORMATS),
            *(p.claims_overview(ext) for ext in CLAIMS_OVERVIEW_FORMATS),
        ]

    def report_inputs(self, study: str) -> list[str]:
        """The study's final files but its report and the across-studies ledger (which changes with other studies)."""
        others = {self.paths.report(study), *(self.paths.claims_overview(ext) for ext in CLAIMS_OVERVIEW_FORMATS)}
        return [path for path in self.study_targets(study) if path not in others]


def cost_model_args(settings: Sequence[str], metrics: Sequence[str], train_bench: Sequence[str], eval_bench: Sequence[str]) -> list[str]:
    """`--model SETTINGS METRICS TRAIN_BENCH EVAL_BENCH` per model, as a list of words for `{params.models:q}`."""
    return [word for group in zip(settings, metrics, train_bench, eval_bench) for word in ("--model", *group)]


_INPUT_NAMES = {"record": "records", "audit": "audits", "analysis": "analysis", "metrics": "metrics"}


def _spec_inputs(spec: Mapping[str, Any], keys: Sequence[str]) -> dict[str, list[str]]:
    """A job's named inputs from its spec: the file of each model under each key, and the cost table."""
    return {**{_INPUT_NAMES[key]: [m[key] for m in spec["models"]] for key in keys}, "cost": [spec["cost"]]}
