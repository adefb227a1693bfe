"""Test oracles (see ../shared/GUIDE.md): re-exported from :mod:`onnxprune.selfcheck` and
:mod:`onnxprune.runtime.exactness` (the one comparison ``--self-check`` and ``verify`` use)."""

from onnxprune.runtime.exactness import compare  # noqa: F401
from onnxprune.selfcheck import dead_channel_plan, kill_block, kill_channels, random_feeds, run  # noqa: F401
