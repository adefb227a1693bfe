"""Long sensitivity scans: every finished group and block saved as it goes, ``--resume``,
a failure that names its group and ratio, plain progress lines off a terminal, ``--exclude``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clirun import assert_bad_input, cli, ok
from onnxprune.decide.sensitivity import SensitivityReport
from onnxprune.runtime import scoring

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "digits" / "resnet8_digits.onnx"
CALIB = REPO / "models" / "digits" / "digits_calib.npz"
SCAN = ["analyze", DIGITS, "--sensitivity", "--data", CALIB, "--calib-samples", "64", "--ratios", "0.3,0.6"]


def failing_on(group: str, ratio: float, monkeypatch):
    """Make the scan fail when it prunes ``group`` at ``ratio`` (the evaluator runs in-process
    with --jobs 1)."""
    real = scoring.PlanEvaluator.plan_for

    def plan_for(self, ratios):
        if ratios.get(group) == ratio:
            raise ValueError("injected failure")
        return real(self, ratios)

    monkeypatch.setattr(scoring.PlanEvaluator, "plan_for", plan_for)
    scoring._CACHE.clear()


def test_a_failed_scan_names_where_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "sens.json"
    failing_on("g3", 0.6, monkeypatch)
    result = cli(*SCAN, "--json", out)
    assert result.exit_code == 70, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "sensitivity of group g3" in line and "at ratio 0.6" in line and "injected failure" in line
    assert f"{out}.partial" in line and "--resume" in line
    partial = SensitivityReport.load(f"{out}.partial")
    assert not partial.complete and "g3" not in {c.id for c in partial.curves} and partial.curves
    assert not out.exists()
    monkeypatch.undo()
    scoring._CACHE.clear()
    measured = []
    real = scoring.PlanEvaluator.group_scores
    monkeypatch.setattr(scoring.PlanEvaluator, "group_scores",
                        lambda self, gid, ratios: measured.append(gid) or real(self, gid, ratios))
    ok(cli(*SCAN, "--json", out, "--resume"))
    done = SensitivityReport.load(out)
    assert done.complete and len(done.curves) == 6
    assert set(measured) == {c.id for c in done.curves} - {c.id for c in partial.curves}  # the rest only
    assert not Path(f"{out}.partial").exists()


def test_resume_refuses_another_scans_checkpoint(tmp_path):
    out = tmp_path / "sens.json"
    ok(cli(*SCAN, "--json", out))
    report = json.loads(out.read_text())["sensitivity"]
    report["complete"], report["criterion"] = False, "l2"
    Path(f"{out}.partial").write_text(json.dumps(report))
    assert_bad_input(cli(*SCAN, "--json", out, "--resume"), "the checkpoint was written by another scan (criterion")
    assert_bad_input(cli(*SCAN, "--resume"), "--resume continues from the checkpoint that --json PATH keeps")


def test_progress_lines_off_a_terminal(tmp_path, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("onnxprune.cli.analyze"), "PROGRESS_EVERY_S", 0.0)
    result = ok(cli(*SCAN, "--json", tmp_path / "s.json"))
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sensitivity: ")]
    assert lines and lines[-1].startswith("sensitivity: 7/7 groups and blocks measured")


def test_exclude_leaves_groups_out_of_the_scan(tmp_path):
    ok(cli(*SCAN, "--exclude", "/layer3/*", "--json", tmp_path / "s.json"))
    report = SensitivityReport.load(tmp_path / "s.json")
    assert report.excluded and all(c.id not in report.excluded for c in report.curves)
    assert len(report.curves) + len(report.excluded) == 6
    assert_bad_input(cli(*SCAN, "--exclude", "nothing*"), "--exclude pattern 'nothing*' matches no node")


def test_an_unfinished_checkpoint_cannot_drive_a_schedule(tmp_path):
    out = tmp_path / "sens.json"
    ok(cli(*SCAN, "--json", out))
    report = json.loads(out.read_text())["sensitivity"]
    report["complete"] = False
    (tmp_path / "partial.json").write_text(json.dumps(report))
    assert_bad_input(cli("prune", DIGITS, "-o", tmp_path / "p.onnx", "--target-macs", "0.5", "--schedule", "sensitivity",
                         "--sensitivity-from", tmp_path / "partial.json"), "checkpoint of an unfinished scan")
