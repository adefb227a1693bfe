"""Map channel groups to framework parameter names (PyTorch ``state_dict`` keys).

Exporters that keep parameter names (``torch.onnx.export`` with ``do_constant_folding=False``,
or the dynamo exporter) name each initializer after its parameter, e.g.
``layer1.0.conv1.weight``. A group's parameter slots then say which dim of which parameter holds
the group's channels, and in which order: the bridge that lets masks learned in PyTorch
(roadmap: MLPruner-style learnable masks) be applied to the ONNX graph exactly, and a pruned
ONNX model's channels be mapped back for fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..analysis.groups import Analysis


@dataclass(frozen=True)
class ParameterSlot:
    """Dim ``dim`` of parameter ``name`` holds channels of the group.

    ``channels[i]`` is the group channel index (position in ``ChannelGroup.units``) at index
    ``i`` along that dim, or -1 where the index belongs to another group (e.g. a Conv reading a
    Concat of two groups)."""

    name: str
    dim: int
    role: str
    channels: tuple[int, ...]


def group_parameters(analysis: Analysis, names: Iterable[str]) -> dict[str, list[ParameterSlot]]:
    """For each group id, the slots on parameters whose names are in ``names``.

    ``names`` is typically ``model.state_dict().keys()``; tensors with other names (folded
    constants, renamed weights) are left out, so a group may map to nothing.
    """
    wanted = set(names)
    position = np.full(len(analysis.root_of), -1, dtype=np.int64)
    for g in analysis.groups:
        position[g.units] = np.arange(g.channels)
    out: dict[str, list[ParameterSlot]] = {}
    for g in analysis.groups:
        members = set(g.units.tolist())
        slots = []
        for s in g.slots:
            if s.tensor not in wanted:
                continue
            roots = analysis.root_of[s.ids]
            index = np.where(np.isin(roots, list(members)), position[roots], -1)
            slots.append(ParameterSlot(s.tensor, s.axis, s.role, tuple(int(i) for i in index)))
        out[g.id] = slots
    return out
