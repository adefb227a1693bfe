"""Atomic saves: a temporary file (or folder, with external data) beside the output, then ``os.replace``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import onnx

from ..errors import OnnxPruneError
from .proto import _copy_fields, _tensor_nbytes, copy_without_initializers


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (existing or not)."""
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


class Interrupted(KeyboardInterrupt):
    """SIGINT arrived while the output was being committed: the commit was completed first, so
    the output is whole and in place (``written`` names it)."""

    def __init__(self, written: str) -> None:
        super().__init__(f"interrupted after {written} was written")
        self.written = written


@contextlib.contextmanager
def sigint_deferred(written: str | None = None):
    """Hold SIGINT back while the block runs (file creation, renames, clean-up), then raise
    ``KeyboardInterrupt`` if one came (:class:`Interrupted` when ``written`` says the block
    committed an output). Outside the main thread signals cannot arrive here: a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise Interrupted(written) if written else KeyboardInterrupt()


def _refuse_overwrite(out: Path, protected) -> None:
    """``protected`` is the input model, then the data files it reads."""
    for k, path in enumerate(protected):
        if path is not None and same_file(out, path):
            what = f"the input model {path}" if k == 0 else f"{path}, which the input model reads"
            raise OnnxPruneError(f"refusing to overwrite {what}; choose another output path")


def check_output(out: str | os.PathLike, never_overwrite) -> None:
    """Refuse (``OnnxPruneError``) an output whose model file, or its external data file
    ``<out name>.data``, would replace one of ``never_overwrite`` (the input model, then the
    data files it reads)."""
    out = Path(out)
    protected = _protected(never_overwrite)
    _refuse_overwrite(out, protected)
    data_out = out.parent / external_data_name(out)
    for path in protected:
        if path is not None and same_file(data_out, path):
            raise OnnxPruneError(f"refusing to overwrite {path}, which the input model reads, with the output's "
                                 f"external data {data_out.name}; choose another output name")


def _protected(never_overwrite) -> list:
    if never_overwrite is None:
        return []
    if isinstance(never_overwrite, (str, os.PathLike)):
        return [never_overwrite]
    return list(never_overwrite)


def save_model_atomic(model: onnx.ModelProto | bytes, out: str | os.PathLike, *,
                      never_overwrite=None, external_data: bool = False, verify=None) -> Path:
    """Write ``model`` (a proto or its serialized bytes) to ``out`` through a temporary file in the same folder and ``os.replace``.

    An interrupted write leaves no partial file at ``out`` and no temporary file. Refuses
    (``OnnxPruneError``) to write over ``never_overwrite`` (a path or a list of paths: the input
    model and its external data files), or into a folder that does not exist.

    ``external_data=True`` writes the tensors to ``<out name>.data`` next to ``out`` (see
    :class:`StagedModel`); ``verify(path)`` then runs on the staged model before it is moved in
    place. It returns ``out``.
    """
    out = Path(out)
    protected = _protected(never_overwrite)
    if external_data:
        if isinstance(model, bytes):
            model = onnx.load_model_from_string(model)
        with StagedModel(model, out, never_overwrite=protected) as staged:
            if verify is not None:
                verify(staged.path)
            staged.commit()
        return out
    _refuse_overwrite(out, protected)
    if not out.parent.is_dir():
        raise OnnxPruneError(f"output folder does not exist: {out.parent}")
    write_atomic(out, model if isinstance(model, bytes) else model.SerializeToString())
    return out


def write_atomic(out: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``out`` through a temporary file in the same folder and ``os.replace``.

    The file gets the usual mode under the umask (``mkstemp`` would leave 0600). SIGINT is held
    back while the temporary file is created and renamed, so an interrupt leaves either the old
    state or the complete file, and never a temporary file."""
    out = Path(out)
    tmp = None
    try:
        with sigint_deferred():  # the temporary file exists only once the clean-up knows it
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        with sigint_deferred(written=str(out)):
            os.replace(tmp, out)
            tmp = None
    except BaseException:
        if tmp is not None:
            with sigint_deferred():
                if os.path.exists(tmp):
                    os.unlink(tmp)
        raise


EXTERNAL_SIZE_THRESHOLD = 1024  # tensors of at least this many bytes go to the data file
_ALIGN = 4096  # tensors of at least _ALIGN_MIN bytes start at a page boundary (mmap-friendly)
_ALIGN_MIN = 1 << 16


def external_data_name(out: str | os.PathLike) -> str:
    """The data file written next to ``out`` for its external tensors: ``<out name>.data``."""
    return f"{Path(out).name}.data"


class StagedModel:
    """A model written with external data into a temporary folder inside the output folder.

    ``StagedModel(model, out)`` writes ``<tmp>/<out name>`` and ``<tmp>/<out name>.data``: every
    initializer holding at least 1 KiB of ``raw_data`` goes to the data file (large ones at 4 KiB
    boundaries), referenced by the name it will have next to ``out``; the model file is the
    small remaining proto (:attr:`model`, which is also what :meth:`commit` leaves on disk).
    The tensors' bytes are read one at a time: no serialized copy of the whole model is made,
    so this works above the 2 GB protobuf limit. ``path`` is the staged model file, ready for
    ``onnx.checker`` and onnxruntime. :meth:`commit` moves the data file, then the model file,
    in place with ``os.replace`` (SIGINT waits until both are done). Leaving the ``with`` block
    without a commit, by an error or ``KeyboardInterrupt``, removes the temporary folder.

    Refuses (``OnnxPruneError``) an output whose model or data file would replace one of
    ``never_overwrite`` (the input model and its data files).
    """

    def __init__(self, model: onnx.ModelProto, out: str | os.PathLike, *, never_overwrite=None) -> None:
        self.out = Path(out)
        self.data_out = self.out.parent / external_data_name(self.out)
        check_output(self.out, never_overwrite)
        if not self.out.parent.is_dir():
            raise OnnxPruneError(f"output folder does not exist: {self.out.parent}")
        self.folder: Path | None = None
        try:
            with sigint_deferred():
                self.folder = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent))
            self.path = self.folder / self.out.name
            self.model = _write_external(model, self.path, self.data_out.name)
        except BaseException:
            self.discard()
            raise

    def __enter__(self) -> StagedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def commit(self) -> Path:
        staged_data = self.folder / self.data_out.name
        with sigint_deferred(written=str(self.out)):
            if staged_data.exists():
                os.replace(staged_data, self.data_out)
            os.replace(self.path, self.out)
            self.folder.rmdir()
            self.folder = None
        return self.out

    def discard(self) -> None:
        """Remove the temporary folder, if it is still there."""
        if self.folder is not None:
            with sigint_deferred():
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = None


def _write_external(model: onnx.ModelProto, path: Path, location: str) -> onnx.ModelProto:
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
