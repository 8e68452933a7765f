"""Pieces every in-memory datamodule shares: the torchvision loader with its error, and the split loaders."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from lit_robust._backend import rank_zero_warn
from lit_robust.data.indexed import IndexedDataset
from lit_robust.data.spec import DataSpec, TargetKind, dataset_spec

__all__ = ["torchvision_split", "check_root", "SplitLoaders", "built_already", "remember_settings"]


def check_root(root: Any, *names: str) -> Any:
    """``root`` as given when it is a path, else a ``TypeError`` that names it and the folders the datamodule reads
    there (``names``: its torchvision data sets, ``"MNIST"`` when none is given): ``root: null`` (a YAML ``root:``
    left empty) was taken and ended at setup in ``os.path.expanduser(None)``, a traceback naming no argument; a
    FashionMNIST user was told to put ``MNIST/raw`` there."""
    if not isinstance(root, (str, os.PathLike)):
        folders = " and ".join(f"{name}/raw" for name in (names or ("MNIST",)))
        raise TypeError(f"`root` must be the folder that holds torchvision's data sets (e.g. '../shared/data', with "
                        f"{folders} in it, or where `download=True` puts them), got {root!r}.")
    return root


def torchvision_split(name: str, root: str, train: bool, download: bool = False) -> Any:
    """The ``train`` (or test) split of ``torchvision.datasets.<name>`` under ``root`` (torchvision's layout),
    with an error that says where the files were looked for and how to get them."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, name)
    try:
        return cls(os.path.expanduser(root), train=train, download=download)
    except RuntimeError as err:
        where = os.path.abspath(os.path.expanduser(root))
        relative = "" if os.path.isabs(os.path.expanduser(root)) else (
            f" (a relative `root` is read from the current folder, {os.getcwd()}, not from the config file's)")
        # a CLI newcomer running a shipped config from another folder was advised the path that had just failed; and
        # with `download=True` and no network, to pass `download=True`
        fix = (" (`download=True` could not fetch it: no network?)" if download
               else ", or pass `download=True` (needs a network)")
        raise RuntimeError(
            f"{name} not found under `root`={root!r}, i.e. {where}{relative} ({err}). Point `root` at the folder "
            f"that holds {name}/raw{fix}."
        ) from err


class _Same:
    """A setting compared by identity (a DataFrame, a tensor): ``==`` on it is elementwise, and a copy is costly."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.value is self.value

    def __repr__(self) -> str:
        return f"the {type(self.value).__name__} given before"


def _setting(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, os.PathLike)):
        return value
    if isinstance(value, (list, tuple)) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return tuple(value)  # a copy: a list changed in place is a change too
    return _Same(value)


def _shown(value: Any) -> str:
    """``value`` for the warning: its repr, or ``another DataFrame`` for one compared by identity (its repr is long)."""
    return f"another {type(value).__name__}" if isinstance(_setting(value), _Same) else repr(value)


def remember_settings(datamodule: Any, names: Sequence[str]) -> None:
    """Record the attributes ``names`` that ``datamodule.setup`` has just built the splits from, for
    :func:`built_already`."""
    datamodule._built_from = {name: _setting(getattr(datamodule, name, None)) for name in names}


def built_already(datamodule: Any) -> bool:
    """Whether ``datamodule.setup`` has built the splits already (``train_set`` is set), so that it returns at once:
    they are built once per datamodule. A setting recorded by :func:`remember_settings` that has changed since is
    warned about, once per value: a notebook user's ``dm.clean_ratio = 0.5`` (or ``seed``) before the next fit was
    ignored without a word."""
    if getattr(datamodule, "train_set", None) is None:
        return False
    built = getattr(datamodule, "_built_from", {})
    changed = {name: was for name, was in built.items() if _setting(getattr(datamodule, name, None)) != was}
    said = datamodule.__dict__.setdefault("_said_changed", set())
    now = {name: _shown(getattr(datamodule, name, None)) for name in changed}
    news = [f"`{name}` (now {now[name]}, built with {was!r})" for name, was in changed.items()
            if (name, now[name]) not in said]
    if news:
        said.update(now.items())
        cls = type(datamodule).__name__
        rank_zero_warn(f"{cls}: {', '.join(news)} changed after `setup` built the splits, which are built once per "
                       f"datamodule and keep their settings; the change is ignored. For splits with the new settings "
                       f"make a new {cls}(...).")
    return True


class SplitLoaders:
    """Loaders of a datamodule holding ``train_set`` / ``val_set`` / ``test_set`` (:class:`IndexedDataset` or
    ``None``) with ``batch_size``, ``eval_batch_size``, ``num_workers`` and optionally ``drop_last``:
    the shuffled training loader, the same set in a fixed order for round scoring passes (``scoring_dataloader``,
    used by :class:`~lit_robust.ITLM`), the evaluation loaders, and ``predict_dataloader`` (the test split again).

    ``trainer.predict`` / ``lit-robust predict`` predict the **test split** (clean: the data a trained model is
    meant for), in a fixed order (no shuffling, evaluation batch size), so the n-th prediction is the test sample
    of index n. A datamodule without a test split says so when asked for one.

    ``setup`` builds the splits once per datamodule: a setting they are built from (``clean_ratio``, ``seed``,
    ``val_size``, ...) changed afterwards is ignored, with a warning (:func:`built_already`); make a new datamodule
    for other splits. The loaders' settings (``batch_size``, ``eval_batch_size``, ``num_workers``) are read at each
    loader and may change."""

    train_set: IndexedDataset | None = None
    val_set: IndexedDataset | None = None
    test_set: IndexedDataset | None = None
    drop_last: bool = False
    #: what the targets are (see :class:`~lit_robust.data.spec.DataSpec`); ``num_classes`` is read when "class"
    target_kind: TargetKind = "class"

    @property
    def data_spec(self) -> DataSpec | None:
        """What the samples look like (input shape, targets), once set up; ``None`` before :meth:`setup`."""
        ds = self.train_set if self.train_set is not None else self.test_set
        if ds is None:
            return None
        return dataset_spec(ds, type(self).__name__, self.target_kind, getattr(self, "num_classes", None))

    def _loader(self, ds: IndexedDataset, shuffle: bool, batch_size: int, drop_last: bool = False) -> DataLoader:
        kwargs: dict[str, Any] = {}
        if self.num_workers > 0:
            # Persistent workers: an uninterrupted fit creates each loader's iterator once, a resumed fit again, and
            # each creation draws its workers' base seed. Drawn from torch's global generator, that extra draw
            # shifted every later shuffle and dropout mask of a resumed fit (a newcomer's MNISTDataModule with
            # num_workers=2); drawn from a generator of the loader's own it leaves the global one alone. The shuffle
            # stays on the global generator, whose state the checkpoints carry (callbacks._resume.random_state).
            kwargs["generator"] = torch.Generator().manual_seed(int(getattr(self, "seed", 0) or 0))
            if shuffle:
                kwargs["sampler"], shuffle = RandomSampler(ds), False
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=drop_last, persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, True, self.batch_size, self.drop_last)

    def scoring_dataloader(self) -> DataLoader:
        """The whole training set in a fixed order, evaluation batch size (for round scoring passes)."""
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, False, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            # no validation split (`val_size=0`, the default): an empty list is Lightning's way to skip validation,
            # yet it asks "Total length of `list` across ranks is zero. Please make sure this was your intention."
            # on every fit, a warning that cried wolf to a newcomer. Intended here, so not said.
            warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
            return []
        return self._loader(self.val_set, False, self.eval_batch_size)

    #: what to do about a missing test split, appended to the error of ``test`` / ``predict``
    _no_test_split_advice = "Pass your own dataloader to `trainer.{command}(model, dataloaders=...)`."

    def _no_test_split(self, command: str) -> Exception:
        if self.train_set is None:
            return RuntimeError(f"{type(self).__name__}: call `setup()` before `{command}_dataloader()`.")
        # a CSV newcomer's `lit-robust test` of an unlabelled anomaly table ended in "AssertionError: call setup()
        # first" and a traceback, where `predict` said what was missing
        return NotImplementedError(f"{type(self).__name__} has no test split, so there is nothing to {command}: "
                                   f"`{command}` uses the test split. "
                                   + self._no_test_split_advice.format(command=command))

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise self._no_test_split("test")
        return self._loader(self.test_set, False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        """The test split in a fixed order (not shuffled), evaluation batch size: what ``trainer.predict`` and
        ``lit-robust predict`` predict. Batches are ``(index, input, target)`` like the test loader's (the index is
        the test sample's position in the test split)."""
        if self.test_set is None:
            raise self._no_test_split("predict")
        return self._loader(self.test_set, False, self.eval_batch_size)
