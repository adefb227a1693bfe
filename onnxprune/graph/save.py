"""Low-level pieces of atomic saving: signals held back during renames, and a model written
with its weights in an external data file.

:class:`onnxprune.graph.outputs.OutputSet` builds on these; use it to publish files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import onnx

from ..errors import Terminated
from .proto import _copy_fields, _tensor_nbytes, copy_without_initializers


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file, existing or not: through symlinks, ``..`` and hard
    links (same device and inode) for existing files, by resolved path otherwise."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
        return pa.resolve() == pb.resolve()
    except (OSError, ValueError):  # a name too long, a NUL byte, a loop of symlinks: not a file we read
        return os.path.abspath(pa) == os.path.abspath(pb)


class _Publication:
    """Process-wide: whether a command line is running whose outputs are published.

    The CLI sets ``finish`` while a command runs (:func:`command_running`). Once an output set
    is published (:func:`mark_published`), the command has succeeded: an interrupt arriving
    after that no longer aborts it (see README, *Guarantees*). The Python API leaves ``finish``
    off: a deferred interrupt is raised once the outputs are in place."""

    finish = False
    published = False
    ignored: list[int] = []
    deferring = False  # inside a signals_deferred block


@contextlib.contextmanager
def command_running():
    """Mark a command line as running for the block (see :class:`_Publication`); yields the
    list of signals ignored because they arrived after the outputs were published."""
    state = (_Publication.finish, _Publication.published, _Publication.ignored)
    _Publication.finish, _Publication.published, _Publication.ignored = True, False, []
    try:
        yield _Publication.ignored
    finally:
        _Publication.finish, _Publication.published, _Publication.ignored = state


def mark_published() -> None:
    """Every output of the running command is whole and in place."""
    _Publication.published = True


def interrupts_ignored() -> bool:
    """Whether an interrupt that arrives now is to be ignored: a command line runs and its
    outputs are published."""
    return _Publication.finish and _Publication.published


def ignore_interrupt(signum: int) -> None:
    """Record ``signum`` as ignored (see :func:`interrupts_ignored`)."""
    _Publication.ignored.append(signum)


@contextlib.contextmanager
def signals_deferred(written: str | None = None):
    """Hold SIGINT and SIGTERM back while the block runs (temporary-file creation, renames,
    clean-up), then raise the interrupt that came: ``KeyboardInterrupt`` for SIGINT,
    :class:`~onnxprune.errors.Terminated` for SIGTERM, with ``written`` set on the exception
    when the block committed outputs (they are whole and in place). When the block published
    the outputs of a running command line (:func:`interrupts_ignored`), the interrupt is
    recorded instead and nothing is raised.

    SIGTERM is deferred only when a Python handler is installed for it (the CLI installs one);
    an ignored SIGINT stays ignored. Outside the main thread signals cannot arrive here, and
    inside another deferred block the outer one holds them: both are no-ops.
    """
    if threading.current_thread() is not threading.main_thread() or _Publication.deferring:
        yield
        return
    received: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is signal.SIG_IGN or (sig == signal.SIGTERM and not callable(handler)):
            continue
        previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    _Publication.deferring = True
    try:
        yield
    finally:
        _Publication.deferring = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received and interrupts_ignored():
        for signum in received:
            ignore_interrupt(signum)
    elif received:
        exc = Terminated() if signal.SIGTERM in received else KeyboardInterrupt()
        exc.written = written
        raise exc


sigint_deferred = signals_deferred  # the name used before SIGTERM was handled too


EXTERNAL_SIZE_THRESHOLD = 1024  # tensors of at least this many bytes go to the data file
_ALIGN = 4096  # tensors of at least _ALIGN_MIN bytes start at a page boundary (mmap-friendly)
_ALIGN_MIN = 1 << 16


def external_data_name(out: str | os.PathLike) -> str:
    """The data file written next to ``out`` for its external tensors: ``<out name>.data``."""
    return f"{Path(out).name}.data"


def write_external(model: onnx.ModelProto, path: Path, location: str) -> onnx.ModelProto:
    """Write ``model`` to ``path`` with its large initializers in ``path.parent / location``;
    return the proto written to ``path`` (tensor data replaced by references)."""
    skeleton = copy_without_initializers(model)
    offset = 0
    with open(path.parent / location, "wb") as data:
        for tensor in model.graph.initializer:
            nbytes = _tensor_nbytes(tensor)
            ext = skeleton.graph.initializer.add()
            if nbytes is None or nbytes < EXTERNAL_SIZE_THRESHOLD or not tensor.HasField("raw_data"):
                ext.CopyFrom(tensor)
                continue
            _copy_fields(tensor, ext, skip={"raw_data", "external_data", "data_location"})
            if nbytes >= _ALIGN_MIN and offset % _ALIGN:
                pad = _ALIGN - offset % _ALIGN
                data.write(b"\0" * pad)
                offset += pad
            raw = tensor.raw_data  # one tensor's bytes at a time
            data.write(raw)
            ext.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = ext.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            del raw
    with open(path, "wb") as fh:
        fh.write(skeleton.SerializeToString())
    return skeleton
