"""A fit resumed from an epoch-end checkpoint draws what the uninterrupted fit drew: the next epoch's shuffle of a plain
``DataLoader(shuffle=True)``, dropout masks, augmentations. Lightning saves no random state; every owner of a resumable
state (ITLM, BatchFilter, CoTeaching, RCA, SimCLR) saves the process's with it and puts it back on resume. Before, a
newcomer's filter-only resume with ``shuffle=True`` kept 128 of 2,400 samples differently, and any model with dropout
ended with other weights even under ITLM (whose own sampler fixed the batches). A module with ``RobustMixin`` saves it
too, for a fit that has none of those owners (a plain or Bootstrap-loss classifier, a plain flow)."""

import copy
import io
import pickle
import random
import warnings
from dataclasses import asdict

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import ITLM, RCA, BatchFilter, CoTeaching, DigitsDataModule, IndexedDataset, SimCLR
from lit_robust.callbacks import _resume
from lit_robust.callbacks._resume import random_state, restore_random_state
from tests.conftest import BlobsData, TinyModel, blobs, tiny_trainer


def _draws() -> tuple:
    return torch.rand(4), torch.randint(0, 10**6, (3,)), np.random.rand(3), np.random.randn(), random.random()


def _same(a: tuple, b: tuple) -> bool:
    return (torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and np.array_equal(a[2], b[2]) and a[3] == b[3]
            and a[4] == b[4])


def test_random_state_round_trips_through_a_weights_only_checkpoint():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.randn()  # numpy now holds a cached Gaussian: part of its state
    state = random_state()
    want = _draws()
    buf = io.BytesIO()
    torch.save({"random": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["random"]  # plain values and tensors only
    _draws()  # move every generator on
    restore_random_state(loaded)
    assert _same(_draws(), want)


def test_under_ddp_each_rank_restores_its_own_state(monkeypatch):
    """Under DDP ``random_state`` held nothing (``None``) and a resume put nothing back, so every rank's dropout masks
    after a resume differed from the uninterrupted fit's: now every rank's state is gathered into the checkpoint and
    each rank restores its own; a checkpoint of another number of processes is not restored, with a warning."""
    torch.manual_seed(1)
    rank0 = random_state()
    monkeypatch.setattr(_resume.distributed, "world_size", lambda group=None: 2)
    monkeypatch.setattr(_resume.distributed, "rank", lambda group=None: 1)
    monkeypatch.setattr(_resume.distributed, "all_gather_objects", lambda obj, group=None: [rank0, obj])
    torch.manual_seed(2)
    state = random_state()  # as rank 1
    want1 = _draws()
    assert sorted(state) == ["ranks"] and state["ranks"][0] is rank0
    buf = io.BytesIO()
    torch.save({"random": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["random"]
    restore_random_state(loaded)
    assert _same(_draws(), want1)  # rank 1's own, not rank 0's
    before = torch.get_rng_state()
    with pytest.warns(UserWarning, match=r"this resumed fit runs 2 processes, but its checkpoint was written by 1: "
                                         r"their random state .* is not restored"):
        restore_random_state(rank0)
    assert torch.equal(torch.get_rng_state(), before)
    restore_random_state(None)


class DropoutModel(TinyModel):
    def __init__(self) -> None:
        super().__init__(lr=0.05)
        self.net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def _moons(n: int = 192) -> DataLoader:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 2, generator=g)
    return DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(n, dtype=torch.long))), batch_size=32, shuffle=True)


def _setup(owner: str):
    """``(module, callbacks, data, max_epochs, the callback or module that keeps a history)``; every fit shuffles with
    a plain ``DataLoader(shuffle=True)``, its model has dropout, and a validation loop runs its sanity check."""
    if owner.startswith("ITLM"):
        itlm = ITLM(keep_ratio=0.7, round_epochs=[2, 2], verbose=False, plot=False, report=False)
        return DropoutModel(), [itlm], BlobsData(n=160, batch_size=32, with_val=True), 4, itlm
    if owner == "BatchFilter":
        f = BatchFilter("prl", drop_ratio=0.25, warmup_epochs=1, report=False)
        return DropoutModel(), [f], BlobsData(n=160, batch_size=32, with_val=True), 4, f
    if owner == "CoTeaching":
        co = CoTeaching(DropoutModel(), rule="prl", drop_ratio=0.25, warmup_epochs=1, report=False)
        return co, [], BlobsData(n=160, batch_size=32, with_val=True), 4, co
    if owner == "plain":
        # no callback: the mixin saves the random state (a CLI user's `configs/bootstrap_mnist.yaml`, Bootstrap loss
        # alone, resumed from its epoch-1 checkpoint ended with test_acc 0.1877 against the uninterrupted 0.1855)
        return DropoutModel(), [], BlobsData(n=160, batch_size=32, with_val=True), 4, None
    if owner == "SimCLR":
        # its views (crops, rotations, jitter) come from the global generators (a reviewer's resumed pretraining
        # ended up to 0.0045 away from the uninterrupted one's weights)
        images = torch.rand(48, 1, 12, 12, generator=torch.Generator().manual_seed(5))
        data = DataLoader(TensorDataset(images, torch.zeros(48)), batch_size=16, shuffle=True)
        return SimCLR(width=2, projection_dim=4), [], data, 3, None
    rca = RCA(2, hidden=16, latent=1, drop_ratio=0.2, warmup_epochs=1, dropout=0.3, report=False)
    return rca, [], _moons(), 4, None  # no history: its weights hold what it trained on


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("owner,resume_epoch", [("BatchFilter", 1), ("ITLM", 1), ("ITLM", 2), ("CoTeaching", 1),
                                                ("RCA", 1), ("SimCLR", 1), ("plain", 1)],
                         ids=["BatchFilter", "ITLM-round-start", "ITLM-mid-round", "CoTeaching", "RCA", "SimCLR",
                              "plain-mixin-module"])
def test_resumed_fit_with_shuffle_and_dropout_equals_the_uninterrupted_one(tmp_path, owner, resume_epoch):
    def run(root, seed, ckpt_path=None):
        pl.seed_everything(seed, verbose=False)
        module, callbacks, data, epochs, keeper = _setup(owner)
        ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        trainer = tiny_trainer(root, epochs, [*callbacks, ckpt], enable_checkpointing=True)
        trainer.fit(module, data, ckpt_path=ckpt_path)
        return module, keeper

    full, full_keeper = run(tmp_path / "a", seed=0)
    # another global seed: what the resumed fit draws must come from the checkpoint, not from this process
    resumed, resumed_keeper = run(tmp_path / "b", seed=99, ckpt_path=tmp_path / "a" / f"epoch={resume_epoch}.ckpt")
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    if full_keeper is not None:
        assert [asdict(r) for r in resumed_keeper.history] == [asdict(r) for r in full_keeper.history]


def test_a_resume_under_another_global_seed_says_it_goes_on_with_the_fits_own(tmp_path):
    """A preemptible-cluster user's `seed_everything(1)` resumed the seed-0 fit without a word (bit-identical to
    it), and the run was filed as seed 1's."""
    import warnings

    def run(root, seed, ckpt_path=None):
        pl.seed_everything(seed, verbose=False)
        module, callbacks, data, epochs, _ = _setup("ITLM")
        ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            tiny_trainer(root, epochs, [*callbacks, ckpt], enable_checkpointing=True).fit(module, data,
                                                                                          ckpt_path=ckpt_path)
        return [str(w.message) for w in said if "global seed" in str(w.message)]

    assert run(tmp_path / "a", seed=0) == []
    assert run(tmp_path / "b", seed=0, ckpt_path=tmp_path / "a" / "epoch=1.ckpt") == []
    assert run(tmp_path / "c", seed=1, ckpt_path=tmp_path / "a" / "epoch=1.ckpt") == [
        "ITLM: this process's global seed is 1, but the fit this checkpoint resumes started with seed 0: it goes on "
        "with 0 (its rounds' order and re-initialisations). For a fit with seed 1 start a new one, without "
        "`ckpt_path`."]


class JitteredBlobs(torch.utils.data.Dataset):
    """Blobs with a random jitter drawn per sample in ``__getitem__`` (an augmentation: in the workers' generators)."""

    def __init__(self, n: int = 160) -> None:
        self.base = blobs(n)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base.dataset[i]
        return x + 0.1 * torch.randn(2), y


class DigitsModel(TinyModel):
    def __init__(self) -> None:
        super().__init__(lr=0.05)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("owner,resume_epoch", [("ITLM", 1), ("ITLM", 2), ("BatchFilter", 1), ("BatchFilter-own", 2)],
                         ids=["ITLM-round-start", "ITLM-mid-round", "BatchFilter-datamodule",
                              "BatchFilter-own-persistent-loader"])
def test_resume_with_loader_workers_equals_the_uninterrupted_fit(tmp_path, owner, resume_epoch):
    """``num_workers=2`` (a newcomer's resumes were not exact): with workers, the iterator draws its first indices
    when Lightning creates it, before Lightning sets the sampler's epoch (ITLM's resumed first epoch took epoch 0's
    order); persistent workers create each iterator once in an uninterrupted fit and once more on resume (a
    datamodule's extra base-seed draw shifted every later random draw); a reloaded loader's two iterators drew two
    worker seeds (augmentations in the workers differed after a resume at a round start)."""
    def run(root, seed, ckpt_path=None):
        pl.seed_everything(seed, verbose=False)
        if owner == "ITLM":
            keeper = ITLM(keep_ratio=0.7, round_epochs=[2, 2], verbose=False, plot=False, report=False)
            module = DropoutModel()
            data = DataLoader(IndexedDataset(JitteredBlobs(), targets=blobs(160).targets), batch_size=32,
                              shuffle=True, num_workers=2)
        elif owner == "BatchFilter-own":
            # the user's own loader with persistent workers (a reproducibility newcomer's: its iterator, made once in
            # an uninterrupted fit and once more on resume, drew a worker seed from torch's generator that the
            # uninterrupted fit never drew, and every later shuffle and dropout mask differed)
            keeper = BatchFilter("prl", drop_ratio=0.25, warmup_epochs=1, report=False)
            module = DropoutModel()
            data = DataLoader(blobs(160), batch_size=32, shuffle=True, num_workers=2, persistent_workers=True)
        else:  # lit_robust's datamodule: persistent workers, a validation loader
            keeper = BatchFilter("prl", drop_ratio=0.25, warmup_epochs=1, report=False)
            module = DigitsModel()
            data = DigitsDataModule(clean_ratio=0.7, val_size=100, batch_size=64, num_workers=2, seed=3)
        ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        trainer = tiny_trainer(root, 4, [keeper, ckpt], enable_checkpointing=True)
        if owner != "BatchFilter":
            trainer.fit(module, data, ckpt_path=ckpt_path)
        else:
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return module, keeper

    full, full_keeper = run(tmp_path / "a", seed=0)
    resumed, resumed_keeper = run(tmp_path / "b", seed=99, ckpt_path=tmp_path / "a" / f"epoch={resume_epoch}.ckpt")
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert [asdict(r) for r in resumed_keeper.history] == [asdict(r) for r in full_keeper.history]


def test_a_module_restores_the_random_state_only_in_a_resumed_fit():
    """`CoTeaching`/`RCA` load a checkpoint for test/validate/predict and through `load_from_checkpoint` too: only a
    resumed fit may move the process's random state."""
    from types import SimpleNamespace

    from lit_robust._backend import TrainerFn
    from lit_robust.callbacks._resume import restore_random_state_in_fit

    saved = random_state()
    torch.rand(3)  # move on from the saved state
    for trainer in (None, SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.TESTING))):
        before = torch.get_rng_state()
        restore_random_state_in_fit(SimpleNamespace(_trainer=trainer), saved)
        assert torch.equal(torch.get_rng_state(), before)
    restore_random_state_in_fit(SimpleNamespace(_trainer=SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING))),
                                saved)
    assert torch.equal(torch.get_rng_state(), saved["torch"])


class _StopMidEpoch(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 2:
            trainer.should_stop = True


@pytest.mark.parametrize("stop", [True, "max_steps", False])
def test_itlm_says_when_it_resumes_after_an_epoch_a_stop_cut_short(tmp_path, stop, recwarn):
    """A notebook user stopped a fit mid-epoch (`trainer.should_stop`); Lightning wrote its epoch-end checkpoint and
    the resumed fit went on at the next round without training the rest of the epoch (0.690 against 0.761
    uninterrupted), without a word. A checkpoint of a whole epoch resumes silently, as before."""
    def itlm():
        return ITLM(keep_ratio=0.6, round_epochs=[2, 1, 1], verbose=False, plot=False)

    pl.seed_everything(0, verbose=False)
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, every_n_epochs=1)
    extra = [_StopMidEpoch()] if stop is True else []
    steps = {"max_steps": 11} if stop == "max_steps" else {}  # 8 batches per epoch: epoch 1 stops after its 3rd
    tiny_trainer(tmp_path, 4, [itlm(), ck, *extra], enable_checkpointing=True, **steps).fit(TinyModel(),
                                                                                            BlobsData(n=240))
    recwarn.clear()
    epoch1 = sorted((tmp_path / "ck").glob("epoch=1-*.ckpt"))[0]  # cut short, or a whole epoch
    tiny_trainer(tmp_path, 4, [itlm()]).fit(TinyModel(), BlobsData(n=240), ckpt_path=epoch1)
    said = [str(w.message) for w in recwarn if "which trained" in str(w.message)]
    if stop:  # epoch 1 trained batches 0-2 of 8, and it was round 0's last: its model scored round 1's selection
        assert len(said) == 1
        assert "end of epoch 1, which trained 3 of its 8 batches" in said[0]
        assert "round 0's model" in said[0] and "scored the next round's selection" in said[0]
    else:
        assert said == []


@pytest.mark.parametrize("owner", ["filter", "coteaching"])
@pytest.mark.parametrize("cut", [True, False])
def test_a_filter_or_coteaching_says_when_it_resumes_after_an_epoch_a_stop_cut_short(tmp_path, owner, cut, recwarn):
    """A vision user's `max_steps` stopped epoch 2 after 6 of its 47 batches; resumed with `ckpt_path="last"`, the
    fit went on at epoch 3 (147 steps for 188, test 0.735 against 0.770 uninterrupted), and neither BatchFilter nor
    CoTeaching said a word, where ITLM does. A checkpoint of a whole epoch resumes silently."""
    def parts():
        if owner == "filter":
            return TinyModel(), [BatchFilter("prl", drop_ratio=0.2, warmup_epochs=1)]
        return CoTeaching(TinyModel(), rule="prl", drop_ratio=0.2, warmup_epochs=1, report=False), []

    per_step = 1 if owner == "filter" else 2  # CoTeaching's two optimizers each count a step
    pl.seed_everything(0, verbose=False)
    module, callbacks = parts()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    # 8 batches an epoch: epoch 1 stops after its 3rd, or ends whole
    tiny_trainer(tmp_path, 4, [*callbacks, ck], enable_checkpointing=True,
                 max_steps=per_step * (11 if cut else 16)).fit(module, BlobsData(n=240))
    recwarn.clear()
    module, callbacks = parts()
    tiny_trainer(tmp_path, 4, callbacks).fit(module, BlobsData(n=240), ckpt_path=tmp_path / "ck" / "last.ckpt")
    said = [str(w.message) for w in recwarn if "which trained" in str(w.message)]
    if cut:
        assert said == [f"{'BatchFilter' if owner == 'filter' else 'CoTeaching'}: this checkpoint was written at the "
                        "end of epoch 1, which trained 3 of its 8 batches (the fit was stopped mid-epoch: "
                        "`trainer.should_stop`, `max_time`, `max_steps`, ...). Lightning resumes at the next epoch "
                        "without training the rest of that one, so the resumed fit trains fewer batches than the "
                        "uninterrupted one, and its drop ratios, records and report go on from a shorter epoch. For "
                        "the uninterrupted fit's result resume from a checkpoint written at the end of a whole epoch "
                        "(e.g. the one before)."], said
    else:
        assert said == []


class _Augmented(torch.utils.data.Dataset):
    """blobs with random noise added at each read (a random augmentation in `__getitem__`)."""

    def __init__(self, n: int) -> None:
        self.ds = blobs(n)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        index, x, y, *rest = self.ds[i]
        return (index, x + 0.1 * torch.randn_like(x), y, *rest)


def _resume_with_workers(root, persistent: bool, every: int | None, validate: bool, workers: int = 2,
                         shuffle: bool = True, dataset=None):
    """An uninterrupted 4-epoch BatchFilter fit and one resumed from its epoch-1 checkpoint (at the epoch's end, or
    at its last batch with `every_n_train_steps=8`): the largest weight difference and what the resume warned."""
    def fit(folder, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        model = TinyModel()
        loader = DataLoader(dataset or _Augmented(240), batch_size=30, shuffle=shuffle, num_workers=workers,
                            persistent_workers=persistent)
        val = DataLoader(blobs(60), batch_size=30) if validate else None
        ck = ModelCheckpoint(dirpath=folder, every_n_train_steps=every, save_top_k=-1, filename="{epoch}")
        trainer = tiny_trainer(folder, 4, [BatchFilter("prl", drop_ratio=0.2, warmup_epochs=1), ck],
                               enable_checkpointing=True, num_sanity_val_steps=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(model, loader, val, ckpt_path=ckpt_path)
        return torch.cat([p.detach().flatten() for p in model.parameters()]), [str(w.message) for w in caught]

    full, _ = fit(root / "full")
    resumed, said = fit(root / "resumed", root / "full" / "epoch=1.ckpt")
    return float((full - resumed).abs().max()), said


@pytest.mark.parametrize("persistent", [True, False])
def test_a_resume_with_augmentation_in_persistent_workers_says_it_is_another_fit(tmp_path, persistent):
    """A vision newcomer's `persistent_workers=True` with RandomCrop: the resumed fit kept 11 % of the samples
    otherwise than the uninterrupted one, without a word (the draws live in the worker processes). With
    non-persistent workers the resume is exact, and nothing is said."""
    diff, said = _resume_with_workers(tmp_path, persistent, every=None, validate=False)
    warned = [m for m in said if "persistent workers and its dataset draws at random" in m]
    if persistent:
        assert diff > 0 and warned == [
            "BatchFilter: this resumed fit's training DataLoader has persistent workers and its dataset draws at random "
            "(augmentation): those draws live in the worker processes, which start afresh here, so the augmentations, "
            "and so the drops and weights, from here on differ from the uninterrupted fit's. With "
            "`persistent_workers=False` (each epoch's workers seeded from the checkpointed generators) a resume from "
            "an epoch-end checkpoint is exact."], (diff, said)
    else:
        assert diff == 0.0 and warned == [], (diff, said)


@pytest.mark.parametrize("workers,validate,shuffle,augment", [(2, True, True, True), (2, False, True, True),
                                                             (0, True, True, True), (2, True, False, True),
                                                             (2, True, False, False)])
def test_a_resume_from_an_epochs_last_batch_with_workers_and_validation_may_differ_and_says_so(tmp_path, workers,
                                                                                               validate, shuffle,
                                                                                               augment):
    """A vision newcomer resumed from a step checkpoint at an epoch's last batch, `num_workers=2` and a validation
    loader: the filter said its records "go on as in the uninterrupted fit"; the weights ended 0.043 away. Lightning's
    restart makes the training iterator once more, and one with workers draws its shuffle as it is made: measured
    here, the fit without validation, or without workers, resumes bit for bit, and the note says which."""
    diff, said = _resume_with_workers(tmp_path, False, every=8, validate=validate, workers=workers, shuffle=shuffle,
                                      dataset=None if augment else blobs(240))
    (note,) = [m for m in said if "resumes from a checkpoint written at the last batch of epoch 1" in m]
    # a loader that neither shuffles nor augments resumes bit for bit (a reviewer's)
    if workers and validate and (shuffle or augment):
        assert diff > 0 and ("this fit's training DataLoader has worker processes (`num_workers` > 0) and the fit "
                             "validates" in note) and "may differ from the uninterrupted fit's" in note, (diff, note)
    else:
        assert diff == 0.0 and "go on as in the uninterrupted fit" in note, (diff, note)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_resume_with_a_datamodules_unseeded_persistent_workers_is_warned_about(tmp_path):
    """A loader a datamodule makes is out of reach before Lightning creates its iterator: the resumed fit that drew
    its workers' seed from torch's generator says so, with the loader that resumes exactly."""
    import warnings

    class Own(pl.LightningDataModule):
        def __init__(self, generator=None):
            super().__init__()
            self.generator = generator

        def train_dataloader(self):
            ds = blobs(160)
            if self.generator is None:
                return DataLoader(ds, batch_size=32, shuffle=True, num_workers=2, persistent_workers=True)
            return DataLoader(ds, batch_size=32, sampler=torch.utils.data.RandomSampler(ds), generator=self.generator,
                              num_workers=2, persistent_workers=True)

    def run(root, data, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        f = BatchFilter("prl", drop_ratio=0.25, warmup_epochs=1, report=False)
        module = DropoutModel()
        trainer = tiny_trainer(root, 3, [f, ModelCheckpoint(dirpath=root, save_top_k=-1, filename="{epoch}")],
                               enable_checkpointing=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return module, [str(w.message) for w in caught if "persistent workers and no `generator`" in str(w.message)]

    _, said = run(tmp_path / "a", Own())
    assert said == []  # an uninterrupted fit is not affected
    _, said = run(tmp_path / "b", Own(), ckpt_path=tmp_path / "a" / "epoch=1.ckpt")
    assert len(said) == 1 and said[0].startswith("BatchFilter: this resumed fit's training DataLoader has "
                                                 "persistent workers and no `generator`"), said
    # the advice holds: with it, the resume is exact and nothing is said
    full, _ = run(tmp_path / "c", Own(torch.Generator().manual_seed(0)))
    resumed, said = run(tmp_path / "d", Own(torch.Generator().manual_seed(0)), ckpt_path=tmp_path / "c" / "epoch=1.ckpt")
    assert said == []
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("owner,every,mid,epoch,done", [("BatchFilter", 3, "epoch=0-step=3", 0, 3),
                                                        ("SimCLR", 4, "epoch=1-step=4", 1, 1),
                                                        # a RobustMixin module with no lit_robust callback got
                                                        # Lightning's generic "not resumable" note only
                                                        ("plain", 7, "epoch=1-step=7", 1, 2)])
def test_a_resume_from_a_mid_epoch_checkpoint_is_warned_about(tmp_path, owner, every, mid, epoch, done):
    """`every_n_train_steps` or `save_on_exception` write checkpoints inside an epoch; a reproducibility newcomer's
    resume from one differed from the uninterrupted fit (test accuracy 0.650 against 0.683) with only Lightning's
    generic note, and so did a SimCLR pretraining's (`configs/simclr_pretrain.yaml` stopped at step 7, inside epoch
    1: other weights, no word of lit_robust's). An epoch-end checkpoint's resume says nothing."""
    import warnings

    def run(root, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        module, callbacks, data, epochs, _ = _setup(owner)
        ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=every, filename="{epoch}-{step}")
        ends = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="end-{epoch}")
        trainer = tiny_trainer(root, epochs, [*callbacks, ckpt, ends], enable_checkpointing=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, data, ckpt_path=ckpt_path)
        return [str(w.message) for w in caught if "resumes from a checkpoint written inside epoch" in str(w.message)]

    assert run(tmp_path / "a") == []
    # BatchFilter: 3 of epoch 0's 5 steps (160 in 32s); SimCLR: 1 of epoch 1's 3 (48 in 16s)
    said = run(tmp_path / "b", tmp_path / "a" / f"{mid}.ckpt")
    assert len(said) == 1 and said[0].endswith(
        f"this fit resumes from a checkpoint written inside epoch {epoch} (after {done} of its batches: "
        "`every_n_train_steps`, "
        "`save_on_exception`, ...). Lightning trains the rest of that epoch's steps in a new order, so from here on "
        "the fit is not the uninterrupted one (other batches, drops and weights). For an exact resume, resume from a "
        "checkpoint written at the end of an epoch (ModelCheckpoint's default, `save_last: true`)."), said
    assert run(tmp_path / "c", tmp_path / "a" / "end-epoch=1.ckpt") == []


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_resume_after_a_validation_inside_an_epoch_names_save_on_train_epoch_end(tmp_path):
    """A power user's `val_check_interval=0.5` with `ModelCheckpoint(save_last=True)`: `last.ckpt` was written after
    a validation inside the epoch, and the warning's advice was the `save_last: true` they had. The advice given now,
    `save_on_train_epoch_end=True`, resumes exactly and is not warned about. 160 samples / 32: 5 batches per epoch,
    validations after batches 2 and 4. (A filter's: ITLM resumes such an epoch exactly, see below.)"""
    import warnings

    def run(root, ckpt_path=None, **ckpt_kw):
        pl.seed_everything(0, verbose=False)
        module, callbacks, data, epochs, _ = _setup("BatchFilter")
        every = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}", **ckpt_kw)
        trainer = tiny_trainer(root, epochs, [*callbacks, every], enable_checkpointing=True, val_check_interval=0.5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, data, ckpt_path=ckpt_path)
        return module, [str(w.message) for w in caught if "written inside epoch" in str(w.message)]

    run(tmp_path / "a")
    _, said = run(tmp_path / "b", tmp_path / "a" / "epoch=1.ckpt")
    assert len(said) == 1 and "a validation inside the epoch (`val_check_interval`)" in said[0] and said[0].endswith(
        "(`ModelCheckpoint(save_on_train_epoch_end=True)` writes its checkpoints at the end of each epoch only)."), said
    full, _ = run(tmp_path / "c", save_on_train_epoch_end=True)
    resumed, said = run(tmp_path / "d", tmp_path / "c" / "epoch=1.ckpt", save_on_train_epoch_end=True)
    assert said == []
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name


def _itlm_saving_every_3_steps(root, seed, ckpt_path=None, every=3, **checkpoint):
    """``(module, itlm, warnings)`` of an ITLM fit (``_setup("ITLM")``) checkpointing every 3 steps (or ``every``;
    or as ``checkpoint`` says) into ``root``."""
    import warnings

    pl.seed_everything(seed, verbose=False)
    module, callbacks, data, epochs, itlm = _setup("ITLM")
    saves = ModelCheckpoint(dirpath=root, save_top_k=-1, filename="{epoch}-{step}",
                            **(checkpoint or {"every_n_train_steps": every}))
    trainer = tiny_trainer(root, epochs, [*callbacks, saves], enable_checkpointing=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, itlm, [str(w.message) for w in caught]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_itlm_resumed_inside_an_epoch_equals_the_uninterrupted_fit(tmp_path):
    """A reviewer's: resumed from a checkpoint written inside an epoch, Lightning restarted that epoch's loader and
    trained only the steps left, so ITLM's deterministic order gave the epoch's first batches again and never its
    last ones (weights 2.1e-3 apart, another selection). ITLM's sampler now takes the order up where the checkpoint
    stopped: from every checkpoint written every 3 steps (inside round 0 and round 1, after a validation, at and
    between round starts; dropout, shuffling) the fit ends with the uninterrupted one's weights and selection, and
    nothing is warned."""

    def run(root, seed, ckpt_path=None):
        module, itlm, said = _itlm_saving_every_3_steps(root, seed, ckpt_path)
        return module, itlm, [s for s in said if "written inside epoch" in s]

    full, full_itlm, _ = run(tmp_path / "a", 0)
    inside = ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt", "epoch=1-step=9.ckpt", "epoch=2-step=12.ckpt",
              "epoch=3-step=15.ckpt"]  # 5 steps an epoch in round 0, 4 (112 kept) in round 1
    assert set(inside) < {p.name for p in (tmp_path / "a").iterdir()}
    for name in inside:
        resumed, itlm, said = run(tmp_path / name, 99, tmp_path / "a" / name)
        assert said == [], name
        for (key, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(p, q), (name, key)
        assert torch.equal(itlm.selection, full_itlm.selection), name
        assert [h.kept for h in itlm.history] == [h.kept for h in full_itlm.history], name


def test_a_batch_filter_beside_itlm_resumed_inside_an_epoch_goes_on_as_uninterrupted_and_says_no_new_order(tmp_path):
    """ITLM's loader takes a resumed epoch's order up where the checkpoint stopped, so a BatchFilter beside it (SPL
    with a ramp) ends with the uninterrupted fit's weights and records; yet the filter warned that Lightning trained
    the rest of the epoch "in a new order, so from here on the fit is not the uninterrupted one"."""
    import warnings

    def fit(root, seed, ckpt_path=None):
        pl.seed_everything(seed, verbose=False)
        module, (itlm,), data, epochs, _ = _setup("ITLM")
        spl = BatchFilter("spl", drop_ratio=0.3, warmup_epochs=2, report=False)
        saves = ModelCheckpoint(dirpath=root, save_top_k=-1, filename="{epoch}-{step}", every_n_train_steps=3)
        trainer = tiny_trainer(root, epochs, [itlm, spl, saves], enable_checkpointing=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, data, ckpt_path=ckpt_path)
        return module, spl, [str(w.message) for w in caught if "written inside epoch" in str(w.message)]

    full, full_spl, _ = fit(tmp_path / "a", 0)
    resumed, spl, said = fit(tmp_path / "b", 0, tmp_path / "a" / "epoch=1-step=6.ckpt")  # inside epoch 1, ramping
    assert said == []
    assert [asdict(r) for r in spl.history] == [asdict(r) for r in full_spl.history]
    for (key, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), key


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_itlm_resumed_from_the_last_batch_of_the_fit_records_its_last_round(tmp_path):
    """A checkpoint written at the last epoch's last batch (`every_n_train_steps`): Lightning counts that epoch done
    and trains nothing, without its `on_train_epoch_end`, so the resumed fit's history held 1 of 2 rounds and ITLM
    warned that something had stopped the fit. The last round's end now runs: its record equals the uninterrupted
    fit's but for the metrics of the validation Lightning skipped (epoch 2's are kept, and said)."""
    import dataclasses

    _, full, _ = _itlm_saving_every_3_steps(tmp_path / "a", 0)
    _, resumed, said = _itlm_saving_every_3_steps(tmp_path / "b", 0, tmp_path / "a" / "epoch=3-step=18.ckpt")  # 5+5+4+4
    assert len(resumed.history) == len(full.history) == 2
    skip = {"metrics", "metrics_from_epoch"}
    for a, b in zip(full.history, resumed.history):
        da, db = dataclasses.asdict(a), dataclasses.asdict(b)
        assert {k: v for k, v in da.items() if k not in skip} == {k: v for k, v in db.items() if k not in skip}
    assert not any("the fit ended after 1 of 2 rounds" in s for s in said), said
    assert any("round 1 ended at epoch 3 without a validation" in s for s in said), said


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_itlm_resumed_from_the_last_batch_of_an_epoch_goes_on_as_the_uninterrupted_fit(tmp_path):
    """The diff reviewer's: from a checkpoint written at an epoch's last batch (every 5 steps, 5 an epoch), Lightning
    goes on without that epoch's end and, measured on 2.6, without the next epoch's start. At the end of round 0 the
    scoring pass never ran: round 1 trained on all 160 samples (not 112) and was called collapsed. ITLM now runs that
    epoch's end and the next one's start itself: the weights, selection and rounds are the uninterrupted fit's (but
    for the skipped validation's metrics), and it says what Lightning skipped."""
    import dataclasses

    full, full_itlm, _ = _itlm_saving_every_3_steps(tmp_path / "a", 0, every=5)
    skip = {"metrics", "metrics_from_epoch"}

    def rounds(itlm):
        return [{k: v for k, v in dataclasses.asdict(h).items() if k not in skip} for h in itlm.history]

    for name, epoch in [("epoch=0-step=5.ckpt", 0), ("epoch=1-step=10.ckpt", 1)]:  # inside round 0; its end
        resumed, itlm, said = _itlm_saving_every_3_steps(tmp_path / name, 99, tmp_path / "a" / name, every=5)
        for (key, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(p, q), (name, key)
        assert torch.equal(itlm.selection, full_itlm.selection) and rounds(itlm) == rounds(full_itlm), name
        assert any(f"written at the last batch of epoch {epoch}, before that epoch's end" in s for s in said), said
        assert not any("collapsed" in s for s in said), said


@pytest.mark.parametrize("every_n_epochs", [1, 2])
def test_a_last_batch_resume_of_a_fit_validating_off_epoch_ends_says_its_draws_may_differ(tmp_path, every_n_epochs):
    """docs/checkpoints.md promised a resume from an epoch's last batch the uninterrupted fit's weights, records and
    report. Lightning's restart draws from torch's generator (its loaders' seeds) as the uninterrupted fit did only
    where that fit validated at the last batch: with `check_val_every_n_epoch=2` ITLM ended 0.09 away from the
    uninterrupted weights (a `val_check_interval=0.5` BatchFilter fit 0.15), and the warning said its rounds went on as
    uninterrupted. It says they may differ there, and still says they go on at the defaults."""
    import warnings

    def fit(root, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        module, callbacks, data, epochs, _ = _setup("ITLM")
        saves = ModelCheckpoint(dirpath=root, save_top_k=-1, filename="{epoch}", every_n_train_steps=5)
        trainer = tiny_trainer(root, epochs, [*callbacks, saves], enable_checkpointing=True,
                               check_val_every_n_epoch=every_n_epochs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, data, ckpt_path=ckpt_path)
        return [str(w.message) for w in caught if "before that epoch's end" in str(w.message)]

    fit(tmp_path / "a")
    said = fit(tmp_path / "b", tmp_path / "a" / "epoch=0.ckpt")  # 5 batches an epoch: epoch 0's last
    assert len(said) == 1, said
    assert ("validates other than at each epoch's end" in said[0]) == (every_n_epochs == 2), said
    assert ("its rounds go on as in the uninterrupted fit" in said[0]) == (every_n_epochs == 1), said


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_itlm_resumes_after_a_last_batch_resume_and_from_a_validation_end_checkpoint_as_uninterrupted(tmp_path):
    """A reviewer's two: (1) a fit resumed from an epoch's last batch went on without Lightning counting the next epoch
    started, so a checkpoint written inside that epoch read as one of an epoch not begun and its resume trained the
    epoch again (20 steps for 18); (2) a checkpoint written after the validation at an epoch's last batch was taken
    for one whose epoch end Lightning skips, and ITLM ran the round's end twice (weights 0.178 apart)."""
    import dataclasses

    full, full_itlm, _ = _itlm_saving_every_3_steps(tmp_path / "a", 0, every=5)
    skip = {"metrics", "metrics_from_epoch"}

    def same(module, itlm, name):
        for (key, p), q in zip(full.state_dict().items(), module.state_dict().values()):
            assert torch.equal(p, q), (name, key)
        assert torch.equal(itlm.selection, full_itlm.selection), name
        assert ([{k: v for k, v in dataclasses.asdict(h).items() if k not in skip} for h in itlm.history]
                == [{k: v for k, v in dataclasses.asdict(h).items() if k not in skip} for h in full_itlm.history]), name

    # (1) resume from epoch 0's last batch, saving every 3 steps, then resume from each of that fit's checkpoints
    _itlm_saving_every_3_steps(tmp_path / "b", 99, tmp_path / "a" / "epoch=0-step=5.ckpt", every=3)
    second = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "epoch=1-step=6.ckpt" in second and "epoch=1-step=9.ckpt" in second
    for name in second:
        module, itlm, _ = _itlm_saving_every_3_steps(tmp_path / f"c{name}", 7, tmp_path / "b" / name, every=3)
        same(module, itlm, name)
    # (2) checkpoints written after each validation (at each epoch's last batch, before the epoch's end)
    _, _, _ = _itlm_saving_every_3_steps(tmp_path / "v", 0, save_on_train_epoch_end=False)
    for name in sorted(p.name for p in (tmp_path / "v").iterdir()):
        module, itlm, said = _itlm_saving_every_3_steps(tmp_path / f"w{name}", 99, tmp_path / "v" / name, every=5)
        same(module, itlm, name)
        assert not any("before that epoch's end" in s for s in said), (name, said)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_itlm_resumed_inside_an_epoch_with_loader_workers_says_their_draws_restart(tmp_path):
    """ITLM takes a resumed epoch's order up where the checkpoint stopped, but the loader's worker processes start
    afresh there: random draws inside them (augmentation) are not the uninterrupted fit's, and ITLM says so."""
    from tests.conftest import BlobsData

    class Workers(BlobsData):
        def train_dataloader(self):
            return DataLoader(self.ds, batch_size=self.batch_size, shuffle=True, num_workers=1)

    def run(root, ckpt_path=None):
        import warnings

        pl.seed_everything(0, verbose=False)
        itlm = ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False, report=False)
        saves = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=2, filename="{epoch}-{step}")
        trainer = tiny_trainer(root, 2, [itlm, saves], enable_checkpointing=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(DropoutModel(), Workers(n=160, batch_size=32), ckpt_path=ckpt_path)
        return [str(w.message) for w in caught if "worker processes start afresh" in str(w.message)]

    assert run(tmp_path / "a") == []
    said = run(tmp_path / "b", tmp_path / "a" / "epoch=0-step=2.ckpt")
    assert len(said) == 1 and "inside epoch 0 (after 2 of its batches)" in said[0], said


def _auto_owner_saving_last_batches(owner, root, seed, ckpt_path=None):
    """``(module, record keeper, warnings)`` of a 4-epoch ``drop_ratio="auto"`` fit of ``owner`` (BatchFilter,
    CoTeaching or RCA, 5 batches an epoch) checkpointing at each epoch's last batch (`every_n_train_steps`)."""
    import warnings

    pl.seed_everything(seed, verbose=False)
    every = 5
    if owner == "BatchFilter":
        keeper = BatchFilter("prl", drop_ratio="auto", warmup_epochs=2, report=False)
        module, callbacks, data = TinyModel(), [keeper], BlobsData(n=160, batch_size=32)
    elif owner == "CoTeaching":
        module = keeper = CoTeaching(TinyModel(), rule="prl", drop_ratio="auto", warmup_epochs=2, report=False)
        callbacks, data, every = [], BlobsData(n=160, batch_size=32), 10  # two optimizer steps a batch
    else:
        module = keeper = RCA(2, hidden=16, latent=1, drop_ratio="auto", warmup_epochs=2, report=False)
        callbacks, data = [], _moons(160)
    saves = ModelCheckpoint(dirpath=root, save_top_k=-1, filename="{epoch}", every_n_train_steps=every)
    trainer = tiny_trainer(root, 4, [*callbacks, saves], enable_checkpointing=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, keeper, [str(w.message) for w in caught]


@pytest.mark.parametrize("owner", ["BatchFilter", "CoTeaching", "RCA"])
def test_auto_owners_resumed_from_an_epochs_last_batch_go_on_as_the_uninterrupted_fit(tmp_path, owner):
    """From a checkpoint written at an epoch's last batch Lightning 2.6 runs neither that epoch's
    `on_train_epoch_end` nor the next epoch's `on_train_epoch_start`: a BatchFilter's (CoTeaching's, RCA's) counts and
    `"auto"` scores of that epoch ran into the next one's (epoch 0 had no estimate, epoch 1 read `seen=320` of 160 and
    estimated from both epochs' scores; other weights), and the resume was said to be "inside epoch 1, after 5 of its
    batches". Each owner now runs the skipped epoch's end itself: from epoch 0's (warm-up) and from the fit's last
    batch (Lightning then trains nothing) the weights, records and estimates are the uninterrupted fit's."""
    full, full_keeper, _ = _auto_owner_saving_last_batches(owner, tmp_path / "a", 0)
    assert len(full_keeper._auto.estimates) == 2  # warm-up: epochs 0 and 1 estimate
    for name, epoch in [("epoch=0.ckpt", 0), ("epoch=3.ckpt", 3)]:
        resumed, keeper, said = _auto_owner_saving_last_batches(owner, tmp_path / name, 99, tmp_path / "a" / name)
        for (key, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(p, q), (name, key)
        assert keeper._auto.estimates == full_keeper._auto.estimates, name
        if owner != "RCA":  # RCA keeps no per-epoch history
            assert [asdict(r) for r in keeper.history] == [asdict(r) for r in full_keeper.history], name
        if epoch == 0:
            assert any(f"written at the last batch of epoch {epoch}, before that epoch's end" in s for s in said), said
            assert not any("written inside epoch" in s for s in said), said


def test_count_epoch_started_counts_an_epoch_once_whichever_owners_call_it():
    """ITLM and a BatchFilter in one fit resumed from an epoch's last batch each count the next epoch started: counted
    twice, Lightning would read a later checkpoint of that epoch as one of an epoch not begun."""
    from types import SimpleNamespace

    from pytorch_lightning.loops.progress import _Progress

    from lit_robust._lightning import count_epoch_started

    progress = _Progress()
    for step in ("ready", "started", "processed", "completed"):  # epoch 0 done, as Lightning restores it
        getattr(progress, f"increment_{step}")()
    trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_progress=progress))
    count_epoch_started(trainer)
    count_epoch_started(trainer)
    assert (progress.total.ready, progress.total.started, progress.total.processed) == (2, 2, 1)


class _WorkerGeneratorAtTrainStart(pl.Callback):
    """Records the training loader's generator state when training starts (before its workers draw their seeds)."""

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module):
        self.states.append(trainer.train_dataloader.generator.get_state().clone())


def test_each_fit_of_a_sweep_reusing_one_loader_seeds_its_workers_as_a_fresh_process(tmp_path):
    """Sweep user: one `DataLoader(num_workers=2, persistent_workers=True)` re-used over `seed_everything(0)`, `(1)`:
    the generator lit_robust gave it at the first fit went on from there at the second, whose workers' random
    augmentation (and weights: 43.73 against 43.41) then differed from the seed-1 fit run in a fresh process."""
    def loader():
        return DataLoader(blobs(64), batch_size=32, shuffle=True, num_workers=1, persistent_workers=True)

    swept, fresh = _WorkerGeneratorAtTrainStart(), _WorkerGeneratorAtTrainStart()
    reused = loader()
    for seed, data, seen in ((0, reused, swept), (1, reused, swept), (1, loader(), fresh)):
        pl.seed_everything(seed, verbose=False)
        tiny_trainer(tmp_path, 1, [BatchFilter("prl", drop_ratio=0.25), seen]).fit(TinyModel(), data)
    assert torch.equal(swept.states[1], fresh.states[0])


@pytest.mark.parametrize("owner", ["BatchFilter", "CoTeaching", "RCA"])
def test_a_report_resumed_from_the_fits_last_batch_is_the_uninterrupted_fits(tmp_path, owner):
    """Resumed from the checkpoint of the fit's very last batch (`every_n_train_steps`), Lightning still calls
    `on_train_start` but trains nothing: the owner closed the last epoch, then started an epoch after it that never
    ran, whose start cleared the sums, so the per-sample report had every `score_last_epoch`, `kept` and
    `clean_posterior` empty, and the Trainer's counters read one epoch more started than processed."""

    def run(root, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        every, data = 5, BlobsData(n=160, batch_size=32)
        if owner == "BatchFilter":
            keeper = BatchFilter("prl", drop_ratio=0.2, warmup_epochs=1, report_dir=str(root / "report"))
            module, callbacks = TinyModel(), [keeper]
        elif owner == "CoTeaching":
            module = keeper = CoTeaching(TinyModel(), rule="prl", drop_ratio=0.2, warmup_epochs=1,
                                         report_dir=str(root / "report"))
            callbacks, every = [], 10  # two optimizer steps a batch
        else:
            module = keeper = RCA(2, hidden=16, latent=1, drop_ratio=0.2, warmup_epochs=1,
                                  report_dir=str(root / "report"))
            callbacks, data = [], _moons(160)
        saves = ModelCheckpoint(dirpath=root, save_top_k=-1, filename="{epoch}", every_n_train_steps=every)
        trainer = tiny_trainer(root, 2, [*callbacks, saves], enable_checkpointing=True)
        trainer.fit(module, data, ckpt_path=ckpt_path)
        total = trainer.fit_loop.epoch_progress.total
        return open(keeper.report_path).read(), (total.ready, total.started, total.processed, total.completed)

    full = run(tmp_path / "a")
    resumed = run(tmp_path / "b", tmp_path / "a" / "epoch=1.ckpt")
    assert resumed[0].splitlines()[1] == full[0].splitlines()[1]  # the first row (fewest words on a failure)
    assert resumed == full


class _Weights(pl.Callback):
    """Rank 0 writes the weights at fit end."""

    def __init__(self, out) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            torch.save([p.detach().clone() for p in pl_module.parameters()], self.out)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("owner,step", [("BatchFilter", 10), ("ITLM", 6)],
                         ids=["BatchFilter-epoch-end", "ITLM-mid-epoch"])
def test_a_ddp_resume_with_dropout_equals_the_uninterrupted_fit(tmp_path, owner, step):
    """docs/checkpoints.md: a resumed fit draws what the uninterrupted one drew. Under DDP (2 gloo ranks) no rank's
    random state was saved, so from the resume on each rank drew other dropout masks: the weights ended 0.12
    (BatchFilter, from epoch 1's end) and 0.07 (ITLM, from inside epoch 1) away from the uninterrupted fit's."""
    from tests.conftest import ddp_cpu_strategy

    def run(name, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        if owner == "ITLM":
            keeper = ITLM(keep_ratio=0.7, round_epochs=[2, 2], verbose=False, plot=False, report=False)
        else:
            keeper = BatchFilter("prl", drop_ratio=0.25, warmup_epochs=1, report=False)
        every = dict(every_n_epochs=1) if owner == "BatchFilter" else dict(every_n_train_steps=2)
        ckpt = ModelCheckpoint(dirpath=tmp_path / name, save_top_k=-1, filename="{step}", **every)
        trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                             callbacks=[keeper, ckpt, _Weights(tmp_path / f"{name}.pt")], logger=False,
                             enable_progress_bar=False, enable_model_summary=False, deterministic=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:  # 160 samples, 2 ranks of 16 a batch: 5 batches an epoch
            trainer.fit(DropoutModel(), BlobsData(n=160, batch_size=16, with_val=True), ckpt_path=ckpt_path)
        finally:
            torch.set_num_threads(threads)
        return torch.load(tmp_path / f"{name}.pt")

    full = run("full")
    resumed = run("resumed", ckpt_path=tmp_path / "full" / f"step={step}.ckpt")
    for p, q in zip(full, resumed):
        assert torch.equal(p, q), (p - q).abs().max()


class OwnHooksModel(DropoutModel):
    """Hooks written as Lightning's docs write them, without `super()`: they hid the mixin's, so the random state was
    neither saved nor restored and the mid-epoch resume warning was never given."""

    def on_train_start(self):
        self.started = True

    def on_save_checkpoint(self, checkpoint):
        checkpoint["mine"] = 1

    def on_load_checkpoint(self, checkpoint):
        self.mine = checkpoint["mine"]


class OwnHooksCallingSuper(OwnHooksModel):
    """A subclass whose hooks call `super()` down to OwnHooksModel's: the mixin's part still runs once per hook."""

    def on_train_start(self):
        super().on_train_start()

    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint):
        super().on_load_checkpoint(checkpoint)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("cls", [OwnHooksModel, OwnHooksCallingSuper])
def test_a_module_whose_own_hooks_skip_super_still_resumes_exactly_and_warns_mid_epoch(tmp_path, cls):
    import warnings

    from lit_robust.mixin import RANDOM_STATE_KEY

    def run(root, seed, ckpt_path=None):
        pl.seed_everything(seed, verbose=False)
        module = cls()
        ends = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="end-{epoch}")
        steps = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=7, filename="{epoch}-{step}")
        trainer = tiny_trainer(root, 3, [ends, steps], enable_checkpointing=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, BlobsData(n=160, batch_size=32, with_val=True), ckpt_path=ckpt_path)
        return module, [str(w.message) for w in caught if "resumes from a checkpoint written inside" in str(w.message)]

    full, _ = run(tmp_path / "a", 0)
    written = sorted((tmp_path / "a").glob("*.ckpt"))
    assert len(written) == 5  # 3 epoch ends, steps 7 and 14: each holds the user's key and the random state
    assert all({"mine", RANDOM_STATE_KEY} <= set(torch.load(f, weights_only=True)) for f in written)
    resumed, said = run(tmp_path / "b", 99, tmp_path / "a" / "end-epoch=1.ckpt")
    assert resumed.started and resumed.mine == 1  # the user's own hooks ran
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert said == []
    _, said = run(tmp_path / "c", 99, tmp_path / "a" / "epoch=1-step=7.ckpt")
    assert len(said) == 1 and said[0].startswith(f"{cls.__name__}: this fit resumes from a checkpoint written inside "
                                                 "epoch 1 (after 2 of its batches"), said


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("every_n_epochs", [1, 2])
def test_a_plain_module_resumed_from_an_epochs_last_batch_is_told_what_lightning_does(tmp_path, every_n_epochs):
    """A plain mixin module checkpointed at each epoch's last batch (`every_n_train_steps` of an epoch's length) was
    told its resume was "inside epoch 2 (after 5 of its batches) ... in a new order": Lightning goes on at epoch 2's
    start, and with validation at each epoch's end the weights end bit for bit the uninterrupted fit's."""
    import warnings

    def run(root, seed, ckpt_path=None):
        pl.seed_everything(seed, verbose=False)
        module = DropoutModel()
        saves = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=5, filename="{epoch}-{step}")
        trainer = tiny_trainer(root, 3, [saves], enable_checkpointing=True, check_val_every_n_epoch=every_n_epochs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, BlobsData(n=160, batch_size=32, with_val=True), ckpt_path=ckpt_path)  # 5 batches
        return module, [str(w.message) for w in caught if "resumes from a checkpoint" in str(w.message)]

    full, said = run(tmp_path / "a", 0)
    assert said == []
    resumed, said = run(tmp_path / "b", 99, tmp_path / "a" / "epoch=1-step=10.ckpt")
    assert len(said) == 1 and said[0].startswith(
        "DropoutModel: this fit resumes from a checkpoint written at the last batch of epoch 1, before that epoch's "
        "end: Lightning goes on at epoch 2 without epoch 1's validation and end hooks"), said
    same = all(torch.equal(p, q) for p, q in zip(full.state_dict().values(), resumed.state_dict().values()))
    if every_n_epochs == 1:
        assert same and "The batches and random draws go on as in the uninterrupted fit" in said[0]
    else:  # validating every other epoch, Lightning's restart draws otherwise, as said
        assert not same and "the weights from here on may differ" in said[0]


class _OwnSave:
    """A user's mixin (not a RobustMixin) with `on_save_checkpoint` as Lightning's docs write it, without `super()`."""

    def on_save_checkpoint(self, checkpoint):
        checkpoint["mine"] = 1


class _MixinFirst(_OwnSave, DropoutModel):
    pass


class _MixinFirstThenOwn(_MixinFirst):
    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)


class _MiddleCallsSuper(DropoutModel):
    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        checkpoint["middle"] = 1


class _LeafSkipsSuper(_MiddleCallsSuper):
    def on_save_checkpoint(self, checkpoint):
        checkpoint["mine"] = 1


class _CopiesItself(OwnHooksModel):
    def on_save_checkpoint(self, checkpoint):
        self.__dict__["copy"] = copy.deepcopy(self)  # a snapshot taken inside the hook
        self.__dict__["pickled"] = pickle.loads(pickle.dumps(self))
        checkpoint["mine"] = 1


@pytest.mark.parametrize("cls", [_MixinFirst, _MixinFirstThenOwn, OwnHooksModel, OwnHooksCallingSuper,
                                 _LeafSkipsSuper])
def test_the_random_state_is_saved_once_whatever_hook_skips_super(monkeypatch, cls):
    """A user's mixin listed before RobustMixin (`class M(MyHooks, RobustMixin, LightningModule)`) whose
    `on_save_checkpoint` skips `super()` hid the mixin's part: its checkpoints held no random state."""
    from lit_robust.mixin import RANDOM_STATE_KEY

    calls = []
    monkeypatch.setattr(_resume, "random_state", lambda: calls.append(1) or {"drawn": len(calls)})
    checkpoint = {}
    cls().on_save_checkpoint(checkpoint)
    assert checkpoint == {"mine": 1, RANDOM_STATE_KEY: {"drawn": 1}} and len(calls) == 1


def test_a_copy_of_the_module_made_inside_a_hook_saves_the_random_state_in_its_own(monkeypatch):
    """The hook's bookkeeping lived in the module's `__dict__`: a `deepcopy` or pickle of the module made inside its
    hook carried the mark of that call, and the copy's own `on_save_checkpoint` then never saved the random state."""
    from lit_robust.mixin import RANDOM_STATE_KEY

    monkeypatch.setattr(_resume, "random_state", lambda: {"drawn": 1})
    module = _CopiesItself()
    module.on_save_checkpoint({})
    for name in ("copy", "pickled"):
        checkpoint = {}
        module.__dict__.pop(name).on_save_checkpoint(checkpoint)
        assert RANDOM_STATE_KEY in checkpoint, name


def test_a_hook_that_raised_leaves_the_next_call_whole(monkeypatch):
    from lit_robust.mixin import RANDOM_STATE_KEY

    class Fails(OwnHooksModel):
        fail = True

        def on_save_checkpoint(self, checkpoint):
            if self.fail:
                raise RuntimeError("disk full")
            checkpoint["mine"] = 1

    monkeypatch.setattr(_resume, "random_state", lambda: {"drawn": 1})
    module = Fails()
    with pytest.raises(RuntimeError, match="disk full"):
        module.on_save_checkpoint({})
    module.fail = False
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint == {"mine": 1, RANDOM_STATE_KEY: {"drawn": 1}}


class _OwnHooksSimCLR(SimCLR):
    """A SimCLR subclass whose hooks skip `super()`, as Lightning's docs write them: its checkpoints held no random
    state, so a resumed pretraining drew other views, and a resume inside an epoch was not warned about."""

    def on_train_start(self):
        self.started = True

    def on_save_checkpoint(self, checkpoint):
        checkpoint["mine"] = 1

    def on_load_checkpoint(self, checkpoint):
        self.mine = checkpoint["mine"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_simclr_subclass_whose_hooks_skip_super_resumes_exactly_and_warns_mid_epoch(tmp_path):
    import warnings

    def run(root, seed, ckpt_path=None):
        pl.seed_everything(seed, verbose=False)
        images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(5))
        data = DataLoader(TensorDataset(images, torch.zeros(32)), batch_size=16, shuffle=True)
        module = _OwnHooksSimCLR(width=2, projection_dim=4)
        ends = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="end-{epoch}")
        steps = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=3, filename="{epoch}-{step}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tiny_trainer(root, 2, [ends, steps], enable_checkpointing=True).fit(module, data, ckpt_path=ckpt_path)
        return module, [str(w.message) for w in caught if "resumes from a checkpoint written inside" in str(w.message)]

    full, _ = run(tmp_path / "a", 0)
    assert all({"mine", "simclr_random_state"} <= set(torch.load(f, weights_only=True))
               for f in (tmp_path / "a").glob("*.ckpt"))
    # another global seed: the views drawn after the resume must come from the checkpoint
    resumed, said = run(tmp_path / "b", 99, tmp_path / "a" / "end-epoch=0.ckpt")
    assert resumed.started and resumed.mine == 1  # the subclass's own hooks ran
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert said == []
    _, said = run(tmp_path / "c", 99, tmp_path / "a" / "epoch=1-step=3.ckpt")
    assert len(said) == 1 and said[0].startswith("_OwnHooksSimCLR: this fit resumes from a checkpoint written inside "
                                                 "epoch 1 (after 1 of its batches"), said


def test_a_callback_added_on_resume_that_the_checkpoint_holds_no_state_for_says_so(tmp_path):
    """A resume newcomer added ITLM to a filter's checkpoint: ITLM printed a "round 0" it never trained and blamed
    "something other than `max_epochs`" for its missing rounds, though `max_epochs` ended the fit; a filter added to
    an ITLM checkpoint said nothing. Each now says at train start that it begins mid-fit without its state."""
    from lit_robust import ITLM, BatchFilter
    from tests.conftest import BlobsData, TinyModel, tiny_trainer

    def fit(callbacks, root, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        trainer = tiny_trainer(root, 6, [*callbacks, ckpt], enable_checkpointing=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(TinyModel(), BlobsData(), ckpt_path=ckpt_path)
        return [str(w.message) for w in caught]

    def itlm():
        return ITLM(keep_ratio=0.7, round_epochs=[2, 2, 2], verbose=False, plot=False)

    fit([BatchFilter("spl", 0.2)], tmp_path / "filter")
    said = fit([itlm(), BatchFilter("spl", 0.2)], tmp_path / "a", ckpt_path=tmp_path / "filter" / "epoch=2.ckpt")
    mine = [s for s in said if "holds no" in s]
    assert len(mine) == 1 and mine[0].startswith(
        f"ITLM: this fit resumes {tmp_path / 'filter' / 'epoch=2.ckpt'} at epoch 3, but the checkpoint holds no ITLM "
        "state (the fit that wrote it ran without this ITLM), so ITLM starts here"), said
    assert not any("something other than" in s for s in said), said
    fit([itlm()], tmp_path / "itlm")
    said = fit([itlm(), BatchFilter("spl", 0.2)], tmp_path / "b", ckpt_path=tmp_path / "itlm" / "epoch=2.ckpt")
    assert [s.split(":")[0] for s in said if "holds no" in s] == ["BatchFilter"], said
    said = fit([itlm()], tmp_path / "c", ckpt_path=tmp_path / "itlm" / "epoch=2.ckpt")  # its own state: nothing said
    assert not any("holds no" in s for s in said), said


class _SometimesFlipped(_Augmented):
    """blobs whose inputs are negated with probability 1/2 at each read (a `RandomHorizontalFlip`)."""

    def __getitem__(self, i):
        index, x, y, *rest = self.ds[i]
        return (index, -x if torch.rand(()) < 0.5 else x, y, *rest)


def test_an_augmentation_applied_with_a_probability_is_found_at_the_resume(tmp_path):
    """A reviewer's `RandomHorizontalFlip` in persistent workers: reading the first sample twice caught it in 10 of
    20 seeds, and the resumes it missed ended 0.23-0.37 away from the uninterrupted fit without a word."""
    from lit_robust.data.indexed import reads_differ

    found = []
    for seed in range(20):
        torch.manual_seed(seed)
        found.append(reads_differ(_SometimesFlipped(240), items=16))
    assert all(found)
    assert not reads_differ(blobs(240), items=16)  # a dataset without randomness reads the same
    diff, said = _resume_with_workers(tmp_path, True, every=None, validate=False, dataset=_SometimesFlipped(240))
    assert diff > 0 and [m for m in said if "persistent workers and its dataset draws at random" in m], (diff, said)
