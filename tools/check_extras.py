"""Resolve the install extras with pip, without installing: which onnxruntime wheels each pulls.

For each extra (default: ``gpu`` and ``cpu``) this runs, in a temporary copy of the project::

    pip install --dry-run --ignore-installed --quiet --report - ".[EXTRA]"

(pip >= 22.2; it needs the package index, and builds the project's metadata in an isolated
environment), reads pip's installation report (JSON: ``install[].metadata.name/version``) and
lists the onnxruntime distributions in the resolved set, i.e. everything the extra pulls in,
transitively. ``[gpu]`` must give exactly ``onnxruntime-gpu``, ``[cpu]`` and ``[test]`` exactly
``onnxruntime``, the bare project (``core``) none; ``gpu,torch`` resolves two extras together
(what ``tools/bench_gpu.py`` needs). Combining ``cpu`` and ``gpu`` (or ``test`` and ``gpu``)
installs both wheels: that is the conflict the split avoids, and it is reported as not ok.

Prints one JSON line per extra: ``extra``, ``onnxruntime`` (``[name==version, ...]``),
``packages`` (how many distributions the resolution installs), ``ok``. Exit status 0 when every
extra resolved as it must, 1 otherwise. Not part of the unit tests (it needs the network).

    python tools/check_extras.py [--extras all | gpu cpu test core gpu,torch ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {"gpu": {"onnxruntime-gpu"}, "cpu": {"onnxruntime"}, "test": {"onnxruntime"}}
"""The onnxruntime distributions these extras must resolve to; every other extra of
pyproject.toml, and ``core`` (no extra), must resolve to none."""


def known_extras() -> list[str]:
    """``core`` and the extras that pyproject.toml declares."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return ["core", *project.get("optional-dependencies", {})]


def expected(extras: str) -> set[str]:
    """What ``extras`` (one name, or several joined by commas: ``gpu,torch``) must resolve to."""
    return set().union(*(EXPECTED.get(name, set()) for name in extras.split(",")))


def extras_arg(text: str) -> str:
    if text == "all":
        return text
    known = known_extras()
    unknown = [name for name in text.split(",") if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown extra(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return text


def project_copy(folder: Path) -> Path:
    """pyproject.toml, README.md and the package, copied into ``folder``: building metadata
    writes ``onnxprune.egg-info`` next to pyproject.toml, and the checkout's copy (which an
    editable install reads) must not change."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, folder / name)
    shutil.copytree(ROOT / "onnxprune", folder / "onnxprune", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def resolve(extra: str) -> dict:
    """pip's dry-run resolution of ``.[extra]`` (``core``: ``.``); the JSON line for it."""
    target = "." if extra == "core" else f".[{extra}]"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
           target]
    with tempfile.TemporaryDirectory(prefix="check_extras_") as tmp:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=project_copy(Path(tmp)))
    if proc.returncode != 0:
        return {"extra": extra, "ok": False, "error": (proc.stderr.strip().splitlines() or ["pip failed"])[-1]}
    report = json.loads(proc.stdout)
    installed = [(item["metadata"]["name"], item["metadata"]["version"]) for item in report["install"]]
    ort = sorted(f"{name}=={version}" for name, version in installed if name.lower().startswith("onnxruntime"))
    names = {entry.split("==")[0].lower() for entry in ort}
    ok = names == expected(extra) and len(names) <= 1  # never both wheels
    return {"extra": extra, "onnxruntime": ort, "packages": len(installed), "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", nargs="+", type=extras_arg, default=["gpu", "cpu"],
                        help="extras to resolve, e.g. gpu cpu test core gpu,torch; all: every extra of "
                             "pyproject.toml and core (default: gpu cpu)")
    args = parser.parse_args(argv)
    good = True
    extras = [name for arg in args.extras for name in (known_extras() if arg == "all" else [arg])]
    for extra in extras:
        line = resolve(extra)
        good &= line["ok"]
        print(json.dumps(line), flush=True)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
