"""DCGAN under ITLM: the per-sample score, manual optimisation, re-initialisation, grids, resume, bad scores."""

import contextlib
import json
import math
import os

import numpy
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint

from lit_robust import DCGAN, ITLM, MixedImagesDataModule, SampleGrid
from tests.conftest import tiny_trainer

SMALL = dict(latent_dim=8, g_width=8, d_width=8, num_fixed=12)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small models: intra-op threads only contend


@pytest.fixture(scope="module")
def mixture(request):
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        pytest.fail(f"offline MNIST/FashionMNIST expected under {SHARED_DATA} (set LIT_ROBUST_DATA)")
    dm = MixedImagesDataModule(root=str(SHARED_DATA), clean_ratio=0.7, train_size=240, batch_size=32,
                               eval_batch_size=100, seed=0)
    dm.setup("fit")
    return dm


def fresh(dm: MixedImagesDataModule) -> MixedImagesDataModule:
    """A datamodule sharing the already loaded images (no disk read per test)."""
    new = MixedImagesDataModule(root=dm.root, clean_ratio=dm.clean_ratio, train_size=dm.train_size,
                                batch_size=dm.batch_size, eval_batch_size=dm.eval_batch_size, seed=dm.seed)
    new.train_set = dm.train_set
    return new


def batch_of(dm, n=8):
    return next(iter(torch.utils.data.DataLoader(dm.train_set, batch_size=n)))


def test_score_is_the_discriminators_loss_on_each_real_image(mixture):
    gan = DCGAN(**SMALL)
    batch = batch_of(mixture)
    scores = gan.sample_scores(batch)
    logits = gan.discriminator(batch[1]).flatten()
    reference = torch.stack([-torch.log(torch.sigmoid(v)) for v in logits])  # -log D(x_i), one at a time
    assert scores.shape == (8,)
    torch.testing.assert_close(scores, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores, F.binary_cross_entropy_with_logits(logits, torch.ones(8), reduction="none"))


def test_generator_shapes_and_range():
    gan = DCGAN(latent_dim=8, g_width=4, d_width=4, image_size=32, channels=3)
    images = gan.generate(torch.randn(5, 8))
    assert images.shape == (5, 3, 32, 32)
    assert float(images.detach().abs().max()) <= 1.0
    assert gan.discriminate(images).shape == (5,)


def test_a_training_step_updates_both_networks(mixture, tmp_path):
    gan = DCGAN(**SMALL)
    before = {k: v.detach().clone() for k, v in gan.state_dict().items()}
    trainer = tiny_trainer(tmp_path, 1, limit_train_batches=2)
    trainer.fit(gan, fresh(mixture))
    changed = {k for k, v in gan.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("generator.") for k in changed) and any(k.startswith("discriminator.") for k in changed)
    assert "fixed_z" not in changed
    assert trainer.global_step == 4  # 2 batches x (discriminator step + generator step)
    assert {"d_loss", "g_loss", "d_real_loss"} <= set(trainer.callback_metrics)


def test_itlm_rounds_reinit_both_optimizers_train_on_the_selection_and_save_grids(mixture, tmp_path):
    seen, starts = [], {}

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.current_epoch, batch[0].clone()))

        def on_train_epoch_start(self, trainer, pl_module):
            # after ITLM's re-initialisation (ITLM is listed first)
            opts = pl_module.optimizers()
            starts[trainer.current_epoch] = ([id(o.optimizer) for o in opts], [len(o.optimizer.state) for o in opts],
                                             {k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    itlm = ITLM(keep_ratio=0.6, round_epochs=[1, 1], seed=3, verbose=False, plot=False)
    grid = SampleGrid(dirpath=str(tmp_path / "grids"), nrow=4)
    gan = DCGAN(**SMALL)
    tiny_trainer(tmp_path, 2, [itlm, Spy(), grid]).fit(gan, fresh(mixture))

    (ids0, _, _), (ids1, states1, weights1) = starts[0], starts[1]
    assert set(ids0).isdisjoint(ids1) and states1 == [0, 0]  # two fresh Adams, no moments
    ref = DCGAN(**SMALL)
    ref.reinitialize(3 + 1)
    for k, v in ref.state_dict().items():
        if k.startswith(("generator.", "discriminator.")):
            assert torch.equal(weights1[k], v), k
    round1 = torch.cat([i for e, i in seen if e == 1])
    assert sorted(round1.tolist()) == itlm.selection.tolist() and len(round1) == math.floor(0.6 * 240)
    bad = mixture.train_set.corrupted
    rec = itlm.history[1]
    assert rec.clean_precision == pytest.approx(1 - float(bad[itlm.selection].float().mean()))
    assert itlm.history[0].clean_precision == pytest.approx(0.7)
    assert sorted(grid.paths) == [0, 1]
    with Image.open(grid.paths[1]) as img:
        assert img.size == (4 * 30 + 2, 3 * 30 + 2)  # 12 fixed vectors, 4 per row, 28 px + 2 px padding
        assert img.mode == "L"  # one channel: a grayscale PNG


def test_a_gans_report_has_no_label_columns_and_auto_says_why_it_uses_the_gmm(mixture, tmp_path, monkeypatch):
    """A GAN newcomer's report read `given_label` 0 on every row (the images' placeholder targets), and `"auto"`
    said the module had no integer targets, which it had (the placeholders): it predicts no labels."""
    from lit_robust import load_report

    said = []
    itlm = ITLM(keep_ratio="auto", round_epochs=[1, 1], verbose=False, plot=False, report_dir=str(tmp_path / "rep"))
    monkeypatch.setattr("lit_robust.callbacks.itlm.rank_zero_info", said.append)
    tiny_trainer(tmp_path, 2, [itlm]).fit(DCGAN(**SMALL), fresh(mixture))
    rows = load_report(itlm.report_path, as_frame=False)
    assert len(rows) == 240 and {r["given_label"] for r in rows} == {None} == {r["predicted_label"] for r in rows}
    assert sum(r["corrupted"] for r in rows) == 72  # the ground truth stays
    assert ("ITLM round 1: `estimator='floor_or_interior'` needs integer targets and `predicted_labels` of the "
            "module; the module's targets are placeholders (`report_targets = False`), so the gmm estimate is used instead."
            ) in said, said
    assert not [m for m in said if "returned no loss" in m]  # a GAN has no one loss to return: not asked for one


def test_itlm_makes_the_selection_cleaner(mixture, tmp_path):
    """A real (small) run: after one round on all images, the discriminator's trimmed set beats the mixture."""
    pl.seed_everything(0, verbose=False)
    itlm = ITLM(keep_ratio=0.65, round_epochs=[3, 1], verbose=False, plot=False)
    tiny_trainer(tmp_path, 4, [itlm]).fit(DCGAN(latent_dim=16, g_width=16, d_width=16), fresh(mixture))
    # the mixture is 70% clean; seeds 0-2 of this setting gave 0.94-0.96 in a side run
    assert itlm.history[1].clean_precision > 0.85


def test_each_ddp_rank_draws_its_own_slice_of_the_global_batchs_noise():
    """Under DDP every rank drew the same latent noise (identical fake batches on every process). Rank r of W now
    takes rows [r n, (r + 1) n) of the global batch's W n draws: the ranks differ, together they are one process's
    draw for the global batch, every rank's generator ends where rank 0's (the one checkpointed) does, and one
    process draws exactly as before."""
    from types import SimpleNamespace

    def gan(world=1, rank=0):
        g = DCGAN(latent_dim=3, image_size=8, g_width=2, d_width=2)
        if world > 1:
            g._trainer = SimpleNamespace(world_size=world, global_rank=rank)
        return g

    assert torch.equal(gan()._step_noise(8), gan().sample_noise(8))  # one process: unchanged
    ranks = [gan(2, r) for r in (0, 1)]
    z0, z1 = (g._step_noise(4) for g in ranks)
    assert not torch.equal(z0, z1)
    assert torch.equal(torch.cat([z0, z1]), gan()._step_noise(8))
    assert torch.equal(ranks[0]._noise.get_state(), ranks[1]._noise.get_state())


class _NoiseSpy(DCGAN):
    """Writes the latent vectors of its training steps to ``<out>.<rank>``."""

    def __init__(self, out: str = "", **kwargs):
        super().__init__(**kwargs)
        self.out, self.zs = out, []

    def generate(self, z):
        if self.training and self._trainer is not None and self.trainer.training:
            self.zs.append(z.tolist())
        return super().generate(z)

    def on_train_end(self):
        with open(f"{self.out}.{self.global_rank}", "w") as f:
            json.dump(self.zs, f)


class _SixteenImages(pl.LightningDataModule):
    def train_dataloader(self):
        from torch.utils.data import DataLoader, TensorDataset

        from lit_robust import IndexedDataset

        x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
        return DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(16))), batch_size=4)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_two_gloo_ranks_train_on_different_fakes(tmp_path):
    """The 2-process fit of the test above: each rank's fakes came from the same noise (rank 0's == rank 1's at
    every step); now they differ and, step by step, are one process's noise for the 8-image global batch."""
    from tests.conftest import ddp_cpu_strategy, fit_ranks

    out = str(tmp_path / "z")
    fit_ranks(lambda: (pl.Trainer(max_epochs=1, accelerator="cpu", devices=2,
                                  strategy=f"{ddp_cpu_strategy()}_find_unused_parameters_true", logger=False,
                                  enable_checkpointing=False, enable_progress_bar=False,
                                  enable_model_summary=False),
                       _NoiseSpy(out, latent_dim=3, image_size=8, g_width=2, d_width=2), _SixteenImages()))
    z0, z1 = (json.load(open(f"{out}.{r}")) for r in (0, 1))
    assert len(z0) == len(z1) == 2 and z0[0] != z1[0]
    one = DCGAN(latent_dim=3, image_size=8, g_width=2, d_width=2)
    assert [a + b for a, b in zip(z0, z1)] == [one.sample_noise(8).tolist() for _ in range(2)]


class _PerRankImages(pl.LightningDataModule):
    """The user's own shard per process (``use_distributed_sampler=False``): ``sizes[rank]`` images, batches of 4."""

    def __init__(self, sizes):
        super().__init__()
        self.sizes = sizes

    def train_dataloader(self):
        from torch.utils.data import DataLoader, TensorDataset

        from lit_robust import IndexedDataset

        n = self.sizes[self.trainer.global_rank]
        x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
        return DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(n))), batch_size=4)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("sizes, told", [((10, 9), "3 batches an epoch, the last of 1 to 2 images"),
                                         ((12, 8), "2 to 3 batches an epoch, the last of 4 images")])
def test_ddp_ranks_with_uneven_batches_are_refused_at_train_start(tmp_path, sizes, told):
    """Each rank draws the global batch's noise from its own batch size: own shards of 10 and 9 images (last batches
    of 2 and 1) left the ranks' noise streams apart (rank 0's, the one checkpointed, not rank 1's), and 12 against 8
    crashed in gloo when rank 1 ran out of batches. Both are refused on every rank before the first step."""
    from tests.conftest import ddp_cpu_strategy, fit_ranks

    def make():
        return (pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, use_distributed_sampler=False,
                           strategy=f"{ddp_cpu_strategy()}_find_unused_parameters_true", logger=False,
                           enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False),
                DCGAN(latent_dim=3, image_size=8, g_width=2, d_width=2), _PerRankImages(sizes))

    with pytest.raises(Exception, match=r"`use_distributed_sampler`: DCGAN under DDP needs the same batches on every "
                                        rf"process .* the training loaders give {told} \(rank"):
        fit_ranks(make)


def test_even_batches_check_communicates_on_the_modules_device(monkeypatch):
    """The train-start check of the ranks' batches made its tensor on the CPU, which the NCCL process group of
    every multi-GPU DDP fit refuses (the project's collectives: "`tensor` must be on a device in ['cuda'] for the
    nccl process group, got cpu"), so every DCGAN fit on 2+ GPUs stopped there. It is made on the module's device
    (a meta device here stands in for CUDA on a CPU-only machine)."""
    from unittest import mock

    from lit_robust.models import gan

    seen = []

    def all_reduce_max(t):
        seen.append(t.device)
        return torch.tensor([3, 2])  # the same on every rank: nothing to refuse

    model = DCGAN(latent_dim=3, image_size=8, g_width=2, d_width=2)
    model._device = torch.device("meta")
    model._trainer = mock.MagicMock(world_size=2)
    monkeypatch.setattr(gan.distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(gan.distributed, "all_reduce_max", all_reduce_max)
    monkeypatch.setattr(gan, "_batches_and_last", lambda trainer: (3, 2))
    model._check_even_batches()
    assert seen == [torch.device("meta")] * 2


@pytest.mark.parametrize("strategy, told", [("ddp", "ddp_find_unused_parameters_true"),
                                             ("ddp_spawn", "ddp_spawn_find_unused_parameters_true"),
                                             ("ddp_fork", "ddp_fork_find_unused_parameters_true"),
                                             ("ddp_fork_find_unused_parameters_true", None), ("auto", None)])
def test_plain_ddp_is_refused_at_setup_naming_the_strategy_to_use(strategy, told):
    """Under plain `strategy="ddp"` the discriminator's backward leaves the generator's parameters unused and
    Lightning raised its unused-parameters error at the second step, on every rank (2 gloo ranks, ddp_fork); the
    module's `setup` now refuses it before any step, naming the same launcher with unused parameters found."""
    trainer = pl.Trainer(accelerator="cpu", devices=2 if strategy != "auto" else 1, strategy=strategy, logger=False)
    gan = DCGAN(latent_dim=3, image_size=8, g_width=2, d_width=2)
    gan._trainer = trainer
    if told is None:
        gan.setup("fit")
        return
    with pytest.raises(ValueError, match=rf"^`strategy`: DCGAN .* use strategy='{told}' \(`DDPStrategy\("
                                         rf"find_unused_parameters=True\)`\), got the DDP strategy '{strategy}'"):
        gan.setup("fit")
    gan.setup("validate")  # one forward pass: no backward, nothing unused


def test_resume_reproduces_an_uninterrupted_gan_run(mixture, tmp_path):
    def run(root, ckpt_path=None):
        pl.seed_everything(1 if ckpt_path is None else 99, verbose=False)
        itlm = ITLM(keep_ratio=0.6, round_epochs=[1, 1, 1], verbose=False, plot=False)
        ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        gan = DCGAN(**SMALL)
        tiny_trainer(root, 3, [itlm, ckpt], enable_checkpointing=True, limit_train_batches=3).fit(
            gan, fresh(mixture), ckpt_path=ckpt_path)
        return gan, itlm

    full_gan, full = run(tmp_path / "a")
    resumed_gan, resumed = run(tmp_path / "b", ckpt_path=tmp_path / "a" / "epoch=1.ckpt")
    assert torch.equal(resumed.selection, full.selection)
    for (k, p), q in zip(full_gan.state_dict().items(), resumed_gan.state_dict().values()):
        assert torch.equal(p, q), k  # same noise stream, same selection, same updates


class ScalarScore(DCGAN):
    def sample_scores(self, batch):
        return super().sample_scores(batch).mean()


class ColumnScore(DCGAN):
    def sample_scores(self, batch):
        return super().sample_scores(batch).unsqueeze(1)


class BatchMeanScore(DCGAN):
    def sample_scores(self, batch):
        s = super().sample_scores(batch)
        return s - s.mean()  # centred on the batch: a sample's score depends on the others


@pytest.mark.parametrize(("cls", "message"), [
    (ScalarScore, r"`sample_scores` must return one score per sample \(shape \(32,\)\), got \(\)\. Use "
                  r"`reduction='none'`"),
    (ColumnScore, r"one score per sample \(shape \(32,\)\), got \(32, 1\)\. .*flatten a `\[B, 1\]` output"),
    (BatchMeanScore, r"`ITLM`: `sample_scores` must score each sample on its own, but the first 16 samples of a "
                     r"batch of 32 got different scores when scored without the others"),
])
def test_scores_of_wrong_shape_or_not_per_sample_are_rejected(mixture, tmp_path, cls, message):
    """At the first training batch (32 images), before round 0 trains: the scoring pass at its end found them one
    round late (a newcomer lost a round on 60,000 images)."""
    itlm = ITLM(keep_ratio=0.6, round_epochs=[1, 1], verbose=False, plot=False)
    trainer = tiny_trainer(tmp_path, 2, [itlm], limit_train_batches=1)
    with pytest.raises(ValueError, match=message):
        trainer.fit(cls(**SMALL), fresh(mixture))
    assert trainer.global_step == 0


def test_per_sample_check_can_be_turned_off(mixture, tmp_path):
    itlm = ITLM(keep_ratio=0.6, round_epochs=[1, 1], verbose=False, plot=False, check_per_sample=False)
    tiny_trainer(tmp_path, 2, [itlm], limit_train_batches=1).fit(BatchMeanScore(**SMALL), fresh(mixture))
    assert itlm.history[-1].kept == 144


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(image_size=30), "`image_size` must be a multiple of 4 and >= 8, got 30"),
    (dict(latent_dim=0), "`latent_dim` must be an integer >= 1, got 0"),
    (dict(lr=0.0), "`lr` must be a number > 0 \\(at most 3\\.4e\\+38, the largest float32\\), got 0.0"),
    (dict(beta1=1.0), r"`beta1` must be a number in \[0, 1\), got 1.0"),
    # wrong types through the Python API: a named message, not `'<=' not supported between ...` or torch's own
    (dict(lr="0.01"), r"`lr` must be a number > 0 \(at most 3\.4e\+38, the largest float32\), got '0.01'"),
    (dict(beta2=None), r"`beta2` must be a number in \[0, 1\), got None"),
    (dict(seed=0.5), r"`seed` must be an integer in \[0, 4294967295\], got 0.5"),
    # the noise stream draws with seed + 2: torch's bare "Overflow when unpacking long long" named no argument
    (dict(seed=2**64 - 2), r"`seed` must be an integer in \[0, 4294967295\], got 18446744073709551614\."),
    # taken before, where ITLM and `--seed_everything` refuse it
    (dict(seed=-1), r"^`seed` must be an integer in \[0, 4294967295\], got -1\.$"),
    (dict(seed=10**30), r"`seed` must be an integer in \[.*\], got 1000000000000000000000000000000\."),
])
def test_dcgan_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DCGAN(**kwargs)


def test_dcgan_takes_every_seed_its_three_draws_allow():
    """A reviewer's `DCGAN(seed=2**64 - 2)` ended in torch's "Overflow when unpacking long long" (the noise stream
    seeds with seed + 2); the ends of the range that `check_seed` allows build."""
    for seed in (2**32 - 1, 0):
        assert DCGAN(latent_dim=4, g_width=4, d_width=4, num_fixed=2, seed=seed).hparams.seed == seed


def test_sample_grid_needs_a_generator(tmp_path):
    from tests.conftest import BlobsData, TinyModel

    with pytest.raises(TypeError, match="`SampleGrid` needs a module with `generate\\(z\\)` and a `fixed_z` tensor"):
        tiny_trainer(tmp_path, 1, [SampleGrid(dirpath=str(tmp_path))]).fit(TinyModel(), BlobsData())
    with pytest.raises(ValueError, match="`every` must be 'round' or 'epoch', got 'step'"):
        SampleGrid(every="step")


def test_sample_grid_without_itlm_saves_at_the_end_or_every_epoch(mixture, tmp_path, monkeypatch):
    import lit_robust.callbacks.sample_grid as sample_grid

    said = []
    monkeypatch.setattr(sample_grid, "rank_zero_info", said.append)
    per_round, per_epoch = SampleGrid(), SampleGrid(dirpath=str(tmp_path / "e"), every="epoch")
    tiny_trainer(tmp_path, 2, [per_round, per_epoch], limit_train_batches=1).fit(DCGAN(**SMALL), fresh(mixture))
    assert list(per_round.paths) == [0] and per_round.paths[0] == str(tmp_path / "samples" / "round0.png")
    assert sorted(per_epoch.paths) == [0, 1]
    # each says once where its grids go
    assert sorted(said) == [f"SampleGrid: sample grids written to {tmp_path / 'e'}",
                            f"SampleGrid: sample grids written to {tmp_path / 'samples'}"]


def test_sample_grid_reads_a_leading_tilde_as_the_home_folder(mixture, tmp_path, monkeypatch):
    """`SampleGrid(dirpath="~/grids")` wrote into a folder named `~` under the current one, where `report_dir`,
    `plot_dir` and Lightning's `default_root_dir` read `~` as the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    grid = SampleGrid(dirpath="~/grids")
    tiny_trainer(tmp_path, 1, [grid], limit_train_batches=1).fit(DCGAN(**SMALL), fresh(mixture))
    assert grid.paths[0] == str(tmp_path / "home" / "grids" / "round0.png")
    assert os.path.isfile(grid.paths[0]) and not os.path.exists(tmp_path / "~")


def _count_grids(monkeypatch) -> list[str]:
    """The file names `SampleGrid` draws, in order (the grids are still written)."""
    import os

    import lit_robust.callbacks.sample_grid as sample_grid

    drawn, save = [], sample_grid.save_grid
    monkeypatch.setattr(sample_grid, "save_grid", lambda images, path, nrow=8: (drawn.append(os.path.basename(path)),
                                                                              save(images, path, nrow)))
    return drawn


@pytest.mark.parametrize(("itlm", "every", "kw", "expected"), [
    (False, "round", dict(max_epochs=None, max_steps=6), ["round0.png"]),  # Lightning sets max_epochs=-1
    (False, "round", dict(max_epochs=2), ["round0.png"]),  # the fit's end draws no second grid
    (True, "round", dict(max_epochs=3, max_steps=6), ["round0.png", "round1.png"]),  # stopped in round 1's 1st epoch
    (False, "epoch", dict(max_epochs=None, max_steps=6), ["epoch0.png", "epoch1.png"]),
])
def test_sample_grid_writes_the_last_grid_of_a_fit_that_ends_inside_a_round(mixture, tmp_path, monkeypatch, itlm,
                                                                           every, kw, expected):
    """A reviewer's `Trainer(max_steps=6)` without ITLM wrote no grid at all (paths {}, no folder, no warning): the
    grid came only when epoch + 1 == max_epochs, -1 there. An ITLM fit stopped inside its last round lacked that
    round's. Each grid is drawn once, under its round's (or epoch's) name."""
    drawn = _count_grids(monkeypatch)
    grid = SampleGrid(every=every)
    callbacks = [ITLM(keep_ratio=0.6, round_epochs=[1, 2], verbose=False, plot=False), grid] if itlm else [grid]
    with pytest.warns() if itlm else contextlib.nullcontext():  # ITLM says the fit may stop inside a round
        tiny_trainer(tmp_path, callbacks=callbacks, limit_train_batches=2, **kw).fit(DCGAN(**SMALL), fresh(mixture))
    assert drawn == expected  # 4 global steps an epoch: two optimizer steps a batch
    assert grid.paths == {i: str(tmp_path / "samples" / name) for i, name in enumerate(expected)}
    assert all((tmp_path / "samples" / name).is_file() for name in expected)


def test_sample_grid_resumed_after_an_early_end_draws_the_new_end_once(mixture, tmp_path, monkeypatch):
    """Resuming a fit that `max_steps` ended (its grid drawn at the end, then saved): the same `max_steps` trains
    nothing and draws nothing; a larger one draws the new end's grid once, under the same name."""
    drawn = _count_grids(monkeypatch)

    def fit(max_steps, ckpt_path=None):
        grid = SampleGrid()
        trainer = tiny_trainer(tmp_path, None, [grid], max_steps=max_steps, limit_train_batches=2)
        trainer.fit(DCGAN(**SMALL), fresh(mixture), ckpt_path=ckpt_path)
        return trainer, grid

    trainer, grid = fit(6)
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    assert drawn == ["round0.png"]
    assert fit(6, tmp_path / "end.ckpt")[1].paths == grid.paths and drawn == ["round0.png"]
    assert fit(10, tmp_path / "end.ckpt")[1].paths == grid.paths and drawn == ["round0.png", "round0.png"]


@pytest.mark.parametrize("channels", [2, 4, 5])
def test_save_grid_draws_other_channel_counts_as_one_grayscale_grid_per_channel(tmp_path, channels):
    """A reviewer's DCGAN with 2 or 4 channels got 'LA' / 'RGBA' grids (a channel read as transparency), and with 5
    a PIL TypeError at the end of round 0, after the training time was spent."""
    from lit_robust.callbacks.sample_grid import save_grid

    images = torch.rand(6, channels, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    save_grid(images, str(tmp_path / "all.png"), nrow=4)
    blocks = []
    for c in range(channels):  # the reference: each channel on its own, a one-channel (grayscale) grid
        save_grid(images[:, c : c + 1], str(tmp_path / f"c{c}.png"), nrow=4)
        with Image.open(tmp_path / f"c{c}.png") as one:
            blocks.append(torch.from_numpy(numpy.asarray(one)))
    with Image.open(tmp_path / "all.png") as img:
        assert img.mode == "L" and img.size == (4 * 10 + 2, channels * (2 * 10 + 2))
        assert torch.equal(torch.from_numpy(numpy.asarray(img)), torch.cat(blocks))
    save_grid(images[:, :1].repeat(1, 3, 1, 1), str(tmp_path / "rgb.png"))
    with Image.open(tmp_path / "rgb.png") as img:
        assert img.mode == "RGB"  # three channels stay one colour grid


def test_sample_grid_of_a_five_channel_dcgan_is_written(tmp_path):
    """The end-to-end path of the reviewer's 5-channel DCGAN: round 0's grid is written instead of crashing."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset

    loader = DataLoader(IndexedDataset(TensorDataset(torch.rand(16, 5, 8, 8) * 2 - 1, torch.zeros(16))), batch_size=8)
    grid = SampleGrid(dirpath=str(tmp_path))
    tiny_trainer(tmp_path, 1, [grid]).fit(DCGAN(latent_dim=4, channels=5, image_size=8, g_width=4, d_width=4,
                                                num_fixed=4), loader)
    with Image.open(grid.paths[0]) as img:
        assert img.mode == "L" and img.size == (4 * 10 + 2, 5 * (10 + 2))


def test_sample_grid_checks_its_dirpath_before_training(tmp_path):
    """`SampleGrid(dirpath=...)` naming a file trained a round and then failed at its first grid in a
    FileExistsError traceback (`lit-robust fit`; a CLI sweep's): the folder is checked at setup, as ITLM's
    `plot_dir` is, and the error names the argument."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset

    (tmp_path / "afile").write_text("x")
    loader = DataLoader(IndexedDataset(TensorDataset(torch.rand(8, 1, 8, 8) * 2 - 1, torch.zeros(8))), batch_size=4)
    trainer = tiny_trainer(tmp_path, 1, [SampleGrid(dirpath=str(tmp_path / "afile"))])
    with pytest.raises(ValueError, match=r"`dirpath` must be a folder a file can be written into, got '.*afile' "
                                         r"\(FileExistsError"):
        trainer.fit(DCGAN(latent_dim=4, image_size=8, g_width=4, d_width=4, num_fixed=4), loader)
    assert trainer.global_step == 0  # refused before any training


def test_dcgan_checks_the_datamodule_images_at_setup(tmp_path, shared_data):
    data = MixedImagesDataModule(root=str(shared_data), clean_ratio=0.7, train_size=64)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         accelerator="cpu", default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"`model.image_size`=32 does not fit `data`: MixedImagesDataModule yields "
                                         r"1×28×28 images. Set `model.image_size` to 28."):
        trainer.fit(DCGAN(image_size=32), data)
    with pytest.raises(ValueError, match=r"`model.channels`=3 does not fit `data`"):
        trainer.fit(DCGAN(channels=3), data)


@pytest.mark.parametrize("bad", [dict(image_size=32), dict(channels=3)])
def test_dcgan_checks_a_plain_loaders_first_batch(tmp_path, bad):
    # a newcomer's own image set through a plain DataLoader got a 72-line conv traceback, not the misfit line
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset

    loader = DataLoader(IndexedDataset(TensorDataset(torch.rand(16, 1, 28, 28) * 2 - 1, torch.zeros(16))),
                        batch_size=8)
    name = next(iter(bad))
    with pytest.raises(ValueError, match=rf"`model.{name}`={bad[name]} does not fit `data`: the first training batch "
                                         r"yields 1×28×28"):
        tiny_trainer(tmp_path, 1).fit(DCGAN(**bad), loader)


def test_dcgan_names_a_wrong_image_size_before_itlm_scores_the_batch(tmp_path):
    """A newcomer's own 32×32 folder under ITLM: ITLM's first-batch check runs the discriminator before the module's
    own first-batch check, and ended in "shape '[64]' is invalid for input of size 256" (exit 1)."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import ITLM, IndexedDataset

    loader = DataLoader(IndexedDataset(TensorDataset(torch.rand(16, 1, 32, 32) * 2 - 1, torch.zeros(16))),
                        batch_size=8)
    itlm = ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False)
    with pytest.raises(ValueError, match=r"`model.image_size`=28 does not fit `data`: the first training batch yields "
                                         r"1×32×32 images. Set `model.image_size` to 32."):
        tiny_trainer(tmp_path, 2, [itlm]).fit(DCGAN(**{**SMALL, "image_size": 28}), loader)
    with pytest.raises(ValueError, match=r"the batch yields vectors of 1024 features. DCGAN takes images of shape "
                                         r"\[batch, 1, 28, 28\]"):
        DCGAN(**SMALL).discriminate(torch.zeros(2, 1024))


def test_sample_grid_keeps_its_grids_when_the_same_trainer_fits_on(tmp_path):
    """A second `trainer.fit` on the same Trainer goes on from its loops' progress (as ITLM and the filters now do):
    the grids written so far stay listed; a new Trainer (epoch 0) starts the list afresh."""
    from types import SimpleNamespace

    grid = SampleGrid(dirpath=str(tmp_path))
    grid.paths = {0: "round0.png"}
    module = DCGAN(latent_dim=8, g_width=4, d_width=4)
    # one process: what the check of `dirpath` at setup asks of the Trainer
    one = {"global_rank": 0, "strategy": SimpleNamespace(broadcast=lambda obj: obj)}
    grid.setup(SimpleNamespace(current_epoch=3, global_step=12, **one), module, "fit")
    assert grid.paths == {0: "round0.png"}
    grid.setup(SimpleNamespace(current_epoch=0, global_step=0, **one), module, "fit")
    assert grid.paths == {}


@pytest.mark.parametrize("indexed", [True, False])
def test_two_validation_loaders_get_one_value_each_plain_or_indexed(tmp_path, indexed):
    """A Lightning user's list of two validation loaders got Lightning's "no `dataloader_idx` argument" error, and a
    plain `(images, target)` validation set was told to wrap "the training dataset" in `IndexedDataset`."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset

    g = torch.Generator().manual_seed(0)
    images = [torch.rand(16, 1, 8, 8, generator=g) * 2 - 1, -torch.ones(16, 1, 8, 8)]  # two unlike sets
    zeros = torch.zeros(16, dtype=torch.long)

    def loader(x):
        ds = TensorDataset(x, zeros)
        return DataLoader(IndexedDataset(ds) if indexed else ds, batch_size=16)

    gan = DCGAN(latent_dim=3, image_size=8, channels=1, g_width=2, d_width=2, num_fixed=4)
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 1, limit_train_batches=1)
    trainer.fit(gan, DataLoader(IndexedDataset(TensorDataset(images[0], zeros)), batch_size=8),
                [loader(x) for x in images])
    gan.eval()
    with torch.no_grad():
        want = [float(F.softplus(-gan.discriminate(x)).mean()) for x in images]
    got = [float(trainer.callback_metrics[f"val_d_real_loss/dataloader_idx_{k}"]) for k in (0, 1)]
    # the untrained discriminator's logits are near 0: the two sets' losses differ in the fifth digit, each loader's
    # value is its own to the sixth
    assert got == pytest.approx(want, rel=1e-6) and abs(want[0] - want[1]) > 1e-5


def test_dcgan_and_sample_grid_at_their_defaults(mixture, tmp_path):
    """`configs/itlm_gan_mixture.yaml` leaves DCGAN's Adam settings, `num_fixed` and SampleGrid's `dirpath` and
    `nrow` at their defaults, and no test ran them there: both networks' Adams get the DCGAN paper's
    (lr 2e-4, betas (0.5, 0.999); torch's beta1 of 0.9 is what the paper moved away from), each over its own
    network, and with a logger the grid of the 32 fixed vectors lands in `<log_dir>/samples`, 8 to a row."""
    from pytorch_lightning.loggers import CSVLogger

    gan = DCGAN()
    opt_d, opt_g = gan.configure_optimizers()
    for opt, net in ((opt_d, gan.discriminator), (opt_g, gan.generator)):
        assert isinstance(opt, torch.optim.Adam)
        (group,) = opt.param_groups
        assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999)
        assert [id(p) for p in group["params"]] == [id(p) for p in net.parameters()]
    grid = SampleGrid()
    trainer = tiny_trainer(tmp_path, 1, [grid], logger=CSVLogger(str(tmp_path)), limit_train_batches=1)
    trainer.fit(gan, fresh(mixture))
    assert grid.paths == {0: os.path.join(trainer.log_dir, "samples", "round0.png")}
    assert trainer.log_dir == str(tmp_path / "lightning_logs" / "version_0")
    with Image.open(grid.paths[0]) as img:
        assert img.mode == "L" and img.size == (8 * 30 + 2, 4 * 30 + 2)  # 32 images of 28 px + 2 px padding


def test_mixed_images_default_to_mnist_polluted_with_fashion_mnist(mixture, shared_data):
    """The GAN config and every test leave `clean` and `bad` out; the counts and flags alone would read the same with
    the two swapped. The unflagged images are MNIST training digits and the flagged ones FashionMNIST items, scaled
    to [-1, 1]."""
    from lit_robust.data.mixture import load_images

    x = mixture.train_set.dataset.tensors[0]
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    pixels = ((x[:, 0] + 1) * 127.5).round().to(torch.uint8)
    sources = {name: {bytes(im.flatten().tolist()) for im in load_images(name, str(shared_data))}
               for name in ("mnist", "fashion_mnist")}
    flags = mixture.train_set.corrupted
    found = [("fashion_mnist" if bytes(im.flatten().tolist()) in sources["fashion_mnist"] else
              "mnist" if bytes(im.flatten().tolist()) in sources["mnist"] else None) for im in pixels]
    assert found == ["fashion_mnist" if bad else "mnist" for bad in flags.tolist()]
