"""Backdoored MNIST in the semi-supervised setting of robust_dnn_thesis §5.5 (Table 5.3, Algorithm 7)."""

from __future__ import annotations

import numbers
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lit_robust._backend import pl
from lit_robust._checks import check_bool, check_number, check_seed
from lit_robust.data.base import SplitLoaders, built_already, check_root, remember_settings, torchvision_split
from lit_robust.data.indexed import IndexedDataset
from lit_robust.functional.backdoor import BlendTrigger, PatchTrigger, Trigger, poison, poison_test_set

__all__ = ["SemiSupervisedBackdoorMNISTDataModule", "MNIST_MEAN", "MNIST_STD", "MNIST_VALUE_RANGE", "make_trigger"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
#: black and white of MNIST normalised by MNIST_MEAN / MNIST_STD
MNIST_VALUE_RANGE = ((0.0 - MNIST_MEAN) / MNIST_STD, (1.0 - MNIST_MEAN) / MNIST_STD)
Attack = Literal["patch", "blend"]


def make_trigger(attack: Attack, value_range: tuple[float, float] = MNIST_VALUE_RANGE, seed: int = 0) -> Trigger:
    """The thesis's triggers (Figure 5.2): ``"patch"`` = 3×3 checkerboard in the bottom-right corner,
    ``"blend"`` = a fixed Gaussian image blended with ``alpha = 0.1``."""
    if attack == "patch":
        return PatchTrigger(size=3, value_range=value_range)
    if attack == "blend":
        return BlendTrigger(alpha=0.1, seed=seed, value_range=value_range)
    raise ValueError(f"`attack` must be 'patch' or 'blend', got {attack!r}.")


def _normalise(images: Tensor) -> Tensor:
    return ((images.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


def _check_int(name: str, value: object, low: int) -> None:
    # numpy integers count (a computed `labeled_size=np.int64(600)` was refused), as in lit_robust._checks
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")


class SemiSupervisedBackdoorMNISTDataModule(SplitLoaders, pl.LightningDataModule):
    r"""A small labelled, backdoored share of MNIST plus clean unlabeled images (thesis §5.5, semi-supervised).

    From MNIST's training split (seeded), ``labeled_size`` digits (default: ``labeled_fraction`` = 20 % of the
    split, the thesis's protocol) are the labelled training set :math:`(X^\epsilon, Y^\epsilon)`: a fraction
    ``poison_rate`` = ε of them carries the trigger and the label :math:`a \to (a+1) \bmod 10`
    (:func:`lit_robust.functional.backdoor.poison`, multi-target). The unlabeled augmentation set :math:`X_{aug}` is
    ``unlabeled_mnist`` of the *other* MNIST training digits (default: all of them) and ``unlabeled_fashion``
    FashionMNIST training images. Every image is normalised by MNIST's mean/std (FashionMNIST too, so all share
    one pixel scale and ``value_range`` :data:`MNIST_VALUE_RANGE`).

    ``mode="pretrain"`` (Algorithm 7's SimCLR step): the training set is :math:`[X^\epsilon, X_{aug}]`, samples
    ``(index, image, 0, is_poisoned)`` — no labels, the poisoned flag for metrics only.
    ``mode="finetune"``: the training set is the labelled set, samples ``(index, image, label, is_poisoned)``
    with the attacker's labels. Both modes with the same arguments and seed see the same images.

    Test loaders (both modes): ``[clean test set, triggered test set]`` — the second has the trigger on every
    test image and the *true* labels, so its accuracy is the thesis's *poison accuracy*;
    :attr:`test_attack_targets` holds the attacker's labels (for an attack success rate).
    Predict loader (``lit-robust predict``): the clean test set alone, in a fixed order (one loader, so every test
    index appears once); the triggered copy is :attr:`poison_test_set`, for ``trainer.predict(model, dataloaders=...)``.

    Args:
        root: folder holding ``MNIST/raw`` (and ``FashionMNIST/raw`` when ``unlabeled_fashion > 0``).
        mode: ``"pretrain"`` or ``"finetune"``.
        attack: ``"patch"`` or ``"blend"`` (:func:`lit_robust.data.semi_supervised.make_trigger`), each image of
            class a relabelled a+1; all-to-one attacks are not built here (see :class:`BackdoorMNISTDataModule`).
        poison_rate: ε in [0, 1).
        labeled_fraction: the labelled share of MNIST's training split, in (0, 1] (default 0.2, the thesis's).
        labeled_size: the number of labelled digits instead, at most MNIST's training digits; ``None`` (default):
            use ``labeled_fraction``.
        unlabeled_mnist: MNIST digits (not labelled ones) in the unlabeled augmentation set; ``None`` (default): all
            the remaining ones.
        unlabeled_fashion: FashionMNIST training images in the unlabeled augmentation set (default 0: none).
        test_size: test images used, at most MNIST's test digits (``None`` = all).
        batch_size: training batch size.
        eval_batch_size: batch size of the test, prediction and scoring loaders.
        num_workers: ``DataLoader`` worker processes (0: load in the main process).
        seed: seeds the split, the poisoned samples and the FashionMNIST draw.
        download: download MNIST (and FashionMNIST) into ``root`` if missing (needs internet; default off).
    """

    def __init__(
        self,
        root: str = "data",
        mode: Literal["pretrain", "finetune"] = "finetune",
        attack: Attack = "patch",
        poison_rate: float = 0.25,
        labeled_fraction: float = 0.2,
        labeled_size: int | None = None,
        unlabeled_mnist: int | None = None,
        unlabeled_fashion: int = 0,
        test_size: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("pretrain", "finetune"):
            raise ValueError(f"`mode` must be 'pretrain' or 'finetune', got {mode!r}.")
        make_trigger(attack)
        if (isinstance(poison_rate, (bool, np.bool_)) or not isinstance(poison_rate, numbers.Real)
                or not 0.0 <= poison_rate < 1.0):
            raise ValueError(f"`poison_rate` must be in [0, 1), got {poison_rate!r}.")
        check_number("labeled_fraction", labeled_fraction, 0, 1, low_open=True)
        for name, value, low in (("labeled_size", labeled_size, 1), ("unlabeled_mnist", unlabeled_mnist, 0),
                                 ("test_size", test_size, 1)):
            if value is not None:
                _check_int(name, value, low)
        _check_int("unlabeled_fashion", unlabeled_fashion, 0)
        _check_int("batch_size", batch_size, 1)
        _check_int("eval_batch_size", eval_batch_size, 1)
        _check_int("num_workers", num_workers, 0)
        check_seed("seed", seed)  # the poisoned samples are drawn with seed + 1
        check_root(root, "MNIST", *(("FashionMNIST",) if unlabeled_fashion else ()))
        self.root, self.mode, self.attack, self.poison_rate = root, mode, attack, float(poison_rate)
        def whole(v: int | None) -> int | None:
            return None if v is None else int(v)
        self.labeled_fraction, self.labeled_size = labeled_fraction, whole(labeled_size)
        self.unlabeled_mnist, self.unlabeled_fashion = whole(unlabeled_mnist), int(unlabeled_fashion)
        self.test_size = whole(test_size)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.seed, self.download = seed, check_bool("download", download)
        self.value_range = MNIST_VALUE_RANGE
        self.trigger = make_trigger(attack, self.value_range, seed)
        self.train_set: IndexedDataset | None = None
        self.test_set: IndexedDataset | None = None
        self.poison_test_set: IndexedDataset | None = None
        self.test_attack_targets: Tensor | None = None

    num_classes = 10
    # `root` says where MNIST's (and FashionMNIST's) files lie, not which data (left out of a fit's signature)
    root_is_a_download_cache = True
    #: multi-target only (a -> a+1): what :class:`~lit_robust.BackdoorMetrics` reads with ``target="datamodule"``
    attack_target: int | None = None
    attack_source: int | None = None

    @property
    def target_kind(self) -> str:  # type: ignore[override]
        """``"none"`` (pretrain: a constant dummy target) or ``"class"`` (finetune: the poisoned labels)."""
        return "none" if self.mode == "pretrain" else "class"

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                torchvision_split("MNIST", self.root, train, download=True)
            if self.unlabeled_fashion:
                torchvision_split("FashionMNIST", self.root, True, download=True)

    def setup(self, stage: str | None = None) -> None:
        if built_already(self):  # built once; a setting changed since is warned about
            return
        train = torchvision_split("MNIST", self.root, True, self.download)
        test = torchvision_split("MNIST", self.root, False, self.download)
        n = len(train.targets)
        n_lab = self.labeled_size if self.labeled_size is not None else int(round(self.labeled_fraction * n))
        if n_lab > n:  # finetune took every digit without a word, pretrain failed in torch ("zeros: Dimension size")
            raise ValueError(f"`labeled_size` must be <= {n}, the MNIST training digits under {self.root!r}, got "
                             f"{n_lab}.")
        if self.test_size is not None and self.test_size > len(test.targets):  # was cut to the digits there, silently
            raise ValueError(f"`test_size` must be <= {len(test.targets)}, the MNIST test digits under {self.root!r} "
                             f"(or None: all), got {self.test_size}.")
        if n_lab < 1:
            raise ValueError(f"`labeled_fraction`={self.labeled_fraction!r} of the {n} MNIST training digits under "
                             f"{self.root!r} gives 0 labelled samples; it must be >= {0.5 / n:.3g} (or pass "
                             "`labeled_size`).")
        n_unl = n - n_lab if self.unlabeled_mnist is None else self.unlabeled_mnist
        if n_lab + n_unl > n:
            raise ValueError(f"`labeled_size` ({n_lab}) + `unlabeled_mnist` ({n_unl}) must be <= {n}, the MNIST "
                             f"training digits under {self.root!r}.")
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(n, generator=g)
        x = _normalise(train.data[perm[: n_lab + n_unl]])
        y = train.targets[perm[: n_lab + n_unl]].long()
        x_lab, y_lab, x_unl = x[:n_lab], y[:n_lab], x[n_lab:]
        x_pois, y_pois, mask = poison(x_lab, y_lab, self.trigger, self.poison_rate, num_classes=10,
                                      seed=self.seed + 1)
        self.labeled = (x_pois, y_lab, y_pois, mask)
        if self.mode == "pretrain":
            parts = [x_pois, x_unl]
            if self.unlabeled_fashion:
                fashion = torchvision_split("FashionMNIST", self.root, True, self.download).data
                if self.unlabeled_fashion > len(fashion):
                    raise ValueError(f"`unlabeled_fashion` must be <= {len(fashion)}, the FashionMNIST training "
                                     f"images under {self.root!r}, got {self.unlabeled_fashion}.")
                pick = torch.randperm(len(fashion), generator=g)[: self.unlabeled_fashion]
                parts.append(_normalise(fashion[pick]))
            images = torch.cat(parts)
            flags = torch.cat([mask, torch.zeros(len(images) - n_lab, dtype=torch.bool)])
            dummy = torch.zeros(len(images), dtype=torch.long)
            self.train_set = IndexedDataset(TensorDataset(images, dummy), corrupted=flags)
        else:
            self.train_set = IndexedDataset(TensorDataset(x_pois, y_lab), targets=y_pois, corrupted=mask)
        xt, yt = _normalise(test.data), test.targets.long()
        if self.test_size is not None:
            xt, yt = xt[: self.test_size], yt[: self.test_size]
        self.test_set = IndexedDataset(TensorDataset(xt, yt))
        xt_trig, y_true, y_attack = poison_test_set(xt, yt, self.trigger, num_classes=10)
        self.poison_test_set = IndexedDataset(TensorDataset(xt_trig, y_true))
        self.test_attack_targets = y_attack
        remember_settings(self, ("root", "mode", "attack", "poison_rate", "labeled_fraction", "labeled_size",
                                 "unlabeled_mnist", "unlabeled_fashion", "test_size", "seed", "trigger"))

    def test_dataloader(self) -> list[DataLoader]:
        """``[clean test loader, triggered test loader (true labels)]``."""
        assert self.test_set is not None and self.poison_test_set is not None, "call setup() first"
        return [self._loader(self.test_set, False, self.eval_batch_size),
                self._loader(self.poison_test_set, False, self.eval_batch_size)]
