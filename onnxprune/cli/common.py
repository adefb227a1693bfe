"""What every command shares: one-line errors and exit codes, signals, the common options, and
human output (rich tables on a terminal, plain text otherwise).

Exit codes: 0 ok; 1 a check failed (``verify --max-drop``); 2 bad input, a bad option or an
environment failure (one line on stderr, ``error: ...``); 130 SIGINT; 143 SIGTERM; 70 an
internal error (``ONNXPRUNE_DEBUG=1`` shows its traceback; 70 is ``EX_SOFTWARE`` of
sysexits.h). Nothing is written by a command that exits with 2, 70, 130 or 143.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps

import click
from rich.console import Console
from rich.table import Table

from ..errors import OnnxPruneError, Terminated

# How the CLI spells the Python parameters that error messages name as ``{name}``.
FLAGS = {
    "out_path": "-o", "plan_out": "--plan", "plan": "--plan", "json_path": "--json", "plot_path": "--plot",
    "input_shapes": "--input-shape", "global_rank": "--global", "data_path": "--data", "exclude": "--exclude",
    "sensitivity": "--sensitivity-from", "allow_noop": "--allow-noop", "granularity": "--granularity",
}


INTERNAL_ERROR = 70
"""Exit status of an internal error (sysexits.h ``EX_SOFTWARE``): 1 means a check failed."""


def flag(name: str) -> str:
    """``ratio`` → ``--ratio``; ``input_shapes`` → ``--input-shape``."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(message: str, code: int) -> None:
    """Print ``message`` as one line on stderr and exit with ``code``."""
    sys.stderr.write(_one_line(message) + "\n")
    sys.stderr.flush()
    sys.exit(code)


def handle_errors(fn):
    """Run a command: ``OnnxPruneError`` → ``error: ...`` and exit 2; SIGINT → 130 and SIGTERM →
    143 (nothing was written: once the outputs are published, interrupts are ignored); a closed
    stdout pipe → 141, silently; anything else → ``internal error`` and exit 70."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OnnxPruneError as exc:
            fail(f"error: {exc.render(flag)}", 2)
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            kept = getattr(exc, "kept", None)
            also = f" (the finished part of the scan is kept in {kept}: --resume continues it)" if kept else ""
            fail(f"{'terminated' if terminated else 'interrupted'}; nothing was written{also}", 143 if terminated else 130)
        except BrokenPipeError:
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
            finally:
                sys.exit(141)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # pragma: no cover - the safety net
            if os.environ.get("ONNXPRUNE_DEBUG"):
                traceback.print_exc()
            first = (str(exc).splitlines() or [""])[0][:300]
            fail(f"internal error: {type(exc).__name__}: {first} (set ONNXPRUNE_DEBUG=1 for details)", INTERNAL_ERROR)

    return wrapper


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2; older clicks print help


class _Signals:
    """SIGINT and SIGTERM while a command runs: an interrupt (``KeyboardInterrupt`` or
    :class:`Terminated`) until its outputs are published or it has finished, ignored after
    that (README, *Guarantees*: once the outputs are in place the command has succeeded)."""

    finished = False

    @classmethod
    def handler(cls, signum, frame):
        from ..graph.save import ignore_interrupt, interrupts_ignored

        if cls.finished or interrupts_ignored():
            ignore_interrupt(signum)
            return
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def command_signals(process: bool):
    """Install :class:`_Signals` for the block (an ignored SIGINT, as in a background job, stays
    ignored); yields the list of signals ignored after the outputs were published.

    ``process``: the command is the whole process (the ``onnxprune`` script), which exits
    after the block; the handlers then stay, ignoring every signal, so that an interrupt while
    the interpreter shuts down cannot turn the command's exit status into a signal's. Otherwise
    (in-process callers, tests) the previous handlers come back."""
    from ..graph.save import command_running

    if threading.current_thread() is not threading.main_thread():
        with command_running() as ignored:
            yield ignored
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, _Signals.handler)
    _Signals.finished = False
    try:
        with command_running() as ignored:
            yield ignored
    finally:
        if process:
            _Signals.finished = True
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class OnnxPruneGroup(click.Group):
    """The ``onnxprune`` group: click's usage errors become one ``error:`` line (exit 2), and
    SIGINT and SIGTERM are handled by :func:`command_signals` while a command runs. ``process``
    (keyword, default False) says that the command is the whole process (see :func:`run`)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, process=False, **extra):
        with command_signals(process) as ignored:
            try:
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except _NO_ARGS_IS_HELP as exc:
                click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
                code = 2
            except click.ClickException as exc:
                command = f"onnxprune {exc.ctx.info_name}" if getattr(exc, "ctx", None) and exc.ctx.parent else "onnxprune"
                hint = f"; see '{command} --help'" if isinstance(exc, click.UsageError) else ""
                fail(f"error: {_usage_message(exc).rstrip('.')}{hint}", 2)
            except click.exceptions.Abort:
                fail("interrupted; nothing was written", 130)
            if ignored:
                names = sorted({signal.Signals(s).name for s in ignored})
                sys.stderr.write(f"warning: {' and '.join(names)} arrived after the outputs were written and was "
                                 "ignored: they are complete\n")
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _usage_message(exc: click.ClickException) -> str:
    text = _one_line(exc.format_message())
    return re.sub(r"^Invalid value for", "invalid value for", text)


# ---------------------------------------------------------------- common options
def input_shape_option(fn):
    return click.option("--input-shape", "input_shape", multiple=True, metavar="NAME:DIMS",
                        help="Fix an input's dims, e.g. images:1x3x640x640 (repeatable). A dynamic batch "
                             "defaults to 1; every other dynamic dim must be given.")(fn)


def output_options(fn):
    """``--json PATH|-``, ``--format``, ``-q`` and ``-v``."""
    fn = click.option("-v", "--verbose", is_flag=True, help="Show more: per-group details and stage timings.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (and the JSON of --json -).")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(["auto", "table", "plain"]), default="auto",
                      show_default=True,
                      help="Human output: rich tables, or plain text without box drawing; auto picks tables "
                           "on a terminal and plain text when piped.")(fn)
    fn = click.option("--json", "json_path", metavar="PATH|-",
                      help="Also write the results as JSON to PATH; '-' writes them to stdout (and the human "
                           "output to stderr).")(fn)
    return fn


def parse_shapes(specs) -> dict:
    from ..runtime.evaluate import parse_input_shapes

    return parse_input_shapes(specs)


# ---------------------------------------------------------------- human output
@dataclass
class Column:
    header: str
    align: str = "left"
    wrap: bool = False  # prose that may wrap between words; other columns never wrap or get cut


@dataclass
class Output:
    """Where a command's human output goes, and in which form (see :func:`output_options`)."""

    fmt: str = "auto"
    quiet: bool = False
    verbose: bool = False
    json_path: str | None = None

    def __post_init__(self) -> None:
        self.json_stdout = self.json_path == "-"
        self.stream = sys.stderr if self.json_stdout else sys.stdout
        tty = self.stream.isatty()
        self.plain = self.fmt == "plain" or (self.fmt == "auto" and not tty)
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True, emoji=False,
                               force_terminal=False if self.plain else None, no_color=self.plain or None)

    @property
    def json_file(self) -> str | None:
        """The JSON path to stage among the outputs (None for none, or for stdout)."""
        return None if self.json_stdout else self.json_path

    def line(self, text: str = "") -> None:
        if not self.quiet:
            self.console.print(text, markup=False)

    def note(self, text: str) -> None:
        self.line(f"note: {text}")

    def warn(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write(f"warning: {_one_line(text)}\n")

    def emit_json(self, data: dict) -> None:
        """Print ``data`` to stdout when ``--json -`` was given (after the outputs are published)."""
        if self.json_stdout:
            sys.stdout.write(json_text(data))
            sys.stdout.flush()

    def table(self, title: str, columns: list[Column], rows: list[list[str]]) -> None:
        """A table that never cuts a cell: rich box drawing on a terminal when the table fits its
        width without breaking a word, aligned plain text otherwise."""
        if self.quiet:
            return
        self.console.print(title, markup=False)
        width = self.console.width
        if self.plain or _min_width(columns, rows) > width:
            for text in _plain_rows(columns, rows):
                self.console.print(text, markup=False)
            return
        table = Table(show_edge=True)
        for col in columns:
            table.add_column(col.header, justify=col.align, no_wrap=not col.wrap, overflow="fold")
        for row in rows:
            table.add_row(*row)
        self.console.print(table, markup=False)

    @contextmanager
    def status(self, text: str):
        """A spinner on stderr while a long step runs (only on a terminal, never with -q);
        yields ``update(stage)`` to name the current stage."""
        if self.quiet or not sys.stderr.isatty():
            yield lambda stage: None
            return
        spinner = Console(stderr=True).status(f"{text}…", spinner="dots")
        with spinner:
            yield lambda stage: spinner.update(f"{text}: {stage}…")

    def progress(self) -> bool:
        """Whether progress bars may be drawn (stderr is a terminal and not -q)."""
        return not self.quiet and sys.stderr.isatty()


def _min_width(columns: list[Column], rows: list[list[str]]) -> int:
    """The narrowest a boxed table can be without cutting a word (3 per column for padding and
    borders, plus 1)."""
    total = 1
    for k, col in enumerate(columns):
        cells = [col.header] + [row[k] for row in rows]
        if col.wrap:
            need = max(len(word) for cell in cells for word in (cell.split() or [""]))
        else:
            need = max(max(len(line) for line in (cell.splitlines() or [""])) for cell in cells)
        total += need + 3
    return total


def _plain_rows(columns: list[Column], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in [col.header] + [row[k] for row in rows]) for k, col in enumerate(columns)]
    lines = []
    for cells in [[c.header for c in columns]] + rows:
        parts = []
        for k, (col, cell) in enumerate(zip(columns, cells)):
            last = k == len(columns) - 1
            parts.append(cell if last and col.align == "left" else
                         cell.rjust(widths[k]) if col.align == "right" else cell.ljust(widths[k]))
        lines.append("  ".join(parts).rstrip())
    return lines


def json_text(data: dict) -> str:
    return json.dumps(data, indent=1) + "\n"

