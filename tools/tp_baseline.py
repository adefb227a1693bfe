"""Torch-Pruning (DepGraph, Fang et al. CVPR 2023) as an external baseline for the benchmarks:
one-shot L1 magnitude pruning of a torch model with a uniform ratio bisected to a MACs target
with Torch-Pruning's own counter. Needs ``pip install --no-deps torch-pruning``."""

from __future__ import annotations

import copy
import time

import torch


def prune_to_macs(model: torch.nn.Module, shape, target: float, round_to: int = 1, steps: int = 10,
                  group_norm: bool = False):
    """``(pruned copy, MACs kept, pruning ratio, seconds of pruner.step())``, or None when
    Torch-Pruning is not installed. The classifier (every Linear) is left whole. ``group_norm``
    ranks by the l2 norm of each whole coupled group (``GroupNormPruner`` with
    ``GroupMagnitudeImportance(p=2)``, what its sparse training drives to zero)."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    example = torch.randn(tuple(shape))
    base_macs, _ = tp.utils.count_ops_and_params(model, example)

    def pruned_at(ratio: float):
        m = copy.deepcopy(model)
        head = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
        if group_norm:
            pruner = tp.pruner.GroupNormPruner(m, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                               pruning_ratio=ratio, ignored_layers=head, round_to=round_to)
        else:
            pruner = tp.pruner.MetaPruner(m, example, importance=tp.importance.MagnitudeImportance(p=1),
                                          pruning_ratio=ratio, ignored_layers=head, round_to=round_to)
        start = time.perf_counter()
        pruner.step()
        seconds = time.perf_counter() - start
        macs, _ = tp.utils.count_ops_and_params(m, example)
        return m, macs / base_macs, seconds

    lo, hi = 0.0, 0.9
    for _ in range(steps):
        mid = (lo + hi) / 2
        _, kept, _ = pruned_at(mid)
        lo, hi = (mid, hi) if kept > target else (lo, mid)
    pruned, kept, seconds = pruned_at(hi)
    return pruned.eval(), kept, hi, seconds


def group_norm_regularizer(model: torch.nn.Module, shape, reg: float = 1e-4):
    """Torch-Pruning's group-norm sparse training (DepGraph, Fang et al. 2023): returns
    ``regularize()``, to call after each ``loss.backward()``, or None without Torch-Pruning.
    The pruner is built with the model in eval mode: built in train mode, its tracing passes
    on random inputs overwrite the BN running statistics (ResNet-20/MNIST fell to 10%)."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    head = [mod for mod in model.modules() if isinstance(mod, torch.nn.Linear)]
    training = model.training
    model.eval()
    pruner = tp.pruner.GroupNormPruner(model, torch.randn(tuple(shape)), importance=tp.importance.GroupMagnitudeImportance(p=2),
                                       reg=reg, ignored_layers=head)
    model.train(training)
    return lambda: pruner.regularize(model)
