"""Channel counts that the target's fast kernels like: ``--round-to N|auto`` and ``--provider``.

A pruned layer is only as fast as the kernel that runs it. onnxruntime's x86 CPU convolutions
(MLAS NCHWc, applied by the ``NchwcTransformer`` graph optimization) work on blocks of
channels: 16 with AVX-512F, 8 with AVX2 or AVX. A convolution qualifies when its input channels
are a multiple of the block, or fewer than one block (it then reads the NCHW input directly);
a depthwise convolution needs whole blocks. A pruned group that keeps, say, 40 of 64 channels
drops its consumers out of the NCHWc path and can run slower than the unpruned model (measured
in the README: 0.80-0.98x for width-pruned CIFAR ResNets). cuDNN's tensor-core convolutions
want channel counts that are multiples of 8 (NVIDIA's "Convolutional Layers User's Guide",
channels a multiple of 8 for FP16).

:class:`Rounding` is the rule the schedules apply to every group's kept count:

- ``Rounding(16)`` (``--round-to 16``): a multiple of 16, rounding up, at most the group's size.
- ``Rounding(16, free_below=True)`` (``--round-to auto`` on AVX-512): a multiple of 16, or any
  count below 16, which the kernels above also take at full speed. Small groups (16 channels or
  fewer) thus stay prunable one channel at a time, so auto degrades to exact counts on narrow
  models instead of freezing them.
- ``Rounding(1)`` (``--round-to 1``): exact ratio semantics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import OnnxPruneError

PROVIDERS = ("cpu", "cuda", "tensorrt")
"""The targets ``--provider`` names for ``--round-to auto``."""

GPU_MULTIPLE = 8
"""cuDNN tensor-core kernels (FP16; TF32 for FP32) want channel counts in multiples of 8."""


@dataclass(frozen=True)
class Rounding:
    """Which kept-channel counts a group may have (see the module doc).

    ``multiple``: kept counts are multiples of it (1: any count). ``free_below``: counts below
    ``multiple`` are allowed too. ``reason``: where an automatic choice came from, for the
    summary (``"auto: AVX-512 NCHWc block"``).
    """

    multiple: int = 1
    free_below: bool = False
    reason: str = ""

    def up(self, keep: int, n: int) -> int:
        """``keep`` rounded up to an allowed count, at most ``n`` (the group's channels)."""
        if self.multiple > 1 and not (self.free_below and keep < self.multiple):
            keep = int(math.ceil(keep / self.multiple) * self.multiple)
        return min(keep, n)

    def down(self, keep: int) -> int:
        """The next allowed count below ``keep`` (0 when none is left)."""
        if self.multiple > 1 and not (self.free_below and keep <= self.multiple):
            return (keep - 1) // self.multiple * self.multiple
        return keep - 1

    def to_json(self) -> int | dict:
        """``--round-to`` as the JSON summary shows it: the int, or the automatic choice."""
        return self.multiple if not self.reason else {"auto": True, "multiple": self.multiple,
                                                      "free_below": self.free_below, "reason": self.reason}

    def __str__(self) -> str:
        if not self.reason:
            return str(self.multiple)
        return f"auto ({self.multiple}: {self.reason})"


def as_rounding(round_to: int | Rounding) -> Rounding:
    """``round_to`` as given to the schedules: an int N (a multiple of N) or a :class:`Rounding`."""
    return round_to if isinstance(round_to, Rounding) else Rounding(int(round_to))


def cpu_features() -> dict[str, bool]:
    """numpy's table of this CPU's SIMD features (``{"AVX2": True, "AVX512F": False, ...}``)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            features = {}
    return dict(features)


def cpu_block() -> tuple[int, str]:
    """The MLAS NCHWc channel block of this CPU and why: 16 with AVX-512F, 8 with AVX2 or AVX,
    1 elsewhere (onnxruntime has no NCHWc kernels for other CPUs, e.g. ARM).

    Read from numpy's runtime CPU dispatch table, which checks the OS's support of the register
    state as well as the instruction flags.
    """
    features = cpu_features()
    if features.get("AVX512F"):
        return 16, "AVX-512 NCHWc block"
    if features.get("AVX2") or features.get("AVX"):
        return 8, "AVX2 NCHWc block"
    return 1, "no NCHWc kernels on this CPU"


def resolve(round_to: int | str | Rounding, provider: str = "cpu") -> Rounding:
    """The :class:`Rounding` for ``--round-to`` (an int >= 1 or ``"auto"``) on ``provider``
    (``cpu``: this machine's NCHWc block; ``cuda`` and ``tensorrt``: 8).

    Errors (``OnnxPruneError``): an unknown provider, a round-to that is neither ``auto`` nor an
    integer >= 1.
    """
    if isinstance(round_to, Rounding):
        return round_to
    if provider not in PROVIDERS:
        raise OnnxPruneError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if round_to == "auto":
        if provider == "cpu":
            multiple, reason = cpu_block()
        else:
            multiple, reason = GPU_MULTIPLE, f"{provider}: tensor-core channel multiple"
        return Rounding(multiple, free_below=multiple > 1, reason=reason)
    if isinstance(round_to, str) and round_to.isdigit():
        round_to = int(round_to)
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise OnnxPruneError(f"{{round_to}} must be 'auto' or an integer >= 1, got {round_to!r}")
    return Rounding(round_to)
