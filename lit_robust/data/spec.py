"""What a datamodule yields (input shape, kind of target, number of classes or target width), so that a ready-made
model can check at ``setup`` that it fits the data, with a message that names both sides."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["DataSpec", "TargetKind", "dataset_spec", "datamodule_spec", "batch_spec", "check_fits_data",
           "check_first_batch", "check_input_dtype", "check_eval_labels", "check_eval_targets", "misfit"]

TargetKind = Literal["class", "regression", "anomaly", "none"]


@dataclass(frozen=True)
class DataSpec:
    """What every sample of a datamodule looks like (one sample, without the batch dimension).

    Attributes:
        source: the datamodule's class name (for messages).
        input_shape: e.g. ``(1, 28, 28)`` for MNIST images, ``(10,)`` for ten features.
        target: ``"class"`` (integer labels), ``"regression"`` (float targets), ``"anomaly"`` (0/1 anomaly flags) or
            ``"none"`` (a constant dummy: the data carries no targets).
        num_classes: with ``target="class"``.
        target_dim: with ``target="regression"``: the number of target values per sample.

    >>> DataSpec("MNISTDataModule", (1, 28, 28), "class", num_classes=10).inputs()
    '1×28×28 images'
    """

    source: str
    input_shape: tuple[int, ...]
    target: TargetKind
    num_classes: int | None = None
    target_dim: int | None = None
    #: ``num_classes`` is only a lower bound (the largest label seen + 1, e.g. read from one batch)
    classes_at_least: bool = False
    #: with ``target="class"`` read from a batch: the shape of one sample's labels (``()``: one label per sample)
    label_shape: tuple[int, ...] = ()

    @property
    def in_features(self) -> int:
        """The flattened input size."""
        return math.prod(self.input_shape)

    def inputs(self) -> str:
        if len(self.input_shape) == 3:
            return "×".join(map(str, self.input_shape)) + " images"
        if len(self.input_shape) == 1:
            return f"vectors of {self.input_shape[0]} features"
        return f"inputs of shape {self.input_shape}"

    def targets(self) -> str:
        if self.target == "class":
            if self.classes_at_least:
                return f"labels up to {self.num_classes - 1} (so at least {self.num_classes} classes)"
            return f"labels of {self.num_classes} classes"
        if self.target == "regression":
            return f"float regression targets of {self.target_dim} value(s) per sample"
        if self.target == "anomaly":
            return "0/1 anomaly flags as targets"
        return "no targets (a constant dummy label)"


def dataset_spec(dataset: Any, source: str, target: TargetKind, num_classes: int | None = None) -> DataSpec:
    """The :class:`DataSpec` of an :class:`~lit_robust.IndexedDataset` (read from its first sample)."""
    item = dataset[0]
    x, y = item[1], item[2]
    shape = tuple(int(d) for d in x.shape) if isinstance(x, Tensor) else ()
    target_dim = int(y.numel()) if target == "regression" and isinstance(y, Tensor) else None
    return DataSpec(source, shape, target, num_classes if target == "class" else None, target_dim)


def batch_spec(batch: Any, source: str = "the first training batch") -> DataSpec | None:
    """A :class:`DataSpec` read from one collated ``(index, input, target[, flag])`` batch: integer targets are
    class labels (``num_classes`` a lower bound), floating-point ones regression targets; ``None`` when the batch
    does not say (inputs or targets not tensors, boolean targets)."""
    from lit_robust.data.indexed import unpack_batch

    b = unpack_batch(batch)
    x, y = b.input, b.target
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.ndim < 1 or y.ndim < 1 or y.dtype == torch.bool:
        return None
    shape = tuple(int(d) for d in x.shape[1:])
    if y.is_floating_point():
        return DataSpec(source, shape, "regression", target_dim=math.prod(y.shape[1:]) if y.ndim > 1 else 1)
    if y.numel() == 0:
        return None
    return DataSpec(source, shape, "class", num_classes=int(y.max()) + 1, classes_at_least=True,
                    label_shape=tuple(int(d) for d in y.shape[1:]))


def check_first_batch(module: Any, batch: Any, batch_idx: int) -> None:
    """Without a datamodule that says what it yields, check ``module`` (its ``check_data``) against the first
    training batch of every epoch instead (cheap: shapes and one ``max``)."""
    trainer = getattr(module, "_trainer", None)
    if batch_idx != 0 or datamodule_spec(trainer) is not None:
        return
    spec = batch_spec(batch)
    low = None
    if spec is not None and spec.target == "class":
        spec, low = _whole_set_labels(spec, trainer, batch)
    if spec is not None and callable(getattr(module, "check_data", None)):
        module.check_data(spec)
        if low is not None and low < 0:  # a classifier's (a regressor was told of its integer targets above)
            raise ValueError(f"{spec.source} holds the class label {low}: class labels are 0 .. C - 1 for C classes "
                             "(the range of cross-entropy's targets). Map the labels to that range first. If it "
                             "marks samples without a label (`ignore_index=-100`, a semi-labelled set's -1): the "
                             "ready-made classifiers train on labelled samples only, so leave those out (a module "
                             "of your own whose `F.cross_entropy` ignores them keeps them under ITLM, which leaves "
                             "them out of its estimate).")


def _whole_set_labels(spec: DataSpec, trainer: Any, batch: Any) -> tuple[DataSpec, int]:
    """``spec`` with the largest label of the whole training set when it holds its labels as one tensor
    (``IndexedDataset(targets=...)``, a ``TensorDataset``'s second tensor), else of the batch, and the smallest.
    An auditor's label 7 at index 50 of 200 passed the first batch's check and stopped the fit in torch's bare
    "IndexError: Target 7 is out of bounds"; a label of -1 passed it everywhere."""
    from lit_robust.data.indexed import dataset_targets, unpack_batch

    targets = dataset_targets(getattr(getattr(trainer, "train_dataloader", None), "dataset", None))
    whole = (isinstance(targets, Tensor) and targets.ndim == 1 and targets.numel() > 0
             and not targets.is_floating_point() and targets.dtype != torch.bool)
    labels = targets if whole else unpack_batch(batch).target
    source = "the training set" if whole else spec.source
    low, high = int(labels.min()), int(labels.max())
    return DataSpec(source, spec.input_shape, "class", num_classes=max(spec.num_classes or 0, high + 1),
                    classes_at_least=True, label_shape=spec.label_shape), low


def datamodule_spec(trainer: Any) -> DataSpec | None:
    """The ``data_spec`` of the trainer's datamodule (set up), or ``None`` (no trainer, no datamodule, or one that
    does not say what it yields)."""
    spec = getattr(getattr(trainer, "datamodule", None), "data_spec", None)
    return spec if isinstance(spec, DataSpec) else None


def one_target_regression(spec: DataSpec | None, targets: Any, reported: bool = True) -> bool:
    """Whether a fit's per-sample losses are read as a regression's squared residuals, for the gmm's restart
    (``estimate_corruption(..., squared_errors=True)``; pure). With a datamodule that says what it yields (``spec``):
    regression targets, one per sample. Without one: the training set's ``targets``
    (:func:`~lit_robust.data.indexed.dataset_targets`) hold one floating value per sample, not all 0 or 1 (a binary
    classifier's float labels, a flow's placeholder zeros), and the module reports its targets (``reported``; not a
    GAN's or a flow's placeholders).

    Why one target: the restart is for scores dense at 0 (chi-square(1)-like), which a mean of several squared
    errors is not. Why not on other scores: it read clean FashionMNIST's PRL(L) gradient norms as 15 % corrupted.

    >>> one_target_regression(None, torch.tensor([[0.3], [1.7]])), one_target_regression(None, torch.tensor([0, 1]))
    (True, False)
    >>> one_target_regression(None, torch.tensor([0.0, 1.0, 1.0]))   # float 0/1 labels
    False
    """
    from lit_robust.report import scalar_targets  # the reports' "one target per sample"

    if spec is not None:
        return spec.target == "regression" and spec.target_dim == 1
    y = scalar_targets(targets)
    return y is not None and reported and not bool(((y == 0) | (y == 1)).all())


def reads_squared_errors(trainer: Any) -> bool:
    """:func:`one_target_regression` of a running fit: the trainer's datamodule spec, else its training set's targets
    (``IndexedDataset(targets=...)`` or the second tensor of the ``TensorDataset`` it wraps) and whether its module
    reports targets. Call once the training loader is set up (at train start or later)."""
    from lit_robust.data.indexed import dataset_targets
    from lit_robust.report import targets_reported

    loader = getattr(trainer, "train_dataloader", None)
    return one_target_regression(datamodule_spec(trainer), dataset_targets(getattr(loader, "dataset", None)),
                                 targets_reported(getattr(trainer, "lightning_module", None)))


def misfit(argument: str, value: Any, spec: DataSpec, what: str, fix: str = "") -> ValueError:
    """``ValueError("`model.<argument>`=<value> does not fit `data`: <source> yields <what>. <fix>")``."""
    return ValueError(f"`model.{argument}`={value!r} does not fit `data`: {spec.source} yields {what}."
                      + (f" {fix}" if fix else ""))


def check_fits_data(module: Any, trainer: Any = None) -> None:
    """Call ``module.check_data(spec)`` with the spec of the trainer's datamodule (``module``'s own trainer by
    default); nothing happens without a datamodule that has a ``data_spec`` (e.g. plain dataloaders)."""
    trainer = trainer if trainer is not None else getattr(module, "_trainer", None)
    spec = datamodule_spec(trainer)
    if spec is not None and callable(getattr(module, "check_data", None)):
        module.check_data(spec)


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (torch < 2.4 takes no device type: CPU has its own function)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:
        return bool(torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled())


def check_input_dtype(owner: str, x: Any, dtype: torch.dtype) -> None:
    """Raise a ``ValueError`` naming ``owner`` (e.g. ``"MLPClassifier"``) unless the tensor ``x`` has ``dtype``, the
    parameters' (other inputs pass: the network says what it takes). A float64 feature matrix (numpy's default, e.g.
    ``torch.from_numpy`` of scikit-learn's arrays) ended in torch's "mat1 and mat2 must have the same dtype" in
    training, test and predict alike. Refused, not cast, as the anomaly detectors refuse it: a cast would hide
    that the 64-bit values are computed in 32 bits. Lightning's true-precision settings (``"64-true"``,
    ``"16-true"``, ...) convert the inputs to the parameters' dtype before this; autocast keeps float32 parameters
    and computes in its own lower precision, so under it (``"16-mixed"``, ``"bf16-mixed"``) float16 and bfloat16
    inputs pass too (float64 ones it leaves uncast, and the layers refuse them)."""
    if not isinstance(x, Tensor) or x.dtype == dtype:
        return
    if x.is_floating_point() and x.dtype != torch.float64 and _autocast_enabled(x.device.type):
        return  # autocast casts them for each layer: half-precision data under "bf16-mixed" trained before the check
    if x.is_floating_point():
        numpy_default = " (numpy's default)" if x.dtype == torch.float64 else ""
        precision = ', or train in 64 bits: `Trainer(precision="64-true")`' if x.dtype == torch.float64 else ""
        raise ValueError(f"{owner} expects inputs of dtype {dtype}, its parameters' dtype, got {x.dtype}"
                         f"{numpy_default}: convert them, e.g. `torch.as_tensor(features, dtype={dtype})` or "
                         f"`x.to({dtype})`{precision}.")
    raise ValueError(f"{owner} expects floating-point inputs of dtype {dtype}, its parameters' dtype, got {x.dtype}: "
                     f"convert them, e.g. `x.to({dtype})` (8-bit images: `x.to({dtype}) / 255`).")


def check_eval_labels(owner: str, stage: str, target: Any, num_samples: int, num_classes: int) -> None:
    """Raise unless a ``stage`` (``"validation"``, ``"test"``) batch of ``num_samples`` samples holds one integer
    class label in ``0 .. num_classes - 1`` per sample. The training batches are checked by
    :func:`check_first_batch`; evaluation batches were not: a label of -1 stopped validation in torch's
    "IndexError: Target -1 is out of bounds", and float, out-of-range or one-hot targets gave a test accuracy without
    a word. One ``aminmax`` per batch (torchmetrics' own checks of the batch synchronise already)."""
    where = f"{owner}'s {stage} targets"
    if not isinstance(target, Tensor):
        raise TypeError(f"{where} must be a tensor of class labels, got {type(target).__name__}.")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        kind = ("float regression targets? A classifier needs class labels; for regression use MLPRegressor"
                if target.is_floating_point() else "convert them")
        raise ValueError(f"{where} must be integer class labels 0 .. {num_classes - 1}, got dtype {target.dtype} "
                         f"({kind}; labels stored as floats: `y.long()`).")
    if tuple(target.shape) != (num_samples,):
        raise ValueError(f"{where} must be one class label per sample (shape [{num_samples}]), got shape "
                         f"{list(target.shape)}; for one-hot rows, pass their `.argmax(1)`.")
    if target.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(target))
    if low < 0 or high >= num_classes:
        raise ValueError(f"{where} must be class labels in 0 .. {num_classes - 1} (`num_classes`={num_classes}), got "
                         f"{low if low < 0 else high}. Map the labels to that range (or raise `num_classes`).")


def check_eval_targets(owner: str, stage: str, target: Any, num_samples: int, width: int,
                       argument: str | None = "out_features") -> None:
    """Raise unless a ``stage`` batch of ``num_samples`` samples holds ``width`` regression target values per sample
    (any shape of ``num_samples × width`` values: ``[B]`` and ``[B, 1]`` alike for one). A test batch of two targets
    per sample for one ended in torch's "shape '[8, 1]' is invalid for input of size 16"."""
    where = f"{owner}'s {stage} targets"
    if not isinstance(target, Tensor):
        raise TypeError(f"{where} must be a tensor of regression targets, got {type(target).__name__}.")
    if target.ndim == 0 or target.shape[0] != num_samples or target.numel() != num_samples * width:
        values = target[0].numel() if target.ndim > 0 and target.shape[0] == num_samples else None
        got = (f"{values} value(s) per sample (shape {list(target.shape)})" if values is not None else
               f"shape {list(target.shape)} for {num_samples} samples")
        fix = f" Set `model.{argument}` to {values}, or pass the model's targets." if argument and values else ""
        what = f"`{argument}`={width}" if argument else str(width)
        raise ValueError(f"{where} must hold {what} value(s) per sample, got {got}.{fix}")
