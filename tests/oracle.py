"""Test oracles that cannot lie (see ../shared/GUIDE.md): dead channels and keep-all plans."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxprune.groups import BIAS, IN, NORM, OUT, Analysis
from onnxprune.plan import GroupPlan, PruningPlan

ZEROED_ROLES = (OUT, IN, NORM, BIAS)


def dead_channel_plan(analysis: Analysis, fraction: float = 0.5, seed: int = 0) -> PruningPlan:
    """A plan removing a random ``fraction`` (at least one channel, never all) of every prunable group."""
    rng = np.random.default_rng(seed)
    plan = PruningPlan(criterion="dead")
    for g in analysis.prunable_groups:
        n_remove = min(g.channels - 1, max(1, int(g.channels * fraction)))
        if n_remove <= 0:
            continue
        removed = set(rng.choice(g.channels, n_remove, replace=False).tolist())
        keep = [i for i in range(g.channels) if i not in removed]
        plan.groups[g.id] = GroupPlan(g.id, g.anchor, g.channels, None, keep)
    return plan


def kill_channels(analysis: Analysis, removed_units: np.ndarray) -> onnx.ModelProto:
    """A copy of the analyzed model in which ``removed_units`` contribute nothing.

    Every weight entry that a removed channel indexes is zeroed: producer filters and biases, BN
    scale and shift, and the consumer columns that read it. The kept channels then compute the
    same values with or without the removed ones, so pruning them must not change any output.
    """
    model = onnx.ModelProto()
    model.CopyFrom(analysis.model)
    inits = {t.name: t for t in model.graph.initializer}
    dead = np.zeros(len(analysis.root_of), dtype=bool)
    dead[removed_units] = True
    values: dict[str, np.ndarray] = {}
    for slot in analysis.slots:
        if slot.role not in ZEROED_ROLES:
            continue
        mask = dead[analysis.root_of[slot.ids]]
        if not mask.any():
            continue
        arr = values.setdefault(slot.tensor, numpy_helper.to_array(inits[slot.tensor]).copy())
        index = [slice(None)] * arr.ndim
        index[slot.axis] = np.flatnonzero(mask)
        arr[tuple(index)] = 0
    for name, arr in values.items():
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    return model


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_feeds(analysis: Analysis, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in analysis.model.graph.initializer}
    feeds = {}
    for vi in analysis.model.graph.input:
        if vi.name in inits:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(analysis.shapes[vi.name]).astype(dtype)
    return feeds
