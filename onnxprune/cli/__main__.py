"""``python -m onnxprune.cli``: the command line."""

from . import run

run()
