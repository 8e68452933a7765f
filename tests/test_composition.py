"""Callbacks that compose: ITLM's re-initialisation restarts the per-batch schedules (BatchFilter's warm-up, its
"auto" estimation window, AdversarialTrigger's use of the filter), whatever the callbacks' order, and a resumed
composed fit reproduces the uninterrupted one."""

import warnings
from dataclasses import asdict

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lit_robust import ITLM, AdversarialTrigger, BatchFilter
from lit_robust.selection import keep_count
from tests.conftest import BlobsData, TinyModel, tiny_trainer

N, BATCH, KEEP = 240, 32, 0.7
ROUNDS = [2, 3]
EPOCHS = sum(ROUNDS)


def batch_sizes(n, batch):
    return [batch] * (n // batch) + ([n % batch] if n % batch else [])


def expected_drops(eps, n, batch=BATCH):
    """Samples a per-batch filter drops in one epoch over `n` samples at drop ratio `eps` (slow and obvious)."""
    return sum(b - keep_count(b, 1 - eps) for b in batch_sizes(n, batch))


def composed_fit(root, order, restart=True, epochs=EPOCHS, ckpt_path=None, checkpoint=None, trigger=False,
                 seed=0, **filter_kw):
    itlm = ITLM(keep_ratio=KEEP, round_epochs=ROUNDS, verbose=False, plot=False)
    kw = dict(drop_ratio=0.3, warmup_epochs=2) | filter_kw
    f = BatchFilter("prl", restart_on_reinit=restart, **kw)
    named = {"itlm": itlm, "filter": f}
    if trigger:
        named["trigger"] = AdversarialTrigger(tau=0.05, value_range=None)
    callbacks = [named[k] for k in order if k in named]
    if checkpoint is not None:
        callbacks.append(checkpoint)
    pl.seed_everything(seed, verbose=False)
    model = TinyModel(lr=0.05)
    trainer = tiny_trainer(root, epochs, callbacks, enable_checkpointing=checkpoint is not None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, BlobsData(n=N, batch_size=BATCH), ckpt_path=ckpt_path)
    return model, itlm, f


ORDERS = [("itlm", "filter", "trigger"), ("trigger", "filter", "itlm")]


@pytest.mark.parametrize("order", ORDERS, ids=["itlm-first", "itlm-last"])
@pytest.mark.parametrize("restart", [True, False], ids=["restart", "no-restart"])
def test_warmup_restarts_at_each_reinitialisation(tmp_path, order, restart):
    model, itlm, f = composed_fit(tmp_path, order, restart)
    # round 0: epochs 0-1 on all 240 samples; round 1: epochs 2-4 on the 168 kept, model re-drawn at epoch 2
    ramp = [0.0, 0.15, 0.0, 0.15, 0.3] if restart else [0.0, 0.15, 0.3, 0.3, 0.3]
    assert [r.drop_ratio for r in f.history] == ramp
    sizes = [N, N] + [keep_count(N, KEEP)] * 3
    assert [r.seen for r in f.history] == sizes
    assert [r.dropped for r in f.history] == [expected_drops(e, n) for e, n in zip(ramp, sizes)]
    assert f.schedule_start == (2 if restart else 0)
    assert model.model_start_epoch == 2  # ITLM announced its re-initialisation either way


def test_callback_order_does_not_change_the_composed_fit(tmp_path):
    a_model, a_itlm, a_filter = composed_fit(tmp_path / "a", ORDERS[0], trigger=True)
    b_model, b_itlm, b_filter = composed_fit(tmp_path / "b", ORDERS[1], trigger=True)
    assert [r.drop_ratio for r in a_filter.history] == [0.0, 0.15, 0.0, 0.15, 0.3]
    assert [asdict(r) for r in a_filter.history] == [asdict(r) for r in b_filter.history]
    assert [asdict(r) for r in a_itlm.history] == [asdict(r) for r in b_itlm.history]
    for p, q in zip(a_model.parameters(), b_model.parameters()):
        assert torch.equal(p, q)


def test_without_reinit_nothing_restarts(tmp_path):
    itlm = ITLM(keep_ratio=KEEP, round_epochs=ROUNDS, reinit=False, verbose=False, plot=False)
    f = BatchFilter("prl", drop_ratio=0.3, warmup_epochs=2)
    pl.seed_everything(0, verbose=False)
    model = TinyModel(lr=0.05)
    tiny_trainer(tmp_path, 5, [f, itlm]).fit(model, BlobsData(n=N, batch_size=BATCH))
    assert [r.drop_ratio for r in f.history] == [0.0, 0.15, 0.3, 0.3, 0.3]
    assert model.model_start_epoch is None and f.schedule_start == 0


@pytest.mark.parametrize("order", ORDERS[:1] + [("filter", "itlm")], ids=["itlm-first", "itlm-last"])
def test_auto_estimation_window_restarts(tmp_path, order):
    _, itlm, f = composed_fit(tmp_path, order, drop_ratio="auto", warmup_epochs=2)
    # window 1: epoch 0 collects (drops nothing), epoch 1 collects at half the estimate; window 2 (re-drawn model)
    # starts at epoch 2 the same way, from its own scores only
    assert sorted(f._auto.estimates) == [0, 1, 2, 3]
    assert f._auto.start == 2
    ratios = [r.drop_ratio for r in f.history]
    assert ratios[0] == 0.0 and ratios[2] == 0.0
    assert ratios[3] == pytest.approx(f._auto.estimates[2] / 2)  # only the new window's estimate counts
    assert ratios[4] == pytest.approx(min(f._auto.estimates[3], 0.49))  # the median of window 2's epochs >= 1


@pytest.mark.parametrize("resume_epoch", [1, 2])
def test_resumed_composed_fit_reproduces_the_uninterrupted_one(tmp_path, resume_epoch):
    """ITLM + BatchFilter + AdversarialTrigger. Epoch 1 ends round 0 (the re-initialisation is pending in the
    checkpoint); epoch 2 comes after it (the filter's checkpoint carries the epoch its warm-up counts from: without
    it the resumed epoch 3 would drop 0.3 instead of 0.15)."""
    order = ORDERS[1]
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    full_model, full_itlm, full_filter = composed_fit(tmp_path / "full", order, trigger=True, checkpoint=ck)
    model, itlm, f = composed_fit(tmp_path / "resumed", order, trigger=True, seed=99,
                                  ckpt_path=str(tmp_path / "ck" / f"epoch={resume_epoch}.ckpt"))
    assert [r.drop_ratio for r in full_filter.history] == [0.0, 0.15, 0.0, 0.15, 0.3]
    assert [asdict(r) for r in f.history] == [asdict(r) for r in full_filter.history]
    assert [asdict(r) for r in itlm.history] == [asdict(r) for r in full_itlm.history]
    for p, q in zip(full_model.parameters(), model.parameters()):
        assert torch.equal(p, q)


def test_restart_on_reinit_is_checked():
    with pytest.raises(ValueError, match=r"`restart_on_reinit` must be True or False, got 1"):
        BatchFilter("prl", 0.2, restart_on_reinit=1)


def test_an_earlier_fits_reinitialisation_does_not_shift_a_later_fits_warmup(tmp_path):
    """Reviewer: after an ITLM fit (model re-drawn at epoch 2, announced as `model_start_epoch`), a BatchFilter fit of
    the same module with a new Trainer restarted its warm-up at epoch 2 as if ITLM had re-drawn the model there."""
    model = TinyModel(lr=0.05)
    itlm = ITLM(keep_ratio=KEEP, round_epochs=ROUNDS, verbose=False, plot=False, report=False)
    tiny_trainer(tmp_path, EPOCHS, [itlm]).fit(model, BlobsData(n=N, batch_size=BATCH))
    assert model.model_start_epoch == 2
    f = BatchFilter("prl", drop_ratio=0.3, warmup_epochs=2, report=False)
    tiny_trainer(tmp_path, 4, [f]).fit(model, BlobsData(n=N, batch_size=BATCH))
    assert [r.drop_ratio for r in f.history] == [0.0, 0.15, 0.3, 0.3]
    assert f.schedule_start == 0 and model.model_start_epoch is None
