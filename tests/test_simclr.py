"""SimCLR pretraining, its augmentation, the LinearProbe fine-tuning and the semi-supervised backdoor data."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import (
    BatchFilter,
    IndexedDataset,
    LinearProbe,
    SemiSupervisedBackdoorMNISTDataModule,
    SimCLR,
    SpectralNorm,
    random_views,
    simclr_backbone,
)
from lit_robust.data.base import torchvision_split
from lit_robust.data.semi_supervised import MNIST_VALUE_RANGE
from tests.conftest import tiny_trainer

# -- random_views (pure) ----------------------------------------------------------------------------------------


def test_identity_settings_return_the_images():
    x = torch.randn(4, 1, 28, 28)
    out = random_views(x, crop_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0), max_rotation=0.0, jitter=0.0)
    assert torch.allclose(out, x, atol=1e-5)


def test_half_size_crop_of_a_ramp_halves_its_slope():
    # bilinear resampling reproduces a linear function exactly: a centred crop of half the width, resized to the
    # full width, is the same ramp with half the slope (the crop is placed uniformly: fix it at the centre by
    # asking for a full-height crop and comparing slopes only)
    w = 32
    ramp = torch.linspace(-1, 1, w).expand(1, 1, w, w).clone()
    out = random_views(ramp, crop_scale=(0.5, 0.5), aspect_ratio=(0.5, 0.5), max_rotation=0.0, jitter=0.0,
                       generator=torch.Generator().manual_seed(0))
    # crop width sqrt(0.5 * 0.5) = 0.5, height sqrt(0.5 / 0.5) = 1: slope per pixel halves, rows stay identical
    inner = out[0, 0, :, 2:-2]
    slope = inner[:, 1:] - inner[:, :-1]
    assert torch.allclose(slope, torch.full_like(slope, 0.5 * 2 / (w - 1)), atol=1e-5)
    assert torch.allclose(inner, inner[:1].expand_as(inner))


def test_views_are_seeded_independent_per_image_and_keep_shape():
    x = torch.randn(1, 1, 28, 28).expand(6, 1, 28, 28).contiguous()
    a = random_views(x, generator=torch.Generator().manual_seed(1))
    b = random_views(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # the same image gets different views


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"crop_scale": (0.0, 1.0)}, r"`crop_scale` must be \(low, high\) with 0 < low <= high <= 1, got \(0.0, 1.0\)"),
    ({"aspect_ratio": (2.0, 1.0)}, r"`aspect_ratio` must be \(low, high\) with 0 < low <= high, got \(2.0, 1.0\)"),
    ({"max_rotation": 200.0}, r"`max_rotation` must be a number in \[0, 180\], got 200.0"),
    ({"jitter": 1.0}, r"`jitter` must be a number in \[0, 1\), got 1.0"),
])
def test_random_views_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        random_views(torch.zeros(2, 1, 8, 8), **kwargs)


def test_backbone_shapes_and_errors():
    x = torch.zeros(2, 1, 28, 28)
    assert simclr_backbone("cnn", width=4)(x).shape == (2, 16)
    r = simclr_backbone("resnet18", in_channels=1, first_conv=False, maxpool1=False)
    assert r.conv1.kernel_size == (3, 3) and r.conv1.stride == (1, 1) and isinstance(r.maxpool, torch.nn.Identity)
    assert r.eval()(x).shape == (2, 512)
    # the argument the caller passed: `name` here, `backbone` in SimCLR
    with pytest.raises(ValueError, match=r"`name` must be one of \('cnn', 'resnet18', 'resnet50'\), got 'vgg'"):
        simclr_backbone("vgg")
    for make in (SimCLR, LinearProbe):
        with pytest.raises(ValueError, match=r"`backbone` must be one of \('cnn', 'resnet18', 'resnet50'\), got 'vgg'"):
            make(backbone="vgg")
    with pytest.raises(ValueError, match="`width` must be an integer >= 1, got 0"):
        simclr_backbone("cnn", width=0)


# -- SimCLR module ------------------------------------------------------------------------------------------------


def _images(n: int = 64, seed: int = 0) -> IndexedDataset:
    g = torch.Generator().manual_seed(seed)
    return IndexedDataset(TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.zeros(n, dtype=torch.long)))


def test_simclr_fit_lowers_the_contrastive_loss(tmp_path, one_torch_thread):
    torch.manual_seed(0)
    model = SimCLR(width=4, projection_dim=8, lr=3e-3)
    loader = DataLoader(_images(), batch_size=32, shuffle=False)
    batch = next(iter(loader))
    g = torch.Generator().manual_seed(5)
    fixed = (random_views(batch[1], generator=g), random_views(batch[1], generator=g))

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model.contrastive_loss(*fixed))

    before = loss()
    tiny_trainer(tmp_path, max_epochs=6).fit(model, loader)
    assert loss() < before


def test_simclr_precomputed_views_and_the_none_mode():
    model = SimCLR(width=4, projection_dim=8, augment="none")
    v = torch.randn(4, 1, 28, 28)
    assert model.views((torch.arange(4), [v, v + 1], torch.zeros(4)))[1] is not v
    with pytest.raises(ValueError, match="augment='none'.*needs batches of two views"):
        model.views((torch.arange(4), v, torch.zeros(4)))


def test_simclr_gathers_negatives_under_ddp_only():
    model = SimCLR(width=4)
    model.trainer = SimpleNamespace(world_size=1)  # what setup reads
    model.setup("fit")
    assert model.criterion.gather_distributed is False
    model.trainer = SimpleNamespace(world_size=2)
    model.setup("fit")
    assert model.criterion.gather_distributed is True and model.criterion.temperature == 0.5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temperature": 0.0}, "`temperature` must be a number > 0, got 0.0"),
    ({"temperature": "0.5"}, "`temperature` must be a number > 0, got '0.5'"),
    ({"lr": None}, "`lr` must be a number > 0 \\(at most 3\\.4e\\+38, the largest float32\\), got None"),
    ({"jitter": 1.0}, r"`jitter` must be a number in \[0, 1\), got 1.0"),
    ({"max_rotation": "10"}, r"`max_rotation` must be a number in \[0, 180\], got '10'"),
    ({"augment": "rgb"}, "`augment` must be 'grey' or 'none', got 'rgb'"),
    ({"crop_scale": (0.5, 2.0)}, r"`crop_scale` must be .* got \(0.5, 2.0\)"),
])
def test_simclr_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimCLR(**kwargs)


# -- LinearProbe (Algorithm 7's fine-tuning) ---------------------------------------------------------------------


def _labelled(n: int = 120, seed: int = 0) -> IndexedDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 28, 28, generator=g) * 0.3 + y.view(n, 1, 1, 1).float()
    noisy = y.clone()
    noisy[:30] = (y[:30] + 1) % 3
    corrupted = torch.zeros(n, dtype=torch.bool)
    corrupted[:30] = True
    return IndexedDataset(TensorDataset(x, y), targets=noisy, corrupted=corrupted)


def test_linear_probe_trains_only_the_head_with_prl_and_truncation(tmp_path, one_torch_thread):
    torch.manual_seed(0)
    probe = LinearProbe(backbone="cnn", width=4, num_classes=3, lr=0.05)
    frozen = {k: v.clone() for k, v in probe.backbone.state_dict().items()}
    prl = BatchFilter("prl", drop_ratio=0.25)
    sn = SpectralNorm(k=0.5, modules="head", mode="truncate")
    ds = _labelled()
    tiny_trainer(tmp_path, max_epochs=3, callbacks=[prl, sn]).fit(probe, DataLoader(ds, batch_size=40, shuffle=True))
    # the backbone (weights and BatchNorm statistics) did not move; the head did, with sigma_max <= k
    assert all(torch.equal(frozen[k], v) for k, v in probe.backbone.state_dict().items())
    assert float(torch.linalg.matrix_norm(probe.head.weight.detach(), 2)) <= 0.5 + 1e-5
    assert [r.dropped for r in prl.history] == [30, 30, 30]  # floor(0.75 * 40) kept of each batch of 40
    # standardisation: the training features have mean 0 and std 1 per dimension (0 for a dead ReLU unit)
    with torch.no_grad():
        x = ds.dataset.tensors[0]
        alive = probe.eval().backbone(x).std(0) > 1e-4
        z = probe.features(x)
    assert torch.allclose(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4)
    assert torch.allclose(z.std(0), alive.float(), atol=1e-3) and int(alive.sum()) >= z.shape[1] // 2


def test_linear_probe_keeps_backbone_in_eval_mode_and_reinitialises_the_head_only():
    probe = LinearProbe(backbone="cnn", width=4).train()
    assert probe.training and probe.head.training and not probe.backbone.training
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    probe.reinitialize(seed=3)
    changed = {k for k, v in probe.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"head.weight", "head.bias"}


def test_linear_probe_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2, got 1"):
        LinearProbe(num_classes=1)
    with pytest.raises(ValueError, match="`optimizer` must be 'adam' or 'sgd', got 'rmsprop'"):
        LinearProbe(optimizer="rmsprop")
    # not `'>' not supported ...`
    with pytest.raises(ValueError, match="`lr` must be a number > 0 \\(at most 3\\.4e\\+38, the largest float32\\), got '0.1'"):
        LinearProbe(lr="0.1")


# -- semi-supervised backdoor data --------------------------------------------------------------------------------


def test_semi_supervised_backdoor_splits(shared_data):
    kw = dict(root=str(shared_data), attack="patch", poison_rate=0.25, labeled_size=200, unlabeled_mnist=300,
              unlabeled_fashion=100, test_size=50, seed=3)
    pre = SemiSupervisedBackdoorMNISTDataModule(mode="pretrain", **kw)
    fine = SemiSupervisedBackdoorMNISTDataModule(mode="finetune", **kw)
    pre.setup(), fine.setup()
    assert len(pre.train_set) == 600 and len(fine.train_set) == 200
    x_pois, y_true, y_pois, mask = fine.labeled
    assert int(mask.sum()) == 50 and torch.equal(y_pois[mask], (y_true[mask] + 1) % 10)
    assert torch.equal(y_pois[~mask], y_true[~mask])
    # the same labelled images (poisoned ones with the trigger) open the pretraining set, without labels
    pre_x = pre.train_set.dataset.tensors[0]
    assert torch.equal(pre_x[:200], x_pois) and torch.equal(pre.train_set.corrupted[:200], mask)
    assert int(pre.train_set.corrupted.sum()) == 50 and set(pre.train_set.dataset.tensors[1].tolist()) == {0}
    lo, hi = MNIST_VALUE_RANGE
    assert lo - 1e-5 <= float(pre_x.min()) and float(pre_x.max()) <= hi + 1e-5
    assert torch.equal(x_pois[mask][:, :, -3:, -3:], fine.trigger.pattern().expand(int(mask.sum()), 1, 3, 3))
    clean, triggered = fine.test_dataloader()
    (_, xc, yc), (_, xt, yt) = next(iter(clean)), next(iter(triggered))
    assert torch.equal(yc, yt) and not torch.equal(xc, xt) and len(fine.test_attack_targets) == 50


def test_semi_supervised_backdoor_rejects_bad_arguments(shared_data):
    with pytest.raises(ValueError, match=r"`poison_rate` must be in \[0, 1\), got 1.0"):
        SemiSupervisedBackdoorMNISTDataModule(poison_rate=1.0)
    with pytest.raises(ValueError, match="`attack` must be 'patch' or 'blend', got 'sig'"):
        SemiSupervisedBackdoorMNISTDataModule(attack="sig")
    dm = SemiSupervisedBackdoorMNISTDataModule(root=str(shared_data), labeled_size=5000, unlabeled_mnist=2000)
    with pytest.raises(ValueError, match=r"`labeled_size` \(5000\) \+ `unlabeled_mnist` \(2000\) must be <= 6000"):
        dm.setup()


@pytest.mark.parametrize("mode", ["finetune", "pretrain"])
def test_semi_supervised_sizes_beyond_the_data_are_named(shared_data, mode):
    """A reviewer's `labeled_size=100000` was taken as every digit (finetune) or failed in torch ("zeros: Dimension
    size must be non-negative", pretrain), and `test_size=10**9` was cut to the test split silently."""
    with pytest.raises(ValueError, match=r"`labeled_size` must be <= 6000, the MNIST training digits under .*, got "
                                         r"100000\."):
        SemiSupervisedBackdoorMNISTDataModule(root=str(shared_data), mode=mode, labeled_size=100000).setup()
    n_test = len(torchvision_split("MNIST", str(shared_data), False, False).targets)
    with pytest.raises(ValueError, match=rf"`test_size` must be <= {n_test}, the MNIST test digits under .* \(or "
                                         rf"None: all\), got {n_test + 1}\."):
        SemiSupervisedBackdoorMNISTDataModule(root=str(shared_data), mode=mode, labeled_size=20,
                                              test_size=n_test + 1).setup()
    dm = SemiSupervisedBackdoorMNISTDataModule(root=str(shared_data), mode=mode, labeled_size=20, test_size=n_test)
    dm.setup()
    assert len(dm.test_set) == n_test  # the whole split is still allowed


def test_linear_probe_takes_the_adversarial_trigger_through_the_frozen_backbone(tmp_path, one_torch_thread):
    from lit_robust import AdversarialTrigger

    torch.manual_seed(0)
    probe = LinearProbe(backbone="cnn", width=4, num_classes=3, lr=0.05)
    frozen = {k: v.clone() for k, v in probe.backbone.state_dict().items()}
    at = AdversarialTrigger(tau=0.1, value_range=None)
    tiny_trainer(tmp_path, max_epochs=1, callbacks=[BatchFilter("prl", drop_ratio=0.25), at]).fit(
        probe, DataLoader(_labelled(), batch_size=40))
    c = at.last_perturbation
    assert c is not None and float(c.abs().max()) > 0 and float(c.abs().max()) <= 0.1 + 1e-6  # |c| <= tau
    assert all(torch.equal(frozen[k], v) for k, v in probe.backbone.state_dict().items())


def test_a_probe_checkpoint_stands_without_its_pretraining_file(tmp_path, one_torch_thread):
    """A newcomer moved the SimCLR checkpoint after fine-tuning: `LinearProbe.load_from_checkpoint(probe.ckpt)` and
    `lit-robust test --ckpt_path` failed on the missing pretraining file, though the probe's checkpoint holds every
    weight (and no CLI override could help: the saved hyper-parameters win). A fresh probe still needs the file."""
    import os

    from pytorch_lightning.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    backbone_file = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": SimCLR(width=4).state_dict(), "hyper_parameters": {"backbone": "cnn", "width": 4}},
               backbone_file)
    probe = LinearProbe(backbone_checkpoint=str(backbone_file), num_classes=3, lr=0.05)
    ds = _labelled()
    tiny_trainer(tmp_path, 1, [ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)],
                 enable_checkpointing=True).fit(probe, DataLoader(ds, batch_size=40))
    x = ds.dataset.tensors[0][:8]
    want = probe.eval()(x)
    os.remove(backbone_file)
    probe_ckpt = str(tmp_path / "ck" / "last.ckpt")

    loaded = LinearProbe.load_from_checkpoint(probe_ckpt).eval()
    assert torch.equal(loaded(x), want)
    # the CLI's way: the model built from the saved hyper-parameters, then `ckpt_path` of its checkpoint
    rebuilt = LinearProbe(**{k: v for k, v in loaded.hparams.items()})
    with pytest.raises(FileNotFoundError, match=r"`backbone_checkpoint` must be an existing checkpoint file.*A "
                                                r"probe's own checkpoint holds its backbone's weights"):
        rebuilt(x)  # never the untrained backbone in place of the missing file's
    out = tiny_trainer(tmp_path, 1).predict(rebuilt, DataLoader(TensorDataset(x, torch.zeros(8)), batch_size=8),
                                            ckpt_path=probe_ckpt)
    assert torch.equal(out[0], want.argmax(1))  # predict_step returns the labels
    with pytest.raises(FileNotFoundError, match="no such file"):  # a new fit cannot do without the file
        tiny_trainer(tmp_path, 1).fit(LinearProbe(**dict(loaded.hparams)), DataLoader(ds, batch_size=40))
    # nor a probe without its architecture (`--ckpt_path last` builds it from the config first): the error says what
    # does work (a release check found `last` still failing where the CHANGELOG named `--ckpt_path`)
    with pytest.raises(FileNotFoundError, match=r"finished\?\)\. A fine-tuned probe's own checkpoint holds its "
                                                r"backbone.*`--ckpt_path path/to/probe.ckpt` \(`last` and `best` are "
                                                r"looked up after the model is built\)"):
        LinearProbe(backbone_checkpoint=str(backbone_file))



@pytest.mark.parametrize("rewrite", ["another_width", "damaged"])
def test_a_probe_checkpoint_stands_after_its_pretraining_file_is_rewritten(tmp_path, rewrite):
    """The pretraining config overwrites its `last.ckpt` when re-run: a file of another `width` (or a damaged one) at
    the path the probe's hyper-parameters name made `LinearProbe.load_from_checkpoint(probe.ckpt)` fail ("trained
    with another architecture"), though the probe's checkpoint holds every weight. A probe that is not loaded from its
    checkpoint still meets the file's error, at its first forward pass."""
    torch.manual_seed(0)
    backbone_file = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": SimCLR(width=4).state_dict(), "hyper_parameters": {"backbone": "cnn", "width": 4}},
               backbone_file)
    probe = LinearProbe(backbone_checkpoint=str(backbone_file), num_classes=3).eval()
    probe_ckpt = tmp_path / "probe.ckpt"
    torch.save({"state_dict": probe.state_dict(), "hyper_parameters": dict(probe.hparams),
                "pytorch-lightning_version": "2.0.0"}, probe_ckpt)
    if rewrite == "another_width":
        torch.save({"state_dict": SimCLR(width=8).state_dict(), "hyper_parameters": {"backbone": "cnn", "width": 8}},
                   backbone_file)
        message = r"trained with another architecture: `width`=4 but the checkpoint says 8"
    else:
        backbone_file.write_bytes(b"PK\x03\x04 cut short")
        message = "is damaged or not a checkpoint"
    x = torch.randn(3, 1, 28, 28)
    loaded = LinearProbe.load_from_checkpoint(str(probe_ckpt)).eval()
    assert torch.equal(loaded(x), probe(x))
    rebuilt = LinearProbe(**dict(loaded.hparams))  # not loaded: the file's own error, never an untrained backbone
    with pytest.raises(ValueError, match=message):
        rebuilt(x)
    if rewrite == "damaged":  # without every architecture argument: at once, as before
        with pytest.raises(ValueError, match=message):
            LinearProbe(backbone_checkpoint=str(backbone_file), num_classes=3)
    else:  # ... and a new probe reads the file's architecture
        assert LinearProbe(backbone_checkpoint=str(backbone_file), num_classes=3).hparams.width == 8


def test_linear_probe_architecture_arguments_of_zero_are_refused_and_numpy_classes_taken():
    """`in_channels=0` and `width=0` were read as "not given" (`in_channels or 1`) and silently built a 1-channel,
    16-wide backbone; a NumPy integer `num_classes` was refused, as no other model refuses it."""
    with pytest.raises(ValueError, match=r"`in_channels` must be an integer >= 1, got 0"):
        LinearProbe(in_channels=0)
    with pytest.raises(ValueError, match=r"`width` must be an integer >= 1, got 0"):
        LinearProbe(width=0)
    probe = LinearProbe(num_classes=np.int64(3), width=4)
    assert probe.head.out_features == 3 and type(probe.hparams.num_classes) is int


# -- your own encoder ------------------------------------------------------------------------------------------


class OwnEncoder(torch.nn.Module):
    """A user's encoder: no `arch`, no `feature_dim` attribute (a SimCLR newcomer's had neither)."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, width, 5, stride=3)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x))).flatten(1)  # [N, 4 * width]


def test_your_own_encoder_pretrains_with_simclr_and_hands_over_to_a_probe(tmp_path, one_torch_thread):
    """A SimCLR newcomer's encoder was refused by `SimCLR` and `LinearProbe` ("`backbone` must be one of ..."), and
    assigning it by hand crashed in `setup` on a missing `arch`."""
    torch.manual_seed(0)
    simclr = SimCLR(backbone=OwnEncoder(), feature_dim=24, projection_dim=8)
    assert "backbone" not in simclr.hparams  # a module is not a hyper-parameter
    trainer = tiny_trainer(tmp_path, max_epochs=1)
    trainer.fit(simclr, DataLoader(_images(), batch_size=32))
    trainer.save_checkpoint(tmp_path / "pre.ckpt")
    reloaded = SimCLR.load_from_checkpoint(tmp_path / "pre.ckpt", backbone=OwnEncoder())
    # without the module: a newcomer got torch's "Missing key(s) in state_dict" for a built-in CNN
    with pytest.raises(ValueError, match=r"`feature_dim` is read only with your own `backbone` \(an nn.Module\), got "
                                         r"feature_dim=24 with backbone='cnn'\. A checkpoint of a SimCLR trained with "
                                         r"your own encoder .* `SimCLR.load_from_checkpoint\(path, "
                                         r"backbone=MyEncoder\(\)\)`"):
        SimCLR.load_from_checkpoint(tmp_path / "pre.ckpt")
    # another encoder, or this one at another width: the keys that do not fit, not torch's list (a release check)
    with pytest.raises(ValueError, match=r"The checkpoint's backbone \(lit_robust layout\) does not fit your backbone "
                                         r"OwnEncoder: .*shape"
                                         r".*Pass the encoder class \(and arguments\) it was pretrained with"):
        SimCLR.load_from_checkpoint(tmp_path / "pre.ckpt", backbone=OwnEncoder(width=4))
    # a probe on that file without the encoder: told to pass it, not the built-in CNN's arguments
    with pytest.raises(ValueError, match=r"was pretrained with your own encoder \(the file records its "
                                         r"feature_dim=24, not the module\): pass it as `backbone`"):
        LinearProbe(backbone_checkpoint=str(tmp_path / "pre.ckpt"), num_classes=3)
    x = _images(4).dataset.tensors[0]
    assert torch.equal(reloaded.eval()(x), simclr.eval()(x))

    encoder = OwnEncoder()
    probe = LinearProbe(backbone_checkpoint=str(tmp_path / "pre.ckpt"), backbone=encoder, feature_dim=24,
                        num_classes=3, lr=0.05)
    assert probe.backbone is encoder and torch.equal(encoder(x), simclr.backbone(x))  # the pretrained weights
    frozen = {k: v.clone() for k, v in encoder.state_dict().items()}
    probe_trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[BatchFilter("prl", drop_ratio=0.25)])
    probe_trainer.fit(probe, DataLoader(_labelled(), batch_size=40, shuffle=True))
    assert all(torch.equal(frozen[k], v) for k, v in encoder.state_dict().items())  # frozen
    probe_trainer.save_checkpoint(tmp_path / "probe.ckpt")
    (tmp_path / "pre.ckpt").unlink()  # the probe's own checkpoint holds the encoder's weights
    again = LinearProbe.load_from_checkpoint(tmp_path / "probe.ckpt", backbone=OwnEncoder())
    assert torch.equal(again.eval()(x), probe.eval()(x))
    with pytest.raises(ValueError, match=r"got feature_dim=24 with backbone=None\. A checkpoint of a LinearProbe "
                                         r"trained with your own encoder"):
        LinearProbe.load_from_checkpoint(tmp_path / "probe.ckpt")


def test_your_own_encoder_needs_its_feature_size_and_its_own_weights(tmp_path):
    with pytest.raises(ValueError, match=r"`feature_dim` is needed with your own `backbone` \(OwnEncoder\): the size "
                                         r"of the features it returns per image, e.g. feature_dim=128"):
        SimCLR(backbone=OwnEncoder())
    with pytest.raises(ValueError, match=r"`feature_dim` is needed with your own `backbone` \(OwnEncoder\)"):
        LinearProbe(backbone=OwnEncoder())
    with pytest.raises(ValueError, match=r"`backbone` must be one of \('cnn', 'resnet18', 'resnet50'\) or your own "
                                         r"encoder \(an nn.Module"):
        LinearProbe(backbone=3)
    with_attribute = OwnEncoder()
    with_attribute.feature_dim = 24
    sized_by_attribute = LinearProbe(backbone=with_attribute, num_classes=3)
    assert sized_by_attribute.head.in_features == 24
    assert sized_by_attribute.hparams.feature_dim == 24  # recorded: the checkpoint's sign of an own encoder
    assert SimCLR(backbone=with_attribute).hparams.feature_dim == 24
    with pytest.raises(ValueError, match=r"`feature_dim` is read only with your own `backbone`"):
        SimCLR(backbone="cnn", feature_dim=24)
    torch.save({"state_dict": SimCLR(width=4).state_dict()}, tmp_path / "cnn.ckpt")  # another encoder's weights
    with pytest.raises(ValueError, match=r"does not fit your backbone OwnEncoder: missing keys: \['conv.bias', "
                                         r"'conv.weight'\]; unexpected keys: .*Pass the encoder class \(and arguments\) "
                                         r"it was pretrained with"):
        LinearProbe(backbone_checkpoint=str(tmp_path / "cnn.ckpt"), backbone=OwnEncoder(), feature_dim=24)


def test_your_own_encoders_weights_under_a_prefix_are_told_as_such(tmp_path):
    """An image newcomer's encoder weights saved under `net.features.` (a module's attribute) were told "Pass the
    encoder class (and arguments) it was pretrained with", though the class was right."""
    weights = OwnEncoder().state_dict()
    torch.save({"state_dict": {"net.features." + k: v for k, v in weights.items()}}, tmp_path / "prefixed.ckpt")
    with pytest.raises(ValueError, match=re.escape(
            "The file's weights are the backbone's under the prefix 'net.features.': save them without it, e.g. "
            "`{k.removeprefix('net.features.'): v for k, v in state_dict.items() if k.startswith('net.features.')}`.")):
        LinearProbe(backbone_checkpoint=str(tmp_path / "prefixed.ckpt"), backbone=OwnEncoder(), feature_dim=24)
    fixed = {k.removeprefix("net.features."): v for k, v in torch.load(tmp_path / "prefixed.ckpt")["state_dict"].items()}
    torch.save(fixed, tmp_path / "fixed.pt")  # as advised: it loads
    probe = LinearProbe(backbone_checkpoint=str(tmp_path / "fixed.pt"), backbone=OwnEncoder(), feature_dim=24)
    assert all(torch.equal(probe.backbone.state_dict()[k], weights[k]) for k in weights)


def test_a_wrong_feature_dim_of_your_own_encoder_is_named_at_setup(tmp_path):
    """An auditor's `--model.feature_dim 16` for a 24-feature encoder ended in a size-mismatch traceback."""
    with pytest.raises(ValueError, match=r"`model.feature_dim`=16 does not fit `data`: .* yields 1×28×28 images, which "
                                         r"your backbone OwnEncoder maps to features of shape \(24,\)\. Set "
                                         r"`model.feature_dim` to 24\."):
        tiny_trainer(tmp_path, 1).fit(SimCLR(backbone=OwnEncoder(), feature_dim=16), DataLoader(_images(), batch_size=32))
    with pytest.raises(ValueError, match=r"`model.feature_dim`=16 .* Set `model.feature_dim` to 24\."):
        tiny_trainer(tmp_path, 1).fit(LinearProbe(backbone=OwnEncoder(), feature_dim=16, num_classes=3),
                                      DataLoader(_labelled(), batch_size=40))


def test_data_your_own_encoder_cannot_take_is_named_not_a_traceback(tmp_path):
    """An image newcomer's grey encoder under a colour image folder: the fit check's own forward raised torch's
    "expected input[2, 3, 28, 28] to have 1 channels" in a 78-line traceback."""
    g = torch.Generator().manual_seed(0)
    colour = IndexedDataset(TensorDataset(torch.randn(40, 3, 28, 28, generator=g), torch.arange(40) % 3))
    with pytest.raises(ValueError, match=r"^`model.backbone`=OwnEncoder does not fit `data`: .* yields 3×28×28 images, "
                                         r"on which your backbone failed \(Given groups=1, weight of size \[6, 1, 5, "
                                         r"5\], expected input\[2, 3, 28, 28\] to have 1 channels.*\)\. Give the "
                                         r"data the inputs your encoder was built for \(where the datamodule takes "
                                         r"them: `data.channels`, `data.image_size`\), or an encoder for these\.$"):
        tiny_trainer(tmp_path, 1).fit(LinearProbe(backbone=OwnEncoder(), feature_dim=24, num_classes=3),
                                      DataLoader(colour, batch_size=40))


def test_simclr_with_two_validation_loaders_logs_one_loss_each(tmp_path, one_torch_thread):
    """A Lightning user's list of two validation loaders got Lightning's "no `dataloader_idx` argument" error."""
    g = torch.Generator().manual_seed(0)
    views = [[torch.randn(8, 1, 28, 28, generator=g) for _ in range(2)] for _ in range(2)]  # precomputed pairs

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, pair):
            self.pair = pair

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return [self.pair[0][i], self.pair[1][i]], 0

    torch.manual_seed(0)
    model = SimCLR(width=4, projection_dim=8, augment="none")
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1)
    trainer.fit(model, DataLoader(Pairs(views[0]), batch_size=8),
                [DataLoader(Pairs(pair), batch_size=8) for pair in views])
    model.eval()
    with torch.no_grad():
        want = [float(model.contrastive_loss(*pair)) for pair in views]
    got = [float(trainer.callback_metrics[f"val_loss/dataloader_idx_{k}"]) for k in (0, 1)]
    assert got == pytest.approx(want, rel=1e-5) and want[0] != pytest.approx(want[1], rel=1e-3)


def test_a_probe_without_a_backbone_checkpoint_says_its_frozen_backbone_is_random(tmp_path, monkeypatch,
                                                                                one_torch_thread):
    """`backbone_checkpoint` defaults to None, and a `LinearProbe(num_classes=10)` whose checkpoint was forgotten
    trained a head on a random frozen CNN without a word. The fit says so at its start; a probe given a checkpoint,
    your own encoder, or a backbone it trains (`freeze_backbone=False`) is not told."""
    said = []
    monkeypatch.setattr("lit_robust.models.linear_probe.rank_zero_info", said.append, raising=False)
    torch.save({"state_dict": SimCLR(width=4).state_dict(), "hyper_parameters": {"backbone": "cnn", "width": 4}},
               tmp_path / "simclr.ckpt")
    probes = {"default": LinearProbe(width=4, num_classes=3),
              "checkpoint": LinearProbe(backbone_checkpoint=str(tmp_path / "simclr.ckpt"), num_classes=3),
              "own": LinearProbe(backbone=simclr_backbone("cnn", width=4), num_classes=3),
              "trained": LinearProbe(width=4, num_classes=3, freeze_backbone=False)}
    told = {}
    for name, probe in probes.items():
        said.clear()
        tiny_trainer(tmp_path, 1, limit_train_batches=1).fit(probe, DataLoader(_labelled(), batch_size=40))
        told[name] = [m for m in said if "no `backbone_checkpoint`" in m]
    assert told["default"] == [
        "LinearProbe: no `backbone_checkpoint`, so the frozen backbone keeps the random weights it was built with (a "
        "random-features baseline, unless you loaded weights into it yourself). For Algorithm 7, pass the "
        "pretraining's checkpoint: `backbone_checkpoint=` (or `--model.backbone_checkpoint`)."]
    assert told["checkpoint"] == told["own"] == told["trained"] == []


def test_semi_supervised_split_at_its_defaults_is_the_theses_protocol(shared_data):
    """Every test and the CLI's shrunk configs pass `labeled_size` and `unlabeled_mnist`, so the defaults users get
    (`labeled_fraction=0.2`, `unlabeled_mnist=None`: all the other digits, `test_size=None`: the whole test split,
    `poison_rate=0.25`, `mode="finetune"`) never ran: 20 % of MNIST's training digits labelled, a quarter of them
    poisoned; pretraining on those and every other training digit, each once; the whole test split."""
    train = torchvision_split("MNIST", str(shared_data), True, False)
    n, n_test = len(train.targets), len(torchvision_split("MNIST", str(shared_data), False, False).targets)
    fine, pre = (SemiSupervisedBackdoorMNISTDataModule(root=str(shared_data)),
                 SemiSupervisedBackdoorMNISTDataModule(root=str(shared_data), mode="pretrain"))
    fine.setup(), pre.setup()
    assert fine.target_kind == "class" and pre.target_kind == "none"
    n_lab = round(0.2 * n)
    x_lab, _, _, mask = fine.labeled
    assert len(fine.train_set) == n_lab and int(mask.sum()) == round(0.25 * n_lab)
    assert len(fine.test_set) == len(pre.test_set) == n_test
    pre_x = pre.train_set.dataset.tensors[0]
    assert len(pre_x) == n and torch.equal(pre_x[:n_lab], x_lab)

    def rows(x):  # the images as raw bytes, back from the normalisation
        pixels = ((x[:, 0] * 0.3081 + 0.1307) * 255).round().to(torch.uint8)
        return [bytes(p.flatten().tolist()) for p in pixels]

    mnist = set(rows(train.data.unsqueeze(1).float() / 255 * (1 / 0.3081) - 0.1307 / 0.3081))
    unlabeled = rows(pre_x[n_lab:])
    assert len(set(unlabeled)) == n - n_lab and set(unlabeled) <= mnist
    assert set(unlabeled).isdisjoint(rows(x_lab[~mask]))


def test_two_simclr_messages_point_at_the_fix_a_newcomer_needed(tmp_path):
    """The probe on the pretraining split was told to use a TableDataModule (the fix is `--data.mode finetune`), and a
    folder given as `backbone_checkpoint` was told "no such file ... has the run that writes it finished?"."""
    from lit_robust.data.spec import DataSpec
    from lit_robust.models.backbone_checkpoint import read_weights_only
    from lit_robust.models.supervised import wrong_kind_error

    err = wrong_kind_error(DataSpec("SemiSupervisedBackdoorMNISTDataModule", (1, 28, 28), "none"), "LinearProbe",
                           "class", None)
    assert str(err).endswith("; use its labelled split, `mode='finetune'` (`--data.mode finetune`).")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.ckpt").write_bytes(b"")
    with pytest.raises(IsADirectoryError, match=r"`backbone_checkpoint` must be a checkpoint file, got the folder .*: "
                                                r"pass a \.ckpt inside it \(last\.ckpt\)\."):
        read_weights_only(tmp_path / "run", "backbone_checkpoint")
