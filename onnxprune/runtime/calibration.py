"""Calibration data that can be trusted: refused when it cannot be real, split into the part a
recovery fits on and the part that checks it.

* :func:`check_real`: no NaN or infinity, no input whose samples are all the same, no sample
  that is one constant value (four all-zero images let a least-squares fit "fix" every layer).
* :func:`split`: a seeded shuffle into ``fit`` and ``check``; ``check`` holds
  :data:`HOLDOUT` of the samples (at least 2) once there are :data:`MIN_FOR_HOLDOUT`, so that
  recovery's "never worse" test runs on samples the fit never saw, and overfitting is undone.
"""

from __future__ import annotations

import numpy as np

from ..errors import OnnxPruneError
from .evaluate import Dataset

HOLDOUT = 0.2
MIN_FOR_HOLDOUT = 10


def check_real(data: Dataset, what: str = "the calibration data") -> Dataset:
    """``data`` when it can be real inputs (see the module doc). Errors: ``OnnxPruneError``
    naming the input and the sample."""
    for name, array in data.inputs.items():
        values = np.asarray(array)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))[0])
            raise OnnxPruneError(f"{what}: input '{name}' holds NaN or infinity (sample {bad}); give real inputs")
        flat = values.reshape(len(values), -1)
        if flat.shape[1] > 1 and values.dtype.kind == "f":
            constant = np.flatnonzero((flat == flat[:, :1]).all(axis=1))
            if len(constant):
                raise OnnxPruneError(f"{what}: sample {int(constant[0])} of input '{name}' is one constant value "
                                     f"({flat[constant[0], 0]:g} everywhere; {len(constant)} of {len(flat)} samples "
                                     "are): give real inputs")
        if len(flat) > 1 and (flat == flat[:1]).all():
            raise OnnxPruneError(f"{what}: every sample of input '{name}' is the same: give real, varied inputs")
    return data


def split(data: Dataset, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """``(fit, check)``: a seeded shuffle of ``data``, ``check`` holding :data:`HOLDOUT` of the
    samples (None below :data:`MIN_FOR_HOLDOUT`: then the check runs on the fit data)."""
    n = len(data)
    if n < MIN_FOR_HOLDOUT:
        return data, None
    order = np.random.default_rng(seed).permutation(n)
    held = max(2, int(round(HOLDOUT * n)))
    return _take(data, np.sort(order[held:])), _take(data, np.sort(order[:held]))


def _take(data: Dataset, index: np.ndarray) -> Dataset:
    labels = None if data.labels is None else np.asarray(data.labels)[index]
    return Dataset({k: np.asarray(v)[index] for k, v in data.inputs.items()}, labels)
