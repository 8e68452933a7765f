"""ITLM under DDP on CPU (gloo, 2 processes, ``ddp_spawn``): exact selection and resume."""

import json
import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lit_robust import ITLM, IndexedDataset
from lit_robust.selection.rules import per_class_trim_mask, trim_mask
from tests.conftest import TinyModel, blobs, ddp_cpu_strategy


class TiedNaNModel(TinyModel):
    """Scores rounded to 1 decimal (many exact ties) and NaN for every 7th sample."""

    def sample_scores(self, batch):
        s = (super().sample_scores(batch) * 10).round() / 10
        return torch.where(batch[0] % 7 == 0, torch.full_like(s, math.nan), s)


class ClassTwoHigh(TiedNaNModel):
    """Every sample labelled 2 scores above every other finite score: one trim drops the class whole."""

    def sample_scores(self, batch):
        return super().sample_scores(batch) + 100.0 * (batch[2] == 2).float()


class OddBlobs(pl.LightningDataModule):
    def __init__(self, n: int = 241, no_targets: bool = False) -> None:
        super().__init__()
        self.ds = blobs(n)
        if no_targets:  # labels read one sample at a time (an image folder's): the dataset holds none to look at
            from tests.test_itlm import _PairsWithoutTargets

            self.ds = IndexedDataset(_PairsWithoutTargets(self.ds.dataset.tensors[0], self.ds.targets),
                                     corrupted=self.ds.corrupted)

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=16, shuffle=True)


class CheckAgainstOneProcess(pl.Callback):
    """After ITLM selects (it runs earlier in the callback list), recompute on rank 0 without any dist call."""

    def __init__(self, itlm: ITLM, out: str) -> None:
        self.itlm, self.out, self.records = itlm, out, []

    def on_train_epoch_end(self, trainer, pl_module):
        last = trainer.current_epoch + 1 == trainer.max_epochs  # no new selection after the last round
        if trainer.global_rank != 0 or self.itlm.selection is None or last:
            return
        ds = trainer.datamodule.ds
        was = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            batch = next(iter(DataLoader(ds, batch_size=len(ds))))
            scores = pl_module.sample_scores(batch)
        pl_module.train(was)
        if self.itlm.per_class:
            expected = torch.nonzero(per_class_trim_mask(scores, batch[2], self.itlm.keep_ratio, batch[0])).flatten()
        else:
            expected = torch.nonzero(trim_mask(scores, self.itlm.keep_ratio, batch[0])).flatten()
        self.records.append({"epoch": trainer.current_epoch, "round": self.itlm.current_round,
                             "equal": torch.equal(expected, self.itlm.selection),
                             "kept": int(self.itlm.selection.numel())})

    def on_fit_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            with open(self.out, "w") as f:
                json.dump({"records": self.records, "selection": self.itlm.selection.tolist(),
                       "said_padding": "padding" in self.itlm._said,
                           "said_own_sampler": "own sampler" in self.itlm._said,
                           "history": [r.kept for r in self.itlm.history],
                           "low_classes": sorted(self.itlm._low_classes.items()),
                           "weights": [p.detach().flatten().tolist() for p in pl_module.parameters()]}, f)


def ddp_fit(tmp_path, name, ckpt_path=None, model_cls=TiedNaNModel, epochs=(1, 1, 1), strategy="ddp_spawn",
            per_class=False, no_targets=False, use_distributed_sampler=True):
    pl.seed_everything(0, verbose=False)
    itlm = ITLM(keep_ratio=0.6, round_epochs=list(epochs), verbose=False, plot=False, per_class=per_class)
    out = str(tmp_path / f"{name}.json")
    cbs = [itlm, CheckAgainstOneProcess(itlm, out),
           ModelCheckpoint(dirpath=tmp_path / name, save_top_k=-1, every_n_epochs=1, filename="{epoch}")]
    trainer = pl.Trainer(max_epochs=sum(epochs), accelerator="cpu", devices=2, strategy=strategy, callbacks=cbs,
                         logger=False, enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                         use_distributed_sampler=use_distributed_sampler)
    trainer.fit(model_cls(), OddBlobs(no_targets=no_targets), ckpt_path=ckpt_path)
    with open(out) as f:
        return json.load(f)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_selection_equals_one_process_and_resume_reproduces(tmp_path):
    full = ddp_fit(tmp_path, "full")  # ddp_spawn: Lightning's spawn launcher, as users run it
    assert [r["round"] for r in full["records"]] == [1, 2]
    assert all(r["equal"] for r in full["records"]), full["records"]
    assert full["history"] == [241, 144, 144]
    assert not any(i % 7 == 0 for i in full["selection"])  # NaN scores dropped first
    assert not full["said_own_sampler"]  # Lightning's DistributedSampler: nothing to say
    # forked ranks (tests.conftest.ddp_cpu_strategy) resume from the spawned ranks' checkpoint
    resumed = ddp_fit(tmp_path, "resumed", ckpt_path=tmp_path / "full" / "epoch=0.ckpt", strategy=ddp_cpu_strategy())
    assert resumed["selection"] == full["selection"]
    assert resumed["weights"] == full["weights"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_per_class_selection_equals_one_process(tmp_path):
    """``per_class=True`` on two ranks, each scoring its own block: one trim per class over both ranks' scores. Under
    ``use_distributed_sampler=False`` too, which ITLM's own sampler does not follow, and says so (a DDP user's flag
    went without a word)."""
    run = ddp_fit(tmp_path, "per_class", strategy=ddp_cpu_strategy(), per_class=True, use_distributed_sampler=False)
    assert [r["round"] for r in run["records"]] == [1, 2]
    assert all(r["equal"] for r in run["records"]), run["records"]
    assert run["said_padding"]  # 241 samples over 2 ranks: the sampler repeats one, and ITLM says so
    assert run["said_own_sampler"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_class_share_warning_reads_labels_off_each_ranks_batches(tmp_path):
    """A dataset that holds no labels (an image folder's): the class-share check gathers the labels every rank read
    in its scoring pass, and the selection is still the one process's."""
    run = ddp_fit(tmp_path, "no_targets", model_cls=ClassTwoHigh, strategy=ddp_cpu_strategy(), no_targets=True)
    assert all(r["equal"] for r in run["records"]), run["records"]
    assert [c for c, _ in run["low_classes"]] == [2]  # class 2 found kept far under the overall share


DDP_SCRIPT = '''
import json, sys
import pytorch_lightning as pl
sys.path.insert(0, {repo!r})
from lit_robust import ITLM
from tests.test_itlm_ddp import CheckAgainstOneProcess, OddBlobs, TiedNaNModel

pl.seed_everything(0, verbose=False)
itlm = ITLM(keep_ratio=0.6, round_epochs=[1, 1, 1], verbose=False, plot=False)
trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                     callbacks=[itlm, CheckAgainstOneProcess(itlm, {out!r})], enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(TiedNaNModel(), OddBlobs())
'''


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_script_launcher_strategy(tmp_path):
    """strategy="ddp" re-launches the script once per rank (Lightning's subprocess launcher)."""
    import os

    from tests import _script_runner
    from tests.conftest import REPO

    out = tmp_path / "ddp.json"
    script = tmp_path / "run_ddp.py"
    script.write_text(DDP_SCRIPT.format(repo=str(REPO), out=str(out)))
    # rank 0 forked from a server that has imported torch (tests/_script_runner.py); Lightning starts rank 1 as
    # `python run_ddp.py`
    proc = _script_runner.run([script], cwd=tmp_path, env=dict(os.environ), repo=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["round"] for r in result["records"]] == [1, 2]
    assert all(r["equal"] for r in result["records"])
    assert result["history"] == [241, 144, 144]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.timeout(300)
def test_ddp_fit_with_itlm_at_its_defaults_ends_and_writes_its_plot(tmp_path, capsys):
    """ITLM as `lit-robust fit` builds it (plot and round table on, a logger): a newcomer's every 2-process ITLM fit
    ended in a gloo error, because the rank-0 plot at fit end asked `trainer.log_dir`, a collective under DDP."""
    from pathlib import Path

    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                         callbacks=[ITLM(keep_ratio=0.6, round_epochs=[1, 1])], default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyModel(), OddBlobs())
    plots = list(Path(tmp_path).rglob("itlm_scores.png"))
    assert len(plots) == 1 and plots[0].stat().st_size > 0, plots


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.timeout(300)
def test_ready_made_modules_average_their_validation_loss_over_the_ranks(tmp_path):
    """`val_loss` of ImageClassifier was rank 0's half of the validation set under DDP (a newcomer's ITLM round table
    read 1.3543 at 2 processes, 1.3348 at 1, with equal weights); now the mean over every rank's batches."""
    import torch.nn.functional as F
    from torch.utils.data import TensorDataset

    from lit_robust import ImageClassifier

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(backbone="mlp")
    with torch.no_grad():
        expected = float(F.cross_entropy(model(x), y))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(), logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    # each rank: one batch of 32, whose losses differ
    trainer.validate(model, DataLoader(TensorDataset(x, y), batch_size=32))
    assert float(trainer.callback_metrics["val_loss"]) == pytest.approx(expected, rel=1e-5)


class PerRankITLM(ITLM):
    """An ITLM whose settings (or training set) differ on rank 1, as a DDP newcomer's per-process config did."""

    def __init__(self, what: str, **kw):
        super().__init__(**kw)
        self.what = what

    def setup(self, trainer, pl_module, stage):
        if trainer.global_rank == 1:
            if self.what == "keep_ratio":
                self.keep_ratio = 0.5
            elif self.what == "round_epochs":
                self.round_epochs = [1, 3]
        super().setup(trainer, pl_module, stage)


class PerRankData(OddBlobs):
    def setup(self, stage):
        if self.trainer.global_rank == 1:
            self.ds = blobs(200)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("what, named", [
    ("keep_ratio", r"ITLM: `keep_ratio` differs between the processes of this DDP fit \(`keep_ratio`: 0.6, 0.5, in "
                   r"rank order\)"),
    ("round_epochs", r"ITLM: `round_epochs` differs between the processes of this DDP fit \(`round_epochs`: \[2, 2\], "
                     r"\[1, 3\], in rank order\)"),
    ("data", r"ITLM: the training set's length differs between the processes of this DDP fit \(the training set's "
             r"length: 241, 200, in rank order\)"),
])
def test_settings_that_differ_between_the_processes_are_named_not_hung(tmp_path, what, named):
    """A DDP newcomer's `round_epochs` differing between the processes hung the fit in a collective (SIGTERM
    ignored, 10 min until `kill -9`); a differing `keep_ratio` trained silently on a selection of neither; training
    sets of 1,500 and 1,400 hung. Every rank now raises at train start, naming every process's value (each had named
    its own alone)."""
    itlm = PerRankITLM("data" if what == "data" else what, keep_ratio=0.6, round_epochs=[2, 2], verbose=False,
                       plot=False, report=False)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(), callbacks=[itlm],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(Exception, match=named):
        trainer.fit(TinyModel(), PerRankData() if what == "data" else OddBlobs())


class TwoSamples(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.ds = blobs(2)

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=4, shuffle=True)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_with_fewer_samples_than_ranks_selects_as_one_process(tmp_path):
    """A reviewer's 2 samples on 3 ranks: the rank whose scoring block is empty raised "the scoring loader yielded no
    batches." alone, and the others died. It now scores nothing, and the selection is one process's."""
    out = tmp_path / "selection.json"

    class Record(pl.Callback):
        def __init__(self, itlm):
            self.itlm = itlm

        def on_fit_end(self, trainer, pl_module):
            if trainer.global_rank == 0:
                out.write_text(json.dumps({"selection": self.itlm.selection.tolist(),
                                           "kept": [r.kept for r in self.itlm.history]}))

    def fit(devices, strategy):
        pl.seed_everything(0, verbose=False)
        itlm = ITLM(keep_ratio=0.5, round_epochs=[1, 1], verbose=False, plot=False)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=devices, strategy=strategy,
                             callbacks=[itlm, Record(itlm)], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, deterministic=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            trainer.fit(TinyModel(), TwoSamples())
        finally:
            torch.set_num_threads(threads)
        return json.loads(out.read_text())

    one = fit(1, "auto")
    three = fit(3, ddp_cpu_strategy())
    assert one["kept"] == three["kept"] == [2, 1] and three["selection"] == one["selection"]


class _RoundLosses(pl.Callback):
    """Rank 0 writes ITLM's round records' training losses at fit end."""

    def __init__(self, itlm: ITLM, out: str) -> None:
        self.itlm, self.out = itlm, out

    def on_fit_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            with open(self.out, "w") as f:
                json.dump([[r.first_epoch_loss, r.last_epoch_loss, r.first_epoch_log_loss, r.last_epoch_log_loss,
                            r.collapsed] for r in self.itlm.history], f)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_resume_inside_an_epoch_keeps_every_ranks_part_of_the_rounds_loss(tmp_path):
    """A checkpoint written inside an epoch (`every_n_train_steps`) held rank 0's part alone of the epoch's training
    loss not yet added over the ranks: a 2-rank fit resumed there recorded round losses up to 0.06 off the
    uninterrupted fit's (the round lines and the collapse rule read them). Each rank's part is saved and restored,
    of the log-scale mean of the per-sample losses (the collapse rule's) too."""

    def fit(name, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        itlm = ITLM(keep_ratio=0.6, round_epochs=[2, 1], verbose=False, plot=False, report=False)
        out = str(tmp_path / f"{name}.json")
        saves = ModelCheckpoint(dirpath=tmp_path / name, save_top_k=-1, every_n_train_steps=3, filename="{step}")
        trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                             callbacks=[itlm, _RoundLosses(itlm, out), saves], logger=False,
                             enable_progress_bar=False, enable_model_summary=False, deterministic=True)
        trainer.fit(TinyModel(), OddBlobs(), ckpt_path=ckpt_path)  # 8 steps an epoch on each rank in round 0
        with open(out) as f:
            return json.load(f)

    full = fit("full")
    assert all(None not in r[:4] for r in full), full
    for step in (3, 9):  # inside epoch 0 (its first epoch's loss) and inside epoch 1 (its last)
        assert fit(f"resumed{step}", tmp_path / "full" / f"step={step}.ckpt") == full, step
