"""One callback instance over several fits (a seed or cross-validation loop): each fit starts as with a new instance.

A newcomer's loop reused one ``ITLM`` for a second fit: it skipped round 0 and trained a fresh model on the first
fit's selection, silently (or failed on another data set with "the training set changed size between rounds")."""

import pytest
import pytorch_lightning as pl
import torch

from lit_robust import ITLM, BatchFilter, load_report
from tests.conftest import BlobsData, TinyModel, tiny_trainer

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

MAKERS = {
    "itlm": lambda d: ITLM(keep_ratio=0.6, round_epochs=[2, 1, 1], verbose=False, plot=False, report=True,
                           report_dir=d),
    "itlm_auto": lambda d: ITLM(keep_ratio="auto", round_epochs=[2, 1, 1], verbose=False, plot=False, report=True,
                                report_dir=d),
    "prl": lambda d: BatchFilter("prl", drop_ratio=0.3, warmup_epochs=1, report=True, report_dir=d),
    "prl_auto": lambda d: BatchFilter("prl", drop_ratio="auto", warmup_epochs=2, report=True, report_dir=d),
}


def _fit(tmp_path, cb, n: int):
    pl.seed_everything(0, verbose=False)
    model = TinyModel()
    tiny_trainer(tmp_path, 4, [cb]).fit(model, BlobsData(n=n))
    return model


def _state(cb, model):
    rows = load_report(cb.report_path, as_frame=False)
    return [repr(r) for r in cb.history], rows, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("first_n", [240, 180])  # the same data set again, and another size first
def test_a_reused_instance_fits_as_a_new_one(tmp_path, name, first_n):
    make = MAKERS[name]
    new = make(tmp_path / "new")
    expected = _state(new, _fit(tmp_path, new, 240))
    reused = make(tmp_path / "reused")
    _fit(tmp_path, reused, first_n)
    got = _state(reused, _fit(tmp_path, reused, 240))
    assert got[0] == expected[0]  # the history: this fit's rounds or epochs only
    assert got[1] == expected[1]  # the report
    for a, b in zip(got[2], expected[2]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["itlm", "prl"])
def test_testing_a_checkpoint_leaves_the_fits_history_as_it_was(tmp_path, name):
    """`trainer.test(ckpt_path="best")` restores the callbacks' states as well: a newcomer's ITLM lost its last round
    from `history` (4 -> 3) and BatchFilter its last epochs. Only a resumed fit restores them."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    cb = MAKERS[name](tmp_path / "reports")
    data = BlobsData(n=240, with_val=True)
    pl.seed_everything(0, verbose=False)
    model = TinyModel()
    trainer = tiny_trainer(tmp_path, 4, [cb, ModelCheckpoint(dirpath=tmp_path / "ck", every_n_epochs=1, save_top_k=-1)],
                           enable_checkpointing=True)
    trainer.fit(model, data)
    before = [repr(r) for r in cb.history]
    first = sorted((tmp_path / "ck").glob("epoch=0*.ckpt"))[0]
    trainer.validate(model, DataLoader(data.ds, batch_size=64), ckpt_path=first)
    assert [repr(r) for r in cb.history] == before
