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
