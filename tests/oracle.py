"""Test oracles (see ../shared/GUIDE.md): re-exported from :mod:`onnxprune.selfcheck`."""

from onnxprune.selfcheck import dead_channel_plan, kill_channels, random_feeds, run  # noqa: F401
from onnxprune.selfcheck import kill_block  # noqa: F401,E402
