"""smoothsqueeze.projection: timings measured by real training steps, scaled by the grid; Slurm runtimes.

Nothing here checks a speed: timings are checked for structure and positivity, the projection's
arithmetic on hand-made timings."""
from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from smoothsqueeze import projection
from smoothsqueeze.config import load_config, model_ids, resolve_model
from smoothsqueeze.errors import PipelineError
from smoothsqueeze.projection import Timings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(ROOT / "config.yaml")


@pytest.fixture(scope="module")
def digits_timings(config: dict) -> Timings:
    """Real timings of the digits study on the CPU: one timed step per kind, tiny attack batch."""
    return projection.measure(config, "digits", torch.device("cpu"), steps=1, warmup=1, attack_batch=8, log=lambda _: None)


def fake_timings(study: str, kinds: dict[str, float], architecture: str = "madry_cnn") -> Timings:
    return Timings(study, architecture, "cpu", "test CPU", train_step_s=dict(kinds), grad_s={"xent": 1e-3, "cw": 2e-3},
                   forward_s=1e-4, timed_steps=1, attack_batch=8)


def test_train_kinds_of_the_digits_grid(config: dict) -> None:
    reps = projection.representatives(config, "digits")
    assert set(reps) == {"natural", "regularized", "pgd10", "pgd2", "fgsm_rs"}
    assert reps["pgd10"]["adversarial"]["steps"] == 10 and reps["natural"]["k"] == 500
    assert projection.train_kind({"alpha": 0, "beta": 0, "sigma01": 0.3}) == "regularized"


def test_measured_timings_are_positive_and_cover_every_kind(digits_timings: Timings) -> None:
    t = digits_timings
    assert set(t.train_step_s) == {"natural", "regularized", "pgd10", "pgd2", "fgsm_rs"}
    assert all(v > 0 and math.isfinite(v) for v in t.train_step_s.values())
    assert set(t.grad_s) == {"xent", "cw"} and all(v > 0 for v in t.grad_s.values())
    assert t.forward_s > 0 and t.device == "cpu" and t.attack_batch == 8 and t.timed_steps == 1


def test_measure_refuses_a_cpu_clock_on_a_gpu_and_bad_counts(config: dict) -> None:
    with pytest.raises(PipelineError, match="wall clock"):
        projection._clock("cpu", "cuda")
    with pytest.raises(PipelineError, match="clock"):
        projection._clock("sundial", "cpu")
    with pytest.raises(PipelineError, match=">= 1"):
        projection.time_training(resolve_model(config, "digits", "natural_k500"), torch.device("cpu"), steps=0)


def test_projection_arithmetic_on_hand_made_timings(config: dict) -> None:
    kinds = {"natural": 0.01, "regularized": 0.012, "pgd10": 0.1, "pgd2": 0.03, "fgsm_rs": 0.02}
    t = fake_timings("digits", kinds)
    rows = projection.project(config, "digits", t)
    ids = model_ids(config, "digits")
    by_model = {r["model"]: r for r in rows}
    assert [r["model"] for r in rows[: len(ids)]] == ids
    assert [r["model"] for r in rows if r["kind"] == projection.CRAFT] == ["blackbox:fgsm_cw", "blackbox:pgd40_cw"]
    assert rows[-1]["model"] == projection.TOTAL_ROW
    # digits: 1437 training and 360 test images, every test image attacked
    nat = by_model["natural_k500"]
    k_nat, k_adv = (resolve_model(config, "digits", m)["k"] for m in ("natural_k500", "pgd10-eps0.2-step0.05_k250"))
    assert nat["train_s"] == pytest.approx(k_nat * 0.01 + (1437 + 360) * 1e-4)
    assert nat["analyze_s"] == pytest.approx(360 * (10 * 1e-3 + 1e-4))
    whitebox = 360 * (40 * 1e-3 + 1e-4) + 360 * (40 * 2e-3 + 1e-4) + 360 * (1e-3 + 1e-4) + 360 * (2e-3 + 1e-4)
    assert nat["evaluate_s"] == pytest.approx((1437 + 360) * 1e-4 + whitebox + 2 * 360 * 1e-4)
    assert by_model["blackbox:pgd40_cw"]["craft_s"] == pytest.approx(360 * (40 * 2e-3 + 1e-4))
    adv = by_model["pgd10-eps0.2-step0.05_k250"]
    assert adv["train_s"] == pytest.approx(k_adv * 0.1 + (1437 + 360) * 1e-4) and adv["kind"] == "pgd10"
    for row in rows:
        parts = [row[f"{s}_s"] or 0.0 for s in projection.STAGES] + [row["craft_s"] or 0.0]
        assert row["total_s"] == pytest.approx(sum(parts)) and row["device_hours"] == pytest.approx(row["total_s"] / 3600)
    total = rows[-1]
    assert total["total_s"] == pytest.approx(sum(r["total_s"] for r in rows[:-1]))
    assert nat["audit_s"] > nat["evaluate_s"] > 0  # the audit's standard budgets dwarf the evaluation
    assert nat["train_runtime_min"] == projection.job_runtime_minutes(nat["train_s"])
    assert by_model["blackbox:fgsm_cw"]["craft_blackbox_runtime_min"] == projection.MINIMUM_MIN
    line = projection.summary_line(rows, t)
    assert line.startswith("projection digits on test CPU:") and f"device-hours for {len(ids)} models" in line
    assert "largest model pgd10-eps0.2-step0.05_k250" in line


def test_paper_studies_project_every_table_row(config: dict) -> None:
    mnist = projection.project(config, "mnist", fake_timings("mnist", {"natural": 0.01, "regularized": 0.01, "pgd40": 0.4, "pgd2": 0.03, "fgsm_rs": 0.02, "nfgsm": 0.02}))
    models = [r for r in mnist if r["kind"] not in ("", projection.CRAFT)]
    assert len(models) == len(model_ids(config, "mnist"))
    k2m = [r for r in models if r["k"] == 2000000]
    assert len(k2m) == 2 and all(r["train_s"] > 10000 for r in k2m)
    cifar = projection.project(config, "cifar10", fake_timings("cifar10", {"natural": 0.1, "regularized": 0.1, "pgd7": 0.8, "pgd2": 0.3, "fgsm_rs": 0.2, "nfgsm": 0.2}, "wide_resnet"))
    by_model = {r["model"]: r for r in cifar}
    assert by_model["pgd7-eps8-step2_k80000"]["train_s"] > 7 * by_model["natural_k80000"]["train_s"]
    # the audit runs on cifar10's first 1000 images, evaluation on all 10,000
    assert by_model["natural_k80000"]["audit_s"] == pytest.approx(
        projection.audit_seconds(projection._counts(config, "cifar10")["audit"], 1000, fake_timings("c", {}, "wide_resnet")))
    with pytest.raises(PipelineError, match="pgd7"):
        projection.project(config, "cifar10", fake_timings("cifar10", {"natural": 0.1, "regularized": 0.1, "pgd2": 0.3, "fgsm_rs": 0.2, "nfgsm": 0.2}))


def test_job_runtime_has_a_margin_an_overhead_and_a_floor() -> None:
    assert projection.job_runtime_minutes(0) == projection.MINIMUM_MIN
    assert projection.job_runtime_minutes(3600) == math.ceil((3600 * 1.5 + 300) / 60)  # 95 minutes for an hour's work
    assert projection.job_runtime_minutes(3600, margin=2.0, overhead_s=0) == 120
    assert projection.job_runtime_minutes(60, margin=1.0, overhead_s=0, minimum=0) == 1
    assert projection.job_runtime_minutes(7200) > projection.job_runtime_minutes(3600)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(PipelineError, match="projected job time"):
            projection.job_runtime_minutes(bad)
    with pytest.raises(PipelineError, match="margin"):
        projection.job_runtime_minutes(10, margin=0.5)


def test_written_projection_gives_each_job_its_runtime(config: dict, tmp_path: Path) -> None:
    t = fake_timings("digits", {"natural": 0.5, "regularized": 0.5, "pgd10": 40.0, "pgd2": 1.5, "fgsm_rs": 1.0})
    rows = projection.project(config, "digits", t)
    out = tmp_path / "sub" / "projection.csv"
    text = projection.write_projection(rows, out, t)
    assert text == tmp_path / "sub" / "projection.txt" and text.read_text().startswith("projection digits")
    with out.open() as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == list(projection.COLUMNS) and len(written) == len(rows)
    assert float(written[-1]["device_hours"]) == pytest.approx(rows[-1]["device_hours"], abs=0.05)  # written to 0.1 h
    adv = "pgd10-eps0.2-step0.05_k250"
    expected = projection.job_runtime_minutes(resolve_model(config, "digits", adv)["k"] * 40.0 + 1797 * 1e-4)
    assert projection.runtime_minutes(out, adv, "train") == expected > 120  # longer than the Slurm profile's default
    assert projection.runtime_minutes(out, "natural_k500", "audit") >= projection.MINIMUM_MIN
    assert projection.runtime_minutes(out, "blackbox:pgd40_cw", "craft_blackbox") == projection.MINIMUM_MIN
    assert projection.runtime_minutes(out, "blackbox:pgd40_cw", "train", default=77) == 77  # no train job for a set
    assert projection.runtime_minutes(out, "no_such_model", "train", default=55) == 55
    assert projection.runtime_minutes(tmp_path / "absent.csv", adv, "train") == 120
    with pytest.raises(PipelineError, match="stage"):
        projection.runtime_minutes(out, adv, "dance")
    bad = tmp_path / "bad.csv"
    bad.write_text("model,train_runtime_min\n" + adv + ",soon\n")
    with pytest.raises(PipelineError, match="unreadable projection"):
        projection.runtime_minutes(bad, adv, "train")


def _cli():
    spec = importlib.util.spec_from_file_location("project_cost", ROOT / "benchmarks" / "project_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_command_line_writes_csv_text_and_json(digits_timings: Timings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cli = _cli()  # benchmarks/project_cost.py: smoothsqueeze.projection's command with config.yaml as default
    seen: list[dict] = []

    def measured(config, study, device, **kwargs):  # the fixture's real timings, not a second measurement
        seen.append({"study": study, "device": str(device), **kwargs})
        return digits_timings

    monkeypatch.setattr(cli.projection, "measure", measured)
    out = tmp_path / "p-{study}.csv"
    rc = cli.main(["--study", "digits", "--steps", "1", "--warmup", "1", "--attack-batch", "8", "--device", "cpu",
                      "--clock", "cpu", "--out", str(out), "--json", str(tmp_path / "p.json")])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert (tmp_path / "p-digits.csv").is_file() and (tmp_path / "p-digits.txt").is_file() and (tmp_path / "p.json").is_file()
    assert "projection digits on" in printed and "cpu clock" in printed
    assert seen == [{"study": "digits", "device": "cpu", "steps": 1, "warmup": 1, "attack_batch": 8, "clock": "cpu", "train_batch": None}]


@pytest.mark.parametrize("args, message", [
    (["--study", "nosuch", "--out", "x.csv"], "unknown study 'nosuch'"),
    (["--study", "digits", "--steps", "0", "--out", "x.csv"], "--steps 0"),
    (["--study", "digits", "mnist", "--out", "x.csv"], "'{study}'"),
    (["--study", "digits", "--config-json", "[1]", "--out", "x.csv"], "must be a JSON object"),
    (["--study", "digits", "--config-json", "{bad", "--out", "x.csv"], "not valid JSON"),
    (["--study", "digits", "--config-json", '{"studies": {}}', "--out", "x.csv"], "config error"),
    (["--study", "digits", "--config", "absent.yaml", "--out", "x.csv"], "file not found"),
])
def test_command_line_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _cli().main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith(("error:", "config error:"))  # a config error as the workflow prints it
    assert not (tmp_path / "x.csv").exists()


def test_module_command_takes_the_resolved_config_as_json(config: dict, digits_timings: Timings, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """What a workflow rule runs: `python -m smoothsqueeze project --config-json ...` (no file, no default)."""
    import json

    monkeypatch.setattr(projection, "measure", lambda *a, **k: digits_timings)
    out = tmp_path / "projection.csv"
    from smoothsqueeze import cli

    assert cli.main(["project", "--study", "digits", "--config-json", json.dumps(config), "--device", "cpu", "--out", str(out)]) == 0
    assert out.is_file() and "projection digits on" in capsys.readouterr().out
    # neither --config nor --config-json (the stage has no default config): one line, exit 2
    with pytest.raises(SystemExit) as refused:
        cli.main(["project", "--study", "digits", "--out", str(out)])
    assert refused.value.code == 2


def test_a_smaller_timed_training_batch_is_scaled_to_the_study_batch(config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []

    def fake_time_training(settings, device, steps, warmup, clock):
        batches.append(settings["train"]["batch_size"])
        return 0.001 * settings["train"]["batch_size"]  # linear in the batch

    monkeypatch.setattr(projection, "time_training", fake_time_training)
    monkeypatch.setattr(projection, "time_attack_parts", lambda *a, **k: ({"xent": 1e-3, "cw": 1e-3}, 1e-4))
    t = projection.measure(config, "digits", "cpu", train_batch=10, log=lambda _: None)
    assert set(batches) == {10} and t.train_batch == 10
    assert all(v == pytest.approx(0.001 * 50) for v in t.train_step_s.values())  # digits trains at batch 50
    assert "training timed at batch 10" in projection.summary_line(projection.project(config, "digits", t), t)
    with pytest.raises(PipelineError, match="train batch"):
        projection.measure(config, "digits", "cpu", train_batch=0, log=lambda _: None)
