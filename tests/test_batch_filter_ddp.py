"""Per-batch filters with ``scope="global"`` on two real gloo ranks (``ddp_cpu_strategy``: forked where safe):
every step's masks equal a one-process trim of the union of the ranks' batches (first occurrence of a repeated index
only)."""

import csv
import json
import math
import warnings
from dataclasses import asdict

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import AdversarialTrigger, BatchFilter, CoTeaching, IndexedDataset
from tests.conftest import TinyModel, blobs, ddp_cpu_strategy, fit_ranks


class OddBlobs(pl.LightningDataModule):
    """241 samples in one batch per rank: the DistributedSampler pads rank 1's batch with a repeat of an index
    in rank 0's batch of the same step."""

    def __init__(self) -> None:
        super().__init__()
        self.ds = blobs(241)

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=128, shuffle=True)


class SpyFilter(BatchFilter):
    def __init__(self, *args, out: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.out, self.steps = out, []

    def keep_mask(self, losses, batch, outputs, module):
        mask = super().keep_mask(losses, batch, outputs, module)
        if self._trainer is not None and self._trainer.training:
            eps = self.drop_ratio_at(self._trainer.current_epoch)
            scores = self.scores(losses, batch, outputs, module) if eps > 0 else torch.zeros_like(losses)
            self.steps.append({"index": batch[0].tolist(), "scores": scores.tolist(), "masks": [mask.tolist()],
                               "eps": eps})
        return mask

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)  # writes the report
        with open(f"{self.out}.{trainer.global_rank}", "w") as f:
            json.dump(self.steps, f)
        dump_outcome(self, trainer.global_rank)


class SpyCoTeaching(CoTeaching):
    def __init__(self, *args, out: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.out, self.steps = out, []

    def selections(self, batch, losses, outputs, drop_ratio):
        keep1, keep2 = super().selections(batch, losses, outputs, drop_ratio)
        if drop_ratio > 0:
            # the reference needs each network's own scores: SPL scores are the losses themselves
            self.steps.append({"index": batch[0].tolist(), "scores": [losses[0].tolist(), losses[1].tolist()],
                               "masks": [keep1.tolist(), keep2.tolist()], "eps": drop_ratio})
        return keep1, keep2

    def on_train_end(self):
        super().on_train_end()  # writes the report
        with open(f"{self.out}.{self.trainer.global_rank}", "w") as f:
            json.dump(self.steps, f)
        dump_outcome(self, self.trainer.global_rank)


def dump_outcome(owner, rank: int) -> None:
    with open(f"{owner.out}.end.{rank}", "w") as f:
        json.dump({"history": [asdict(h) for h in owner.history], "report": owner.report_path}, f)


def reference_masks(steps_by_rank, which):
    """One process: first occurrences in rank order, the k = floor((1-eps) |U|) smallest (score, index)."""
    idx = [i for steps in steps_by_rank for i in steps["index"]]
    sc = [s for steps in steps_by_rank for s in (steps["scores"][which] if isinstance(steps["scores"][0], list)
                                                 else steps["scores"])]
    first, seen = [], set()
    for pos, i in enumerate(idx):
        if i not in seen:
            seen.add(i)
            first.append(pos)
    k = math.floor(round((1 - steps_by_rank[0]["eps"]) * len(first), 9)) or len(first)
    keep = sorted(first, key=lambda p: (sc[p], idx[p]))[:k]
    flat = [p in set(keep) for p in range(len(idx))]
    sizes = [len(s["index"]) for s in steps_by_rank]
    return [flat[:sizes[0]], flat[sizes[0]:]]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", ["batch_filter", "coteaching"])
def test_global_scope_equals_one_process_trim_of_the_union(kind, tmp_path):
    """The masks equal one process's; and the counts and the report leave the padding repeat out (a reviewer's
    DistributedSampler repeat was counted seen and dropped, 10/4 for 9/3, and marked its sample dropped in the report
    although the rank holding it first kept it)."""
    out = str(tmp_path / "steps")
    report = dict(report=True, report_dir=str(tmp_path / "report"))

    def make():
        if kind == "batch_filter":
            module, callbacks = TinyModel(), [SpyFilter("spl", drop_ratio=0.3, warmup_epochs=1, scope="global",
                                                        out=out, **report)]
        else:
            module, callbacks = SpyCoTeaching(TinyModel(), rule="spl", drop_ratio=0.3, warmup_epochs=1,
                                              scope="global", out=out, **report), []
        trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                             callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, deterministic=True)
        return trainer, module, OddBlobs()

    fit_ranks(make)
    ranks = [json.load(open(f"{out}.{r}")) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0
    filtered = [(a, b) for a, b in zip(*ranks) if a["eps"] > 0]
    assert len(filtered) == 2  # epochs 1 and 2 (both warm up over epoch 0)
    repeats = 0
    for a, b in filtered:
        repeats += len(set(a["index"]) & set(b["index"]))
        for which in range(len(a["masks"])):
            want = reference_masks([a, b], which)
            assert [a["masks"][which], b["masks"][which]] == want
    assert repeats == 2  # the padding repeat was in every filtered step (and the reference keeps it at most once)
    # one step per rank and epoch: each filtered epoch saw the 241 distinct samples and dropped 241 - floor(0.7 * 241)
    end = json.load(open(f"{out}.end.0"))
    for record in end["history"][1:]:
        dropped = [record["dropped"]] if kind == "batch_filter" else [record["dropped_1"], record["dropped_2"]]
        assert (record["seen"], dropped) == (241, [241 - 168] * len(dropped)), record
    # the report's `kept` is the last epoch's: a sample is kept where some rank's step kept it
    a, b = filtered[-1]
    kept = {i for step in (a, b) for i, m1, m2 in zip(step["index"], step["masks"][0], step["masks"][-1]) if m1 and m2}
    rows = list(csv.DictReader(open(end["report"])))
    assert len(rows) == 241 and {int(r["index"]) for r in rows if r["kept"] == "True"} == kept


class SixtyFour(pl.LightningDataModule):
    def __init__(self, anomalies: bool = False) -> None:
        super().__init__()
        self.ds = blobs(64)
        if anomalies:  # RCA's: 4 values, 8 of the 64 samples far from the rest (an estimate of about 1/8, not 0)
            x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
            x[::8] += 5.0
            self.ds = IndexedDataset(TensorDataset(x, torch.zeros(64)), corrupted=torch.arange(64) % 8 == 0)

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=8, shuffle=True)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_mid_epoch_ddp_checkpoint_keeps_every_ranks_counts(tmp_path):
    """A checkpoint written inside an epoch under DDP held rank 0's running counts alone: a 2-rank fit resumed there
    read ``seen=48`` of 64 (rank 1's 16 samples before the checkpoint lost), and every rank loading rank 0's counted
    them twice before that. Each rank now restores its own (64); resumed in one process, all of them (32 + 6 * 8)."""
    def fit(name, ckpt_path=None, devices=2):
        pl.seed_everything(0, verbose=False)
        out = str(tmp_path / name)
        spy = SpyFilter("spl", drop_ratio=0.25, warmup_epochs=0, scope="global", out=out, report=True,
                        report_dir=str(tmp_path / f"{name}_report"))
        _checkpointed_fit(tmp_path / f"{name}_ckpt", [spy], SixtyFour(), 1, 2, ckpt_path, devices)
        return json.load(open(f"{out}.end.0"))["history"][-1]

    full = fit("full")
    assert full["seen"] == 64
    resumed = fit("resumed", ckpt_path=tmp_path / "full_ckpt" / "step=2.ckpt")
    assert resumed["seen"] == 64, resumed
    # another world size: both ranks' 2 batches of 8 on the one process, then the 6 of its 8 batches left
    alone = fit("alone", ckpt_path=tmp_path / "full_ckpt" / "step=2.ckpt", devices=1)
    assert alone["seen"] == 32 + 6 * 8, alone


def _fit_beside_itlm(tmp_path, name, itlm, bf, max_epochs, ckpt_path=None, before=(), after=()) -> pl.Trainer:
    """A 2-rank fit of ITLM and ``bf`` on 241 samples (8 steps an epoch on each rank in round 0), a checkpoint every
    3 steps in ``tmp_path / name``; ``before`` / ``after`` callbacks around the two."""
    from tests.test_itlm_ddp import OddBlobs as Blobs241

    pl.seed_everything(0, verbose=False)
    return _checkpointed_fit(tmp_path / name, [*before, itlm, bf, *after], Blobs241(), max_epochs, 3, ckpt_path)


def _checkpointed_fit(ckpt_dir, callbacks, data, max_epochs, every, ckpt_path=None, devices=2) -> pl.Trainer:
    """A fit on ``devices`` CPU ranks (one thread each) of ``TinyModel`` with ``callbacks`` and a checkpoint every
    ``every`` steps in ``ckpt_dir`` (named ``step=N.ckpt``), from ``ckpt_path`` if given."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    saves = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, every_n_train_steps=every, filename="{step}")
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=devices,
                         strategy=ddp_cpu_strategy() if devices > 1 else "auto", callbacks=[*callbacks, saves],
                         logger=False, enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.fit(TinyModel(), data, ckpt_path=ckpt_path)
    finally:
        torch.set_num_threads(threads)
    return trainer


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_filter_beside_itlm_resumed_inside_an_epoch_under_ddp_equals_the_uninterrupted_fit(tmp_path):
    """ITLM's loader takes a resumed epoch up where the checkpoint stopped, so a BatchFilter beside it can go on as in
    the uninterrupted fit; under DDP its checkpoint held rank 0's part alone of the epoch's counts, ``"auto"`` scores
    and report sums: resumed at step 3 (inside epoch 0) the records read ``seen=194`` of 242, the estimate 0.373 for
    0.440, and the weights differed. Every rank's part is saved and each rank restores its own: bit for bit."""
    from lit_robust import ITLM

    def fit(name, ckpt_path=None):
        itlm = ITLM(keep_ratio=0.6, round_epochs=[2, 1], verbose=False, plot=False, report=False)
        bf = BatchFilter("spl", drop_ratio="auto", warmup_epochs=2, report=True,
                         report_dir=str(tmp_path / f"{name}_report"))
        _fit_beside_itlm(tmp_path, name, itlm, bf, 3, ckpt_path, after=[Outcome(str(tmp_path / f"{name}.json"))])
        return json.load(open(tmp_path / f"{name}.json"))

    full = fit("full")
    assert [h["seen"] for h in full["history"]] == [242, 242, 144]
    for step in (3, 9):  # inside epoch 0 (collecting, ramping), inside epoch 1 (its end fixes the estimate)
        assert fit(f"resumed{step}", tmp_path / "full" / f"step={step}.ckpt") == full, step



class SaidOnEachRank(pl.Callback):
    """Each rank records the warnings issued in it (``rank_zero_warn``'s on rank 0) and writes them at fit end."""

    def __init__(self, out: str) -> None:
        self.out, self.said = out, []

    def setup(self, trainer, pl_module, stage):
        import warnings

        warnings.simplefilter("always")  # in the rank's own process (forked or spawned): the test's stays as it was
        warnings.showwarning = lambda message, *args, **kwargs: self.said.append(str(message))

    def on_fit_end(self, trainer, pl_module):
        with open(f"{self.out}.{trainer.global_rank}", "w") as f:
            json.dump(self.said, f)


def test_a_filter_beside_itlm_resumed_inside_an_epoch_under_ddp_says_no_new_order(tmp_path):
    """Under DDP a BatchFilter beside ITLM resumed inside an epoch ends bit for bit as the uninterrupted fit (ITLM's
    sampler leaves out each rank's trained batches of its own share), yet it warned that "Lightning trains the rest
    of that epoch's steps in a new order, so from here on the fit is not the uninterrupted one": the check that
    ITLM's order is taken up required one process. Resumed at step 3 (inside epoch 0): equal, and no such word."""
    from lit_robust import ITLM

    def fit(name, ckpt_path=None):
        itlm = ITLM(keep_ratio=0.6, round_epochs=[1, 1], verbose=False, plot=False, report=False)
        bf = BatchFilter("spl", drop_ratio=0.3, warmup_epochs=1, report=False)
        trainer = _fit_beside_itlm(tmp_path, name, itlm, bf, 2, ckpt_path,
                                   before=[SaidOnEachRank(str(tmp_path / f"{name}.said"))])
        weights = [p.detach().flatten().tolist() for p in trainer.lightning_module.parameters()]
        return weights, json.load(open(tmp_path / f"{name}.said.0"))

    full, _ = fit("full")
    resumed, said = fit("resumed", tmp_path / "full" / "step=3.ckpt")
    assert [s for s in said if "written inside epoch" in s] == [], said
    assert resumed == full


class SpyTrigger(AdversarialTrigger):
    def __init__(self, *args, out: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.out, self.steps = out, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        index = batch[0].tolist()
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self.steps.append({"index": index, "c": self.last_perturbation.tolist(), "epoch": trainer.current_epoch})

    def on_train_end(self, trainer, pl_module):
        with open(f"{self.out}.{trainer.global_rank}", "w") as f:
            json.dump(self.steps, f)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("scope", ["global", "local"])
def test_adversarial_trigger_global_scope_shares_one_perturbation(scope, tmp_path):
    out, tau = str(tmp_path / "c"), 0.25

    def make():
        callbacks = [BatchFilter("spl", drop_ratio=0.3, scope="global"),
                     SpyTrigger(tau=tau, value_range=None, scope=scope, out=out)]
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                             callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, deterministic=True)
        return trainer, TinyModel(), OddBlobs()

    fit_ranks(make)
    ranks = [json.load(open(f"{out}.{r}")) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    same = [a["c"] == b["c"] for a, b in zip(*ranks)]
    if scope == "local":
        assert not all(same)  # each rank's own batch gives its own c
        return
    assert all(same)
    for a, b in zip(*ranks):
        distinct = len(set(a["index"]) | set(b["index"]))  # the filter keeps the padding repeat once
        k = math.floor(0.7 * distinct)
        steps = torch.tensor(a["c"]) * k / tau  # eq. 5.5 over the union's k kept samples: integer sign sums
        assert torch.allclose(steps, steps.round(), atol=1e-4) and bool((steps.abs() <= k).all())
        assert bool((steps != 0).any())


class Outcome(pl.Callback):
    """Rank 0 writes the owner's records, ``"auto"`` estimates, report and weights at fit end."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module):
        owner = next((cb for cb in trainer.callbacks if isinstance(cb, BatchFilter)), pl_module)
        if trainer.global_rank == 0:
            with open(self.out, "w") as f:
                json.dump({"history": [asdict(h) for h in getattr(owner, "history", [])],
                           "estimates": {str(k): v for k, v in owner._auto.estimates.items()},
                           "report": open(owner.report_path).read(),
                           "weights": [p.detach().flatten().tolist() for p in pl_module.parameters()]}, f)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", ["batch_filter", "coteaching", "rca"])
def test_a_ddp_checkpoint_at_an_epochs_last_batch_resumes_the_uninterrupted_fit(kind, tmp_path):
    """docs/checkpoints.md: from a checkpoint written at an epoch's last batch a resumed fit goes on with the
    uninterrupted fit's weights, records and estimates. Under DDP that checkpoint held rank 0's part only of the
    epoch's counts, ``"auto"`` scores and report sums, and the resumed fit closed the epoch on it: epoch 1 read
    ``seen=32`` of 64, and its estimate, the drops after it and the report differed. Now every rank's part is on rank
    0 when the checkpoint is written."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lit_robust import RCA

    per_batch = 2 if kind == "coteaching" else 1  # Co-teaching's two optimizers step twice a batch

    def fit(name, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        auto = dict(drop_ratio="auto", warmup_epochs=2, report=True, report_dir=str(tmp_path / f"{name}_report"))
        callbacks = [Outcome(str(tmp_path / f"{name}.json")),
                     ModelCheckpoint(dirpath=tmp_path / f"{name}_ckpt", save_top_k=-1, filename="{step}",
                                     every_n_train_steps=4 * per_batch)]  # 64 samples, 2 ranks of 8: 4 batches
        if kind == "batch_filter":
            module = TinyModel()
            callbacks.append(BatchFilter("spl", scope="global", **auto))
        elif kind == "coteaching":
            module = CoTeaching(TinyModel(), scope="global", **auto)
        else:
            module = RCA(dim=4, hidden=8, latent=1, dropout=0.0, lr=0.01, estimator="gmm", **auto)
        trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                             callbacks=callbacks, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, deterministic=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            trainer.fit(module, SixtyFour(anomalies=kind == "rca"), ckpt_path=ckpt_path)
        finally:
            torch.set_num_threads(threads)
        return json.load(open(tmp_path / f"{name}.json"))

    full = fit("full")
    resumed = fit("resumed", ckpt_path=tmp_path / "full_ckpt" / f"step={8 * per_batch}.ckpt")  # epoch 1's last
    if kind != "rca":
        assert [h["seen"] for h in resumed["history"]] == [64, 64, 64]
    assert resumed["estimates"] == full["estimates"], (resumed["estimates"], full["estimates"])
    assert resumed == full


class NinetyThree(pl.LightningDataModule):
    """93 samples, batches of 16: rank 1's last batch holds the padding repeat of rank 0's first sample."""

    def __init__(self) -> None:
        super().__init__()
        self.ds = blobs(93)

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=16, shuffle=True)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("scope", ["local", "global"])
def test_a_padding_repeat_in_another_step_is_counted_again_and_reported_once(scope, tmp_path):
    """A reviewer read `seen` 94 of 93 samples under DDP, against a docstring saying the padding repeat was left out
    of the counts (true only for a repeat in the same step as its first, under "global"). Pinned as documented in
    `FilterEpochRecord`: each visit counts, the report has one row per sample."""
    out = str(tmp_path / "steps")

    def make():
        spy = SpyFilter("spl", drop_ratio=0.25, warmup_epochs=0, scope=scope, out=out, report=True,
                        report_dir=str(tmp_path / "report"))
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                             callbacks=[spy], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, deterministic=True)
        return trainer, TinyModel(), NinetyThree()

    fit_ranks(make)
    end = json.load(open(f"{out}.end.0"))
    visits = [i for r in (0, 1) for step in json.load(open(f"{out}.{r}")) for i in step["index"]]
    assert (len(visits), len(set(visits))) == (94, 93)
    assert end["history"][0]["seen"] == 94
    assert sorted(int(r["index"]) for r in csv.DictReader(open(end["report"]))) == list(range(93))


class PerRankFilter(BatchFilter):
    """A DDP newcomer's per-process settings: rank 1's `drop_ratio` and training set differ from rank 0's."""

    def setup(self, trainer, pl_module, stage):
        if trainer.global_rank == 1:
            self.drop_ratio = 0.2
        super().setup(trainer, pl_module, stage)


class PerRankLength(NinetyThree):
    def setup(self, stage):
        if self.trainer.global_rank == 1:
            self.ds = blobs(80)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.timeout(300)
def test_settings_or_training_sets_that_differ_between_the_processes_are_named_not_hung(tmp_path):
    """A DDP newcomer's training sets of 1,500 and 1,400 samples hung a BatchFilter fit in its epoch-end collective
    (killed after 100 s; ITLM named them), and `drop_ratio` 0.3 and 0.2 trained on a mix of both without a word.
    Every rank now raises at train start, naming every process's value, as ITLM does."""
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                         callbacks=[PerRankFilter("spl", drop_ratio=0.3, warmup_epochs=0)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(Exception, match=r"BatchFilter: `drop_ratio`, the training set's length differ between the "
                                        r"processes of this DDP fit \(`drop_ratio`: 0\.3, 0\.2; the training set's "
                                        r"length: 93, 80, in rank order\): the processes filter their batches in step"):
        trainer.fit(TinyModel(), PerRankLength())


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.timeout(300)
def test_coteaching_names_training_sets_that_differ_between_the_processes(tmp_path):
    """The same DDP newcomer's CoTeaching fit on training sets of 1,500 and 1,400 samples hung too (killed at 80 s)."""
    from lit_robust import CoTeaching

    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(Exception, match=r"CoTeaching: the training set's length differs between the processes of this "
                                        r"DDP fit \(the training set's length: 93, 80, in rank order\)"):
        trainer.fit(CoTeaching(TinyModel(), drop_ratio=0.2, warmup_epochs=0), PerRankLength())


class WarningsOfRankZero(pl.Callback):
    """Writes the warnings rank 0 gave during the fit to the JSON file ``out``."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_start(self, trainer, pl_module):
        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always")

    def on_fit_end(self, trainer, pl_module):
        self.catcher.__exit__(None, None, None)
        if trainer.global_rank == 0:
            with open(self.out, "w") as f:
                json.dump([str(m.message) for m in self.caught], f)


class Unsharded(NinetyThree):
    """A plain loader under `use_distributed_sampler=False`: every process draws the whole set."""


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.timeout(300)
def test_processes_that_each_train_on_the_whole_set_are_warned_about(tmp_path):
    """A DDP newcomer's `use_distributed_sampler=False` with a plain loader: `seen` read 3,000 of 1,500 every epoch,
    without a word."""
    out = tmp_path / "said.json"

    def make():
        bf = BatchFilter("spl", drop_ratio=0.25, warmup_epochs=0)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                             callbacks=[bf, WarningsOfRankZero(str(out))], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
        return trainer, TinyModel(), Unsharded()

    fit_ranks(make)
    said = [m for m in json.loads(out.read_text()) if "trained on the whole set" in m]
    assert said == ["BatchFilter: epoch 0's batches held 186 samples of a training set of 93, over 2 processes: each "
                    "process trained on the whole set, or a sampler drew samples more than once. Under DDP each "
                    "process needs its own share (Lightning's DistributedSampler, off with "
                    "`use_distributed_sampler=False`: give such a loader a `DistributedSampler` of its own)."], said
