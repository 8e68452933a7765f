"""A Trainer built in Python gets the same SIGTERM handler as `lit-robust`'s when a lit_robust callback or CoTeaching
is in the fit: a DDP newcomer's own script with ITLM, sent one SIGTERM, hung for 11 minutes (Lightning 2.5+'s handler
broadcasts inside the signal handler, over whatever collective each process was in); their CLI fit stopped in 2-4 s."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl

from lit_robust import ITLM, BatchFilter, CoTeaching
from tests.conftest import BlobsData, TinyModel, tiny_trainer
from tests.test_cli import SigtermHandlerAfterFirstBatch


@pytest.mark.parametrize("kind", ["itlm", "batch_filter", "coteaching"])
def test_a_python_trainers_sigterm_handler_is_lit_robusts_and_stops_the_fit(tmp_path, kind, one_torch_thread):
    model = TinyModel()
    callbacks = [SigtermHandlerAfterFirstBatch()]  # asserts the handler is not Lightning's, then calls it
    if kind == "itlm":
        callbacks.append(ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot=False))
    elif kind == "batch_filter":
        callbacks.append(BatchFilter("prl", drop_ratio=0.2))
    else:
        model = CoTeaching(TinyModel(), drop_ratio=0.2)
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 2, callbacks)
    with pytest.raises(BaseException) as stopped:  # Lightning's SIGTERMException, after the first batch
        trainer.fit(model, BlobsData())
    assert type(stopped.value).__name__ == "SIGTERMException", repr(stopped.value)
    assert trainer.current_epoch == 0 and trainer.received_sigterm  # stopped in the first epoch


def test_without_a_lit_robust_callback_the_handler_stays_lightnings(tmp_path):
    """Nothing changes in a plain fit (the handler the helper above asserts is not Lightning's)."""
    trainer = tiny_trainer(tmp_path, 1, [SigtermHandlerAfterFirstBatch()])
    with pytest.raises(AssertionError, match=r"Lightning.s <bound method _SignalConnector._sigterm_notifier_fn of "):
        trainer.fit(TinyModel(), BlobsData())
