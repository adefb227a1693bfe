"""Real tasks for real models: the data recipes the accuracy benchmarks and tests generate, with
no download (PyPI packages only).

* :func:`photos`: photos from ``skimage.data`` (astronaut, coffee, chelsea, rocket), randomly
  cropped (60-100% of the side), flipped and resized to ``size`` x ``size``, RGB scaled to
  [0, 1], NCHW: the input of an Ultralytics YOLO export. The original's detections are the
  pseudo-labels (``onnxprune verify`` computes them).
"""

from __future__ import annotations

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photos(n: int, size: int = 320, seed: int = 0) -> np.ndarray:
    """``[n, 3, size, size]`` float32 in [0, 1] (see the module doc)."""
    import skimage.data
    from PIL import Image

    images = [getattr(skimage.data, name)() for name in PHOTOS]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        image = images[k % len(images)]
        h, w = image.shape[:2]
        side = rng.uniform(0.6, 1.0)
        ch, cw = int(h * side), int(w * side)
        y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = np.asarray(Image.fromarray(image[y0:y0 + ch, x0:x0 + cw]).resize((size, size), Image.BILINEAR))
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        out.append(crop.astype(np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(out)


# ---- rendered text (PP-OCR recognizer and direction classifier) ----

FONT_DIR = "/usr/share/fonts/truetype/dejavu"  # Debian's fonts-dejavu-core
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansCondensed.ttf")
TEXT_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _font(k: int, size: int):
    """Debian's DejaVu fonts in turn, or Pillow's own font where they are not installed."""
    import os

    from PIL import ImageFont

    path = os.path.join(FONT_DIR, FONTS[k % len(FONTS)])
    return ImageFont.truetype(path, size) if os.path.exists(path) else ImageFont.load_default(size)


def _line(text: str, k: int, rng) -> "PIL.Image.Image":  # noqa: F821
    """One dark line of ``text`` on a light background, 40 px high, a little margin, font ``k``."""
    from PIL import Image, ImageDraw

    font = _font(k, int(rng.integers(24, 31)))
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(2, 8))
    ink, paper = int(rng.integers(0, 70)), int(rng.integers(190, 256))
    image = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), (paper,) * 3)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, fill=(ink,) * 3, font=font)
    return image


def random_strings(n: int, rng, chars: str = TEXT_CHARS, lengths=(4, 10)) -> list[str]:
    return ["".join(rng.choice(list(chars), int(rng.integers(lengths[0], lengths[1] + 1)))) for _ in range(n)]


def text_lines(n: int, characters: list[str], seed: int = 0, height: int = 48, width: int = 320):
    """``(x [n, 3, height, width], labels [n, 10])``: random strings of digits and ASCII letters
    rendered in DejaVu fonts, prepared as PP-OCR's recognizer expects (height ``height``, ratio
    kept, padded right, BGR, ``(x/255-0.5)/0.5``: preset ``ppocr-rec`` of ``onnxprune data``).
    ``characters``: the model's dictionary (class k is ``characters[k-1]``; 0 is CTC's blank);
    labels are class indices, -1 padded."""
    from onnxprune.runtime.images import PRESETS, Recipe, prepare

    rng = np.random.default_rng(seed)
    index = {c: k + 1 for k, c in enumerate(characters)}
    strings = random_strings(n, rng, "".join(c for c in TEXT_CHARS if c in index))
    recipe = Recipe(height, width, **PRESETS["ppocr-rec"])
    x = np.stack([prepare(_line(s, k, rng), recipe) for k, s in enumerate(strings)])
    labels = np.full((n, 10), -1, np.int64)
    for k, s in enumerate(strings):
        labels[k, :len(s)] = [index[c] for c in s]
    return x, labels


def rotated_lines(n: int, seed: int = 0, height: int = 48, width: int = 192):
    """``(x [n, 3, height, width], labels [n])``: rendered lines (as :func:`text_lines`), every
    other one turned by 180 degrees (label 1, else 0), prepared with preset ``ppocr-cls``: the
    task of PP-OCR's text-direction classifier."""
    from onnxprune.runtime.images import PRESETS, Recipe, prepare

    rng = np.random.default_rng(seed)
    strings = random_strings(n, rng, lengths=(3, 8))
    recipe = Recipe(height, width, **PRESETS["ppocr-cls"])
    labels = np.arange(n, dtype=np.int64) % 2
    lines = [_line(s, k, rng) for k, s in enumerate(strings)]
    x = np.stack([prepare(line.rotate(180) if label else line, recipe) for line, label in zip(lines, labels)])
    return x, labels


# ---- captchas (captcha-whisperer's CRNN) ----

CAPTCHA_LABELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # class k; 36 is CTC's blank
CAPTCHA_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # the model never predicts I or O: trained without them


def captchas(n: int, seed: int = 0):
    """``(x [n, 3, 60, 160], labels [n, 4])``: images of the ``captcha`` package's
    ``ImageCaptcha`` (160 x 60, its default fonts) of 4 random digits and capitals but I and O, BGR,
    0-255 floats (captcha-whisperer's ``preprocess``: ``onnxprune data --channels bgr
    --normalize none``); labels are class indices (``CAPTCHA_LABELS``), -1 padded."""
    import random

    from captcha.image import ImageCaptcha
    from PIL import Image

    from onnxprune.runtime.images import Recipe, prepare

    rng = np.random.default_rng(seed)
    random.seed(seed)  # ImageCaptcha draws its noise from the random module
    generator = ImageCaptcha(width=160, height=60)
    recipe = Recipe(60, 160, channels="bgr", normalize="none")
    strings = random_strings(n, rng, CAPTCHA_CHARS, lengths=(4, 4))
    x = np.stack([prepare(Image.open(generator.generate(s)), recipe) for s in strings])
    labels = np.array([[CAPTCHA_LABELS.index(c) for c in s] for s in strings], np.int64).reshape(n, 4)
    return x, labels


def ppocr_characters(model_path) -> list[str]:
    """The dictionary RapidOCR stores in the recognizer's metadata (``character``), with the
    space PP-OCR appends: class k of the output is entry k-1."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    text = next(p.value for p in model.metadata_props if p.key == "character")
    return text.splitlines() + [" "]
