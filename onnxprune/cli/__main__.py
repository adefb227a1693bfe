"""``python -m onnxprune.cli``: the command line."""

from . import main

main()
