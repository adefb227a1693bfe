"""``model_card.json``: what a served model is, how it was pruned and what it costs, as far as
known. Unknown fields are ``null``, never guessed.

Sources, each named in the card:

* **the model file**: its SHA-256 and size, IR version, opsets, producer, and the metadata that
  ``onnxprune prune`` stores in ``metadata_props`` (``onnxprune.version``, ``.criterion``,
  ``.amount``, ``.blocks_dropped``, ``.macs_before``/``_after``, ``.params_before``/``_after``);
  other metadata entries are copied under ``metadata``;
* **onnxprune's cost model** (:mod:`onnxprune.analysis.cost`): MACs of Conv, ConvTranspose,
  Gemm and MatMul and the elements of float initializers, for one sample at the analysis input
  shapes (a dynamic batch counts as 1);
* optionally a **plan** (``onnxprune prune --plan``), a **verify report** (the JSON of
  ``onnxprune verify --json``: accuracy, agreement and errors against the original) and a
  **bench report** (the JSON of ``onnxprune bench --json``: latency in milliseconds per run of
  ``batch`` samples, throughput in samples per second). The reports must name this model
  file: a report of another model is refused.

Layout (``format: onnxprune.model_card/1``)::

    {"format", "name", "created_by", "model": {...}, "pruning": {...}, "cost": {...},
     "accuracy": {...} | null, "latency": {...} | null, "plan": {...} | null,
     "serving": {config fields, "validated"}, "metadata": {...}, "notes": [...]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx

from .. import __version__
from ..errors import OnnxPruneError
from ..graph.save import same_file

FORMAT = "onnxprune.model_card/1"
PathLike = str | os.PathLike
_PREFIX = "onnxprune."


def _number(meta: dict, key: str) -> int | None:
    try:
        return int(meta[_PREFIX + key])
    except (KeyError, ValueError):
        return None


def _ratio(after: int | None, before: int | None) -> float | None:
    return round(after / before, 6) if after is not None and before else None


def _json_entry(meta: dict, key: str) -> dict | None:
    try:
        value = json.loads(meta[_PREFIX + key])
    except (KeyError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def pruning_record(model: onnx.ModelProto) -> dict:
    """What ``onnxprune prune`` recorded in the model's ``metadata_props`` (nulls when it was not
    pruned by onnxprune, or a value is missing)."""
    meta = {p.key: p.value for p in model.metadata_props}
    pruned = _PREFIX + "version" in meta
    blocks = meta.get(_PREFIX + "blocks_dropped")
    record = {"by_onnxprune": pruned, "onnxprune_version": meta.get(_PREFIX + "version"),
              "criterion": meta.get(_PREFIX + "criterion"), "amount": meta.get(_PREFIX + "amount"),
              "schedule": meta.get(_PREFIX + "schedule"), "recovery": meta.get(_PREFIX + "recovery"),
              "calibration": _json_entry(meta, "calibration"), "round_to": meta.get(_PREFIX + "round_to"),
              "blocks_dropped": None if blocks is None else [b for b in blocks.split(",") if b]}
    for key in ("macs_before", "macs_after", "params_before", "params_after"):
        record[key] = _number(meta, key)
    record["macs_kept"] = _ratio(record["macs_after"], record["macs_before"])
    record["params_kept"] = _ratio(record["params_after"], record["params_before"])
    return record


def count_cost(model: onnx.ModelProto, input_shapes: dict | None = None, spell=None) -> dict:
    """MACs and params of ``model`` by onnxprune's cost model, at ``input_shapes`` (a dynamic
    batch is 1). ``model`` is normalized in place. Params do not depend on shapes: they are
    always counted. Without ``input_shapes``, a model whose MACs cannot be counted (e.g. a
    dynamic dim other than the batch) gets null MACs and a note, with options spelled by
    ``spell``; with them, the error is raised (``OnnxPruneError``)."""
    from ..analysis.cost import CostModel, float_params
    from ..analysis.groups import analyze
    from ..errors import render_options
    from ..graph import normalize

    method = ("onnxprune cost model: MACs of Conv, ConvTranspose, Gemm and MatMul; params are the elements of "
              "float initializers; one sample")
    model = normalize(model, inplace=True)
    try:
        analysis = analyze(model, input_shapes or None)
    except OnnxPruneError as exc:
        if input_shapes:
            raise
        return {"macs": None, "params": float_params(model), "input_shapes": None, "method": method,
                "note": render_options(f"MACs not counted: {exc.template}", spell)}
    costs = CostModel(analysis)
    cost = costs.cost()
    inits = {t.name for t in model.graph.initializer}
    shapes = {vi.name: [int(d) for d in analysis.shapes.get(vi.name) or ()] for vi in model.graph.input
              if vi.name not in inits}
    note = None
    if costs.unknown_shape_nodes:
        note = (f"{len(costs.unknown_shape_nodes)} layers have shapes that could not be inferred; their MACs are not "
                "counted, so macs is a lower bound")
    return {"macs": int(cost.macs), "params": int(cost.params), "input_shapes": shapes, "method": method, "note": note}


def _read_json(path: PathLike, what: str, option: str) -> dict:
    path = Path(os.fspath(path))
    if not path.is_file():
        raise OnnxPruneError(f"{option} {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise OnnxPruneError(f"{option} {path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise OnnxPruneError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise OnnxPruneError(f"{option} {path} is not {what}")
    return data


def _named(path: PathLike | None) -> dict | None:
    """A file the card refers to, as its name and SHA-256 (null when missing): never a local
    path, which means nothing on the server."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    from ..graph import file_sha256

    found = Path(os.fspath(path))
    return {"file": found.name, "sha256": file_sha256(found) if found.is_file() else None}


def read_plan(path: PathLike) -> dict:
    """The plan saved by ``onnxprune prune --plan``, as its JSON dict, with its ``source``."""
    from ..decide.plan import PruningPlan

    if not Path(os.fspath(path)).is_file():
        raise OnnxPruneError(f"{{plan}} {os.fspath(path)}: no such file")
    try:
        plan = PruningPlan.load(path)
    except OnnxPruneError as exc:
        raise OnnxPruneError(f"{{plan}} {os.fspath(path)}: {exc.template}") from None
    return {"source": _named(path), **plan.to_dict()}


def read_accuracy(path: PathLike, model: PathLike) -> dict:
    """The figures of an ``onnxprune verify ORIGINAL MODEL --json`` report whose pruned model is
    ``model``. Errors: not such a report, or a report of another model."""
    what = "the JSON of onnxprune verify --json"
    data = _read_json(path, what, "{accuracy_from}")
    outputs = data.get("outputs")
    if not isinstance(outputs, list) or not isinstance(data.get("pruned"), str) or \
            not all(isinstance(o, dict) for o in outputs):
        raise OnnxPruneError(f"{{accuracy_from}} {os.fspath(path)} is not {what}")
    if not same_file(data["pruned"], model):
        raise OnnxPruneError(f"{{accuracy_from}} {os.fspath(path)} verifies {data['pruned']}, not {os.fspath(model)}; "
                             "run onnxprune verify ORIGINAL MODEL --json on this model")
    keys = ("name", "accuracy_original", "accuracy_pruned", "top1_agreement", "cosine_similarity", "max_abs_error",
            "mean_abs_error")
    source = data.get("data_source")
    if isinstance(source, str) and source.startswith("npz:"):
        source = {"npz": _named(source[len("npz:"):])}
    return {"source": _named(path), "original": _named(data.get("original")), "data": source,
            "samples": data.get("n_samples"), "provider": data.get("provider"),
            "outputs": [{k: o.get(k) for k in keys} for o in outputs]}


def read_latency(path: PathLike, model: PathLike) -> dict:
    """The timing of ``model`` in an ``onnxprune bench ... --json`` report (milliseconds per run
    of ``batch`` samples; throughput in samples per second), and its speedup against the first
    model timed when that is another one. Errors: not such a report, or ``model`` not in it."""
    what = "the JSON of onnxprune bench --json"
    data = _read_json(path, what, "{latency_from}")
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                                             for m in models):
        raise OnnxPruneError(f"{{latency_from}} {os.fspath(path)} is not {what}")
    entry = next((m for m in models if same_file(m["name"], model)), None)
    if entry is None:
        timed = ", ".join(m["name"] for m in models)
        raise OnnxPruneError(f"{{latency_from}} {os.fspath(path)} times {timed}, not {os.fspath(model)}; bench this "
                             "model (after the original, for a speedup)")
    first = models[0]
    baseline = None if first is entry else {"model": _named(first["name"]), "median_ms": first.get("median_ms")}
    return {"source": _named(path), "provider": data.get("provider"), "threads": data.get("threads"),
            "batch": data.get("batch"), "runs": data.get("runs"), "median_ms": entry.get("median_ms"),
            "p90_ms": entry.get("p90_ms"), "mean_ms": entry.get("mean_ms"), "min_ms": entry.get("min_ms"),
            "throughput_per_s": entry.get("throughput"), "baseline": baseline,
            "speedup_vs_baseline": None if baseline is None else entry.get("speedup_vs_first")}


def build_card(model: onnx.ModelProto, source: Path, config, *, sha256: str, nbytes: int, external_data: list[str],
               input_shapes: dict | None, validated: bool, plan: dict | None = None, accuracy: dict | None = None,
               latency: dict | None = None, spell=None) -> dict:
    """The card of ``model`` (read from ``source``) served with ``config`` (a
    :class:`~onnxprune.deploy.triton.TritonConfig`). ``model`` is normalized in place (last,
    when the cost is counted)."""
    from .triton import MODEL_FILE, VERSION

    meta = {p.key: p.value for p in model.metadata_props}
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p) or None
    described = {"source": Path(source).name, "file": f"{VERSION}/{MODEL_FILE}", "sha256": sha256, "bytes": nbytes,
                 "external_data": list(external_data), "ir_version": model.ir_version,
                 "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import}, "producer": producer,
                 "graph_name": model.graph.name or None}
    pruning = pruning_record(model)
    cost = count_cost(model, input_shapes, spell)
    notes = [cost["note"]] if cost["note"] else []
    if not pruning["by_onnxprune"]:
        notes.append("the model carries no onnxprune metadata: what was pruned is unknown (null)")
    serving = config.to_dict()
    serving["validated"] = validated
    return {"format": FORMAT, "name": config.name, "created_by": f"onnxprune {__version__} export-triton",
            "model": described, "pruning": pruning, "cost": cost, "accuracy": accuracy, "latency": latency,
            "plan": plan, "serving": serving,
            "metadata": {k: v for k, v in meta.items() if not k.startswith(_PREFIX)}, "notes": notes}
