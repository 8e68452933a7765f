"""LightningDataModules with seeded corruption and ground-truth masks.

Every split is an :class:`~lit_robust.data.IndexedDataset`. The training *and* validation splits
carry the same corruption (the papers assume no clean data anywhere); only the test split is clean.
Each module also offers ``scoring_dataloader()``: the training set in a fixed order with the
evaluation transform, which :class:`~lit_robust.ITLM` uses for its round scoring pass.
"""

from __future__ import annotations

import os
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lit_robust.data.corruption import NoiseKind, corrupt_labels
from lit_robust.data.indexed import IndexedDataset

__all__ = [
    "CorruptedClassificationDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "DigitsDataModule",
    "SyntheticRegressionDataModule",
]


def _check_ratio(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not low <= value <= high:
        raise ValueError(f"`{name}` must be in [{low}, {high}], got {value!r}.")


class CorruptedClassificationDataModule(pl.LightningDataModule):
    """Base class: in-memory tensors, label corruption, a noisy validation split, a clean test split.

    Subclasses implement :meth:`load` returning ``(x_train, y_train, x_test, y_test)``.

    Args:
        clean_ratio: fraction of training (and validation) labels left intact.
        noise: ``"random"`` or ``"systematic"`` label errors (ITLM paper §6.2).
        train_size: number of training samples drawn (seeded) from the training pool; ``None`` = all
            that remain after the validation split.
        val_size: number of validation samples (same corruption as training), ``0`` for none.
        batch_size: training batch size; evaluation loaders use ``eval_batch_size``.
        seed: seeds the subsample, the split and the corruption.
    """

    num_classes: int = 10

    def __init__(
        self,
        clean_ratio: float = 1.0,
        noise: NoiseKind = "random",
        train_size: int | None = None,
        val_size: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_ratio("clean_ratio", clean_ratio)
        if noise not in ("random", "systematic"):
            raise ValueError(f"`noise` must be 'random' or 'systematic', got {noise!r}.")
        if train_size is not None and train_size < 1:
            raise ValueError(f"`train_size` must be >= 1 or None, got {train_size}.")
        if val_size < 0:
            raise ValueError(f"`val_size` must be >= 0, got {val_size}.")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"`batch_size` and `eval_batch_size` must be >= 1, got {batch_size}, {eval_batch_size}.")
        self.clean_ratio = clean_ratio
        self.noise = noise
        self.train_size = train_size
        self.val_size = val_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: IndexedDataset | None = None
        self.val_set: IndexedDataset | None = None
        self.test_set: IndexedDataset | None = None

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y, x_test, y_test = self.load()
        n = len(y)
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(n, generator=g)
        n_train = self.train_size if self.train_size is not None else n - self.val_size
        if n_train + self.val_size > n:
            raise ValueError(
                f"`train_size` + `val_size` must be <= {n} (the training pool), got {n_train} + {self.val_size}."
            )
        pool = perm[: n_train + self.val_size]
        x, y = x[pool], y[pool]
        noisy, mask = corrupt_labels(y, self.clean_ratio, self.noise, self.num_classes, seed=self.seed + 1)
        tr, va = slice(0, n_train), slice(n_train, n_train + self.val_size)
        self.clean_train_targets = y[tr]
        self.train_set = IndexedDataset(TensorDataset(x[tr], y[tr]), targets=noisy[tr], corrupted=mask[tr])
        if self.val_size:
            self.val_set = IndexedDataset(TensorDataset(x[va], y[va]), targets=noisy[va], corrupted=mask[va])
        self.test_set = IndexedDataset(TensorDataset(x_test, y_test))

    def _loader(self, ds: IndexedDataset, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, True, self.batch_size)

    def scoring_dataloader(self) -> DataLoader:
        """The whole training set, fixed order, evaluation transform (for round scoring passes)."""
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, False, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, False, self.eval_batch_size) if self.val_set is not None else []

    def test_dataloader(self) -> DataLoader:
        assert self.test_set is not None, "call setup() first"
        return self._loader(self.test_set, False, self.eval_batch_size)


def _normalised(images: Tensor, mean: float, std: float) -> Tensor:
    return ((images.float() / 255.0 - mean) / std).unsqueeze(1)


class MNISTDataModule(CorruptedClassificationDataModule):
    """MNIST through torchvision (``root`` in torchvision's layout; ``download=True`` needs internet).

    The offline copy in ``../shared/data`` holds 6,000 training and 4,000 test digits.
    """

    _mean, _std = 0.1307, 0.3081

    def __init__(self, root: str = "data", download: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = download

    def _dataset_cls(self):
        from torchvision.datasets import MNIST

        return MNIST

    def prepare_data(self) -> None:
        if self.download:
            cls = self._dataset_cls()
            cls(self.root, train=True, download=True)
            cls(self.root, train=False, download=True)

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cls = self._dataset_cls()
        root = os.path.expanduser(self.root)
        try:
            train = cls(root, train=True, download=self.download)
            test = cls(root, train=False, download=self.download)
        except RuntimeError as err:
            raise RuntimeError(
                f"{cls.__name__} not found under `root`={self.root!r} ({err}). Point `root` at a folder holding "
                f"{cls.__name__}/raw (e.g. ../shared/data) or pass `download=True`."
            ) from err
        return (_normalised(train.data, self._mean, self._std), train.targets.long(),
                _normalised(test.data, self._mean, self._std), test.targets.long())


class FashionMNISTDataModule(MNISTDataModule):
    """FashionMNIST through torchvision (offline copy: 60,000 training / 10,000 test images)."""

    _mean, _std = 0.2860, 0.3530

    def _dataset_cls(self):
        from torchvision.datasets import FashionMNIST

        return FashionMNIST


class DigitsDataModule(CorruptedClassificationDataModule):
    """scikit-learn's bundled 8×8 digits (1,797 images, no download); ``test_size`` are held out clean."""

    def __init__(self, test_size: int = 497, **kwargs) -> None:
        kwargs.setdefault("batch_size", 64)
        super().__init__(**kwargs)
        if test_size < 1:
            raise ValueError(f"`test_size` must be >= 1, got {test_size}.")
        self.test_size = test_size

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        x = (x - 0.3) / 0.4
        y = torch.tensor(d.target, dtype=torch.long)
        if self.test_size >= len(y):
            raise ValueError(f"`test_size` must be < {len(y)}, got {self.test_size}.")
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(12345))  # fixed test split
        te, tr = perm[: self.test_size], perm[self.test_size:]
        return x[tr], y[tr], x[te], y[te]


class SyntheticRegressionDataModule(pl.LightningDataModule):
    """Linear regression with bad outputs (ITLM paper §6.1, eq. 1).

    Clean samples: ``y = xᵀθ* + e``; bad samples (a fraction ``1 - clean_ratio``):
    ``"random"`` — ``y = r + e`` with ``r ~ N(0, ‖θ*‖²)``; ``"mixture"`` — ``y = xᵀθ₂ + e`` for a second
    ground truth ``θ₂``. ``x ~ N(0, I_d)``, ``e ~ N(0, σ²)``, ``θ* ~ N(0, I_d)``.
    """

    def __init__(
        self,
        n: int = 1000,
        dim: int = 100,
        clean_ratio: float = 0.7,
        bad: Literal["random", "mixture"] = "random",
        noise_std: float = 0.1,
        n_test: int = 1000,
        batch_size: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_ratio("clean_ratio", clean_ratio)
        if bad not in ("random", "mixture"):
            raise ValueError(f"`bad` must be 'random' or 'mixture', got {bad!r}.")
        if n < 1 or dim < 1 or n_test < 1:
            raise ValueError(f"`n`, `dim` and `n_test` must be >= 1, got {n}, {dim}, {n_test}.")
        if noise_std < 0:
            raise ValueError(f"`noise_std` must be >= 0, got {noise_std}.")
        self.n, self.dim, self.clean_ratio, self.bad = n, dim, clean_ratio, bad
        self.noise_std, self.n_test, self.batch_size, self.seed = noise_std, n_test, batch_size, seed
        self.train_set: IndexedDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        g = torch.Generator().manual_seed(self.seed)
        d = self.dim
        self.theta = torch.randn(d, generator=g)
        x = torch.randn(self.n, d, generator=g)
        y = x @ self.theta + self.noise_std * torch.randn(self.n, generator=g)
        n_bad = int(round((1 - self.clean_ratio) * self.n))
        mask = torch.zeros(self.n, dtype=torch.bool)
        mask[torch.randperm(self.n, generator=g)[:n_bad]] = True
        if self.bad == "random":
            r = self.theta.norm() * torch.randn(self.n, generator=g)
        else:
            r = x @ torch.randn(d, generator=g)
        y = torch.where(mask, r + self.noise_std * torch.randn(self.n, generator=g), y)
        self.train_set = IndexedDataset(TensorDataset(x, y.unsqueeze(1)), corrupted=mask)
        x_test = torch.randn(self.n_test, d, generator=g)
        self.test_set = IndexedDataset(TensorDataset(x_test, (x_test @ self.theta).unsqueeze(1)))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def scoring_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=1000, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=1000, shuffle=False)
