"""BatchFilter(refit_kept=True): PRL's second forward over the kept samples, the only one BatchNorm learns from."""

import copy

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lit_robust as lr


class BNNet(lr.RobustMixin, pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):
        _, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) * 2 + 1
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def one_step(callbacks, module, x, y, adversarial=False):
    ds = lr.IndexedDataset(TensorDataset(x, y))
    if adversarial:
        callbacks = callbacks + [lr.AdversarialTrigger(0.1, value_range=None)]
    tr = pl.Trainer(max_steps=1, callbacks=callbacks, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    tr.fit(module, DataLoader(ds, batch_size=len(y)))


def reference_step(module, x, y, eps):
    """Slow and obvious: rank with a training-mode forward that leaves BatchNorm's running statistics alone, keep
    the floor((1-eps) B) smallest losses (ties by index), then one SGD step on a forward over the kept rows alone."""
    ref = copy.deepcopy(module)
    ref.train()
    bn = ref.net[1]
    saved = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    with torch.no_grad():
        losses = F.cross_entropy(ref(x), y, reduction="none")
    for buffer, value in zip((bn.running_mean, bn.running_var, bn.num_batches_tracked), saved):
        buffer.copy_(value)
    k = int((1 - eps) * len(y))
    order = sorted(range(len(y)), key=lambda i: (float(losses[i]), i))
    kept = sorted(order[:k])
    loss = F.cross_entropy(ref(x[kept]), y[kept])
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.5 * p.grad
    return ref, kept


@pytest.mark.parametrize("adversarial", [False, True], ids=["plain", "with-AdversarialTrigger"])
def test_running_stats_are_those_of_the_kept_samples_alone(adversarial):
    x, y = data()
    module = BNNet()
    expected, kept = reference_step(module, x, y, 0.25) if not adversarial else (None, None)
    f = lr.BatchFilter("spl", drop_ratio=0.25, refit_kept=True)
    if adversarial:  # the inner step's training-mode forward must not reach the running statistics either
        start = copy.deepcopy(module)
        one_step([f], module, x, y, adversarial=True)
        perturbed = x + torch.stack([module_trigger_c(start, x, y)] * len(y))  # recompute c as the callback did
        expected, kept = reference_step(start, perturbed, y, 0.25)
    else:
        one_step([f], module, x, y)
    assert len(kept) == 12 and f.history[0].dropped == 4
    bn, ref_bn = module.net[1], expected.net[1]
    assert torch.allclose(bn.running_mean, ref_bn.running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, ref_bn.running_var, atol=1e-6)
    assert int(bn.num_batches_tracked) == int(ref_bn.num_batches_tracked) == 1
    for p, q in zip(module.parameters(), expected.parameters()):  # the gradient came from the kept-only forward
        assert torch.allclose(p, q, atol=1e-6)
    assert bn.track_running_stats  # handed back after the fit


def module_trigger_c(module, x, y):
    """AdversarialTrigger's c (eq. 5.5) with the filter's kept samples, computed from a copy of the start model."""
    m = copy.deepcopy(module).train()
    for layer in m.modules():
        if isinstance(layer, nn.BatchNorm1d):
            layer.track_running_stats = False
    xv = x.clone().requires_grad_(True)
    losses = F.cross_entropy(m(xv), y, reduction="none")
    k = int(0.75 * len(y))
    order = sorted(range(len(y)), key=lambda i: (float(losses[i]), i))
    keep = torch.zeros(len(y), dtype=torch.bool)
    keep[order[:k]] = True
    g, = torch.autograd.grad(losses[keep].sum(), xv)
    return 0.1 * torch.sign(g[keep]).sum(0) / k


def test_without_the_option_the_dropped_samples_reach_the_running_stats():
    x, y = data()
    module = BNNet()
    expected, _ = reference_step(module, x, y, 0.25)
    one_step([lr.BatchFilter("spl", drop_ratio=0.25)], module, x, y)
    assert not torch.allclose(module.net[1].running_mean, expected.net[1].running_mean, atol=1e-4)


def test_warmup_epoch_refits_the_whole_batch():
    x, y = data()
    module, twin = BNNet(), BNNet()
    one_step([lr.BatchFilter("spl", drop_ratio=0.25, warmup_epochs=2, refit_kept=True)], module, x, y)
    one_step([], twin, x, y)  # nothing dropped: the same as a plain step (one running-stats update)
    assert int(module.net[1].num_batches_tracked) == 1
    assert torch.allclose(module.net[1].running_mean, twin.net[1].running_mean, atol=1e-6)


def test_refit_kept_checks():
    with pytest.raises(ValueError, match="`refit_kept` must be True or False, got 'yes'"):
        lr.BatchFilter("prl", 0.2, refit_kept="yes")
    with pytest.raises(ValueError, match=r"`refit_kept=True` needs a loss-layer rule \('prl' or 'spl'\), got "
                                         r"rule='prl_g'"):
        lr.BatchFilter("prl_g", 0.2, refit_kept=True)


def test_without_batchnorm_it_is_skipped_with_a_warning():
    class Plain(BNNet):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 3))

    x, y = data()
    with pytest.warns(UserWarning, match="has no BatchNorm layer"):
        one_step([lr.BatchFilter("spl", drop_ratio=0.25, refit_kept=True)], Plain(), x, y)
