"""The install extras: ``onnxprune[gpu]`` gives exactly one onnxruntime flavour, the GPU one.

The ``onnxruntime`` and ``onnxruntime-gpu`` wheels install the same ``onnxruntime`` import
package, and whichever is installed last wins; so no requirement set may hold both. These tests
read the project's requirements from pyproject.toml, evaluate them as pip does for each extra
(``packaging`` markers with ``extra == "gpu"`` etc.), and walk the installed core dependencies'
own requirements (offline). ``tools/check_extras.py`` does the full resolution with pip
(network); it is not part of this suite. Last: without onnxruntime, the commands that need it
fail with one ``error:`` line naming both extras, and the rest still work.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
FLAVOURS = {"onnxruntime", "onnxruntime-gpu"}


def metadata_requires() -> list[Requirement]:
    """The ``Requires-Dist`` lines setuptools writes for pyproject.toml: core requirements as
    they are, each extra's with ``extra == "<name>"`` appended to its marker."""
    reqs = [Requirement(text) for text in PROJECT["dependencies"]]
    for extra, texts in PROJECT.get("optional-dependencies", {}).items():
        for text in texts:
            req = Requirement(text)
            marker = f"({req.marker}) and extra == \"{extra}\"" if req.marker else f"extra == \"{extra}\""
            reqs.append(Requirement(f"{str(req).split(';')[0]}; {marker}"))
    return reqs


def resolved(reqs: list[Requirement], *extras: str) -> set[str]:
    """Names of the requirements that apply when installing with ``extras`` (none: the core)."""
    names = set()
    for req in reqs:
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or ("",))):
            names.add(canonicalize_name(req.name))
    return names


def test_core_has_no_onnxruntime():
    assert resolved(metadata_requires()) & FLAVOURS == set()


@pytest.mark.parametrize("extra, flavour",
                         [("gpu", "onnxruntime-gpu"), ("cpu", "onnxruntime"), ("test", "onnxruntime")])
def test_each_extra_brings_exactly_one_flavour(extra, flavour):
    assert resolved(metadata_requires(), extra) & FLAVOURS == {flavour}


def test_gpu_requirement_is_onnxruntime_gpu_only():
    gpu = [Requirement(text) for text in PROJECT["optional-dependencies"]["gpu"]]
    ort = [req for req in gpu if canonicalize_name(req.name).startswith("onnxruntime")]
    assert [canonicalize_name(req.name) for req in ort] == ["onnxruntime-gpu"]
    cpu = [Requirement(text) for text in PROJECT["optional-dependencies"]["cpu"]]
    assert [canonicalize_name(req.name) for req in cpu] == ["onnxruntime"]
    assert ort[0].specifier == cpu[0].specifier  # the same onnxruntime versions, either flavour


def test_only_the_cpu_and_test_extras_name_plain_onnxruntime():
    for extra, texts in PROJECT["optional-dependencies"].items():
        names = {canonicalize_name(Requirement(text).name) for text in texts}
        assert len(names & FLAVOURS) <= 1, extra
        if "onnxruntime" in names:
            assert extra in {"cpu", "test"}, extra


def test_test_extra_uses_the_cpu_requirement():
    cpu = set(PROJECT["optional-dependencies"]["cpu"])
    assert cpu <= set(PROJECT["optional-dependencies"]["test"])


def _installed_closure(names: set[str]) -> tuple[dict[str, str], list[str]]:
    """Walk the installed distributions' requirements (markers evaluated, no extras) from
    ``names``; returns ``{dist: who required it}`` and the requirements not installed here."""
    seen: dict[str, str] = {}
    missing = []
    todo = [(name, "onnxprune") for name in names]
    while todo:
        name, parent = todo.pop()
        if name in seen:
            continue
        seen[name] = parent
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append((canonicalize_name(req.name), name))
    return seen, missing


def test_no_core_dependency_requires_onnxruntime_transitively():
    """Offline: the installed core dependencies, and theirs, never ask for either flavour (the
    full resolution, index included, is ``tools/check_extras.py``)."""
    core = resolved(metadata_requires())
    closure, missing = _installed_closure(core)
    assert not missing or set(missing) < core | set(closure), missing
    culprits = {dist: parent for dist, parent in closure.items() if dist in FLAVOURS}
    assert culprits == {}, f"required by: {culprits}"


def test_installed_metadata_matches_pyproject():
    """Where this checkout is installed (``pip install -e``), its metadata says the same."""
    try:
        installed = importlib.metadata.requires("onnxprune") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("onnxprune is not installed")
    want = {(canonicalize_name(r.name), str(r.specifier), str(r.marker)) for r in metadata_requires()}
    have = {(canonicalize_name(r.name), str(r.specifier), str(r.marker)) for r in map(Requirement, installed)}
    if have != want:
        pytest.skip("the installed metadata predates pyproject.toml; reinstall with pip install -e '.[test]'")
    reqs = [Requirement(text) for text in installed]
    assert resolved(reqs, "gpu") & FLAVOURS == {"onnxruntime-gpu"}


# ================================================================ without onnxruntime

NO_ORT = "import sys; sys.modules['onnxruntime'] = None; from onnxprune.cli import main; main()"


def run_without_onnxruntime(*args: str) -> subprocess.CompletedProcess:
    """``onnxprune ARGS`` in a fresh interpreter where ``import onnxruntime`` fails."""
    return subprocess.run([sys.executable, "-c", NO_ORT, *map(str, args)], check=False, capture_output=True,
                          text=True, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def digits():
    return REPO / "models" / "digits" / "resnet8_digits.onnx"


@pytest.mark.parametrize("command", [["bench", "{m}", "--runs", "1"], ["verify", "{m}", "{m}"],
                                     ["prune", "{m}", "-o", "{out}", "--ratio", "0.3"],
                                     ["bench", "{m}", "--provider", "tensorrt"]])
def test_commands_that_need_onnxruntime_say_how_to_install_it(command, digits, tmp_path):
    out = tmp_path / "p.onnx"
    proc = run_without_onnxruntime(*[a.format(m=digits, out=out) for a in command])
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: onnxruntime is not installed"), proc.stderr
    assert "pip install onnxruntime (onnxruntime-gpu" in lines[0] and 'pip install ".[cpu]"' in lines[0]
    assert "onnxprune[" not in lines[0]  # onnxprune is not on PyPI: no advice that pip cannot follow
    assert not out.exists()


def test_analyze_needs_no_onnxruntime(digits):
    proc = run_without_onnxruntime("analyze", digits)
    assert proc.returncode == 0, proc.stderr
    assert "prunable" in proc.stdout


def test_python_api_imports_without_onnxruntime():
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "import onnxprune\n"
            "from onnxprune.runtime import bench, evaluate, precision, session\n"
            "try:\n    session.make_session(b'')\nexcept onnxprune.OnnxPruneError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("onnxruntime is not installed; pip install")
