import dataclasses
import re
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lit_robust import BatchFilter, FilterEpochRecord
from lit_robust.selection.rules import keep_count, smallest_k_mask
from tests.conftest import BlobsData, TinyModel, blobs, tiny_trainer
from tests.test_scores import ce, ref_grad_norms, ref_loss_layer_norms


class SpyFilter(BatchFilter):
    """Records, per training step, the parameters the step's forward used, the batch and the filter's counted mask
    (counted before the backward, or at its end for PRL(G)'s book-keeping)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = []
        self._step = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        params = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        self._step = dict(params=params, batch=[t.clone() for t in batch], epoch=trainer.current_epoch)

    def _count(self, mask, corrupted, counted=None, labels=None):
        super()._count(mask, corrupted, counted, labels)
        self.steps.append(dict(self._step, mask=mask.clone()))


def reference_scores(rule, net, batch):
    """Scores computed independently of lit_robust.functional.scores, one sample at a time."""
    index, x, y = batch[:3]
    if rule == "spl":
        return F.cross_entropy(net(x), y, reduction="none")
    if rule == "prl":
        return ref_loss_layer_norms(net(x), y, ce)
    return ref_grad_norms(net, x, y, ce)


def fit(tmp_path, callbacks, max_epochs=2, data=None, seed=0, model=None, ckpt_path=None):
    pl.seed_everything(seed, verbose=False)
    model = model or TinyModel()
    trainer = tiny_trainer(tmp_path, max_epochs, callbacks)
    trainer.fit(model, data or BlobsData(n=96, batch_size=16), ckpt_path=ckpt_path)
    return model, trainer


@pytest.mark.parametrize("rule, backend", [("prl", "auto"), ("spl", "auto"), ("prl_g", "bookkeeping"),
                                           ("prl_g", "two_pass")])
def test_filter_drops_exactly_the_trim_of_independent_scores(rule, backend, tmp_path):
    spy = SpyFilter(rule, drop_ratio=0.3, warmup_epochs=1, prl_g_backend=backend)
    model, _ = fit(tmp_path, [spy], max_epochs=2)
    assert len(spy.steps) == 12 and model.batch_selectors == []  # removed at teardown
    net = TinyModel().net
    for step in spy.steps:
        net.load_state_dict(step["params"])
        index = step["batch"][0]
        eps = 0.3 * min(step["epoch"] / 1, 1.0)
        if eps == 0:
            assert step["mask"].all()  # warm-up epoch 0 keeps everything
            continue
        expected = smallest_k_mask(reference_scores(rule, net, step["batch"]).detach(), keep_count(16, 1 - eps), index)
        assert torch.equal(step["mask"], expected)
        assert int(step["mask"].sum()) == 11  # floor(0.7 * 16)


def test_keep_mask_ranks_by_score_then_dataset_index(tmp_path):
    f = BatchFilter("spl", drop_ratio=0.25)
    f._trainer = fake_trainer()
    losses = torch.tensor([1.0, 5.0, 1.0, float("nan"), 2.0, 5.0, 0.5, 1.0])
    index = torch.tensor([7, 3, 2, 0, 9, 1, 4, 5])
    mask = f.keep_mask(losses, (index, torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)), None, None)
    # keep 6: NaN dropped first, then the largest of the tie 5.0/5.0 by index (3 beats 1 for dropping)
    assert mask.tolist() == [True, False, True, False, True, True, True, True]


def fake_trainer(epoch=0):
    return type("Trainer", (), {"training": True, "current_epoch": epoch})()


def test_prl_infers_mse_from_floating_targets_and_ce_from_class_indices():
    g = torch.Generator().manual_seed(0)
    index = torch.arange(10)
    pred, y = torch.randn(10, 2, generator=g), torch.randn(10, 2, generator=g)
    f = BatchFilter("prl", drop_ratio=0.3)
    f._trainer = fake_trainer()
    mask = f.keep_mask(torch.zeros(10), (index, None, y), pred, None)
    assert torch.equal(mask, smallest_k_mask((pred - y).norm(dim=1), 7, index))
    assert f._inferred_loss == "mse"
    f._inferred_loss = None  # decided once per fit: the next fit (here, other targets) decides again
    logits, labels = torch.randn(10, 4, generator=g), torch.randint(0, 4, (10,), generator=g)
    mask = f.keep_mask(torch.zeros(10), (index, None, labels), logits, None)
    assert torch.equal(mask, smallest_k_mask((logits.softmax(1) - F.one_hot(labels, 4)).norm(dim=1), 7, index))
    # outside training (validation, test) nothing is dropped
    f._trainer = type("Trainer", (), {"training": False, "current_epoch": 0})()
    assert f.keep_mask(torch.zeros(10), (index, None, labels), logits, None).all()


def test_warmup_schedule_and_per_epoch_drop_counts(tmp_path):
    f = BatchFilter("spl", drop_ratio=0.25, warmup_epochs=2)
    assert [f.drop_ratio_at(t) for t in range(4)] == [0.0, 0.125, 0.25, 0.25]
    assert [f.keep_ratio_at(t) for t in (0, 1, 2)] == [1.0, 0.875, 0.75]
    assert BatchFilter("spl", drop_ratio=0.25).drop_ratio_at(0) == 0.25
    fit(tmp_path, [f], max_epochs=3)
    # 6 batches of 16 per epoch: keep 16, floor(0.875 * 16) = 14, floor(0.75 * 16) = 12
    assert [r.dropped for r in f.history] == [0, 12, 24]
    assert [r.seen for r in f.history] == [96, 96, 96]
    assert [r.drop_ratio for r in f.history] == [0.0, 0.125, 0.25]


@pytest.mark.parametrize("drop_ratio, warmup, max_epochs, match", [
    (0.3, 10, 1, r"`max_epochs`=1 ends the fit before the filter reaches `drop_ratio`=0.3: with `warmup_epochs`=10 "
                 r".* drops nothing: this fit is plain training"),
    (0.3, 10, 3, r"drops at most 0.06 of each batch"),
    ("auto", 0, 1, r"drops nothing \(epoch 0 only estimates"),
    # with "auto" the advice is to train longer: a regression newcomer followed "warmup_epochs ... e.g. 0", the
    # estimate after epoch 0 was 0 and the fit was plain training
    ("auto", 5, 2, r"drops only 20% of its estimate in the last epoch\. Train longer \(e\.g\. `max_epochs`=11\) "
                   r"rather than shortening the warm-up"),
    (0.3, 5, 2, r"drops at most 0\.06 of each batch \(in the last epoch\)\. Set `warmup_epochs` below `max_epochs` "
                r"\(e\.g\. 0\) or train longer"),
])
def test_a_fit_shorter_than_the_warmup_is_warned_about(tmp_path, drop_ratio, warmup, max_epochs, match):
    """`--trainer.max_epochs 1` on a shipped config (warmup_epochs 10) silently ran plain training."""
    f = BatchFilter("spl", drop_ratio=drop_ratio, warmup_epochs=warmup)
    with pytest.warns(UserWarning, match=match):
        fit(tmp_path, [f], max_epochs=max_epochs)
    assert all(r.dropped == 0 for r in f.history) == ("drops nothing" in match)


def test_a_fit_past_the_warmup_is_not_warned_about(tmp_path):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*ends the fit before the filter")
        fit(tmp_path, [BatchFilter("spl", drop_ratio=0.3, warmup_epochs=1)], max_epochs=2)


def test_dropped_corrupted_fraction_is_logged_and_kept(tmp_path):
    spy = SpyFilter("prl", drop_ratio=0.3)
    _, trainer = fit(tmp_path, [spy], max_epochs=2)
    for rec in spy.history:
        steps = [s for s in spy.steps if s["epoch"] == rec.epoch]
        dropped_bad = sum(int((~s["mask"] & s["batch"][3]).sum()) for s in steps)
        dropped = sum(int((~s["mask"]).sum()) for s in steps)
        assert (rec.dropped, rec.corrupted_dropped) == (dropped, dropped_bad)
        assert rec.dropped_corrupted_frac == pytest.approx(dropped_bad / dropped)
        assert rec.corrupted_frac == pytest.approx(sum(int(s["batch"][3].sum()) for s in steps) / 96)
    assert float(trainer.callback_metrics["filter/dropped_corrupted_frac"]) == pytest.approx(
        spy.history[-1].dropped_corrupted_frac)
    # the filter finds label noise: its rejects are far noisier than the data (30% corrupted) after one epoch
    assert spy.history[-1].dropped_corrupted_frac > 0.6


def test_no_ground_truth_means_no_metric(tmp_path):
    ds = blobs(96)
    ds.corrupted = None

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(ds, batch_size=16, shuffle=True)

    f = BatchFilter("spl", drop_ratio=0.2)
    _, trainer = fit(tmp_path, [f], max_epochs=1, data=Data())
    counts = torch.bincount(ds.targets).tolist()  # the entries seen by given label, and how many of each were kept
    assert [dataclasses.replace(r, kept_by_class=None) for r in f.history] == [FilterEpochRecord(
        epoch=0, drop_ratio=0.2, seen=96, dropped=24, seen_by_class=counts)]  # 6 x (16 - floor(0.8 * 16))
    assert len(f.history[0].kept_by_class) == 3 and sum(f.history[0].kept_by_class) == 96 - 24
    assert "filter/dropped_corrupted_frac" not in trainer.callback_metrics


def test_global_scope_equals_local_scope_in_one_process(tmp_path):
    weights = {}
    for scope in ("local", "global"):
        spy = SpyFilter("prl", drop_ratio=0.25, scope=scope)
        model, _ = fit(tmp_path / scope, [spy], max_epochs=1)
        weights[scope] = (model.net.state_dict(), [s["mask"] for s in spy.steps])
    (w_local, m_local), (w_global, m_global) = weights["local"], weights["global"]
    assert all(torch.equal(a, b) for a, b in zip(m_local, m_global))
    assert all(torch.equal(w_local[k], w_global[k]) for k in w_local)


def test_too_small_batch_keeps_all_and_warns_once(tmp_path):
    f = BatchFilter("spl", drop_ratio=0.3)
    with pytest.warns(UserWarning, match=r"a batch of 1 sample\(s\) is too small.*kept whole") as rec:
        fit(tmp_path, [f], max_epochs=2, data=BlobsData(n=97, batch_size=16))  # the last batch holds 1 sample
    assert sum("too small" in str(w.message) for w in rec) == 1
    # per epoch: 6 batches of 16 drop 16 - floor(0.7 * 16) = 5 each; the batch of one keeps its sample
    assert [r.dropped for r in f.history] == [30, 30] and [r.seen for r in f.history] == [97, 97]


@pytest.mark.parametrize("kwargs, match", [
    (dict(rule="prl", drop_ratio=0.5), r"`drop_ratio` must be in \[0, 0.5\), got 0.5. Pass `allow_large_drop=True`"),
    (dict(rule="prl", drop_ratio=-0.1),
     r"`drop_ratio` must be in \[0, 0.5\), got -0.1. Or pass drop_ratio='auto' to estimate it from the training "
     r"scores.$"),
    (dict(rule="prl", drop_ratio=1.0, allow_large_drop=True),
     r"`drop_ratio` must be in \[0, 1\) with `allow_large_drop=True`, got 1.0"),
    (dict(rule="prl", drop_ratio="0.2"), r"`drop_ratio` must be a number in \[0, 0.5\), got '0.2' \(a str: pass the number itself, 0\.2; or 'auto' to estimate it from the training scores\)\.$"),
    (dict(rule="loss", drop_ratio=0.2), r"`rule` must be one of 'prl', 'spl', 'prl_g', got 'loss'\.$"),
    (dict(rule="PRL", drop_ratio=0.2), r"`rule` must be one of 'prl', 'spl', 'prl_g', got 'PRL' \(did you mean 'prl'\?\)\.$"),
    (dict(rule="spl", drop_ratio=0.2, warmup_epochs=-1),
     r"`warmup_epochs` must be an integer >= 0 or None \(.*\), got -1"),
    (dict(rule="spl", drop_ratio=0.2, scope="world"), r"`scope` must be 'local' or 'global', got 'world'"),
    (dict(rule="prl", drop_ratio=0.2, loss="l1"), r"`loss` must be 'ce', 'mse', a callable .* or None, got 'l1'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchFilter(**kwargs)


def test_large_drop_needs_opt_in():
    assert BatchFilter("spl", drop_ratio=0.7, allow_large_drop=True).drop_ratio == 0.7


def test_prl_without_outputs_is_explained(tmp_path):
    class LossOnly(TinyModel):
        def per_sample_loss(self, batch):
            return super().per_sample_loss(batch)[0]

    with pytest.raises(ValueError, match=r"`rule='prl'` needs the loss layer's input: make `per_sample_loss` return "
                                         r"`\(losses, outputs\)`"):
        fit(tmp_path, [BatchFilter("prl", drop_ratio=0.2)], max_epochs=1, model=LossOnly())


def test_prl_without_outputs_is_refused_at_the_first_batch_of_a_warm_up(tmp_path):
    """A researcher's `self.reduce_loss(losses, batch)` (no outputs) trained the 2 warm-up epochs, then failed."""

    class NoOutputsPassed(TinyModel):
        def training_step(self, batch, batch_idx):
            losses, _ = self.per_sample_loss(batch)
            return self.reduce_loss(losses, batch)

    seen = []

    class Counting(NoOutputsPassed):
        def on_train_batch_end(self, *args):
            seen.append(self.global_step)

    with pytest.raises(ValueError, match=r"pass them on: `self.reduce_loss\(losses, batch, outputs\)`"):
        fit(tmp_path, [BatchFilter("prl", drop_ratio=0.2, warmup_epochs=2)], max_epochs=3, model=Counting())
    assert seen == []  # not one step trained
    # a filter set to drop nothing never needs the outputs: it trains as before (a reviewer's no-op filter)
    f = BatchFilter("prl", drop_ratio=0.0)
    fit(tmp_path, [f], max_epochs=1, model=NoOutputsPassed())
    assert f.history[0].seen == 96 and f.history[0].dropped == 0


def test_prl_g_with_batchnorm_in_training_mode_is_explained(tmp_path):
    model = TinyModel()
    model.net = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"BatchNorm1d in training mode.*GroupNorm.*freeze it"):
        fit(tmp_path, [BatchFilter("prl_g", drop_ratio=0.2)], max_epochs=1, model=model)


def test_module_without_mixin_is_rejected(tmp_path):
    class Plain(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 3)

        def training_step(self, batch, batch_idx):
            return self.lin(batch[1]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(TypeError, match=r"`BatchFilter` needs the LightningModule to adopt `lit_robust.RobustMixin`"):
        fit(tmp_path, [BatchFilter("spl", drop_ratio=0.2)], max_epochs=1, model=Plain())


def test_state_survives_a_checkpoint(tmp_path):
    f = BatchFilter("spl", drop_ratio=0.25, warmup_epochs=2)
    model, trainer = fit(tmp_path, [f], max_epochs=2)
    ckpt = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = BatchFilter("spl", drop_ratio=0.25, warmup_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(tmp_path, [resumed], max_epochs=3, ckpt_path=str(ckpt))
    assert resumed.history[:2] == f.history
    assert [r.drop_ratio for r in resumed.history] == [0.0, 0.125, 0.25]
    assert f.state_key != BatchFilter("prl", drop_ratio=0.25).state_key  # two filters can coexist


@pytest.mark.parametrize(("max_epochs", "max_steps", "warned"), [(5, 16, True), (5, -1, False), (-1, 16, True)])
def test_a_fit_stopped_inside_the_warm_up_is_warned_about(tmp_path, max_epochs, max_steps, warned):
    """A power user's EarlyStopping ended a PRL fit inside its 5-epoch warm-up: the filter never reached its drop
    ratio, silently (ITLM warns when its rounds are cut)."""
    import warnings as _warnings

    from tests.conftest import BlobsData, TinyModel, tiny_trainer

    f = BatchFilter("prl", drop_ratio=0.3, warmup_epochs=3)
    with _warnings.catch_warnings(record=True) as record:
        _warnings.simplefilter("always")
        tiny_trainer(tmp_path, max_epochs, [f], max_steps=max_steps).fit(TinyModel(), BlobsData())  # 8 steps/epoch
    said = [str(w.message) for w in record if "inside the warm-up" in str(w.message)]
    # `max_steps` alone (max_epochs -1) was not warned about (a release check)
    of = " of 5" if max_epochs == 5 else ""
    assert said == ([(f"BatchFilter: the fit ended after epoch 1{of}, inside the warm-up (full drop ratio from epoch 3 "
                      "on): something other than `max_epochs` stopped it (EarlyStopping, `max_steps`, `max_time`), so "
                      "the filter never dropped its full share (epoch 1: 0.1).")] if warned else []), said


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_an_auto_fit_stopped_before_its_first_dropping_epoch_is_warned_about_for_either_warm_up(tmp_path,
                                                                                                warmup_epochs):
    """A reviewer's `drop_ratio="auto"` fit with `warmup_epochs=0`, stopped by `max_steps` in epoch 0 (which only
    estimates), was not warned, though warm-ups of 0 and 1 are the same "auto" schedule and 1 was warned."""
    import warnings as _warnings

    from tests.conftest import BlobsData, TinyModel, tiny_trainer

    f = BatchFilter("prl", drop_ratio="auto", warmup_epochs=warmup_epochs)
    with _warnings.catch_warnings(record=True) as record:
        _warnings.simplefilter("always")
        tiny_trainer(tmp_path, 5, [f], max_steps=8).fit(TinyModel(), BlobsData())  # 8 steps/epoch: epoch 0 only
    said = [str(w.message) for w in record if "inside the warm-up" in str(w.message)]
    assert said == ["BatchFilter: the fit ended after epoch 0 of 5, inside the warm-up (full drop ratio from epoch 1 "
                    "on): something other than `max_epochs` stopped it (EarlyStopping, `max_steps`, `max_time`), so "
                    "the filter never dropped its full share (epoch 0: 0)."], said


class MeanNotReduced(TinyModel):
    """A `training_step` of the user's own that takes the plain mean: the filter is never asked."""

    def training_step(self, batch, batch_idx):
        losses = self.per_sample_loss(batch)[0]
        return losses.mean()


@pytest.mark.parametrize("module", [MeanNotReduced, TinyModel])
def test_a_filter_the_training_step_never_consults_is_warned_about_once(tmp_path, recwarn, module):
    """A manual-optimisation newcomer's `training_step` took `losses.mean()`: 24 epochs of `seen: 0`, test accuracy
    that of plain training, and no word."""
    f = BatchFilter("spl", drop_ratio=0.2)
    tiny_trainer(tmp_path, 3, [f]).fit(module(), BlobsData())
    said = [str(w.message) for w in recwarn if "went through the filter" in str(w.message)]
    if module is TinyModel:
        assert said == [] and f.history[0].seen == 240
    else:
        assert [r.seen for r in f.history] == [0, 0, 0]
        assert said == ["BatchFilter: none of the 8 training batches of epoch 0 went through the filter, so it filters "
                        "nothing: the module's training step never called `reduce_loss`. Compute the loss as "
                        "`self.reduce_loss(losses, batch, outputs)` (what `per_sample_loss` returns), once per batch "
                        "(a `training_step` of your own, manual optimisation included)."]


def test_prl_on_a_tuple_of_outputs_says_how_to_carry_a_second_head():
    """A multi-task newcomer returned `(losses, (logits, aux_pred))` and was told to return `(losses, outputs)`."""
    from lit_robust.functional.scores import loss_layer_scores

    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"got outputs of type tuple\. PRL measures the gradient of one loss with "
                                         r"respect to its input: .* samples `\(\(x, aux\), label\)`"):
        loss_layer_scores("prl", torch.ones(4), (logits, torch.randn(4)), y)
    with pytest.raises(ValueError, match=r"got outputs of type NoneType\. In a `training_step` of your own, pass "
                                         r"them on: `self.reduce_loss\(losses, batch, outputs\)`"):
        loss_layer_scores("prl", torch.ones(4), None, y)


def test_prl_g_on_a_module_compiled_during_its_warm_up_filters_as_the_eager_one(tmp_path):
    """A newcomer's compiled module failed at the first PRL(G) step after a warm-up: the graph traced during the
    warm-up had no recording hooks, and TorchDynamo does not guard on hooks added later."""
    import torch._dynamo

    runs = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        pl.seed_everything(0, verbose=False)
        model = TinyModel()
        f = BatchFilter("prl_g", 0.3, warmup_epochs=1)
        tiny_trainer(tmp_path, 2, [f]).fit(torch.compile(model, backend="eager") if compiled else model, BlobsData())
        runs[compiled] = ([(r.seen, r.dropped) for r in f.history], [p.detach().clone() for p in model.parameters()])
    assert runs[True][0] == runs[False][0] == [(240, 0), (240, 75)]
    for a, b in zip(runs[True][1], runs[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


class NaNInputs(BlobsData):
    """Blobs with `bad` inputs NaN: their losses are NaN from the first step."""

    def __init__(self, bad: int):
        super().__init__(n=96, batch_size=16)
        x = self.ds.dataset.tensors[0].clone()
        x[:bad] = float("nan")
        self.ds.dataset = torch.utils.data.TensorDataset(x, self.ds.dataset.tensors[1])


@pytest.mark.parametrize("bad", [0, 2])
def test_nonfinite_training_losses_are_warned_once(tmp_path, bad):
    """A regression analyst's 2 NaN targets of 1,500 ended a BatchFilter fit with NaN weights and no word but the
    estimator's, which they had not asked for (ITLM says so through its collapse check)."""
    f = BatchFilter("prl", drop_ratio=0.2, warmup_epochs=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(tmp_path, [f], max_epochs=3, data=NaNInputs(bad))
    said = [str(w.message) for w in record if "NaN or infinite" in str(w.message)]
    if bad:  # the NaN samples make the weights NaN within epoch 0, and then every later loss
        counted = re.match(r"BatchFilter: (\d+) per-sample training losses of epoch 0 were NaN or infinite", said[0])
        assert len(said) == 1 and counted and int(counted.group(1)) >= bad, said
    else:
        assert not said


class EmptyPool(TinyModel):
    """Scales its logits by `|x|_1 / |x|_1`: a sample whose input is all zeros (finite) gets 0/0 = NaN, as mean-pooling
    an empty sequence does; with `safe` the count is clamped to 1, the fix the warning and the docs give."""

    def __init__(self, safe: bool = False):
        super().__init__()
        self.safe = safe

    def per_sample_loss(self, batch):
        x, y = batch[1], batch[2]
        norm = x.abs().sum(1, keepdim=True)
        logits = self(x) * norm / (norm.clamp(min=1e-12) if self.safe else norm)
        return F.cross_entropy(logits, y, reduction="none"), logits


@pytest.mark.parametrize("safe", [False, True])
def test_a_nan_the_model_makes_for_one_sample_is_named_with_its_fix(tmp_path, safe):
    """A NaN the model itself makes for one sample of finite data (0/0, as mean-pooling an empty sequence) made every
    weight NaN although the filter dropped that loss (autograd: 0 * NaN); the warning blamed the data or the learning
    rate only. It now names the model's own arithmetic and the fix, which keeps the weights finite."""
    data = BlobsData(n=96, batch_size=16)
    data.ds.dataset.tensors[0][5] = 0.0
    model = EmptyPool(safe)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(tmp_path, [BatchFilter("prl", drop_ratio=0.2, warmup_epochs=0)], max_epochs=1, data=data, model=model)
    said = [str(w.message) for w in record if "NaN or infinite" in str(w.message)]
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if safe:
        assert finite and not said, said
    else:
        assert not finite and len(said) == 1, said
        assert "the model's own arithmetic on some sample (e.g. mean-pooling an empty sequence: 0/0)" in said[0]
        assert "a count `.clamp(min=1)`; `torch.nan_to_num` of the result leaves the gradient NaN" in said[0]


def test_a_batch_counted_twice_is_warned_about(tmp_path):
    """A two-optimizer step called `reduce_loss` once per optimizer: `seen=2800` for 1,400 samples, silently."""

    class Twice(TinyModel):
        def training_step(self, batch, batch_idx):
            losses, outputs = self.per_sample_loss(batch)
            self.reduce_loss(losses, batch, outputs)
            return self.reduce_loss(losses, batch, outputs)

    f = BatchFilter("spl", drop_ratio=0.2)
    with pytest.warns(UserWarning, match=r"BatchFilter: one training batch went through the filter twice") as caught:
        fit(tmp_path, [f], max_epochs=2, model=Twice())
    assert sum("went through the filter twice" in str(w.message) for w in caught) == 1  # once per fit
    assert f.history[0].seen == 2 * 96  # what it warns of
    with pytest.warns(UserWarning, match="went through the filter twice"):  # and again in the next fit
        fit(tmp_path, [f], max_epochs=2, model=Twice())
    g = BatchFilter("spl", drop_ratio=0.2)
    with warnings.catch_warnings(record=True) as once:
        warnings.simplefilter("always")
        fit(tmp_path, [g], max_epochs=2)
    assert not [w for w in once if "twice" in str(w.message)] and g.history[0].seen == 96


@pytest.mark.parametrize("patience, warned, min_epochs", [(1, True, None), (3, False, None), (1, False, 3)])
def test_an_early_stopping_that_can_stop_inside_the_warm_up_is_warned_about_before_training(tmp_path, patience,
                                                                                            warned, min_epochs):
    """A tuner user's `EarlyStopping(monitor="val_loss", patience=2)` stopped a fit inside the warm-up; ITLM warned
    of its rounds before training, the filter only after the fit."""
    from pytorch_lightning.callbacks import EarlyStopping

    pl.seed_everything(0, verbose=False)
    f = BatchFilter("spl", drop_ratio=0.2, warmup_epochs=3)
    stop = EarlyStopping(monitor="val_loss", patience=patience)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 4, [f, stop], limit_train_batches=1, min_epochs=min_epochs).fit(
            TinyModel(), BlobsData(with_val=True))  # Lightning stops nothing before `min_epochs`
    said = [str(w.message) for w in caught if "can stop the fit before the filter drops" in str(w.message)]
    if warned:
        assert said == [f"BatchFilter: `EarlyStopping(monitor='val_loss', patience={patience})` can stop the fit before "
                        "the filter drops at full strength: it ramps up over the first 3 epochs (3 validation "
                        "checks), dropping nothing in epoch 0. On a validation split with corrupted labels the loss "
                        "often rises while the model still improves on the clean samples. Give it a patience of at "
                        "least 3, or monitor a validation accuracy."], said
    else:
        assert said == []


def test_one_hot_float_targets_are_ranked_as_class_labels(tmp_path):
    """A soft-label user's one-hot float targets were read as a regression: PRL inferred MSE, dropped mostly clean
    samples and lost 14 points. (The report's label columns stay empty for them: telling one-hot rows from multi-label
    ones would read the targets in every step.)"""
    from torch.utils.data import TensorDataset

    from lit_robust import IndexedDataset, load_report

    integer = blobs(96)
    one_hot = IndexedDataset(TensorDataset(integer.dataset.tensors[0], F.one_hot(integer.targets, 3).float()),
                             corrupted=integer.corrupted)

    class Data(BlobsData):
        def __init__(self, ds):
            super().__init__(n=96, batch_size=16)
            self.ds = ds

    runs = {}
    for name, ds in (("integer", integer), ("one_hot", one_hot)):
        f = BatchFilter("prl", drop_ratio=0.3, report=True, report_dir=str(tmp_path / name))
        fit(tmp_path, [f], max_epochs=2, data=Data(ds))
        runs[name] = (f.history, load_report(f.report_path, as_frame=False))
    # the same drops, epoch by epoch (counted by class for integer labels only)
    no_classes = [dataclasses.replace(r, seen_by_class=None, kept_by_class=None) for r in runs["integer"][0]]
    assert runs["one_hot"][0] == no_classes and runs["integer"][0][0].seen_by_class == [33, 35, 28]
    rows = {r["index"]: r for r in runs["one_hot"][1]}
    for r in runs["integer"][1]:
        assert rows[r["index"]]["score_last_epoch"] == pytest.approx(r["score_last_epoch"], rel=1e-2, abs=1e-3)
        assert rows[r["index"]]["given_label"] is None and r["given_label"] == int(integer.targets[r["index"]])


def test_multi_hot_targets_are_warned_about_at_the_first_batch_and_a_callable_loss_runs_quietly(tmp_path):
    """A multi-label user's PRL(L) inferred MSE from multi-hot rows and filtered at random without a word."""
    import warnings

    from torch.utils.data import TensorDataset

    from lit_robust import IndexedDataset

    integer = blobs(96)
    tags = F.one_hot(integer.targets, 3).float()
    tags[:, 2] = 1.0  # every sample carries tag 2 besides its class's: rows sum to 2
    multi = IndexedDataset(TensorDataset(integer.dataset.tensors[0], tags), corrupted=integer.corrupted)

    class Data(BlobsData):
        def __init__(self, ds):
            super().__init__(n=96, batch_size=16)
            self.ds = ds

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        fit(tmp_path, [BatchFilter("prl", drop_ratio=0.3)], max_epochs=2, data=Data(multi))
    assert sum("If they are multi-label tags" in str(w.message) for w in said) == 1  # once per fit
    f = BatchFilter("prl", drop_ratio=0.3, loss=lambda o, y: F.binary_cross_entropy_with_logits(
        o, y, reduction="none").sum(1))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        fit(tmp_path, [f], max_epochs=2, data=Data(multi))
    assert len(f.history) == 2 and not [w for w in said if "multi-label" in str(w.message)]


def test_the_inferred_loss_layer_is_decided_once_per_fit(tmp_path):
    """Deciding per batch read the targets' values in every step (a host sync on a GPU) and could switch between
    cross-entropy and MSE from batch to batch (a reviewer's multi-label rows): decided at the fit's first batch."""
    from lit_robust.functional import scores

    calls = []
    real = scores.infer_loss_layer

    def counting(outputs, targets):
        calls.append(1)
        return real(outputs, targets)

    import lit_robust.functional.scores as module

    original = module.infer_loss_layer
    module.infer_loss_layer = counting
    try:
        f = BatchFilter("prl", drop_ratio=0.3)
        fit(tmp_path, [f], max_epochs=2)
        assert len(calls) == 1 and f._inferred_loss == "ce"
        fit(tmp_path, [f], max_epochs=2)  # a new fit decides again
        assert len(calls) == 2
    finally:
        module.infer_loss_layer = original


def test_a_drop_ratio_that_is_no_number_is_told_the_range_allow_large_drop_allows():
    """`drop_ratio=None` beside `allow_large_drop=True` was told "must be a number in [0, 0.5)", a range the opt-in
    widens to [0, 1) (a number there, 0.7, is accepted)."""
    with pytest.raises(ValueError, match=r"`drop_ratio` must be a number in \[0, 1\), got None"):
        BatchFilter(rule="prl", drop_ratio=None, allow_large_drop=True)


def test_a_ddp_resume_under_another_global_seed_is_warned(monkeypatch):
    """Under DDP Lightning's DistributedSampler shuffles with the global seed, and the checkpoint did not hold it: a
    resume after `seed_everything(1)` of a seed-0 fit trained other batches than the uninterrupted fit, silently."""
    from types import SimpleNamespace

    from lit_robust._backend import TrainerFn

    bf = BatchFilter(rule="prl", drop_ratio=0.2, report=False)
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    checkpoint = {"callbacks": {bf.state_key: {"arguments": bf.resume_arguments(), "global_seed": 0}}}
    trainer = SimpleNamespace(world_size=2, state=SimpleNamespace(fn=TrainerFn.FITTING), callbacks=[bf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bf.on_load_checkpoint(trainer, None, checkpoint)  # the same seed: nothing to say
    monkeypatch.setenv("PL_GLOBAL_SEED", "1")
    with pytest.warns(UserWarning, match=r"global seed is 1, but the fit this checkpoint resumes started with seed 0"):
        bf.on_load_checkpoint(trainer, None, checkpoint)


def test_a_loss_given_to_a_rule_that_does_not_read_it_is_warned_about():
    """`BatchFilter("spl", loss="ce")` was accepted without a word while `prl_g_backend` beside another rule is refused:
    only PRL(L) reads the loss layer. A warning, not a refusal: a PRL(L) config switched to SPL on the command line."""
    from lit_robust import CoTeaching

    with pytest.warns(UserWarning, match=r"^BatchFilter: `loss` \('ce'\) is the loss layer of rule='prl' only; "
                                         r"rule='spl' ranks the losses `per_sample_loss` returns, so it is unused\. "
                                         r"Leave it out, or pass rule='prl'\.$"):
        BatchFilter("spl", 0.2, loss="ce")

    def ce_rows(o, y):
        return F.cross_entropy(o, y, reduction="none")

    with pytest.warns(UserWarning, match=r"^BatchFilter: `loss` \('ce_rows'\) .* rule='prl_g' ranks the gradient "):
        BatchFilter("prl_g", 0.2, loss=ce_rows)
    with pytest.warns(UserWarning, match=r"^CoTeaching: `loss` \('mse'\) is the loss layer of rule='prl' only"):
        CoTeaching(TinyModel(), rule="spl", loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rule that reads it, and no loss at all: nothing said
        BatchFilter("prl", 0.2, loss="ce")
        BatchFilter("spl", 0.2)
        CoTeaching(TinyModel(), rule="prl", loss="ce")


@pytest.mark.parametrize(("monitor", "drop_ratio", "interval", "said"), [
    ("filter/dropped_corrupted_frac", "auto", 1.0, "only in epochs that drop samples"),
    ("filter/estimated_corruption", 0.2, 1.0, "only with `drop_ratio='auto'` (this fit's: 0.2)"),
    ("filter/estimated_corruption", "auto", 0.5, "from epoch 0's end on, not at the validation inside epoch 0 "
                                                 "that the Trainer's `val_check_interval`=0.5 runs"),
    ("filter/estimated_corruption", "auto", 1.0, None),  # logged from epoch 0's end: a monitor on it works
])
@pytest.mark.parametrize("kind", ["EarlyStopping", "ModelCheckpoint"])
def test_a_monitor_on_a_filter_figure_logged_in_some_epochs_is_refused_before_training(tmp_path, monitor, drop_ratio,
                                                                                        interval, said, kind):
    """`EarlyStopping("filter/dropped_corrupted_frac")` ended in Lightning's RuntimeError at the first validation, and
    `ModelCheckpoint(monitor=...)` in its "Did you call log(...)?" hint, though the filter logs it from a later epoch (a
    power user's; ITLM refuses its own `itlm/*` before training). `filter/estimated_corruption` was refused where it
    works: under "auto" it is logged from epoch 0's end (before the epoch's validation is checked) -- but not at a
    validation inside epoch 0, and never with a fixed `drop_ratio`."""
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    cb = EarlyStopping(monitor=monitor) if kind == "EarlyStopping" else ModelCheckpoint(dirpath=tmp_path, monitor=monitor)
    model = TinyModel()
    trainer = tiny_trainer(tmp_path, 3, [BatchFilter("spl", drop_ratio=drop_ratio), cb], enable_checkpointing=True,
                           val_check_interval=interval)
    if said is None:
        trainer.fit(model, BlobsData(with_val=True))
        assert trainer.current_epoch == 3 and monitor in trainer.callback_metrics
        return
    with pytest.raises(ValueError, match=re.escape(f"`{kind}(monitor={monitor!r})`: BatchFilter logs `{monitor}` "
                                                   f"{said}")):
        trainer.fit(model, BlobsData(with_val=True))
    assert model.trainer.global_step == 0


def test_the_early_stopping_warning_leaves_out_the_loss_advice_for_an_accuracy_monitor():
    """A vision newcomer monitoring `val_acc` (mode "max") was told to "monitor a validation accuracy"."""
    from pytorch_lightning.callbacks import EarlyStopping

    from lit_robust.callbacks.batch_filter import warn_early_stopping_in_warmup

    said = {}
    for monitor, mode in (("val_acc", "max"), ("val_loss", "min")):
        trainer = pl.Trainer(callbacks=[EarlyStopping(monitor=monitor, mode=mode, patience=1)], logger=False,
                             enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_early_stopping_in_warmup("BatchFilter", trainer, 3, False, 0.2)
        (said[monitor],) = [str(w.message) for w in caught]
    assert said["val_acc"].endswith("dropping nothing in epoch 0. Give it a patience of at least 3."), said
    assert said["val_loss"].endswith("the loss often rises while the model still improves on the clean samples. Give "
                                     "it a patience of at least 3, or monitor a validation accuracy."), said


@pytest.mark.parametrize("rule", ["prl", "prl_g"])
def test_a_learning_rate_search_runs_without_the_filter_and_says_nothing_of_it(tmp_path, rule):
    """Lightning's `Tuner.lr_find` runs the fit loop with its own callback alone; the module's `reduce_loss` still asked
    the filter, whose batch hooks never ran, and a tuner user was warned that each batch went through it twice."""
    from pytorch_lightning.tuner import Tuner

    class Tunable(TinyModel):
        lr = 0.1

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    asked = []

    class Counting(BatchFilter):
        def _mask(self, *args, **kwargs):
            mask = super()._mask(*args, **kwargs)
            asked.append(int((~mask).sum()))
            return mask

    f = Counting(rule, drop_ratio=0.3, warmup_epochs=0)
    trainer = tiny_trainer(tmp_path, 2, [f])
    model = Tunable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Tuner(trainer).lr_find(model, datamodule=BlobsData(), num_training=8)
        assert f.history == [] and sum(asked) == 0  # nothing dropped, nothing counted in the search
        trainer.fit(model, BlobsData())
    assert not [w for w in caught if "went through the filter twice" in str(w.message)]
    assert [(r.seen, r.dropped) for r in f.history] == [(240, 75), (240, 75)]  # 7 x (32 - 22) + (16 - 11)
