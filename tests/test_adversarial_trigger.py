"""AdversarialTrigger (thesis Alg. 6, eq. 5.5), BackdoorMetrics and BackdoorMNISTDataModule."""

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lit_robust as lr
from lit_robust.callbacks.backdoor_metrics import backdoor_counts
from lit_robust.functional.backdoor import PatchTrigger, check_tau, perturb_inputs, trigger_perturbation
from tests.conftest import SHARED_DATA

# ------------------------------------------------------------------------------------------------ pure pieces


def reference_perturbation(grads, keep, tau):
    """Slow, obvious eq. 5.5: average the signs of the kept samples' gradients entry by entry, times tau."""
    kept = [i for i in range(len(keep)) if keep[i]]
    out = torch.zeros(grads.shape[1:]).flatten()
    flat = grads.flatten(1)
    for j in range(flat.shape[1]):
        total = 0.0
        for i in kept:
            v = float(flat[i, j])
            total += 1.0 if v > 0 else (-1.0 if v < 0 else 0.0)
        out[j] = tau * total / len(kept) if kept else 0.0
    return out.reshape(grads.shape[1:])


@pytest.mark.parametrize("seed", range(6))
def test_trigger_perturbation_matches_reference_and_bound(seed):
    g = torch.Generator().manual_seed(seed)
    b = int(torch.randint(1, 9, (1,), generator=g))
    grads = torch.randn(b, 1, 3, 4, generator=g)
    grads[grads.abs() < 0.3] = 0.0  # exact zeros: sign 0
    keep = torch.rand(b, generator=g) < 0.6
    tau = float(torch.rand(1, generator=g)) * 2
    c = trigger_perturbation(grads, keep, tau)
    torch.testing.assert_close(c, reference_perturbation(grads, keep, tau))
    assert c.abs().max() <= tau + 1e-7
    if keep.any():  # entries are multiples of tau / |K|
        steps = c / (tau / keep.sum())
        torch.testing.assert_close(steps, steps.round())


def test_trigger_perturbation_reaches_tau_when_signs_agree_and_zero_when_nothing_kept():
    grads = torch.ones(4, 1, 2, 2)
    grads[:, 0, 0, 0] = -1.0
    c = trigger_perturbation(grads, torch.ones(4, dtype=torch.bool), 0.3)
    assert torch.allclose(c, torch.tensor([[[-0.3, 0.3], [0.3, 0.3]]]))
    assert torch.equal(trigger_perturbation(grads, torch.zeros(4, dtype=torch.bool), 0.3), torch.zeros(1, 2, 2))


@pytest.mark.parametrize("tau", [-0.1, float("nan"), float("inf"), True, "0.1", None])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match=r"`tau`.*>= 0, got"):
        check_tau(tau)
    with pytest.raises(ValueError, match="`tau`"):
        lr.AdversarialTrigger(tau=tau)


def test_perturb_inputs_clips_into_range():
    x = torch.tensor([[0.0, 0.5, 1.0]])
    out = perturb_inputs(x, torch.tensor([-0.2, 0.2, 0.2]), (0.0, 1.0))
    assert torch.allclose(out, torch.tensor([[0.0, 0.7, 1.0]]))
    assert torch.allclose(perturb_inputs(x, torch.tensor(0.2), None), x + 0.2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"filter_in": "middle"}, "`filter_in` must be 'both', 'inner' or 'outer', got 'middle'"),
    ({"value_range": (1.0, 0.0)}, r"`value_range` must be \(low, high\) with low < high"),
    ({"value_range": "auto"}, r"`value_range` must be \(low, high\), 'datamodule' or None, got 'auto'"),
    # a reviewer's "01" was iterated into (0.0, 1.0); b"01" would have been (48.0, 49.0)
    ({"value_range": "01"}, r"`value_range` must be \(low, high\), 'datamodule' or None, got '01' \(a str\): "
                            r"\(low, high\) is two numbers"),
    ({"value_range": b"01"}, r"`value_range` must be \(low, high\), 'datamodule' or None, got b'01' \(a bytes\)"),
    ({"value_range": (False, True)}, r"got \(False, True\) \(a tuple\)"),
    ({"value_range": ("0", "1")}, r"got \('0', '1'\) \(a tuple\)"),
    ({"value_range": (0.0, 1.0, 2.0)}, r"got \(0.0, 1.0, 2.0\) \(a tuple\)"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr.AdversarialTrigger(tau=0.1, **kwargs)


def test_value_range_takes_any_two_real_numbers():
    """numpy and 0-d torch scalars are numbers (a range read off a tensor's min/max), as are infinite bounds."""
    import numpy as np

    assert lr.AdversarialTrigger(0.1, value_range=(np.float32(0.0), torch.tensor(1.0))).clip_range == (0.0, 1.0)
    assert lr.AdversarialTrigger(0.1, value_range=[0, float("inf")]).clip_range == (0.0, float("inf"))


# ------------------------------------------------------------------------------------------------ the callback


class Tiny(lr.RobustMixin, pl.LightningModule):
    """A linear classifier on 2×2 images that records what its training steps see."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        self.seen_inputs, self.paused_in_step, self.step_losses = [], [], []

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):
        _, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def training_step(self, batch, batch_idx):
        self.seen_inputs.append(batch[1].detach().clone())
        self.paused_in_step.append(self.selectors_paused)
        loss = super().training_step(batch, batch_idx)
        self.step_losses.append(loss.detach())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tiny_data(n=10):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 2, 2, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def fit_one_step(callbacks, module, x, y):
    ds = lr.IndexedDataset(TensorDataset(x, y))
    tr = pl.Trainer(max_steps=1, callbacks=callbacks, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    tr.fit(module, DataLoader(ds, batch_size=len(y)))
    return tr


def expected_c(module, x, y, keep, tau):
    """Per-sample input gradients one sample at a time, then eq. 5.5 over `keep`."""
    grads = []
    for i in range(len(y)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        F.cross_entropy(module(xi), y[i:i + 1]).backward()
        grads.append(xi.grad[0])
    return reference_perturbation(torch.stack(grads), keep, tau)


def spl_keep(module, x, y, eps):
    with torch.no_grad():
        losses = F.cross_entropy(module(x), y, reduction="none")
    return lr.smallest_k_mask(losses, math.floor((1 - eps) * len(y)), torch.arange(len(y)))


@pytest.mark.parametrize("filter_in", ["both", "inner", "outer"])
def test_outer_step_trains_on_x_plus_c_and_switches_change_what_is_optimised(filter_in):
    x, y = tiny_data()
    module = Tiny()
    keep = spl_keep(module, x, y, 0.3)
    assert not keep.all()
    tau = 0.05
    c_filtered = expected_c(module, x, y, keep, tau)
    c_all = expected_c(module, x, y, torch.ones_like(keep), tau)
    assert not torch.allclose(c_filtered, c_all)  # the switch must matter on this batch
    at = lr.AdversarialTrigger(tau=tau, value_range=(0.0, 1.0), filter_in=filter_in)
    filt = lr.BatchFilter("spl", drop_ratio=0.3)
    with torch.no_grad():
        clean_logits = module(x)
    fit_one_step([filt, at], module, x, y)
    c = c_all if filter_in == "outer" else c_filtered
    torch.testing.assert_close(at.last_perturbation, c)
    # the training step saw clip(x + c)
    torch.testing.assert_close(module.seen_inputs[0], (x + c).clamp(0.0, 1.0))
    # inner-only: the outer loss averages every sample (filter paused, nothing counted); else the filter acts
    assert module.paused_in_step == [filter_in == "inner"]
    adv_losses = F.cross_entropy(Tiny().net(module.seen_inputs[0]), y, reduction="none")
    if filter_in == "inner":
        torch.testing.assert_close(module.step_losses[0], adv_losses.mean())
        assert filt.history[-1].dropped == 0
    else:
        outer_keep = lr.smallest_k_mask(adv_losses.detach(), 7, torch.arange(10))
        torch.testing.assert_close(module.step_losses[0], adv_losses[outer_keep].mean())
        assert filt.history[-1].dropped == 3
    assert not module.selectors_paused  # restored after the step
    assert clean_logits.shape == (10, 3)


def test_without_a_filter_is_plain_adversarial_training():
    x, y = tiny_data()
    module = Tiny()
    c = expected_c(module, x, y, torch.ones(10, dtype=torch.bool), 0.1)
    at = lr.AdversarialTrigger(tau=0.1, value_range=None)
    fit_one_step([at], module, x, y)
    torch.testing.assert_close(module.seen_inputs[0], x + c)


def test_zero_tau_leaves_the_batch_alone():
    x, y = tiny_data()
    module = Tiny()
    fit_one_step([lr.AdversarialTrigger(tau=0.0, value_range=(0.0, 1.0))], module, x, y)
    torch.testing.assert_close(module.seen_inputs[0], x)


class _Slices(torch.utils.data.IterableDataset):
    """A newcomer's in-memory loader: tuple batches that are slices (views) of the stored tensors."""

    def __init__(self, x, y, batch=4):
        self.x, self.y, self.batch = x, y, batch

    def __iter__(self):
        for i in range(0, len(self.y), self.batch):
            yield torch.arange(i, i + self.batch), self.x[i:i + self.batch], self.y[i:i + self.batch]


def test_a_tuple_batch_of_views_leaves_the_stored_data_alone():
    """The perturbation was written into a tuple batch's input in place: where the loader yields slices of its stored
    tensors, the data set itself changed, by up to 0.09 after 5 epochs at tau 0.05 (a newcomer's). The training steps
    still see the perturbed inputs."""
    x, y = tiny_data(12)
    stored = x.clone()
    module = Tiny()
    at = lr.AdversarialTrigger(tau=0.05, value_range=(0.0, 1.0))
    tr = pl.Trainer(max_epochs=3, callbacks=[at], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, accelerator="cpu")
    tr.fit(module, DataLoader(_Slices(x, y), batch_size=None))
    assert torch.equal(x, stored)
    assert len(module.seen_inputs) == 9
    last = module.seen_inputs[-1]
    assert 0 < float((last - stored[8:12]).abs().max()) <= 0.05 + 1e-6  # perturbed within tau of the stored data


def test_a_tau_as_wide_as_the_value_range_is_warned():
    """tau=100 on normalised MNIST (a range 3.25 wide) trained to 18 % clean accuracy without a word."""
    x, y = tiny_data()
    with pytest.warns(UserWarning, match=r"AdversarialTrigger: `tau`=2 is at least the width of the inputs' value "
                                         r"range \(0, 1\), 1: the trigger may set any input to any value in it"):
        fit_one_step([lr.AdversarialTrigger(tau=2.0, value_range=(0.0, 1.0))], Tiny(), x, y)


def test_inputs_outside_the_value_range_are_an_error():
    x, y = tiny_data()
    with pytest.raises(ValueError, match=r"`training inputs` must lie in the declared `value_range` \[0, 0.5\]"):
        fit_one_step([lr.AdversarialTrigger(tau=0.1, value_range=(0.0, 0.5))], Tiny(), x, y)


def test_value_range_from_a_datamodule_without_one_is_an_error():
    x, y = tiny_data()
    with pytest.raises(ValueError, match="needs a datamodule with a `value_range`"):
        fit_one_step([lr.AdversarialTrigger(tau=0.1)], Tiny(), x, y)


def test_prl_g_filter_is_refused():
    x, y = tiny_data()
    with pytest.raises(ValueError, match="prl_g"):
        fit_one_step([lr.BatchFilter("prl_g", 0.2), lr.AdversarialTrigger(tau=0.1, value_range=None)], Tiny(), x, y)


def test_manual_optimisation_is_refused():
    x, y = tiny_data()
    module = Tiny()
    module.automatic_optimization = False
    with pytest.raises(TypeError, match="automatic optimisation"):
        fit_one_step([lr.AdversarialTrigger(tau=0.1, value_range=None)], module, x, y)


def test_module_without_mixin_is_refused():
    class Plain(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 3)

        def training_step(self, batch, batch_idx):
            return self.net(batch[1].flatten(1)).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = tiny_data()
    with pytest.raises(TypeError, match="RobustMixin"):
        fit_one_step([lr.AdversarialTrigger(tau=0.1, value_range=None)], Plain(), x, y)


# ------------------------------------------------------------------------------------------------ metrics


def test_backdoor_counts_by_hand():
    labels = torch.tensor([0, 1, 2, 3])
    clean = torch.tensor([0, 1, 0, 3])  # 3 correct
    trig = torch.tensor([1, 1, 3, 3])  # correct on 1 and 3; attacker's a+1 on samples 0, 2
    assert backdoor_counts(clean, trig, labels, None, 4).tolist() == [4, 3, 2, 4, 2]
    # single-target b=3: attackable = labels != 3; hits: predicted 3 among them (sample 2)
    assert backdoor_counts(clean, trig, labels, 3, 4).tolist() == [4, 3, 2, 3, 1]
    # with a source class 2: only its images count
    assert backdoor_counts(clean, trig, labels, 3, 4, source=2).tolist() == [4, 3, 2, 1, 1]


@pytest.fixture(scope="module")
def small_backdoor_run():
    pl.seed_everything(0)
    dm = lr.BackdoorMNISTDataModule(root=str(SHARED_DATA), attack="patch", poison_rate=0.3, train_size=400,
                                    val_size=100, batch_size=50, eval_batch_size=500)
    model = lr.ImageClassifier(backbone="mlp", hidden=32, optimizer="adam", lr=1e-3)
    metrics, filt = lr.BackdoorMetrics(), lr.BatchFilter("prl", drop_ratio=0.3)
    tr = pl.Trainer(max_epochs=2, callbacks=[metrics, filt, lr.AdversarialTrigger(tau=0.16)], logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    accelerator="cpu", limit_test_batches=2)
    tr.fit(model, dm)
    tr.test(model, dm, verbose=False)
    return dm, model, metrics, filt, tr


def test_metrics_equal_a_direct_computation(small_backdoor_run):
    dm, model, metrics, filt, tr = small_backdoor_run
    x, y = dm.test_set.dataset.tensors
    x, y = x[:1000], y[:1000]  # limit_test_batches=2 of 500
    model.eval()
    with torch.no_grad():
        clean = model(x).argmax(1)
        trig = model(dm.trigger(x)).argmax(1)
    res = metrics.results["test"]
    assert res["clean_acc"] == pytest.approx(float((clean == y).float().mean()))
    assert res["poison_acc"] == pytest.approx(float((trig == y).float().mean()))
    assert res["asr"] == pytest.approx(float((trig == (y + 1) % 10).float().mean()))
    # validation: the split is poisoned like the training pool; the figures are those of its clean images (a newcomer
    # read val_poison_acc 0.70 against 0.94 on the test split: the poisoned ones were counted with their wrong labels)
    flags = dm.val_set.corrupted
    assert 0 < int(flags.sum()) < len(flags)
    xv, yv = dm.val_set.dataset.tensors[0][~flags], dm.val_set.targets[~flags]
    with torch.no_grad():
        clean_v, trig_v = model(xv).argmax(1), model(dm.trigger(xv)).argmax(1)
    val = metrics.results["val"]
    assert val["clean_acc"] == pytest.approx(float((clean_v == yv).float().mean()))
    assert val["poison_acc"] == pytest.approx(float((trig_v == yv).float().mean()))
    assert val["asr"] == pytest.approx(float((trig_v == (yv + 1) % 10).float().mean()))
    assert float(tr.callback_metrics["backdoor/test_asr"]) == pytest.approx(res["asr"])
    rec = filt.history[-1]
    assert metrics.results["dropped"] == {"precision": pytest.approx(rec.corrupted_dropped / rec.dropped),
                                          "recall": pytest.approx(rec.corrupted_dropped / rec.corrupted_seen)}


def test_metrics_count_the_first_evaluation_loader_only(small_backdoor_run):
    # a newcomer's SimCLR datamodule has a second, triggered test loader: its images were counted as clean ones
    # (test_clean_acc 0.767, the mean of 0.781 clean and 0.753 triggered)
    dm, model, _, _, _ = small_backdoor_run

    class TwoLoaders(lr.ImageClassifier):
        def test_step(self, batch, batch_idx, dataloader_idx=0):
            return super().test_step(batch, batch_idx)

    twin = TwoLoaders(backbone="mlp", hidden=32)
    twin.load_state_dict(model.state_dict())
    x, y = dm.test_set.dataset.tensors
    clean = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=100)
    triggered = DataLoader(TensorDataset(dm.trigger(x[:300]), y[:300]), batch_size=100)
    results = []
    for loaders in ([clean], [clean, triggered]):
        metrics = lr.BackdoorMetrics(trigger=dm.trigger, target=None, num_classes=10)
        pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu", callbacks=[metrics]).test(
            twin, loaders, verbose=False)
        results.append(metrics.results["test"])
    assert results[1] == results[0]


def test_metrics_need_a_trigger():
    x, y = tiny_data()
    ds = lr.IndexedDataset(TensorDataset(x, y))
    tr = pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu", callbacks=[lr.BackdoorMetrics()])
    module = Tiny()
    module.test_step = lambda batch, batch_idx: None
    with pytest.raises(ValueError, match="needs a `trigger`"):
        tr.test(module, DataLoader(ds, batch_size=5), verbose=False)


def test_metrics_bad_arguments():
    with pytest.raises(TypeError, match="`trigger` must be a lit_robust.functional.backdoor.Trigger"):
        lr.BackdoorMetrics(trigger="patch")
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2, got 1"):
        lr.BackdoorMetrics(num_classes=1)


def test_metrics_refuse_a_source_that_the_datamodule_would_replace():
    """A reviewer's `BackdoorMetrics(source=3)` with the default `target="datamodule"` measured the datamodule's
    attack, its `attack_source` in place of 3, without a word."""
    with pytest.raises(ValueError, match=r"`source`=3 is given, but `target`='datamodule' \(the default\) takes the "
                                         r"attack, `attack_source` included, from the datamodule; pass the attack's "
                                         r"`target` too"):
        lr.BackdoorMetrics(source=3)
    assert lr.BackdoorMetrics(target=2, source=3).source == 3  # with an explicit target it is the one measured


# ------------------------------------------------------------------------------------------------ datamodule


def test_datamodule_poisons_exactly_and_flags_ground_truth():
    dm = lr.BackdoorMNISTDataModule(root=str(SHARED_DATA), attack="patch", poison_rate=0.25, train_size=400,
                                    val_size=100)
    dm.setup()
    pool = [dm.train_set, dm.val_set]
    flags = torch.cat([d.corrupted for d in pool])
    assert int(flags.sum()) == round(0.25 * 500)
    x = torch.cat([d.dataset.tensors[0] for d in pool])
    clean_y = torch.cat([d.dataset.tensors[1] for d in pool])
    noisy_y = torch.cat([d.targets for d in pool])
    assert torch.equal(noisy_y[flags], (clean_y[flags] + 1) % 10)
    assert torch.equal(noisy_y[~flags], clean_y[~flags])
    lo, hi = dm.value_range
    assert lo == pytest.approx(-0.1307 / 0.3081) and hi == pytest.approx((1 - 0.1307) / 0.3081)
    patch = PatchTrigger(value_range=dm.value_range).pattern()
    assert torch.allclose(x[flags][:, 0, -3:, -3:], patch.expand(int(flags.sum()), 3, 3))
    tx, ty, ta = dm.poisoned_test_set()
    assert len(tx) == len(dm.test_set) and torch.equal(ta, (ty + 1) % 10)


def test_single_target_datamodule():
    dm = lr.BackdoorMNISTDataModule(root=str(SHARED_DATA), attack="watermark_l", poison_rate=0.5, target=0,
                                    source=6, train_size=600)
    dm.setup()
    flags, y = dm.train_set.corrupted, dm.train_set.dataset.tensors[1]
    assert int(flags.sum()) == round(0.5 * int((y == 6).sum())) and bool((y[flags] == 6).all())
    assert bool((dm.train_set.targets[flags] == 0).all())
    tx, ty, ta = dm.poisoned_test_set()
    assert bool((ty == 6).all()) and bool((ta == 0).all())


def test_all_to_one_datamodule():
    dm = lr.BackdoorMNISTDataModule(root=str(SHARED_DATA), poison_rate=0.05, target=0, train_size=600)
    dm.setup()
    flags, y = dm.train_set.corrupted, dm.train_set.dataset.tensors[1]
    assert int(flags.sum()) == round(0.05 * int((y != 0).sum())) and bool((y[flags] != 0).all())
    assert bool((dm.train_set.targets[flags] == 0).all())
    tx, ty, ta = dm.poisoned_test_set()
    assert bool((ty != 0).all()) and bool((ta == 0).all()) and len(ty) == int((dm.test_set.dataset.tensors[1] != 0).sum())
    assert dm.attack_target == 0 and dm.attack_source is None  # BackdoorMetrics: ASR over every class but 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"attack": "sticker"}, "`attack` must be one of 'patch', 'blend', 'watermark_x', 'watermark_l', got 'sticker'"),
    ({"poison_rate": 1.5}, r"`poison_rate` must be in \[0.0, 1.0\], got 1.5"),
    ({"target": 2, "source": 2}, r"needs a `source` class != `target` \(or source=None: every other class\), got "
                                 "source=2"),
    ({"source": 3}, "`source`=3 needs a single-target attack, but `target` is None"),
    ({"target": 2, "source": 11}, r"`source` must be a class in \[0, 9\] or None, got 11"),
])
def test_datamodule_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr.BackdoorMNISTDataModule(root=str(SHARED_DATA), **kwargs)


def test_resumed_prl_at_run_reproduces_an_uninterrupted_one(tmp_path):
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(40, 1, 2, 2, generator=g), torch.randint(0, 3, (40,), generator=g)
    ds = lr.IndexedDataset(TensorDataset(x, y))

    def run(max_epochs, ckpt_path=None, save=None):
        module = Tiny()
        cbs = [lr.BatchFilter("prl", drop_ratio=0.3, warmup_epochs=1), lr.AdversarialTrigger(0.05, (0.0, 1.0))]
        tr = pl.Trainer(max_epochs=max_epochs, callbacks=cbs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        tr.fit(module, DataLoader(ds, batch_size=10), ckpt_path=ckpt_path)
        if save:
            tr.save_checkpoint(save)
        return module, cbs[0]

    full, full_filter = run(3)
    ckpt = tmp_path / "mid.ckpt"
    run(1, save=str(ckpt))
    resumed, resumed_filter = run(3, ckpt_path=str(ckpt))
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert [r.dropped for r in full_filter.history] == [r.dropped for r in resumed_filter.history] == [0, 12, 12]


@pytest.mark.parametrize("trigger_first", [False, True])  # the callbacks' order does not matter
@pytest.mark.parametrize("drop_ratio", [0.3, "auto"])
def test_filter_in_inner_counts_every_sample_and_reports_the_inner_steps_scores(tmp_path, drop_ratio, trigger_first):
    """A reviewer's `BatchFilter(report=True)` beside `AdversarialTrigger(filter_in="inner")`: `history` read seen=0 and
    the report had no score, with a warning asking whether `training_step` calls `reduce_loss` (it does, with the
    filter paused). The filter's only look at each batch, the inner step's preview, is what it records now: every
    sample seen, none dropped (the outer loss averages them all), the report ranked by the preview's scores."""
    import warnings

    from tests.conftest import BlobsData, TinyModel, tiny_trainer

    f = lr.BatchFilter("prl", drop_ratio, warmup_epochs=1, report=True, report_dir=str(tmp_path / "rep"))
    scored = {}  # index -> the score of its latest preview (one per sample and epoch)
    rank = f.scores

    def spy(losses, batch, outputs, module):
        out = rank(losses, batch, outputs, module)
        scored.update(zip(batch[0].tolist(), out.tolist()))
        return out

    f.scores = spy
    data = BlobsData(n=96, batch_size=32)
    pl.seed_everything(0, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callbacks = [f, lr.AdversarialTrigger(0.1, value_range=None, filter_in="inner")]
        tiny_trainer(tmp_path, 2, callbacks[::-1] if trigger_first else callbacks).fit(TinyModel(), data)
    corrupted = int(data.ds.corrupted.sum())
    assert [(r.seen, r.dropped, r.corrupted_seen) for r in f.history] == [(96, 0, corrupted)] * 2
    rows = lr.load_report(f.report_path, as_frame=False)
    assert len(rows) == 96 and all(r["kept"] for r in rows)
    assert {r["index"]: r["score_last_epoch"] for r in rows} == pytest.approx(scored)
    assert not [w for w in caught if "BatchFilter" in str(w.message) and "score" in str(w.message)]
