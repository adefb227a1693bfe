"""The names of the channel importance criteria, importable without numpy (the CLI's choices).

Weight criteria: :mod:`onnxprune.decide.importance`; data criteria (they read calibration
activations): :mod:`onnxprune.decide.data_importance`."""

WEIGHT_CRITERIA = ("l1", "l2", "bn-scale", "fpgm", "random")
DATA_CRITERIA = ("activation", "apoz", "wanda", "greedy")
CRITERIA = WEIGHT_CRITERIA + DATA_CRITERIA

DEFAULT_WITH_DATA = ("wanda", "reconstruct")
"""``onnxprune prune``'s criterion and recovery when ``--data`` is given and neither is chosen:
the pair that measured best across the real tasks (README, *Accuracy on real tasks*:
``tools/real_tasks.py``). Without data the defaults are ``l1`` and no recovery."""
