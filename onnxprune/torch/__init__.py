"""Optional PyTorch side of onnxprune (``pip install onnxprune[torch]``): channel groups mapped
onto a module's parameters, pruning decisions learned in training, and fine-tuning.

Typical use (learned masks, then the exact ONNX rewrite)::

    from onnxprune.torch import MaskPruner, prepare

    groups = prepare(model, torch.zeros(1, 3, 32, 32))
    pruner = MaskPruner(groups, target_macs=0.5)
    ...  # train: loss = task(pruner(x)) + 5 * pruner.budget_loss(pruner.target_at(step, steps))
    pruner.export_plan("plan.json")
    groups.export("model.onnx")   # then: onnxprune prune model.onnx --plan plan.json -o pruned.onnx
"""

from .groups import ModuleGroups, export, prepare
from .lasso import AdaptiveGroupLasso, BNSlimming, select_lambdas
from .masks import MaskPruner, soft_prune_
from .slicing import apply_plan

__all__ = ["AdaptiveGroupLasso", "BNSlimming", "MaskPruner", "ModuleGroups", "apply_plan", "export", "prepare",
           "select_lambdas", "soft_prune_"]
