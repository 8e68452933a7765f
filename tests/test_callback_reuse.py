"""One callback instance over several fits (a seed or cross-validation loop): each fit starts as with a new instance.

A newcomer's loop reused one ``ITLM`` for a second fit: it skipped round 0 and trained a fresh model on the first
fit's selection, silently (or failed on another data set with "the training set changed size between rounds")."""

import re

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


class _StopAfterEpoch(pl.Callback):
    """Sets `trainer.should_stop` at the end of `epoch`, once (an interrupted notebook cell)."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.done = epoch, False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and not self.done:
            self.done, trainer.should_stop = True, True


def _fit_twice(tmp_path, cb, epochs: tuple[int, int], stop_after: int | None = None):
    """Two `trainer.fit` calls on ONE Trainer (a notebook's next cell); `epochs` = max_epochs of each."""
    pl.seed_everything(0, verbose=False)
    model, data = TinyModel(), BlobsData(n=240)
    extra = [] if stop_after is None else [_StopAfterEpoch(stop_after)]
    trainer = tiny_trainer(tmp_path, epochs[0], [cb, *extra])
    trainer.fit(model, data)
    first = [repr(r) for r in cb.history]
    trainer.fit_loop.max_epochs = epochs[1]
    trainer.fit(model, data)
    return first, model


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_second_fit_on_the_same_trainer_keeps_the_first_fits_state(tmp_path, name, recwarn):
    """A notebook user's second `trainer.fit` on a finished Trainer (Lightning trains nothing) emptied `history`, and
    ITLM warned that the fit had ended after 0 of its rounds. Lightning's Trainer goes on from its loops' progress, and
    so do the callbacks now."""
    cb = MAKERS[name](tmp_path / "reports")
    first, _ = _fit_twice(tmp_path, cb, (4, 4))
    assert len(first) in (3, 4)  # ITLM's three rounds, the filters' four epochs
    assert [repr(r) for r in cb.history] == first
    assert not [w for w in recwarn if "the fit ended after" in str(w.message)]


def test_itlm_stopped_then_fitted_again_on_the_same_trainer_ends_as_an_uninterrupted_fit(tmp_path):
    new = MAKERS["itlm"](tmp_path / "new")
    expected = _state(new, _fit(tmp_path, new, 240))
    cb = MAKERS["itlm"](tmp_path / "cont")
    stopped, model = _fit_twice(tmp_path, cb, (4, 4), stop_after=1)  # stopped at the end of round 0, then on
    assert len(stopped) == 1
    got = _state(cb, model)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    for a, b in zip(got[2], expected[2]):
        assert torch.equal(a, b)


def test_a_filter_fitted_on_for_more_epochs_keeps_the_earlier_epochs(tmp_path):
    """"Train 4 more epochs" (`trainer.fit_loop.max_epochs` raised, `fit` again): the history held the new epochs only."""
    cb = MAKERS["prl"](tmp_path / "reports")
    first, _ = _fit_twice(tmp_path, cb, (2, 4))
    assert [r.epoch for r in cb.history] == [0, 1, 2, 3]
    assert [repr(r) for r in cb.history[:2]] == first
    rows = load_report(cb.report_path, as_frame=False)
    assert len(rows) == 240
    # the report's "first dropped" epochs span both fits: some sample was first dropped in the first fit (epoch 1)
    assert {r["first_dropped_epoch"] for r in rows} >= {1}


@pytest.mark.parametrize("name", ["itlm", "prl"])
def test_going_back_to_an_earlier_trainer_after_another_one(tmp_path, name):
    """A notebook user's callback served Trainer A, then Trainer B, then A again: A's report was rewritten with B's
    selection and estimate, with no error. A finished A now trains nothing and writes nothing; an A stopped halfway is
    refused at train start, unless a checkpoint restores its fit."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    cb = MAKERS[name](tmp_path / "reports")
    pl.seed_everything(0, verbose=False)
    first, second = tiny_trainer(tmp_path, 4, [cb]), tiny_trainer(tmp_path, 4, [cb])
    first.fit(TinyModel(), BlobsData(n=240))
    second.fit(TinyModel(), BlobsData(n=240))
    written = cb.report_path
    before = load_report(written, as_frame=False)
    first.fit(TinyModel(), BlobsData(n=240))  # A reached max_epochs: nothing to train, no report
    assert cb.report_path == written and load_report(written, as_frame=False) == before  # B's, as it was

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    a = tiny_trainer(tmp_path / "a", 4, [cb, InterruptAt(19), ckpt], enable_checkpointing=True)
    with pytest.raises(RuntimeError, match="stopped by the user"):
        a.fit(TinyModel(), BlobsData(n=240))  # stopped in epoch 2 (8 batches an epoch), after epoch 1's checkpoint
    tiny_trainer(tmp_path, 4, [cb]).fit(TinyModel(), BlobsData(n=240))  # B: another Trainer's fit
    b_history, b_report = [repr(r) for r in cb.history], cb.report_path
    for _ in range(2):  # refused, and refused again (a reviewer's second try went on with wiped state)
        with pytest.raises(RuntimeError, match=rf"{type(cb).__name__}: this fit goes on from this Trainer's earlier "
                                               r"fit \(at epoch 2\), but this .* has served another Trainer's fit"):
            a.fit(TinyModel(), BlobsData(n=240))
        assert [repr(r) for r in cb.history] == b_history and cb.report_path == b_report  # B's results kept
    # from A's checkpoint the state is A's fit's again: allowed, and the fit ends as A's uninterrupted one would
    a.fit(TinyModel(), BlobsData(n=240), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert len(load_report(cb.report_path, as_frame=False)) == 240


class InterruptAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.step = -1
            raise RuntimeError("stopped by the user")


def _co_teaching(report_dir):
    from lit_robust import CoTeaching

    return CoTeaching(TinyModel(), drop_ratio="auto", warmup_epochs=2, report=True, report_dir=str(report_dir))


@pytest.mark.parametrize("name", ["prl", "prl_auto", "coteaching"])
def test_an_epoch_a_failed_fit_left_unfinished_is_counted_once_when_the_same_trainer_goes_on(tmp_path, name):
    """A notebook user's KeyboardInterrupt inside an epoch, then `trainer.fit` again: Lightning trains that epoch again
    from its first batch, and BatchFilter's and CoTeaching's records added it to what the stopped fit had counted
    (`seen=2012` of 1,500 samples)."""
    module = _co_teaching(tmp_path / "rep") if name == "coteaching" else TinyModel()
    cb = None if name == "coteaching" else MAKERS[name](tmp_path / "rep")
    owner = module if cb is None else cb
    pl.seed_everything(0, verbose=False)
    stop = InterruptAt(22 if cb is None else 11)  # CoTeaching's two optimizers step twice per batch
    trainer = tiny_trainer(tmp_path, 4, [c for c in (cb, stop) if c is not None])
    with pytest.raises(RuntimeError, match="stopped by the user"):
        trainer.fit(module, BlobsData(n=240))  # 8 batches an epoch: stopped inside epoch 1
    assert trainer.current_epoch == 1 and [r.epoch for r in owner.history] == [0]
    trainer.fit(module, BlobsData(n=240))
    assert [r.epoch for r in owner.history] == [0, 1, 2, 3]
    assert [r.seen for r in owner.history] == [240] * 4
    rows = load_report(owner.report_path, as_frame=False)
    assert len(rows) == 240
    if name != "prl":  # the estimate of epoch 1 (the warm-up's last) from its 240 samples only, once each
        assert owner.history[1].estimated_corruption == owner.history[3].estimated_corruption is not None


def test_a_co_teaching_module_fitted_by_a_new_trainer_starts_its_records_again(tmp_path):
    """A notebook user's CoTeaching, fitted again by a new Trainer, listed epochs 0-14 twice in `history`, and the new
    fit's epoch 0 showed the first fit's estimate."""
    module = _co_teaching(tmp_path / "rep")
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 3, []).fit(module, BlobsData(n=240))
    assert [r.epoch for r in module.history] == [0, 1, 2]
    tiny_trainer(tmp_path, 2, []).fit(module, BlobsData(n=240))
    assert [r.epoch for r in module.history] == [0, 1]
    # the estimates are this fit's epochs' only (the first fit's third epoch gone), and the records show them
    assert sorted(module._auto.estimates) == [0, 1]
    assert [r.estimated_corruption for r in module.history] == [module._auto.estimates[0], module._auto.estimates[1]]


def test_arguments_changed_on_a_reused_instance_are_what_the_next_fit_uses(tmp_path):
    """A notebook user's `itlm.round_epochs = [3, 3, 3, 6]` on a reused ITLM trained on the old 5-epoch boundaries
    (and was told something else had stopped the fit); `prl.warmup_epochs = 3` and `drop_ratio = 0.25` on a reused
    `"auto"` filter were ignored."""
    itlm = ITLM(keep_ratio=0.6, round_epochs=[2, 2], verbose=False, plot=False)
    _fit(tmp_path, itlm, 240)
    itlm.round_epochs = [1, 1, 2]
    _fit(tmp_path, itlm, 240)
    assert [(r.round, r.epochs) for r in itlm.history] == [(0, 1), (1, 1), (2, 2)]
    itlm.round_epochs = [0, 4]
    with pytest.raises(ValueError, match=r"`round_epochs` must be a non-empty list of integers >= 1, got \[0, 4\]"):
        _fit(tmp_path, itlm, 240)

    prl = BatchFilter("prl", drop_ratio="auto", warmup_epochs=1)
    _fit(tmp_path, prl, 240)
    assert prl.history[0].estimated_corruption is not None and prl.history[1].drop_ratio > 0  # fixed after epoch 0
    prl.warmup_epochs = 3
    _fit(tmp_path, prl, 240)
    ratios = [r.drop_ratio for r in prl.history]
    assert ratios[0] == 0 and 0 < ratios[1] < ratios[2] < ratios[3]  # ramped over three epochs, fixed after the third
    est = [r.estimated_corruption for r in prl.history]
    assert est[3] == est[2] != est[1]
    prl.drop_ratio = 0.3
    _fit(tmp_path, prl, 240)
    assert [r.drop_ratio for r in prl.history] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert prl.estimated_corruption is None and all(r.estimated_corruption is None for r in prl.history)


@pytest.mark.parametrize("name", ["itlm", "prl"])
def test_a_fit_stopped_while_training_says_it_wrote_no_report(tmp_path, name):
    """A notebook user's interrupted fit left no report and said nothing of it: they found out cells later, from
    `report_path` being None. A fit refused before training says nothing of a report."""
    import warnings

    cb = MAKERS[name](tmp_path / "rep")
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 4, [cb, InterruptAt(11)])
    with pytest.warns(UserWarning, match=rf"{type(cb).__name__}: the fit stopped \(RuntimeError\) before its end, so "
                                         r"no per-sample report was written \(`report_path` is None\)"):
        with pytest.raises(RuntimeError, match="stopped by the user"):
            trainer.fit(TinyModel(), BlobsData(n=240))
    assert cb.report_path is None
    (tmp_path / "a_file").write_text("")
    refused = MAKERS[name](tmp_path / "a_file")  # its report folder is a file: refused at setup
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="`report_dir` must be a folder"):
            tiny_trainer(tmp_path, 4, [refused]).fit(TinyModel(), BlobsData(n=240))
    assert not [w for w in caught if "no per-sample report was written" in str(w.message)]


def test_a_fit_stopped_by_sigterm_says_the_process_exits_and_how_the_next_one_resumes():
    """After Lightning's SIGTERMException the process exits (status 0 unless caught): "fit on with this Trainer"
    could not be followed (a preemptible-cluster user's script)."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from lit_robust.callbacks._report_file import unwritten_report_note

    said = unwritten_report_note("ITLM", SIGTERMException())
    assert said.startswith("ITLM: the fit stopped (SIGTERMException) before its end, so no per-sample report was "
                           "written. The process exits now (Lightning raises `SystemExit`, status 0 unless you catch "
                           "it): in the next process resume from the last checkpoint") and "this Trainer" not in said
    # a LightningCLI user followed "ckpt_path='last' with save_last=True" with no `dirpath`: Lightning looked in the
    # new run's logger folder, found nothing and trained from scratch, without a word from lit_robust
    assert ("`ckpt_path=\"last\"` with a `ModelCheckpoint(dirpath=<a fixed folder>, save_last=True)` (without a "
            "`dirpath`, \"last\" looks in the new run's own logger folder, finds nothing and trains from scratch)") in said
    assert "Fit on with this Trainer" in unwritten_report_note("ITLM", KeyboardInterrupt())
    # an error raises again on a fit that goes on unchanged (a Lightning user's refused `val_check_interval`)
    said = unwritten_report_note("ITLM", ValueError("`val_check_interval` must be in [1, 13]"))
    assert "Once the error's cause is mended, fit on with this Trainer" in said and "Fit on" not in said


def test_a_ddp_fit_stopped_by_an_error_is_told_to_resume_in_a_new_run(monkeypatch):
    """Under DDP a process that raised ends the others: a DDP newcomer was told to call `trainer.fit` again."""
    from lit_robust.callbacks._report_file import unwritten_report_note
    from lit_robust.selection import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    said = unwritten_report_note("BatchFilter", ValueError("a NaN loss on rank 1"))
    assert said == ("BatchFilter: the fit stopped (ValueError) before its end, so no per-sample report was written "
                    "(`report_path` is None). Under DDP the processes end with it: resume, once the error's cause is "
                    "mended, in a new run from the last checkpoint (`ckpt_path=...`), and the report is written at "
                    "the fit's end.")


def test_under_the_cli_a_stopped_fit_says_how_the_command_resumes(monkeypatch):
    """A pre-empted CLI newcomer's log said first "status 0 unless you catch it" and `ModelCheckpoint(dirpath=...)`,
    then the CLI's own line said exit status 143 and `--ckpt_path last` (which needs no dirpath there)."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from lit_robust._lightning import RUN_ID_VARIABLE
    from lit_robust.callbacks._report_file import unwritten_report_note

    monkeypatch.setenv(RUN_ID_VARIABLE, "a-command")
    for stop in (SIGTERMException(), KeyboardInterrupt()):
        assert unwritten_report_note("ITLM", stop) == (
            f"ITLM: the fit stopped ({type(stop).__name__}) before its end, so no per-sample report was written; the "
            "fit resumed with the same command and `--ckpt_path last` writes it at its end.")
    # an error raises again on the same command: resumed once its cause is mended (a reviewer's)
    assert ("the fit resumed, once the error's cause is mended, with the same command and `--ckpt_path last`"
            in unwritten_report_note("ITLM", ValueError("x")))


@pytest.mark.parametrize("name", ["coteaching", "rca"])
def test_a_module_whose_fit_stopped_while_training_says_it_wrote_no_report(tmp_path, name):
    """ITLM and BatchFilter said so through their `on_exception`; a module gets none, so CoTeaching and RCA bring a
    callback of their own (`configure_callbacks`)."""
    import warnings

    from lit_robust import RCA, TwoMoonsAnomalyDataModule

    pl.seed_everything(0, verbose=False)
    if name == "coteaching":
        module, data, owner = _co_teaching(tmp_path / "rep"), BlobsData(n=240), "CoTeaching"
    else:
        module, data, owner = RCA(dim=2, drop_ratio=0.1, report_dir=str(tmp_path / "rep")), \
            TwoMoonsAnomalyDataModule(n_train=200, n_test=50, batch_size=32), "RCA"
    with pytest.warns(UserWarning, match=rf"{owner}: the fit stopped \(RuntimeError\) before its end, so no "
                                         r"per-sample report was written \(`report_path` is None\)"):
        with pytest.raises(RuntimeError, match="stopped by the user"):
            tiny_trainer(tmp_path, 4, [InterruptAfterBatches(3)]).fit(module, data)
    assert module.report_path is None
    with warnings.catch_warnings(record=True) as caught:  # a fit stopped before training says nothing of a report
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="stopped before training"):
            tiny_trainer(tmp_path, 4, [StopAtTrainStart()]).fit(module, data)
    assert not [w for w in caught if "no per-sample report was written" in str(w.message)]


class InterruptAfterBatches(pl.Callback):
    """Raise after ``n`` training batches (a manual-optimisation module's `global_step` counts its optimizers)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_batch_end(self, *args):
        self.n -= 1
        if self.n == 0:
            raise RuntimeError("stopped by the user")


class StopAtTrainStart(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("stopped before training")


@pytest.mark.parametrize("name", ["itlm", "prl", "coteaching"])
def test_a_fit_on_a_finished_trainer_writes_no_report_and_keeps_the_earlier_path(tmp_path, name):
    """A notebook user's re-run cell fitted other labels on a finished Trainer: Lightning trained nothing, and the
    report was rewritten from the old fit ("replacing the file there"), or mixed with the new labels (ITLM)."""
    import re

    module = _co_teaching(tmp_path / "rep") if name == "coteaching" else TinyModel()
    cb = None if name == "coteaching" else MAKERS[name](tmp_path / "rep")
    owner = module if cb is None else cb
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 4, [] if cb is None else [cb])
    trainer.fit(module, BlobsData(n=240))
    path = owner.report_path
    before = open(path).read()
    other = BlobsData(n=240)
    other.ds.targets = (other.ds.targets + 1) % 3  # other labels
    with pytest.warns(UserWarning, match=re.escape(
            f"{type(owner).__name__}: this Trainer's earlier fit already reached `max_epochs`=4, so this fit trains "
            "nothing (a Trainer keeps its progress). Use a new Trainer for a new fit. No per-sample report written "
            f"(the earlier fit's is {path}).")):
        trainer.fit(module, other)
    assert open(path).read() == before and owner.report_path == path


def test_a_resume_on_the_same_trainer_is_not_called_a_fit_that_goes_on(tmp_path, monkeypatch):
    """A notebook user's `trainer.fit(..., ckpt_path="last")` after an interruption was told "this fit goes on from
    this Trainer's earlier fit ... for that, resume from a checkpoint", although it did, and it was exact."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    said = []
    monkeypatch.setattr("lit_robust.callbacks.itlm.rank_zero_info", said.append)
    cb = MAKERS["itlm"](tmp_path / "rep")
    pl.seed_everything(0, verbose=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_trainer(tmp_path, 4, [cb, InterruptAt(19), ckpt], enable_checkpointing=True)
    model = TinyModel()
    with pytest.raises(RuntimeError, match="stopped by the user"):
        trainer.fit(model, BlobsData(n=240))
    trainer.fit(model, BlobsData(n=240), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert not [t for t in said if "goes on from this Trainer's earlier fit" in t]
    assert len(cb.history) == 3


def test_co_teaching_and_rca_use_their_arguments_as_changed_between_fits(tmp_path):
    """A notebook user's `co.drop_ratio = 0.25; co.warmup_epochs = 1` on a module fitted before with "auto" still
    estimated (and `rca.drop_ratio = 0.1` too); BatchFilter and ITLM honoured such changes."""
    from lit_robust import RCA

    co = _co_teaching(tmp_path / "rep")
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 3, []).fit(co, BlobsData(n=240))
    assert co.history[-1].estimated_corruption is not None
    co.drop_ratio, co.warmup_epochs = 0.25, 1
    tiny_trainer(tmp_path, 3, []).fit(co, BlobsData(n=240))
    assert co.estimated_corruption is None and [r.drop_ratio for r in co.history] == pytest.approx([0.0, 0.25, 0.25])
    assert co.hparams.drop_ratio == 0.25 and co.hparams.warmup_epochs == 1  # what a checkpoint rebuilds
    co.drop_ratio = 0.7
    with pytest.raises(ValueError, match="drop_ratio"):
        tiny_trainer(tmp_path, 3, []).fit(co, BlobsData(n=240))

    from lit_robust import TwoMoonsAnomalyDataModule

    rca = RCA(2, hidden=8, latent=1, drop_ratio="auto", warmup_epochs=1, dropout=0.0)
    moons = TwoMoonsAnomalyDataModule(n_train=200, contamination=0.1, anomalies="uniform", n_test=100, seed=0)
    tiny_trainer(tmp_path, 2, []).fit(rca, moons)
    assert rca.estimated_corruption is not None
    rca.drop_ratio = 0.1
    tiny_trainer(tmp_path, 2, []).fit(rca, moons)
    assert rca.estimated_corruption is None and rca.keep_ratio_at(1) == pytest.approx(0.9)


def test_a_flows_drop_ratio_changed_between_fits_is_the_one_it_trims_at(tmp_path):
    """A notebook user's `flow.drop_ratio = 0.3` on a RobustRealNVP(drop_ratio=0.1) trimmed 10 of 100 samples (the
    constructor's filter) while `fit_threshold` defaulted to 0.3 and `hparams` kept 0.1: the change reaches the
    trimming filter, `hparams` (what a checkpoint rebuilds) and the default contamination alike; a flow built with
    drop_ratio=0 gains a filter, and a bad value is refused when set."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset, RealNVP, RobustRealNVP

    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(100, dtype=torch.long))), batch_size=20)
    for flow, before, after in ((RobustRealNVP(2, n_couplings=2, hidden=4, drop_ratio=0.1), 0.1, 0.3),
                                (RealNVP(2, n_couplings=2, hidden=4), 0.0, 0.2),
                                (RealNVP(2, n_couplings=2, hidden=4, drop_ratio=0.1), 0.1, "auto")):
        assert flow.drop_ratio == before
        flow.drop_ratio = after
        tiny_trainer(tmp_path, 1, []).fit(flow, loader)
        assert flow.drop_ratio == flow.hparams.drop_ratio == flow.batch_filter.drop_ratio == after
        if after == "auto":  # the module's score mixture, not a filter's default (label disagreement: no labels here)
            assert flow.batch_filter.estimator == "gmm" and flow.estimated_corruption is not None
        else:
            assert flow.batch_filter.history[-1].dropped == round(100 * after)
            flow.fit_threshold(x)
            assert flow.threshold_contamination == after
    with pytest.raises(ValueError, match=r"`drop_ratio` must be a number in \[0, 0.5\), got 0.5"):
        flow.drop_ratio = 0.5
    assert flow.drop_ratio == "auto"


def test_a_flows_drop_ratio_set_to_auto_speaks_for_the_flow(tmp_path):
    """`flow.drop_ratio = "auto"` on a RealNVP built with a number: the trimming filter built its `"auto"` estimator
    at the fit's setup under the name "BatchFilter", so its notes ("BatchFilter: `drop_ratio='auto'` with
    `warmup_epochs=0` fixes its estimate ...") named a filter the user never configured; they name the flow."""
    import warnings

    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset, RealNVP

    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(100, dtype=torch.long))), batch_size=20)
    flow = RealNVP(2, n_couplings=2, hidden=4, drop_ratio=0.1, warmup_epochs=0)  # 0: "auto" warns of it
    flow.drop_ratio = "auto"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 1, []).fit(flow, loader)
    said = [str(w.message) for w in caught]
    assert flow.batch_filter._auto.owner == "RealNVP"
    assert any(s.startswith("RealNVP: `drop_ratio='auto'`") for s in said), said
    assert not any(s.startswith("BatchFilter") for s in said), said


def test_a_fitted_callback_and_module_still_pickle(tmp_path):
    """`torch.save` of a fitted CoTeaching failed ("cannot pickle 'weakref.ReferenceType' object") once the state
    remembered its Trainer by a weak reference; so did pickling a fitted BatchFilter."""
    import io
    import pickle

    cb, co = MAKERS["prl"](tmp_path / "rep"), _co_teaching(tmp_path / "rep2")
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 2, [cb]).fit(TinyModel(), BlobsData(n=240))
    tiny_trainer(tmp_path, 2, []).fit(co, BlobsData(n=240))
    assert pickle.loads(pickle.dumps(cb)).history == cb.history
    torch.save(co, io.BytesIO())


@pytest.mark.parametrize("name", ["itlm", "prl"])
def test_a_trainer_finished_by_max_steps_trains_nothing_and_writes_no_report(tmp_path, name):
    """A reviewer's `max_steps=18` Trainer fitted again on other labels rewrote the report (Lightning trained
    nothing): only `max_epochs` was read as the end."""
    cb = MAKERS[name](tmp_path / "rep")
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 4, [cb], max_steps=18)
    trainer.fit(TinyModel(), BlobsData(n=240))
    path = cb.report_path
    before = open(path).read()
    other = BlobsData(n=240)
    other.ds.targets = (other.ds.targets + 1) % 3
    with pytest.warns(UserWarning, match=r"already reached `max_steps`=18, so this fit trains nothing"):
        trainer.fit(TinyModel(), other)
    assert open(path).read() == before and cb.report_path == path


def test_changed_auto_arguments_or_rounds_on_a_fit_that_goes_on_are_refused(tmp_path):
    """A reviewer's `auto_margin` set between two fits of one Trainer built a new estimator after the warm-up, which
    never estimated (two epochs dropped nothing); `round_epochs` [2, 2] then [1, 3] made 5 epochs of a 4-epoch fit."""
    cb = MAKERS["prl_auto"](tmp_path / "rep")
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 2, [cb])
    trainer.fit(TinyModel(), BlobsData(n=240))
    cb.auto_margin = 0.05
    trainer.fit_loop.max_epochs = 4
    with pytest.raises(ValueError, match=r"BatchFilter: its `drop_ratio` or `\"auto\"` arguments .* changed since this "
                                         r"Trainer's earlier fit, which this fit goes on from"):
        trainer.fit(TinyModel(), BlobsData(n=240))
    cb.auto_margin = 0.0  # set back: it goes on, with the estimate of the earlier fit
    trainer.fit(TinyModel(), BlobsData(n=240))
    assert [r.epoch for r in cb.history] == [0, 1, 2, 3] and all(r.drop_ratio > 0 for r in cb.history[1:])

    itlm = ITLM(keep_ratio=0.6, round_epochs=[2, 2], verbose=False, plot=False)
    trainer = tiny_trainer(tmp_path, 4, [itlm, InterruptAt(4)])
    with pytest.raises(RuntimeError, match="stopped by the user"):
        trainer.fit(TinyModel(), BlobsData(n=240))
    itlm.round_epochs = [1, 3]
    with pytest.raises(ValueError, match=r"`round_epochs` changed from \[2, 2\] to \[1, 3\] since this Trainer's "
                                         r"earlier fit"):
        trainer.fit(TinyModel(), BlobsData(n=240))


@pytest.mark.parametrize(("name", "value", "said"), [
    ("auto_margin", 0.2, "`auto_margin` 0.0 -> 0.2"),
    ("keep_ratio", 0.5, "`keep_ratio` 'auto' -> 0.5"),
    ("estimator", "gmm", "`estimator` 'floor_or_interior' -> 'gmm'"),
    ("reinit", False, "`reinit` True -> False"),
])
@pytest.mark.parametrize("finished", [False, True])
def test_itlms_settings_changed_between_two_fits_of_one_trainer_are_refused(tmp_path, name, value, said, finished):
    """docs/checkpoints.md said so, and only `round_epochs` was: a notebook newcomer's `itlm.auto_margin = 0.2` between
    two fits of one Trainer applied to the rounds left alone (kept 1500, 1023, 723: two settings in one history), and
    after a finished fit `itlm.keep_ratio = 0.8` changed nothing while the attribute read 0.8."""
    itlm = ITLM(keep_ratio="auto", round_epochs=[2, 2], verbose=False, plot=False)
    pl.seed_everything(42, verbose=False)  # the global seed, read at fit start, is no changed setting
    trainer = tiny_trainer(tmp_path, 4, [itlm] if finished else [itlm, InterruptAt(3)])
    if finished:
        trainer.fit(TinyModel(), BlobsData(n=240))
        itlm.round_epochs, trainer.fit_loop.max_epochs = [2, 3], 5  # a longer last round: "train more"
    else:
        with pytest.raises(RuntimeError, match="stopped by the user"):
            trainer.fit(TinyModel(), BlobsData(n=240))
    kept = [r.kept for r in itlm.history]
    if not finished:  # unchanged, it goes on (the seed read at the first fit's start is no change)
        trainer.fit(TinyModel(), BlobsData(n=240))
        kept = [r.kept for r in itlm.history]
        itlm.round_epochs, trainer.fit_loop.max_epochs = [2, 3], 5
    setattr(itlm, name, value)
    with pytest.raises(ValueError, match=re.escape(f"{said} since this Trainer's earlier fit, which this fit goes on "
                                                   "from: its rounds keep the earlier settings.")):
        trainer.fit(TinyModel(), BlobsData(n=240))
    assert [r.kept for r in itlm.history] == kept  # nothing trained


def test_itlm_attributes_set_between_fits_are_checked_as_the_constructor_checks_them(tmp_path):
    """A notebook newcomer's `itlm.reinit = "restor"` ran as True, `itlm.per_class = "yes"` as a per-class trim."""
    for name, value, error in (("reinit", "restor", "`reinit` must be True, False or 'restore', got 'restor'."),
                               ("per_class", "yes", "`per_class` must be True or False, got 'yes'.")):
        itlm = ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False)
        setattr(itlm, name, value)
        with pytest.raises((ValueError, TypeError), match=re.escape(error)):
            tiny_trainer(tmp_path, 2, [itlm]).fit(TinyModel(), BlobsData())


def test_a_fit_refused_at_train_start_does_not_say_it_wrote_no_report(tmp_path):
    """A reviewer's fit refused at train start (a Trainer whose state another Trainer's fit replaced) was also told
    "the fit stopped ... Fit on with this Trainer", the very thing refused."""
    import warnings

    cb = MAKERS["prl"](tmp_path / "rep")
    pl.seed_everything(0, verbose=False)
    a = tiny_trainer(tmp_path / "a", 4, [cb, InterruptAt(11)])
    with pytest.raises(RuntimeError, match="stopped by the user"):
        a.fit(TinyModel(), BlobsData(n=240))
    tiny_trainer(tmp_path, 2, [cb]).fit(TinyModel(), BlobsData(n=240))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="has served another Trainer's fit since"):
            a.fit(TinyModel(), BlobsData(n=240))
    assert not [w for w in caught if "no per-sample report was written" in str(w.message)]


def test_rca_reads_hparams_warmup_epochs_at_each_fit_and_checks_it(tmp_path):
    """RCA keeps `warmup_epochs` in `hparams` (no attribute of its own): a reviewer's -3 there failed mid-fit with
    "keep_ratio must be in (0, 1], got 1.0666"."""
    from lit_robust import RCA, TwoMoonsAnomalyDataModule

    rca = RCA(2, hidden=8, latent=1, drop_ratio=0.2, warmup_epochs=0, dropout=0.0)
    moons = TwoMoonsAnomalyDataModule(n_train=200, contamination=0.1, anomalies="uniform", n_test=100, seed=0)
    rca.hparams.warmup_epochs = 4
    tiny_trainer(tmp_path, 2, []).fit(rca, moons)
    assert rca.keep_ratio_at(1) == pytest.approx(1 - 0.2 / 4)
    rca.hparams.warmup_epochs = -3
    with pytest.raises(ValueError, match=r"`warmup_epochs` must be an integer >= 0 or None \(.*\), got -3"):
        tiny_trainer(tmp_path, 2, []).fit(rca, moons)


def test_rca_drop_ratio_is_one_value_in_the_attribute_and_hparams(tmp_path):
    """`rca.hparams.drop_ratio = 0.3` (what a checkpoint saves, as `hparams.warmup_epochs` beside it) was overwritten
    at setup by the constructor's 0.2 without a word: the attribute and `hparams` are now one value."""
    from lit_robust import RCA, TwoMoonsAnomalyDataModule

    rca = RCA(2, hidden=8, latent=1, drop_ratio=0.2, warmup_epochs=0, dropout=0.0)
    moons = TwoMoonsAnomalyDataModule(n_train=200, contamination=0.1, anomalies="uniform", n_test=100, seed=0)
    rca.hparams.drop_ratio = 0.3
    assert rca.drop_ratio == 0.3
    tiny_trainer(tmp_path, 1, []).fit(rca, moons)
    assert rca.hparams.drop_ratio == 0.3 and rca.keep_ratio_at(0) == pytest.approx(0.7)
    rca.drop_ratio = 0.1  # the attribute API sets the same value
    assert rca.hparams.drop_ratio == 0.1
    rca.hparams.drop_ratio = 0.6
    with pytest.raises(ValueError, match=r"`drop_ratio` must be a number in \[0, 0.5\), got 0.6"):
        tiny_trainer(tmp_path / "bad", 1, []).fit(rca, moons)


@pytest.mark.parametrize("flow_name", ["RealNVP", "RobustRealNVP"])
def test_flow_filter_ramps_over_the_warmup_epochs_in_hparams(tmp_path, flow_name):
    """The flows' own filter was built with the constructor's warm-up: `hparams.warmup_epochs` set afterwards (what
    a checkpoint saves and RCA reads) was shown but not used, the filter dropping the full ratio from epoch 0."""
    import lit_robust
    from lit_robust import TwoMoonsAnomalyDataModule

    cls = getattr(lit_robust, flow_name)
    moons = TwoMoonsAnomalyDataModule(n_train=200, contamination=0.1, anomalies="uniform", n_test=100, seed=0)
    pl.seed_everything(0, verbose=False)
    flow = cls(2, n_couplings=2, hidden=8, drop_ratio=0.2)
    trainer = tiny_trainer(tmp_path, 2, [])
    trainer.fit(flow, moons)
    assert [r.drop_ratio for r in flow.batch_filter.history] == [0.2, 0.2]  # no warm-up by default
    path = tmp_path / "flow.ckpt"
    trainer.save_checkpoint(path)

    loaded = cls.load_from_checkpoint(path, warmup_epochs=4)  # Lightning's override of a saved hyper-parameter
    assert loaded.hparams.warmup_epochs == 4
    tiny_trainer(tmp_path / "a", 2, []).fit(loaded, moons)
    assert [r.drop_ratio for r in loaded.batch_filter.history] == pytest.approx([0.0, 0.2 / 4])

    loaded.hparams.warmup_epochs = 2  # set between fits
    tiny_trainer(tmp_path / "b", 2, []).fit(loaded, moons)
    assert [r.drop_ratio for r in loaded.batch_filter.history] == pytest.approx([0.0, 0.2 / 2])
    loaded.hparams.warmup_epochs = -3
    with pytest.raises(ValueError, match=r"`warmup_epochs` must be an integer >= 0 or None \(.*\), got -3"):
        tiny_trainer(tmp_path / "c", 2, []).fit(loaded, moons)


@pytest.mark.parametrize("flow_name", ["RealNVP", "RobustRealNVP"])
def test_flow_trims_at_the_drop_ratio_in_hparams(tmp_path, flow_name):
    """`flow.hparams.drop_ratio = 0.3` (what a checkpoint saves) was shown but not used: the filter trimmed the
    constructor's ratio, and a plain flow's (0) trimmed nothing."""
    import lit_robust
    from lit_robust import TwoMoonsAnomalyDataModule

    cls = getattr(lit_robust, flow_name)
    moons = TwoMoonsAnomalyDataModule(n_train=200, contamination=0.1, anomalies="uniform", n_test=100, seed=0)
    pl.seed_everything(0, verbose=False)
    flow = cls(2, n_couplings=2, hidden=8, drop_ratio=0.0 if flow_name == "RealNVP" else 0.2)
    flow.hparams.drop_ratio = 0.3
    tiny_trainer(tmp_path, 1, []).fit(flow, moons)
    assert flow.drop_ratio == 0.3 and [r.drop_ratio for r in flow.batch_filter.history] == [0.3]
    flow.hparams.drop_ratio = 0.6
    with pytest.raises(ValueError, match=r"`drop_ratio` must be a number in \[0, 0.5\), got 0.6"):
        tiny_trainer(tmp_path / "bad", 1, []).fit(flow, moons)


def test_a_no_op_fit_of_a_finished_trainer_after_another_trainer_uses_nothing_of_its_state(tmp_path):
    """A reviewer's finished Trainer A, then B on a set of another size, then A again (nothing to train): it crashed on
    "the training set changed size (150 -> 120)", and with equal sizes rewrote A's score plot with B's rounds."""
    cb = ITLM(keep_ratio=0.6, round_epochs=[1, 1], verbose=False, plot=True, plot_dir=str(tmp_path / "plot"))
    pl.seed_everything(0, verbose=False)
    a = tiny_trainer(tmp_path, 2, [cb])
    a.fit(TinyModel(), BlobsData(n=120))
    tiny_trainer(tmp_path, 2, [cb]).fit(TinyModel(), BlobsData(n=150))
    b_history, plot = [repr(r) for r in cb.history], open(cb.plot_path, "rb").read()
    with pytest.warns(UserWarning, match="already reached `max_epochs`=2, so this fit trains nothing"):
        a.fit(TinyModel(), BlobsData(n=120))
    assert [repr(r) for r in cb.history] == b_history and open(cb.plot_path, "rb").read() == plot


def test_a_longer_last_round_on_a_fit_that_goes_on_is_allowed(tmp_path):
    """"Train more epochs" on the same Trainer: only the last round grows (ActivationClustering's last round follows
    `max_epochs`, and a reviewer's longer fit was refused over a `round_epochs` its user never set)."""
    from lit_robust import ActivationClustering

    ac = ActivationClustering(warmup_epochs=1, verbose=False)
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 2, [ac])
    trainer.fit(TinyModel(), BlobsData(n=240))
    trainer.fit_loop.max_epochs = 4
    trainer.fit(TinyModel(), BlobsData(n=240))
    assert ac.round_epochs == [1, 3] and [(r.round, r.epochs) for r in ac.history] == [(0, 1), (1, 3)]


class _RangedBlobs(BlobsData):
    """Blobs declaring `value_range`; with `clamp` their inputs are clamped into it (else they span about [-5, 5])."""

    def __init__(self, value_range, clamp: bool = True) -> None:
        super().__init__(n=96)
        self.value_range = value_range
        if clamp:
            self.ds.dataset.tensors[0].clamp_(*value_range)


def _fit_trigger(tmp_path, at, data):
    pl.seed_everything(0, verbose=False)
    model = TinyModel()
    tiny_trainer(tmp_path, 1, [at]).fit(model, data)
    return model


def test_a_reused_adversarial_trigger_clips_into_each_fits_own_datamodule_range(tmp_path):
    """A reviewer's `AdversarialTrigger()` (value_range "datamodule") reused for a second datamodule kept the first
    one's range: the second fit trained on inputs clipped into [-1, 6] though its data declared [-10, 10]."""
    from lit_robust import AdversarialTrigger

    reused = AdversarialTrigger(tau=0.5)
    _fit_trigger(tmp_path, reused, _RangedBlobs((-1.0, 6.0)))
    got = _fit_trigger(tmp_path, reused, _RangedBlobs((-10.0, 10.0)))
    expected = _fit_trigger(tmp_path, AdversarialTrigger(tau=0.5), _RangedBlobs((-10.0, 10.0)))
    for a, b in zip(got.parameters(), expected.parameters()):
        assert torch.equal(a, b)
    assert reused.value_range == "datamodule" and reused.clip_range == (-10.0, 10.0)  # the argument kept as given


def test_a_reused_adversarial_trigger_checks_the_range_of_each_fits_first_batch(tmp_path):
    """The first fit's epoch-0 range check stood for the second fit's epoch 0 too: inputs outside `value_range` were
    clipped into it without the error a new instance gives."""
    from lit_robust import AdversarialTrigger

    at = AdversarialTrigger(tau=0.1, value_range=(-1.0, 6.0))
    _fit_trigger(tmp_path, at, _RangedBlobs((-1.0, 6.0)))
    with pytest.raises(ValueError, match=r"`training inputs` must lie in the declared `value_range` \[-1, 6\]"):
        _fit_trigger(tmp_path, at, _RangedBlobs((-1.0, 6.0), clamp=False))


class FailAtEpochStart(pl.Callback):
    def __init__(self, epoch: int, exc: type[BaseException]) -> None:
        self.epoch, self.exc = epoch, exc

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise self.exc("stopped by the user")


@pytest.mark.parametrize("owner, exc", [("ITLM", RuntimeError), ("ITLM", KeyboardInterrupt),
                                        ("ActivationClustering", RuntimeError)])
def test_a_failed_round_fit_gives_the_datamodule_its_own_train_dataloader_back(tmp_path, owner, exc):
    """Reviewer: an ITLM fit that raised in round 1 left the datamodule's `train_dataloader` patched (Lightning calls
    no callback `teardown` after a fit that raised, nor after a KeyboardInterrupt), and a later plain fit on the same
    datamodule trained on ITLM's old selection only (32 of 64 samples)."""
    import signal

    from lit_robust import ActivationClustering

    data = BlobsData(n=96, batch_size=32)
    cb = (ITLM(keep_ratio=0.5, round_epochs=[1, 1], verbose=False, plot=False, report=False) if owner == "ITLM"
          else ActivationClustering(warmup_epochs=1, verbose=False, report=False))
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after a KeyboardInterrupt
    try:
        with pytest.raises(SystemExit if exc is KeyboardInterrupt else RuntimeError):
            tiny_trainer(tmp_path, 2, [cb, FailAtEpochStart(1, exc)]).fit(TinyModel(), data)
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert "train_dataloader" not in vars(data)
    module = TinyModel()
    tiny_trainer(tmp_path, 1).fit(module, data)
    assert torch.cat(module.seen).unique().numel() == 96


class RaiseInStep(TinyModel):
    """Raises inside its training step (after the callbacks' batch-start hooks) at global step ``at``."""

    at: int | None = 3

    def training_step(self, batch, batch_idx):
        if self.global_step == self.at:
            raise RuntimeError("a bug in the step")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("rule", ["prl", "prl_g"])
def test_a_filter_whose_fit_raised_leaves_the_module_as_it_found_it(tmp_path, rule):
    """Sweep user: Lightning calls no `teardown` after a fit that raised, so the filter stayed among the module's
    selectors and PRL(G)'s hooks, left recording by the step that raised, kept every later forward of the module
    (its autograd graph too) in a list nothing cleared (42 calls after one more epoch on digits)."""
    module = RaiseInStep()
    with pytest.raises(RuntimeError, match="a bug in the step"):
        tiny_trainer(tmp_path, 2, [BatchFilter(rule, drop_ratio=0.3)]).fit(module, BlobsData(n=96))
    assert module.batch_selectors == []
    assert all(not m._forward_hooks for m in module.modules())
    module.at = None
    tiny_trainer(tmp_path, 1).fit(module, BlobsData(n=96))  # the same module goes on, plainly
    assert module.batch_selectors == []


def test_an_adversarial_trigger_whose_fit_raised_does_not_leave_the_selectors_paused(tmp_path):
    """Sweep user: a step that raised under `AdversarialTrigger(filter_in="inner")` left the module's selectors paused
    (Lightning calls no `teardown` after a fit that raised), and the next fit of the module under a BatchFilter
    filtered nothing (`seen=0`), told only that its training step never called `reduce_loss`."""
    from lit_robust import AdversarialTrigger

    module = RaiseInStep()
    trigger = AdversarialTrigger(0.1, value_range=None, filter_in="inner")
    with pytest.raises(RuntimeError, match="a bug in the step"):
        tiny_trainer(tmp_path, 2, [BatchFilter("prl", drop_ratio=0.3), trigger]).fit(module, BlobsData(n=96))
    assert not module.selectors_paused
    module.at = None
    again = BatchFilter("prl", drop_ratio=0.25)
    tiny_trainer(tmp_path, 1, [again]).fit(module, BlobsData(n=96))
    assert (again.history[0].seen, again.history[0].dropped) == (96, 24)


@pytest.mark.parametrize("name", ["itlm", "prl"])
def test_a_fit_refused_before_training_keeps_the_earlier_reports_path(tmp_path, name):
    """A notebook newcomer raised `max_epochs` past ITLM's rounds: the fit was refused, the earlier report stayed on
    disk, but `report_path` became None and the next cell's `load_report(itlm.report_path)` failed."""
    cb = MAKERS[name](tmp_path / "rep")
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 4, [cb])
    trainer.fit(TinyModel(), BlobsData(n=240))
    path = cb.report_path
    assert path is not None and load_report(path) is not None
    if name == "itlm":  # the newcomer's: more epochs than the rounds add up to, refused at setup
        with pytest.raises(ValueError, match=r"`round_epochs` must add up to the Trainer's `max_epochs`"):
            tiny_trainer(tmp_path, 5, [cb]).fit(TinyModel(), BlobsData(n=240))
    else:  # a module without the mixin, refused at setup once the fit has begun
        with pytest.raises(TypeError, match="RobustMixin"):
            tiny_trainer(tmp_path, 4, [cb]).fit(_PlainModule(), BlobsData(n=240))
    assert cb.report_path == path


class _PlainModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 3)

    def training_step(self, batch, batch_idx):
        return self.net(batch[1]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("name", ["itlm", "prl"])
def test_every_no_op_refit_of_a_finished_trainer_is_said(tmp_path, name):
    """A notebook newcomer's second re-run of the fit cell on a finished Trainer was silent: Python's default warning
    filter shows a warning once per place, and the callbacks said it from one."""
    import warnings

    cb = MAKERS[name](tmp_path / "rep")
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, sum(cb.round_epochs) if name == "itlm" else 2, [cb])
    trainer.fit(TinyModel(), BlobsData(n=120))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own: once per place, as in a notebook
        for _ in range(3):
            trainer.fit(TinyModel(), BlobsData(n=120))
    assert sum("so this fit trains nothing" in str(w.message) for w in caught) == 3
