"""Small ready-made LightningModules that adopt :class:`~lit_robust.RobustMixin`."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from lit_robust._backend import pl, rank_zero_warn
from lit_robust._checks import check_int, check_int_sequence, check_lr, check_number
from lit_robust.data.indexed import unpack_batch, unpack_eval_batch
from lit_robust.data.spec import (
    DataSpec,
    check_eval_labels,
    check_eval_targets,
    check_first_batch,
    check_fits_data,
    check_input_dtype,
    datamodule_spec,
    misfit,
)
from lit_robust.functional.losses import bootstrap_loss
from lit_robust.mixin import RobustMixin

__all__ = ["ImageClassifier", "MLPClassifier", "LinearRegressor", "MLPRegressor", "make_backbone", "make_mlp",
           "check_classifier_data"]


def anomaly_data_error(spec: DataSpec, model: str, wants: str) -> ValueError:
    """A supervised model given an anomaly detection set: its 0/1 flags (placeholders where the rows are unlabelled)
    are no ``wants`` to learn (a table newcomer's `MLPClassifier(in_features=30, num_classes=2)` trained silently on
    an unlabelled table's all-zero flags)."""
    return ValueError(f"`model`={model} learns {wants}, but `data`: {spec.source} is an anomaly detection set "
                      f"({spec.targets()}, placeholders where the rows are unlabelled): train an anomaly model on it "
                      "(`RobustRealNVP`, `RealNVP` or `RCA`; docs/capabilities/anomaly.md), or, with a column of known "
                      f"{wants}, a datamodule that yields them (e.g. `TableDataModule(task="
                      f"'{'classification' if 'class' in wants else 'regression'}', target=...)`).")


def wrong_kind_error(spec: DataSpec, model: str, learns: str, other: str | None) -> ValueError:
    """The error for a classifier (``learns="class"``) on data without class labels, or a regressor
    (``learns="regression"``) on class labels: it names ``other``, the model of the data's kind (None where there is
    none, e.g. unlabelled data), and the kind of datamodule the model needs."""
    if learns == "class":
        kind, data = "a classifier", "a datamodule with class labels (e.g. TableDataModule(task='classification'))"
    else:
        kind, data = "a regressor", "a datamodule of float targets (e.g. TableDataModule(task='regression'))"
    # integer targets read off a batch may be numbers (a regression newcomer's CSV of whole-number prices was read as
    # int64 and told to use a classifier for "labels up to 1211")
    numeric = (" If they are numeric values, not classes, make them floats (`y.float()`, or `.astype('float32')` on a "
               "DataFrame column): integer targets are read as class labels."
               if learns == "regression" and spec.target == "class" and spec.classes_at_least else "")
    use = data if other is None else f"{other}, or {data}"
    if learns == "class" and spec.target == "none" and spec.source == "SemiSupervisedBackdoorMNISTDataModule":
        # its pretraining mode was told to use a TableDataModule (a SimCLR newcomer's `--data.mode pretrain`)
        use = "its labelled split, `mode='finetune'` (`--data.mode finetune`)"
    return ValueError(f"`model`={model} is {kind}, but `data`: {spec.source} yields {spec.targets()}; use {use}."
                      f"{numeric}")


def check_classifier_data(spec: DataSpec, model: str, num_classes: int, in_channels: int | None = None,
                          image_size: int | None = None) -> None:
    """Raise unless a classifier of ``num_classes`` outputs on ``in_channels``-channel images (of
    ``image_size``² pixels, when the model needs one size) fits what ``spec``'s datamodule yields; warn when the
    model has more outputs than the data has classes."""
    if spec.target == "anomaly":
        raise anomaly_data_error(spec, model, "class labels")
    if spec.target in ("regression", "none"):
        raise wrong_kind_error(spec, model, "class",
                               "a regressor (e.g. MLPRegressor)" if spec.target == "regression" else None)
    if in_channels is not None:
        if len(spec.input_shape) != 3:
            raise misfit("in_channels", in_channels, spec, spec.inputs(), "The model expects [C, H, W] images.")
        # both misfits in one message: an image-folder CLI user fixed the channels, re-ran, and only then was told
        # the size
        size_fix = None
        if image_size is not None and spec.input_shape[1:] != (image_size, image_size):
            # the data side too: a newcomer's folder of 24-64 px photos read at its first file's 60 px, and the model's
            # 32 was the size they wanted
            resize = (f" Or set `data.image_size` to {image_size} to read the images at the model's size."
                      if spec.source == "ImageFolderDataModule" else "")
            size_fix = (f"Set `model.image_size` to {spec.input_shape[1]}.{resize}" if spec.input_shape[1] ==
                        spec.input_shape[2] else "The model needs square images" + (
                            f": set `data.image_size` (e.g. to {image_size}) to resize them."
                            if spec.source == "ImageFolderDataModule" else "."))
        if spec.input_shape[0] != in_channels:
            folder = spec.source == "ImageFolderDataModule"
            grey = (" Or set `data.channels` to 3 to read the images in colour (the folder's first image, which "
                    "sets the channels, is grayscale)." if folder and in_channels == 3 and spec.input_shape[0] == 1
                    else "" if in_channels != 1 or spec.input_shape[0] != 3 else
                    " Or set `data.channels` to 1 to read the images as grayscale." if folder else
                    " Or, for grey images opened as RGB (torchvision's `ImageFolder` opens every file so), add "
                    "`transforms.Grayscale()` to the data's transforms and keep 1.")
            also = ("" if size_fix is None else
                    f" And `model.image_size`={image_size!r} does not fit either: {size_fix[0].lower()}{size_fix[1:]}")
            raise misfit("in_channels", in_channels, spec, spec.inputs(), f"Set `model.in_channels` to "
                                                                          f"{spec.input_shape[0]}.{grey}{also}")
        if size_fix is not None:
            raise misfit("image_size", image_size, spec, spec.inputs(), size_fix)
    if spec.target == "class" and spec.label_shape:
        # a pandas user's `targets=df[["churn", "plan"]]`: torch's "Expected floating point type for target with class
        # probabilities, got Long" from inside the loss
        raise ValueError(f"`model`={model} is a classifier of one integer label per sample, but `data`: {spec.source} "
                         f"yields integer labels of shape {list(spec.label_shape)} per sample. Pass one column as "
                         "`targets` (e.g. `df[\"label\"]`, not `df[[\"label\", ...]]`); for one-hot rows, their "
                         "`.argmax(1)`.")
    if spec.target == "class" and spec.num_classes is not None:
        if spec.num_classes == 1 and not spec.classes_at_least:
            # an image folder of one class sub-folder (a GAN's unlabelled images are read so) reaches a classifier
            folder = (" (one class sub-folder under `root`: put each class's images in a sub-folder of its own)"
                      if spec.source == "ImageFolderDataModule" else "")
            raise ValueError(f"`model`={model} is a classifier, but `data`: {spec.source} yields labels of 1 class"
                             f"{folder}; a classifier needs at least 2.")
        if num_classes < spec.num_classes:
            raise misfit("num_classes", num_classes, spec, spec.targets(),
                         f"`model.num_classes` must be >= {spec.num_classes}.")
        if num_classes > spec.num_classes and not spec.classes_at_least:
            rank_zero_warn(f"`model.num_classes`={num_classes} is more than the classes of `data`: {spec.source} "
                           f"({spec.targets()}); {num_classes - spec.num_classes} output(s) never get a label.")


def check_regressor_data(spec: DataSpec, model: str, in_features: int, out_features: int,
                         in_argument: str = "in_features", out_argument: str | None = "out_features",
                         flat_input: bool = False) -> None:
    """Raise unless a regressor from ``in_features`` inputs to ``out_features`` targets fits ``spec``."""
    if spec.target == "class":
        raise wrong_kind_error(spec, model, "regression", "a classifier (e.g. ImageClassifier)")
    if spec.target == "anomaly":
        raise anomaly_data_error(spec, model, "regression targets")
    if spec.target != "regression":
        return
    if spec.in_features != in_features or (flat_input and len(spec.input_shape) != 1):
        raise misfit(in_argument, in_features, spec, spec.inputs(),
                     f"Set `model.{in_argument}` to {spec.in_features}." if not flat_input or
                     len(spec.input_shape) == 1 else "The model expects flat feature vectors.")
    if spec.target_dim is not None and spec.target_dim != out_features:
        if out_argument is None:
            raise ValueError(f"`model`={model} predicts {out_features} target value(s) per sample, but `data`: "
                             f"{spec.source} yields {spec.targets()}.")
        raise misfit(out_argument, out_features, spec, spec.targets(), f"Set `model.{out_argument}` to "
                                                                       f"{spec.target_dim}.")


def make_mlp(in_features: int, out_features: int, hidden: int, hidden_layers: int,
             activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``Flatten`` then ``hidden_layers`` × (``Linear(·, hidden)``, activation), then ``Linear(·, out_features)``."""
    check_int("in_features", in_features, 1)
    check_int("out_features", out_features, 1)
    check_int("hidden", hidden, 1)
    check_int("hidden_layers", hidden_layers, 0)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden), activation()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def make_backbone(name: str, in_channels: int, image_size: int, num_classes: int, hidden: int = 128,
                  hidden_layers: int = 1) -> nn.Module:
    """``"cnn2"``: two conv layers + linear (the ITLM paper's MNIST model); ``"lenet"``: the same two conv layers,
    then ``hidden_layers`` fully connected ReLU layers of width ``hidden`` before the output layer (LeNet's shape: a
    penultimate layer whose activations :class:`~lit_robust.ActivationClustering` clusters); ``"mlp"``: ``hidden_layers``
    fully connected ReLU layers of width ``hidden`` (default one of 128); ``"resnet18"``: torchvision's ResNet-18
    (ImageNet stem, ``conv1`` rebuilt for ``in_channels``) + a linear layer. The ResNet's BatchNorm makes a
    sample's training-mode output depend on its batch; in evaluation mode (ITLM's scoring) it does not."""
    check_int("num_classes", num_classes, 2)
    check_int("in_channels", in_channels, 1)
    # cnn2 pools twice by 2: a smaller image leaves no feature for its linear layer
    check_int("image_size", image_size, 4 if name in ("cnn2", "lenet") else 1)
    if name in ("cnn2", "lenet"):
        feat = 32 * (image_size // 4) ** 2
        convs = [nn.Conv2d(in_channels, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                 nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
        if name == "cnn2":
            return nn.Sequential(*convs, nn.Flatten(), nn.Linear(feat, num_classes))
        return nn.Sequential(*convs, *make_mlp(feat, num_classes, hidden, hidden_layers))  # make_mlp flattens
    if name == "mlp":
        return make_mlp(in_channels * image_size * image_size, num_classes, hidden, hidden_layers)
    if name == "resnet18":
        from lit_robust.models.simclr import simclr_backbone  # torchvision, imported only when asked for

        features = simclr_backbone("resnet18", in_channels=in_channels)
        return nn.Sequential(features, nn.Linear(features.feature_dim, num_classes))
    raise ValueError(f"`backbone` must be 'cnn2', 'lenet', 'mlp' or 'resnet18', got {name!r}.")


def loader_metric(module: nn.Module, first: str, more: str, dataloader_idx: int, make: Any) -> tuple[Any, str]:
    """The metric (or group of metrics) of evaluation loader ``dataloader_idx`` and its attribute name for
    ``self.log(..., metric_attribute=...)``: loader 0 gets ``module.<first>``, loader k > 0 the k-th of the
    ``nn.ModuleList`` ``module.<more>``, which ``make()`` fills on demand (on the module's device). One metric fed by
    every loader gave each ``<name>/dataloader_idx_k`` the value over all of them."""
    if dataloader_idx == 0:
        return getattr(module, first), first
    extra = getattr(module, more)
    while len(extra) < dataloader_idx:
        extra.append(make().to(module.device))
    return extra[dataloader_idx - 1], f"{more}.{dataloader_idx - 1}"


class _Classifier(RobustMixin, pl.LightningModule):
    """What :class:`ImageClassifier` and :class:`MLPClassifier` share: checked optimiser settings, per-sample
    cross-entropy (or bootstrapping), accuracy metrics, predictions and the optimiser. Subclasses build ``self.net``
    and call ``save_hyperparameters`` in their own ``__init__`` (so a checkpoint holds their arguments only)."""

    def __init__(self, num_classes: int | None, lr: float, momentum: float, weight_decay: float,
                 milestones: Sequence[int], gamma: float, optimizer: str, loss: str, bootstrap_beta: float) -> None:
        super().__init__()  # the subclass checks `num_classes` (may it be None?)
        check_lr(lr)
        check_number("momentum", momentum, 0, 1, high_open=True)
        check_number("weight_decay", weight_decay, 0)
        # an epoch-0 milestone is never reached: MultiStepLR counts epochs from 1
        milestones = check_int_sequence("milestones", milestones, 1, example="[30, 60]")
        check_number("gamma", gamma, 0, low_open=True)
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"`optimizer` must be 'sgd' or 'adam', got {optimizer!r}.")
        if loss not in ("ce", "bootstrap_soft", "bootstrap_hard"):
            raise ValueError(f"`loss` must be 'ce', 'bootstrap_soft' or 'bootstrap_hard', got {loss!r}.")
        check_number("bootstrap_beta", bootstrap_beta, 0, 1)
        # behaviour reads `settings`, not `hparams`: LightningCLI overwrites the hparams of a module nested in
        # another (e.g. inside CoTeaching) with the outer module's config
        self.settings = SimpleNamespace(lr=lr, momentum=momentum, weight_decay=weight_decay, milestones=list(milestones),
                                        gamma=gamma, optimizer=optimizer, loss=loss, bootstrap_beta=bootstrap_beta)
        if num_classes is not None:
            self._build_metrics(num_classes)

    def _build_metrics(self, num_classes: int) -> None:
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        # the validation and test loaders after the first, one metric each, made on demand (`loader_metric`)
        self.val_acc_more, self.test_acc_more = nn.ModuleList(), nn.ModuleList()

    def _accuracy(self, stage: str, dataloader_idx: int) -> tuple[MulticlassAccuracy, str]:
        return loader_metric(self, f"{stage}_acc", f"{stage}_acc_more", dataloader_idx,
                             lambda: MulticlassAccuracy(self.test_acc.num_classes, average="micro"))

    def forward(self, x: Tensor) -> Tensor:
        check_input_dtype(type(self).__name__, x, next(self.net.parameters()).dtype)
        return self.net(x)

    def setup(self, stage: str) -> None:
        check_fits_data(self)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        check_first_batch(self, batch, batch_idx)  # plain dataloaders: the first batch says what the data is

    def _eval_logits(self, batch: Any, stage: str) -> tuple[Tensor, Tensor]:
        """The logits and labels of a validation or test batch, its labels checked (:func:`check_eval_labels`)."""
        b = unpack_eval_batch(batch)
        logits = self(b.input)
        check_eval_labels(type(self).__name__, stage, b.target, logits.shape[0], self.test_acc.num_classes)
        return logits, b.target

    def per_sample_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        b = unpack_batch(batch)
        logits = self(b.input)
        if self.settings.loss == "ce":
            return F.cross_entropy(logits, b.target, reduction="none"), logits
        kind = "soft" if self.settings.loss == "bootstrap_soft" else "hard"
        return bootstrap_loss(logits, b.target, self.settings.bootstrap_beta, kind), logits

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """``val_loss`` and ``val_acc`` (several validation loaders: one value each, Lightning adds
        ``/dataloader_idx_k``)."""
        logits, target = self._eval_logits(batch, "validation")
        metric, name = self._accuracy("val", dataloader_idx)
        metric(logits, target)
        self.log("val_loss", F.cross_entropy(logits, target), sync_dist=True)
        self.log("val_acc", metric, metric_attribute=name, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits, target = self._eval_logits(batch, "test")
        metric, name = self._accuracy("test", dataloader_idx)
        metric(logits, target)
        self.log("test_acc", metric, metric_attribute=name)  # Lightning adds `/dataloader_idx_k` for several

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The predicted class of each sample (several predict loaders too: Lightning passes ``dataloader_idx``)."""
        return self(unpack_eval_batch(batch).input).argmax(-1)

    def configure_optimizers(self) -> Any:
        hp = self.settings
        if hp.optimizer == "adam":
            opt = torch.optim.Adam(self.parameters(), lr=hp.lr, betas=(hp.momentum, 0.999), weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if not hp.milestones:
            return opt
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(hp.milestones), gamma=hp.gamma)
        return {"optimizer": opt, "lr_scheduler": sched}


class _ShapeFromData:
    """For a module whose ``net`` is built at ``setup`` when its two sizes ``_shape_names`` are left at ``None``: read
    them from the trainer's datamodule (a :class:`~lit_robust.TableDataModule`'s width and classes or targets; a value
    given that the data contradict is a :func:`misfit`) and call ``self._build(*sizes)``, which stores them in
    ``hparams`` so that checkpoints rebuild the net."""

    _shape_names: tuple[str, str]
    _shape_target: str  # the DataSpec target kind the sizes are read from
    _shape_example: str  # e.g. "in_features=30, num_classes=2"

    @staticmethod
    def _shape_read(spec: DataSpec) -> tuple[int | None, int | None]:  # pragma: no cover - set by each model
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        self.build_from_data()
        check_fits_data(self)

    def build_from_data(self) -> None:
        """Build the net from the trainer's datamodule now, if it is not built yet (``setup`` does). For a callback
        that needs the layers at its own setup, which Lightning runs before the module's: ``SpectralNorm`` found "no
        module with a weight" in ``MLPClassifier()`` and blamed its `types` (a newcomer's)."""
        if self.net is None:
            self._build(*self._shape_from_data())

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Build the net from the weights' shapes first where it is not built yet: under ``ddp_spawn`` the fit
        builds it in the started processes, and Lightning hands the weights back to the script's module with
        ``strict=False``, which dropped every key of a module built at setup -- a DDP newcomer's ``trainer.test``
        after the fit then tested a freshly drawn net (test accuracy 0.04 against 0.92), without a word."""
        if self.net is None:
            weights = [v for k, v in state_dict.items() if k.startswith("net.") and getattr(v, "ndim", 0) == 2
                       and (k.endswith(".weight") or k.endswith(".parametrizations.weight.original"))]
            if weights:
                self._build(int(weights[0].shape[1]), int(weights[-1].shape[0]))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, x: Tensor) -> Tensor:
        if self.net is None:
            a, b = self._shape_names
            raise RuntimeError(f"{type(self).__name__}({a}=None) builds its layers at `setup`, from the datamodule: "
                               f"fit it with one first, or pass `{a}` and `{b}`.")
        check_input_dtype(type(self).__name__, x, next(self.net.parameters()).dtype)
        return self.net(x)

    def _shape_from_data(self) -> tuple[int, int]:
        names, cls = self._shape_names, type(self).__name__
        spec = datamodule_spec(getattr(self, "_trainer", None))
        given = {name: self.hparams[name] for name in names}
        if spec is not None and spec.target == "anomaly":
            raise anomaly_data_error(spec, cls, "class labels" if self._shape_target == "class" else
                                     "regression targets")
        if spec is not None and spec.target in ("class", "regression") and spec.target != self._shape_target:
            # a lab newcomer's MLPClassifier on a regression table was told to pass both sizes, which cannot help
            raise wrong_kind_error(spec, cls, self._shape_target,
                                   "MLPRegressor" if self._shape_target == "class" else "MLPClassifier")
        if spec is not None and spec.target == "class" == self._shape_target:
            # one class: the classifier's own message, before a net of one output meets torchmetrics' "Expected
            # argument num_classes to be an integer larger than 1" (an auditor's one-folder ImageFolderDataModule)
            check_classifier_data(spec, cls, max(2, spec.num_classes or 2))
        values = None if spec is None or spec.target != self._shape_target else self._shape_read(spec)
        if values is None or None in values:
            raise ValueError(f"{cls}: `{names[0]}` and `{names[1]}` are read from the datamodule when left at None "
                             f"(got {given}), but "
                             + ("there is no datamodule saying what it yields (plain dataloaders)" if spec is None
                                else f"`data`: {spec.source} yields {spec.targets()}")
                             + f". Pass both, e.g. {cls}({self._shape_example}).")
        for name, value in zip(names, values, strict=True):
            if given[name] not in (None, value):
                raise misfit(name, given[name], spec, spec.inputs() if name == "in_features" else spec.targets(),
                             f"Set `model.{name}` to {value} (or leave it out).")
        return values


class ImageClassifier(_Classifier):
    """Image classifier trained with per-sample cross-entropy.

    Args:
        backbone: ``"cnn2"`` (default: two conv layers + linear, the ITLM paper's MNIST model), ``"lenet"`` (the same
            conv layers, then fully connected hidden layers), ``"mlp"`` or ``"resnet18"`` (:func:`make_backbone`).
        num_classes: the number of classes (outputs); at least 2.
        in_channels: channels of the input images (1: grayscale, 3: RGB).
        image_size: height and width of the (square) input images; ``"resnet18"`` takes any size.
        lr: learning rate.
        momentum: SGD's momentum, or Adam's beta1 with ``optimizer="adam"``; in [0, 1).
        weight_decay: L2 penalty of the optimizer (0: none).
        milestones: epochs at which the learning rate is multiplied by ``gamma`` (MultiStepLR; epochs counted from
            the start of each ITLM round when the callback re-initialises optimizers); empty (default): constant.
        gamma: the learning rate's factor at each of ``milestones``.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"`` (with ``betas=(momentum, 0.999)``; the PRL
            experiments use Adam, lr 0.001, momentum 0.9).
        hidden: width of the hidden layers of the ``"mlp"`` and ``"lenet"`` backbones; not used by ``"cnn2"``
            (the default) nor ``"resnet18"``.
        hidden_layers: the number of those hidden layers (``"mlp"`` and ``"lenet"`` only; not used by ``"cnn2"``
            nor ``"resnet18"``).
        loss: ``"ce"`` (cross-entropy) or the bootstrapping loss of Reed et al. (``"bootstrap_soft"``,
            ``"bootstrap_hard"``; :func:`lit_robust.bootstrap_loss`) with weight ``bootstrap_beta``.
        bootstrap_beta: the bootstrapping loss's weight of the given label, in [0, 1] (1: plain cross-entropy); not
            used with ``loss="ce"``.

    For rows of a table (vectors of features, not images) use :class:`MLPClassifier`.

    Inputs are float32, the parameters' dtype: float64 ones (numpy's default, e.g. ``torch.from_numpy`` of
    scikit-learn's arrays) are refused with the conversion to make (or train in 64 bits:
    ``Trainer(precision="64-true")``). Validation and test labels must be integers ``0 .. num_classes - 1``, one per
    sample (checked on every batch); several validation or test loaders each get their own ``val_acc`` /
    ``test_acc`` (Lightning adds ``/dataloader_idx_k``).
    """

    def __init__(
        self,
        backbone: Literal["cnn2", "lenet", "mlp", "resnet18"] = "cnn2",
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        lr: float = 0.02,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.2,
        optimizer: Literal["sgd", "adam"] = "sgd",
        hidden: int = 128,
        hidden_layers: int = 1,
        loss: Literal["ce", "bootstrap_soft", "bootstrap_hard"] = "ce",
        bootstrap_beta: float = 0.95,
    ) -> None:
        check_int("num_classes", num_classes, 2)
        super().__init__(num_classes, lr, momentum, weight_decay, milestones, gamma, optimizer, loss, bootstrap_beta)
        self.save_hyperparameters()
        self.net = make_backbone(backbone, in_channels, image_size, num_classes, hidden, hidden_layers)
        self.shape = SimpleNamespace(backbone=backbone, num_classes=num_classes, in_channels=in_channels,
                                     image_size=image_size)  # what `check_data` compares with the datamodule

    def check_data(self, spec: DataSpec) -> None:
        """Raise unless the images and labels ``spec`` describes fit ``in_channels``, ``image_size`` (the
        ``"cnn2"``/``"lenet"``/``"mlp"`` backbones are built for one size) and ``num_classes``."""
        sh = self.shape
        check_classifier_data(spec, "ImageClassifier", sh.num_classes, sh.in_channels,
                              None if sh.backbone == "resnet18" else sh.image_size)



class MLPClassifier(_ShapeFromData, _Classifier):
    """Fully connected classifier of feature vectors (rows of a table), trained with per-sample cross-entropy.

    Args:
        in_features: the number of input features; ``None`` (default): read from the datamodule at ``setup``
            (a :class:`~lit_robust.TableDataModule`, or any datamodule with a ``data_spec``), so one config fits any
            table. The value read is stored in ``hparams`` and so in checkpoints.
        num_classes: the number of classes; ``None`` (default): read from the datamodule likewise.
        hidden: width of the ReLU hidden layers.
        hidden_layers: the number of hidden layers (0: a linear classifier).
        lr: learning rate.
        momentum: Adam's beta1 (``betas=(momentum, 0.999)``), or SGD's momentum with ``optimizer="sgd"``; in [0, 1).
        weight_decay: L2 penalty of the optimizer (0: none).
        milestones: epochs at which the learning rate is multiplied by ``gamma`` (MultiStepLR); empty (default):
            constant.
        gamma: the learning rate's factor at each of ``milestones``.
        optimizer: ``"adam"`` (default) or ``"sgd"``.
        loss: ``"ce"`` (cross-entropy) or the bootstrapping loss of Reed et al. (``"bootstrap_soft"``,
            ``"bootstrap_hard"``; :func:`lit_robust.bootstrap_loss`) with weight ``bootstrap_beta``.
        bootstrap_beta: the bootstrapping loss's weight of the given label, in [0, 1]; not used with ``loss="ce"``.

    Inputs are float32, the parameters' dtype: float64 ones (numpy's default, e.g. ``torch.from_numpy`` of
    scikit-learn's arrays) are refused with the conversion to make (or train in 64 bits:
    ``Trainer(precision="64-true")``). Validation and test labels must be integers ``0 .. num_classes - 1``, one per
    sample (checked on every batch); several validation or test loaders each get their own ``val_acc`` /
    ``test_acc`` (Lightning adds ``/dataloader_idx_k``).
    """

    def __init__(
        self,
        in_features: int | None = None,
        num_classes: int | None = None,
        hidden: int = 128,
        hidden_layers: int = 2,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.2,
        optimizer: Literal["sgd", "adam"] = "adam",
        loss: Literal["ce", "bootstrap_soft", "bootstrap_hard"] = "ce",
        bootstrap_beta: float = 0.95,
    ) -> None:
        check_int("num_classes", num_classes, 2, optional=True)
        super().__init__(num_classes, lr, momentum, weight_decay, milestones, gamma, optimizer, loss, bootstrap_beta)
        check_int("in_features", in_features, 1, optional=True)
        check_int("hidden", hidden, 1)
        check_int("hidden_layers", hidden_layers, 0)
        self.save_hyperparameters()
        # `settings` as `_Classifier`'s (num_classes as given: None builds the metrics with the net, at setup)
        self.settings.__dict__.update(num_classes=num_classes, hidden=hidden, hidden_layers=hidden_layers)
        self.net: nn.Module | None = None
        if in_features is not None and num_classes is not None:
            self._build(in_features, num_classes)

    def _build(self, in_features: int, num_classes: int) -> None:
        self.net = make_mlp(in_features, num_classes, self.settings.hidden, self.settings.hidden_layers)
        self.shape = SimpleNamespace(in_features=in_features, num_classes=num_classes)
        if self.settings.num_classes is None:
            self._build_metrics(num_classes)
        # stored, so that the checkpoint rebuilds this net (`load_from_checkpoint`, `lit-robust test`)
        self.hparams.update(in_features=in_features, num_classes=num_classes)

    _shape_names, _shape_target, _shape_example = ("in_features", "num_classes"), "class", "in_features=30, num_classes=2"

    @staticmethod
    def _shape_read(spec: DataSpec) -> tuple[int | None, int | None]:
        return spec.in_features, spec.num_classes

    def check_data(self, spec: DataSpec) -> None:
        """Raise unless ``spec`` yields inputs of ``in_features`` values (flattened) and labels of ``num_classes``
        classes."""
        if self.net is None:  # built at setup from the datamodule, or from the first batch here
            return
        if spec.in_features != self.shape.in_features:  # an image is flattened: 8×8 digits are 64 features
            raise misfit("in_features", self.shape.in_features, spec, spec.inputs(),
                         f"Set `model.in_features` to {spec.in_features}.")
        check_classifier_data(spec, "MLPClassifier", self.shape.num_classes)


class LinearRegressor(RobustMixin, pl.LightningModule):
    """Linear model ``y = xᵀθ`` with per-sample squared loss (ITLM paper §6.1).

    Args:
        dim: the number of input features (the length of ``θ``; no bias term).
        lr: learning rate of plain SGD.

    Inputs are float32 as :class:`MLPClassifier`'s; test targets hold one value per sample (checked).
    """

    def __init__(self, dim: int = 100, lr: float = 0.05) -> None:
        super().__init__()
        check_int("dim", dim, 1)
        check_lr(lr)
        self.save_hyperparameters()
        self.settings = SimpleNamespace(lr=lr)
        self.linear = nn.Linear(dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        check_input_dtype("LinearRegressor", x, self.linear.weight.dtype)
        return self.linear(x)

    def setup(self, stage: str) -> None:
        check_fits_data(self)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        check_first_batch(self, batch, batch_idx)  # plain dataloaders: the first batch says what the data is

    def check_data(self, spec: DataSpec) -> None:
        """Raise unless ``spec`` yields vectors of ``dim`` features and one target per sample."""
        check_regressor_data(spec, "LinearRegressor", self.linear.in_features, 1, "dim", None, flat_input=True)

    def per_sample_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        b = unpack_batch(batch)
        pred = self(b.input)
        # targets of shape [B] against the [B, 1] prediction broadcast to a [B, B] table of every pair (a reviewer's
        # fit trained on that without a word): one target per sample, in the prediction's shape, as MLPRegressor
        target = b.target.reshape(pred.shape)
        return ((pred - target) ** 2).flatten(1).mean(1), pred

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        b = unpack_eval_batch(batch)
        pred = self(b.input)
        check_eval_targets("LinearRegressor", "test", b.target, pred.shape[0], 1, None)
        self.log("test_mse", F.mse_loss(pred, b.target.reshape(pred.shape)), sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self(unpack_eval_batch(batch).input)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.settings.lr)


class MLPRegressor(_ShapeFromData, RobustMixin, pl.LightningModule):
    r"""Fully connected regressor with per-sample squared (or Huber) loss, Adam, and :math:`R^2` metrics.

    The PRL regression experiments' model (robust_dnn_thesis §4.4.1: three fully connected layers, 256
    hidden units, leaky ReLU, Adam with lr 0.0003 and momentum 0.9). ``per_sample_loss`` returns
    ``(losses, predictions)`` so the PRL(L) filter gets :math:`\|\hat y_i - y_i\|_2`.

    Args:
        in_features: the flattened input size; ``None`` (default): read from the datamodule at ``setup`` (stored in
            ``hparams`` and so in checkpoints), as :class:`MLPClassifier`.
        out_features: the number of targets ``q``; ``None`` (default): read from the datamodule likewise.
        hidden: width of the leaky-ReLU hidden layers.
        hidden_layers: the number of hidden layers (0: a linear model).
        lr: Adam's learning rate.
        momentum: Adam's beta1 (``betas=(momentum, 0.999)``), in [0, 1).
        loss: ``"mse"`` (mean over the ``q`` targets) or ``"huber"`` (Huber with ``huber_delta``).
        huber_delta: where the Huber loss turns from quadratic to linear (``loss="huber"`` only).

    ``val_r2`` / ``test_r2``: torchmetrics ``R2Score`` averaged uniformly over the targets; ``test_mse`` /
    ``test_rmse`` / ``test_mae``: the mean squared error, its root and the mean absolute error over every target
    value of the test split, in the data's units where the datamodule scaled the targets and says how to undo it
    (an ``unscale_targets`` method, as :class:`~lit_robust.data.TableDataModule` has), else in the targets' own.
    Where the datamodule names several targets (``target_names``, as a ``TableDataModule`` with a list of
    ``target`` columns), each also gets ``test_r2/<name>``, ``test_rmse/<name>`` and ``test_mae/<name>``: the
    averages above mix the targets' units. Several validation or test loaders each get their own values (Lightning
    adds ``/dataloader_idx_k``). Inputs are float32 as :class:`MLPClassifier`'s; validation and test targets must
    hold ``out_features`` values per sample (checked).
    """

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        hidden: int = 256,
        hidden_layers: int = 2,
        lr: float = 3e-4,
        momentum: float = 0.9,
        loss: Literal["mse", "huber"] = "mse",
        huber_delta: float = 1.0,
    ) -> None:
        super().__init__()
        check_lr(lr)
        check_number("momentum", momentum, 0, 1, high_open=True)
        if loss not in ("mse", "huber"):
            raise ValueError(f"`loss` must be 'mse' or 'huber', got {loss!r}.")
        check_number("huber_delta", huber_delta, 0, low_open=True)
        check_int("in_features", in_features, 1, optional=True)
        check_int("out_features", out_features, 1, optional=True)
        check_int("hidden", hidden, 1)
        check_int("hidden_layers", hidden_layers, 0)
        self.save_hyperparameters()
        # behaviour reads `settings`, not `hparams`: LightningCLI overwrites the hparams of a module nested in
        # another (e.g. inside CoTeaching) with the outer module's config
        self.settings = SimpleNamespace(lr=lr, momentum=momentum, loss=loss, huber_delta=huber_delta,
                                        out_features=out_features, hidden=hidden, hidden_layers=hidden_layers)
        self.net: nn.Module | None = None
        if in_features is not None and out_features is not None:
            self._build(in_features, out_features)

    def _build(self, in_features: int, out_features: int) -> None:
        hp = self.settings
        self.net = make_mlp(in_features, out_features, hp.hidden, hp.hidden_layers, nn.LeakyReLU)
        hp.out_features = out_features
        self.val_r2 = self._new_r2()
        # the test loader's metrics (the first one's; `_test_metrics`), each made by `_new_test_metrics`
        self.test_r2, self.test_mse, self.test_rmse, self.test_mae, self.test_each = self._new_test_metrics().values()
        # the validation and test loaders after the first, one metric (group) each, made on demand (`loader_metric`)
        self.val_r2_more, self.test_more = nn.ModuleList(), nn.ModuleList()
        # stored, so that the checkpoint rebuilds this net (`load_from_checkpoint`, `lit-robust test`)
        self.hparams.update(in_features=in_features, out_features=out_features)

    def _new_r2(self) -> R2Score:
        return R2Score(multioutput="uniform_average") if self.settings.out_features > 1 else R2Score()

    def _new_test_metrics(self) -> nn.ModuleDict:
        """One test loader's metrics: ``r2``, ``mse``, ``rmse``, ``mae`` and ``each`` (per target; ``None`` for one)."""
        q = self.settings.out_features
        # a regression newcomer computed MSE and MAE from predictions.csv: R² alone hides the error's scale; per
        # target, logged where the datamodule names the targets (a table newcomer's test_mae averaged kWh and degrees).
        # One scalar metric per target, logged from `test_step`, so that Lightning files each loader's values under
        # that loader (logged at the epoch's end, every loader's result and printed column showed the last loader's)
        each = None if q == 1 else nn.ModuleDict({
            "r2": nn.ModuleList(R2Score() for _ in range(q)),
            "rmse": nn.ModuleList(MeanSquaredError(squared=False) for _ in range(q)),
            "mae": nn.ModuleList(MeanAbsoluteError() for _ in range(q))})
        return nn.ModuleDict({"r2": self._new_r2(), "mse": MeanSquaredError(), "rmse": MeanSquaredError(squared=False),
                              "mae": MeanAbsoluteError(), "each": each})

    def _test_metrics(self, dataloader_idx: int) -> tuple[dict[str, Any], str]:
        """Test loader ``dataloader_idx``'s metrics (as :meth:`_new_test_metrics`) and their attribute prefix."""
        if dataloader_idx == 0:
            return {"r2": self.test_r2, "mse": self.test_mse, "rmse": self.test_rmse, "mae": self.test_mae,
                    "each": self.test_each}, "test_"
        group, name = loader_metric(self, "test_more", "test_more", dataloader_idx, self._new_test_metrics)
        return dict(group.items()), f"{name}."

    _shape_names, _shape_target = ("in_features", "out_features"), "regression"
    _shape_example = "in_features=10, out_features=1"

    @staticmethod
    def _shape_read(spec: DataSpec) -> tuple[int | None, int | None]:
        return spec.in_features, spec.target_dim

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        check_first_batch(self, batch, batch_idx)  # plain dataloaders: the first batch says what the data is

    def check_data(self, spec: DataSpec) -> None:
        """Raise unless ``spec`` yields ``in_features`` inputs (flattened) and ``out_features`` targets."""
        if self.net is None:  # built at setup from the datamodule
            return
        check_regressor_data(spec, "MLPRegressor", self.net[1].in_features, self.settings.out_features)

    def per_sample_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        b = unpack_batch(batch)
        pred = self(b.input)
        target = b.target.reshape(pred.shape)
        if self.settings.loss == "mse":
            losses = (pred - target) ** 2
        else:
            losses = F.huber_loss(pred, target, reduction="none", delta=self.settings.huber_delta)
        return losses.mean(1), pred

    def _r2_update(self, metric: R2Score, batch: Any, stage: str) -> tuple[Tensor, Tensor]:
        b = unpack_eval_batch(batch)
        pred = self(b.input)
        check_eval_targets("MLPRegressor", stage, b.target, pred.shape[0], self.settings.out_features)
        target = b.target.reshape(pred.shape)
        if self.settings.out_features == 1:
            pred, target = pred.reshape(-1), target.reshape(-1)
        metric(pred, target)
        return pred, target

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """``val_r2`` (several validation loaders: one value each, Lightning adds ``/dataloader_idx_k``)."""
        metric, name = loader_metric(self, "val_r2", "val_r2_more", dataloader_idx, self._new_r2)
        self._r2_update(metric, batch, "validation")
        self.log("val_r2", metric, metric_attribute=name, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """The test metrics of the class docstring (several test loaders: one value each, Lightning adds
        ``/dataloader_idx_k``)."""
        metrics, prefix = self._test_metrics(dataloader_idx)
        pred, target = self._r2_update(metrics["r2"], batch, "test")
        unscale = getattr(getattr(self._trainer, "datamodule", None), "unscale_targets", None)
        if callable(unscale):
            # errors in the data's units (a table newcomer read test_mae 0.152 where predictions.csv gave 11.0 kWh);
            # R² is the same in either
            pred, target = (unscale(t.detach()).to(device=t.device, dtype=t.dtype).reshape(t.shape)
                            for t in (pred, target))
        for kind in ("mse", "mae", "rmse"):
            metrics[kind](pred, target)
        for kind in ("r2", "mse", "rmse", "mae"):
            self.log(f"test_{kind}", metrics[kind], metric_attribute=f"{prefix}{kind}")
        names = self._target_names() if metrics["each"] is not None else None
        for kind, group in (metrics["each"].items() if names is not None else ()):
            for j, (name, metric) in enumerate(zip(names, group)):
                metric.update(pred[:, j], target[:, j])
                # synchronised over processes by the metric, as the averaged ones above
                self.log(f"test_{kind}/{name}", metric, metric_attribute=f"{prefix}each.{kind}.{j}")

    def _target_names(self) -> list[str] | None:
        """The datamodule's ``target_names`` when it names this model's ``out_features`` targets, else ``None``."""
        names = getattr(getattr(self._trainer, "datamodule", None), "target_names", None)
        if names is None or len(names) != self.settings.out_features:
            return None
        return [str(n) for n in names]

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self(unpack_eval_batch(batch).input)

    def configure_optimizers(self) -> Any:
        hp = self.settings
        return torch.optim.Adam(self.parameters(), lr=hp.lr, betas=(hp.momentum, 0.999))
