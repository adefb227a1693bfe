"""``PruningPlan``: which channels each group keeps, serialisable to JSON, built from scores.

A plan is both a request and a result. Per group it may carry a pruning ``ratio`` (to be
resolved with a criterion when applied) and/or the explicit ``keep`` list of channel indices
(positions in :attr:`ChannelGroup.units`). Groups a plan does not name are left untouched.
``drop_blocks`` names the residual blocks to remove (depth pruning), by their Add node's name
(:mod:`onnxprune.analysis.blocks`).

JSON layout (``format: onnxprune.plan/1``)::

    {"format": "onnxprune.plan/1", "criterion": "l1", "meta": {...},
     "groups": [{"id": "g3", "anchor": "/layer1/conv1/Conv", "channels": 64,
                 "ratio": 0.5, "keep": [0, 2, 5, ...]}],
     "drop_blocks": []}

Groups are matched by ``id`` and checked against ``anchor`` and ``channels``, so a plan is only
applied to the model (and input shape) it was made for.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OnnxPruneError
from .rounding import Rounding, as_rounding
from ..analysis.groups import Analysis, ChannelGroup

FORMAT = "onnxprune.plan/1"


@dataclass
class GroupPlan:
    """One group's entry: ``keep`` (sorted channel indices) and/or a pruning ``ratio``."""

    id: str
    anchor: str
    channels: int
    ratio: float | None = None
    keep: list[int] | None = None

    @property
    def removed(self) -> int:
        return 0 if self.keep is None else self.channels - len(self.keep)


@dataclass
class PruningPlan:
    groups: dict[str, GroupPlan] = field(default_factory=dict)
    criterion: str | None = None
    drop_blocks: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def copy(self) -> "PruningPlan":
        """A copy whose group entries (and their keep lists) can be changed independently."""
        groups = {gid: GroupPlan(g.id, g.anchor, g.channels, g.ratio, None if g.keep is None else list(g.keep))
                  for gid, g in self.groups.items()}
        return PruningPlan(groups, self.criterion, list(self.drop_blocks), dict(self.meta))

    # ---- JSON ----
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "criterion": self.criterion,
            "meta": self.meta,
            "groups": [asdict(g) for g in self.groups.values()],
            "drop_blocks": list(self.drop_blocks),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON, atomically (never over an existing file half-way)."""
        from ..graph.outputs import write_atomic

        write_atomic(path, self.to_json().encode())

    @classmethod
    def from_dict(cls, data: dict) -> "PruningPlan":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise OnnxPruneError(f"not an onnxprune plan (expected \"format\": \"{FORMAT}\")")
        groups = {}
        try:
            for entry in data.get("groups", []):
                g = GroupPlan(
                    id=str(entry["id"]), anchor=str(entry.get("anchor", "")), channels=_whole(entry["channels"]),
                    ratio=None if entry.get("ratio") is None else float(entry["ratio"]),
                    keep=None if entry.get("keep") is None else [_whole(k) for k in entry["keep"]],
                )
                groups[g.id] = g
            drop_blocks, meta = data.get("drop_blocks", []), data.get("meta", {})
            if not isinstance(drop_blocks, list) or not all(isinstance(b, str) for b in drop_blocks):
                raise ValueError("drop_blocks must be a list of block names")
            if not isinstance(meta, dict):
                raise ValueError("meta must be an object")
            criterion = data.get("criterion")
            if criterion is not None and not isinstance(criterion, str):
                raise ValueError("criterion must be a string")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise OnnxPruneError(f"malformed plan: {exc}") from None
        return cls(groups, criterion, list(drop_blocks), dict(meta))

    @classmethod
    def load(cls, path: str | Path) -> "PruningPlan":
        path = Path(path)
        if not path.is_file():
            raise OnnxPruneError(f"plan file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise OnnxPruneError(f"{path}: not valid JSON ({exc})") from None
        except RecursionError:
            raise OnnxPruneError(f"{path}: not a plan (its JSON is nested too deeply to read)") from None
        except OSError as exc:
            raise OnnxPruneError(f"cannot read {path}: {exc.strerror}") from None
        return cls.from_dict(data)

    # ---- applying ----
    def validate(self, analysis: Analysis) -> None:
        """Check the plan against the model. Errors: unknown group, mismatched anchor or size,
        removal from a blocked group, bad indices, a bad ratio, an unknown or non-removable block."""
        self.blocks(analysis)
        for gp in self.groups.values():
            group = analysis.group(gp.id)
            if gp.anchor and gp.anchor != group.anchor or gp.channels != group.channels:
                raise OnnxPruneError(
                    f"plan group {gp.id} ({gp.anchor}, {gp.channels} channels) does not match this model's "
                    f"({group.anchor}, {group.channels} channels): was the plan made for another model or input shape?"
                )
            if gp.ratio is not None:
                check_ratio(gp.ratio, f"ratio of group {gp.id}")
            if gp.keep is not None:
                keep = gp.keep
                if len(set(keep)) != len(keep) or not keep or min(keep) < 0 or max(keep) >= gp.channels:
                    raise OnnxPruneError(f"plan group {gp.id}: keep must list 1..{gp.channels} distinct indices in [0, {gp.channels})")
                if len(keep) < gp.channels and not group.prunable:
                    raise OnnxPruneError(f"plan removes channels of blocked group {gp.id}: {group.blocked[0]}")

    def blocks(self, analysis: Analysis) -> list:
        """The :class:`~onnxprune.analysis.blocks.ResidualBlock` objects of ``drop_blocks``.
        Errors (``OnnxPruneError``): an unknown or non-removable block."""
        if not self.drop_blocks:
            return []
        from ..analysis.blocks import select_blocks

        return select_blocks(analysis.blocks, self.drop_blocks)

    def removed_units(self, analysis: Analysis) -> np.ndarray:
        """Union-find roots of every removed channel (requires ``keep`` on each entry)."""
        runs = []
        for gp in self.groups.values():
            if gp.keep is None:
                raise OnnxPruneError(f"plan group {gp.id} has no keep list; resolve the plan first")
            group = analysis.group(gp.id)
            mask = np.ones(group.channels, dtype=bool)
            mask[gp.keep] = False
            runs.append(group.units[mask])
        return np.concatenate(runs) if runs else np.zeros(0, dtype=np.int64)


def _whole(value) -> int:
    """An integer from JSON; rejects 1.7, "3", true."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(value)


def check_ratio(ratio: float, what: str = "{ratio}") -> float:
    if not (isinstance(ratio, (int, float)) and 0.0 <= ratio < 1.0 and math.isfinite(ratio)):
        raise OnnxPruneError(f"{what} must be in [0, 1), got {ratio}")
    return float(ratio)


def keep_count(n: int, ratio: float, min_channels: int = 1, round_to: int | Rounding = 1) -> int:
    """How many of ``n`` channels a ``ratio`` keeps: ``n - floor(ratio*n)``, at least
    ``min_channels`` (and 1), rounded up to a multiple of ``round_to`` (an int, or a
    :class:`~onnxprune.decide.rounding.Rounding`), at most ``n``."""
    keep = n - int(math.floor(ratio * n + 1e-9))
    return as_rounding(round_to).up(max(keep, min_channels, 1), n)


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, ascending; ties keep the lower index."""
    order = np.argsort(-scores, kind="stable")
    return sorted(int(i) for i in order[:k])


def excluded(group: ChannelGroup, patterns) -> bool:
    """Whether any ``exclude`` glob (``--exclude``) matches a node or weight tensor of the group."""
    if not patterns:
        return False
    names = set(group.nodes) | {s.tensor for s in group.slots} | {sp.node for sp in group.spaces}
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns for name in names)


def uniform_plan(analysis: Analysis, scores: dict[str, np.ndarray], ratio: float, *,
                 min_channels: int = 1, round_to: int = 1, exclude=(), criterion: str | None = None) -> PruningPlan:
    """The same pruning ratio for every prunable, non-excluded group; keeps the top scores."""
    check_ratio(ratio)
    plan = PruningPlan(criterion=criterion)
    for group in analysis.prunable_groups:
        if excluded(group, exclude):
            continue
        k = keep_count(group.channels, ratio, min_channels, round_to)
        plan.groups[group.id] = GroupPlan(group.id, group.anchor, group.channels, ratio, top_k(scores[group.id], k))
    return plan


def global_plan(analysis: Analysis, scores: dict[str, np.ndarray], ratio: float, *, max_ratio: float = 0.9,
                min_channels: int = 1, round_to: int = 1, exclude=(), criterion: str | None = None) -> PruningPlan:
    """Remove the ``ratio`` fraction of all prunable channels with the lowest scores, ranked
    across groups, with at most ``max_ratio`` of any one group removed."""
    check_ratio(ratio)
    check_ratio(max_ratio, "{max_ratio}")
    groups = [g for g in analysis.prunable_groups if not excluded(g, exclude)]
    if not groups:
        return PruningPlan(criterion=criterion)
    entries = [(scores[g.id][i], k, i) for k, g in enumerate(groups) for i in range(g.channels)]
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    budget = int(math.floor(ratio * len(entries) + 1e-9))
    cap = [g.channels - keep_count(g.channels, max_ratio, min_channels, 1) for g in groups]
    removed = [set() for _ in groups]
    for _, k, i in entries:
        if budget == 0:
            break
        if len(removed[k]) < cap[k]:
            removed[k].add(i)
            budget -= 1
    plan = PruningPlan(criterion=criterion)
    for k, g in enumerate(groups):
        n_keep = keep_count(g.channels, len(removed[k]) / g.channels, min_channels, round_to)
        keep = top_k(scores[g.id], n_keep)
        plan.groups[g.id] = GroupPlan(g.id, g.anchor, g.channels, round(1 - n_keep / g.channels, 6), keep)
    return plan


def resolve(plan: PruningPlan, analysis: Analysis, scores: dict[str, np.ndarray], *,
            min_channels: int = 1, round_to: int = 1) -> PruningPlan:
    """Fill in ``keep`` for entries that carry only a ``ratio`` (per-group ratio schedules)."""
    for gp in plan.groups.values():
        if gp.keep is None:
            group = analysis.group(gp.id)
            ratio = gp.ratio or 0.0
            if ratio > 0 and not group.prunable:
                raise OnnxPruneError(f"plan sets a ratio for blocked group {gp.id}: {group.blocked[0]}")
            gp.keep = top_k(scores.get(gp.id, np.zeros(gp.channels)), keep_count(gp.channels, ratio, min_channels, round_to))
    return plan


def empty_tensor(plan: PruningPlan, analysis: Analysis) -> str | None:
    """The first traced tensor that ``plan`` would leave without any channel, or None."""
    alive = analysis.alive_ids(plan.removed_units(analysis))
    return next((name for name, ax in analysis.axes.items() if len(ax.ids) and not alive[ax.ids].any()), None)


def fill_empty_tensors(plan: PruningPlan, analysis: Analysis, scores: dict[str, np.ndarray]) -> list[str]:
    """Give back channels where a plan would leave some tensor with none (e.g. one Split output).

    Returns a note per repair. A tensor with zero channels cannot be represented in ONNX.
    """
    notes = []
    for _ in range(len(analysis.axes) + 1):
        empty = empty_tensor(plan, analysis)
        if empty is None:
            return notes
        roots = np.unique(analysis.root_of[analysis.axes[empty].ids])
        candidates = [(analysis.groups[analysis.unit_group[r]].id, int(analysis.unit_position[r]))
                      for r in roots if analysis.unit_group[r] >= 0]
        gid, i = max(candidates, key=lambda c: (scores.get(c[0], np.zeros(1))[c[1]] if c[0] in scores else 0.0, -c[1]))
        plan.groups[gid].keep = sorted(set(plan.groups[gid].keep) | {i})
        notes.append(f"kept channel {i} of {gid} so that {empty} keeps one channel")
    return notes
