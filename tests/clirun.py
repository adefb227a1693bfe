"""Helpers shared by the CLI tests: run ``onnxprune`` in-process and assert on the outcome."""

from __future__ import annotations

import hashlib
from pathlib import Path

from click.testing import CliRunner

from onnxprune.cli import main


def cli(*args, **kwargs):
    """Run ``onnxprune ARGS`` in-process; every argument is turned into a string."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True, **kwargs)


def _detail(result) -> str:
    return f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\nexception: {result.exception!r}"


def ok(result):
    """Assert exit 0 (showing both streams and any exception otherwise) and return the result."""
    assert result.exit_code == 0, _detail(result)
    return result


def assert_bad_input(result, *needles: str, quiet: bool = True) -> str:
    """Exit 2 with exactly one ``error: ...`` line on stderr that contains every needle, no
    traceback, and (if ``quiet``) nothing on stdout. Returns the message."""
    detail = _detail(result)
    assert result.exit_code == 2, detail
    assert isinstance(result.exception, SystemExit), detail  # not an exception that escaped the CLI
    assert "Traceback" not in result.output + result.stderr, detail
    assert result.stdout == "" or not quiet, detail
    assert result.stderr.startswith("error: "), detail
    assert len(result.stderr.strip().splitlines()) == 1, detail
    message = result.stderr.strip()
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in {message!r}"
    return message


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
