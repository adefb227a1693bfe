"""``apply_plan``: slice a torch module in place as a plan prunes its ONNX export.

The plan's groups are matched on the module's export (:func:`onnxprune.torch.groups.prepare`);
every parameter and buffer slot of a group (weights along their channel dim, biases, BN scale,
shift and running statistics) keeps the plan's channels, and the layers' size attributes are
updated so the module stays usable: ``Conv*d`` (``in_channels``, ``out_channels``, ``groups``
of a depthwise conv), ``BatchNorm*d``, ``Linear``, ``LayerNorm`` and ``GroupNorm``. The sliced
module computes what ``onnxprune prune --plan`` writes; fine-tune it in your own loop and export.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..decide.plan import PruningPlan
from ..errors import OnnxPruneError
from .groups import ModuleGroups, prepare
from .mapping import group_parameters


@torch.no_grad()
def apply_plan(module: nn.Module | ModuleGroups, plan: PruningPlan, example_inputs=None) -> nn.Module:
    """Slice ``module`` (or the module of a :class:`ModuleGroups`) in place to the channels
    ``plan`` keeps, and return it. ``example_inputs`` (needed for a bare module) are traced
    for the export the plan was made on.

    Errors: ``OnnxPruneError`` when the plan does not match the module's export, names a
    group whose slots do not all map to the module, or drops residual blocks (a torch module
    has no generic way to lose a block: use ``onnxprune prune --plan`` on the export, or
    replace the block in your code).
    """
    groups = module if isinstance(module, ModuleGroups) else prepare(module, example_inputs)
    module = groups.module
    if plan.drop_blocks:
        raise OnnxPruneError("apply_plan slices channels only; this plan also drops residual blocks "
                             f"({', '.join(plan.drop_blocks)}): apply it to the export with `onnxprune prune --plan`")
    plan.validate(groups.analysis)
    state = dict(module.state_dict(keep_vars=True))
    rename = groups.renamed
    slots = group_parameters(groups.analysis, set(state) | set(rename))
    keep_masks: dict[tuple[str, int], np.ndarray] = {}
    for gid, gp in plan.groups.items():
        if gp.keep is None or len(gp.keep) == gp.channels:
            continue
        if gid in groups.unmapped:
            raise OnnxPruneError(f"group {gid} does not map to the module: {groups.unmapped[gid]}")
        kept = np.zeros(gp.channels + 1, dtype=bool)
        kept[gp.keep] = True
        kept[-1] = True  # index -1: another group's channel
        for slot in slots[gid]:
            name = rename.get(slot.name, slot.name)
            key = (name, slot.dim)
            mask = kept[np.asarray(slot.channels)]
            keep_masks[key] = mask if key not in keep_masks else keep_masks[key] & mask
    old = {name: tuple(t.shape) for name, t in state.items()}
    for (name, dim), mask in keep_masks.items():
        owner, attr = _owner(module, name)
        tensor = getattr(owner, attr)
        index = torch.as_tensor(np.flatnonzero(mask), device=tensor.device)
        sliced = tensor.detach().index_select(dim, index).clone()
        if isinstance(tensor, nn.Parameter):
            setattr(owner, attr, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
        else:
            owner.register_buffer(attr, sliced)
    _update_sizes(module, old)
    return module


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (module.get_submodule(path) if path else module), attr


def _update_sizes(module: nn.Module, old: dict[str, tuple]) -> None:
    for path, m in module.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(m, nn.modules.conv._ConvNd):
            w_old = old[prefix + "weight"]
            if m.transposed:
                out_per_group, in_total = m.weight.shape[1], m.weight.shape[0]
                if m.groups > 1:
                    m.groups = in_total // (w_old[0] // m.groups)
                m.in_channels, m.out_channels = in_total, out_per_group * m.groups
            else:
                if m.groups > 1:
                    m.groups = m.weight.shape[0] // (w_old[0] // m.groups)
                m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1] * m.groups
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            m.num_features = (m.weight if m.weight is not None else m.running_mean).shape[0]
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, nn.LayerNorm) and m.weight is not None:
            m.normalized_shape = tuple(m.weight.shape)
        elif isinstance(m, nn.GroupNorm) and m.weight is not None:
            m.num_channels = m.weight.shape[0]
