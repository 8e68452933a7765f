"""ImageClassifier backbones: shapes, one training step, and the error for an unknown name."""

import pytest
import torch

from lit_robust import ImageClassifier
from lit_robust.models.supervised import make_backbone


@pytest.mark.parametrize("backbone", ["cnn2", "lenet", "mlp", "resnet18"])
def test_backbone_maps_images_to_class_logits(backbone):
    torch.manual_seed(0)
    model = ImageClassifier(backbone=backbone, num_classes=7, optimizer="adam", lr=1e-3)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 6])
    assert model(x).shape == (4, 7)
    losses, logits = model.per_sample_loss((torch.arange(4), x, y))
    assert losses.shape == (4,) and logits.shape == (4, 7)
    # the per-sample losses are cross-entropies of the returned logits
    torch.testing.assert_close(losses, torch.nn.functional.cross_entropy(logits, y, reduction="none"))


def test_resnet18_backbone_is_torchvision_resnet_with_grey_stem():
    net = make_backbone("resnet18", in_channels=1, image_size=28, num_classes=10)
    assert net[0].conv1.in_channels == 1 and net[0].conv1.kernel_size == (7, 7)
    assert net[1].in_features == 512 and net[1].out_features == 10
    with torch.no_grad():
        assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_is_cnn2_convolutions_then_hidden_layers():
    torch.manual_seed(0)
    cnn2 = make_backbone("cnn2", in_channels=1, image_size=28, num_classes=10)
    torch.manual_seed(0)
    lenet = make_backbone("lenet", in_channels=1, image_size=28, num_classes=10, hidden=64, hidden_layers=2)
    linears = [m for m in lenet if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32 * 7 * 7, 64), (64, 64), (64, 10)]
    # the same convolutions (drawn first, from the same seed): the feature maps match cnn2's
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(lenet[:6](x), cnn2[:6](x))
    # the input of the last linear layer (ActivationClustering's default features) is the hidden layer's output
    captured = {}
    linears[-1].register_forward_hook(lambda mod, inp, out: captured.setdefault("x", inp[0]))
    with torch.no_grad():
        lenet(x)
    assert captured["x"].shape == (3, 64) and bool((captured["x"] >= 0).all())  # after a ReLU


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match=r"`backbone` must be 'cnn2', 'lenet', 'mlp' or 'resnet18', got 'vgg'"):
        ImageClassifier(backbone="vgg")


def _plain_and_indexed(x, y):
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset

    plain = TensorDataset(x, y)
    return DataLoader(plain, batch_size=16), DataLoader(IndexedDataset(plain), batch_size=16)


@pytest.mark.parametrize("kind", ["classifier", "mlp_regressor", "linear_regressor"])
def test_a_plain_input_target_loader_evaluates_like_an_indexed_one(tmp_path, kind):
    # the README's "a clean test set needs no index: (input, target)" holds for the ready-made modules too (a
    # newcomer's `trainer.test(model, DataLoader(TensorDataset(x, y)))` was told to wrap "the training dataset")
    import pytorch_lightning as pl

    from lit_robust import LinearRegressor, MLPRegressor
    from tests.conftest import tiny_trainer

    torch.manual_seed(0)
    x = torch.randn(40, 1, 8, 8)
    if kind == "classifier":
        model, y, key = ImageClassifier("mlp", num_classes=3, image_size=8), torch.arange(40) % 3, "test_acc"
    elif kind == "mlp_regressor":
        model, y, key = MLPRegressor(64, 1, hidden=8, hidden_layers=1), torch.randn(40, 1), "test_r2"
        x = x.flatten(1)
    else:
        model, y, key = LinearRegressor(64), torch.randn(40, 1), "test_mse"
        x = x.flatten(1)
    plain, indexed = _plain_and_indexed(x, y)
    trainer = tiny_trainer(tmp_path, 1)
    got = [trainer.test(model, loader, verbose=False)[0][key] for loader in (plain, indexed)]
    assert got[0] == got[1]
    preds = [torch.cat(pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu", devices=1,
                                  default_root_dir=tmp_path).predict(model, loader)) for loader in (plain, indexed)]
    assert torch.equal(preds[0], preds[1])
    if kind == "classifier":
        assert trainer.validate(model, plain, verbose=False)[0]["val_acc"] == \
            trainer.validate(model, indexed, verbose=False)[0]["val_acc"]


@pytest.mark.parametrize("targets", [1, 2])
def test_mlp_regressor_logs_test_mse_and_mae_as_computed_by_hand(tmp_path, targets):
    """A regression newcomer computed MSE and MAE from predictions.csv: `MLPRegressor` logged only R²."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import MLPRegressor
    from tests.conftest import tiny_trainer

    torch.manual_seed(0)
    x, y = torch.randn(50, 6), torch.randn(50, targets)
    model = MLPRegressor(6, targets, hidden=8, hidden_layers=1)
    out = tiny_trainer(tmp_path, 1).test(model, DataLoader(TensorDataset(x, y), batch_size=16), verbose=False)[0]
    with torch.no_grad():
        err = model(x) - y
    assert out["test_mse"] == pytest.approx(float((err ** 2).mean()), rel=1e-5)
    assert out["test_mae"] == pytest.approx(float(err.abs().mean()), rel=1e-5)


@pytest.mark.parametrize("shape", ["[N]", "[N, 1]"])
def test_linear_regressor_takes_targets_of_one_value_per_sample_in_either_shape(shape):
    """Reviewer: `LinearRegressor` with targets of shape [N] broadcast the [B, 1] prediction against them to a [B, B]
    table and trained on every pair; its loss (and `test_mse`) is the squared error of each sample's own target."""
    from lit_robust import LinearRegressor

    torch.manual_seed(0)
    model = LinearRegressor(dim=3)
    x, y = torch.randn(4, 3), torch.tensor([1.0, -2.0, 0.5, 3.0])
    target = y if shape == "[N]" else y[:, None]
    losses, pred = model.per_sample_loss((torch.arange(4), x, target))
    torch.testing.assert_close(losses, (pred.squeeze(1) - y) ** 2)
    logged = {}
    model.log = lambda name, value, **kw: logged.update({name: value})
    model.test_step((x, target), 0)
    torch.testing.assert_close(logged["test_mse"], ((pred.squeeze(1) - y) ** 2).mean())


@pytest.mark.parametrize("kind", ["classifier", "mlp_regressor", "linear_regressor"])
def test_several_predict_loaders_and_test_loaders_each_get_their_own_rows_and_values(tmp_path, kind):
    """The ready-made classifiers' and regressors' `predict_step` (and the classifiers' and LinearRegressor's
    `test_step`) took no `dataloader_idx`: Lightning refused several loaders ("no `dataloader_idx` argument in
    `MLPClassifier.predict_step()`"), so PredictionWriter's `dataloader_idx` column was out of reach. Each test
    loader gets its own value, the one a single-loader run gives (one metric fed by both would mix them)."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import LinearRegressor, MLPRegressor, PredictionWriter
    from tests.conftest import tiny_trainer

    torch.manual_seed(0)
    x = torch.randn(12, 6)
    if kind == "classifier":
        from lit_robust import MLPClassifier

        model, y, key = MLPClassifier(6, 3, hidden=4, hidden_layers=1), torch.arange(12) % 3, "test_acc"
    elif kind == "mlp_regressor":
        model, y, key = MLPRegressor(6, 1, hidden=4, hidden_layers=1), torch.randn(12), None
    else:
        model, y, key = LinearRegressor(6), torch.randn(12), "test_mse"
    loaders = [DataLoader(TensorDataset(x, y), batch_size=5), DataLoader(TensorDataset(x[:4], y[:4]), batch_size=5)]
    writer = PredictionWriter(dirpath=str(tmp_path))
    tiny_trainer(tmp_path, 1, [writer]).predict(model, loaders, return_predictions=False)
    lines = open(writer.path).read().splitlines()
    assert lines[0].startswith("index,dataloader_idx,prediction") and len(lines) == 1 + 12 + 4
    assert [line.split(",")[1] for line in lines[1:]] == ["0"] * 12 + ["1"] * 4
    if key is not None:
        both = tiny_trainer(tmp_path, 1).test(model, loaders, verbose=False)
        alone = [tiny_trainer(tmp_path, 1).test(model, loader, verbose=False)[0][key] for loader in loaders]
        assert [both[k][f"{key}/dataloader_idx_{k}"] for k in (0, 1)] == alone


@pytest.mark.parametrize("inner", ["LinearProbe", "MLPClassifier", "MLPRegressor"])
def test_modules_nested_in_coteaching_under_a_plain_lightning_cli_read_their_own_settings(inner):
    """A plain LightningCLI gives a module nested under CoTeaching's `model:` the wrapper's config as its hparams.
    LinearProbe's `configure_optimizers` / `test_step` read `self.hparams` ("'AttributeDict' object has no attribute
    'optimizer'"), and MLPClassifier's net was built from `hparams.hidden` (the config was refused): each now reads
    what it was given."""
    from lit_robust._backend import import_submodule, pl

    args = {"LinearProbe": ["backbone=cnn", "in_channels=1", "width=4", "num_classes=3", "optimizer=sgd", "lr=0.5"],
            "MLPClassifier": ["in_features=4", "num_classes=3", "hidden=5", "optimizer=sgd", "lr=0.5"],
            "MLPRegressor": ["in_features=4", "out_features=3", "hidden=5", "lr=0.5"]}[inner]
    cli = import_submodule("cli").LightningCLI(
        pl.LightningModule, None, subclass_mode_model=True, run=False, save_config_kwargs={"overwrite": True},
        args=["--model=lit_robust.CoTeaching", f"--model.model=lit_robust.{inner}"]
        + [f"--model.model.init_args.{a}" for a in args], trainer_defaults={"logger": False, "accelerator": "cpu"})
    net = cli.model.net1
    assert "lr" not in net.hparams  # the wrapper's config: what this test is about
    opt = net.configure_optimizers()
    assert opt.param_groups[0]["lr"] == 0.5
    x = torch.randn(2, 1, 8, 8) if inner == "LinearProbe" else torch.randn(2, 4)
    assert net(x).shape == (2, 3)
    if inner == "LinearProbe":
        logged = {}
        net.log = lambda name, value, **kw: logged.update({name: value})
        net.test_step((x, torch.tensor([0, 2])), 0)
        assert "test_acc" in logged
    else:
        assert net.net[1].out_features == 5


@pytest.mark.parametrize("kind", ["classifier", "image_classifier", "mlp_regressor", "linear_probe"])
def test_several_validation_loaders_each_get_their_own_value(tmp_path, kind):
    """The classifiers', MLPRegressor's and LinearProbe's `validation_step` took no `dataloader_idx`: Lightning
    refused several validation loaders ("no `dataloader_idx` argument in `MLPClassifier.validation_step()`"). Each
    loader now gets its own value, the one a single-loader run gives."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import LinearProbe, MLPClassifier, MLPRegressor
    from tests.conftest import tiny_trainer

    torch.manual_seed(0)
    x, y, key = torch.randn(12, 6), torch.arange(12) % 3, "val_acc"
    if kind == "classifier":
        model = MLPClassifier(6, 3, hidden=4, hidden_layers=1)
    elif kind == "image_classifier":
        model, x = ImageClassifier("mlp", 3, 1, 4, hidden=4), torch.randn(12, 1, 4, 4)
    elif kind == "mlp_regressor":
        model, y, key = MLPRegressor(6, 1, hidden=4, hidden_layers=1), torch.randn(12), "val_r2"
    else:
        model, x = LinearProbe(backbone="cnn", in_channels=1, width=4, num_classes=3), torch.randn(12, 1, 8, 8)
    loaders = [DataLoader(TensorDataset(x, y), batch_size=5), DataLoader(TensorDataset(x[:5], y[:5]), batch_size=5)]
    both = tiny_trainer(tmp_path, 1).validate(model, loaders, verbose=False)
    alone = [tiny_trainer(tmp_path, 1).validate(model, loader, verbose=False)[0][key] for loader in loaders]
    assert [both[k][f"{key}/dataloader_idx_{k}"] for k in (0, 1)] == alone
    assert alone[0] != alone[1]  # the loaders' values differ: a metric shared by both would not give these


def test_mlp_regressor_takes_several_test_loaders_with_per_target_values_each(tmp_path):
    """MLPRegressor's `test_step` took no `dataloader_idx` (Lightning refused several test loaders). Each loader now
    gets its own averaged and per-target metrics (`test_mae/<name>/dataloader_idx_k`), those a single-loader run
    gives, and no other loader's."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import MLPRegressor
    from lit_robust._backend import pl
    from tests.conftest import tiny_trainer

    torch.manual_seed(0)
    x, y = torch.randn(12, 6), torch.randn(12, 2)
    loaders = [DataLoader(TensorDataset(x, y), batch_size=5), DataLoader(TensorDataset(x[:5], 3 * y[:5]), batch_size=5)]

    class Data(pl.LightningDataModule):
        target_names = ["a", "b"]

        def __init__(self, test):
            super().__init__()
            self.test = test

        def test_dataloader(self):
            return self.test

    model = MLPRegressor(6, 2, hidden=4, hidden_layers=1)
    both = tiny_trainer(tmp_path, 1).test(model, datamodule=Data(loaders), verbose=False)
    for k, loader in enumerate(loaders):
        alone = tiny_trainer(tmp_path, 1).test(model, datamodule=Data(loader), verbose=False)[0]
        assert set(alone) == {"test_r2", "test_mse", "test_rmse", "test_mae", "test_r2/a", "test_r2/b", "test_rmse/a",
                              "test_rmse/b", "test_mae/a", "test_mae/b"}
        assert {f"{name}/dataloader_idx_{k}": value for name, value in alone.items()} == both[k]


def test_mlp_regressor_per_target_values_are_filed_under_their_own_test_loader(tmp_path):
    """The per-target metrics were logged at the test epoch's end: every loader's result dict held every loader's
    `test_mae/<name>/dataloader_idx_k`, and the printed table (suffixes cut) showed the last loader's value in each
    column (loader 0's `test_mae/a` read loader 1's). Each loader's dict now holds its own values only."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import MLPRegressor
    from lit_robust._backend import pl
    from tests.conftest import tiny_trainer

    x, y = torch.zeros(4, 3), torch.tensor([[1.0, 2.0], [1.0, 2.0], [10.0, 20.0], [10.0, 20.0]])

    class Data(pl.LightningDataModule):
        target_names = ["a", "b"]

        def test_dataloader(self):
            return [DataLoader(TensorDataset(x[:2], y[:2]), batch_size=2),
                    DataLoader(TensorDataset(x[2:], y[2:]), batch_size=2)]

    model = MLPRegressor(3, 2, hidden=4, hidden_layers=0)
    torch.nn.init.zeros_(model.net[1].weight)
    torch.nn.init.zeros_(model.net[1].bias)  # predicts 0: the absolute errors are the targets
    out = tiny_trainer(tmp_path, 1).test(model, datamodule=Data(), verbose=False)
    assert [{k: v for k, v in d.items() if k.startswith(("test_mae/a", "test_mae/b"))} for d in out] == [
        {"test_mae/a/dataloader_idx_0": 1.0, "test_mae/b/dataloader_idx_0": 2.0},
        {"test_mae/a/dataloader_idx_1": 10.0, "test_mae/b/dataloader_idx_1": 20.0}]


def _models_on_features():
    from lit_robust import LinearRegressor, MLPClassifier, MLPRegressor

    return {"MLPClassifier": (MLPClassifier(4, 3, hidden=4), (6, 4)),
            "MLPRegressor": (MLPRegressor(4, 1, hidden=4), (6, 4)), "LinearRegressor": (LinearRegressor(4), (6, 4)),
            "ImageClassifier": (ImageClassifier("mlp", 3, 1, 4, hidden=4), (6, 1, 4, 4))}


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor", "LinearRegressor", "ImageClassifier"])
def test_float64_and_integer_inputs_are_refused_with_the_conversion_to_make(name):
    """`torch.from_numpy` of scikit-learn's float64 arrays stopped training, test and predict in torch's "mat1 and
    mat2 must have the same dtype": refused in `forward` (all three go through it) naming the conversion and
    `precision="64-true"`, as the anomaly detectors do; integer inputs likewise."""
    model, shape = _models_on_features()[name]
    with pytest.raises(ValueError, match=rf"{name} expects inputs of dtype torch.float32, its parameters' dtype, got "
                                         r"torch.float64 \(numpy's default\): convert them.*precision=\"64-true\""):
        model(torch.randn(shape, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"{name} expects floating-point inputs .* got torch.uint8.* / 255"):
        model(torch.zeros(shape, dtype=torch.uint8))
    assert model(torch.randn(shape)).shape[0] == 6
    assert model.double()(torch.randn(shape, dtype=torch.float64)).dtype == torch.float64  # 64-bit parameters


def test_float64_inputs_train_under_precision_64_true(tmp_path):
    """The fix the message names works: Lightning's "64-true" makes the parameters float64 (and converts inputs)."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset, MLPClassifier
    from tests.conftest import tiny_trainer

    torch.manual_seed(0)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.arange(8) % 2
    model = MLPClassifier(4, 2, hidden=4)
    tiny_trainer(tmp_path, 1, precision="64-true").fit(model, DataLoader(IndexedDataset(TensorDataset(x, y)),
                                                                         batch_size=4))
    assert model.net[1].weight.dtype == torch.float64


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor", "LinearRegressor", "ImageClassifier"])
def test_half_precision_inputs_pass_under_autocast_and_float64_ones_still_do_not(name):
    """Under autocast ("bf16-mixed", "16-mixed") the layers cast each input themselves: bfloat16 data (kept in half
    precision to save memory) trained before the input-dtype check and was then refused ("expects inputs of dtype
    torch.float32 ... got torch.bfloat16"). Float64 stays refused there: autocast leaves it uncast."""
    model, shape = _models_on_features()[name]
    x = torch.randn(shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x.to(torch.bfloat16)).shape[0] == model(x.half()).shape[0] == 6
        with pytest.raises(ValueError, match=rf"{name} expects inputs of dtype torch.float32.* got torch.float64"):
            model(x.double())
    with pytest.raises(ValueError, match=rf"{name} expects inputs of dtype torch.float32.* got torch.bfloat16"):
        model(x.to(torch.bfloat16))  # without autocast the first layer would fail on it


def test_bfloat16_inputs_train_under_bf16_mixed(tmp_path):
    """The Trainer path of the test above: `precision="bf16-mixed"` with bfloat16 features trains and tests."""
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset, MLPClassifier
    from tests.conftest import tiny_trainer

    torch.manual_seed(0)
    x, y = torch.randn(8, 4, dtype=torch.bfloat16), torch.arange(8) % 2
    model, loader = MLPClassifier(4, 2, hidden=4), DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=4)
    trainer = tiny_trainer(tmp_path, 1, precision="bf16-mixed")
    trainer.fit(model, loader)
    assert 0.0 <= trainer.test(model, loader, verbose=False)[0]["test_acc"] <= 1.0


@pytest.mark.parametrize(("name", "target", "message"), [
    ("MLPClassifier", torch.tensor([0, -1, 2, 1, 0, 1]), r"class labels in 0 \.\. 2 \(`num_classes`=3\), got -1\. Map"),
    ("MLPClassifier", torch.tensor([0, 3, 2, 1, 0, 1]), r"class labels in 0 \.\. 2 \(`num_classes`=3\), got 3\."),
    ("MLPClassifier", torch.tensor([0., 1, 2, 1, 0, 1]), r"integer class labels 0 \.\. 2, got dtype torch.float32"),
    ("MLPClassifier", torch.eye(3, dtype=torch.long)[[0, 1, 2, 0, 1, 2]],
     r"one class label per sample \(shape \[6\]\), got shape \[6, 3\]; for one-hot"),
    ("ImageClassifier", torch.tensor([0, 1, 2, 1, 0, 7]), r"class labels in 0 \.\. 2 \(`num_classes`=3\), got 7\."),
    ("MLPRegressor", torch.randn(6, 2),
     r"must hold `out_features`=1 value\(s\) per sample, got 2 value\(s\) per sample \(shape \[6, 2\]\)\. Set "
     r"`model.out_features` to 2"),
    ("LinearRegressor", torch.randn(6, 2), r"must hold 1 value\(s\) per sample, got 2 value\(s\) per sample"),
])
@pytest.mark.parametrize("stage", ["validation", "test"])
def test_evaluation_targets_are_checked_on_plain_loaders(name, target, message, stage):
    """Only the first training batch was checked: validating a classifier on label -1 gave torch's "IndexError:
    Target -1 is out of bounds", testing it on float, out-of-range or one-hot targets gave a `test_acc` without a
    word, and a regressor's targets of another width a reshape RuntimeError. Each is now named."""
    model, shape = _models_on_features()[name]
    model.log = lambda *args, **kwargs: None
    if name == "LinearRegressor" and stage == "validation":
        pytest.skip("LinearRegressor has no validation_step")
    step = getattr(model, f"{stage}_step")
    with pytest.raises(ValueError, match=rf"{name}'s {stage} targets .*{message}"):
        step((torch.randn(shape), target), 0)


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_linear_probe_checks_its_evaluation_labels(stage):
    """LinearProbe's validation and test labels are checked as the classifiers' (label -1: torch's IndexError)."""
    from lit_robust import LinearProbe

    model = LinearProbe(backbone="cnn", in_channels=1, width=4, num_classes=3)
    model.log = lambda *args, **kwargs: None
    with pytest.raises(ValueError, match=rf"LinearProbe's {stage} targets must be class labels in 0 \.\. 2 .*got -1"):
        getattr(model, f"{stage}_step")((torch.randn(2, 1, 8, 8), torch.tensor([0, -1])), 0)


@pytest.mark.parametrize("cls", ["MLPClassifier", "MLPRegressor"])
def test_a_module_built_at_setup_takes_its_weights_back_as_ddp_spawn_hands_them(cls):
    """Under `ddp_spawn` the fit builds the net in the started processes, and Lightning hands the weights back to the
    script's module with `load_state_dict(..., strict=False)`, which dropped every key of a module built at setup: a
    DDP newcomer's `trainer.test(model)` after the fit tested a freshly drawn net (0.04 against 0.92), silently."""
    import lit_robust

    model_cls = getattr(lit_robust, cls)
    fitted = model_cls(7, 3, hidden=5, hidden_layers=2) if cls == "MLPClassifier" else model_cls(7, 3, hidden=5)
    waiting = model_cls(hidden=5, hidden_layers=2) if cls == "MLPClassifier" else model_cls(hidden=5)
    assert waiting.net is None
    result = waiting.load_state_dict(fitted.state_dict(), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(4, 7)
    assert torch.equal(waiting(x), fitted(x))
    names = ("in_features", "num_classes") if cls == "MLPClassifier" else ("in_features", "out_features")
    assert (waiting.hparams[names[0]], waiting.hparams[names[1]]) == (7, 3)  # its checkpoints rebuild it
