"""Safe outputs: every path a command reads and writes, checked together before any work, and
every output published at once, or none.

:class:`OutputSet` is the one helper that every command (and every Python entry point that
writes files) uses:

* **No aliasing.** No output may name a file that the command reads (the model, its external
  data, a plan, an ``.npz``), nor a file that another output names, through any spelling,
  symlink or hard link. A model output also claims its external data file ``<name>.data``.
* **Checked up front.** Each output's folder must exist and accept a new file, and its name must
  fit the file system. A temporary file is created and removed in every output folder before
  the work starts, so a read-only folder (EROFS), a folder without write permission (EACCES) or
  a file system without free inodes is refused before anything is computed.
* **Atomic, all or nothing.** Outputs are staged as temporary files (``.onnxprune-*.tmp``) beside
  their destinations. :meth:`OutputSet.commit` moves all of them into place with ``os.replace``
  once every one is staged; SIGINT and SIGTERM wait until the moves are done (and in the
  command line no longer abort a command whose outputs are published). Leaving the
  ``with`` block without a commit (an error, a full disk, an interrupt) removes every temporary
  file and publishes nothing.

Errors are :class:`~onnxprune.errors.OnnxPruneError` with one line that says what to do. Output
labels are option names (``out_path``, ``json_path``), written ``{label}`` in messages so that
the CLI can spell them as its flags.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..errors import OnnxPruneError
from .save import external_data_name, mark_published, same_file, signals_deferred, write_external

PathLike = str | os.PathLike
TEMP_PREFIX, TEMP_SUFFIX = ".onnxprune-", ".tmp"

_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "operation not permitted; choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EFBIG: "the file is too large for this file system",
    errno.EISDIR: "it is a directory; give a file path",
}


def write_error(exc: OSError, path: PathLike) -> OnnxPruneError:
    """A one-line error for an ``OSError`` met while writing ``path``."""
    hint = _HINTS.get(exc.errno, exc.strerror or type(exc).__name__)
    return OnnxPruneError(f"cannot write {os.fspath(path)}: {hint}")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


@dataclass
class _Staged:
    label: str
    moves: list[tuple[Path, Path]] = field(default_factory=list)  # (temporary, destination), in commit order
    folder: Path | None = None  # a temporary folder to remove after the moves (external data)

    @property
    def nbytes(self) -> int:
        return sum(temp.stat().st_size for temp, _ in self.moves)


class OutputSet:
    """The outputs of one command, as a transaction (see the module doc).

    ``writes`` maps an output's label (the option name) to its path, or None when that output
    is not asked for. ``models`` names the labels that are ONNX models (they also claim
    ``<name>.data``). ``reads`` maps a description ("the input model") to a path or a list of
    paths the command reads; :meth:`add_reads` adds reads found later (the external data files
    a model refers to), before anything is staged.

    Errors (``OnnxPruneError``), all raised before any work: an empty path, a directory, a
    missing folder, a name too long, an output that aliases an input or another output, a
    folder that refuses a new file.
    """

    def __init__(self, writes: Mapping[str, PathLike | None], reads: Mapping[str, PathLike | Iterable | None] | None = None,
                 models: Iterable[str] = ()) -> None:
        self.paths: dict[str, Path] = {}
        self._models = set(models)
        self._reads: list[tuple[str, Path]] = []
        self._staged: list[_Staged] = []
        self._temps: list[Path] = []
        self.committed = False
        for label, path in writes.items():
            if path is None:
                continue
            self.paths[label] = self._checked_destination(label, path)
        self._check_distinct()
        self.add_reads(reads or {})
        try:
            self._probe_folders()
        except BaseException:  # an interrupt or a refusal during the probe: no probe file stays
            self.discard()
            raise

    # ---------------------------------------------------------------- checks
    def _claims(self) -> list[tuple[str, Path, bool]]:
        """(label, path, derived) for every file the outputs may write."""
        claims = []
        for label, path in self.paths.items():
            claims.append((label, path, False))
            if label in self._models:
                claims.append((label, path.parent / external_data_name(path), True))
        return claims

    def _checked_destination(self, label: str, path: PathLike) -> Path:
        text = os.fspath(path)
        if not text:
            raise OnnxPruneError(f"{{{label}}} is an empty path; give a file path")
        if "\0" in text:
            raise OnnxPruneError(f"{{{label}}} contains a NUL byte")
        dest = Path(text)
        folder = dest.parent
        try:
            if not folder.is_dir():
                raise OnnxPruneError(f"cannot write {text}: folder {folder} does not exist")
            limit = _name_max(folder)
            for name in [dest.name] + ([external_data_name(dest)] if label in self._models else []):
                if len(os.fsencode(name)) > limit:
                    raise OnnxPruneError(f"cannot write {folder / name}: the file name is {len(os.fsencode(name))} "
                                         f"bytes, more than the {limit} this file system allows")
            if dest.is_dir() or text.endswith(os.sep):
                raise OnnxPruneError(f"cannot write {text}: it is a directory; give a file path for {{{label}}}")
        except OSError as exc:
            raise write_error(exc, text) from None
        return dest

    def _check_distinct(self) -> None:
        claims = self._claims()
        for i, (a, pa, derived_a) in enumerate(claims):
            for b, pb, derived_b in claims[i + 1:]:
                if a == b or not same_file(pa, pb):
                    continue
                if derived_a or derived_b:
                    model, other = (a, b) if derived_a else (b, a)
                    raise OnnxPruneError(f"{{{other}}} {self.paths[other]} is the external data file that {{{model}}} "
                                         f"may write; give it another name")
                raise OnnxPruneError(f"{{{a}}} and {{{b}}} name the same file {pa}; give each output its own path")

    def add_reads(self, reads: Mapping[str, PathLike | Iterable | None]) -> None:
        """Register files the command reads and refuse any output that would overwrite one."""
        for what, paths in reads.items():
            if paths is None:
                continue
            for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
                self._reads.append((what, Path(path)))
                for label, claim, derived in self._claims():
                    if same_file(claim, path):
                        by = f"the external data file of {{{label}}}" if derived else f"{{{label}}}"
                        raise OnnxPruneError(f"refusing to overwrite {what} {os.fspath(path)} with {by}; "
                                             "choose another output path")

    def _probe_folders(self) -> None:
        """Create and remove a temporary file in each output folder: EACCES, EROFS and a full
        inode table show now, before any work."""
        seen: set[Path] = set()
        for dest in self.paths.values():
            folder = dest.parent.resolve()
            if folder in seen:
                continue
            seen.add(folder)
            with signals_deferred():  # created and removed with interrupts held back
                temp = self._temp(dest)
                temp.unlink()
                self._temps.remove(temp)

    # ---------------------------------------------------------------- staging
    def _temp(self, dest: Path, folder: bool = False) -> Path:
        with signals_deferred():  # the temporary exists only once the clean-up knows it
            try:
                if folder:
                    temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=dest.parent))
                else:
                    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=dest.parent)
                    os.close(fd)
                    temp = Path(name)
            except OSError as exc:
                raise write_error(exc, dest) from None
            self._temps.append(temp)
        if not folder:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temp, 0o666 & ~umask)  # mkstemp leaves 0600; a published file follows the umask
        return temp

    def _dest(self, label: str) -> Path:
        if label not in self.paths:
            raise KeyError(f"no output {label!r} in this set")
        if any(s.label == label for s in self._staged):
            raise RuntimeError(f"output {label!r} is staged already")
        return self.paths[label]

    def stage_file(self, label: str, write: Callable[[Path], None]) -> int:
        """Stage ``label`` by calling ``write(temporary path)``; returns the bytes written."""
        dest = self._dest(label)
        temp = self._temp(dest)
        try:
            write(temp)
        except OSError as exc:
            raise write_error(exc, dest) from None
        staged = _Staged(label, [(temp, dest)])
        self._staged.append(staged)
        return staged.nbytes

    def stage_bytes(self, label: str, data: bytes) -> int:
        """Stage ``label`` with the content ``data``; returns its size."""
        return self.stage_file(label, lambda temp: temp.write_bytes(data))

    def stage_model(self, label: str, model: onnx.ModelProto | bytes, *, external: bool = False,
                    check: Callable[[Path], None] | None = None) -> onnx.ModelProto | None:
        """Stage an ONNX model: its serialized bytes, or with ``external=True`` (a proto) its
        tensors of 1 KiB and more in ``<name>.data`` beside it (any size, beyond the 2 GB
        protobuf limit: tensors are written one at a time). ``check(path)`` then runs on the
        staged model file, by path, before anything is published. Returns the proto that was
        written with ``external=True`` (tensor data replaced by references), else None."""
        if not external:
            self.stage_bytes(label, model if isinstance(model, bytes) else model.SerializeToString())
            return None
        dest = self._dest(label)
        folder = self._temp(dest, folder=True)
        staged_path, data_name = folder / dest.name, external_data_name(dest)
        try:
            written = write_external(model, staged_path, data_name)
        except OSError as exc:
            raise write_error(exc, dest) from None
        if check is not None:
            check(staged_path)
        moves = [(folder / data_name, dest.parent / data_name)] if (folder / data_name).exists() else []
        self._staged.append(_Staged(label, moves + [(staged_path, dest)], folder))
        return written

    def nbytes(self, label: str) -> int:
        """Bytes of a staged output, its external data included."""
        return next(s.nbytes for s in self._staged if s.label == label)

    # ---------------------------------------------------------------- publishing
    def commit(self) -> list[Path]:
        """Move every staged output into place (SIGINT and SIGTERM wait until all are moved);
        returns the destinations. Outputs in :attr:`paths` that were never staged stay absent."""
        written = [dest for s in self._staged for _, dest in s.moves]
        done: list[Path] = []
        with signals_deferred(written=", ".join(map(str, written))):
            try:
                for staged in self._staged:
                    for temp, dest in staged.moves:
                        os.replace(temp, dest)
                        done.append(dest)
                    if staged.folder is not None:
                        staged.folder.rmdir()
                        self._temps.remove(staged.folder)
                    else:
                        self._temps.remove(staged.moves[0][0])
            except OSError as exc:
                so_far = f" ({', '.join(map(str, done))} already written)" if done else ""
                raise OnnxPruneError(f"{write_error(exc, dest)}{so_far}") from None
            self.committed = True
            mark_published()
        return written

    def discard(self) -> None:
        """Remove every temporary file and folder that is still there."""
        with signals_deferred():
            for temp in self._temps:
                if temp.is_dir():
                    shutil.rmtree(temp, ignore_errors=True)
                else:
                    temp.unlink(missing_ok=True)
            self._temps.clear()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def write_atomic(out: PathLike, data: bytes, *, never_overwrite=None) -> None:
    """Write ``data`` to ``out`` atomically (an :class:`OutputSet` of one output)."""
    with OutputSet({"out": out}, {"an input": never_overwrite}) as outputs:
        outputs.stage_bytes("out", data)
        outputs.commit()


def save_model_atomic(model: onnx.ModelProto | bytes, out: PathLike, *, never_overwrite=None,
                      external_data: bool = False, verify: Callable[[Path], None] | None = None) -> Path:
    """Save ``model`` (a proto or its bytes) to ``out`` atomically, never over ``never_overwrite``
    (a path or paths: the input model and its data files). ``external_data=True`` writes
    ``<out name>.data`` beside it and runs ``verify(staged path)`` before publishing."""
    with OutputSet({"out": out}, {"the input model": never_overwrite}, models=["out"]) as outputs:
        if external_data and isinstance(model, bytes):
            model = onnx.load_model_from_string(model)
        outputs.stage_model("out", model, external=external_data, check=verify)
        outputs.commit()
    return Path(out)
