"""Sparsity penalties that learn width and depth in training: AMSC's adaptive group lasso, and
network slimming's l1 on BN scales.

**Adaptive group lasso (AMSC)** over removable residual blocks ``l`` and channels ``j``::

    λ0 Σ_l √q_l / ‖θ̂_l‖ · ‖θ_l‖  +  λ1 Σ_{l,j} √q_{l,j} / ‖θ̂_{l,j}‖ · ‖θ_{l,j}‖

``θ_l`` are all the parameters of block ``l``'s branch; ``θ_{l,j}`` the producing slots of
channel ``j`` of a channel group (its filters in every coupled layer, their biases and BN
scales and shifts); ``q`` counts their elements and ``θ̂`` is the pre-trained estimate, fixed
when the penalty is built (the adaptive weights of Zou 2006 / Wang and Leng 2008). The block
term lets the network learn its depth, the channel term its width. After training,
:meth:`AdaptiveGroupLasso.plan` drops the blocks and channels whose norm fell below
``threshold`` of its pre-trained value (with a MACs target, the channels ranked by that ratio
meet it). :func:`select_lambdas` is the depth-first selection: ``λ0`` with ``λ1 = 0`` on a
validation split, then ``λ1`` with ``λ0`` fixed.

**Network slimming** (Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", ICCV 2017): ``λ Σ |γ|`` over the BN scales of every mapped group, then a global
threshold on ``|γ|`` (mean over the BNs of a coupled group) to the MACs target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..decide.plan import PruningPlan
from .groups import PRODUCING_ROLES, ModuleGroups, channel_norms

_EPS = 1e-12


class AdaptiveGroupLasso:
    """The AMSC penalty on ``groups`` (see the module doc); ``lambda0`` weighs blocks, ``lambda1``
    channels. Calling it returns the penalty, a scalar tensor, for the module's current
    parameters."""

    def __init__(self, groups: ModuleGroups, lambda0: float = 0.0, lambda1: float = 0.0) -> None:
        self.groups, self.lambda0, self.lambda1 = groups, float(lambda0), float(lambda1)
        with torch.no_grad():
            params = dict(groups.module.named_parameters())
            self._channel_hat = {g.id: channel_norms(params, g) for g in groups.groups}
            self._channel_q = {g.id: _channel_counts(params, g) for g in groups.groups}
            self._block_hat = {b.add: _block_norm(params, b) for b in groups.blocks}
            self._block_q = {b.add: sum(params[n].numel() for n in b.params) for b in groups.blocks}

    def __call__(self) -> torch.Tensor:
        params = dict(self.groups.module.named_parameters())
        total = torch.zeros(())
        if self.lambda0:
            for b in self.groups.blocks:
                if b.params:
                    weight = self._block_q[b.add] ** 0.5 / (self._block_hat[b.add] + _EPS)
                    total = total + self.lambda0 * weight * _block_norm(params, b)
        if self.lambda1:
            for g in self.groups.groups:
                weight = self._channel_q[g.id].sqrt() / (self._channel_hat[g.id] + _EPS)
                total = total + self.lambda1 * (weight * channel_norms(params, g)).sum()
        return total

    @torch.no_grad()
    def channel_ratios(self) -> dict[str, np.ndarray]:
        """Per group: each channel's norm over its pre-trained norm, ``[channels]``."""
        params = dict(self.groups.module.named_parameters())
        return {g.id: (channel_norms(params, g) / (self._channel_hat[g.id] + _EPS)).numpy().astype(np.float64)
                for g in self.groups.groups}

    @torch.no_grad()
    def block_ratios(self) -> dict[str, float]:
        """Per block (Add name): its branch's norm over its pre-trained norm."""
        params = dict(self.groups.module.named_parameters())
        return {b.add: float(_block_norm(params, b) / (self._block_hat[b.add] + _EPS)) for b in self.groups.blocks if b.params}

    def plan(self, *, threshold: float = 0.05, target_macs: float | None = None, width: bool = True,
             depth: bool = True) -> PruningPlan:
        """Blocks (``depth``) and channels (``width``) whose norm ratio fell below ``threshold``.

        With ``target_macs``, blocks go lowest ratio first: with ``width``, only those below
        ``threshold`` and while the blocks alone keep at least the target (less the tolerance),
        then channels ranked by ratio meet the target; depth alone drops blocks lowest ratio
        first, as many as come closest to the target."""
        order = sorted(self.block_ratios().items(), key=lambda kv: kv[1]) if depth else []
        drop: list[str] = []
        for add, ratio in order:
            if target_macs is None and ratio >= threshold:
                break
            if target_macs is not None:
                if width and (ratio >= threshold or self.groups.kept(PruningPlan(drop_blocks=drop + [add])) < target_macs - 0.02):
                    break
                if not width and self.groups.kept(PruningPlan(drop_blocks=drop)) <= target_macs + 0.02:
                    break
            drop.append(add)
        if not width:
            if target_macs is not None and drop:  # the block count closest to the target
                kept = [self.groups.kept(PruningPlan(drop_blocks=drop[:k])) for k in (len(drop) - 1, len(drop))]
                if abs(kept[0] - target_macs) < abs(kept[1] - target_macs):
                    drop = drop[:-1]
            return PruningPlan(drop_blocks=drop, meta={"method": "amsc-depth"})
        return self.groups.plan(self.channel_ratios(), threshold=threshold, target_macs=target_macs, drop_blocks=drop,
                                method="amsc" if depth else "amsc-width")

    def export_plan(self, path, **kw) -> PruningPlan:
        """Write :meth:`plan` (``kw`` as there) as JSON to ``path``."""
        plan = self.plan(**kw)
        plan.save(path)
        return plan


class BNSlimming:
    """``weight · Σ|γ|`` over the BN scales (``norm`` slots) of the mapped groups."""

    def __init__(self, groups: ModuleGroups, weight: float = 1e-4) -> None:
        self.groups, self.weight = groups, float(weight)
        self._names = sorted({s.name for g in groups.groups for s in g.slots if s.role == "norm"})
        if not self._names:
            raise ValueError("the module has no BatchNormalization scale on a prunable group")

    def __call__(self) -> torch.Tensor:
        params = dict(self.groups.module.named_parameters())
        return self.weight * sum(params[n].abs().sum() for n in self._names)

    @torch.no_grad()
    def channel_scores(self) -> dict[str, np.ndarray]:
        """Per group: mean ``|γ|`` over its BN scales, ``[channels]`` (groups without BN: +inf,
        so they are never pruned by slimming)."""
        params = dict(self.groups.module.named_parameters())
        out = {}
        for g in self.groups.groups:
            total, count = np.zeros(g.channels), np.zeros(g.channels)
            for s in g.slots:
                if s.role == "norm":
                    values = params[s.name].abs().movedim(s.dim, 0).reshape(len(s.channels), -1).mean(1).numpy()
                    idx = np.asarray(s.channels)
                    np.add.at(total, idx[idx >= 0], values[idx >= 0])
                    np.add.at(count, idx[idx >= 0], 1)
            out[g.id] = np.where(count > 0, total / np.maximum(count, 1), np.inf)
        return out

    def plan(self, target_macs: float) -> PruningPlan:
        """The channels with the largest ``|γ|``, ranked across groups, keeping ``target_macs``."""
        return self.groups.plan(self.channel_scores(), target_macs=target_macs, method="bn-slimming")

    def export_plan(self, path, target_macs: float) -> PruningPlan:
        """Write :meth:`plan` as JSON to ``path``."""
        plan = self.plan(target_macs)
        plan.save(path)
        return plan


def select_lambdas(fit: Callable[[float, float], float], grid0: Sequence[float], grid1: Sequence[float], *,
                   tolerance: float) -> tuple[float, float, list[dict]]:
    """AMSC's depth-first choice of ``(λ0, λ1)``.

    ``fit(λ0, λ1)`` trains with those weights and returns the validation metric (higher is
    better). First ``λ1 = 0`` and ``λ0`` runs over ``grid0``; the largest ``λ0`` whose metric is
    within ``tolerance`` of the best seen in that sweep is kept. Then ``λ1`` runs over ``grid1``
    with that ``λ0``, chosen the same way. Returns ``(λ0, λ1, trials)``, each trial a dict with
    ``lambda0``, ``lambda1``, ``metric``.
    """
    trials: list[dict] = []

    def sweep(values, make):
        results = []
        for v in values:
            l0, l1 = make(v)
            metric = float(fit(l0, l1))
            trials.append({"lambda0": l0, "lambda1": l1, "metric": metric})
            results.append((v, metric))
        best = max(m for _, m in results)
        return max(v for v, m in results if m >= best - tolerance)

    lambda0 = sweep(sorted(grid0), lambda v: (v, 0.0))
    lambda1 = sweep(sorted(grid1), lambda v: (lambda0, v))
    return lambda0, lambda1, trials


def _channel_counts(params, group) -> torch.Tensor:
    counts = torch.zeros(group.channels)
    for slot in group.slots:
        if slot.role in PRODUCING_ROLES:
            p = params[slot.name]
            per = p.numel() // p.shape[slot.dim]
            index = torch.as_tensor(slot.channels)
            counts = counts.index_add(0, index[index >= 0], torch.full((int((index >= 0).sum()),), float(per)))
    return counts


def _block_norm(params, block) -> torch.Tensor:
    return (sum(params[n].pow(2).sum() for n in block.params) + _EPS).sqrt()
