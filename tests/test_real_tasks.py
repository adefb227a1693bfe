"""Every accuracy path on four real third-party models with tasks generated here
(tools/real_tasks.py): PP-OCRv4's recognizer on rendered lines, PP-OCR's direction classifier
on lines turned 0/180, captcha-whisperer's CRNN on ``captcha`` images, NudeNet's YOLOv8n on
photos. Small data: this checks that each path runs and reports the task's metric, not how
accurate the result is (the README's figures come from ``python tools/real_tasks.py``)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from clirun import cli, ok
from onnxprune.decide.names import DEFAULT_WITH_DATA
from tools.real_tasks import TASKS

pytestmark = pytest.mark.slow

CALIB, EVAL = 12, 8


@pytest.fixture(scope="module", params=sorted(TASKS))
def task(request, tmp_path_factory):
    """``(task, model path, calibration npz, evaluation npz, sensitivity json, work folder)``."""
    task = TASKS[request.param]
    work = tmp_path_factory.mktemp(task.name)
    try:
        model = task.model()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"could not fetch {task.source[1]} from {task.source[0]}: {exc}", pytrace=False)
    calib = task.write(work / "calib.npz", CALIB, 0)
    evaluation = task.write(work / "eval.npz", EVAL, 1000)
    sens = work / "sens.json"
    ok(cli("analyze", model, "--input-shape", task.input_shape, "--sensitivity", "--data", calib,
           "--calib-samples", "4", "--ratios", "0.5", "--json", sens))
    return task, model, calib, evaluation, sens, work


def prune(task, *args):
    task, model, calib, evaluation, sens, work = task
    out = work / f"p{abs(hash(args))}.onnx"
    result = ok(cli("prune", model, "-o", out, "--input-shape", task.input_shape, "--json", "-", "-q", *args))
    onnx.checker.check_model(str(out))
    return out, json.loads(result.stdout)


def test_sensitivity_measures_every_group_with_the_task_metric(task):
    task, model, calib, evaluation, sens, work = task
    report = json.loads(sens.read_text())["sensitivity"]
    expected = {"ppocr_rec": "ctc", "ppocr_cls": "accuracy", "captcha_crnn": "ctc", "nudenet_yolo": "map50:yolo"}
    assert report["metric"] == expected[task.name] and report["complete"] and report["curves"]


@pytest.mark.parametrize("recover", ["bn", "reconstruct"])
def test_every_recovery(task, recover):
    out, summary = prune(task, "--target-macs", "0.5", "--recover", recover, "--data", task[2])
    assert summary["recovery"]["method"] == recover
    assert summary["macs_kept"] == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("criterion", ["activation", "wanda", "greedy"])
def test_every_data_criterion(task, criterion):
    out, summary = prune(task, "--target-macs", "0.75", "--criterion", criterion, "--recover", "none",
                         "--data", task[2])
    assert summary["criterion"].startswith(criterion) and summary["recovery"] is None


def test_measured_defaults_and_gradual_pruning(task):
    out, summary = prune(task, "--target-macs", "0.6", "--steps", "2", "--data", task[2])
    criterion, recovery = DEFAULT_WITH_DATA
    assert summary["criterion"].startswith(criterion) and summary["recovery"]["method"] == recovery
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["macs_kept"] == pytest.approx(0.6, abs=0.03)
    assert any(f"the defaults are criterion {criterion} and recovery {recovery}" in n for n in summary["notes"])


@pytest.mark.parametrize("schedule", ["global", "sensitivity", "evolution"])
def test_every_schedule(task, schedule):
    extra = {"sensitivity": ["--sensitivity-from", task[4], "--data", task[2], "--calib-samples", "4"],
             "evolution": ["--evaluations", "120", "--data", task[2], "--calib-samples", "4"]}.get(schedule, [])
    out, summary = prune(task, "--target-macs", "0.5", "--schedule", schedule, *extra)
    assert summary["macs_kept"] <= 0.53


def test_depth_and_mixed_blocks_with_recovery(task):
    out, summary = prune(task, "--depth-ratio", "0.5", "--recover", "reconstruct", "--data", task[2])
    assert summary["recovery"] is not None and summary["blocks_dropped"]
    out, summary = prune(task, "--target-macs", "0.5", "--schedule", "sensitivity", "--sensitivity-from", task[4],
                         "--mix-blocks", "--recover", "reconstruct", "--data", task[2], "--calib-samples", "4")
    assert summary["macs_kept"] <= 0.53


def test_verify_reports_the_task_metric_and_gates(task):
    task_, model, calib, evaluation, sens, work = task
    out, _ = prune(task, "--target-macs", "0.5")
    result = cli("verify", model, out, "--data", evaluation, "--max-drop", "0.0", "--json", "-")
    report = json.loads(result.stdout)
    (first, *_) = report["metrics"]
    assert first["metric"] in ("ctc", "accuracy", "map50:yolo")
    assert result.exit_code == (1 if first["drop"] > 0 else 0)
    assert ok(cli("verify", model, model, "--data", evaluation, "--max-drop", "0.0"))


def test_finetune_runs_on_every_graph(task):
    task_, model, calib, evaluation, sens, work = task
    out, _ = prune(task, "--target-macs", "0.75")
    tuned = work / "tuned.onnx"
    result = ok(cli("finetune", out, "--teacher", model, "--data", calib, "--val", evaluation, "--epochs", "1",
                    "--batch-size", "6", "-o", tuned, "--json", "-", "-q"))
    summary = json.loads(result.stdout)
    assert summary["metric"] in ("ctc", "accuracy", "map50:yolo")
    assert summary["val_after"] >= summary["val_before"]  # the kept weights are never worse on --val
    onnx.checker.check_model(str(tuned))


def test_a_fixed_batch_of_one_works_end_to_end(tmp_path):
    """The direction classifier with its batch fixed to 1 (as onnxsim --overwrite-input-shape
    writes it): sensitivity, recovery and verify run sample by sample."""
    task = TASKS["ppocr_cls"]
    model = onnx.load(str(task.model()))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_value = 48 if dim is model.graph.input[0].type.tensor_type.shape.dim[2] else 192
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, fixed)
    calib = task.write(tmp_path / "calib.npz", CALIB, 0)
    ok(cli("analyze", fixed, "--sensitivity", "--data", calib, "--calib-samples", "4", "--ratios", "0.5",
           "--json", tmp_path / "s.json"))
    result = ok(cli("prune", fixed, "-o", tmp_path / "p.onnx", "--target-macs", "0.5", "--recover", "reconstruct",
                    "--data", calib, "--json", "-", "-q"))
    assert json.loads(result.stdout)["recovery"]["method"] == "reconstruct"
    result = ok(cli("verify", fixed, tmp_path / "p.onnx", "--data", calib))
    assert "fixed batch of 1" in result.output
    assert np.isfinite(json.loads(ok(cli("verify", fixed, tmp_path / "p.onnx", "--data", calib, "--json", "-"))
                                  .stdout)["metrics"][0]["pruned"])
