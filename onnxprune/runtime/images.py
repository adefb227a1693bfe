"""Calibration and evaluation data from a folder of images: the ``.npz`` that ``--data`` reads.

Each image is read with Pillow, converted to RGB (or gray), resized to the model's input size,
laid out and normalized as the model expects:

=============== ===============================================================================
``resize``      ``stretch`` to ``H x W``; ``letterbox``: keep the aspect ratio, pad the rest
                with gray 114 around the centre (Ultralytics' ``LetterBox``); ``pad-right``: keep
                the ratio at height ``H``, clip at ``W``, pad the right with 0 (PP-OCR's
                recognizer and direction classifier, ``resize_norm_img``)
``channels``    ``rgb``, ``bgr`` (Paddle and OpenCV models) or ``gray``
``layout``      ``nchw`` or ``nhwc``
``normalize``   ``unit``: ``x / 255``; ``symmetric``: ``(x / 255 - 0.5) / 0.5``, in [-1, 1]
                (PP-OCR); ``imagenet``: ``(x / 255 - mean) / std`` with ImageNet's mean
                (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); ``none``: 0-255 floats
=============== ===============================================================================

Presets (:data:`PRESETS`) name the usual combinations: ``yolo`` (letterbox, rgb, unit),
``ppocr-rec`` and ``ppocr-cls`` (pad-right, bgr, symmetric), ``imagenet`` (stretch, rgb, imagenet).
``labels_from_folders`` labels each image by its folder's name (sorted names, 0, 1, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import OnnxPruneError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LETTERBOX_FILL = 114


@dataclass(frozen=True)
class Recipe:
    """How images become model inputs (see the module doc)."""

    height: int
    width: int
    resize: str = "stretch"
    channels: str = "rgb"
    layout: str = "nchw"
    normalize: str = "unit"

    def check(self) -> Recipe:
        for name, value, allowed in (("resize", self.resize, ("stretch", "letterbox", "pad-right")),
                                     ("channels", self.channels, ("rgb", "bgr", "gray")),
                                     ("layout", self.layout, ("nchw", "nhwc")),
                                     ("normalize", self.normalize, ("unit", "symmetric", "imagenet", "none"))):
            if value not in allowed:
                raise OnnxPruneError(f"unknown {{{name}}} {value!r}; choose one of {', '.join(allowed)}")
        if self.height < 1 or self.width < 1:
            raise OnnxPruneError(f"the image size must be positive, got {self.height}x{self.width}")
        if self.normalize == "imagenet" and self.channels == "gray":
            raise OnnxPruneError("{normalize} imagenet needs three channels, not gray")
        return self

    def to_dict(self) -> dict:
        return {"size": [self.height, self.width], "resize": self.resize, "channels": self.channels,
                "layout": self.layout, "normalize": self.normalize}

    def describe(self) -> str:
        return f"{self.height}x{self.width} {self.resize}, {self.channels}, {self.layout}, {self.normalize}"


PRESETS = {
    "yolo": dict(resize="letterbox", channels="rgb", normalize="unit"),
    "ppocr-rec": dict(resize="pad-right", channels="bgr", normalize="symmetric"),
    "ppocr-cls": dict(resize="pad-right", channels="bgr", normalize="symmetric"),
    "imagenet": dict(resize="stretch", channels="rgb", normalize="imagenet"),
}


def image_files(sources) -> list[Path]:
    """The image files of ``sources`` (files, or folders searched recursively), sorted.
    Errors: a source that does not exist; no image at all."""
    found = []
    for source in sources:
        path = Path(os.fspath(source))
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise OnnxPruneError(f"no such file or folder: {path}")
    if not found:
        raise OnnxPruneError(f"no image ({', '.join(EXTENSIONS)}) in {', '.join(map(str, sources))}")
    return found


def prepare(image, recipe: Recipe) -> np.ndarray:
    """One Pillow image as a float32 array of the recipe's layout (``[C, H, W]`` or ``[H, W, C]``)."""
    from PIL import Image

    image = image.convert("L" if recipe.channels == "gray" else "RGB")
    h, w = recipe.height, recipe.width
    if recipe.resize == "stretch":
        canvas = image.resize((w, h), Image.BILINEAR)
    elif recipe.resize == "letterbox":
        scale = min(h / image.height, w / image.width)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        canvas = Image.new(image.mode, (w, h), LETTERBOX_FILL if image.mode == "L" else (LETTERBOX_FILL,) * 3)
        canvas.paste(image.resize(size, Image.BILINEAR), ((w - size[0]) // 2, (h - size[1]) // 2))
    else:  # pad-right
        width = min(w, max(1, round(image.width * h / image.height)))
        canvas = Image.new(image.mode, (w, h), 0)
        canvas.paste(image.resize((width, h), Image.BILINEAR), (0, 0))
    x = np.asarray(canvas, np.float32)
    x = x[:, :, None] if x.ndim == 2 else x[:, :, ::-1] if recipe.channels == "bgr" else x
    if recipe.normalize == "unit":
        x = x / 255.0
    elif recipe.normalize == "symmetric":
        x = (x / 255.0 - 0.5) / 0.5
    elif recipe.normalize == "imagenet":
        mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
        x = (x / 255.0 - (mean[::-1] if recipe.channels == "bgr" else mean)) / (std[::-1] if recipe.channels == "bgr" else std)
    x = np.ascontiguousarray(x.transpose(2, 0, 1) if recipe.layout == "nchw" else x)
    return x.astype(np.float32)


def load_images(files: list[Path], recipe: Recipe, labels_from_folders: bool = False) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """``(inputs [N, ...], labels [N] or None, class names)`` for ``files``.
    Errors: a file Pillow cannot read, named."""
    from PIL import Image, UnidentifiedImageError

    recipe = recipe.check()
    arrays = []
    for path in files:
        try:
            with Image.open(path) as image:
                arrays.append(prepare(image, recipe))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise OnnxPruneError(f"cannot read image {path}: {exc}") from None
    names = sorted({p.parent.name for p in files}) if labels_from_folders else []
    labels = np.array([names.index(p.parent.name) for p in files], np.int64) if labels_from_folders else None
    return np.stack(arrays), labels, names


def recipe_for(model_input, *, size=None, layout=None, channels=None, **options) -> Recipe:
    """A :class:`Recipe` for a model input (an :class:`~onnxprune.runtime.session.InputSpec`):
    its layout (channels on axis 1 or last, by a dim of 1 or 3), channel count and size (its
    static H and W), each overridden by the options given. Errors: a size the model leaves
    dynamic and the options do not give."""
    shape = tuple(model_input.shape)
    if len(shape) != 4:
        raise OnnxPruneError(f"model input '{model_input.name}' has rank {len(shape)}: images need [N, C, H, W] or "
                             "[N, H, W, C]")
    guessed = "nhwc" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "nchw"
    layout = layout or guessed
    c, h, w = (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1], shape[2])
    if size is not None:
        h, w = size
    if h is None or w is None:
        raise OnnxPruneError(f"model input '{model_input.name}' has a dynamic height or width: give {{size}} HxW")
    channels = channels or ("gray" if c == 1 else "rgb")
    return replace(Recipe(int(h), int(w), layout=layout, channels=channels), **options).check()
