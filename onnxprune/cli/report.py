"""What ``onnxprune analyze`` reports: per-group channels, cost and status, residual blocks, and
model totals.

Per group, ``params`` and ``macs`` are what the group *carries*: the drop in the model's params
and MACs if all its channels were removed. A layer between two groups counts in both, so the
column does not sum to the total. The **prunable share** of MACs is the fraction of MACs in
layers that touch at least one prunable group.
"""

from __future__ import annotations

import os

import numpy as np

from ..analysis.cost import CostModel
from ..analysis.groups import Analysis


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
    from ..decide.depth import norm_scores

    norms = norm_scores(analysis)
    blocks = [{**b.to_dict(), "norm": norms.get(b.id)} for b in analysis.blocks]
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
            "blocks": len(blocks),
            "removable_blocks": len(analysis.removable_blocks),
        },
        "groups": groups,
        "blocks": blocks,
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


def plot_formats() -> list[str]:
    """File extensions ``--plot`` can write: matplotlib's, less ``pgf`` where no TeX is installed."""
    import shutil

    from matplotlib.backend_bases import FigureCanvasBase

    formats = set(FigureCanvasBase.get_supported_filetypes())
    if not any(shutil.which(tex) for tex in ("xelatex", "lualatex", "pdflatex")):
        formats.discard("pgf")
    return sorted(formats)


def plot_format(path: str) -> str:
    """The image format ``path``'s extension names. Errors (``OnnxPruneError``): an extension
    matplotlib cannot write, with the ones it can."""
    from ..errors import OnnxPruneError

    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    formats = plot_formats()
    if ext not in formats:
        what = f"a .{ext} file" if ext else "a file without an extension"
        raise OnnxPruneError(f"{{plot_path}} cannot write {what}; use one of: {', '.join('.' + f for f in formats)}")
    return ext


def plot_groups(report: dict, path: str, fmt: str | None = None) -> None:
    """Write :func:`groups_figure` as an image at ``path`` (``fmt``: its format, default from
    the extension), cropped to everything drawn (nothing is clipped)."""
    save_figure(groups_figure(report), path, fmt)


def groups_figure(report: dict):
    """Horizontal bar chart of the MACs each channel group carries (a matplotlib figure).

    One bar per group, labelled with its id and anchor, in graph order from the top. Prunable
    groups are green; blocked groups are red, hatched and marked with a dot at their value,
    so that a blocked group stays visible whatever its size, and the reason is printed beside
    it. The figure grows with the number of groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    groups = report["groups"]
    n = max(len(groups), 1)
    macs = np.array([g["macs"] for g in groups], dtype=float) / 1e6
    y = np.arange(len(groups))
    labels = [f"{g['id']}  {g['anchor']}" for g in groups]
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.26 * n))
    colors = ["tab:green" if g["prunable"] else "tab:red" for g in groups]
    bars = ax.barh(y, macs, color=colors, height=0.7)
    right = float(macs.max()) if len(macs) and macs.max() > 0 else 1.0
    for bar, g, value in zip(bars, groups, macs):
        if not g["prunable"]:
            bar.set_hatch("//")
            ax.plot([value], [bar.get_y() + bar.get_height() / 2], "o", color="tab:red", markersize=4)
            ax.text(value + right * 0.02, bar.get_y() + bar.get_height() / 2, g["blocked"][0],
                    va="center", fontsize=7, color="tab:red")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, right * 1.6)
    ax.set_xlabel("MACs carried by the group (millions, one sample at the analysis input shape)")
    ax.set_ylabel("channel group (id and anchor node)")
    share = report["totals"]["prunable_macs_share"]
    ax.set_title(f"MACs per channel group of {os.path.basename(str(report.get('model', '')))}: "
                 f"prunable share {share:.0%}", fontsize=10)
    ax.legend(handles=[Patch(color="tab:green", label="prunable"),
                       Patch(facecolor="tab:red", hatch="//", label="blocked (reason beside the bar)")],
              loc="lower right", fontsize=8)
    return fig



def sensitivity_figure(report: dict):
    """Sensitivity as a heatmap of group × pruning ratio (rows in graph order, labelled with id
    and anchor; colour: the metric's loss), readable from a few groups to hundreds; the style of
    Li et al. (2017), Fig. 2, with ratio on x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = report["curves"]
    ratios = [p["ratio"] for p in curves[0]["points"]] if curves else []
    loss = np.array([[p["loss"] for p in c["points"]] for c in curves], dtype=float).reshape(len(curves), len(ratios))
    fig, ax = plt.subplots(figsize=(4 + 0.5 * len(ratios), 1.8 + 0.26 * max(len(curves), 1)))
    image = ax.imshow(loss, aspect="auto", cmap="magma_r", vmin=0.0, vmax=max(float(loss.max()) if loss.size else 0.0, 1e-9),
                      interpolation="nearest")
    ax.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios])
    ax.set_yticks(range(len(curves)), [f"{c['id']}  {c['anchor']}" for c in curves], fontsize=7)
    ax.set_xlabel("pruning ratio of the group (fraction of its channels removed)")
    ax.set_ylabel("channel group (pruned alone)")
    unit = {"accuracy": "accuracy drop (fraction)", "agreement": "top-1 disagreement with the original (fraction)",
            "cosine": "1 - cosine similarity", "rel_mse": "relative MSE"}[report["metric"]]
    fig.colorbar(image, ax=ax, label=unit, fraction=0.05)
    ax.set_title(f"Sensitivity of {os.path.basename(str(report['model']))}: {report['metric']} "
                 f"(baseline {report['baseline']:.4g}, {report['samples']} samples)", fontsize=10)
    return fig


def save_figure(fig, path, fmt: str | None = None) -> None:
    """Write ``fig`` at ``path`` cropped to everything drawn, and close it."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120, bbox_inches="tight", format=fmt)
    plt.close(fig)
