"""Analysis stage: what in a model can be removed. Today: residual blocks (:mod:`.blocks`)."""
