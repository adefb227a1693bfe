"""The ``onnxprune`` command line: analyze, prune, verify, bench, finetune, export-triton, data.

Thin by design: every command calls the Python API and formats its result (one module per
command; what they share is in :mod:`.common`). Exit codes: 0 ok, 2 bad input or options (one
line on stderr, ``error: ...``), 1 a check failed (``verify --max-drop``), 130 SIGINT, 143 SIGTERM,
70 internal error.
"""

from __future__ import annotations

import click

from .. import __version__
from .analyze import analyze
from .bench import bench
from .common import OnnxPruneGroup
from .data import data
from .export_triton import export_triton
from .finetune import finetune
from .prune import prune
from .verify import verify


@click.group(cls=OnnxPruneGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="onnxprune")
def main() -> None:
    """Structured channel pruning for ONNX models: analyze, prune, verify, bench, finetune, export-triton, data.

    \b
    Typical session:
      onnxprune data images/ -o calib.npz --model model.onnx
      onnxprune analyze model.onnx
      onnxprune prune model.onnx -o pruned.onnx --ratio 0.3
      onnxprune verify model.onnx pruned.onnx --data val.npz
      onnxprune bench model.onnx pruned.onnx
      onnxprune finetune pruned.onnx --teacher model.onnx --data train.npz -o tuned.onnx
      onnxprune export-triton pruned.onnx --repo model_repository --name pruned

    Exit codes: 0 ok, 1 a check failed (verify --max-drop), 2 bad input or options (one 'error:'
    line; nothing written), 130 SIGINT, 143 SIGTERM, 70 internal error. No command ever
    overwrites a file it reads.
    """


for command in (analyze, prune, verify, bench, finetune, export_triton, data):
    main.add_command(command)


def run() -> None:
    """The ``onnxprune`` script and ``python -m onnxprune.cli``: :func:`main` as the whole
    process. Once a command has published its outputs, or finished, SIGINT and SIGTERM are
    ignored until the process exits, so the exit status is the command's (README, *Guarantees*)."""
    main(process=True)


__all__ = ["main", "run"]
