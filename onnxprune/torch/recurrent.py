"""ONNX ``LSTM``, ``GRU`` and ``RNN`` (opsets 7-22) as differentiable torch code, for the bridge.

Each function takes the node's attributes and inputs as the ONNX spec orders them
(``X, W, R, B, sequence_lens, initial_h[, initial_c, P]``) and returns ``(Y, Y_h[, Y_c])``:

- ``layout = 0``: ``X`` is ``[T, N, I]``, ``Y`` is ``[T, D, N, H]``, states are ``[D, N, H]``;
  ``layout = 1``: ``X`` is ``[N, T, I]``, ``Y`` is ``[N, T, D, H]``, states are ``[N, D, H]``.
- ``direction``: ``forward``, ``reverse`` or ``bidirectional`` (``D = 2``; the forward
  direction first).
- ``W`` is ``[D, G·H, I]``, ``R`` is ``[D, G·H, H]``, ``B`` is ``[D, 2·G·H]`` (``Wb`` then
  ``Rb``), with the gates in the spec's order: LSTM ``i, o, f, c`` (G = 4), GRU ``z, r, h``
  (G = 3), RNN one gate. LSTM peepholes ``P`` are ``[D, 3·H]`` (``i, o, f``).
- ``sequence_lens`` ``[N]``: a sample's steps at and past its length leave its state as it is
  and write zeros to ``Y``; the reverse direction starts at the sample's last valid step.
- ``clip`` clamps the gates' pre-activations; GRU's ``linear_before_reset`` is honoured.

Refused (``OnnxPruneError``): LSTM's ``input_forget = 1``, and ``activations`` other than
Sigmoid, Tanh and Relu (or with ``activation_alpha``/``activation_beta``).

Source: the ONNX operator specification (onnx/docs/Operators.md, LSTM-22, GRU-22, RNN-22).
"""

from __future__ import annotations

import torch

from ..errors import OnnxPruneError

_ACTIVATIONS = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu}
_DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _activations(op: str, a: dict, directions: int) -> list[list]:
    """Per direction, the activation functions in the spec's order (f, g[, h])."""
    if a.get("activation_alpha") or a.get("activation_beta"):
        raise OnnxPruneError(f"{op} with activation_alpha/activation_beta is not supported by the torch bridge")
    names = [n.decode() if isinstance(n, bytes) else n for n in a.get("activations") or []] or _DEFAULTS[op] * directions
    per = len(_DEFAULTS[op])
    if len(names) == per and directions == 2:
        names = names * 2
    unknown = [n for n in names if n not in _ACTIVATIONS]
    if unknown:
        raise OnnxPruneError(f"{op} activation {unknown[0]} is not supported by the torch bridge")
    fns = [_ACTIVATIONS[n] for n in names]
    return [fns[d * per:(d + 1) * per] for d in range(directions)]


def _prepare(op: str, a: dict, x, w, sequence_lens, states: list):
    """``(x as [T, N, I], D, valid mask [T, N] or None, states as [D, N, H] or None)``."""
    layout = a.get("layout", 0)
    if layout:
        x = x.transpose(0, 1)
        states = [None if s is None else s.transpose(0, 1) for s in states]
    steps, batch = x.shape[0], x.shape[1]
    valid = None
    if sequence_lens is not None:
        lengths = sequence_lens.long().reshape(1, -1)
        valid = torch.arange(steps).reshape(-1, 1) < lengths  # [T, N]
    directions = w.shape[0]
    expected = 2 if a.get("direction", "forward") == "bidirectional" else 1
    if directions != expected:
        raise OnnxPruneError(f"{op}: W has {directions} directions, direction {a.get('direction', 'forward')!r}")
    return x, directions, valid, states, batch


def _finish(a: dict, ys: list, finals: list[list]):
    """Stack per-direction outputs ``[T, N, H]`` and final states into the spec's layout."""
    y = torch.stack(ys, 1)  # [T, D, N, H]
    states = [torch.stack(f, 0) for f in finals]  # [D, N, H]
    if a.get("layout", 0):
        y = y.permute(2, 0, 1, 3)
        states = [s.transpose(0, 1) for s in states]
    return (y, *states)


def _scan(x, valid, reverse: bool, state: tuple, cell):
    """Run ``cell(x_t, state) -> state`` over time; ``state[0]`` is the hidden state H.
    Returns ``(outputs [T, N, H], final state)``."""
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    out = [None] * x.shape[0]
    for t in steps:
        new = cell(x[t], state)
        if valid is not None:
            keep = valid[t].reshape(-1, 1)
            new = tuple(torch.where(keep, n, s) for n, s in zip(new, state))
            out[t] = torch.where(keep, new[0], torch.zeros_like(new[0]))
        else:
            out[t] = new[0]
        state = new
    return torch.stack(out, 0), state


def _directions(a: dict, count: int) -> list[bool]:
    """Per direction, whether it runs backwards in time."""
    direction = a.get("direction", "forward")
    return [False, True] if direction == "bidirectional" else [direction == "reverse"] * count


def _clip(a: dict):
    clip = a.get("clip")
    return (lambda v: v) if clip is None else (lambda v: v.clamp(-clip, clip))


def lstm(a, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None):
    if a.get("input_forget", 0):
        raise OnnxPruneError("LSTM with input_forget=1 is not supported by the torch bridge")
    x, count, valid, (h0, c0), batch = _prepare("LSTM", a, x, w, sequence_lens, [initial_h, initial_c])
    hidden = r.shape[-1]
    clip = _clip(a)
    ys, hs, cs = [], [], []
    for d, (reverse, (f, g, h)) in enumerate(zip(_directions(a, count), _activations("LSTM", a, count))):
        bias = 0 if b is None else b[d, :4 * hidden] + b[d, 4 * hidden:]
        pi, po, pf = (None,) * 3 if p is None else p[d].split(hidden)
        xw = x @ w[d].t() + bias  # [T, N, 4H]: the input part of every step at once

        def cell(xt, state, d=d, f=f, g=g, h=h, pi=pi, po=po, pf=pf):
            ht, ct = state
            i, o, fg, c = (xt + ht @ r[d].t()).split(hidden, -1)
            if pi is not None:
                i, fg = i + pi * ct, fg + pf * ct
            i, fg, c = f(clip(i)), f(clip(fg)), g(clip(c))
            ct = fg * ct + i * c
            o = o + po * ct if po is not None else o
            return f(clip(o)) * h(ct), ct

        zeros = x.new_zeros(batch, hidden)
        state = (zeros if h0 is None else h0[d], zeros if c0 is None else c0[d])
        y, (hn, cn) = _scan(xw, valid, reverse, state, cell)
        ys.append(y), hs.append(hn), cs.append(cn)
    return _finish(a, ys, [hs, cs])


def gru(a, x, w, r, b=None, sequence_lens=None, initial_h=None):
    x, count, valid, (h0,), batch = _prepare("GRU", a, x, w, sequence_lens, [initial_h])
    hidden = r.shape[-1]
    clip = _clip(a)
    before_reset = bool(a.get("linear_before_reset", 0))
    ys, hs = [], []
    for d, (reverse, (f, g)) in enumerate(zip(_directions(a, count), _activations("GRU", a, count))):
        wb, rb = (x.new_zeros(3 * hidden),) * 2 if b is None else (b[d, :3 * hidden], b[d, 3 * hidden:])
        xw = x @ w[d].t() + wb
        rz, rr, rh = r[d].split(hidden)
        rbz, rbr, rbh = rb.split(hidden)

        def cell(xt, state, f=f, g=g, rz=rz, rr=rr, rh=rh, rbz=rbz, rbr=rbr, rbh=rbh):
            (ht,) = state
            xz, xr, xh = xt.split(hidden, -1)
            z = f(clip(xz + ht @ rz.t() + rbz))
            rt = f(clip(xr + ht @ rr.t() + rbr))
            if before_reset:
                n = g(clip(xh + rt * (ht @ rh.t() + rbh)))
            else:
                n = g(clip(xh + (rt * ht) @ rh.t() + rbh))
            return ((1 - z) * n + z * ht,)

        state = (x.new_zeros(batch, hidden) if h0 is None else h0[d],)
        y, (hn,) = _scan(xw, valid, reverse, state, cell)
        ys.append(y), hs.append(hn)
    return _finish(a, ys, [hs])


def rnn(a, x, w, r, b=None, sequence_lens=None, initial_h=None):
    x, count, valid, (h0,), batch = _prepare("RNN", a, x, w, sequence_lens, [initial_h])
    hidden = r.shape[-1]
    clip = _clip(a)
    ys, hs = [], []
    for d, (reverse, (f,)) in enumerate(zip(_directions(a, count), _activations("RNN", a, count))):
        bias = 0 if b is None else b[d, :hidden] + b[d, hidden:]
        xw = x @ w[d].t() + bias

        def cell(xt, state, d=d, f=f):
            return (f(clip(xt + state[0] @ r[d].t())),)

        state = (x.new_zeros(batch, hidden) if h0 is None else h0[d],)
        y, (hn,) = _scan(xw, valid, reverse, state, cell)
        ys.append(y), hs.append(hn)
    return _finish(a, ys, [hs])
