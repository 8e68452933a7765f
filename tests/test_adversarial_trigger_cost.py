"""AdversarialTrigger's inner backward (issue 17, item 3): `input_gradient` against `torch.autograd.grad`, and
the callback's perturbations and training against the implementation it replaced, kept here as the reference."""

from contextlib import contextmanager

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lit_robust as lr
from lit_robust.callbacks import adversarial_trigger as at
from lit_robust.callbacks.adversarial_trigger import _few_channel_cpu_convolutions, input_gradient
from lit_robust.data.indexed import unpack_batch
from lit_robust.functional.backdoor import perturbation_from_sign_sum, sign_sum


@contextmanager
def onednn_off():
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = True


needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def autograd_input_grad(model, x):
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(model(x).square().sum(), x)[0]


def graph(model, x):
    x = x.detach().clone().requires_grad_(True)
    return model(x).square().sum(), x


def close_to_float_rounding(new, ref):
    """The two kernels sum the same products in different orders: equal to a few float32 ulps of the scale."""
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


# ------------------------------------------------------------------------------------------------ input_gradient
@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_input_gradient_of_few_channel_conv_models_matches_autograd(in_channels):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(in_channels, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 5))
    x = torch.randn(7, in_channels, 12, 12)
    total, x_var = graph(model, x)
    assert len(_few_channel_cpu_convolutions(total.grad_fn)) == 1  # the first layer only
    close_to_float_rounding(input_gradient(total, x_var), autograd_input_grad(model, x))
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient computed or accumulated


@needs_onednn
def test_few_channel_layers_run_the_native_kernel_and_the_flag_is_restored():
    """A one-conv model: the routed gradient is bit for bit the conv node's backward run by PyTorch's native kernel,
    on the same forward (oneDNN's) and the same gradient from the layers above, and oneDNN is on again afterwards.
    (Switching oneDNN off for a whole second pass is no reference: on an AMD EPYC host its forward convolution
    already differs from oneDNN's in the last bits, 5e-8 in the input gradient.)"""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.Flatten(), nn.Linear(16 * 10 * 10, 3))
    x = torch.randn(6, 1, 10, 10)
    total, x_var = graph(model, x)
    got = input_gradient(total, x_var)
    assert torch.backends.mkldnn.enabled
    x_ref = x.detach().clone().requires_grad_(True)
    conv_out = model[0](x_ref)
    from_above = torch.autograd.grad(model[2](model[1](conv_out)).square().sum(), conv_out, retain_graph=True)[0]
    with onednn_off():
        native = torch.autograd.grad(conv_out, x_ref, from_above)[0]
    assert torch.equal(got, native)
    close_to_float_rounding(got, autograd_input_grad(model, x))


def test_other_models_run_plain_autograd_bit_for_bit():
    torch.manual_seed(2)
    models = {
        "mlp": (nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)), (5, 1, 8, 8)),
        "16 input channels": (nn.Sequential(nn.Conv2d(16, 8, 3), nn.Flatten(), nn.Linear(8 * 36, 4)), (5, 16, 8, 8)),
        "8 input channels": (nn.Sequential(nn.Conv2d(8, 8, 3), nn.Flatten()), (5, 8, 8, 8)),
        "transposed": (nn.Sequential(nn.ConvTranspose2d(1, 4, 3), nn.Flatten()), (5, 1, 8, 8)),
        "float64": (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()).double(), (5, 1, 8, 8)),
    }
    for name, (model, shape) in models.items():
        x = torch.randn(shape, dtype=next(model.parameters()).dtype)
        total, x_var = graph(model, x)
        assert _few_channel_cpu_convolutions(total.grad_fn) == [], name
        assert torch.equal(input_gradient(total, x_var), autograd_input_grad(model, x)), name


def test_grouped_conv_counts_channels_per_group():
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.Conv2d(3, 12, 3, groups=3), nn.Conv2d(12, 12, 3, groups=2))
    total, _ = graph(model, torch.randn(2, 3, 9, 9))
    routed = {tuple(n._saved_weight.shape) for n in _few_channel_cpu_convolutions(total.grad_fn)}
    assert routed == {(3, 3, 3, 3), (12, 1, 3, 3)}  # 3 and 1 input channel per group; not the 6 per group


def test_a_shared_subgraph_is_visited_once():
    conv = nn.Conv2d(1, 4, 3)
    x = torch.randn(2, 1, 6, 6, requires_grad=True)

    def total():
        h = conv(x)
        return (h + h * 2 + h.relu()).sum()  # three paths into one conv node

    assert len(_few_channel_cpu_convolutions(total().grad_fn)) == 1
    close_to_float_rounding(input_gradient(total(), x), torch.autograd.grad(total(), x)[0])


@needs_onednn
def test_flag_restored_when_the_backward_fails():
    conv = nn.Conv2d(1, 4, 3)
    x = torch.randn(2, 1, 6, 6, requires_grad=True)
    h = conv(x)
    h.register_hook(lambda g: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        input_gradient(h.sum(), x)
    assert torch.backends.mkldnn.enabled


@needs_onednn
def test_with_onednn_switched_off_by_the_user_nothing_is_switched():
    conv = nn.Conv2d(1, 4, 3)
    x = torch.randn(2, 1, 6, 6)
    with onednn_off():
        total, x_var = graph(conv, x)
        got = input_gradient(total, x_var)
        assert not torch.backends.mkldnn.enabled
        assert torch.equal(got, autograd_input_grad(conv, x))


# ------------------------------------------------------------------------------------------------ the callback
class BeforeTrigger(lr.AdversarialTrigger):
    """The inner step as it was before issue 17 (plain `torch.autograd.grad`), recording its gradients and K."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def perturbation(self, module, batch):
        x = unpack_batch(batch).input
        with torch.enable_grad():
            x_var = x.detach().clone().requires_grad_(True)
            probe = list(batch)
            probe[1] = x_var
            losses, outputs = module.per_sample_loss(probe)
            keep = module.batch_keep_mask(losses.detach(), probe, outputs.detach(), record=False)
            (grads,) = torch.autograd.grad(losses[keep].sum(), x_var)
        signs, count = sign_sum(grads, keep)
        c = perturbation_from_sign_sum(signs, count, self.tau)
        self.records.append((grads, keep, c))
        return c


class RecordingTrigger(lr.AdversarialTrigger):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cs = []

    def perturbation(self, module, batch):
        c = super().perturbation(module, batch)
        self.cs.append(c)
        return c


def assert_same_perturbation(c_new, grads_ref, keep_ref, c_ref, tol):
    """``c`` may differ only in entries where a kept sample's reference gradient is within float rounding of 0
    (its sign is not determined by float32); everywhere else it must be equal."""
    ambiguous = (grads_ref[keep_ref].abs() <= tol).any(0)
    differ = c_new != c_ref
    assert not (differ & ~ambiguous).any()


def digits_loaders(n=120, batch_size=60):
    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(d.target[:n])
    return DataLoader(lr.IndexedDataset(TensorDataset(x, y)), batch_size=batch_size, shuffle=False)


def fit(trigger, epochs=2):
    pl.seed_everything(0, verbose=False)
    model = lr.ImageClassifier(backbone="cnn2", image_size=8, lr=0.1, momentum=0.0)
    tr = pl.Trainer(max_epochs=epochs, callbacks=[lr.BatchFilter("prl", drop_ratio=0.25), trigger], logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    accelerator="cpu")
    tr.fit(model, digits_loaders())
    return model


def test_prl_at_training_equals_the_implementation_it_replaced():
    """cnn2 (a 1-channel first conv, so the native kernel runs), PRL filter, 2 epochs x 2 batches of digits."""
    before, now = BeforeTrigger(tau=0.2, value_range=(0.0, 1.0)), RecordingTrigger(tau=0.2, value_range=(0.0, 1.0))
    m_before, m_now = fit(before), fit(now)
    assert len(before.records) == len(now.cs) == 4
    for c_new, (grads, keep, c_ref) in zip(now.cs, before.records):
        assert float(c_ref.abs().max()) > 0
        assert_same_perturbation(c_new, grads, keep, c_ref, tol=1e-6 * float(grads.abs().max()))
    for p_new, p_ref in zip(m_now.parameters(), m_before.parameters()):
        torch.testing.assert_close(p_new, p_ref, rtol=1e-4, atol=1e-6)


def test_trigger_perturbation_on_an_mnist_batch_equals_before(shared_data):
    """The benchmark's setting: cnn2 on 100 MNIST digits, PRL keeping 70 %; input gradients to float rounding."""
    dm = lr.MNISTDataModule(root=str(shared_data), clean_ratio=0.7, noise="random", train_size=200, val_size=0,
                            batch_size=100, seed=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    pl.seed_everything(0, verbose=False)
    module = lr.ImageClassifier(backbone="cnn2")
    module.train()
    filt = lr.BatchFilter("prl", drop_ratio=0.3)
    stub = type("T", (), {"training": True, "current_epoch": 1, "datamodule": None})()
    before, now = BeforeTrigger(tau=0.16, value_range=None), lr.AdversarialTrigger(tau=0.16, value_range=None)
    for cb in (filt, before, now):
        cb.setup(stub, module, "fit")
    try:
        c_ref = before.perturbation(module, list(batch))
        c_new = now.perturbation(module, list(batch))
        grads, keep, _ = before.records[0]
        assert int(keep.sum()) == 70
        assert_same_perturbation(c_new, grads, keep, c_ref, tol=1e-6 * float(grads.abs().max()))
        x_var = unpack_batch(batch).input.clone().requires_grad_(True)
        losses, _ = module.per_sample_loss([batch[0], x_var, batch[2]])
        close_to_float_rounding(input_gradient(losses[keep].sum(), x_var), grads)
    finally:
        filt.teardown(stub, module, "fit")


def test_input_gradient_is_what_the_callback_calls(monkeypatch):
    """The callback's inner backward goes through `input_gradient` (what the tests above pin)."""
    calls = []
    monkeypatch.setattr(at, "input_gradient", lambda total, x: calls.append(1) or torch.autograd.grad(total, x)[0])
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    class M(lr.RobustMixin, pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model

        def per_sample_loss(self, batch):
            logits = self.net(batch[1])
            return F.cross_entropy(logits, batch[2], reduction="none"), logits

    batch = [torch.arange(3), torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 2])]
    lr.AdversarialTrigger(tau=0.1, value_range=None).perturbation(M(), batch)
    assert calls == [1]

