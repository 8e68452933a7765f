"""What a notebook user meets when a fit trains nothing or goes on from an earlier one: a loader that yields no batch
(`drop_last=True`, a batch larger than the data), a new model fitted on a finished Trainer, and a fit after an
interrupted one on the same Trainer."""

import warnings

import pytest
import pytorch_lightning as pl
from torch.utils.data import DataLoader

import lit_robust.callbacks.itlm as itlm_module
from lit_robust import ITLM, BatchFilter, CoTeaching
from tests.conftest import BlobsData, TinyModel


def trainer(callbacks, epochs: int = 2) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)


def warned(fit, *phrases: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    return [str(w.message) for w in caught if any(p in str(w.message) for p in phrases)]


@pytest.mark.parametrize("owner", ["ITLM", "BatchFilter", "CoTeaching"])
def test_a_loader_that_yields_no_batch_is_named_as_the_cause(owner):
    # ITLM blamed "something other than `max_epochs` (EarlyStopping, `max_steps`, ...)"; the others said nothing
    callbacks, model = {
        "ITLM": lambda: ([ITLM(keep_ratio=0.7, round_epochs=[1, 1])], TinyModel()),
        "BatchFilter": lambda: ([BatchFilter("spl", drop_ratio=0.2)], TinyModel()),
        "CoTeaching": lambda: ([], CoTeaching(TinyModel(), drop_ratio=0.2)),
    }[owner]()
    loader = DataLoader(BlobsData(n=96).ds, batch_size=4096, drop_last=True)
    said = warned(lambda: trainer(callbacks).fit(model, loader), "nothing was trained", "stopped it")
    assert said == [f"{owner}: nothing was trained: the training loader yielded no batch (`drop_last=True` with "
                    "`batch_size`=4096 larger than the 96 training samples: the only batch is dropped. Use a smaller "
                    "batch size or `drop_last=False`)."]
    # a loader with batches: nothing of the kind
    said = warned(lambda: trainer(callbacks).fit(model, DataLoader(BlobsData(n=96).ds, batch_size=32)),
                  "nothing was trained")
    assert said == []


def test_a_new_model_on_a_finished_trainer_is_told_it_trains_nothing(monkeypatch):
    infos = []
    monkeypatch.setattr(itlm_module, "rank_zero_info", infos.append)
    loader = DataLoader(BlobsData(n=96).ds, batch_size=16)
    t = trainer([ITLM(keep_ratio=0.7, round_epochs=[1, 1])])
    assert warned(lambda: t.fit(TinyModel(), loader), "earlier fit") == []
    said = warned(lambda: t.fit(TinyModel(), loader), "earlier fit")
    assert said == ["ITLM: this Trainer's earlier fit already reached `max_epochs`=2, so this fit trains nothing (a "
                    "Trainer keeps its progress). Use a new Trainer for a new fit."]
    assert not [m for m in infos if "earlier fit" in m]


class InterruptAt(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and not getattr(self, "done", False):
            self.done = True
            raise KeyboardInterrupt


@pytest.mark.parametrize("owner", ["ITLM", "BatchFilter", "CoTeaching"])
def test_a_fit_going_on_after_an_interrupted_one_says_so(monkeypatch, owner):
    """ITLM said so; a reviewer's BatchFilter and CoTeaching fits went on after a stop inside an epoch (the rest of
    it never trained) without a word."""
    import lit_robust._lightning as lightning_module

    infos = []
    monkeypatch.setattr(lightning_module, "rank_zero_info", infos.append)
    loader = DataLoader(BlobsData(n=96).ds, batch_size=16)
    itlm = ITLM(keep_ratio=0.7, round_epochs=[1, 2])
    module = (CoTeaching(TinyModel(), rule="prl", drop_ratio=0.2, warmup_epochs=1, report=False)
              if owner == "CoTeaching" else TinyModel())
    callbacks = {"ITLM": [itlm], "BatchFilter": [BatchFilter("prl", drop_ratio=0.2)], "CoTeaching": []}[owner]
    t = trainer([*callbacks, InterruptAt(2)], epochs=3)
    try:
        t.fit(module, loader)
    except SystemExit:  # Lightning's answer to Ctrl-C in some versions; others return with `interrupted`
        pass
    assert t.interrupted and t.current_epoch == 2
    said = warned(lambda: t.fit(t.lightning_module, loader), "earlier fit")
    assert said == []  # it trains: no warning, an info line
    assert [m for m in infos if "earlier fit" in m] == [
        f"{owner}: this fit goes on from this Trainer's earlier fit at epoch 2 (a Trainer keeps its progress), which "
        "is not the same as one uninterrupted fit; for that, resume from a checkpoint (`ckpt_path=`) or start again "
        "with a new Trainer."]
    if owner == "ITLM":
        assert len(itlm.history) == 2
