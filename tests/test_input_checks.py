"""Issue 14: inputs that used to end in an obscure error (or in silence) get a message naming the argument,
the allowed range and the value received."""

from __future__ import annotations

import os
import pickle
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import lit_robust
from lit_robust import (
    ITLM,
    RCA,
    AdversarialTrigger,
    AutoEncoder,
    BackdoorMetrics,
    BackdoorMNISTDataModule,
    BatchFilter,
    CoTeaching,
    DiabetesDataModule,
    DigitsDataModule,
    ImageClassifier,
    IndexedDataset,
    LinearProbe,
    LinearRegressor,
    MixedImagesDataModule,
    MLPClassifier,
    MLPRegressor,
    MNISTDataModule,
    OneClassMNISTDataModule,
    RealNVP,
    RobustMixin,
    SemiSupervisedBackdoorMNISTDataModule,
    SimCLR,
    SpectralNorm,
    SyntheticLinearDataModule,
    SyntheticRegressionDataModule,
    TwoMoonsAnomalyDataModule,
    apply_spectral_norm,
    truncate_spectral_norm,
)
from lit_robust.data import DataSpec
from lit_robust.functional.backdoor import PatchTrigger
from lit_robust.models.backbone_checkpoint import load_backbone, read_weights_only
from tests.conftest import tiny_trainer


# -- damaged checkpoints (lit_robust/models/backbone_checkpoint.py) ------------------------------------------------------
@pytest.fixture
def saved_checkpoint(tmp_path):
    path = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": SimCLR(width=4).state_dict(), "hyper_parameters": {"backbone": "cnn", "width": 4}}, path)
    return path


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "cut short"),
    ("empty", "the file is empty"),
    ("random", "neither a zip archive nor a pickle stream"),
    ("truncated_legacy", "Error"),
])
def test_damaged_checkpoint_is_reported_as_damaged(tmp_path, saved_checkpoint, damage, reason):
    path = tmp_path / "damaged.ckpt"
    if damage == "truncated":
        data = saved_checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "random":
        path.write_bytes(bytes(torch.randint(0, 256, (512,), generator=torch.Generator().manual_seed(0)).tolist()))
    else:  # torch's legacy (non-zip) format, cut in half
        torch.save({"w": torch.zeros(100)}, path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"`backbone_checkpoint` file .*damaged.ckpt' is damaged or not a checkpoint "
                                         rf"\(.*{reason}") as err:
        load_backbone(path, argument="backbone_checkpoint")
    assert "weights-only" not in str(err.value) and "trusted environment" not in str(err.value)


def test_intact_checkpoints_still_load(tmp_path, saved_checkpoint):
    assert load_backbone(saved_checkpoint).feature_dim == 16
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_weights_only(legacy)["w"], torch.ones(3))


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_readable_file_needing_unpickling_gets_the_weights_only_explanation(tmp_path, how):
    marker, path = tmp_path / "ran", tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.zeros(2)}, "x": _RunsCode(str(marker))}
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match=r"cannot be read as a weights-only checkpoint .*trusted environment") as err:
        read_weights_only(path, "backbone_checkpoint")
    assert "damaged" not in str(err.value)
    assert not marker.exists() and not os.path.exists("ran")


# -- IndexedDataset checks what it wraps (lit_robust/data/indexed.py) ---------------------------------------------
class _NoLen:
    def __getitem__(self, i):
        return torch.zeros(2), 0


@pytest.mark.parametrize("dataset, error, message", [
    (torch.zeros(5, 3), TypeError, r"`dataset` must be a map-style dataset of `\(input, target\)` pairs, got a tensor "
                                   r"of shape \(5, 3\).*TensorDataset\(x, y\)"),
    (_NoLen(), TypeError, r"`dataset` must be a map-style dataset \(with `__len__` and `__getitem__`\).*got a _NoLen"),
    (TensorDataset(torch.zeros(0, 2), torch.zeros(0)), ValueError, r"`dataset` must hold at least one sample, got an "
                                                                    r"empty TensorDataset \(a run would train on zero"),
    (TensorDataset(torch.zeros(4, 2)), ValueError, r"`dataset` must yield `\(input, target\)` pairs, but its first item "
                                                   r"is a tuple of 1 element\(s\).*TensorDataset\(x, y\)\)`\. Unlabelled "
                                                   r"data \(anomaly detection, a flow or RCA\) takes a placeholder "
                                                   r"target: `IndexedDataset\(TensorDataset\(x, torch\.zeros\(len\(x\), "
                                                   r"dtype=torch\.long\)\)\)`\.$"),
    ([torch.zeros(2)] * 3, ValueError, r"first item is a tensor of shape \(2,\)"),
    (TensorDataset(torch.zeros(4, 2), torch.zeros(4), torch.zeros(4)), ValueError, r"a tuple of 3 element"),
])
def test_indexed_dataset_checks_what_it_wraps_at_construction(dataset, error, message):
    with pytest.raises(error, match=message):
        IndexedDataset(dataset)


def test_indexed_dataset_accepts_pairs_of_any_kind():
    assert len(IndexedDataset([(torch.zeros(2), 1), (torch.ones(2), 0)])) == 2
    assert IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.zeros(3)))[2][0] == 2


# -- a batch without an index gets the hint before the user's own unpacking ---------------------------------------
class _UnpacksItself(RobustMixin, pl.LightningModule):
    """A user module whose `per_sample_loss` unpacks the batch itself (and would crash on a 2-element batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 3)

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):
        index, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _plain_loader():  # (input, target) batches: no index
    return DataLoader(TensorDataset(torch.randn(16, 2), torch.arange(16) % 3), batch_size=8)


@pytest.mark.parametrize("setup, owner", [
    ("mixin", "_UnpacksItself.training_step"),
    ("batch_filter", "BatchFilter"),
    ("coteaching", "CoTeaching"),
    ("adversarial_trigger", "AdversarialTrigger"),
])
def test_batch_without_index_names_indexed_dataset_on_the_first_batch(tmp_path, one_torch_thread, setup, owner):
    model, callbacks = _UnpacksItself(), []
    if setup == "batch_filter":
        callbacks = [BatchFilter("spl", drop_ratio=0.2)]
    elif setup == "coteaching":
        model = CoTeaching(model, drop_ratio=0.2)
    elif setup == "adversarial_trigger":
        callbacks = [AdversarialTrigger(tau=0.1, value_range=None)]
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=callbacks)
    with pytest.raises(ValueError, match=rf"`{owner}`: lit_robust expects batches `\(index, input, target\[, "
                                         rf"is_corrupted\]\)`, got a list of length 2\. Wrap the training dataset in "
                                         r"`lit_robust.IndexedDataset`"):
        trainer.fit(model, train_dataloaders=_plain_loader())


def test_a_flow_on_unlabelled_tensors_is_named_and_told_of_a_placeholder_target(tmp_path, one_torch_thread):
    """An anomaly newcomer's `RobustRealNVP(drop_ratio="auto")` on `DataLoader(TensorDataset(x))` was told by
    "`BatchFilter`" (a filter they had not added) to wrap the data in `IndexedDataset`, which then refused the
    unlabelled `TensorDataset(x)`: both errors now name the placeholder target."""
    from lit_robust import RobustRealNVP

    x = torch.randn(40, 2)
    model = RobustRealNVP(2, n_couplings=2, hidden=4, drop_ratio=0.1)
    trainer = tiny_trainer(tmp_path, max_epochs=1)
    placeholder = (r"Unlabelled data \(anomaly detection, a flow or RCA\) takes a placeholder target: "
                   r"`IndexedDataset\(TensorDataset\(x, torch\.zeros\(len\(x\), dtype=torch\.long\)\)\)`\.$")
    with pytest.raises(ValueError, match=r"^`RobustRealNVP`: lit_robust expects batches .*got a list of length 1\. "
                                         r".*" + placeholder):
        trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x), batch_size=20))
    with pytest.raises(ValueError, match=placeholder):
        IndexedDataset(TensorDataset(x))
    data = IndexedDataset(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)))  # as told: it trains
    tiny_trainer(tmp_path, max_epochs=1).fit(model, train_dataloaders=DataLoader(data, batch_size=20))


# -- ready-made models check at setup that they fit the datamodule (lit_robust/data/spec.py) ----------------------
def _fit_fails(tmp_path, model, dm, message):
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(ValueError, match=message):
        trainer.fit(model, datamodule=dm)


@pytest.mark.parametrize("make, message", [
    (lambda: (ImageClassifier(backbone="mlp", image_size=28), DigitsDataModule()),
     r"`model.image_size`=28 does not fit `data`: DigitsDataModule yields 1×8×8 images. Set `model.image_size` to 8"),
    (lambda: (ImageClassifier(backbone="cnn2", image_size=8, in_channels=3), DigitsDataModule()),
     r"`model.in_channels`=3 does not fit `data`: DigitsDataModule yields 1×8×8 images. Set `model.in_channels` to 1"),
    # an image-folder newcomer's grey PNGs, opened as RGB by ImageFolder, were told only to set in_channels to 3
    (lambda: (ImageClassifier(backbone="cnn2", image_size=8, in_channels=1),
              pl.LightningDataModule.from_datasets(
                  IndexedDataset(TensorDataset(torch.rand(8, 3, 8, 8), torch.arange(8) % 2)), batch_size=4)),
     r"`model.in_channels`=1 does not fit `data`: .* yields 3×8×8 images. Set `model.in_channels` to 3. Or, for grey "
     r"images opened as RGB \(torchvision's `ImageFolder` opens every file so\), add `transforms.Grayscale\(\)`"),
    # both at once: an image-folder CLI user fixed the channels, re-ran, and was only then told the size
    (lambda: (ImageClassifier(backbone="cnn2", image_size=28, in_channels=3), DigitsDataModule()),
     r"`model.in_channels`=3 does not fit `data`: DigitsDataModule yields 1×8×8 images. Set `model.in_channels` to 1\. "
     r"And `model.image_size`=28 does not fit either: set `model.image_size` to 8\.$"),
    (lambda: (ImageClassifier(backbone="mlp", image_size=8, num_classes=5), DigitsDataModule()),
     r"`model.num_classes`=5 does not fit `data`: DigitsDataModule yields labels of 10 classes. `model.num_classes` "
     r"must be >= 10"),
    (lambda: (ImageClassifier(backbone="mlp", image_size=8), DiabetesDataModule()),
     r"`model`=ImageClassifier is a classifier, but `data`: DiabetesDataModule yields float regression targets of 1 "
     r"value\(s\) per sample; use a regressor"),
    (lambda: (CoTeaching(ImageClassifier(backbone="mlp", image_size=28)), DigitsDataModule()),
     r"`model.image_size`=28 does not fit `data`: DigitsDataModule yields 1×8×8 images"),
    (lambda: (MLPRegressor(in_features=784, out_features=1), DiabetesDataModule()),
     r"`model.in_features`=784 does not fit `data`: DiabetesDataModule yields vectors of 10 features. Set "
     r"`model.in_features` to 10"),
    (lambda: (MLPRegressor(in_features=20, out_features=10), SyntheticLinearDataModule(n=50, q=4)),
     r"`model.out_features`=10 does not fit `data`: SyntheticLinearDataModule yields float regression targets of 4 "
     r"value\(s\) per sample. Set `model.out_features` to 4"),
    (lambda: (MLPRegressor(in_features=64, out_features=10), DigitsDataModule()),
     r"`model`=MLPRegressor is a regressor, but `data`: DigitsDataModule yields labels of 10 classes"),
    (lambda: (LinearRegressor(dim=100), SyntheticRegressionDataModule(n=50, dim=4)),
     r"`model.dim`=100 does not fit `data`: SyntheticRegressionDataModule yields vectors of 4 features"),
    (lambda: (LinearRegressor(dim=20), SyntheticLinearDataModule(n=50, q=4)),
     r"`model`=LinearRegressor predicts 1 target value\(s\) per sample, but `data`: SyntheticLinearDataModule yields "
     r"float regression targets of 4"),
    (lambda: (RealNVP(dim=3), TwoMoonsAnomalyDataModule(n_train=50, n_test=20)),
     r"`model.dim`=3 does not fit `data`: TwoMoonsAnomalyDataModule yields vectors of 2 features. Set `model.dim` to 2"),
    (lambda: (RCA(dim=4), TwoMoonsAnomalyDataModule(n_train=50, n_test=20)),
     r"`model.dim`=4 does not fit `data`: TwoMoonsAnomalyDataModule yields vectors of 2 features"),
    (lambda: (AutoEncoder(dim=4), TwoMoonsAnomalyDataModule(n_train=50, n_test=20)),
     r"`model.dim`=4 does not fit `data`: TwoMoonsAnomalyDataModule"),
    (lambda: (LinearProbe(width=4, num_classes=3), DigitsDataModule()),
     r"`model.num_classes`=3 does not fit `data`: DigitsDataModule yields labels of 10 classes"),
    (lambda: (LinearProbe(width=4, in_channels=3), DigitsDataModule()),
     r"`model.in_channels`=3 does not fit `data`: DigitsDataModule yields 1×8×8 images"),
    (lambda: (SimCLR(width=4, in_channels=3), DigitsDataModule()),
     r"`model.in_channels`=3 does not fit `data`: DigitsDataModule yields 1×8×8 images"),
])
def test_model_that_does_not_fit_the_datamodule_fails_at_setup(tmp_path, one_torch_thread, make, message):
    model, dm = make()
    _fit_fails(tmp_path, model, dm, message)


def test_image_classifier_vs_mnist_names_both_sides(tmp_path, one_torch_thread, shared_data):
    dm = MNISTDataModule(root=str(shared_data), train_size=64)
    _fit_fails(tmp_path, ImageClassifier(image_size=8), dm,
               r"`model.image_size`=8 does not fit `data`: MNISTDataModule yields 1×28×28 images")


def test_more_outputs_than_classes_is_a_warning(tmp_path, one_torch_thread):
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    with pytest.warns(UserWarning, match=r"`model.num_classes`=12 is more than the classes of `data`: DigitsDataModule "
                                         r"\(labels of 10 classes\); 2 output"):
        trainer.fit(ImageClassifier(backbone="mlp", image_size=8, num_classes=12), datamodule=DigitsDataModule())


@pytest.mark.parametrize("make, spec", [
    (lambda: DigitsDataModule(), DataSpec("DigitsDataModule", (1, 8, 8), "class", num_classes=10)),
    (lambda: DiabetesDataModule(), DataSpec("DiabetesDataModule", (10,), "regression", target_dim=1)),
    (lambda: SyntheticRegressionDataModule(n=10, dim=3), DataSpec("SyntheticRegressionDataModule", (3,), "regression",
                                                                  target_dim=1)),
    (lambda: TwoMoonsAnomalyDataModule(n_train=10, n_test=4), DataSpec("TwoMoonsAnomalyDataModule", (2,), "anomaly")),
])
def test_datamodules_say_what_they_yield_once_set_up(make, spec):
    dm = make()
    assert dm.data_spec is None
    dm.setup("fit")
    assert dm.data_spec == spec


@pytest.mark.parametrize("make, x, y, message", [
    (lambda: ImageClassifier(image_size=8), torch.randn(8, 1, 28, 28), torch.arange(8),
     r"`model.image_size`=8 does not fit `data`: the training set yields 1×28×28 images"),
    (lambda: ImageClassifier(backbone="mlp", image_size=8, num_classes=3), torch.randn(8, 1, 8, 8), torch.arange(8),
     r"`model.num_classes`=3 does not fit `data`: the training set yields labels up to 7 \(so at least 8 "
     r"classes\)"),
    (lambda: ImageClassifier(backbone="mlp", image_size=8), torch.randn(8, 1, 8, 8), torch.randn(8, 3),
     r"`model`=ImageClassifier is a classifier, but `data`: the first training batch yields float regression targets"),
    (lambda: MLPRegressor(in_features=4, out_features=2), torch.randn(8, 4), torch.randn(8, 3),
     r"`model.out_features`=2 does not fit `data`: the first training batch yields float regression targets of 3"),
    (lambda: LinearRegressor(dim=5), torch.randn(8, 4), torch.randn(8, 1),
     r"`model.dim`=5 does not fit `data`: the first training batch yields vectors of 4 features"),
    (lambda: MLPRegressor(in_features=12, out_features=1), torch.randn(8, 10), torch.randn(8),
     r"`model.in_features`=12 does not fit `data`: the first training batch yields vectors of 10 features. Set "
     r"`model.in_features` to 10\.$"),
    (lambda: MLPRegressor(in_features=4, out_features=1), torch.randn(8, 4), torch.tensor([-1296, 3, 1211, 0, 5, 7, 9, 11]),
     r"`model`=MLPRegressor is a regressor, but `data`: the training set yields labels up to 1211 .*If they "
     r"are numeric values, not classes, make them floats \(`y.float\(\)`, or `.astype\('float32'\)` on a DataFrame "
     r"column\): integer targets are read as class labels\.$"),
    (lambda: MLPClassifier(in_features=4, num_classes=2), torch.randn(8, 4), torch.randint(0, 2, (8, 2)),
     r"`model`=MLPClassifier is a classifier of one integer label per sample, but `data`: the first training batch "
     r"yields integer labels of shape \[2\] per sample. Pass one column as `targets` \(e.g. `df\[.label.\]`"),
    (lambda: None, torch.randn(8, 4), torch.randn(8, 1), None),  # fits: no error
])
@pytest.mark.parametrize("owner", [None, "ITLM", "BatchFilter"])
def test_plain_dataloaders_are_checked_on_the_first_batch(tmp_path, one_torch_thread, make, x, y, message, owner):
    """With ITLM or a filter too: their check of the per-sample losses ran the model on the first batch before the
    module's own check (a regression newcomer's `in_features=12` on 10 columns: "mat1 and mat2 shapes cannot be
    multiplied")."""
    from lit_robust import ITLM, BatchFilter

    model = make() or LinearRegressor(dim=4)
    loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=8)
    callbacks = {None: [], "ITLM": [ITLM(keep_ratio=0.75, round_epochs=[1], verbose=False, plot=False)],
                 "BatchFilter": [BatchFilter("spl", drop_ratio=0.25)]}[owner]
    trainer = tiny_trainer(tmp_path, 1, callbacks)
    if message is None:
        trainer.fit(model, train_dataloaders=loader)
        return
    with pytest.raises(ValueError, match=message):
        trainer.fit(model, train_dataloaders=loader)


@pytest.mark.parametrize("bad, message", [
    (7, r"`model.num_classes`=3 does not fit `data`: the training set yields labels up to 7 \(so at least 8 classes\)"),
    (-1, r"the training set holds the class label -1: class labels are 0 .. C - 1 for C classes .* If it marks "
         r"samples without a label \(`ignore_index=-100`, a semi-labelled set's -1\): the ready-made classifiers "
         r"train on labelled samples only"),
])
@pytest.mark.parametrize("owner", [None, "ITLM"])
def test_a_label_out_of_range_beyond_the_first_batch_is_named(tmp_path, one_torch_thread, bad, message, owner):
    """An auditor's label 7 at index 50 (of labels 0-2) passed the first batch's check and stopped the fit in torch's
    "IndexError: Target 7 is out of bounds"; a -1 passed everywhere. The training set's own labels are checked."""
    from lit_robust import ITLM

    y = torch.arange(64) % 3
    y[50] = bad
    loader = DataLoader(IndexedDataset(TensorDataset(torch.randn(64, 5), y)), batch_size=16)
    callbacks = [ITLM(keep_ratio=0.75, round_epochs=[1], verbose=False, plot=False)] if owner else []
    with pytest.raises(ValueError, match=message):
        tiny_trainer(tmp_path, 1, callbacks).fit(lit_robust.MLPClassifier(in_features=5, num_classes=3),
                                                 train_dataloaders=loader)


# -- arguments: wrong type, scalar for a sequence, out of range (checked at construction) --------------------------
@pytest.mark.parametrize("make, error, message", [
    (lambda: ImageClassifier(milestones=5), ValueError,
     r"`milestones` must be a sequence of integers >= 1 \(e.g. \[30, 60\]\), got 5 \(a single int\)"),
    (lambda: ImageClassifier(milestones=[0, 3]), ValueError, r"`milestones` must be a sequence of integers >= 1, got "
                                                             r"\[0, 3\] \(offending: \[0\]\)"),
    (lambda: ImageClassifier(num_classes=1), ValueError, r"`num_classes` must be an integer >= 2, got 1"),
    (lambda: ImageClassifier(in_channels=0), ValueError, r"`in_channels` must be an integer >= 1, got 0"),
    (lambda: ImageClassifier(image_size=3), ValueError, r"`image_size` must be an integer >= 4, got 3"),
    (lambda: ImageClassifier(momentum=1.0), ValueError, r"`momentum` must be a number in \[0, 1\), got 1.0"),
    (lambda: ImageClassifier(weight_decay=-1e-4), ValueError, r"`weight_decay` must be a number >= 0, got -0.0001"),
    (lambda: ImageClassifier(gamma=0), ValueError, r"`gamma` must be a number > 0, got 0"),
    (lambda: ImageClassifier(backbone="mlp", hidden="128"), ValueError, r"`hidden` must be an integer >= 1, got '128' "
                                                                       r"\(a str\)"),
    (lambda: ImageClassifier(lr="0.1"), ValueError,
     r"`lr` must be a number > 0 \(at most 3\.4e\+38, the largest float32\), got '0.1' \(a str\)"),
    (lambda: LinearRegressor(dim=0), ValueError, r"`dim` must be an integer >= 1, got 0"),
    (lambda: LinearRegressor(lr=0), ValueError, r"`lr` must be a number > 0 \(at most 3\.4e\+38, the largest float32\), got 0"),
    (lambda: MLPRegressor(out_features=0), ValueError, r"`out_features` must be an integer >= 1 or None, got 0"),
    (lambda: MLPRegressor(hidden_layers=[256, 256]), ValueError, r"`hidden_layers` must be an integer >= 0, got "
                                                                 r"\[256, 256\] \(a list\)"),
    (lambda: BatchFilter("prl", 0.2, allow_large_drop="yes"), ValueError,
     r"`allow_large_drop` must be True or False, got 'yes' \(a str\)"),
    (lambda: CoTeaching(ImageClassifier(backbone="mlp"), seed=1.5), ValueError,
     r"`seed` must be an integer in \[0, 4294967295\], got 1.5"),
    (lambda: BackdoorMetrics(predict="argmax"), TypeError, r"`predict` must be a callable .* or None, got str"),
    (lambda: BackdoorMetrics(target=None, source=3), ValueError,
     r"`source`=3 needs a single-target attack, but `target` is None"),
    (lambda: BackdoorMetrics(target=-1), ValueError,
     r"`target` must be an integer >= 0 or None or 'datamodule', got -1"),
    # a misspelt default: the message named the integers and None only
    (lambda: BackdoorMetrics(target="datamodul"), ValueError,
     r"`target` must be an integer >= 0 or None or 'datamodule', got 'datamodul' \(a str\)"),
    (lambda: SpectralNorm(modules=5), ValueError,
     r"`modules` must be a glob pattern \(e.g. 'head'\), a non-empty list of them, or None, got 5"),
    (lambda: SpectralNorm(modules=["head", ""]), ValueError, r"`modules` must be a glob pattern .*got \['head', ''\]"),
    (lambda: SpectralNorm(types=5), ValueError, r"`types` must be a module class or name \(e.g. 'Linear'\), a list of "
                                                r"them, or None, got 5"),
    (lambda: SpectralNorm(types=[]), ValueError, r"`types` must name at least one module class, got an empty list"),
    (lambda: SpectralNorm(types="Linaer"), ValueError, r"`types` entries must be module classes or their names .*got "
                                                       r"'Linaer'"),
    (lambda: SpectralNorm(clamp="no"), ValueError, r"`clamp` must be True or False, got 'no'"),
    (lambda: apply_spectral_norm(torch.nn.Linear(2, 2), modules=5), ValueError, r"`modules` must be a glob pattern"),
    (lambda: SimCLR(crop_scale=0.5), ValueError, r"`crop_scale` must be a pair of numbers \(low, high\) with 0 < low "
                                                 r"<= high <= 1, got 0.5"),
    (lambda: SimCLR(hidden_dim=0), ValueError, r"`hidden_dim` must be an integer >= 1, got 0"),
    (lambda: SimCLR(weight_decay=-1), ValueError, r"`weight_decay` must be a number >= 0, got -1"),
    (lambda: SimCLR(backbone="resnet18", first_conv="no"), ValueError, r"`first_conv` must be True or False, got 'no'"),
    (lambda: LinearProbe(backbone_checkpoint=5), TypeError, r"`backbone_checkpoint` must be a file path or None, got "
                                                            r"int 5"),
    (lambda: LinearProbe(weight_decay=-1), ValueError, r"`weight_decay` must be a number >= 0, got -1"),
    (lambda: AutoEncoder(dim=2, lr=0), ValueError, r"`lr` must be a number > 0 \(at most 3\.4e\+38, the largest float32\), got 0"),
    (lambda: RCA(dim=2, weight_decay=-1), ValueError, r"`weight_decay` must be a number >= 0, got -1"),
    (lambda: RealNVP(dim=2, n_power_iterations=0), ValueError, r"`n_power_iterations` must be an integer >= 1, got 0"),
    (lambda: MNISTDataModule(train_size="100"), ValueError, r"`train_size` must be an integer >= 1 or None, got '100' "
                                                            r"\(a str\)"),
    (lambda: MNISTDataModule(batch_size=2.5), ValueError, r"`batch_size` must be an integer >= 1, got 2.5"),
    (lambda: MNISTDataModule(num_workers=-1), ValueError, r"`num_workers` must be an integer >= 0, got -1"),
    (lambda: MNISTDataModule(clean_ratio="0.5"), ValueError, r"`clean_ratio` must be in \[0.0, 1.0\], got '0.5'"),
    (lambda: SyntheticRegressionDataModule(batch_size=0), ValueError, r"`batch_size` must be an integer >= 1, got 0"),
    (lambda: SyntheticLinearDataModule(q=0), ValueError, r"`q` must be an integer >= 1, got 0"),
    (lambda: BackdoorMNISTDataModule(target=1.5, source=2), ValueError,
     r"`target` must be a class in \[0, 9\] or None, got 1.5"),
    (lambda: SemiSupervisedBackdoorMNISTDataModule(labeled_fraction="20%"), ValueError,
     r"`labeled_fraction` must be a number in \(0, 1\], got '20%' \(a str\)"),
    (lambda: MixedImagesDataModule(num_workers=-2), ValueError, r"`num_workers` must be an integer >= 0, got -2"),
    (lambda: TwoMoonsAnomalyDataModule(n_test=4, test_anomaly_ratio=0.1), ValueError,
     r"`test_anomaly_ratio`=0.1 of `n_test`=4 gives 0 test anomalies; ROC-AUC needs between 1 and n_test - 1"),
    (lambda: TwoMoonsAnomalyDataModule(batch_size="64"), ValueError, r"`batch_size` must be an integer >= 1, got '64'"),
    (lambda: OneClassMNISTDataModule(anomaly_classes=3), ValueError,
     r"`anomaly_classes` must be a non-empty list of classes in \[1, .*got 3 \(a single int\); e.g. \[3\]"),
    (lambda: OneClassMNISTDataModule(pca_dim=2.5), ValueError, r"`pca_dim` must be an integer in \[1, 784\] or None, "
                                                               r"got 2.5"),
    (lambda: IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.zeros(3)), corrupted=[0.5, 1, 2]), ValueError,
     r"`corrupted` must be a boolean \(or 0/1\) mask, got values \[0.5, 1.0, 2.0\]"),
    # the Python API sweep: apply_spectral_norm stored clamp and eps unchecked (clamp="no" is truthy: it only shrank;
    # eps=nan turned the layer's output to NaN), truncate_spectral_norm left an integer or empty weight to torch
    (lambda: apply_spectral_norm(torch.nn.Linear(2, 2), clamp="no"), ValueError,
     r"`clamp` must be True or False, got 'no' \(a str\)"),
    (lambda: apply_spectral_norm(torch.nn.Linear(2, 2), eps=float("nan")), ValueError,
     r"`eps` must be a number > 0, got nan"),
    (lambda: truncate_spectral_norm(torch.ones(3, 3, dtype=torch.long), 1.0), ValueError,
     r"`weight` must be a floating-point tensor, got dtype torch.int64"),
    (lambda: truncate_spectral_norm(torch.zeros(0, 3), 1.0), ValueError,
     r"`weight` must hold at least one element, got shape \(0, 3\)"),
    (lambda: truncate_spectral_norm(torch.ones(3), 1.0), ValueError,
     r"`weight` must have >= 2 dimensions .*got shape \(3,\)"),
    # bootstrap_loss: integer logits reached torch's "log_softmax ... not implemented for 'Long'"; a
    # `detach_prediction` of any kind was read as its truth value
    (lambda: lit_robust.bootstrap_loss(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1])), ValueError,
     r"`logits` must be a floating-point tensor, got dtype torch.int64"),
    (lambda: lit_robust.bootstrap_loss(torch.zeros(2, 3), torch.tensor([0, 1]), detach_prediction="no"), ValueError,
     r"`detach_prediction` must be True or False, got 'no' \(a str\)"),
    # corrupt_labels: a bool tensor reached torch's "Index put requires the source and destination dtypes match";
    # corrupt_targets: None, a string or a dict torch's "Could not infer dtype of NoneType"
    (lambda: lit_robust.corrupt_labels(torch.tensor([True, False] * 5), 0.7), ValueError,
     r"`targets` must be a 1-D integer tensor, got dtype torch.bool, shape \(10,\)"),
    (lambda: lit_robust.corrupt_targets(None, torch.zeros(4), 0.5, "linadv"), ValueError,
     r"`features` must be a tensor, got NoneType None"),
    (lambda: lit_robust.corrupt_targets(torch.zeros(4, 2), "zzz", 0.5, "linadv"), ValueError,
     r"`targets` must be a tensor, got str 'zzz'"),
    # random_views of an empty batch reached torch's affine_grid: "Expected non-zero, positive output size"
    (lambda: lit_robust.random_views(torch.zeros(0, 1, 8, 8)), ValueError,
     r"`images` must hold at least one image with C, H, W >= 1, got shape \(0, 1, 8, 8\)"),
    # `download` was read as its truth value: download="no" would fetch the data set from the internet
    (lambda: MNISTDataModule(download="no"), ValueError, r"`download` must be True or False, got 'no' \(a str\)"),
    (lambda: MixedImagesDataModule(download=None), ValueError, r"`download` must be True or False, got None"),
    (lambda: OneClassMNISTDataModule(download=1), ValueError, r"`download` must be True or False, got 1"),
    (lambda: SemiSupervisedBackdoorMNISTDataModule(download="no"), ValueError, r"`download` must be True or False"),
    (lambda: BackdoorMNISTDataModule(download="no"), ValueError, r"`download` must be True or False"),
    # tol=inf stopped EM after one iteration and called it converged (a bimodal set read 0.0 for 0.19)
    (lambda: lit_robust.estimate_corruption(torch.rand(50), tol=float("inf")), ValueError,
     r"`tol` must be a number >= 0, got inf"),
    # a meta tensor (a shape, no values) ended in torch's "Cannot copy out of meta tensor; no data!"
    (lambda: lit_robust.estimate_corruption(torch.rand(50).to("meta")), ValueError,
     r"`scores` must hold values, got a tensor on the meta device \(shape \(50,\), no data\)"),
    (lambda: lit_robust.estimate_corruption_from_predictions(torch.rand(8), torch.zeros(8, dtype=torch.long),
                                                             torch.zeros(8, dtype=torch.long).to("meta")),
     ValueError, r"`predicted` must hold values, got a tensor on the meta device"),
    (lambda: lit_robust.estimate_corruption_from_probs(torch.full((8, 2), 0.5), torch.zeros(8, dtype=torch.long)
                                                       .to("meta")),
     ValueError, r"`labels` must hold values, got a tensor on the meta device"),
    (lambda: lit_robust.roc_auc(torch.rand(4), torch.tensor([0, 1, 0, 1]).to("meta")), ValueError,
     r"`is_anomaly` must hold values, got a tensor on the meta device"),
    (lambda: lit_robust.anomaly_threshold(torch.rand(4).to("meta"), 0.25), ValueError,
     r"`scores` must hold values, got a tensor on the meta device"),
    (lambda: lit_robust.bootstrap_loss(torch.zeros(2, 3), torch.tensor([0, 1]).to("meta")), ValueError,
     r"`targets` must hold values, got a tensor on the meta device"),
    (lambda: lit_robust.corrupt_labels(torch.arange(10).to("meta"), 0.7), ValueError,
     r"`targets` must hold values, got a tensor on the meta device"),
    (lambda: lit_robust.truncate_spectral_norm(torch.ones(3, 3).to("meta"), 1.0), ValueError,
     r"`weight` must hold values, got a tensor on the meta device"),
    (lambda: lit_robust.activation_clusters(torch.ones(4, 2).to("meta"), torch.zeros(4, dtype=torch.long)),
     ValueError, r"`features` must hold values, got a tensor on the meta device"),
])
def test_bad_argument_is_named_with_range_and_value(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_numpy_integers_are_integers():
    import numpy as np

    assert MNISTDataModule(train_size=np.int64(100)).train_size == 100


# -- configurations that would train on nothing, or name something that is not there -------------------------------
def test_val_size_taking_the_whole_pool_is_an_error():
    dm = DigitsDataModule(val_size=1300)  # the pool is 1797 - 497 held-out test digits
    with pytest.raises(ValueError, match=r"`val_size` must be < 1300 \(the training pool\) so that training samples "
                                         r"remain, got 1300"):
        dm.setup("fit")


def test_labeled_fraction_giving_no_labelled_sample_is_an_error(shared_data):
    dm = SemiSupervisedBackdoorMNISTDataModule(root=str(shared_data), labeled_fraction=1e-5)
    with pytest.raises(ValueError, match=r"`labeled_fraction`=1e-05 of the 6000 MNIST training digits .* gives 0 "
                                         r"labelled samples; it must be >= 8.33e-05"):
        dm.setup("fit")


def test_poison_rate_poisoning_nothing_warns(shared_data):
    dm = BackdoorMNISTDataModule(root=str(shared_data), target=1, source=2, poison_rate=1e-4, train_size=100)
    with pytest.warns(UserWarning, match=r"`poison_rate`=0.0001 poisons no sample of the 100 in the training pool"):
        dm.setup("fit")


def test_backdoor_metrics_target_from_a_datamodule_without_an_attack(tmp_path, one_torch_thread):
    trigger = PatchTrigger(size=2, value_range=(-1.0, 3.0))
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[BackdoorMetrics(trigger=trigger)])
    with pytest.raises(ValueError, match=r"`BackdoorMetrics\(target='datamodule'\)` reads the attack from the "
                                         r"datamodule, but `data`: DigitsDataModule has no `attack_target`; pass "
                                         r"`target=None`"):
        trainer.fit(ImageClassifier(backbone="mlp", image_size=8), datamodule=DigitsDataModule())
    # multi-target on the same data is fine
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                           callbacks=[BackdoorMetrics(trigger=trigger, target=None)])
    trainer.fit(ImageClassifier(backbone="mlp", image_size=8), datamodule=DigitsDataModule(val_size=64))


def test_contamination_adding_no_anomaly_warns():
    dm = TwoMoonsAnomalyDataModule(n_train=10, contamination=0.01, n_test=10)
    with pytest.warns(UserWarning, match=r"`contamination`=0.01 adds no anomaly to 10 training samples"):
        dm.setup("fit")


def _one_minus(r):
    """``1 - r`` in a numpy scalar's own dtype: numpy 1 promotes ``1 - np.float32(0.3)`` to float64 (0.699999988)."""
    import numpy as np

    return r.dtype.type(1 - r) if isinstance(r, np.generic) else 1 - r


@pytest.mark.parametrize("make", [
    lambda r: ITLM(keep_ratio=_one_minus(r), round_epochs=[1, 1]).keep_ratio,
    lambda r: 1 - BatchFilter("prl", drop_ratio=r).drop_ratio,
    lambda r: 1 - CoTeaching(ImageClassifier(backbone="mlp"), drop_ratio=r).drop_ratio,
    lambda r: 1 - RealNVP(dim=2, drop_ratio=r).drop_ratio,
], ids=["itlm", "batch_filter", "coteaching", "realnvp"])
@pytest.mark.parametrize("kind", ["numpy_float32", "numpy_float64", "tensor_0d"])
def test_a_ratio_may_be_a_numpy_or_0d_tensor_scalar(make, kind):
    """A cleanlab user passed `np.float32(0.7)` and got "`keep_ratio` must be in (0, 1], got np.float32(0.7)"; a rate
    computed as `mask.float().mean()` is a 0-d tensor. Both count as the number they hold, at its shortest decimal
    (np.float32(0.3) is 0.30000001 as a double)."""
    import numpy as np

    from lit_robust.selection.rules import keep_count

    wrap = {"numpy_float32": np.float32, "numpy_float64": np.float64, "tensor_0d": torch.tensor}[kind]
    kept = make(wrap(0.3))
    assert isinstance(kept, float) and kept == make(0.3)
    assert keep_count(100, kept) == 70


def test_a_ratio_in_a_tensor_of_several_values_is_still_rejected():
    with pytest.raises(ValueError, match=r"`keep_ratio` must be in \(0, 1\], got tensor\(\[0.7000\]\)"):
        ITLM(keep_ratio=torch.tensor([0.7]), round_epochs=[1, 1])
    with pytest.raises(ValueError, match=r"`drop_ratio` must be a number in \[0, 0.5\)"):
        BatchFilter("prl", drop_ratio=torch.tensor([True]))


@pytest.mark.parametrize("make", [
    lambda: lit_robust.RCA(dim=4, drop_ratio=10),
    lambda: lit_robust.RobustRealNVP(dim=2, drop_ratio=10),
    lambda: lit_robust.corrupt_labels(torch.tensor([0, 1]), clean_ratio=70),
    lambda: lit_robust.DigitsDataModule(clean_ratio=70),
], ids=["rca", "robust_realnvp", "corrupt_labels", "digits_datamodule"])
def test_the_other_ratios_given_as_a_percent_are_told_it_is_a_fraction(make):
    """A release checker: the anomaly models' `drop_ratio 10` and `clean_ratio 70` got the range alone."""
    with pytest.raises(ValueError, match=r"It is a fraction, not a percent: for (10|70) % pass "
                                         r"(drop_ratio=0\.1|clean_ratio=0\.7)\."):
        make()


def test_a_ratio_given_as_a_percent_is_told_it_is_a_fraction():
    """A regression user's `drop_ratio 25` got the range alone."""
    from lit_robust import ITLM, BatchFilter
    from lit_robust.selection.rules import check_drop_ratio

    with pytest.raises(ValueError, match=r"^`drop_ratio` must be in \[0, 0\.5\), got 25\.0\. It is a fraction, not "
                                         r"a percent: for 25 % pass drop_ratio=0\.25\. Or pass drop_ratio='auto'"):
        BatchFilter("spl", drop_ratio=25)
    with pytest.raises(ValueError, match=r"with `allow_large_drop=True`, got 60\.0\. It is a fraction, not a percent: "
                                         r"for 60 % pass drop_ratio=0\.6\.$"):
        check_drop_ratio(60.0, allow_large_drop=True)
    with pytest.raises(ValueError, match=r"estimate the corrupted fraction from the scores\)\. It is a fraction, not a "
                                         r"percent: for 75 % pass keep_ratio=0\.75\.$"):
        ITLM(keep_ratio=75, round_epochs=[1, 1])
    for not_a_percent in (0.6, 1.5, 150, -5):  # the other hints, or none
        with pytest.raises(ValueError) as err:
            check_drop_ratio(not_a_percent)
        assert "not a percent" not in str(err.value)


def test_a_loss_broadcast_to_every_pair_is_named():
    """A regression analyst's `[B]` output against `targets=df[["y"]]` gave `(32, 32)` losses, and "average any extra
    dimensions" would have trained on every pair without a word."""
    from tests.conftest import TinyModel

    with pytest.raises(ValueError, match=r"A \[4, 4\] loss is what `\(output - target\) \*\* 2` gives for a \[4\] "
                                         r"output and \[4, 1\] targets"):
        TinyModel().reduce_loss(torch.zeros(4, 4))
    with pytest.raises(ValueError) as err:
        TinyModel().reduce_loss(torch.zeros(4, 3))
    assert "broadcast" not in str(err.value)


@pytest.mark.parametrize("dtype", ["torch.bfloat16", "torch.float16", "numpy.float16"])
@pytest.mark.parametrize("ratio, kept", [(0.7, 70), (0.29, 29), (0.3, 30)])
def test_a_16_bit_ratio_counts_as_its_shortest_decimal(dtype, ratio, kept):
    """`real_scalar` promised 16-bit floats their shortest decimal but read them through float32: bfloat16's 0.7
    became 0.69921875, and `keep_ratio` 0.7 kept 69 of 100 samples (0.29: 28)."""
    import numpy as np

    from lit_robust._checks import real_scalar
    from lit_robust.selection.rules import keep_count

    value = np.float16(ratio) if dtype == "numpy.float16" else torch.tensor(ratio, dtype=getattr(torch, dtype[6:]))
    assert real_scalar(value) == ratio
    assert keep_count(100, ITLM(keep_ratio=value, round_epochs=[1, 1]).keep_ratio) == kept
    if ratio < 0.5:
        assert BatchFilter("prl", drop_ratio=value).drop_ratio == ratio


def test_semi_supervised_sizes_take_numpy_numbers(shared_data):
    """`labeled_size=np.int64(40)` and `poison_rate=np.float32(0.25)` (computed with numpy) were refused as "must be an
    integer >= 1" / "must be in [0, 1)"; the other datamodules' checks (lit_robust._checks) take numpy numbers."""
    np = pytest.importorskip("numpy")
    dm = SemiSupervisedBackdoorMNISTDataModule(root=str(shared_data), labeled_size=np.int64(40),
                                               unlabeled_mnist=np.int32(10), test_size=np.int64(5),
                                               poison_rate=np.float32(0.25), batch_size=np.int64(8))
    dm.setup("fit")
    assert len(dm.train_set) == 40 and int(dm.train_set.corrupted.sum()) == 10 and len(dm.test_set) == 5
    assert type(dm.labeled_size) is int and type(dm.batch_size) is int
    with pytest.raises(ValueError, match=r"`labeled_size` must be an integer >= 1, got (np.int64\(0\)|0)"):
        SemiSupervisedBackdoorMNISTDataModule(root=str(shared_data), labeled_size=np.int64(0))


def test_a_percent_hint_offers_only_a_fraction_the_argument_takes():
    """`check_drop_ratio(50)` said "for 50 % pass drop_ratio=0.5", itself refused without `allow_large_drop`, and
    RCA's `drop_ratio=50` and `contamination=50` were offered 0.5, which nothing lets them take."""
    from lit_robust import RCA, anomaly_threshold
    from lit_robust.selection.rules import check_drop_ratio

    with pytest.raises(ValueError, match=r"got 50\.0\. It is a fraction, not a percent: for 50 % pass "
                                         r"drop_ratio=0\.5 with `allow_large_drop=True`\.$"):
        check_drop_ratio(50)
    check_drop_ratio(0.5, allow_large_drop=True)  # what the hint says is taken
    with pytest.raises(ValueError, match=r"got 30\.0\. It is a fraction, not a percent: for 30 % pass "
                                         r"drop_ratio=0\.3\.$"):
        check_drop_ratio(30)
    with pytest.raises(ValueError, match=r"got 100\.0\. It is a fraction, not a percent, and 100 % is out of its "
                                         r"range too \(drop_ratio < 1\)\.$"):
        check_drop_ratio(100, allow_large_drop=True)
    with pytest.raises(ValueError, match=r"It is a fraction, not a percent, and 50 % is out of its range too "
                                         r"\(drop_ratio < 0\.5\)\.$"):
        RCA(dim=4, drop_ratio=50)
    with pytest.raises(ValueError, match=r"got 50\. It is a fraction, not a percent, and 50 % is out of its range "
                                         r"too \(contamination < 0\.5\)\.$"):
        anomaly_threshold(torch.rand(10), 50)


@pytest.mark.parametrize("make", [
    lambda: lit_robust.MNISTDataModule(seed=-1),
    lambda: lit_robust.DigitsDataModule(seed=-1),
    lambda: lit_robust.BackdoorMNISTDataModule(seed=-1),
    lambda: lit_robust.BackdoorMNISTDataModule(attack="blend", trigger_seed=-1),
    lambda: lit_robust.TwoMoonsAnomalyDataModule(seed=-1),
    lambda: lit_robust.OneClassMNISTDataModule(seed=-1),
    lambda: lit_robust.CoTeaching(lit_robust.ImageClassifier(backbone="mlp"), seed=-1),
    lambda: lit_robust.DCGAN(seed=-1),
    lambda: lit_robust.DigitsDataModule(seed=2**32),
])
def test_a_seed_outside_0_to_2_32_is_refused_as_itlm_and_seed_everything_refuse_it(make):
    """A negative `seed` (and `trigger_seed`) was accepted by these modules, where `ITLM(seed=-1)` and
    `--seed_everything -1` are refused: one shared range, [0, 2**32 - 1], the seeds torch, NumPy and Lightning take."""
    message = r"^`(trigger_)?seed` must be an integer in \[0, 4294967295\], got (-1|4294967296)\.$"
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(("target", "source", "warned"), [(3, None, True), (None, None, True), (2, None, True),
                                                         (2, 7, True), (2, 1, False), ("datamodule", None, False)])
def test_backdoor_metrics_target_other_than_the_datamodules_attack_warns(tmp_path, one_torch_thread, target, source,
                                                                          warned):
    """A backdoor newcomer's typo `target=3` for the datamodule's 1 -> 2 attack read an attack success of 0.003 where
    it was 1.000, without a word; the datamodule says which attack it planted."""

    class Planted(DigitsDataModule):
        attack_target, attack_source = 2, 1

    trigger = PatchTrigger(size=2, value_range=(-1.0, 3.0))
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                           callbacks=[BackdoorMetrics(trigger=trigger, target=target, source=source)])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.fit(ImageClassifier(backbone="mlp", image_size=8), datamodule=Planted(val_size=64))
    said = [str(w.message) for w in record if "the datamodule planted" in str(w.message)]
    planted = "1 -> 2"
    measured = "a -> a+1 (target None)" if target is None else f"{source} -> {target}" if source else f"all -> {target}"
    assert said == ([] if not warned else [
        f"BackdoorMetrics: measures the attack {measured} (`target`={target!r}, `source`={source!r}), but the datamodule "
        f"planted {planted}: its attack success rate is of another attack than the one in the data. Leave "
        "`target='datamodule'` (the default) to measure the planted one."])
