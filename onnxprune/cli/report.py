"""What ``onnxprune analyze`` reports: per-group channels, cost and status, and model totals.

Per group, ``params`` and ``macs`` are what the group *carries*: the drop in the model's params
and MACs if all its channels were removed. A layer between two groups counts in both, so the
column does not sum to the total. The **prunable share** of MACs is the fraction of MACs in
layers that touch at least one prunable group.
"""

from __future__ import annotations

import numpy as np

from ..cost import CostModel
from ..groups import Analysis


def analysis_report(analysis: Analysis, cost_model: CostModel | None = None) -> dict:
    """A JSON-serialisable report: ``totals`` and one entry per group under ``groups``."""
    cost_model = cost_model or CostModel(analysis)
    total = cost_model.cost()
    groups = []
    prunable_nodes: set[str] = set()
    for g in analysis.groups:
        without = cost_model.cost_without(g.units)
        if g.prunable:
            prunable_nodes.update(g.nodes)
        groups.append({
            "id": g.id,
            "anchor": g.anchor,
            "channels": g.channels,
            "prunable": g.prunable,
            "blocked": list(g.blocked),
            "params": total.params - without.params,
            "macs": total.macs - without.macs,
            "nodes": list(g.nodes),
            "weights": sorted({f"{s.tensor}[axis {s.axis}]" for s in g.slots}),
        })
    node_macs = cost_model.node_macs()
    prunable_macs = sum(m for name, m in node_macs.items() if name in prunable_nodes)
    return {
        "input_shapes": {name: list(analysis.shapes.get(name) or []) for name in _input_names(analysis)},
        "totals": {
            "macs": total.macs,
            "params": total.params,
            "groups": len(analysis.groups),
            "prunable_groups": len(analysis.prunable_groups),
            "blocked_groups": len(analysis.groups) - len(analysis.prunable_groups),
            "prunable_macs_share": prunable_macs / total.macs if total.macs else 0.0,
            "nodes_without_macs_shape": cost_model.unknown_shape_nodes,
        },
        "groups": groups,
    }


def _input_names(analysis: Analysis) -> list[str]:
    inits = {t.name for t in analysis.model.graph.initializer}
    return [i.name for i in analysis.model.graph.input if i.name not in inits]


def human(n: float) -> str:
    """``1234567`` → ``1.23M``."""
    n = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}P"


def plot_groups(report: dict, path: str) -> None:
    """Bar chart of the MACs each group carries, prunable vs blocked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = report["groups"]
    macs = np.array([g["macs"] for g in groups], dtype=float) / 1e6
    colors = ["tab:green" if g["prunable"] else "tab:red" for g in groups]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(groups)), 4))
    ax.bar(range(len(groups)), macs, color=colors)
    ax.set_xticks(range(len(groups)), [g["id"] for g in groups], rotation=90, fontsize=7)
    ax.set_xlabel("channel group")
    ax.set_ylabel("MACs carried (millions)")
    share = report["totals"]["prunable_macs_share"]
    ax.set_title(f"MACs per channel group (green: prunable, red: blocked); prunable share {share:.0%}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
