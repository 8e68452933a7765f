"""Datasets whose samples carry their dataset index (and, when known, a corruption flag).

Batched fetching: PyTorch's ``DataLoader`` (with ``batch_size=``) hands a whole batch of indices to a map-style
dataset's ``__getitems__`` when it has one, then passes the result to its ``collate_fn``.
:meth:`IndexedDataset.__getitems__` indexes the wrapped tensors once per batch when the wrapped dataset allows it
(a ``TensorDataset``, or a ``Subset`` of one, at any depth), and returns a lazy sequence of the batch's samples that
:func:`torch.utils.data.default_collate` turns into the collated batch without touching the samples one by one
(a collate function for this module's private sample type is registered in ``default_collate_fn_map``, PyTorch's
documented extension point). Any other wrapped dataset is fetched through its own ``__getitems__``, or sample by
sample. Either way the batch is the one per-sample fetching and ``default_collate`` would give: same values, dtypes
and order.
"""

from __future__ import annotations

import array
import warnings
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any, NamedTuple, NoReturn

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset
from torch.utils.data._utils import collate as _collate

__all__ = ["IndexedDataset", "IndexedBatch", "IndexedCollate", "unpack_batch", "check_pair_dataset"]


class DictSamples(Dataset):
    """A dataset of dict samples as ``(inputs, target)`` pairs: each dict less ``key``, and its ``key`` entry
    (``IndexedDataset(..., target_key=key)``)."""

    def __init__(self, dataset: Any, key: str) -> None:
        self.dataset, self.key = dataset, key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        sample = self.dataset[index]
        if not isinstance(sample, Mapping) or self.key not in sample:
            keys = f"keys {sorted(map(str, sample))[:8]}" if isinstance(sample, Mapping) else _describe(sample)
            raise ValueError(f"`target_key` must be a key of every sample, got {self.key!r}, but item {index} has "
                             f"{keys}.")
        return {k: v for k, v in sample.items() if k != self.key}, sample[self.key]


class IndexedDataset(Dataset):
    """Wrap a map-style dataset so that each sample is ``(index, input, target[, is_corrupted])``.

    Args:
        dataset: a map-style dataset returning ``(input, target)``.
        targets: optional replacement targets (e.g. corrupted labels), one per sample; True/False ones become the
            class labels 1/0, and integer ones of a narrower dtype (``column.cat.codes``' int8, int32, ...) int64,
            the dtype losses take class labels in.
        corrupted: optional ground-truth flags, one per sample. They are only ever used for metrics
            (clean precision of a selection, ...); no algorithm reads them.
        target_key: for a dataset of dict samples (Hugging Face's ``{"input_ids", "attention_mask", "labels"}``):
            the key of the target; each sample becomes ``(the dict less that key, sample[target_key])``.

    >>> ds = IndexedDataset(torch.utils.data.TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 2])),
    ...                     corrupted=torch.tensor([False, True, False]))
    >>> i, x, y, c = ds[1]
    >>> (i, int(y), bool(c))
    (1, 1, True)
    """

    def __init__(self, dataset: Any, targets: Tensor | Sequence | None = None, corrupted: Tensor | None = None,
                 target_key: str | None = None) -> None:
        if target_key is not None:
            if not isinstance(target_key, str) or not target_key:
                raise TypeError(f"`target_key` must be the key of the target in each dict sample (a non-empty str), "
                                f"got {target_key!r}.")
            dataset = DictSamples(dataset, target_key)
        if isinstance(dataset, IndexedDataset):  # a notebook newcomer's re-run cell: "a tuple of 3 element(s)"
            raise TypeError("`dataset` is already an IndexedDataset (its samples carry their index): use it as it is, "
                            "or wrap its `.dataset`, the (input, target) dataset inside it.")
        n = check_pair_dataset(dataset)
        self.dataset = dataset
        if targets is not None:
            if isinstance(targets, dict) or (isinstance(targets, (list, tuple)) and targets
                                             and isinstance(targets[0], (tuple, dict))
                                             and any(_several_parts(t) for t in targets)):
                # a multi-task user's `list(zip(digit, ink))` became float [N, 2] targets (the digit 0.0), a dict was
                # told to use LabelEncoder
                raise ValueError("`targets` replaces one target per sample: a tensor, array or sequence of numbers "
                                 "(rows of numbers for several regression targets). For targets of several parts "
                                 f"({'a dict of columns' if isinstance(targets, dict) else 'a tuple or dict per sample'}"
                                 ", e.g. a class label and a value) let the dataset return them as each sample's target "
                                 "(`(input, {\"label\": y, \"value\": v})`), and set `label_key` on your RobustMixin "
                                 "module to the label's key.")
            _warn_mixed_columns(targets)
            dtypes = getattr(targets, "dtypes", None)  # a one-column DataFrame's column is read below
            categorical = str(getattr(targets, "dtype", "")) == "category" or (
                getattr(targets, "columns", None) is not None and len(targets.columns) == 1
                and str(list(dtypes)[0]) == "category")
            targets = _by_position(targets)
            if isinstance(targets, np.ndarray) and targets.dtype in (np.uint16, np.uint32, np.uint64):
                # torch < 2.3 reads no uint16/uint32/uint64 array ("can't convert np.ndarray of type numpy.uint16");
                # they become int64 below on every torch anyway (uint64 had stayed uint64, which a classifier's loss
                # refuses: "expected target dtype to be Long or Byte, but got UInt64")
                targets = targets.astype(np.int64)
            try:
                targets = torch.as_tensor(targets)
            except (TypeError, ValueError, RuntimeError) as err:  # strings: torch's "too many dimensions 'str'"
                table = np.asarray(targets, dtype=object)
                # the first entry that is no number (`None` among ints was told "got int entries such as 0")
                first = next((v for v in table.ravel() if not isinstance(v, (Integral, float, np.number))),
                             next(iter(table.ravel()), None))
                raise ValueError(f"`targets` must be numbers, one per sample (integer class labels 0..C-1, or float "
                                 f"regression targets), got {type(first).__name__} entries such as {first!r}"
                                 + (f" in {table.shape[1]} columns" if table.ndim == 2 else "") + ": "
                                 + ("numbers written as text: convert them, e.g. `pandas.to_numeric(column)`."
                                    if _reads_as_number(first) else
                                    "a missing target: fill it, or leave those samples out." if first is None else
                                    "a categorical column's integer codes are `column.cat.codes`." if categorical else
                                    "map them to integers first, e.g. with sklearn.preprocessing.LabelEncoder.")
                                 ) from err
            if targets.dtype == torch.bool:
                # a pandas user's `df["churned"]`: class labels 0/1 (a classifier's loss refuses bool targets from
                # inside torch, "expected target dtype to be Long or Byte, but got Bool")
                targets = targets.long()
            if targets.dtype in _NARROW_INTEGERS:
                # integer class labels as int64, as losses and `one_hot` take them: `column.cat.codes` (int8, the
                # advice above) stopped the fit in torch's "expected target dtype to be Long or Byte, but got Char"
                targets = targets.long()
            if targets.ndim == 0:  # one number (`targets=3`) was torch's bare "len() of a 0-d tensor"
                raise ValueError(f"`targets` must hold one entry per sample ({n}), got a single number "
                                 f"{targets.item()!r}.")
            if len(targets) != n:
                raise ValueError(f"`targets` must have one entry per sample ({n}), got {len(targets)}.")
        if corrupted is not None:
            try:
                raw = torch.as_tensor(_by_position(corrupted))
            except (TypeError, ValueError, RuntimeError) as err:
                # text flags or a pandas "boolean" column with missing values (<NA>) were torch's bare "too many
                # dimensions 'str'" / "can't convert np.ndarray of type numpy.object_"
                table = np.asarray(_by_position(corrupted), dtype=object).ravel()
                odd = next((v for v in table if not isinstance(v, (bool, np.bool_, Integral, float, np.floating))),
                           table[0] if len(table) else None)
                raise ValueError(f"`corrupted` must be a boolean (or 0/1) mask, one flag per sample, got "
                                 f"{type(odd).__name__} entries such as {odd!r}; a flag that is not known is no "
                                 "flag: fill it (e.g. `column.fillna(False)`) or leave those samples out.") from err
            if raw.dtype != torch.bool and bool(((raw != 0) & (raw != 1)).any()):
                raise ValueError(f"`corrupted` must be a boolean (or 0/1) mask, got values "
                                 f"{sorted(set(raw.flatten().tolist()))[:6]}.")
            corrupted = raw.to(torch.bool)
            if corrupted.ndim != 1 or len(corrupted) != n:
                raise ValueError(f"`corrupted` must be a 1-D mask with one entry per sample ({n}), got shape "
                                 f"{tuple(corrupted.shape)}.")
        self.targets = targets
        self.corrupted = corrupted
        base = dataset.tensors if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2 else (None, None)
        warn_nonfinite_rows("inputs", base[0])
        warn_nonfinite_rows("targets", targets if targets is not None else base[1])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        x, y = self._read(index)
        if self.targets is not None:
            y = self.targets[index]
        if self.corrupted is None:
            return index, x, y
        return index, x, y, self.corrupted[index]

    def __getitems__(self, indices: Sequence[int]) -> Sequence[tuple]:
        """The samples at ``indices``, fetched in one go where the wrapped dataset allows it.

        ``DataLoader`` calls this with each batch's indices. Over a ``TensorDataset`` (or a ``Subset`` of one)
        each tensor is indexed once per batch and the result is a lazy sequence that ``default_collate``
        collates without visiting the samples; otherwise the wrapped dataset's own ``__getitems__`` or
        per-sample indexing is used. Each item equals ``self[i]``, so any ``collate_fn`` sees the same samples.
        A subclass that overrides ``__getitem__`` is fetched through it, sample by sample.
        """
        if type(self).__getitem__ is not IndexedDataset.__getitem__:
            return [self[i] for i in indices]
        index = _index_tensor(indices)
        position = None if index is None else _positions(index, len(self))
        columns = None if position is None else _fetch_columns(self.dataset, position)
        if columns is None:
            fetch = getattr(self.dataset, "__getitems__", None)
            pairs = fetch(list(indices)) if callable(fetch) else [self._read(i) for i in indices]
            return [self._with_index(i, x, y) for i, (x, y) in zip(indices, pairs, strict=True)]
        assert index is not None and position is not None
        x, y = columns
        if self.targets is not None:
            y = _take(self.targets, position)
        # the collated index is what `default_collate` makes of `indices`: int64 for Python ints (what samplers
        # yield); other index types (NumPy ints, tensors) keep their dtype, so they are collated as usual
        index_field = index if type(indices[0]) is int else None
        fields = [index_field, x, y]
        if self.corrupted is not None:
            fields.append(_take(self.corrupted, position))
        return _SampleBatch(indices, fields)

    def _read(self, index: int) -> Any:
        """``self.dataset[index]``; a file that cannot be read (a truncated PNG: PIL's ``OSError: image file is
        truncated``, which stopped an image-folder newcomer's fit without naming the file) is named in the error."""
        try:
            return self.dataset[index]
        except OSError as exc:
            _raise_named(exc, index, self.dataset)

    def _with_index(self, index: int, x: Any, y: Any) -> tuple:
        if self.targets is not None:
            y = self.targets[index]
        if self.corrupted is None:
            return index, x, y
        return index, x, y, self.corrupted[index]


#: integer dtypes of class labels widened to int64 (``uint64`` is left: its values may not fit). ``uint16`` and
#: ``uint32`` exist from torch 2.3 on: named directly, they made ``import lit_robust`` fail on the torch 2.1 and 2.2
#: that pyproject.toml allows
_NARROW_INTEGERS = tuple(getattr(torch, name) for name in ("int8", "int16", "int32", "uint8", "uint16", "uint32")
                         if hasattr(torch, name))


def _reads_as_number(value: Any) -> bool:
    """Whether ``value`` is text that reads as a number (``"16.3"``)."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def subset_of_indexed_hint(dataset: Any) -> str | None:
    """What to do when ``dataset`` is a ``Subset`` (at any depth) of an :class:`IndexedDataset`, else ``None``: its
    samples keep the indices of the full set, which are no positions in the subset."""
    if not isinstance(dataset, torch.utils.data.Subset):
        return None
    inner, positions = dataset, range(len(dataset))
    while isinstance(inner, torch.utils.data.Subset):
        positions = [inner.indices[i] for i in positions]
        inner = inner.dataset
    if inner is dataset or not isinstance(inner, IndexedDataset):
        return None
    if all(p == i for i, p in enumerate(positions)):  # a prefix (`Subset(ds, range(k))`): the indices are positions
        return None
    return (f"`{type(dataset).__name__}` of an `IndexedDataset` keeps the full set's indices ({len(inner)} samples) "
            f"for its {len(dataset)}. Put the Subset inside instead: `IndexedDataset(Subset(train_set.dataset, keep), "
            "targets=train_set.targets[keep])` (the report's `source_index` then gives each row's position in "
            "`train_set`).")


def _warn_mixed_columns(targets: Any) -> None:
    """Warn when ``targets`` is a table (a pandas DataFrame, ...) whose columns mix integer and float dtypes: they are
    read as one float array, right for several regression targets, wrong for a class label beside a value (the label
    3 becomes 3.0 without a word, as a multi-task user's did). Boolean columns count as integer ones (True is 1.0).
    Not refused: counts beside prices are regression too."""
    dtypes = getattr(targets, "dtypes", None)
    if getattr(targets, "columns", None) is None or dtypes is None or not hasattr(dtypes, "__iter__"):
        return
    kinds = {str(c): getattr(d, "kind", "O") for c, d in zip(targets.columns, dtypes)}
    whole = [c for c, k in kinds.items() if k in "iub"]
    if whole and any(k == "f" for k in kinds.values()):
        warnings.warn(f"IndexedDataset: `targets` has integer or boolean column(s) {whole[:4]} beside float ones: "
                      f"all are read as float regression targets, shape [{len(targets)}, {len(kinds)}]. If "
                      f"{whole[0]!r} holds class labels, let the dataset return each sample's target as a dict "
                      "(`(input, {\"label\": y, \"value\": v})`) and set `label_key` on your RobustMixin module.",
                      UserWarning, stacklevel=3)


def _several_parts(entry: Any) -> bool:
    """Whether one entry of ``targets`` holds parts of different kinds: a dict, or a tuple (what ``zip`` makes) mixing
    integers and floats -- Python, NumPy or 0-d tensor ones (a class label and a value). A list is a row of numbers
    (several regression targets, a JSON row that writes 0 for 0.0, a box with a 0 coordinate) and is taken."""
    if isinstance(entry, dict):
        return True
    if not isinstance(entry, tuple):
        return False
    kinds = set()
    for v in entry:
        if isinstance(v, Tensor) and v.ndim == 0:
            kinds.add("float" if v.is_floating_point() else "int" if v.dtype != torch.bool else "bool")
        elif isinstance(v, (float, np.floating)):
            kinds.add("float")
        elif isinstance(v, (Integral, np.integer)) and not isinstance(v, (bool, np.bool_)):
            kinds.add("int")
    return {"int", "float"} <= kinds


def _by_position(values: Any) -> Any:
    """``values`` (``targets`` or ``corrupted``) as a new, writable NumPy array when they are a NumPy array or an
    array-like with ``.to_numpy()`` (a pandas Series or Index, ...), so that entry ``i`` is the ``i``-th value, read by
    position; anything else (a tensor, a list) as it is.

    ``torch.as_tensor`` of a pandas Series looks up ``series[i]`` for ``i`` in ``0 .. n-1``, which pandas reads as index
    labels: after ``train_test_split`` they are not ``0 .. n-1`` and pandas raises a bare ``KeyError`` (an index that
    is a permutation of ``0 .. n-1`` got through by the accident of its labels). An array from ``.to_numpy()`` may be
    read-only (pandas 3), which ``torch.as_tensor`` would share with a warning; the copy also keeps later edits of the
    caller's array out of the data set."""
    if isinstance(values, Tensor):
        return values
    columns = getattr(values, "columns", None)
    if columns is not None and len(columns) == 1:
        # `df[["y"]]`, a one-column DataFrame: its column (as `[n, 1]` targets a classifier's loss failed inside torch
        # and a `[B]` regression output broadcast against them to `[B, B]`: two release checkers)
        values = values[columns[0]]
    to_numpy = getattr(values, "to_numpy", None)
    if callable(to_numpy) and not isinstance(values, np.ndarray):
        values = to_numpy()
    if isinstance(values, np.ndarray) and values.dtype == object and all(
            isinstance(v, (int, float, np.number, bool, np.bool_)) for v in values.ravel()):
        # numbers held in an object column (a CSV's mixed column after cleaning, a frame of a bool and a float
        # column): their numbers, not the "map them to integers with LabelEncoder" advice a regression analyst got for
        # float targets and a pandas user for a True/False column beside a float one
        values = np.array(values.tolist())
    return np.array(values, copy=True) if isinstance(values, np.ndarray) else values


def _index_tensor(indices: Sequence[int]) -> Tensor | None:
    """Integer ``indices`` (Python or NumPy ints, as samplers yield them, or a 1-D integer tensor) as a new
    1-D int64 CPU tensor; ``None`` for anything else (floats, an empty batch, ...), which is fetched per sample.

    ``array('q', ...)`` reads a list of ints ~20x faster than ``torch.as_tensor`` and refuses floats."""
    if isinstance(indices, Tensor):
        ok = indices.ndim == 1 and indices.numel() > 0 and not indices.is_floating_point() \
            and not indices.is_complex() and indices.dtype != torch.bool
        return indices.to("cpu", torch.int64, copy=True) if ok else None
    if len(indices) == 0:
        return None
    try:
        buffer = array.array("q", indices)
    except (TypeError, OverflowError):
        return None
    return torch.frombuffer(buffer, dtype=torch.int64).clone()  # a tensor that owns its memory


def _positions(index: Tensor, n: int) -> Tensor:
    """``index`` into a sequence of length ``n`` with negative entries counted from the end, as ``seq[i]``
    counts them; an entry outside ``[-n, n)`` is an ``IndexError``, as it is for ``seq[i]``."""
    lo, hi = (int(v) for v in torch.aminmax(index))
    if lo < -n or hi >= n:
        bad = lo if lo < -n else hi
        raise IndexError(f"index {bad} is out of range for a dataset of {n} samples")
    return torch.where(index < 0, index + n, index) if lo < 0 else index


def _take(values: Tensor, position: Tensor) -> Tensor:
    """``values[position]`` along the first dimension (``index_select``: several times faster than ``[]``)."""
    return values.index_select(0, position.to(values.device))


def _fetch_columns(dataset: Any, position: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(inputs, targets)`` of ``dataset``'s samples at ``position`` (entries in ``[0, len(dataset))``), already
    collated, when ``dataset`` is a ``TensorDataset`` of two tensors or a ``Subset`` of such a dataset (neither
    with an overridden ``__getitem__``), at any depth; ``None`` for any other dataset."""
    cls = type(dataset)
    if isinstance(dataset, TensorDataset) and cls.__getitem__ is TensorDataset.__getitem__:
        if len(dataset.tensors) != 2:
            return None
        x, y = dataset.tensors
        return _take(x, position), _take(y, position)
    if (isinstance(dataset, Subset) and cls.__getitem__ is Subset.__getitem__
            and cls.__getitems__ is Subset.__getitems__):
        inner = dataset.indices
        if isinstance(inner, Tensor):
            mapped = _index_tensor(_take(inner, position)) if inner.ndim == 1 else None
        else:
            mapped = _index_tensor([inner[i] for i in position.tolist()])
        if mapped is None:
            return None
        return _fetch_columns(dataset.dataset, _positions(mapped, len(dataset.dataset)))
    return None


class _Sample(tuple):
    """One ``(index, input, target[, is_corrupted])`` sample taken from a :class:`_SampleBatch`; the type
    ``default_collate`` dispatches on (see :func:`_collate_samples`)."""

    __slots__ = ()


class _SampleBatch(Sequence):
    """The samples of one batch, held as already-collated fields; item ``j`` is built on demand."""

    __slots__ = ("indices", "fields")

    def __init__(self, indices: Sequence[int], fields: list[Tensor | None]) -> None:
        self.indices = indices
        self.fields = fields  # [index (None: collate `indices` when asked), input, target[, is_corrupted]]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: Any) -> Any:
        if isinstance(j, slice):
            return [self[k] for k in range(*j.indices(len(self)))]
        return _Sample((self.indices[j], *(f[j] for f in self.fields[1:])))

    def collated(self, collate_fn_map: dict) -> list[Tensor]:
        """What ``default_collate`` makes of the samples: the list ``[index, input, target[, is_corrupted]]``."""
        index = self.fields[0]
        if index is None:
            index = _collate.collate(list(self.indices), collate_fn_map=collate_fn_map)
        return [index, *self.fields[1:]]


def _collate_samples(batch: Sequence[_Sample], *, collate_fn_map: dict | None = None) -> list:
    """``default_collate`` for :class:`_Sample` items: a whole :class:`_SampleBatch` collated under PyTorch's
    default tensor and int rules is returned as it is; anything else is collated field by field, exactly as
    ``collate`` does for tuples."""
    if (isinstance(batch, _SampleBatch) and collate_fn_map is not None
            and collate_fn_map.get(Tensor) is _collate.collate_tensor_fn
            and collate_fn_map.get(int) is _collate.collate_int_fn):
        return batch.collated(collate_fn_map)
    it = iter(batch)
    size = len(next(it))
    if not all(len(sample) == size for sample in it):
        raise RuntimeError("each element in list of batch should be of equal size")
    return [_collate.collate(field, collate_fn_map=collate_fn_map) for field in zip(*batch, strict=True)]


_collate.default_collate_fn_map.setdefault(_Sample, _collate_samples)


_PAIR_HINT = "e.g. `IndexedDataset(torch.utils.data.TensorDataset(x, y))`"
_COLLATE_HINT = ("A `collate_fn` of your own receives those samples and must return the batch in that order, the "
                 "index a 1-D integer tensor: `lit_robust.IndexedCollate(your_collate_fn)` does so for a "
                 "`collate_fn` of `(input, target)` pairs.")


#: the fix for a batch with more than one input, said by every batch-layout error below
_SEVERAL_INPUTS = "Several inputs go in one tuple or dict, e.g. `(index, (ids, mask), target)`."


class IndexedCollate:
    """A ``collate_fn`` for :class:`IndexedDataset` samples, made from yours for ``(input, target)`` pairs (one that
    pads variable-length sequences, builds a dict of inputs, ...): your function collates the pairs, and the batch
    becomes ``(index, input, target[, is_corrupted])`` with the index (int64) and flags (bool) as 1-D tensors.

    ``target_key``: for a collate of dict records with the label inside, Hugging Face's ``DataCollatorWithPadding``
    style: each sample reaches ``collate_fn`` as its input dict with the target added under ``target_key``, and
    ``collate_fn`` returns a dict batch, from which ``target_key`` is taken as the target (the rest is the input).
    With ``IndexedDataset(records, target_key="label")`` and HF's collators, pass ``target_key="labels"``: they take
    ``labels`` in each record and return it so.

    Use it for the training loader over an :class:`IndexedDataset`; evaluation loaders of plain pairs keep yours.
    Picklable (a class, not a closure) when ``collate_fn`` is, so loaders with worker processes can use it.

    >>> def pad(pairs):  # yours: (tokens, label) pairs -> ({"ids": padded}, labels)
    ...     ids = torch.nn.utils.rnn.pad_sequence([t for t, _ in pairs], batch_first=True)
    ...     return {"ids": ids}, torch.tensor([y for _, y in pairs])
    >>> data = IndexedDataset([(torch.tensor([5, 6, 7]), 1), (torch.tensor([8]), 0)])
    >>> index, x, y = IndexedCollate(pad)([data[0], data[1]])
    >>> index.tolist(), x["ids"].tolist(), y.tolist()
    ([0, 1], [[5, 6, 7], [8, 0, 0]], [1, 0])

    >>> def pad_records(records):  # yours, HF style: dict records with "labels" -> one dict batch
    ...     ids = torch.nn.utils.rnn.pad_sequence([r["input_ids"] for r in records], batch_first=True)
    ...     return {"input_ids": ids, "labels": torch.tensor([r["labels"] for r in records])}
    >>> records = [{"input_ids": torch.tensor([5, 6]), "label": 1}, {"input_ids": torch.tensor([7]), "label": 0}]
    >>> data = IndexedDataset(records, target_key="label")
    >>> index, x, y = IndexedCollate(pad_records, target_key="labels")([data[0], data[1]])
    >>> index.tolist(), sorted(x), x["input_ids"].tolist(), y.tolist()
    ([0, 1], ['input_ids'], [[5, 6], [7, 0]], [1, 0])
    """

    def __init__(self, collate_fn: Any, target_key: str | None = None) -> None:
        if not callable(collate_fn):
            raise TypeError(f"`collate_fn` must be a function of a list of `(input, target)` pairs, got "
                            f"{_describe(collate_fn)}.")
        if target_key is not None and not isinstance(target_key, str):
            raise TypeError(f"`target_key` must be the key of the target in your collate's dict batch (a str, e.g. "
                            f"'labels') or None, got {_describe(target_key)}.")
        self.collate_fn, self.target_key = collate_fn, target_key

    def __call__(self, samples: Sequence[Sequence[Any]]) -> tuple:
        samples = list(samples)
        if not samples or any(not isinstance(s, Sequence) or len(s) not in (3, 4) for s in samples):
            first = _describe(samples[0]) if samples else "no samples"
            raise ValueError(f"`IndexedCollate` collates `lit_robust.IndexedDataset` samples `(index, input, target[, "
                             f"is_corrupted])`, got {first}.")
        name = _name_of(self.collate_fn)
        if self.target_key is not None:
            pair = self._collate_records(samples, name)
        else:
            pair = self.collate_fn([(s[1], s[2]) for s in samples])
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            # the batch's own label key: 'labels' was named whatever the batch held (a sequence newcomer's
            # `{"input_ids", "attention_mask", "label"}` was told `target_key='labels'`)
            key = label_key_of(pair) if isinstance(pair, Mapping) else "label"
            records = (f" A dict batch with the label inside: return `(batch, batch.pop({key!r}))` from `{name}`, "
                       "or, when the samples are dict records (`IndexedDataset(records, target_key=...)`, Hugging "
                       f"Face's style), pass `IndexedCollate(your_fn, target_key={key!r})`."
                       if isinstance(pair, Mapping) else "")
            raise ValueError(f"`IndexedCollate`: `{name}` must return a batch `(input, target)`, got "
                             f"{_describe(pair)}; several inputs go in one tuple or dict, e.g. `((ids, mask), y)`."
                             f"{records}")
        batch = [torch.tensor([int(s[0]) for s in samples], dtype=torch.int64), pair[0], pair[1]]
        if len(samples[0]) == 4:
            batch.append(torch.tensor([bool(s[3]) for s in samples], dtype=torch.bool))
        return tuple(batch)

    def _collate_records(self, samples: list, name: str) -> tuple[Any, Any]:
        """``target_key``: the samples as dict records with the target inside, the dict batch split."""
        key = self.target_key
        records = []
        for s in samples:
            if not isinstance(s[1], Mapping):
                raise ValueError(f"`IndexedCollate(target_key={key!r})` hands `{name}` dict records, so the "
                                 f"samples' inputs must be dicts (`IndexedDataset(records, target_key=...)`), got "
                                 f"{_describe(s[1])}.")
            records.append({**s[1], key: s[2]})
        batch = self.collate_fn(records)
        if not isinstance(batch, Mapping) or key not in batch:
            keys = f" (keys {sorted(map(str, batch))[:8]})" if isinstance(batch, Mapping) else ""
            raise ValueError(f"`IndexedCollate(target_key={key!r})`: `{name}` must return a dict batch holding the "
                             f"target under {key!r}, got {_describe(batch)}{keys}.")
        batch = dict(batch)
        target = batch.pop(key)
        return batch, target


def check_collate(loader: Any, owner: str) -> None:
    """Raise, naming the fix, when the training loader's ``collate_fn`` of the user's own fails on two samples of its
    :class:`IndexedDataset`: one written for ``(input, target)`` pairs meets ``(index, input, target[,
    is_corrupted])`` samples, and an NLP newcomer's padding collate stopped the first batch with its own "too many
    values to unpack (expected 2)", no word of lit_robust's. Reads the two samples under a copy of the random state,
    so the fit draws what it would without the check; a collate that works, or samples that cannot be read, pass."""
    # this process's state, no collective: the check is not a checkpoint (under DDP `random_state` gathers every
    # rank's, and `restore_random_state` put back nothing before, so the peek moved a rank's generators on)
    from lit_robust.callbacks._resume import set_this_process_random_state, this_process_random_state

    fn, dataset = getattr(loader, "collate_fn", None), getattr(loader, "dataset", None)
    if (not isinstance(dataset, IndexedDataset) or fn is None or fn is _collate.default_collate
            or fn is _collate.default_convert or len(dataset) == 0):
        return
    state = this_process_random_state()
    try:
        try:
            samples = [dataset[i] for i in range(min(2, len(dataset)))]
        except Exception:  # noqa: BLE001 - an unreadable sample: the fit's first batch says so
            return
        try:
            fn(samples)
        except Exception as exc:  # noqa: BLE001 - the user's collate, whatever it raises
            if isinstance(fn, IndexedCollate):
                _wrapped_collate_failed(fn, samples, exc, owner)
            name = _name_of(fn)
            records = (f"; one of dict records with the label inside (Hugging Face's style) in "
                       f"`lit_robust.IndexedCollate({name}, target_key='labels')`, the key its batch holds the label "
                       "under" if isinstance(samples[0][1], Mapping) else "")
            raise ValueError(f"`{owner}`: the training DataLoader's `collate_fn` (`{name}`) failed on the first "
                             f"samples of its `IndexedDataset` ({type(exc).__name__}: {exc}). Those samples are "
                             "`(index, input, target[, is_corrupted])`; a collate written for `(input, target)` pairs "
                             f"goes in `lit_robust.IndexedCollate({name})`, which adds the index and flags "
                             f"around it{records}.") from exc
    finally:
        set_this_process_random_state(state)


def _wrapped_collate_failed(fn: IndexedCollate, samples: list, exc: Exception, owner: str) -> NoReturn:
    """Raise for a collate inside :class:`IndexedCollate` that failed on the first samples, saying what it was
    handed: an HF-style newcomer's collate of dict records, wrapped as told, died in the first epoch with "tuple
    indices must be integers or slices, not str" and no word of lit_robust's."""
    if isinstance(exc, ValueError) and str(exc).startswith("`IndexedCollate"):
        raise ValueError(f"`{owner}`: {exc}") from exc
    name = _name_of(fn.collate_fn)
    first = samples[0]
    if fn.target_key is None:
        handed = f"`(input, target)` pairs, e.g. {describe_item((first[1], first[2]))}"
        records = (f" For a collate of dict records with the label inside (Hugging Face's style), pass "
                   f"`IndexedCollate({name}, target_key='labels')`: it hands dicts with the target under that key "
                   "and takes it out of the dict batch returned." if isinstance(first[1], Mapping) else "")
    else:
        handed = f"dict records with the target under {fn.target_key!r}"
        records = (f" If `{name}` collates `(input, target)` pairs, leave `target_key` out; if it reads the label "
                   "under another key, pass that one (the key its records and its batch hold the label under).")
    raise ValueError(f"`{owner}`: the training DataLoader's `IndexedCollate({name})` failed on the first samples of "
                     f"its `IndexedDataset` ({type(exc).__name__}: {exc}): it hands `{name}` {handed}.{records}") from exc


def _name_of(fn: Any) -> str:
    """A function's name, or its class's for a callable object, for the messages."""
    return getattr(fn, "__name__", type(fn).__name__)


def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} element(s)"
    return f"a {type(obj).__name__}"


def describe_item(sample: Any) -> str:
    """What a data set's item holds, element by element, for an error message: ``(Tensor[1, 28, 28], Tensor[], int)``
    (:func:`_describe` names the container alone: "a tuple of 3 element(s)")."""
    def one(x: Any) -> str:
        return f"Tensor{list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
    if isinstance(sample, (tuple, list)):
        inner = ", ".join(one(x) for x in sample[:6]) + (", ..." if len(sample) > 6 else "")
        return f"({inner})" if isinstance(sample, tuple) else f"[{inner}]"
    return one(sample)


def nonfinite_rows(values: Any) -> Tensor | None:
    """The positions of the rows of a floating-point ``values`` tensor that hold a NaN or an infinity (``None`` for
    anything else: integer tensors, lazily read datasets)."""
    if not isinstance(values, Tensor) or not (values.is_floating_point() or values.is_complex()) or values.ndim < 1:
        return None
    return (~torch.isfinite(values.reshape(len(values), -1)).all(1)).nonzero().flatten()


def warn_nonfinite_rows(name: str, values: Any) -> None:
    """Warn, naming the first few, when samples' ``name`` (inputs or targets held as one tensor) are NaN or infinite:
    a regression newcomer's one NaN feature made every round's loss NaN ("collapsed") and the fit still ended."""
    rows = nonfinite_rows(values)
    if rows is None or rows.numel() == 0:
        return
    first = rows[:5].tolist()
    warnings.warn(f"IndexedDataset: {rows.numel()} of {len(values)} samples have NaN or infinite {name} (at "
                  f"{first}{' ...' if rows.numel() > 5 else ''}): one such sample makes its batch's loss, and the "
                  "model, NaN, even where a selection would drop it. Drop or impute them before training, e.g. keep the "
                  "rows where `torch.isfinite(t).reshape(len(t), -1).all(1)`.", stacklevel=3)


def _raise_named(exc: OSError, index: int, dataset: Any) -> NoReturn:
    """Raise ``exc`` again as the same type, naming item ``index`` of ``dataset`` (the data set an
    :class:`IndexedDataset` wraps) and, where it is read from files (``ImageFolder``), its file."""
    from lit_robust.report import base_sample_files

    found = base_sample_files(dataset)
    where = f" ({found[0][index]})" if found is not None and 0 <= index < len(found[0]) else ""
    if str(exc).startswith("the image file "):  # ImageFolderDataModule's loader named it already
        where = ""
    try:
        named = type(exc)(f"sample {index}{where} of the data set could not be read: {exc}")
    except Exception:  # noqa: BLE001 - an OSError subclass with other arguments: leave it as it is
        raise exc from None
    raise named from exc


#: for samples without a target (an anomaly newcomer's `TensorDataset(x)`), said where such samples are refused
_PLACEHOLDER_HINT = ("Unlabelled data (anomaly detection, a flow or RCA) takes a placeholder target: "
                     "`IndexedDataset(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)))`.")


def check_pair_dataset(dataset: Any, argument: str = "dataset") -> int:
    """The length of ``dataset``, after checking that it is a non-empty map-style dataset whose first item is an
    ``(input, target)`` pair; otherwise a ``TypeError``/``ValueError`` naming ``argument``."""
    if isinstance(dataset, Tensor):
        raise TypeError(f"`{argument}` must be a map-style dataset of `(input, target)` pairs, got a tensor of shape "
                        f"{tuple(dataset.shape)}; wrap inputs and targets together, {_PAIR_HINT}.")
    if callable(getattr(dataset, "to_numpy", None)) and not isinstance(dataset, Dataset):
        # a pandas DataFrame: `df[0]` reads a column by name (pandas' bare `KeyError: 0`), not a row
        kind = f"{type(dataset).__module__.split('.')[0]} {type(dataset).__name__}"
        why = " (indexing it reads columns, not rows)" if hasattr(dataset, "columns") else ""
        raise ValueError(f"`{argument}` must be a map-style dataset of `(input, target)` pairs, got a {kind} with "
                         f"{len(dataset)} rows{why}; make tensors of its feature and label columns, e.g. "
                         "`IndexedDataset(TensorDataset(torch.tensor(df[features].to_numpy(np.float32)), "
                         "torch.tensor(df[label].to_numpy())))`; `targets` and `corrupted` may be columns, read by "
                         "position, e.g. `targets=df['noisy']`.")
    stream = isinstance(dataset, torch.utils.data.IterableDataset)
    if stream or not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        # torch's IterableDataset has a `__getitem__` that raises NotImplementedError (a newcomer's stream met that)
        stream = ("; a stream (IterableDataset) cannot be indexed: make it yield `(index, input, target[, "
                  "is_corrupted])` itself, the index unique within the data set, and it works with the per-batch "
                  "filters (`BatchFilter`) as it is (for `report=True` the indices 0 .. n - 1 and a `__len__` "
                  "returning n); ITLM needs a map-style set") if stream else ""
        raise TypeError(f"`{argument}` must be a map-style dataset (with `__len__` and `__getitem__`) of "
                        f"`(input, target)` pairs, got {_describe(dataset)}; {_PAIR_HINT}{stream}.")
    n = len(dataset)
    if n == 0:
        raise ValueError(f"`{argument}` must hold at least one sample, got an empty {type(dataset).__name__} "
                         "(a run would train on zero samples).")
    try:
        first = dataset[0]
    except OSError as exc:  # a broken first file (an auditor's 40-byte PNG: PIL's bare "cannot identify image file")
        _raise_named(exc, 0, dataset)
    if isinstance(first, Mapping):
        label = label_key_of(first)
        raise ValueError(f"`{argument}` must yield `(input, target)` pairs, but its first item is a dict with keys "
                         f"{sorted(map(str, first))[:8]}; pass the key of its target, `IndexedDataset({argument}, "
                         f"target_key={label!r})` (the rest of each dict becomes the input), or give IndexedDataset a "
                         "dataset whose items are pairs, e.g. "
                         "`[(s['input_ids'], s['label']) for s in records]` or a `Dataset` whose `__getitem__` "
                         "returns `(s['input_ids'], s['label'])` (a dict input is fine: `({'ids': ..., 'mask': ...}, "
                         "label)`).")
    if isinstance(first, (str, bytes)) or not isinstance(first, Sequence) or len(first) != 2:
        extra = (" To carry more per sample (an id, metadata), make it part of the input: `((x, extra), y)`, and "
                 "unpack it in your module." if isinstance(first, Sequence) and not isinstance(first, (str, bytes))
                 and len(first) > 2 else "")
        if isinstance(first, Sequence) and not isinstance(first, (str, bytes)) and len(first) == 1:
            # an anomaly newcomer's unlabelled `TensorDataset(x)`, as the flows' error had told them to wrap it
            extra = f" {_PLACEHOLDER_HINT}"
        raise ValueError(f"`{argument}` must yield `(input, target)` pairs, but its first item is {_describe(first)}; "
                         f"{_PAIR_HINT}.{extra}")
    return n


def check_one_index_space(dataset: Any, owner: str) -> None:
    """Raise when the training set concatenates several :class:`IndexedDataset` objects: each numbers its samples from 0, so one
    index names a sample of every part (a newcomer's PRL report mixed two sets' rows under one index, silently; ITLM
    found it only at its first scoring pass, as samples "scored twice")."""
    while isinstance(dataset, torch.utils.data.Subset):  # a subset of such a concatenation holds its clashes
        dataset = dataset.dataset
    if isinstance(dataset, torch.utils.data.ConcatDataset) and len(dataset.datasets) > 1 and any(
            isinstance(d, IndexedDataset) for d in dataset.datasets):
        raise ValueError(f"`{owner}`: the training set is a `ConcatDataset` of `IndexedDataset`s; each numbers its "
                         "samples from 0, so an index would name one sample of every part. Concatenate the raw data "
                         "sets and wrap the result once: `IndexedDataset(ConcatDataset([a, b]))` (its `targets` and "
                         "`corrupted` then run over both, in that order).")


def _same_value(a: Any, b: Any) -> bool:
    # NaN equals NaN here: the same sample read twice, not an augmentation (a regression newcomer's one NaN feature
    # was warned about as "a random augmentation?")
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point() or a.is_complex():
            return bool(torch.isclose(a, b, rtol=0.0, atol=0.0, equal_nan=True).all())
        return bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    try:
        x, y = np.asarray(a), np.asarray(b)
        numeric = np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)
        return bool(np.array_equal(x, y, equal_nan=numeric))
    except Exception:  # noqa: BLE001 - an input numpy cannot compare: assume it is the same
        return True


def reads_differ(dataset: Any, items: int = 1) -> bool:
    """Whether two reads of one of the first ``items`` samples give different inputs (a random augmentation in
    ``__getitem__``), reading under a copy of the process's random state, so that training draws what it would
    without the check. ``False`` when an item cannot be read. One item misses an augmentation applied with a
    probability about half the time (a reviewer's `RandomHorizontalFlip`: 10 of 20 seeds); 16 items miss it
    about once in 65,000 (each read of such a flip differs from the next half the time)."""
    # this process's state, no collective: the check is not a checkpoint (under DDP `random_state` gathers every
    # rank's, and `restore_random_state` put back nothing before, so the peek moved a rank's generators on)
    from lit_robust.callbacks._resume import set_this_process_random_state, this_process_random_state

    state = this_process_random_state()
    try:
        try:
            size = len(dataset)
        except TypeError:
            size = 1
        for i in range(min(items, size)):
            if not _same_value(dataset[i], dataset[i]):
                return True
        return False
    except Exception:  # noqa: BLE001 - an exotic dataset: nothing to say
        return False
    finally:
        set_this_process_random_state(state)


def _index_and_label(item: Any) -> tuple[int, int] | None:
    """``(index, label)`` of an indexed item ``(index, input, label[, corrupted])`` with an integer label, else
    ``None`` (another shape, a soft or several-valued label: nothing to compare)."""
    if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
        return None
    index, label = item[0], item[2]
    if isinstance(index, Tensor):
        if index.numel() != 1 or index.is_floating_point() or index.dtype == torch.bool:
            return None
        index = int(index.item())
    if isinstance(label, Tensor):
        if label.numel() != 1 or label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            return None
        label = int(label.item())
    if isinstance(index, bool) or isinstance(label, bool):
        return None
    if not isinstance(index, (int, np.integer)) or not isinstance(label, (int, np.integer)):
        return None
    return int(index), int(label)


def label_mismatch(train: Any, scored: Any, count: int = 256) -> tuple[int, int, int, tuple, tuple] | None:
    """Where the items of ``scored`` (a scoring set) disagree with the training set's sample of the same index, read
    at up to ``count`` positions of ``scored`` spread evenly over it: ``(first such position, items compared, items
    that disagree, the training sample's (index, label), the scoring item's)``, or ``None`` where every compared item
    agrees or nothing can be compared (an exotic dataset, soft labels). By index, as ITLM matches the scores: a
    scoring set in another order with the right indices agrees. The training set's sample of index ``j`` is its item
    ``j`` (ITLM's check of the training set). Reads under a copy of the process's random state, as
    :func:`reads_differ`. A data-pipeline newcomer's scoring copy built without the noisy ``targets=`` read 4.1 % for
    28.9 %, and one whose samples were in another order under the same indices reported 96.2 % clean precision for
    a selection 70.6 % clean."""
    from lit_robust.callbacks._resume import set_this_process_random_state, this_process_random_state

    state = this_process_random_state()
    try:
        n, m = len(train), len(scored)
        positions = (range(m) if m <= count
                     else sorted({round(k * (m - 1) / (count - 1)) for k in range(count)}))
        compared = differing = 0
        first: tuple[int, tuple, tuple] | None = None
        for i in positions:
            b = _index_and_label(scored[i])
            if b is None or not 0 <= b[0] < n:
                continue  # an index out of range is the scoring pass's own check
            a = _index_and_label(train[b[0]])
            if a is None:
                continue
            compared += 1
            if a != b:
                differing += 1
                first = first or (i, a, b)
        return None if first is None else (first[0], compared, differing, first[1], first[2])
    except Exception:  # noqa: BLE001 - an exotic dataset: nothing to say
        return None
    finally:
        set_this_process_random_state(state)


class IndexedBatch(NamedTuple):
    """A collated batch from an :class:`IndexedDataset`; ``corrupted`` is ``None`` when unknown, ``index`` is
    ``None`` for a plain ``(input, target)`` evaluation batch (:func:`unpack_eval_batch`)."""

    index: Tensor
    input: Any
    target: Any
    corrupted: Tensor | None


def _batch_size(x: Any) -> int | None:
    if isinstance(x, Tensor) and x.ndim > 0:
        return x.shape[0]
    if isinstance(x, (list, tuple)) and x:
        return _batch_size(x[0])
    if isinstance(x, dict) and x:
        return _batch_size(next(iter(x.values())))
    return None


def _sample_counts(input: Any, target: Any) -> dict[str, int]:
    """How many samples a batch's target and input may hold, where they say: the target's first dimension when it is
    a tensor, and the input's (its first tensor's first dimension). An index that matches either is taken: an input
    can lead with something else than one row per sample (EmbeddingBag's flat tokens, a sequence-first tensor), and
    so can a target (a CTC loss's concatenated label sequences)."""
    out = {}
    if isinstance(target, Tensor) and target.ndim > 0:
        out["target"] = target.shape[0]
    n = _batch_size(input)
    if n is not None:
        out["input"] = n
    return out


def dataset_targets(ds: Any) -> Any:
    """The labels a training set holds without being read: ``IndexedDataset(targets=...)``'s, or the second tensor
    of the ``TensorDataset`` it wraps; ``None`` otherwise."""
    targets = getattr(ds, "targets", None)
    inner = getattr(ds, "dataset", None)
    if targets is None and isinstance(inner, TensorDataset) and len(inner.tensors) >= 2:
        targets = inner.tensors[1]
    return targets


def label_key_of(keys: Any) -> str:
    """The key among ``keys`` that most likely holds the label (``labels``, ``label``, ``target``, ``y``), for the
    messages' examples; ``"label"`` when none does."""
    return next((k for k in ("labels", "label", "target", "y") if k in keys), "label")


#: what to do with samples that are dicts (said by :func:`unpack_batch` and ITLM's check of its training set)
def dict_samples_hint(keys: Any = ()) -> str:
    """The advice for dict samples: ``IndexedDataset(dataset, target_key=...)`` with the key guessed from ``keys``
    (a dict-batch newcomer's BatchFilter error told them to write a Dataset of pairs, not the one argument that
    does it), or a dataset of pairs."""
    label = label_key_of(keys)
    return (f"wrap the dataset as `lit_robust.IndexedDataset(dataset, target_key={label!r})` (the rest of each dict "
            "becomes the input), or give `IndexedDataset` a dataset of `(input, target)` pairs, e.g. one whose "
            "`__getitem__` returns `(s['image'], s['label'])` (a dict input is fine: `({'ids': ..., 'mask': ...}, "
            "label)`).")



def unpack_batch(batch: Any, owner: str | None = None, *, evaluation: bool = False) -> IndexedBatch:
    """Split a collated ``(index, input, target[, corrupted])`` batch, checking that it carries indices
    (``owner``, e.g. ``"BatchFilter"``, is named in the error). ``evaluation=True`` (a validation, test, predict or
    scoring batch, as :func:`unpack_eval_batch`) also takes a plain ``(input, target)`` pair: its ``index`` is
    ``None``."""
    if evaluation and isinstance(batch, (tuple, list)) and len(batch) == 2:
        return IndexedBatch(None, batch[0], batch[1], None)  # type: ignore[arg-type]
    who = f"`{owner}`: " if owner else ""
    hint = ("Wrap the training dataset in `lit_robust.IndexedDataset` so that every sample is "
            f"`(index, input, target[, is_corrupted])`. {_COLLATE_HINT}")
    if evaluation:
        hint = ("A validation, test or predict batch is a plain `(input, target)` pair or, like a training batch, "
                "`(index, input, target[, is_corrupted])` (`lit_robust.IndexedDataset`).")
    if not isinstance(batch, (tuple, list)) or len(batch) not in (3, 4):
        kind = f"a {type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else \
            f"a {type(batch).__name__}"
        several = f" {_SEVERAL_INPUTS}" if isinstance(batch, (tuple, list)) and len(batch) > 4 else ""
        if (not evaluation and isinstance(batch, (tuple, list)) and len(batch) > 1
                and all(isinstance(b, (tuple, list)) and len(b) in (3, 4) for b in batch)):
            # one indexed batch per loader (a release check's list of two loaders was told to wrap its data)
            several = ""
            hint = ("With a list of several training DataLoaders Lightning passes one batch per loader; lit_robust "
                    "filters the samples of one training DataLoader: concatenate the raw data sets "
                    "(`torch.utils.data.ConcatDataset`) and wrap the result in one `IndexedDataset`.")
        if isinstance(batch, dict):  # samples that are dicts, or Lightning's batch of several training loaders
            kind = f"a dict (keys {sorted(map(str, batch))[:4]})"
            # the batch's keys, not the samples': a collate may rename the label's (an HF-style newcomer was told
            # `target_key='labels'` for records holding 'label')
            label = label_key_of(batch)
            if evaluation:  # an evaluation batch needs no index: the training-side advice alone misled (no pair)
                hint = (f"A validation, test or predict batch that is a dict needs its input and target apart: give "
                        f"its DataLoader a dataset of `(input, target)` pairs (no index needed), e.g. one whose "
                        f"`__getitem__` returns `(s['image'], s[{label!r}])` (a dict input is fine: `({{'ids': ..., "
                        f"'mask': ...}}, label)`), a `collate_fn` of your own that returns `(input, target)`, or "
                        f"`lit_robust.IndexedDataset(dataset, target_key={label!r})` as for training.")
            else:
                hint = ("If your samples are dicts, " + dict_samples_hint(batch) + " If a collate of your own made "
                        "this batch, `target_key` is the target's key in each sample, which the collate may have "
                        "renamed (as Hugging Face's turn `label` into `labels`), and the collate goes in "
                        f"`lit_robust.IndexedCollate(your_collate, target_key={label!r})`. With several training "
                        "DataLoaders Lightning passes one batch per loader as a dict; lit_robust filters the samples "
                        "of one training DataLoader: concatenate the raw data sets (`torch.utils.data.ConcatDataset`) "
                        "and wrap the result in one `IndexedDataset`.")
        if not evaluation and isinstance(batch, (tuple, list)) and len(batch) == 1:
            # an anomaly newcomer's unlabelled `TensorDataset(x)`: wrapping it alone is refused (no target)
            hint += f" {_PLACEHOLDER_HINT}"
        expects = ("an evaluation batch `(input, target)` or `(index, input, target[, is_corrupted])`" if evaluation
                   else "batches `(index, input, target[, is_corrupted])`")
        raise ValueError(f"{who}lit_robust expects {expects}, got {kind}.{several} {hint}")
    index = batch[0]
    if not (isinstance(index, Tensor) and index.ndim == 1 and not index.is_floating_point()
            and index.dtype != torch.bool):
        got = f"tensor of dtype {index.dtype} and shape {tuple(index.shape)}" if isinstance(index, Tensor) \
            else type(index).__name__
        raise ValueError(f"{who}the first element of a batch must be the 1-D integer sample index, got {got}. {hint}")
    sizes = _sample_counts(batch[1], batch[2])
    if sizes and index.numel() not in sizes.values():
        # an index for other samples than the batch's. The input alone cannot say how many samples it holds: an
        # NLP newcomer's EmbeddingBag input `(flat_tokens, offsets)` starts with every token of the batch, and a
        # GRU's `[T, B]` padding with the time steps (both were refused as "not a sample index")
        holds = " or ".join(f"{k} (its {what}'s first dimension)" for what, k in sizes.items())
        raise ValueError(f"{who}the batch's sample index holds {index.numel()} entries, but the batch holds {holds} "
                         f"samples: the index must name each sample of the batch once. {hint}")
    corrupted = batch[3] if len(batch) == 4 else None
    if corrupted is not None and not (isinstance(corrupted, Tensor) and corrupted.shape == index.shape
                                      and not corrupted.is_floating_point() and not corrupted.is_complex()):
        got = f"a tensor of dtype {corrupted.dtype} and shape {tuple(corrupted.shape)}" \
            if isinstance(corrupted, Tensor) else _describe(corrupted)
        raise ValueError(f"{who}the 4th element of a batch is the ground-truth `is_corrupted` flag, one boolean per "
                         f"sample (shape {tuple(index.shape)}), got {got}. {_SEVERAL_INPUTS} {hint}")
    return IndexedBatch(index, batch[1], batch[2], corrupted)


def check_corrupted_flags(batch: IndexedBatch, owner: str) -> None:
    """Raise unless the batch's ``is_corrupted`` flags (when it has them) are 0/1: a batch that carries its labels
    fourth (``(index, ids, mask, y)``) would have them read as flags and its mask as the target, silently (a
    newcomer's round table said 19.6 % clean precision for a selection 91.8 % clean). Synchronises with the device
    once: call it on a fit's first batch, not on every batch."""
    c = batch.corrupted
    if c is None or c.dtype == torch.bool:
        return
    bad = (c != 0) & (c != 1)
    if bool(bad.any()):
        values = sorted(set(c[bad].flatten().tolist()))[:6]
        raise ValueError(f"`{owner}`: the 4th element of a batch is the ground-truth `is_corrupted` flag (0/1 or "
                         f"boolean), but it holds {values}: is it the target? A batch is `(index, input, "
                         f"target[, is_corrupted])`. {_SEVERAL_INPUTS}")


def unpack_eval_batch(batch: Any) -> IndexedBatch:
    """Split an evaluation batch (validation, test, predict, scoring): a plain ``(input, target)`` pair -- a clean
    test set needs no index; its ``index`` is ``None`` -- or an indexed batch as :func:`unpack_batch` takes it."""
    return unpack_batch(batch, evaluation=True)
