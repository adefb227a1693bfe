"""The README stays true: its Python blocks run, and its set-up commands print its figures."""

from __future__ import annotations

import re
import runpy
import shlex
from pathlib import Path

import pytest

from clirun import cli, ok

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("k", range(len(python_blocks())))
def test_python_block_runs(k, tmp_path, monkeypatch, capsys):
    """Each ```python block runs as written from a folder with the repository's models/ in it."""
    (tmp_path / "models").symlink_to(REPO / "models")
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "block.py"
    script.write_text(python_blocks()[k])
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    for line in python_blocks()[k].splitlines():  # every "# comment" after a print states its output
        match = re.match(r"\s*print\(error\)\s*#\s*(.*)", line)
        if match:
            assert match.group(1) in printed


def test_python_api_block_meets_its_claims(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").symlink_to(REPO / "models")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(_write(tmp_path, python_blocks()[0])), run_name="__main__")
    out = capsys.readouterr().out
    kept = float(re.search(r"MACs kept ([0-9.]+)", out).group(1))
    assert abs(kept - 0.5) <= 0.02
    import onnx

    again, pruned = (onnx.load(str(tmp_path / name)) for name in ("again.onnx", "pruned.onnx"))
    # the saved plan keeps the same channels (the first prune's weights were then refit on data)
    def widths(model):  # every node's inputs (recovery may add a bias) and every weight's shape
        dims = {t.name: list(t.dims) for t in model.graph.initializer}
        return [(n.op_type, list(n.input[:2]), dims.get(n.input[1]) if len(n.input) > 1 else None) for n in model.graph.node]

    assert widths(again) == widths(pruned)
    accuracy = re.search(r"accuracy ([0-9.]+)% -> ([0-9.]+)%", out)
    assert float(accuracy.group(2)) >= float(accuracy.group(1)) - 1.0
    assert not (tmp_path / "x.onnx").exists()


def _write(folder: Path, text: str) -> Path:
    path = folder / "block.py"
    path.write_text(text)
    return path


def test_setup_command_prints_the_readme_figures(tmp_path, monkeypatch):
    """Set-up step 1: the `onnxprune prune ... && onnxprune verify ...` chain and its figures."""
    setup = README[README.index("## Set-up"):README.index("2. Install the test dependencies")]
    chain = re.search(r"```\n\s*(pip install \"\.\[cpu\]\" && onnxprune .*?)\n\s*```", setup, flags=re.S).group(1)
    commands = [shlex.split(part) for part in chain.split("&&")][1:]  # after `pip install ".[cpu]"`
    (tmp_path / "models").symlink_to(REPO / "models")
    monkeypatch.chdir(tmp_path)
    printed = ""
    for words in commands:
        assert words[0] == "onnxprune"
        printed += ok(cli(*words[1:])).stdout
    text = " ".join(printed.split())
    for figure in re.findall(r"\(MACs ([\d.]+M) → ([\d.]+M), params ([\d.]+K) → ([\d.]+K)", setup)[0]:
        assert figure in text, figure
    for accuracy in re.findall(r"(\d+\.\d+%)", setup):
        assert accuracy in text, accuracy
