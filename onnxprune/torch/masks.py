"""Learned channel masks (MLPruner) and soft filter pruning, on :class:`ModuleGroups`.

**MLPruner** (S. Chen and Y. Zhao, "MLPruner: pruning convolutional neural networks with
automatic mask learning", PeerJ Computer Science 11:e3132, 2025): one learnable score per
channel of every group. The forward pass uses the binary mask ``score >= threshold``; the
backward pass treats the binarization as the identity (straight-through estimator, Bengio et
al. 2013), so ``∂L/∂score = ∂L/∂mask``. No weight penalty and no per-layer rates: the amount is
set by a MACs budget that tightens linearly from 1 to the goal over the first part of training
(:meth:`MaskPruner.target_at`), held either by a schedule that re-ranks the scores (masks keep
exactly the scheduled MACs) or by a penalty ``max(0, MACs(mask)/MACs − target)``,
differentiable through the STE. Channels come back when their scores rise again.

**Soft filter pruning** (He et al., "Soft Filter Pruning for Accelerating Deep CNNs", IJCAI
2018; the dynamic-pruning seed's "pruned filters may recover"): :func:`soft_prune_` zeroes the
lowest-l2 channels of every group in place, typically once per epoch; training goes on with the
zeroed weights, which may grow back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..decide.plan import PruningPlan, keep_count
from .groups import ModuleGroups, channel_norms


class BinarizeSTE(torch.autograd.Function):
    """``mask = (score >= threshold)`` forward; the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, score: torch.Tensor, threshold: float) -> torch.Tensor:
        return (score >= threshold).to(score.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class MaskPruner(nn.Module):
    """Learnable channel masks for every mapped group of ``groups``.

    ``scores[g]``: shape ``[channels]``, one per channel. Forward uses binary masks; backward
    gives each score the loss gradient on its mask (straight-through). Every channel starts
    kept: ``init="magnitude"`` (default) spreads the scores over ``(threshold, threshold +
    0.5]`` by each channel's l2 norm relative to its group's largest; a number sets every score.

    Two ways to hold the MACs budget:

    * **schedule** (recommended): call :meth:`tighten` every few steps. It re-ranks all scores
      across groups and sets the masks to the channels that keep the scheduled MACs
      (:meth:`target_at`: from 1 down to the target over the first half of training), so the
      budget is met exactly while scores move only by the task loss. Train the scores with
      Adam (about 1e-2)::

          pruner = MaskPruner(groups, target_macs=0.5)
          for step in range(steps):
              if step % 8 == 0:
                  pruner.tighten(step, steps)
              loss = task_loss(pruner(x))          # the masked module's output

    * **penalty**: masks are ``score >= threshold`` and the loss adds
      ``weight * budget_loss(target_at(step, steps))``. The budget's gradient is the same for
      every channel of a group, so whole groups tend to cross the threshold together; on
      ResNet-20 with Adam or momentum on the scores the network collapsed to chance.

    :meth:`plan` gives the plan of the channels whose mask is 1.
    """

    def __init__(self, groups: ModuleGroups, target_macs: float, *, threshold: float = 0.5,
                 init: float | str = "magnitude") -> None:
        super().__init__()
        if not 0 < target_macs <= 1:
            raise ValueError(f"target_macs must be in (0, 1], not {target_macs}")
        self.groups, self.target_macs, self.threshold = groups, float(target_macs), float(threshold)
        self._keep: dict[str, torch.Tensor] | None = None
        params = dict(groups.module.named_parameters())
        scores = {}
        for g in groups.groups:
            if init == "magnitude":
                with torch.no_grad():
                    norms = channel_norms(params, g)
                scores[_key(g.id)] = nn.Parameter(self.threshold + 0.05 + 0.45 * norms / norms.max().clamp_min(1e-12))
            else:
                scores[_key(g.id)] = nn.Parameter(torch.full((g.channels,), float(init)))
        self.scores = nn.ParameterDict(scores)

    def masks(self) -> dict[str, torch.Tensor]:
        """Group id → binary mask ``[channels]`` (straight-through in backward)."""
        out = {}
        for g in self.groups.groups:
            score = self.scores[_key(g.id)]
            if self._keep is None:
                out[g.id] = BinarizeSTE.apply(score, self.threshold)
            else:
                out[g.id] = self._keep[g.id] + score - score.detach()
        return out

    def forward(self, *inputs):
        return self.groups.forward(*inputs, channel_masks=self.masks())

    @torch.no_grad()
    def tighten(self, step: int, steps: int, ramp: float = 0.5) -> float:
        """Schedule mode: set the masks to the top-scoring channels, ranked across groups, that
        keep :meth:`target_at` ``(step, steps, ramp)`` of the MACs. Returns that target."""
        target = self.target_at(step, steps, ramp)
        plan = self.groups.plan(self.channel_scores(), target_macs=target, method="mlpruner") if target < 1 else None
        self._keep = {}
        for g in self.groups.groups:
            keep = torch.ones(g.channels)
            if plan is not None and g.id in plan.groups and plan.groups[g.id].keep is not None:
                keep = torch.zeros(g.channels)
                keep[torch.as_tensor(plan.groups[g.id].keep, dtype=torch.long)] = 1.0
            self._keep[g.id] = keep
        return target

    def macs(self) -> torch.Tensor:
        """Fraction of MACs the current masks keep (differentiable through the STE)."""
        return self.groups.macs({gid: m.mean() for gid, m in self.masks().items()})

    def target_at(self, step: int, steps: int, ramp: float = 0.5) -> float:
        """The budget at ``step`` of ``steps``: from 1 down to the target over the first
        ``ramp`` of training, then the target."""
        t = min(1.0, step / max(1.0, ramp * steps))
        return 1.0 - t * (1.0 - self.target_macs)

    def budget_loss(self, target: float | None = None) -> torch.Tensor:
        """Penalty mode: ``max(0, MACs kept − target)`` (fraction of the model's MACs)."""
        return torch.relu(self.macs() - (self.target_macs if target is None else target))

    def channel_scores(self) -> dict[str, np.ndarray]:
        return {g.id: self.scores[_key(g.id)].detach().cpu().numpy().astype(np.float64) for g in self.groups.groups}

    def plan(self) -> PruningPlan:
        """The channels whose mask is 1 (the training masks). When they miss the MACs target by
        more than the tolerance, the scores ranked across groups meet it instead."""
        if self._keep is None:
            return self.groups.plan(self.channel_scores(), threshold=self.threshold, target_macs=self.target_macs,
                                    method="mlpruner")
        marks = {gid: np.where(k.numpy() > 0, 1.0, 0.0) for gid, k in self._keep.items()}
        return self.groups.plan(marks, threshold=0.5, target_macs=self.target_macs, method="mlpruner")

    def export_plan(self, path) -> PruningPlan:
        """Write :meth:`plan` as JSON to ``path`` (for ``onnxprune prune EXPORT --plan PATH``)."""
        plan = self.plan()
        plan.save(path)
        return plan


@torch.no_grad()
def soft_prune_(groups: ModuleGroups, ratio: float) -> dict[str, np.ndarray]:
    """Zero, in place, the filters (``out`` slots) of the ``ratio`` of each group's channels
    with the lowest l2 norm over the group's producing slots (SFP). BN scales, biases and the
    consumers' weights are left alone, so the zeroed filters still get gradients and may
    recover. Returns the zeroed channel indices per group id."""
    params = dict(groups.module.named_parameters())
    zeroed = {}
    for g in groups.groups:
        norms = channel_norms(params, g)
        n_zero = g.channels - keep_count(g.channels, ratio)
        order = np.sort(np.argsort(norms.cpu().numpy(), kind="stable")[:n_zero])
        for slot in g.slots:
            if slot.role == "out":
                index = [i for i, c in enumerate(slot.channels) if c in set(order.tolist())]
                params[slot.name].index_fill_(slot.dim, torch.as_tensor(index, dtype=torch.long), 0.0)
        zeroed[g.id] = order
    return zeroed


def _key(group_id: str) -> str:
    return group_id.replace(".", "_")
