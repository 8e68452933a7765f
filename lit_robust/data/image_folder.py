"""A folder of your own images, one sub-folder per class (torchvision's ``ImageFolder`` layout), as a
LightningDataModule.

The docs' image-folder recipe was a Python class of the user's own: ``lit-robust fit`` had no datamodule to name for a
folder of images, so the CLI's per-sample report — which files look misfiled — was out of reach for the most common
real data set there is. :class:`ImageFolderDataModule` is that datamodule: the folder is taken as it is (nothing is
corrupted on purpose), the report names each row's file and classes, and ITLM scores the training images without the
training augmentation (``scoring_dataloader``).
"""

from __future__ import annotations

import copy
import functools
import os
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from lit_robust._backend import pl, rank_zero_info, rank_zero_warn
from lit_robust._checks import check_int, check_seed
from lit_robust.data.base import SplitLoaders, built_already, remember_settings
from lit_robust.data.indexed import IndexedDataset
from lit_robust.report import PREDICTION_CLASS_COLUMNS, with_sample_files

__all__ = ["ImageFolderDataModule"]

Augment = Literal["none", "crop", "crop_flip"]
_AUGMENTS = ("none", "crop", "crop_flip")
_STATS_IMAGES = 512  # images read (evenly spaced over the training split) for the per-channel mean and std
_KEEP_BYTES = 1 << 30  # read images kept in memory (see `_KeptImages`) only while a folder's fit in 1 GiB


def _split_positions(n: int, size: float | int, seed: int) -> tuple[Tensor, Tensor]:
    """``(kept, held out)`` positions of ``n`` samples, ``size`` held out (a fraction in [0, 1) or a count), drawn
    with ``seed``; both sorted, so that the kept samples stay in the folder's order."""
    k = int(size) if isinstance(size, int) else int(round(float(size) * n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = perm[:k].sort().values
    kept = perm[k:].sort().values
    return kept, held


@functools.cache
def _allows_empty_class_folders() -> bool:
    """Whether torchvision's ``ImageFolder`` takes ``allow_empty`` (0.18 and later; the project supports 0.16)."""
    import inspect

    from torchvision import datasets

    return "allow_empty" in inspect.signature(datasets.ImageFolder.__init__).parameters


def _read_image(path: str) -> Any:
    """The image file ``path`` as an RGB PIL image (what torchvision's ``default_loader`` returns), decoded in full
    here so that a damaged file is named: a truncated JPEG opens, then fails to decode with PIL's bare ``Truncated File
    Read``, which stopped an image-folder newcomer's fit (in the statistics pass, or mid-training) without naming it.

    A 16-bit or 32-bit integer or a float image (PIL modes ``I;16``, ``I``, ``F``) comes back as one float channel
    (mode ``F``) in [0, 1] instead (:func:`_unit_range`): PIL's ``convert("RGB")`` clips such pixels to 0 or 255."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
            if not _is_deep(image.mode):
                return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three for damaged files
        why = ("not an image PIL can identify" if isinstance(err, Image.UnidentifiedImageError)
               else f"{type(err).__name__}: {err}")
        raise OSError(f"the image file {path} could not be read ({why}): move it out of the folder, or repair it, "
                      "and run again.") from err
    return _unit_range(image, path)


def _is_deep(mode: str) -> bool:
    """Whether PIL's ``mode`` holds more than 8 bits a pixel (``I;16``, ``I;16B``, ... , ``I``, ``F``)."""
    return mode in ("I", "F") or mode.startswith("I;16")


def _is_grey(mode: str) -> bool:
    return mode in ("1", "L", "LA") or _is_deep(mode)  # the deep modes are all one channel


def _unit_range(image: Any, path: str) -> Any:
    """A one-channel image of more than 8 bits as a float image (PIL mode ``F``) in [0, 1], at full precision.

    Integer images (``I;16`` and ``I``, which older Pillow gives 16-bit PNGs) are divided by 65,535: a 16-bit range
    for ``I`` as well, since 32-bit integer images are nearly always 16-bit data widened. Float images (``F``) are
    taken as already in [0, 1]. Pixels outside that range are an error naming the file, not clipped: clipping made
    a 16-bit folder read as all-white images (every pixel 1.0) without a word."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float64)
    high, kind = (1.0, "a float image") if image.mode == "F" else (65535.0, "a 16-bit or 32-bit integer image")
    low_seen, high_seen = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if not (np.isfinite(pixels).all() and 0 <= low_seen and high_seen <= high):
        raise ValueError(
            f"the image file {path} is {kind} (PIL mode {image.mode}) with pixel values from {low_seen:g} to "
            f"{high_seen:g}, outside the [0, {high:g}] it is read from (as [0, 1]): rescale it to [0, {high:g}] "
            "(or save it as an 8-bit image), or move it out of the folder.")
    return Image.fromarray((pixels / high).astype(np.float32))


class _Files(Dataset):
    """Image files without classes (``predict_root``): ``(image, -1)`` per file, in sorted path order, with
    ``samples``/``classes`` as ``ImageFolder`` has them so that ``predictions.csv`` names each file."""

    def __init__(self, root: str, classes: list[str], transform: Any) -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        found = []
        for folder, _, names in os.walk(root, followlinks=True):
            found += [os.path.join(folder, f) for f in names if f.lower().endswith(IMG_EXTENSIONS)]
        if not found:
            raise ValueError(f"`predict_root`={root!r} holds no image files (looked for {', '.join(IMG_EXTENSIONS)} "
                             "in it and its sub-folders).")
        self.samples = [(p, -1) for p in sorted(found)]
        self.classes, self.transform, self.loader = classes, transform, _read_image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(self.loader(self.samples[i][0])), -1


def _not_a_folder(path: str) -> str:
    """Why ``path`` is no folder: a file given as the folder was said not to exist."""
    return "is a file" if os.path.exists(path) else "does not exist"


class ImageFolderDataModule(SplitLoaders, pl.LightningDataModule):
    """Your own images as training / validation / test splits: ``root/<class>/<image>``, one folder per class.

    As torchvision's ``ImageFolder``: classes are the sub-folders' names, sorted; files are read in sorted order.
    Pixels are read in [0, 1]: 8-bit images as ``pixel / 255``, 16-bit and 32-bit integer grey images (PIL modes
    ``I;16``, ``I``) as ``pixel / 65535``, float images (``F``) as they are (they must lie in [0, 1]).

    Args:
        root: the training folder, one sub-folder per class (a GAN's unlabelled images: all in one sub-folder).
            The folder is taken as it is: files in the wrong class folder are the label noise the robust callbacks
            look for.
        test_root: a separate test folder with the same class sub-folders (ideally checked by hand: the clean
            data a model is meant for); a class's may be empty (with torchvision >= 0.18). ``None`` and
            ``test_size=0``: no test split.
        test_size: images of ``root`` held out for testing, drawn with ``seed``: a fraction in [0, 1) or a count
            (default 0; a fraction that rounds to no image is an error). They carry the folder's noise.
        val_size: images of ``root`` held out for validation (after the test images), likewise.
        image_size: every image is resized to ``image_size`` × ``image_size``; ``None`` (default): to the size of
            the folder's first image, ``ImageFolder(root).samples[0]``, whether or not it is held out (so a folder of
            equal-sized images is read as it is, and ``seed`` and the splits do not change the size).
        channels: 1 (grayscale) or 3 (RGB); ``None`` (default): 1 when the folder's first image (as above) is
            grayscale, else 3.
        augment: the training forwards' augmentation: ``"none"`` (default), ``"crop"`` (a random crop of the padded
            image, padding ``image_size // 8``) or ``"crop_flip"`` (and a random horizontal flip; not for digits or
            text). Scoring passes (``scoring_dataloader``, what ITLM scores), validation, test and prediction never
            augment.
        normalize: subtract each channel's mean and divide by its standard deviation, both measured on up to 512
            training images (evenly spaced over the split); ``False``: pixel values in [0, 1]; ``"symmetric"``:
            pixel values in [-1, 1] (``2 * pixel - 1``), the range of a generator's ``tanh`` (:class:`DCGAN`).
        predict_root: a folder of new images to predict (any layout; sub-folders are not classes here):
            ``trainer.predict`` / ``lit-robust predict`` then predict it instead of the test split, and
            ``predictions.csv`` names each file (``path``).
        batch_size: training batch size.
        eval_batch_size: batch size of the scoring, validation, test and prediction loaders.
        num_workers: DataLoader worker processes (0: read the images in the main process, and keep each as first
            read while the folder's images fit in 1 GiB as float32: later epochs and scoring passes read no file;
            with ``augment``, only the evaluation reading is kept). Keep 0 for such a folder: an image-folder
            newcomer's 1,500 PNGs trained 1.8× slower with 2 workers on a 2-core machine.
        seed: the draw of the held-out images.

    After :meth:`setup`: :attr:`classes` (the class names, by label), :attr:`num_classes`, :attr:`in_channels`,
    :attr:`image_size` (height, width), ``mean`` / ``std`` and ``train_source_index`` (each training image's
    position in ``ImageFolder(root).samples``, the report's ``source_index``). The per-sample report and
    ``predictions.csv`` name each image's file (``path``) and classes (``given_class``, ``predicted_class``).

    A model must fit the images: e.g. ``ImageClassifier(num_classes=<the number of class folders>,
    in_channels=<channels>, image_size=<size>)``; a mismatch is said at ``setup`` with the values to pass.
    """

    def __init__(
        self,
        root: str,
        test_root: str | None = None,
        test_size: float | int = 0,
        val_size: float | int = 0,
        image_size: int | None = None,
        channels: int | None = None,
        augment: Augment = "none",
        normalize: bool | Literal["symmetric"] = True,
        predict_root: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("root", root), ("test_root", test_root), ("predict_root", predict_root)):
            if (value is not None or name == "root") and (not isinstance(value, (str, os.PathLike))
                                                          or not os.fspath(value)):
                raise ValueError(f"`{name}` must be a folder's path, got {value!r}.")
        if test_root is not None and test_size not in (None, 0):
            raise ValueError(f"`test_size` must be 0 with a `test_root` folder, got {test_size!r}.")
        for name, value in (("test_size", test_size), ("val_size", val_size)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or (
                    isinstance(value, float) and not value < 1 and not value.is_integer()):
                raise ValueError(f"`{name}` must be a fraction in [0, 1) of the images or a whole number of images "
                                 f">= 0, got {value!r}.")
        # a count, also given as a whole float: jsonargparse reads `--data.init_args.test_size 2` (a `float | int`)
        # as 2.0, which the CLI and configs refused as neither a fraction nor a count
        test_size, val_size = (int(v) if isinstance(v, float) and v >= 1 else v for v in (test_size, val_size))
        check_int("image_size", image_size, 1, optional=True)
        if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
            raise ValueError(f"`channels` must be 1 (grayscale), 3 (RGB) or None (as the first image), got "
                             f"{channels!r}.")
        if augment not in _AUGMENTS:
            raise ValueError(f"`augment` must be one of {list(_AUGMENTS)}, got {augment!r}.")
        if not isinstance(normalize, bool) and normalize != "symmetric":
            raise ValueError(f"`normalize` must be True (each channel's mean and standard deviation), False (pixels "
                             f"in [0, 1]) or 'symmetric' (pixels in [-1, 1], for a GAN), got {normalize!r}.")
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1)
        check_int("num_workers", num_workers, 0)
        check_seed("seed", seed)  # the validation images are drawn with seed + 1
        self.root, self.test_root, self.predict_root = root, test_root, predict_root
        self.test_size, self.val_size, self.augment, self.normalize = test_size, val_size, augment, normalize
        self.requested_size, self.requested_channels = image_size, channels
        self.batch_size, self.eval_batch_size, self.num_workers, self.seed = batch_size, eval_batch_size, num_workers, seed
        self.target_kind = "class"
        self.classes: list[str] | None = None
        self.in_channels: int | None = None
        self.image_size: tuple[int, int] | None = None
        self.mean: list[float] | None = None
        self.std: list[float] | None = None
        self.train_set: IndexedDataset | None = None
        self.val_set: IndexedDataset | None = None
        self.test_set: IndexedDataset | None = None
        self.predict_set: IndexedDataset | None = None
        self.train_source_index: Tensor | None = None
        self._scoring_set: IndexedDataset | None = None

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _folder(root: str, argument: str, transform: Any = None, allow_empty: bool = False) -> Any:
        from torchvision import datasets

        path = os.path.expanduser(os.fspath(root))
        if not os.path.isdir(path):
            relative = "" if os.path.isabs(path) else f" (a relative path is read from the current folder, {os.getcwd()})"
            raise FileNotFoundError(f"`{argument}`={root!r} is not a folder: {os.path.abspath(path)} "
                                    f"{_not_a_folder(path)}{relative}.")
        try:
            # an empty class folder (`allow_empty`, torchvision >= 0.18) lets a test folder lack a class's images
            empty = {"allow_empty": True} if allow_empty and _allows_empty_class_folders() else {}
            return datasets.ImageFolder(path, transform=transform, loader=_read_image, **empty)
        except (FileNotFoundError, RuntimeError) as err:  # no class sub-folders, or sub-folders without images
            raise ValueError(f"`{argument}`={root!r} must hold one sub-folder per class with the images inside "
                             f"(`{argument}/<class>/<image>.png`): {err}") from err

    def _transform(self, train: bool) -> Any:
        from torchvision import transforms as T

        h, w = self.image_size
        steps: list[Any] = [T.Lambda(_grey if self.in_channels == 1 else _rgb), T.Resize((h, w))]
        if train and self.augment != "none":
            steps.append(T.RandomCrop((h, w), padding=max(1, min(h, w) // 8)))
            if self.augment == "crop_flip":
                steps.append(T.RandomHorizontalFlip())
        steps.append(T.ToTensor())
        if self.in_channels == 3:
            steps.append(T.Lambda(_three_channels))  # a deep image is read as one float channel (`_read_image`)
        if self.normalize is True and self.mean is not None:
            steps.append(T.Normalize(self.mean, self.std))
        elif self.normalize == "symmetric":
            steps.append(T.Normalize([0.5] * self.in_channels, [0.5] * self.in_channels))
        return T.Compose(steps)

    def setup(self, stage: str | None = None) -> None:
        if built_already(self):  # built once; a setting changed since is warned about
            return
        folder = self._folder(self.root, "root")
        # one sub-folder is a GAN's unlabelled images; a classifier says at `setup` that it needs two or more
        self.classes = list(folder.classes)
        _warn_if_root_is_a_level_up(self.root, folder)
        _note_files_not_read(self.root, folder)
        from PIL import Image

        mode, size = "RGB", (self.requested_size, self.requested_size)
        try:
            if self.requested_size is None or self.requested_channels is None:
                # the folder's first file, not the first training one: the same reading whatever `seed` holds out
                with Image.open(folder.samples[0][0]) as first:  # as stored: ImageFolder's loader converts to RGB
                    mode, size = first.mode, first.size
        except OSError as err:
            raise OSError(f"The first image of `root`, {folder.samples[0][0]}, could not be read ({err}): it sets the "
                          "size and channels the others are read at. Move it away, or pass `image_size` and "
                          "`channels`.") from err
        self.in_channels = self.requested_channels or (1 if _is_grey(mode) else 3)
        self.image_size = ((self.requested_size, self.requested_size) if self.requested_size
                           else (size[1], size[0]))
        n = len(folder)
        for name, value in (("test_size", self.test_size), ("val_size", self.val_size)):
            if isinstance(value, int) and value >= n:
                raise ValueError(f"`{name}`={value} images is not fewer than the {n} images of `root`.")
        rest, test_pos = _split_positions(n, self.test_size, self.seed)
        _check_rounds_to_some("test_size", self.test_size, n, len(test_pos), "")
        train_in_rest, val_in_rest = _split_positions(len(rest), self.val_size, self.seed + 1)
        _check_rounds_to_some("val_size", self.val_size, len(rest), len(val_in_rest),
                              " left after the test images" if len(test_pos) else "")
        train_pos, val_pos = rest[train_in_rest], rest[val_in_rest]
        if len(train_pos) == 0:
            raise ValueError(f"`test_size`={self.test_size!r} and `val_size`={self.val_size!r} leave none of the {n} "
                             "images of `root` for training.")
        _warn_starved_classes(folder, train_pos, len(test_pos) + len(val_pos) > 0)
        if self.requested_size is None or self.requested_channels is None:
            _note_mixed_images(folder, train_pos, self.image_size, sizes=self.requested_size is None,
                              channels=None if self.requested_channels is not None else self.in_channels)
        self.mean = self.std = None
        if self.normalize is True:
            plain = _reading(folder, self._transform(train=False))
            step = max(1, len(train_pos) // _STATS_IMAGES)
            x = torch.stack([plain[int(i)][0] for i in train_pos[::step][:_STATS_IMAGES]])
            self.mean = x.mean(dim=(0, 2, 3)).tolist()
            self.std = x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
        eval_folder = _reading(folder, self._transform(train=False))
        keep = self._keeps(len(folder))
        if keep:
            eval_folder = _KeptImages(eval_folder)
        # without augmentation the training forwards read the images as evaluation does: one reading, kept once
        train_folder = (eval_folder if keep and self.augment == "none"
                        else _reading(folder, self._transform(train=True)))

        def split(base: Any, pos: Tensor) -> IndexedDataset | None:
            return IndexedDataset(Subset(base, pos.tolist())) if len(pos) else None

        self.train_source_index = train_pos
        self.train_set = split(train_folder, train_pos)
        self._scoring_set = split(eval_folder, train_pos) if self.augment != "none" else self.train_set
        self.val_set = split(eval_folder, val_pos)
        self.test_set = split(eval_folder, test_pos)
        if self.test_root is not None:
            test = self._folder(self.test_root, "test_root", self._transform(train=False), allow_empty=True)
            if list(test.classes) != self.classes:
                # by direction: an empty class folder is fine in `test_root` only (an image newcomer who added an
                # empty training folder for the test's extra class, as advised, met the empty-class error next)
                extra = [c for c in test.classes if c not in self.classes]
                missing = [c for c in self.classes if c not in test.classes]
                ways = []
                if extra:
                    ways.append(f"the model cannot learn {extra} without training images: add images of "
                                f"{'it' if len(extra) == 1 else 'them'} to `root`, or move {extra} out of `test_root`")
                if missing:
                    ways.append(f"add {'an empty folder' if len(missing) == 1 else 'empty folders'} {missing} to "
                                "`test_root`" if _allows_empty_class_folders() else
                                f"add {missing} to `test_root`, each with an image or more (an empty one needs "
                                "torchvision >= 0.18)")
                raise ValueError(f"`test_root`={self.test_root!r} has the class sub-folders {test.classes}, but "
                                 f"`root` has {self.classes}: the labels would not mean the same classes. "
                                 f"{'; '.join(ways)[0].upper()}{'; '.join(ways)[1:]}.")
            if len(test) == 0:
                raise ValueError(f"`test_root`={self.test_root!r} holds no images (its class sub-folders are all "
                                 "empty): put the test images in them, or pass `test_root=None`.")
            self.test_set = IndexedDataset(_KeptImages(test) if self._keeps(len(test)) else test)
        if self.predict_root is not None:
            path = os.path.expanduser(os.fspath(self.predict_root))
            if not os.path.isdir(path):
                raise FileNotFoundError(f"`predict_root`={self.predict_root!r} is not a folder: {os.path.abspath(path)} "
                                        f"{_not_a_folder(path)}.")
            self.predict_set = IndexedDataset(_Files(path, self.classes, self._transform(train=False)))
        remember_settings(self, ("root", "test_root", "predict_root", "test_size", "val_size", "augment", "normalize",
                                 "requested_size", "requested_channels", "seed"))

    def _keeps(self, n: int) -> bool:
        """Whether ``n`` images read in the main process are kept in memory (:class:`_KeptImages`): no workers
        (each worker would keep its own copy, lost at the epoch's end) and at most ``_KEEP_BYTES`` of float32."""
        h, w = self.image_size
        return self.num_workers == 0 and n * self.in_channels * h * w * 4 <= _KEEP_BYTES

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What the model was trained on, saved in Lightning's checkpoints: the classes, size, channels and the
        normalisation statistics (so that a later ``predict`` reads images exactly as training did, even where the
        folder has changed since: misfiled files moved away, say)."""
        if self.classes is None:
            return {}
        return {"classes": list(self.classes), "image_size": list(self.image_size), "in_channels": self.in_channels,
                "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or self.classes is None:
            return
        if list(state["classes"]) != self.classes:
            raise ValueError(f"The checkpoint's model was trained on the classes {list(state['classes'])}, but `root`="
                             f"{self.root!r} has the class sub-folders {self.classes}: its labels would name other "
                             "classes. Point `root` at the folder it was trained on (or one with the same sub-folders).")
        if (list(state["image_size"]), state["in_channels"]) != (list(self.image_size), self.in_channels):
            raise ValueError(f"The checkpoint's model was trained on {state['in_channels']}×{state['image_size'][0]}×"
                             f"{state['image_size'][1]} images, but `root`={self.root!r} is read as {self.in_channels}×"
                             f"{self.image_size[0]}×{self.image_size[1]}: pass the training run's `image_size` and "
                             "`channels`.")
        if (state["mean"], state["std"]) != (self.mean, self.std):
            self.mean, self.std = state["mean"], state["std"]
            for ds in (self.train_set, self._scoring_set, self.val_set, self.test_set, self.predict_set):
                base = getattr(ds, "dataset", None)
                while isinstance(base, Subset):
                    base = base.dataset
                if base is not None:
                    base.transform = self._transform(train=ds is self.train_set and self.augment != "none")

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def scoring_dataloader(self) -> Any:
        """The training images in a fixed order, evaluation batch size, without the training augmentation."""
        assert self._scoring_set is not None, "call setup() first"
        return self._loader(self._scoring_set, False, self.eval_batch_size)

    @property
    def _no_test_split_advice(self) -> str:  # type: ignore[override]
        return ("Fit with `test_size` > 0 or a `test_root` folder to have one; new images to predict go in "
                "`predict_root` (`--data.init_args.predict_root`).")

    def predict_dataloader(self) -> Any:
        """``predict_root``'s images when given (sorted by path), else the test split; fixed order."""
        if self.predict_set is not None:
            return self._loader(self.predict_set, False, self.eval_batch_size)
        return super().predict_dataloader()

    def describe_predictions(self, table: dict[str, list], loaders: Any = None) -> dict[str, list]:
        """``predictions.csv``'s columns (:class:`~lit_robust.PredictionWriter`) with each image's file (``path``)
        and class names (``predicted_class``, ``target_class``); for ``predict_root``'s images, which have no class,
        without the placeholder ``target`` column."""
        loader = loaders[0] if isinstance(loaders, (list, tuple)) and len(loaders) == 1 else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is not None and dataset is self.predict_set:
            table = {k: v for k, v in table.items() if k != "target"}
        return with_sample_files(table, dataset, PREDICTION_CLASS_COLUMNS)


class _KeptImages(Dataset):
    """A reading of an image folder (an ``ImageFolder`` with a transform without randomness) that keeps each image
    as it was first read: a newcomer's 6,000 PNGs trained 9× slower than the same images as tensors, as decoding and
    converting them (grey, resize, to a tensor, normalise) took most of each epoch. The folder's attributes
    (``samples``, ``classes``, ...) read through; setting ``transform`` (a checkpoint's normalisation) forgets what
    was kept."""

    def __init__(self, reading: Any) -> None:
        self.reading = reading
        self._kept: dict[int, tuple[Tensor, int]] = {}

    def __len__(self) -> int:
        return len(self.reading)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        i = int(i)  # a sampler's 0-d tensor hashes by identity: it would keep a new copy at every read
        got = self._kept.get(i)
        if got is None:
            got = self._kept[i] = self.reading[i]
        return got[0].clone(), got[1]  # a copy: an in-place change by the caller must not reach the kept image

    @property
    def transform(self) -> Any:
        return self.reading.transform

    @transform.setter
    def transform(self, value: Any) -> None:
        self.reading.transform = value
        self._kept.clear()

    def __getattr__(self, name: str) -> Any:
        reading = self.__dict__.get("reading")  # absent while unpickling: no recursion
        if reading is None:
            raise AttributeError(name)
        return getattr(reading, name)


def _reading(folder: Any, transform: Any) -> Any:
    """``folder`` (an ``ImageFolder``) reading its files through ``transform``: a shallow copy sharing its list of
    files, so that the folder is walked once however many readings the splits need."""
    other = copy.copy(folder)
    other.transform = transform
    return other


def _check_rounds_to_some(name: str, size: float | int, n: int, held: int, which: str) -> None:
    """A fraction ``size`` > 0 that rounds to no image is an error: the split asked for would silently be absent (a
    `test` then said to fit with `test_size` > 0, which it had)."""
    if isinstance(size, float) and size > 0 and held == 0:
        raise ValueError(f"`{name}`={size!r} of the {n} images of `root`{which} rounds to 0 images: pass a fraction "
                         f">= {1 / n:.3g} or a number of images (e.g. `{name}=1`), or 0 for no such split.")


def _note_mixed_images(folder: Any, positions: Tensor, size: tuple[int, int], sizes: bool = True,
                      channels: int | None = None) -> None:
    """Say so when the training images (up to ``_STATS_IMAGES`` of them, evenly spaced; only their headers are read)
    differ in size, as all are read at the first one's: an image-folder newcomer's phone-like photos of 24-64 px were
    read at 60 px without a word, and they found out from a misfit with the model's 32. With ``channels`` (those read
    from the first image), the same for grey and colour images: one grey file sorted first read a newcomer's colour
    folder as grey, without a word."""
    from PIL import Image

    step = max(1, len(positions) // _STATS_IMAGES)
    files: dict[tuple[int, int], list[str]] = {}  # (width, height) -> the sampled files of that size
    grey: list[str] = []
    colour: list[str] = []
    for i in positions[::step][:_STATS_IMAGES]:
        path = folder.samples[int(i)][0]
        try:
            with Image.open(path) as image:
                files.setdefault(image.size, []).append(path)
                (grey if _is_grey(image.mode) else colour).append(path)
        except OSError:
            continue  # a damaged file is named where it is read
    if channels is not None and grey and colour:
        odd = colour if channels == 1 else grey
        rank_zero_warn(f"ImageFolderDataModule: the training images are grayscale and colour ({len(grey)} and "
                       f"{len(colour)} of the {len(grey) + len(colour)} sampled); all are read as the first one, "
                       f"{'grayscale' if channels == 1 else 'RGB'}, the {'colour' if channels == 1 else 'grayscale'} "
                       f"ones too (e.g. {', '.join(repr(os.path.basename(f)) for f in odd[:3])}). Pass `channels` (3 "
                       "for colour, 1 for grayscale) to choose.")
    if sizes and len(files) > 1:
        ws, hs = sorted(w for w, _ in files), sorted(h for _, h in files)
        # the most common size and the odd files: a folder newcomer's one 32×32 image among 1,199 of 28×28 sorted
        # first, and every image was read at 32×32 with no word of which file it was
        (common_w, common_h), common = max(files.items(), key=lambda kv: (len(kv[1]), kv[0]))
        odd = [f for size_, fs in sorted(files.items()) if size_ != (common_w, common_h) for f in fs]
        rank_zero_info(f"ImageFolderDataModule: the training images differ in size (width {ws[0]}-{ws[-1]}, height "
                       f"{hs[0]}-{hs[-1]} px among those sampled); all are read at the first one's {size[1]}×{size[0]} "
                       f"(width × height). Pass `image_size` to choose the size. Most are {common_w}×{common_h} "
                       f"({len(common)} of the {sum(map(len, files.values()))} sampled); the others include "
                       f"{', '.join(repr(os.path.basename(f)) for f in odd[:3])}{' ...' if len(odd) > 3 else ''}.")


def _warn_starved_classes(folder: Any, train_pos: Tensor, held_out: bool, few: int = 3) -> None:
    """Warn of classes with no training image, or fewer than ``few``: an image newcomer's class of one image went,
    for some seeds, into the `test_size` split (drawn at random, not per class), and a model of five outputs trained on
    four classes without a word."""
    if len(folder.classes) < 2:
        return  # a GAN's one folder of images
    counts = torch.bincount(torch.as_tensor(folder.targets)[train_pos], minlength=len(folder.classes)).tolist()
    none = [c for c, n in zip(folder.classes, counts) if n == 0]
    scarce = [f"{c} ({n})" for c, n in zip(folder.classes, counts) if 0 < n < few]
    if not none and not scarce:
        return
    said = []
    if none:
        why = (": their images all went to the held-out splits, drawn at random, not per class" if held_out else "")
        said.append(f"class(es) {none} have no training image{why}")
    if scarce:
        said.append(f"class(es) {', '.join(scarce)} have fewer than {few}")
    rank_zero_warn(f"ImageFolderDataModule: {'; '.join(said)}: the model can hardly learn them, and ITLM's trims may "
                   "drop them altogether. Add images of them, or fewer held-out images (`test_size`, `val_size`; a "
                   "`test_root` of your own keeps every image of `root` for training).")


def _note_files_not_read(root: str, folder: Any, shown: int = 3) -> None:
    """Warn of the files in the class folders that are not read (not an image type torchvision reads, e.g. .gif,
    .heic): an image newcomer's 15 .gif photos of a 200-file folder were left out of training, and of the report of
    suspicious files, without a word. Hidden files (``.DS_Store``) and a few common non-images pass unsaid."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    base = os.path.abspath(os.path.expanduser(os.fspath(root)))
    quiet = ("thumbs.db", "desktop.ini")
    skipped: list[str] = []
    for name in folder.classes:
        for dirpath, _, files in os.walk(os.path.join(base, name)):
            skipped += [os.path.relpath(os.path.join(dirpath, f), base) for f in sorted(files)
                        if not f.startswith(".") and f.lower() not in quiet and not f.lower().endswith(IMG_EXTENSIONS)]
    if skipped:
        kinds: dict[str, int] = {}
        for f in skipped:
            ext = os.path.splitext(f)[1].lower() or "(no extension)"
            kinds[ext] = kinds.get(ext, 0) + 1
        listed = ", ".join(f"{n} {ext}" for ext, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
        rank_zero_warn(f"ImageFolderDataModule: {len(skipped)} file(s) in the class folders of `root`={root!r} are not "
                       f"read, not being of an image type torchvision reads ({listed}; e.g. "
                       f"{', '.join(repr(f) for f in skipped[:shown])}): they are neither trained on nor in the report. "
                       "Convert the images among them (to .png or .jpg) to include them.")


def _warn_if_root_is_a_level_up(root: str, folder: Any) -> None:
    """Warn when no image lies directly in its class folder (``ImageFolder`` reads sub-folders too): ``root`` then is
    most likely the folder above the class folders — an image-folder CLI user's ``root: photos`` trained on the
    classes ``new``, ``test`` and ``train``, with one warning about a rarely predicted class."""
    base = os.path.abspath(os.path.expanduser(os.fspath(root)))
    nested = [os.path.relpath(p, base).split(os.sep) for p, _ in folder.samples]
    if not nested or any(len(parts) <= 2 for parts in nested):
        return
    inner = sorted({parts[1] for parts in nested})
    # the training folder where there is one: the first in order was `test` for a newcomer's `fm/{train,test}`, and
    # the warning's example would have trained on the test set
    train = next((c for c in folder.classes if c.lower() in ("train", "training")), nested[0][0])
    example = os.path.join(os.fspath(root), train)
    rank_zero_warn(f"ImageFolderDataModule: no image of `root`={root!r} lies directly in a class folder: the classes "
                   f"are its sub-folders {folder.classes[:6]}{' ...' if len(folder.classes) > 6 else ''}, each "
                   f"holding folders ({inner[:6]}{' ...' if len(inner) > 6 else ''}). If those are your classes, "
                   f"point `root` one level down, e.g. {example!r}.")


def _grey(image: Any) -> Any:
    """One channel, as ``T.Grayscale(1)``; a float image (a deep one, `_read_image`) stays as it is: PIL's
    ``convert("L")`` would clip it to 0 or 1 of 255."""
    return image if image.mode == "F" else image.convert("L")


def _rgb(image: Any) -> Any:
    return image if image.mode == "F" else image.convert("RGB")  # a float image: made three channels as a tensor


def _three_channels(x: Tensor) -> Tensor:
    return x.expand(3, -1, -1).clone() if x.shape[0] == 1 else x
