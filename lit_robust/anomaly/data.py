r"""Anomaly-detection datamodules whose *training* data is contaminated, with the flags kept for metrics.

Every training sample is ``(index, x, is_anomaly, is_anomaly)`` (an :class:`~lit_robust.IndexedDataset`
whose target and ground-truth flag are both the anomaly label — no detector reads them in training; the
flag feeds metrics such as ``filter/dropped_corrupted_frac``). Test samples are ``(index, x, is_anomaly)``:
``test_step`` of the detectors computes ROC-AUC from them. There is no validation split (unsupervised AD
has no clean data to validate on). ``predict_dataloader()`` (``lit-robust predict``) is the test split in a fixed
order, so each anomaly score comes with its test sample's ``is_anomaly`` as the target; to score the contaminated
*training* samples, use ``model.score_dataset(datamodule.scoring_dataloader())``.

* :class:`TwoMoonsAnomalyDataModule` — thesis §3.5.1: two moons with a fraction of uniform or clustered
  anomalies.
* :class:`OneClassMNISTDataModule` / :class:`OneClassFashionMNISTDataModule` — one class is normal, the
  other classes supply the contamination; the test split is the whole (clean-labelled) test set, the
  normal class against all others. Optional PCA features fitted on the contaminated training set
  (the thesis reduces CIFAR-10 features with PCA, §3.5.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lit_robust._backend import pl, rank_zero_warn
from lit_robust._checks import check_bool, check_int, check_number, check_seed
from lit_robust.anomaly.base import check_ratio
from lit_robust.data.base import SplitLoaders, built_already, check_root, remember_settings, torchvision_split
from lit_robust.data.indexed import IndexedDataset

__all__ = [
    "AnomalyDataModule",
    "TwoMoonsAnomalyDataModule",
    "OneClassMNISTDataModule",
    "OneClassFashionMNISTDataModule",
    "anomaly_count",
    "two_moons",
    "pca_features",
]


def anomaly_count(n_normal: int, contamination: float) -> int:
    r"""Anomalies to add to ``n_normal`` normal samples so that they are a ``contamination`` share of the total.

    :math:`a = \mathrm{round}(n\,c/(1-c))`.

    >>> anomaly_count(900, 0.1), anomaly_count(1000, 0.05), anomaly_count(10, 0.0)
    (100, 53, 0)
    """
    return int(round(n_normal * contamination / (1.0 - contamination)))


def two_moons(n_normal: int, n_anomalies: int, anomalies: Literal["uniform", "clustered"], noise: float,
              generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two interleaving half circles (as scikit-learn's ``make_moons``) plus anomalies; returns ``(x, is_anomaly)``.

    Uniform anomalies fill the box [-1.5, 2.5] x [-1.0, 1.5]; clustered ones are N((-0.5, -0.5), 0.05² I),
    off both moons (thesis Fig. 3.3 uses a concentrated Gaussian).
    """
    n_out = n_normal // 2
    theta_a = math.pi * torch.rand(n_out, generator=generator)
    theta_b = math.pi * torch.rand(n_normal - n_out, generator=generator)
    upper = torch.stack([torch.cos(theta_a), torch.sin(theta_a)], 1)
    lower = torch.stack([1 - torch.cos(theta_b), 0.5 - torch.sin(theta_b)], 1)
    normal = torch.cat([upper, lower]) + noise * torch.randn(n_normal, 2, generator=generator)
    if anomalies == "uniform":
        low, high = torch.tensor([-1.5, -1.0]), torch.tensor([2.5, 1.5])
        out = low + (high - low) * torch.rand(n_anomalies, 2, generator=generator)
    else:
        out = torch.tensor([-0.5, -0.5]) + 0.05 * torch.randn(n_anomalies, 2, generator=generator)
    x = torch.cat([normal, out])
    flag = torch.cat([torch.zeros(n_normal, dtype=torch.bool), torch.ones(n_anomalies, dtype=torch.bool)])
    perm = torch.randperm(len(x), generator=generator)
    return x[perm].float(), flag[perm]


def pca_features(train: Tensor, others: list[Tensor], n_components: int) -> tuple[Tensor, list[Tensor]]:
    """Project on the top ``n_components`` principal axes of ``train`` and whiten with ``train``'s statistics."""
    mean = train.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(train - mean, full_matrices=False)
    axes = vh[:n_components].t()
    scale = (s[:n_components] / math.sqrt(max(len(train) - 1, 1))).clamp_min(1e-6)

    def proj(x: Tensor) -> Tensor:
        return (x - mean) @ axes / scale

    return proj(train), [proj(o) for o in others]


def _warn_no_anomalies(contamination: float, n_anomalies: int, n: int) -> None:
    if contamination > 0 and n_anomalies == 0:
        rank_zero_warn(f"`contamination`={contamination} adds no anomaly to {n} training samples (it rounds to 0); "
                       "the training set is clean. Raise `contamination` or the number of samples.")


class AnomalyDataModule(SplitLoaders, pl.LightningDataModule):
    """Base: subclasses implement :meth:`build` returning ``(x_train, is_anomaly_train, x_test, is_anomaly_test)``.

    Args:
        batch_size: training batch size.
        eval_batch_size: batch size of the validation, test and prediction loaders.
        num_workers: DataLoader worker processes (0: load in the main process).
        seed: the random draws of the data (samples, anomalies, subsets).
        drop_last: drop the last, smaller training batch of each epoch.
    """

    target_kind = "anomaly"
    #: the attributes :meth:`build` reads (a change after `setup` is warned about, `built_already`)
    _settings: tuple[str, ...] = ("seed",)

    def __init__(self, batch_size: int = 128, eval_batch_size: int = 1000, num_workers: int = 0, seed: int = 0,
                 drop_last: bool = False) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1)
        check_int("num_workers", num_workers, 0)
        check_seed("seed", seed)
        check_bool("drop_last", drop_last)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed, self.drop_last = num_workers, seed, drop_last
        self.train_set: IndexedDataset | None = None
        self.test_set: IndexedDataset | None = None

    def build(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if built_already(self):  # built once; a setting changed since is warned about
            return
        x, flag, x_test, flag_test = self.build()
        self.x_train, self.train_is_anomaly = x, flag.bool()
        self.x_test, self.test_is_anomaly = x_test, flag_test.bool()
        self.train_set = IndexedDataset(TensorDataset(x, flag.long()), corrupted=flag.bool())
        self.test_set = IndexedDataset(TensorDataset(x_test, flag_test.long()))
        remember_settings(self, self._settings)

    @property
    def dim(self) -> int:
        """Feature dimension (after :meth:`setup`)."""
        assert self.train_set is not None, "call setup() first"
        return int(self.x_train[0].numel())


class TwoMoonsAnomalyDataModule(AnomalyDataModule):
    r"""Two moons with uniform or clustered anomalies (thesis §3.5.1, Figures 3.2–3.3).

    Args:
        n_train: training samples in total, of which a ``contamination`` share are anomalies.
        contamination: anomaly share of the training set, in [0, 0.5).
        anomalies: ``"uniform"`` (a box around the moons) or ``"clustered"`` (one tight Gaussian).
        noise: standard deviation of the Gaussian noise on the moons.
        n_test: test samples, a ``test_anomaly_ratio`` share of them anomalies from the same distribution.
        test_anomaly_ratio: the anomaly share of the test set, in (0, 1) (default 0.5); ROC-AUC needs both kinds.
    """

    _settings = (*AnomalyDataModule._settings, "n_train", "contamination", "anomalies", "noise", "n_test",
                 "test_anomaly_ratio")

    def __init__(self, n_train: int = 2000, contamination: float = 0.05,
                 anomalies: Literal["uniform", "clustered"] = "uniform", noise: float = 0.1, n_test: int = 2000,
                 test_anomaly_ratio: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        check_int("n_train", n_train, 2)
        check_int("n_test", n_test, 2)
        self.contamination = check_ratio("contamination", contamination)
        if anomalies not in ("uniform", "clustered"):
            raise ValueError(f"`anomalies` must be 'uniform' or 'clustered', got {anomalies!r}.")
        check_number("test_anomaly_ratio", test_anomaly_ratio, 0, 1, low_open=True, high_open=True)
        t_anom = int(round(test_anomaly_ratio * n_test))
        if not 0 < t_anom < n_test:  # ROC-AUC needs both kinds in the test split
            raise ValueError(f"`test_anomaly_ratio`={test_anomaly_ratio!r} of `n_test`={n_test} gives {t_anom} test "
                             "anomalies; ROC-AUC needs between 1 and n_test - 1 of them. Raise `n_test` or move the "
                             "ratio away from 0 and 1.")
        check_number("noise", noise, 0)
        self.n_train, self.anomalies, self.noise = n_train, anomalies, noise
        self.n_test, self.test_anomaly_ratio = n_test, test_anomaly_ratio

    def build(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        n_anom = int(round(self.contamination * self.n_train))
        _warn_no_anomalies(self.contamination, n_anom, self.n_train)
        x, flag = two_moons(self.n_train - n_anom, n_anom, self.anomalies, self.noise, g)
        t_anom = int(round(self.test_anomaly_ratio * self.n_test))
        x_test, flag_test = two_moons(self.n_test - t_anom, t_anom, self.anomalies, self.noise, g)
        return x, flag, x_test, flag_test


class OneClassMNISTDataModule(AnomalyDataModule):
    r"""One-class MNIST: ``normal_class`` is normal; the other digits contaminate the training set.

    Training set: every training image of ``normal_class`` (at most ``max_normal``, drawn with ``seed``) plus
    :func:`anomaly_count` images drawn uniformly from ``anomaly_classes`` (default: all other classes), so
    that anomalies are a ``contamination`` share. Test set: every test image, anomalous unless of
    ``normal_class``. Pixels are scaled to [0, 1] and flattened; with ``pca_dim`` they are projected on the
    training set's principal axes and whitened (fitted on the contaminated training set — no labels used).

    Args:
        root: torchvision root holding ``MNIST/raw`` (e.g. ``../shared/data``); ``download=True`` needs internet.
        normal_class: the normal digit, 0–9.
        contamination: anomaly share of the training set, in [0, 0.5).
        anomaly_classes: the classes the training anomalies are drawn from; ``None`` (default): every class but
            ``normal_class``. The test set's anomalies are every other class regardless.
        max_normal: at most this many normal training images (seeded draw); ``None`` (default): all of them.
        pca_dim: number of PCA features, or ``None`` for the 784 pixels; at most the training images less one.
        test_size: at most this many test images (seeded draw), ``None`` = all; the draw must hold normal and
            anomalous images (ROC-AUC needs both), else ``setup`` says so.
        download: download the data set into ``root`` if it is missing (needs internet; default off).
    """

    _name = "MNIST"
    _settings = (*AnomalyDataModule._settings, "root", "normal_class", "contamination", "anomaly_classes",
                 "max_normal", "pca_dim", "test_size")

    def __init__(self, root: str = "data", normal_class: int = 0, contamination: float = 0.1,
                 anomaly_classes: list[int] | None = None, max_normal: int | None = None, pca_dim: int | None = None,
                 test_size: int | None = None, download: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(normal_class, bool) or not isinstance(normal_class, int) or not 0 <= normal_class <= 9:
            raise ValueError(f"`normal_class` must be an integer in [0, 9], got {normal_class!r}.")
        self.contamination = check_ratio("contamination", contamination)
        others = [c for c in range(10) if c != normal_class]
        if anomaly_classes is not None:
            if isinstance(anomaly_classes, (str, bytes)) or not isinstance(anomaly_classes, Sequence):
                raise ValueError(f"`anomaly_classes` must be a non-empty list of classes in {others} (not the normal "
                                 f"class), got {anomaly_classes!r} (a single {type(anomaly_classes).__name__}); "
                                 f"e.g. [{anomaly_classes!r}].")
            bad = [c for c in anomaly_classes if c not in others]
            if not anomaly_classes or bad:
                raise ValueError(f"`anomaly_classes` must be a non-empty list of classes in {others} "
                                 f"(not the normal class), got {anomaly_classes!r}.")
            others = sorted(set(anomaly_classes))
        check_int("max_normal", max_normal, 1, optional=True)
        check_int("pca_dim", pca_dim, 1, 784, optional=True)
        check_int("test_size", test_size, 2, optional=True)
        check_root(root, self._name)
        self.root, self.download = root, check_bool("download", download)
        self.normal_class, self.anomaly_classes = normal_class, others
        self.max_normal, self.pca_dim, self.test_size = max_normal, pca_dim, test_size

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                torchvision_split(self._name, self.root, train, download=True)

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        train = torchvision_split(self._name, self.root, True, self.download)
        test = torchvision_split(self._name, self.root, False, self.download)
        return train.data, train.targets, test.data, test.targets

    def build(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        images, labels, test_images, test_labels = self._load()
        g = torch.Generator().manual_seed(self.seed)
        normal = torch.nonzero(labels == self.normal_class).flatten()
        normal = normal[torch.randperm(len(normal), generator=g)]
        if self.max_normal is not None:
            normal = normal[: self.max_normal]
        pool = torch.nonzero(torch.isin(labels, torch.tensor(self.anomaly_classes))).flatten()
        n_anom = anomaly_count(len(normal), self.contamination)
        _warn_no_anomalies(self.contamination, n_anom, len(normal))
        if n_anom > len(pool):
            raise ValueError(f"`contamination`={self.contamination} needs {n_anom} anomalies, but the anomaly classes "
                             f"hold {len(pool)} training images.")
        anom = pool[torch.randperm(len(pool), generator=g)[:n_anom]]
        chosen = torch.cat([normal, anom])
        flag = torch.cat([torch.zeros(len(normal), dtype=torch.bool), torch.ones(n_anom, dtype=torch.bool)])
        perm = torch.randperm(len(chosen), generator=g)
        chosen, flag = chosen[perm], flag[perm]
        test_idx = torch.arange(len(test_labels))
        if self.test_size is not None and self.test_size < len(test_idx):
            test_idx = torch.randperm(len(test_idx), generator=g)[: self.test_size].sort().values
        test_flag = test_labels[test_idx] != self.normal_class
        if bool(test_flag.all()) or not bool(test_flag.any()):  # else the fit ran, and `test` failed at its end
            missing = f"normal (class {self.normal_class})" if bool(test_flag.all()) else "anomalous"
            raise ValueError(f"`test_size`={self.test_size} draws no {missing} test image of the {len(test_labels)} "
                             f"(with `seed`={self.seed}): the test ROC-AUC needs both kinds. Raise `test_size` (None: "
                             "the whole test set) or pick another `seed`.")
        x = images[chosen].flatten(1).float() / 255.0
        x_test = test_images[test_idx].flatten(1).float() / 255.0
        if self.pca_dim is not None:
            if self.pca_dim > len(x) - 1:  # pca_features would silently give fewer features than asked for
                raise ValueError(f"`pca_dim` must be at most {len(x) - 1}, one less than the {len(x)} training images "
                                 f"(their centred pixels span no more directions), got {self.pca_dim}. Lower `pca_dim`"
                                 " or raise `max_normal`.")
            x, (x_test,) = pca_features(x, [x_test], self.pca_dim)
        return x, flag, x_test, test_flag


class OneClassFashionMNISTDataModule(OneClassMNISTDataModule):
    """One-class FashionMNIST (offline copy: 6,000 training images per class); see :class:`OneClassMNISTDataModule`."""

    _name = "FashionMNIST"
