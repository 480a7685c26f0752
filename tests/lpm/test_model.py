"""The LPM modules in torch (METHODS §5): shapes, initialisation, EmbeddingBag mean, masking, overfitting."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cpb_assets.lpm.model import PAD, MultiOutputLPM, PerturbationBag, ScalarLPM, masked_mse, seed_everything


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread avoids OpenMP spinning on a shared 2-core machine (15x faster there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _scalar_inputs(n, n_ds=2, n_ctx=3, n_pert=5, n_ro=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(dataset=torch.randint(0, n_ds, (n,), generator=g), context=torch.randint(0, n_ctx, (n,), generator=g),
                perturbation=torch.randint(1, n_pert, (n, 1), generator=g),
                readout=torch.randint(0, n_ro, (n,), generator=g),
                log_dose=torch.randn(n, generator=g), time=torch.full((n,), 24.0))


def test_architecture_and_input_order():
    m = ScalarLPM(2, 3, 5, 7)
    dims = [(l.in_features, l.out_features) for l in m.mlp if isinstance(l, torch.nn.Linear)]
    assert dims == [(768, 256), (256, 256), (256, 1)]
    assert [type(l).__name__ for l in m.mlp] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert m.mlp[2].p == pytest.approx(0.1)
    mo = MultiOutputLPM(2, 3, 5, 11)
    dims = [(l.in_features, l.out_features) for l in mo.mlp if isinstance(l, torch.nn.Linear)]
    assert dims == [(640, 256), (256, 256), (256, 11)]
    # concatenation order: dataset, context, perturbation, readout, dose, time
    x = _scalar_inputs(4)
    feats = m._features(x["dataset"], x["context"], x["perturbation"], x["log_dose"], x["time"], x["readout"])
    assert torch.equal(feats[:, :128], m.dataset_emb(x["dataset"]))
    assert torch.equal(feats[:, 256:384], m.perturbation_emb(x["perturbation"]))
    assert torch.equal(feats[:, 384:512], m.readout_emb(x["readout"]))
    assert torch.allclose(feats[:, 640:], m.time_proj(x["time"][:, None]))
    assert m(**x).shape == (4,)


def test_initialisation():
    torch.manual_seed(0)
    m = MultiOutputLPM(50, 60, 4000, 300)
    for layer in [l for l in m.mlp if isinstance(l, torch.nn.Linear)]:
        fan_in, fan_out = layer.in_features, layer.out_features
        bound = math.sqrt(2) * math.sqrt(6 / (fan_in + fan_out))  # Xavier-uniform, gain √2
        w = layer.weight.detach()
        assert w.abs().max() <= bound + 1e-6 and w.abs().max() > 0.95 * bound
        # bias keeps torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert layer.bias.abs().max() <= 1 / math.sqrt(fan_in) + 1e-6
    w = m.perturbation_emb.weight.detach()
    assert abs(float(w.mean())) < 0.01 and abs(float(w.std()) - 1) < 0.01  # N(0, 1)
    # dose/time layers keep torch defaults (fan_in 1: U(-1, 1)), not Xavier
    assert m.dose_proj.weight.abs().max() <= 1.0 and m.dose_proj.weight.abs().max() > 0.9


def test_embedding_bag_mean_for_combinations():
    bag = PerturbationBag(6, 4)
    codes = torch.tensor([[1, 2, PAD], [3, PAD, PAD], [1, 4, 5]])
    out = bag(codes)
    w = bag.weight.detach()
    assert torch.allclose(out[0], (w[1] + w[2]) / 2)
    assert torch.allclose(out[1], w[3])
    assert torch.allclose(out[2], (w[1] + w[4] + w[5]) / 3)
    assert torch.allclose(bag(torch.tensor([[2], [3]])), w[[2, 3]])


def test_morgan_fixed_and_learned():
    fp = (np.random.default_rng(1).random((5, 128)) > 0.7).astype(np.float32)
    fp[0] = 0  # Control
    x = _scalar_inputs(32)
    for mode in ("fixed", "learned"):
        m = ScalarLPM(2, 3, 5, 7, morgan=mode, fingerprints=fp)
        assert torch.equal(m.perturbation_emb.weight.detach(), torch.from_numpy(fp))
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        loss = (m(**x) - 1.0).pow(2).mean()
        loss.backward()
        opt.step()
        same = torch.equal(m.perturbation_emb.weight.detach(), torch.from_numpy(fp))
        assert same is (mode == "fixed")
    with pytest.raises(ValueError, match="embedding_dim"):
        ScalarLPM(2, 3, 5, 7, dim=64, morgan="fixed", fingerprints=fp)


def test_masking_unobserved_genes_change_neither_loss_nor_gradient():
    seed_everything(3)
    m = MultiOutputLPM(2, 2, 4, 10, dropout=0.0)
    n = 6
    x = dict(dataset=torch.tensor([0, 1, 0, 1, 0, 1]), context=torch.tensor([0, 0, 1, 1, 0, 1]),
             perturbation=torch.tensor([[1], [2], [3], [1], [2], [3]]), log_dose=torch.zeros(n),
             time=torch.full((n,), 24.0))
    mask = torch.rand(n, 10) > 0.5
    target = torch.randn(n, 10)

    def loss_and_grads(t):
        m.zero_grad()
        loss = masked_mse(m(**x), t, mask)
        loss.backward()
        return loss.detach().clone(), [p.grad.clone() for p in m.parameters()]

    l1, g1 = loss_and_grads(target)
    other = torch.where(mask, target, torch.randn(n, 10) * 100)
    other[~mask & (torch.arange(10) % 2 == 0)] = float("nan")
    l2, g2 = loss_and_grads(other)
    assert torch.equal(l1, l2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    # and the loss is the value-weighted mean over observed entries
    pred = m(**x).detach()
    assert float(l1) == pytest.approx(float(((pred - target)[mask] ** 2).mean()), rel=1e-6)
    # a changed observed value does change it
    l3, _ = loss_and_grads(torch.where(mask, target + 1, target))
    assert not torch.equal(l1, l3)


def _overfit(model, inputs, target, mask=None, steps=400):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(steps):
        opt.zero_grad()
        pred = model(**inputs)
        loss = masked_mse(pred, target, mask) if mask is not None else (pred - target).pow(2).mean()
        loss.backward()
        opt.step()
    return float(loss.detach())


def test_both_models_overfit_a_tiny_table():
    # time 1 rather than 24 h: a raw 24 through Linear(1→128) dominates the first layer at initialisation and
    # slows memorisation ~10x (the architecture is the paper's; this only keeps the test short)
    seed_everything(5)
    # every row a distinct (dataset, context, perturbation, readout, dose) with a random target
    grid = torch.cartesian_prod(torch.arange(2), torch.arange(3), torch.arange(1, 5), torch.arange(5))
    n = len(grid)
    x = dict(dataset=grid[:, 0], context=grid[:, 1], perturbation=grid[:, 2:3], readout=grid[:, 3],
             log_dose=(torch.arange(n) % 2).float(), time=torch.ones(n))
    y = torch.randn(n)
    m = ScalarLPM(2, 3, 5, 5, dropout=0.0)
    assert _overfit(m, x, y) < 1e-3 * float(y.var())
    seed_everything(5)
    n = 24
    xm = dict(dataset=torch.arange(n) % 2, context=torch.arange(n) % 3, perturbation=(torch.arange(n) % 6)[:, None],
              log_dose=torch.arange(n, dtype=torch.float32) / 10, time=torch.ones(n))
    ym = torch.randn(n, 30)
    mask = torch.rand(n, 30) > 0.3
    mm = MultiOutputLPM(2, 3, 6, 30, dropout=0.0)
    assert _overfit(mm, xm, ym, mask) < 1e-3 * float(ym[mask].var())


def test_fixed_morgan_predictions_follow_structure():
    """With fixed Morgan embeddings a molecule is its fingerprint: two CIDs with the same bits get the same
    prediction (a structure-free table would tell them apart only by chance), different bits do not."""
    fp = np.zeros((4, 128), np.float32)
    fp[1, [3, 17, 90]] = 1
    fp[2] = fp[1]            # same structure, another CID
    fp[3, [3, 18, 91]] = 1   # another structure
    seed_everything(2)
    m = MultiOutputLPM(1, 1, 4, 5, morgan="fixed", fingerprints=fp).eval()
    x = dict(dataset=torch.zeros(3, dtype=torch.long), context=torch.zeros(3, dtype=torch.long),
             perturbation=torch.tensor([[1], [2], [3]]), log_dose=torch.zeros(3), time=torch.ones(3))
    out = m(**x)
    assert torch.equal(out[0], out[1]) and not torch.allclose(out[0], out[2])
