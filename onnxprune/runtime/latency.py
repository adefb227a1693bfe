"""Per-layer latency tables: the measured cost behind ``onnxprune prune --target-latency``.

MACs are a poor proxy for latency: a convolution's time moves in stairs with its channel counts
(kernels work on blocks of channels; a count just past a block pays for the whole next block),
which HALP (Shen et al., "Structural Pruning via Latency-Saliency Knapsack", NeurIPS 2022)
exploits with per-layer latency lookup tables. This module measures such tables in onnxruntime:

- every MAC-counted layer (Conv, ConvTranspose, Gemm, MatMul; the layers
  :mod:`onnxprune.analysis.cost` counts) is timed **alone**, as a one-node model with random
  weights and inputs, at the shapes a plan leaves it (input channels, output channels, group
  of a depthwise convolution), at the analysis input shape (batch 1 unless ``--input-shape``
  says otherwise);
- a model's predicted latency is the sum over its layers, in milliseconds. Elementwise ops,
  pooling and layout reorders are not counted, so the prediction is of the layers pruning
  shrinks; ``prune --target-latency`` reports it next to the latency measured on the whole file.

Timing: 2 untimed runs, then at least 5 timed runs and until 20 ms have passed (at most 200);
the median, as :mod:`.bench` does, with onnxruntime's thread spinning off; on GPU providers the
inputs are bound on the device first (:func:`onnxprune.runtime.bench.bind_feed`). A layer that cannot
run alone (an unsupported dtype, a layout onnxruntime refuses) is not counted; ``untimed`` lists
it, and ``prune`` says so in a note.

Measurements are cached per machine (CPU model, core count, onnxruntime version, provider and
threads) in ``$ONNXPRUNE_CACHE_DIR`` (default ``~/.cache/onnxprune``), ``latency/<key>.json``,
keyed by the layer's full signature (op, attributes, input shapes and dtypes): a second prune of
the same model, or of another model with the same layers, measures nothing. The file is
rewritten atomically; a corrupt or foreign cache file is ignored and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from .bench import bind_feed, run_once
from .session import DEVICES, check_provider_available, make_session, require_onnxruntime

CACHE_FORMAT = "onnxprune.latency/1"
_MIN_RUNS, _MAX_RUNS, _MIN_SECONDS = 5, 200, 0.02


def cache_dir() -> Path:
    """Where latency tables are cached: ``$ONNXPRUNE_CACHE_DIR`` or ``~/.cache/onnxprune``."""
    root = os.environ.get("ONNXPRUNE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "onnxprune")
    return Path(root) / "latency"


def machine(provider: str, threads: int | None) -> dict:
    """What the cached times depend on besides the layer: CPU model and cores, onnxruntime's
    version, the provider and the thread count."""
    onnxruntime = require_onnxruntime()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__, "provider": provider,
            "threads": threads}


class LatencyTable:
    """Measured milliseconds per layer signature, cached per machine (see the module doc).

    Call it as ``table(node, shape)`` (``node``: a graph-surgeon node; ``shape(tensor)``: that
    tensor's dims under the plan, as :class:`~onnxprune.analysis.cost.CostModel` gives them) to
    get the layer's time in ms. ``measured`` counts the layers timed by this instance (cache
    misses); ``progress(n)``, if given, is called after each.

    Raises :class:`~onnxprune.errors.OnnxPruneError` when the installed onnxruntime lacks
    ``provider``.
    """

    def __init__(self, provider: str = "cpu", threads: int | None = None, *, cache: Path | None = None,
                 progress=None) -> None:
        check_provider_available(provider)  # a missing provider is one clear error, not untimed layers
        self.provider, self.threads, self.progress = provider, threads, progress
        self.machine = machine(provider, threads)
        key = hashlib.sha256(json.dumps(self.machine, sort_keys=True).encode()).hexdigest()[:16]
        self.path = (cache or cache_dir()) / f"{key}.json"
        self.times: dict[str, float] = self._load()
        self.measured = 0
        self.untimed: set[str] = set()
        self._dirty = False

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("machine") != self.machine:
            return {}
        times = data.get("times")
        return {k: float(v) for k, v in times.items() if isinstance(v, (int, float))} if isinstance(times, dict) else {}

    def save(self) -> None:
        """Write the table back (atomically) when something new was measured; a cache that cannot
        be written is skipped silently (the figures are then measured again next time)."""
        if not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".latency-", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"format": CACHE_FORMAT, "machine": self.machine, "times": self.times}, f)
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError:
            pass

    def __call__(self, node: gs.Node, shape) -> float:
        layer = _layer(node, shape)
        if layer is None:
            return 0.0
        key = json.dumps(layer, sort_keys=True)
        ms = self.times.get(key)
        if ms is None:
            ms = _time_layer(layer, self.provider, self.threads)
            if ms is None:
                self.untimed.add(node.name)
                return 0.0
            self.times[key], self._dirty = ms, True
            self.measured += 1
            if self.progress:
                self.progress(self.measured)
        return ms


def _layer(node: gs.Node, shape) -> dict | None:
    """The signature that sets a layer's time: op, attributes, input dims, dtypes, which inputs
    are weights; None when a shape is unknown or a dim is empty."""
    inputs = []
    for t in node.inputs:
        if t is None or (isinstance(t, gs.Variable) and not t.name):
            inputs.append(None)
            continue
        dims = shape(t)
        if dims is None or any(not isinstance(d, (int, np.integer)) or d <= 0 for d in dims):
            return None
        dtype = np.dtype(t.dtype).name if t.dtype is not None else "float32"
        inputs.append({"dims": [int(d) for d in dims], "dtype": dtype, "weight": isinstance(t, gs.Constant)})
    out = shape(node.outputs[0])
    if out is None:
        return None
    attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in node.attrs.items()
             if isinstance(v, (int, float, str, list, tuple, np.ndarray))}
    if node.op == "Conv" and int(attrs.get("group", 1)) > 1 and inputs[0] and inputs[1]:
        attrs["group"] = inputs[0]["dims"][1] // inputs[1]["dims"][1]  # a depthwise conv follows its channels
    return {"op": node.op, "domain": node.domain or "", "attrs": attrs, "inputs": inputs}


def _one_node_model(layer: dict) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    inits, graph_inputs, feeds, names = [], [], {}, []
    for k, spec in enumerate(layer["inputs"]):
        if spec is None:
            names.append("")
            continue
        name = f"in{k}"
        names.append(name)
        value = rng.standard_normal(spec["dims"]).astype(spec["dtype"]) * 0.1
        if spec["weight"]:
            inits.append(onnx.numpy_helper.from_array(value, name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec["dtype"]))
            graph_inputs.append(helper.make_tensor_value_info(name, elem, spec["dims"]))
            feeds[name] = value
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node(layer["op"], names, ["out"], domain=layer["domain"] or None, **layer["attrs"])
    first = next(spec for spec in layer["inputs"] if spec is not None)
    out = helper.make_tensor_value_info("out", helper.np_dtype_to_tensor_dtype(np.dtype(first["dtype"])), None)
    graph = helper.make_graph([node], "layer", graph_inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, feeds


def _time_layer(layer: dict, provider: str, threads: int | None) -> float | None:
    """Median ms of one run of the layer alone; None when onnxruntime cannot run it alone."""
    try:
        model, feeds = _one_node_model(layer)
        session = make_session(model.SerializeToString(), provider, threads, allow_spinning=False,
                               label=f"layer {layer['op']}")
        device = DEVICES[provider]
        # inputs bound on the GPU once, as bench does: transfers are not timed
        bound = None if device == "cpu" else bind_feed(session, feeds, device)
        for _ in range(2):
            run_once(session, feeds, bound)
    except Exception:  # OnnxPruneError from the session, onnx's and onnxruntime's own exception classes
        return None
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < _MAX_RUNS and (len(times) < _MIN_RUNS or time.perf_counter() - start < _MIN_SECONDS):
        t0 = time.perf_counter()
        run_once(session, feeds, bound)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3
