"""The shape each graph input is analyzed, run and measured at: one rule for every command.

* A dim the model fixes is kept; ``input_shapes`` (``--input-shape``) may only repeat it.
* A dynamic batch axis (axis 0) defaults to 1, and the summaries print the shape used.
* Any other dynamic dim must be given: there is no safe default for an image size or a sequence
  length, and a guess would make MACs, groups and speedups silently wrong.
* A dim the model declares as 0 is refused: such an input only accepts empty tensors.
* A shape whose tensor cannot be allocated (more bytes than this machine's memory) is refused
  with the size it would need, before anything is allocated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from ..errors import OnnxPruneError

Dims = Sequence  # ints for fixed dims, None for dynamic ones


def fmt_dims(dims: Dims) -> str:
    """``[1, 3, ?, ?]`` for a declared shape with dynamic dims."""
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def resolve_input_shape(name: str, declared: Dims, given: Sequence[int] | None = None,
                        dtype: np.dtype | None = None) -> tuple[int, ...]:
    """The full shape of graph input ``name``: ``declared`` (the model's dims, None where
    dynamic) completed by ``given`` (a full shape, or None) as the module doc says; ``dtype``
    (numpy) sizes the allocation check.

    Errors (``OnnxPruneError``): a rank or fixed dim that ``given`` contradicts, a declared 0,
    a dynamic dim beyond axis 0 that ``given`` does not fix, a tensor too large to allocate.
    """
    declared = list(declared)
    zero = [axis for axis, d in enumerate(declared) if d == 0]
    if zero:
        raise OnnxPruneError(f"model input '{name}' {fmt_dims(declared)} declares size 0 on axis {zero[0]}: it only "
                             "accepts empty tensors, so it cannot be run or measured; fix the model's input shape")
    if given is not None:
        given = tuple(int(d) for d in given)
        if len(given) != len(declared):
            raise OnnxPruneError(f"{{input_shapes}} for '{name}' has rank {len(given)}, the model input is "
                                 f"{fmt_dims(declared)} (rank {len(declared)})")
        for axis, (got, fixed) in enumerate(zip(given, declared)):
            if fixed is not None and got != fixed:
                raise OnnxPruneError(f"{{input_shapes}} for '{name}': axis {axis} is fixed to {fixed} in the model, "
                                     f"{got} given")
        shape = given
    else:
        dynamic = [axis for axis, d in enumerate(declared) if d is None and axis > 0]
        if dynamic:
            example = "x".join("1" if axis == 0 and d is None else (f"<d{axis}>" if d is None else str(d))
                               for axis, d in enumerate(declared))
            raise OnnxPruneError(f"model input '{name}' {fmt_dims(declared)} has dynamic dims on axes "
                                 f"{', '.join(map(str, dynamic))}; pass {{input_shapes}} {name}:{example}")
        shape = tuple(1 if d is None else d for d in declared)
    check_allocatable(name, shape, dtype, given is not None)
    return shape


def memory_bytes() -> int:
    """This machine's physical memory in bytes (16 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def human_bytes(n: int) -> str:
    """``25769803776`` → ``24 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} EiB"  # pragma: no cover


def check_allocatable(name: str, shape: Sequence[int], dtype: np.dtype | None = None, given: bool = False) -> None:
    """Refuse (``OnnxPruneError``) a tensor ``shape`` of ``dtype`` (float32 if None) that needs
    more bytes than this machine's memory, naming the size it would need."""
    itemsize = np.dtype(dtype if dtype is not None else np.float32).itemsize
    nbytes = math.prod(int(d) for d in shape) * itemsize
    limit = memory_bytes()
    if nbytes > limit:
        fix = "give a smaller {input_shapes}" if given else "give a smaller shape"
        raise OnnxPruneError(f"input '{name}' of shape {list(shape)} needs {human_bytes(nbytes)}, more than this "
                             f"machine's {human_bytes(limit)} of memory; {fix}")
