"""Unlabeled image sets polluted with images of another kind (itlm_paper §6.3: MNIST + FashionMNIST)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lit_robust._backend import pl
from lit_robust._checks import check_bool, check_int, check_seed
from lit_robust.data.base import SplitLoaders, built_already, check_root, remember_settings, torchvision_split
from lit_robust.data.indexed import IndexedDataset
from lit_robust.selection.rules import percent_hint

__all__ = ["MixedImagesDataModule", "ImageSource"]

ImageSource = Literal["mnist", "fashion_mnist"]
_SOURCES = ("mnist", "fashion_mnist")
_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # their torchvision names


def load_images(name: ImageSource, root: str, download: bool = False, train: bool = True) -> Tensor:
    """The uint8 images ``[N, 28, 28]`` of a torchvision dataset in ``root`` (torchvision's raw layout)."""
    return torchvision_split("MNIST" if name == "mnist" else "FashionMNIST", root, train, download).data


class MixedImagesDataModule(SplitLoaders, pl.LightningDataModule):
    """Unlabeled images of a clean kind polluted with a fraction of images of another kind.

    A data collector wanted ``clean`` images (MNIST digits by default) but ``1 - clean_ratio`` of what it
    got are ``bad`` images (FashionMNIST by default) — itlm_paper §6.3 and Appendix E.2. Exactly
    ``round(clean_ratio * train_size)`` clean and the rest bad images are drawn (seeded) from the two
    training sets, shuffled together, and scaled to ``[-1, 1]``.

    Every sample is ``(index, image, 0, is_bad)``: the third element is a constant dummy target (the model
    gets no labels) and ``is_bad`` (``True`` = the image comes from ``bad``) is the ground truth, used for
    metrics only (e.g. the clean fraction of an :class:`~lit_robust.ITLM` selection). A validation split of
    ``val_size`` images has the same mixture (no clean data anywhere); there is no test split, so
    ``predict_dataloader()`` raises (pass your own loader to ``trainer.predict``).

    Args:
        root: folder holding ``MNIST/raw`` and ``FashionMNIST/raw`` (torchvision layout).
        clean_ratio: fraction of clean images, in ``(0, 1]``.
        train_size: number of training images.
        val_size: number of validation images (same mixture), ``0`` for none.
        clean: the wanted images: ``"mnist"`` (default) or ``"fashion_mnist"``.
        bad: the images that pollute them: ``"fashion_mnist"`` (default) or ``"mnist"``.
        batch_size: training batch size.
        eval_batch_size: batch size of the validation and scoring loaders.
        num_workers: ``DataLoader`` worker processes (0: load in the main process).
        seed: seeds which images are drawn and their order.
        download: let torchvision download missing datasets (needs internet).
    """

    target_kind = "none"
    # `root` says where MNIST's (and FashionMNIST's) files lie, not which data (left out of a fit's signature)
    root_is_a_download_cache = True

    def __init__(
        self,
        root: str = "data",
        clean_ratio: float = 0.8,
        train_size: int = 5000,
        val_size: int = 0,
        clean: ImageSource = "mnist",
        bad: ImageSource = "fashion_mnist",
        batch_size: int = 64,
        eval_batch_size: int = 500,
        num_workers: int = 0,
        seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(clean_ratio, bool) or not isinstance(clean_ratio, (int, float)) or not 0.0 < clean_ratio <= 1.0:
            raise ValueError(f"`clean_ratio` must be in (0, 1], got {clean_ratio!r}." + percent_hint("clean_ratio", clean_ratio))
        if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1:
            raise ValueError(f"`train_size` must be an integer >= 1, got {train_size!r}.")
        if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
            raise ValueError(f"`val_size` must be an integer >= 0, got {val_size!r}.")
        for name, value in (("clean", clean), ("bad", bad)):
            if value not in _SOURCES:
                raise ValueError(f"`{name}` must be one of {list(_SOURCES)}, got {value!r}.")
        if clean == bad:
            raise ValueError(f"`clean` and `bad` must name different datasets, got {clean!r} for both.")
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1)
        check_int("num_workers", num_workers, 0)
        check_seed("seed", seed)
        check_root(root, *(_FOLDERS[name] for name in (clean, bad)))
        self.root = root
        self.clean_ratio = float(clean_ratio)
        self.train_size = train_size
        self.val_size = val_size
        self.clean = clean
        self.bad = bad
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.download = check_bool("download", download)
        self.train_set: IndexedDataset | None = None
        self.val_set: IndexedDataset | None = None

    def prepare_data(self) -> None:
        if self.download:
            for name in (self.clean, self.bad):
                load_images(name, self.root, download=True)

    def counts(self, n: int) -> tuple[int, int]:
        """``(clean, bad)`` image counts of a split of ``n`` images."""
        n_clean = int(round(self.clean_ratio * n))
        return n_clean, n - n_clean

    def setup(self, stage: str | None = None) -> None:
        if built_already(self):  # built once; a setting changed since is warned about
            return
        g = torch.Generator().manual_seed(self.seed)
        (tr_c, tr_b), (va_c, va_b) = self.counts(self.train_size), self.counts(self.val_size)
        drawn = {}
        for name, need in ((self.clean, tr_c + va_c), (self.bad, tr_b + va_b)):
            images = load_images(name, self.root, self.download) if need else torch.zeros(0, 28, 28, dtype=torch.uint8)
            if need > len(images):
                raise ValueError(
                    f"`train_size` = {self.train_size} and `val_size` = {self.val_size} at `clean_ratio` = "
                    f"{self.clean_ratio} need {need} {name} images, but {self.root!r} holds {len(images)}."
                )
            drawn[name] = images[torch.randperm(len(images), generator=g)[:need]]
        clean, bad = drawn[self.clean], drawn[self.bad]
        self.train_set = self._split(clean[:tr_c], bad[:tr_b], g)
        if self.val_size:
            self.val_set = self._split(clean[tr_c:], bad[tr_b:], g)
        remember_settings(self, ("root", "clean_ratio", "train_size", "val_size", "clean", "bad", "seed"))

    @staticmethod
    def _split(clean: Tensor, bad: Tensor, g: torch.Generator) -> IndexedDataset:
        images = torch.cat([clean, bad])
        is_bad = torch.cat([torch.zeros(len(clean), dtype=torch.bool), torch.ones(len(bad), dtype=torch.bool)])
        order = torch.randperm(len(images), generator=g)
        x = (images[order].float() / 127.5 - 1.0).unsqueeze(1)
        dummy = torch.zeros(len(images), dtype=torch.long)
        return IndexedDataset(TensorDataset(x, dummy), corrupted=is_bad[order])

