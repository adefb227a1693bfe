"""Decisions learned in PyTorch (``onnxprune.torch``): groups on a module, masks with the STE,
the AMSC penalty and its λ selection, slimming, plans applied exactly to the export, and
``apply_plan`` against the ONNX rewrite."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
from torch import nn

from models import ARCHITECTURES, build
from onnxprune.decide.plan import PruningPlan
from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline import PruneOptions, float_params, prune_file
from onnxprune.torch.groups import prepare
from onnxprune.torch.lasso import AdaptiveGroupLasso, BNSlimming, select_lambdas
from onnxprune.torch.masks import BinarizeSTE, MaskPruner, soft_prune_
from onnxprune.torch.slicing import apply_plan


def digits_batch(n: int = 16) -> torch.Tensor:
    """Real inputs: sklearn's 8×8 digits, upsampled to 32×32 and repeated to 3 channels."""
    from sklearn.datasets import load_digits

    x = load_digits().images[:n].astype(np.float32) / 16.0
    x = np.kron(x, np.ones((4, 4), dtype=np.float32))[:, None]
    return torch.from_numpy(np.repeat((x - 0.3) / 0.4, 3, axis=1))


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]


# ---------------------------------------------------------------- straight-through estimator
def test_ste_binarizes_forward_and_passes_the_gradient_through():
    score = torch.tensor([0.2, 0.5, 0.7, -1.0], requires_grad=True)
    mask = BinarizeSTE.apply(score, 0.5)
    assert mask.tolist() == [0.0, 1.0, 1.0, 0.0]
    weights = torch.tensor([3.0, -2.0, 0.5, 7.0])
    (mask * weights).sum().backward()
    assert score.grad.tolist() == weights.tolist()  # d mask / d score = 1, also where the mask is 0


def test_mask_gradient_is_the_loss_gradient_on_the_mask():
    model = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.ReLU(), nn.Conv2d(4, 1, 1, bias=False)).eval()
    mg = prepare(model, torch.zeros(1, 1, 4, 4))
    pruner = MaskPruner(mg, 0.5)
    x = torch.rand(2, 1, 4, 4)
    pruner(x).sum().backward()
    (gid,) = pruner.scores.keys()
    # By hand: mask m multiplies channel c of the first conv and column c of the second, so
    # d out / d m_c = 2 · Σ relu(w1_c x) · w2_c  (the mask enters both slots).
    w1, w2 = model[0].weight.detach().view(4), model[2].weight.detach().view(4)
    by_hand = 2 * (torch.relu(w1[None, :, None, None] * x) * w2[None, :, None, None]).sum((0, 2, 3))
    torch.testing.assert_close(pruner.scores[gid].grad, by_hand)


def test_budget_loss_counts_macs_through_the_masks():
    model = build("resnet20").eval()
    mg = prepare(model, torch.zeros(1, 3, 32, 32))
    pruner = MaskPruner(mg, 0.5)
    assert float(pruner.macs().detach()) == pytest.approx(1.0)
    assert float(pruner.budget_loss().detach()) == pytest.approx(0.5)
    with torch.no_grad():
        for score in pruner.scores.values():
            score[: len(score) // 2] = 0.0  # half of every group below the threshold
    # The differentiable count equals the cost model's recount of the same plan.
    plan = mg.plan(pruner.channel_scores(), threshold=0.5)
    assert float(pruner.macs().detach()) == pytest.approx(mg.kept(plan), abs=1e-6)
    assert pruner.target_at(0, 100) == 1.0 and pruner.target_at(50, 100) == 0.5 and pruner.target_at(99, 100) == 0.5


def test_tighten_schedule_keeps_the_scheduled_macs_and_the_plan_is_the_masks():
    model = build("resnet20").eval()
    mg = prepare(model, torch.zeros(1, 3, 32, 32))
    pruner = MaskPruner(mg, 0.5)
    assert pruner.tighten(0, 100) == 1.0 and float(pruner.macs().detach()) == 1.0
    assert pruner.tighten(25, 100) == pytest.approx(0.75)
    assert abs(float(pruner.macs().detach()) - 0.75) <= 0.02
    pruner.tighten(60, 100)
    masks = {gid: m.detach() for gid, m in pruner.masks().items()}
    plan = pruner.plan()
    assert abs(mg.kept(plan) - 0.5) <= 0.02
    for gid, gp in plan.groups.items():
        assert gp.keep == torch.nonzero(masks[gid]).flatten().tolist()
    # Magnitude initialisation: the first masks drop the weakest filters (l1-like).
    weakest = {g.id: int(np.argmin(pruner.channel_scores()[g.id])) for g in mg.groups}
    assert sum(masks[gid][i] == 0 for gid, i in weakest.items() if gid in plan.groups) >= len(plan.groups) - 1


def test_bn_recalibration_averages_the_masked_module_statistics():
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 1, 1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 3.0]).view(2, 1, 1, 1))
    mg = prepare(model, torch.zeros(1, 1, 2, 2))
    x = torch.arange(16.0).view(4, 1, 2, 2)
    seen = mg.recalibrate_bn([x[:2], x[2:]], channel_masks={mg.groups[0].id: torch.tensor([1.0, 0.0])})
    assert seen == 4 and not model.training and model[1].momentum == 0.1
    # Channel 0 sees x, channel 1 is masked to 0: plain averages of the two batches' statistics.
    assert model[1].running_mean.tolist() == pytest.approx([7.5, 0.0])
    assert model[1].running_var[0].item() == pytest.approx(float((x[:2].var() + x[2:].var()) / 2))


# ---------------------------------------------------------------- penalties by hand
def test_group_lasso_channel_term_by_hand():
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
    mg = prepare(model, torch.zeros(1, 1, 4, 4))
    lasso = AdaptiveGroupLasso(mg, lambda0=0.0, lambda1=0.1)
    assert lasso().item() == pytest.approx(0.1 * 2)  # each channel: sqrt(q=1) * |w| / |w_hat| = 1
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([3.0, 4.0]).view(2, 1, 1, 1))
    assert lasso().item() == pytest.approx(0.1 * (3 / 1 + 4 / 2), rel=1e-5)
    np.testing.assert_allclose(lasso.channel_ratios()[mg.groups[0].id], [3.0, 2.0], rtol=1e-5)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 1)
        self.branch = nn.Conv2d(2, 2, 1, bias=False)
        self.head = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.head(x + self.branch(x))


def test_group_lasso_block_term_by_hand():
    model = _Residual()
    with torch.no_grad():
        model.branch.weight.copy_(torch.tensor([1.0, 2.0, 2.0, 4.0]).view(2, 2, 1, 1))  # norm 5
    mg = prepare(model, torch.zeros(1, 1, 4, 4))
    assert [b.params for b in mg.blocks] == [["branch.weight"]]
    lasso = AdaptiveGroupLasso(mg, lambda0=0.5, lambda1=0.0)
    assert lasso().item() == pytest.approx(0.5 * 2 * 5 / 5, rel=1e-5)  # sqrt(q=4) * |θ| / |θ̂|
    with torch.no_grad():
        model.branch.weight.mul_(0.01)
    assert lasso().item() == pytest.approx(0.5 * 2 * 0.01, rel=1e-4)
    plan = lasso.plan(threshold=0.05, width=False)
    assert plan.drop_blocks == [mg.blocks[0].add]


def test_bn_slimming_penalty_and_scores_by_hand():
    model = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 1, 1)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0, 0.1]))
    mg = prepare(model, torch.zeros(1, 1, 4, 4))
    slim = BNSlimming(mg, weight=0.1)
    assert slim().item() == pytest.approx(0.1 * 2.6)
    np.testing.assert_allclose(slim.channel_scores()[mg.groups[0].id], [0.5, 2.0, 0.1], rtol=1e-6)


# ---------------------------------------------------------------- λ selection on a toy problem
def _toy_group_lasso(l0: float, l1: float, seed: int = 0):
    """Linear regression y = X w: features 0-3 matter; features 4-7 (one 'block') are noise.
    Proximal gradient with a block penalty λ0·||w_block|| and per-feature λ1·|w_j|; returns
    (validation R², weights)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((400, 8))
    w_true = np.array([2.0, -1.5, 1.0, 0.5, 0, 0, 0, 0])
    y = x @ w_true + 0.3 * rng.standard_normal(400)
    xf, yf, xv, yv = x[:300], y[:300], x[300:], y[300:]
    w = np.zeros(8)
    step = 1.0 / np.linalg.norm(xf, 2) ** 2 * len(xf)
    for _ in range(500):
        w = w - step * xf.T @ (xf @ w - yf) / len(xf)
        norm = np.linalg.norm(w[4:])
        w[4:] *= max(0.0, 1 - step * l0 / norm) if norm > 0 else 0.0
        w = np.sign(w) * np.maximum(np.abs(w) - step * l1, 0.0)
    r2 = 1 - np.mean((xv @ w - yv) ** 2) / np.var(yv)
    return r2, w


def test_lambda_selection_is_depth_first_and_removes_only_the_useless_block():
    lambda0, lambda1, trials = select_lambdas(lambda a, b: _toy_group_lasso(a, b)[0], [0.0, 0.1, 0.3, 3.0],
                                              [0.0, 0.01, 0.05, 2.0], tolerance=0.01)
    assert [t["lambda1"] for t in trials[:4]] == [0.0] * 4  # λ0 first, with λ1 = 0
    assert all(t["lambda0"] == lambda0 for t in trials[4:])  # then λ1 with λ0 fixed
    assert lambda0 == 3.0  # the noise block costs nothing: the strongest λ0 is kept
    assert lambda1 < 2.0  # λ1 = 2 kills real features and loses R²: refused
    r2, w = _toy_group_lasso(lambda0, lambda1)
    assert np.all(w[4:] == 0) and np.all(np.abs(w[:4]) > 0.2)
    assert r2 >= max(t["metric"] for t in trials) - 0.01


# ---------------------------------------------------------------- exactness of learned plans
def _train_masks(mg, pruner, steps: int = 6):
    opt = torch.optim.Adam(list(pruner.parameters()), lr=0.2)
    wopt = torch.optim.SGD(mg.module.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(8, 3, 32, 32, generator=gen)
        loss = pruner(x).pow(2).mean() + 5 * pruner.budget_loss(pruner.target_at(step, steps, ramp=0.3))
        opt.zero_grad()
        wopt.zero_grad()
        loss.backward()
        opt.step()
        wopt.step()


@pytest.mark.parametrize("name", ["resnet20"])  # MobileNetV2 passes too (20 s): left out of the suite's time
def test_mask_trained_plan_matches_the_masked_module_exactly(name, tmp_path):
    model = build(name).eval()
    mg = prepare(model, torch.zeros(ARCHITECTURES[name].input_shape))
    pruner = MaskPruner(mg, 0.5)
    _train_masks(mg, pruner)
    model.eval()
    plan = pruner.plan()
    assert abs(mg.kept(plan) - 0.5) <= 0.02
    plan.save(tmp_path / "plan.json")
    export = mg.export(tmp_path / "trained.onnx")
    result = prune_file(export, tmp_path / "pruned.onnx", PruneOptions(plan=PruningPlan.load(tmp_path / "plan.json")))
    x = digits_batch()
    channel, blocks = mg.masks_for(plan)
    with torch.no_grad():
        masked = mg.forward(x, channel_masks=channel, block_masks=blocks).numpy()
    np.testing.assert_allclose(run_onnx(tmp_path / "pruned.onnx", x), masked, atol=1e-4, rtol=1e-4)
    # Physically smaller by the masked share: the file's MACs are what the plan counts.
    assert result.after.macs / result.before.macs == pytest.approx(mg.kept(plan), abs=1e-6)
    assert float_params(onnx.load(tmp_path / "pruned.onnx")) < 0.8 * float_params(onnx.load(export))


def test_amsc_plan_with_dropped_blocks_matches_the_masked_module(tmp_path):
    model = build("resnet20").eval()
    mg = prepare(model, torch.zeros(1, 3, 32, 32))
    lasso = AdaptiveGroupLasso(mg, lambda0=1e-3, lambda1=1e-4)
    with torch.no_grad():  # what strong block lasso leads to: two branches shrunk to almost nothing
        for block in mg.blocks[1:3]:
            for name in block.params:
                dict(model.named_parameters())[name].mul_(1e-3)
    plan = lasso.plan(threshold=0.05, target_macs=0.5)
    assert sorted(plan.drop_blocks) == sorted(b.add for b in mg.blocks[1:3])
    assert abs(mg.kept(plan) - 0.5) <= 0.02
    plan.save(tmp_path / "plan.json")
    export = mg.export(tmp_path / "m.onnx")
    prune_file(export, tmp_path / "p.onnx", PruneOptions(plan=PruningPlan.load(tmp_path / "plan.json")))
    x = digits_batch()
    channel, blocks = mg.masks_for(plan)
    with torch.no_grad():
        masked = mg.forward(x, channel_masks=channel, block_masks=blocks).numpy()
    np.testing.assert_allclose(run_onnx(tmp_path / "p.onnx", x), masked, atol=1e-4, rtol=1e-4)
    kept_nodes = {n.name for n in onnx.load(tmp_path / "p.onnx").graph.node}
    assert not kept_nodes & set(plan.drop_blocks)


def test_renamed_parameters_map_by_weight_identity(tmp_path):
    model = build("resnet20").eval()
    path = prepare(model, torch.zeros(1, 3, 32, 32)).export(tmp_path / "m.onnx")
    renamed = onnx.load(path)
    mapping = {}
    for k, init in enumerate(renamed.graph.initializer):  # what an exporter with anonymous names writes
        mapping[init.name] = f"onnx::Conv_{k}"
        init.name = mapping[init.name]
    for node in renamed.graph.node:
        node.input[:] = [mapping.get(i, i) for i in node.input]
    onnx.save(renamed, tmp_path / "renamed.onnx")
    mg = prepare(model, torch.zeros(1, 3, 32, 32), onnx_path=tmp_path / "renamed.onnx")
    assert not mg.unmapped and len(mg.groups) == len(mg.analysis.prunable_groups)
    convs = [old for old, p in model.named_parameters() if p.dim() == 4]
    assert all(mg.renamed[mapping[old]] == old for old in convs)  # random weights: unique values
    assert all(s.name in dict(model.named_parameters()) for g in mg.groups for s in g.slots)
    # BN running statistics are buffers, not parameters: equal values (zeros, ones) are not guessed.
    assert not any("running" in v for v in mg.renamed.values())


def test_ambiguous_identity_is_not_guessed(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(),
                          nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=False)).eval()
    with torch.no_grad():
        model[2].weight.copy_(model[4].weight)  # two parameters with the same shape and values
    m = onnx.load(prepare(model, torch.zeros(1, 1, 2, 2)).export(tmp_path / "m.onnx"))
    for init in m.graph.initializer:
        if init.name == "2.weight":
            init.name = "anonymous"
    for node in m.graph.node:
        node.input[:] = ["anonymous" if i == "2.weight" else i for i in node.input]
    onnx.save(m, tmp_path / "r.onnx")
    mg = prepare(model, torch.zeros(1, 1, 2, 2), onnx_path=tmp_path / "r.onnx")
    # The exporter wrote the two equal weights as one initializer, read by both convs: mapping
    # it to either parameter would be wrong for the other, so neither group is mapped.
    readers = [n.name for n in m.graph.node if "anonymous" in n.input]
    assert len(readers) == 2
    assert "anonymous" not in mg.renamed
    assert len(mg.unmapped) == 2 and all("do not map" in why for why in mg.unmapped.values())
    assert len(mg.groups) == len(mg.analysis.prunable_groups) - 2


# ---------------------------------------------------------------- apply_plan against the rewrite
@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "se_resnet"])
def test_apply_plan_matches_the_onnx_rewrite(name, tmp_path):
    shape = ARCHITECTURES[name].input_shape
    model = build(name).eval()
    mg = prepare(model, torch.zeros(shape))
    rng = np.random.default_rng(1)
    plan = mg.plan({g.id: rng.random(g.channels) for g in mg.groups}, target_macs=0.5)
    export = mg.export(tmp_path / "m.onnx")
    prune_file(export, tmp_path / "p.onnx", PruneOptions(plan=plan))
    before = sum(p.numel() for p in model.parameters())
    apply_plan(mg, plan)
    x = torch.randn(3, *shape[1:])
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), run_onnx(tmp_path / "p.onnx", x), atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in model.parameters()) < before
    # The sliced module is an ordinary module again: it trains and exports.
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_apply_plan_refuses_dropped_blocks():
    model = build("resnet20").eval()
    mg = prepare(model, torch.zeros(1, 3, 32, 32))
    with pytest.raises(OnnxPruneError, match="drops residual blocks"):
        apply_plan(mg, PruningPlan(drop_blocks=[mg.blocks[0].add]))


def test_soft_pruning_zeroes_the_weakest_channels_which_may_recover():
    model = build("resnet20").eval()
    mg = prepare(model, torch.zeros(1, 3, 32, 32))
    zeroed = soft_prune_(mg, 0.25)
    group = mg.groups[0]
    params = dict(model.named_parameters())
    out = next(s for s in group.slots if s.role == "out")
    weight = params[out.name].movedim(out.dim, 0)
    for i, c in enumerate(out.channels):
        assert bool((weight[i] == 0).all()) == (c in set(zeroed[group.id].tolist()))
    assert len(zeroed[group.id]) == group.channels // 4
    # Nothing is frozen: a training step moves the zeroed weights again (through BN's shift; a
    # freshly initialised shift of exactly 0 would sit on ReLU's kink, as no trained one does).
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.fill_(0.1)
    model.train()
    model(torch.randn(4, 3, 32, 32)).pow(2).mean().backward()
    assert params[out.name].grad.movedim(out.dim, 0)[list(out.channels).index(int(zeroed[group.id][0]))].abs().sum() > 0
