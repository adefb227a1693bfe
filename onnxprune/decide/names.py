"""The names of the channel importance criteria, importable without numpy (the CLI's choices).

Weight criteria: :mod:`onnxprune.decide.importance`; data criteria (they read calibration
activations): :mod:`onnxprune.decide.data_importance`."""

WEIGHT_CRITERIA = ("l1", "l2", "bn-scale", "fpgm", "random")
DATA_CRITERIA = ("activation", "apoz", "wanda", "greedy")
CRITERIA = WEIGHT_CRITERIA + DATA_CRITERIA
