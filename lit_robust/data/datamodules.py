"""LightningDataModules with seeded corruption and ground-truth masks.

Every split is an :class:`~lit_robust.data.IndexedDataset`. The training *and* validation splits
carry the same corruption (the papers assume no clean data anywhere); only the test split is clean.
Each module also offers ``scoring_dataloader()``: the training set in a fixed order with the
evaluation transform, which :class:`~lit_robust.ITLM` uses for its round scoring pass, and
``predict_dataloader()``: the clean test split in a fixed order (what ``lit-robust predict`` predicts).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lit_robust._backend import pl
from lit_robust._checks import check_bool, check_int, check_number, check_seed
from lit_robust.data.base import SplitLoaders, built_already, check_root, remember_settings, torchvision_split
from lit_robust.data.corruption import TARGET_CORRUPTIONS, NoiseKind, TargetCorruption, corrupt_labels, corrupt_targets
from lit_robust.data.indexed import IndexedDataset
from lit_robust.data.spec import DataSpec, dataset_spec
from lit_robust.selection.rules import percent_hint

__all__ = [
    "CorruptedClassificationDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "DigitsDataModule",
    "SyntheticRegressionDataModule",
    "CorruptedRegressionDataModule",
    "MNISTLandmarksDataModule",
    "DiabetesDataModule",
    "SyntheticLinearDataModule",
    "ink_landmarks",
]


def _check_ratio(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"`{name}` must be in [{low}, {high}], got {value!r}."
                         + (percent_hint(name, value) if high == 1.0 else ""))


def _check_test_size(test_size: int) -> int:
    return check_int("test_size", test_size, 1)


def _fixed_test_split(x: Tensor, y: Tensor, test_size: int) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """``((x_train, y_train, x_test, y_test), rows)`` with ``test_size`` samples held out by a fixed permutation;
    ``rows[i]`` is the row of ``x`` that training-pool sample ``i`` is (what ``source_index`` composes with)."""
    if test_size >= len(y):
        raise ValueError(f"`test_size` must be < {len(y)}, got {test_size}.")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(12345))
    te, tr = perm[:test_size], perm[test_size:]
    return (x[tr], y[tr], x[te], y[te]), tr


class _InMemorySplits(SplitLoaders, pl.LightningDataModule):
    """In-memory train (corrupted) / validation (corrupted alike) / test (clean) splits and their loaders.

    Subclasses implement :meth:`load` returning ``(x_train, y_train, x_test, y_test)`` and :meth:`_corrupt`.
    """

    #: the attributes `setup` builds the splits from (a change after it is warned about, `built_already`)
    _settings: tuple[str, ...] = ("train_size", "val_size", "seed")

    def __init__(self, train_size: int | None, val_size: int, batch_size: int, eval_batch_size: int,
                 num_workers: int, seed: int) -> None:
        super().__init__()
        check_int("train_size", train_size, 1, optional=True)
        check_int("val_size", val_size, 0)
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1)
        check_int("num_workers", num_workers, 0)
        check_seed("seed", seed)  # the corruption draws with seed + 1
        self.train_size, self.val_size = train_size, val_size
        self.batch_size, self.eval_batch_size, self.num_workers, self.seed = batch_size, eval_batch_size, num_workers, seed
        self.train_set: IndexedDataset | None = None
        self.val_set: IndexedDataset | None = None
        self.test_set: IndexedDataset | None = None
        #: after ``setup``: ``train_set[i]`` is sample ``train_source_index[i]`` of the data set the module read
        #: (e.g. ``torchvision.datasets.FashionMNIST(root, train=True)``, or ``load_digits()``'s rows); the per-sample
        #: reports add it as the column ``source_index``. The test split keeps that data set's order (Digits and
        #: Diabetes: their fixed test split's).
        self.train_source_index: Tensor | None = None
        self.val_source_index: Tensor | None = None
        #: the data set's row of each training-pool sample ``load`` returns, where ``load`` held a test split out of
        #: it (``None``: the pool is the data set, row for row)
        self._pool_rows: Tensor | None = None

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _pool(self, n: int) -> tuple[Tensor, int]:
        """The seeded training pool (training then validation samples) and the number of training samples."""
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        if self.train_size is None and self.val_size >= n:
            raise ValueError(f"`val_size` must be < {n} (the training pool) so that training samples remain, got "
                             f"{self.val_size}.")
        n_train = self.train_size if self.train_size is not None else n - self.val_size
        if n_train + self.val_size > n:
            raise ValueError(
                f"`train_size` + `val_size` must be <= {n} (the training pool), got {n_train} + {self.val_size}."
            )
        # where each training / validation sample sits in the data set `load` read (the reports' `source_index`):
        # through the rows the pool came from, else a Digits row would name another digit of load_digits()
        rows = perm if self._pool_rows is None else self._pool_rows[perm]
        self.train_source_index = rows[:n_train].clone()
        self.val_source_index = rows[n_train: n_train + self.val_size].clone()
        return perm[: n_train + self.val_size], n_train

    def _make_splits(self, x: Tensor, y: Tensor, noisy: Tensor, mask: Tensor, n_train: int, x_test: Tensor,
                     y_test: Tensor, labels: bool) -> None:
        tr, va = slice(0, n_train), slice(n_train, n_train + self.val_size)
        self.clean_train_targets = y[tr]

        def split(s: slice) -> IndexedDataset:
            if labels:  # the clean labels stay in the wrapped dataset; the noisy ones are the targets
                return IndexedDataset(TensorDataset(x[s], y[s]), targets=noisy[s], corrupted=mask[s])
            return IndexedDataset(TensorDataset(x[s], noisy[s]), corrupted=mask[s])

        self.train_set = split(tr)
        if self.val_size:
            self.val_set = split(va)
        self.test_set = IndexedDataset(TensorDataset(x_test, y_test))
        remember_settings(self, self._settings)


class CorruptedClassificationDataModule(_InMemorySplits):
    """Base class: in-memory tensors, label corruption, a noisy validation split, a clean test split.

    Subclasses implement :meth:`load` returning ``(x_train, y_train, x_test, y_test)``.

    Args:
        clean_ratio: fraction of labels left intact, counted exactly over the training and validation samples
            together: with ``val_size > 0`` each split holds its share up to the random draw (a reviewer's MNIST,
            0.6 over 300 + 100: 126 and 34 wrong labels for 120 and 40). ``is_corrupted`` gives each split's own.
        noise: ``"random"`` or ``"systematic"`` label errors (ITLM paper §6.2).
        train_size: number of training samples drawn (seeded) from the training pool; ``None`` = all
            that remain after the validation split.
        val_size: number of validation samples (same corruption as training), ``0`` for none.
        batch_size: training batch size; evaluation loaders use ``eval_batch_size``.
        eval_batch_size: batch size of the validation, test, prediction and scoring loaders.
        num_workers: ``DataLoader`` worker processes (persistent when > 0; their base seeds come from a generator of
            the loader's own, so a resumed fit draws what an uninterrupted one does).
        seed: seeds the subsample, the split and the corruption.

    The default ``clean_ratio=1.0`` corrupts nothing: pass e.g. ``clean_ratio=0.7`` for 30 % wrong labels.
    """

    _settings = (*_InMemorySplits._settings, "clean_ratio", "noise")

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
        super().__init__(train_size, val_size, batch_size, eval_batch_size, num_workers, seed)
        _check_ratio("clean_ratio", clean_ratio)
        if noise not in ("random", "systematic"):
            raise ValueError(f"`noise` must be 'random' or 'systematic', got {noise!r}.")
        self.clean_ratio = clean_ratio
        self.noise = noise

    def setup(self, stage: str | None = None) -> None:
        if built_already(self):  # built once; a setting changed since is warned about
            return
        x, y, x_test, y_test = self.load()
        pool, n_train = self._pool(len(y))
        x, y = x[pool], y[pool]
        noisy, mask = corrupt_labels(y, self.clean_ratio, self.noise, self.num_classes, seed=self.seed + 1)
        self._make_splits(x, y, noisy, mask, n_train, x_test, y_test, labels=True)


def _normalised(images: Tensor, mean: float, std: float) -> Tensor:
    return ((images.float() / 255.0 - mean) / std).unsqueeze(1)


class MNISTDataModule(CorruptedClassificationDataModule):
    """MNIST through torchvision (``root`` in torchvision's layout; ``download=True`` needs internet).

    The offline copy in ``../shared/data`` holds 6,000 training and 4,000 test digits. Inputs are ``[1, 28, 28]``
    float images normalised as ``(pixel / 255 - 0.1307) / 0.3081`` (every split): a model trained on them expects
    the same at serving time (a newcomer's exported model read raw ``[0, 1]`` images at 60.1 % for 77.7 %).

    Args:
        root: torchvision root holding ``MNIST/raw`` (e.g. ``../shared/data``).
        download: download the data set into ``root`` if it is missing (needs internet; default off).

    Further keyword arguments set the label corruption and the loaders (the base class
    ``CorruptedClassificationDataModule``'s): ``clean_ratio`` (fraction of labels left intact, over training and
    validation together; the default 1.0 corrupts nothing), ``noise`` (``"random"`` or ``"systematic"``),
    ``train_size``, ``val_size``, ``batch_size``, ``eval_batch_size``, ``num_workers``, ``seed``.
    """

    _settings = (*CorruptedClassificationDataModule._settings, "root")

    # `root` says where the fixed data set's files lie, not which data: a fit read from another copy is the same fit
    # (`lit-robust ... --ckpt_path last` leaves it out of the fit's signature)
    root_is_a_download_cache = True

    _name, _mean, _std = "MNIST", 0.1307, 0.3081

    def __init__(self, root: str = "data", download: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        check_root(root, self._name)
        self.root = root
        self.download = check_bool("download", download)

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                torchvision_split(self._name, self.root, train, download=True)

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        train = torchvision_split(self._name, self.root, True, self.download)
        test = torchvision_split(self._name, self.root, False, self.download)
        return (_normalised(train.data, self._mean, self._std), train.targets.long(),
                _normalised(test.data, self._mean, self._std), test.targets.long())


class FashionMNISTDataModule(MNISTDataModule):
    """FashionMNIST through torchvision (offline copy: 60,000 training / 10,000 test images).

    Inputs are normalised as ``(pixel / 255 - 0.2860) / 0.3530``; serve the model the same.

    Args:
        root: torchvision root holding ``FashionMNIST/raw`` (e.g. ``../shared/data``).
        download: download the data set into ``root`` if it is missing (needs internet; default off).

    Further keyword arguments set the label corruption and the loaders (the base class
    ``CorruptedClassificationDataModule``'s): ``clean_ratio`` (fraction of labels left intact, over training and
    validation together; the default 1.0 corrupts nothing), ``noise`` (``"random"`` or ``"systematic"``),
    ``train_size``, ``val_size``, ``batch_size``, ``eval_batch_size``, ``num_workers``, ``seed``.
    """

    _name, _mean, _std = "FashionMNIST", 0.2860, 0.3530


class DigitsDataModule(CorruptedClassificationDataModule):
    """scikit-learn's bundled 8×8 digits (1,797 images, no download); ``test_size`` are held out clean.

    Inputs are ``[1, 8, 8]`` float images scaled as ``(pixel / 16 - 0.3) / 0.4`` (-0.75 to 1.75).

    Args:
        test_size: images held out as the clean test split (a fixed split, whatever ``seed``); the rest is the
            training pool.

    Further keyword arguments set the label corruption and the loaders (the base class
    ``CorruptedClassificationDataModule``'s): ``clean_ratio`` (fraction of labels left intact, over training and
    validation together; the default 1.0 corrupts nothing), ``noise`` (``"random"`` or ``"systematic"``),
    ``train_size``, ``val_size``, ``batch_size``, ``eval_batch_size``, ``num_workers``, ``seed``.
    """

    _settings = (*CorruptedClassificationDataModule._settings, "test_size")

    def __init__(self, test_size: int = 497, **kwargs) -> None:
        kwargs.setdefault("batch_size", 64)
        super().__init__(**kwargs)
        self.test_size = _check_test_size(test_size)

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        x = (x - 0.3) / 0.4
        y = torch.tensor(d.target, dtype=torch.long)
        splits, self._pool_rows = _fixed_test_split(x, y, self.test_size)
        return splits


class SyntheticRegressionDataModule(pl.LightningDataModule):
    """Linear regression with bad outputs (ITLM paper §6.1, eq. 1).

    Clean samples: ``y = xᵀθ* + e``; bad samples (a fraction ``1 - clean_ratio``):
    ``"random"`` — ``y = r + e`` with ``r ~ N(0, ‖θ*‖²)``; ``"mixture"`` — ``y = xᵀθ₂ + e`` for a second
    ground truth ``θ₂``. ``x ~ N(0, I_d)``, ``e ~ N(0, σ²)``, ``θ* ~ N(0, I_d)``.

    Args:
        n: the number of training samples, clean and bad.
        dim: the number of input features ``d``.
        clean_ratio: fraction of training samples left clean, in [0, 1].
        bad: how the bad outputs are made: ``"random"`` or ``"mixture"`` (see above).
        noise_std: standard deviation σ of the noise ``e``.
        n_test: the number of clean test samples.
        batch_size: training batch size.
        seed: seeds the data, the ground truth and the choice of bad samples.
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
        for name, value in (("n", n), ("dim", dim), ("n_test", n_test), ("batch_size", batch_size)):
            check_int(name, value, 1)
        check_number("noise_std", noise_std, 0)
        check_seed("seed", seed)
        self.n, self.dim, self.clean_ratio, self.bad = n, dim, clean_ratio, bad
        self.noise_std, self.n_test, self.batch_size, self.seed = noise_std, n_test, batch_size, seed
        self.train_set: IndexedDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if built_already(self):  # built once; a setting changed since is warned about
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
        remember_settings(self, ("n", "dim", "clean_ratio", "bad", "noise_std", "n_test", "seed"))

    @property
    def data_spec(self) -> DataSpec | None:
        """Inputs of ``dim`` features, one float target (after :meth:`setup`)."""
        return None if self.train_set is None else dataset_spec(self.train_set, type(self).__name__, "regression")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def scoring_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=1000, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=1000, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The clean test split in a fixed order (not shuffled), as :meth:`test_dataloader`: what
        ``trainer.predict`` and ``lit-robust predict`` predict."""
        return DataLoader(self.test_set, batch_size=1000, shuffle=False)


class CorruptedRegressionDataModule(_InMemorySplits):
    r"""Base class for regression with corrupted targets (prl_paper §6; robust_dnn_thesis §4.4).

    Subclasses implement :meth:`load` returning ``(x_train, y_train, x_test, y_test)`` with targets of
    shape ``[n, q]``. Targets are standardised with the clean training pool's mean and standard deviation
    (so ``uninoise``'s :math:`U[-5, 5]` is on the papers' scale); then a fraction ``corrupt_ratio`` of the
    training and validation targets together (exactly; each split its share up to the random draw) is corrupted by
    :func:`~lit_robust.corrupt_targets`. The test split
    stays clean. Batches are ``(index, x, y[, is_corrupted])``.

    Args:
        corruption: ``"linadv"``, ``"signflip"``, ``"uninoise"``, ``"pairflip"`` or ``"mixture"``.
        corrupt_ratio: :math:`\varepsilon \in [0, 1]`, the corrupted fraction.
        train_size: training samples drawn (seeded) from the pool; ``None`` = all that remain after ``val_size``.
        val_size: a validation split with the same corruption (``0`` = none).
        batch_size: training batch size; evaluation loaders use ``eval_batch_size``.
        eval_batch_size: batch size of the validation, test, prediction and scoring loaders.
        num_workers: ``DataLoader`` worker processes (0: load in the main process).
        seed: seeds the subsample, the split and the corruption.
    """

    _settings = (*_InMemorySplits._settings, "corruption", "corrupt_ratio")

    target_kind = "regression"

    def __init__(
        self,
        corruption: TargetCorruption = "linadv",
        corrupt_ratio: float = 0.2,
        train_size: int | None = None,
        val_size: int = 0,
        batch_size: int = 512,
        eval_batch_size: int = 2000,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(train_size, val_size, batch_size, eval_batch_size, num_workers, seed)
        if corruption not in TARGET_CORRUPTIONS:
            raise ValueError(f"`corruption` must be one of {list(TARGET_CORRUPTIONS)}, got {corruption!r}.")
        _check_ratio("corrupt_ratio", corrupt_ratio)
        self.corruption, self.corrupt_ratio = corruption, corrupt_ratio

    @property
    def in_features(self) -> int:
        """Flattened input size (after :meth:`setup`)."""
        assert self.train_set is not None, "call setup() first"
        return int(self.train_set[0][1].numel())

    @property
    def out_features(self) -> int:
        """Number of target dimensions ``q`` (after :meth:`setup`)."""
        assert self.train_set is not None, "call setup() first"
        return int(self.train_set[0][2].numel())

    def setup(self, stage: str | None = None) -> None:
        if built_already(self):  # built once; a setting changed since is warned about
            return
        x, y, x_test, y_test = self.load()
        y, y_test = y.reshape(len(y), -1).float(), y_test.reshape(len(y_test), -1).float()
        pool, n_train = self._pool(len(y))
        x, y = x[pool], y[pool]
        mean = y.mean(0)
        # one pool sample has no spread (std NaN: every target NaN) and a constant column none: keep their scale
        std = y.std(0) if len(y) > 1 else torch.ones_like(mean)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        y, y_test = (y - mean) / std, (y_test - mean) / std
        self.target_mean, self.target_std = mean, std
        noisy, mask, _ = corrupt_targets(x, y, self.corrupt_ratio, self.corruption, seed=self.seed + 1)
        self._make_splits(x, y, noisy, mask, n_train, x_test, y_test, labels=False)


def ink_landmarks(images: Tensor) -> Tensor:
    """Five "landmarks" of grey images ``[n, H, W]`` (ink ≥ 0): the ink centroid ``(row, col)`` of the whole
    image and of each quadrant (top-left, top-right, bottom-left, bottom-right), in ``[0, 1]`` image
    coordinates — ``[n, 10]``. A quadrant without ink gets its centre.

    A real, offline stand-in for the CelebA landmark regression of robust_dnn_thesis §4.4.1: a smooth,
    learnable, ten-dimensional function of the pixels.
    """
    images = images.float()
    n, h, w = images.shape
    rows = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    cols = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    regions = [(slice(0, h), slice(0, w)), (slice(0, h // 2), slice(0, w // 2)), (slice(0, h // 2), slice(w // 2, w)),
               (slice(h // 2, h), slice(0, w // 2)), (slice(h // 2, h), slice(w // 2, w))]
    out = []
    for rs, cs in regions:
        ink = images[:, rs, cs]
        mass = ink.sum(dim=(1, 2))
        r, c = rows[rs], cols[cs]
        centre_r, centre_c = r.mean().expand(n), c.mean().expand(n)
        safe = mass.clamp(min=1e-12)
        cr = (ink.sum(2) * r).sum(1) / safe
        cc = (ink.sum(1) * c).sum(1) / safe
        empty = mass <= 0
        out += [torch.where(empty, centre_r, cr), torch.where(empty, centre_c, cc)]
    return torch.stack(out, dim=1)


class MNISTLandmarksDataModule(CorruptedRegressionDataModule):
    """Real offline regression: MNIST images → their ten :func:`ink_landmarks` coordinates.

    Inputs are normalised ``[1, 28, 28]`` images; targets ``[10]`` (standardised). The offline copy in
    ``../shared/data`` has 6,000 training and 4,000 test digits. All five corruptions apply.

    Args:
        root: torchvision root holding ``MNIST/raw`` (e.g. ``../shared/data``).
        download: download MNIST into ``root`` if it is missing (needs internet; default off).

    Further keyword arguments are ``CorruptedRegressionDataModule``'s: ``corruption``, ``corrupt_ratio``,
    ``train_size``, ``val_size``, ``batch_size``, ``eval_batch_size``, ``num_workers``, ``seed``.
    """

    _settings = (*CorruptedRegressionDataModule._settings, "root")

    # `root` says where the fixed data set's files lie, not which data: a fit read from another copy is the same fit
    # (`lit-robust ... --ckpt_path last` leaves it out of the fit's signature)
    root_is_a_download_cache = True

    def __init__(self, root: str = "data", download: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        check_root(root, "MNIST")
        self.root, self.download = root, check_bool("download", download)

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                torchvision_split("MNIST", self.root, train, download=True)

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        dm = MNISTDataModule(root=self.root, download=self.download)
        x, _, x_test, _ = dm.load()
        raw = (x * MNISTDataModule._std + MNISTDataModule._mean).squeeze(1)
        raw_test = (x_test * MNISTDataModule._std + MNISTDataModule._mean).squeeze(1)
        return x, ink_landmarks(raw), x_test, ink_landmarks(raw_test)


class DiabetesDataModule(CorruptedRegressionDataModule):
    """scikit-learn's bundled diabetes regression (442 patients, 10 features, one target; no download).

    ``test_size`` samples are held out clean (fixed split). One target dimension: ``pairflip`` does not
    apply (``mixture`` draws from the other three).

    Args:
        test_size: samples held out as the clean test split (a fixed split, whatever ``seed``).

    Further keyword arguments are ``CorruptedRegressionDataModule``'s: ``corruption``, ``corrupt_ratio``,
    ``train_size``, ``val_size``, ``batch_size``, ``eval_batch_size``, ``num_workers``, ``seed``.
    """

    _settings = (*CorruptedRegressionDataModule._settings, "test_size")

    def __init__(self, test_size: int = 92, **kwargs) -> None:
        kwargs.setdefault("batch_size", 64)
        super().__init__(**kwargs)
        self.test_size = _check_test_size(test_size)

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from sklearn.datasets import load_diabetes

        d = load_diabetes()
        x = torch.tensor(d.data, dtype=torch.float32)
        x = (x - x.mean(0)) / x.std(0)
        y = torch.tensor(d.target, dtype=torch.float32).unsqueeze(1)
        splits, self._pool_rows = _fixed_test_split(x, y, self.test_size)
        return splits


class SyntheticLinearDataModule(CorruptedRegressionDataModule):
    """Synthetic multi-output regression ``y = x W + e``: ``n`` training and ``n_test`` clean test samples.

    ``x ~ N(0, I_d)``, ``W ~ N(0, 1/d)``, ``e ~ N(0, noise_std²)``; the test targets are ``x W`` without noise.

    Args:
        n: the training pool's samples (the validation split, if any, is drawn from them).
        dim: the number of input features ``d``.
        q: the number of targets.
        noise_std: standard deviation of the noise ``e`` of the training targets.
        n_test: the number of clean test samples.
    """

    _settings = (*CorruptedRegressionDataModule._settings, "n", "dim", "q", "noise_std", "n_test")

    def __init__(self, n: int = 2000, dim: int = 20, q: int = 4, noise_std: float = 0.1, n_test: int = 1000,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        check_seed("seed", self.seed)  # `load` draws with 10_000 + seed
        for name, value in (("n", n), ("dim", dim), ("q", q), ("n_test", n_test)):
            check_int(name, value, 1)
        check_number("noise_std", noise_std, 0)
        self.n, self.dim, self.q, self.noise_std, self.n_test = n, dim, q, noise_std, n_test

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(10_000 + self.seed)
        w = torch.randn(self.dim, self.q, generator=g) / self.dim ** 0.5
        x = torch.randn(self.n + self.n_test, self.dim, generator=g)
        y = x @ w + self.noise_std * torch.randn(self.n + self.n_test, self.q, generator=g)
        return x[: self.n], y[: self.n], x[self.n:], (x[self.n:] @ w)
