"""A table of your own — a CSV, TSV or Parquet file, or a pandas DataFrame — as a LightningDataModule.

Two newcomers (a regression user with a 10-column CSV, an anomaly-detection user with a table of sensor readings)
wrote the same forty lines to get from a file to ``IndexedDataset`` splits, scaled inputs and a model whose
``in_features`` fits, and could not use ``lit-robust fit`` at all without a datamodule class to name in the config.
:class:`TableDataModule` is that datamodule: every row is a sample, the training rows keep their position in the
table (the per-sample report's ``source_index``), nothing is corrupted on purpose — the table is taken as it is.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import numbers
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lit_robust._backend import pl, rank_zero_warn
from lit_robust._checks import check_int, check_seed
from lit_robust.data.base import SplitLoaders, built_already, remember_settings
from lit_robust.data.indexed import IndexedDataset
from lit_robust.report import PREDICTION_CLASS_COLUMNS, REPORT_CLASS_COLUMNS

__all__ = ["TableDataModule", "robust_scale"]

Task = Literal["classification", "regression", "anomaly"]
Scaling = Literal["robust", "standard", "none"]
_TASKS = ("classification", "regression", "anomaly")
_SCALINGS = ("robust", "standard", "none")
_READERS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_MAD_TO_SD = 1.4826  # the MAD of a normal distribution times this is its standard deviation


def robust_scale(values: Tensor, how: Scaling = "robust") -> tuple[Tensor, Tensor]:
    """Per-column ``(centre, scale)`` of ``values`` ``[n, d]``: ``"robust"`` — the median and 1.4826 × the median
    absolute deviation (a corrupted tenth of the rows barely moves them); ``"standard"`` — the mean and standard
    deviation; ``"none"`` — 0 and 1. A column whose scale is 0 (over half its values equal) falls back to its
    standard deviation, and a constant column to 1.

    >>> c, s = robust_scale(torch.tensor([[1.0], [2.0], [3.0], [4.0], [1000.0]]))
    >>> float(c[0]), round(float(s[0]), 4)
    (3.0, 1.4826)
    """
    if how not in _SCALINGS:
        raise ValueError(f"`scale` must be one of {list(_SCALINGS)}, got {how!r}.")
    values = values.double()
    d = values.shape[1]
    if how == "none" or len(values) == 0:
        return torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    sd = values.std(0, unbiased=False) if len(values) > 1 else torch.zeros(d, dtype=torch.float64)
    if how == "standard":
        centre, scale = values.mean(0), sd
    else:
        centre = torch.from_numpy(np.median(values.numpy(), axis=0))
        scale = _MAD_TO_SD * torch.from_numpy(np.median((values - centre).abs().numpy(), axis=0))
        scale = torch.where(scale > 0, scale, sd)
    return centre, torch.where(scale > 0, scale, torch.ones_like(scale))


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - pandas is in the dev extras
        raise ImportError("TableDataModule reads tables with pandas: `pip install pandas` (and `pyarrow` for "
                          "Parquet files).") from err
    return pd


def _read_table(path: str, argument: str, text_columns: Sequence[str] = ()) -> Any:
    """The table at ``path``; from a CSV/TSV, ``text_columns`` (the ``id_columns``) are read as text, only an empty
    cell missing: pandas read the ids "000".."029" as 0..29 and the id "NA" as missing."""
    pd = _pandas()
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"`{argument}` must be the path of a .csv, .tsv or .parquet file, got {path!r}.")
    full = os.path.expanduser(os.fspath(path))
    suffix = os.path.splitext(full)[1].lower()
    kind = _READERS.get(suffix)
    if kind is None:
        raise ValueError(f"`{argument}` must end in one of {sorted(_READERS)} (it says how to read the file), got "
                         f"{os.fspath(path)!r}.")
    if not os.path.isfile(full):
        where = "" if os.path.isabs(full) else f" (a relative path is read from the current folder, {os.getcwd()})"
        what = "a folder, not a file" if os.path.isdir(full) else "no such file"
        raise FileNotFoundError(f"`{argument}`={os.fspath(path)!r}: {what}{where}.")
    if kind == "parquet":
        return pd.read_parquet(full)
    sep = "\t" if kind == "tsv" else ","
    try:
        frame = pd.read_csv(full, sep=sep)
        _check_separator(frame, sep, argument, path)
        ids = [c for c in text_columns if c in frame.columns]
        if ids:  # a second read of those columns alone: the others keep pandas' reading (its NA words, numbers)
            text = pd.read_csv(full, sep=sep, usecols=ids, dtype=str, keep_default_na=False, na_values=[""])
            frame[ids] = text[ids]
        frame.attrs[_CSV_SOURCE] = (full, sep)  # for `_read_as_missing`, should a used column have missing cells
        return frame
    except pd.errors.EmptyDataError:  # a 0-byte file ended in pandas' traceback (a hurried CLI user)
        raise ValueError(f"`{argument}`={os.fspath(path)!r} is empty: a table needs a header row of column names "
                         "and at least one row.") from None
    except UnicodeDecodeError as err:  # a spreadsheet's Latin-1 / Windows-1252 export ended in pandas' traceback
        raise ValueError(f"`{argument}`={os.fspath(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at "
                         f"position {err.start}): save it as UTF-8 (a spreadsheet's \"CSV UTF-8\"; pandas: "
                         "`pd.read_csv(path, encoding='latin-1').to_csv(new_path, index=False)`), then run again.") \
            from None


_CSV_SOURCE = "lit_robust_csv_source"  # a frame's attrs key: the CSV/TSV file and separator it was read from


def _read_as_missing(frame: Any, columns: list[str]) -> str:
    """`` pandas read the cells 'NA' (13 in 'label') as missing ...``: the non-empty cells of ``columns`` that
    pandas read as missing (its default NA words: "NA", "N/A", "null", ...), found by reading those columns of the
    file again as text; ``""`` for a DataFrame given as such, or when there are none. A table whose class "NA"
    (North America) was read as missing got an error counting missing values, and nothing said why."""
    source = frame.attrs.get(_CSV_SOURCE)
    if source is None or not columns:
        return ""
    full, sep = source
    try:
        text = _pandas().read_csv(full, sep=sep, usecols=columns, dtype=str, keep_default_na=False, na_values=[""])
    except Exception:  # noqa: BLE001 - only a hint: the error it adds to stands without it
        return ""
    if len(text) != len(frame):
        return ""
    found: dict[tuple[str, str], int] = {}
    for c in columns:
        read_missing = np.asarray(frame[c].isna().to_numpy(), dtype=bool) & text[c].notna().to_numpy()
        for word in text[c][read_missing].tolist():
            found[(c, word)] = found.get((c, word), 0) + 1
    if not found:
        return ""
    cells = ", ".join(f"{w!r} ({k} in {c!r})" for (c, w), k in list(found.items())[:4])
    return (f" pandas read the cells {cells} as missing (its default NA words); to keep them as values, read the "
            "file with `pandas.read_csv(path, keep_default_na=False, na_values=[''])` and pass the DataFrame as "
            "`frame`, or rename those cells in the file.")


def _check_separator(frame: Any, sep: str, argument: str, path: Any) -> None:
    """Raise when a table file read with ``sep`` came out as one column whose name holds another separator: a
    European spreadsheet's ``;``-separated CSV was read as the one column ``'a;b;label'``, and the error said that
    `target` was not a column, with that whole header as the closest name."""
    name = str(frame.columns[0]) if len(frame.columns) == 1 else ""
    other = next((s for s in (";", ",", "\t", "|") if s != sep and s in name), None)
    if other is not None:
        kind = "comma" if sep == "," else "tab"
        decimal = ", with decimal=',' where numbers read 1,5" if other == ";" else ""
        out_sep = "" if sep == "," else ", sep='\\t'"
        raise ValueError(f"`{argument}`={os.fspath(path)!r} reads as one column, {name!r}: its values look separated "
                         f"by {other!r}, and a {'.csv' if sep == ',' else '.tsv'} file is read as {kind}-separated. "
                         f"Save it {kind}-separated (pandas: `pd.read_csv(path, sep={other!r})"
                         f".to_csv(new_path, index=False{out_sep})`{decimal}), then run again.")


def _cells_that_are_not_numbers(column: Any, name: str, shown: int = 3) -> str:
    """``'mean radius': 'n/a' (row 5), '12,5' (row 17)``: the first cells of a text column that do not read as
    numbers, with their rows (0-based positions in the table); the error quoted the column's first cell, a good
    number, and sent a hurried user hunting."""
    pd = _pandas()
    present = column.notna().to_numpy()
    bad = np.flatnonzero(present & pd.to_numeric(column, errors="coerce").isna().to_numpy())
    if len(bad) == 0:  # e.g. booleans mixed with numbers: no cell fails alone
        return f"{name!r}: {column[present].iloc[0]!r} (row {int(np.flatnonzero(present)[0])})"
    cells = ", ".join(f"{column.iloc[i]!r} (row {int(i)})" for i in bad[:shown])
    return f"{name!r}: {cells}{f' and {len(bad) - shown} more' if len(bad) > shown else ''}"


def _check_numbers(frame: Any, columns: Sequence[str], argument: str, advice: str) -> None:
    """Raise unless each of ``columns`` holds numbers (or booleans), quoting the cells that do not."""
    types = _pandas().api.types
    complex_ = [c for c in columns if types.is_complex_dtype(frame[c])]
    if complex_:
        # numeric to pandas, but reading them as float64 kept the real part and dropped the imaginary one unsaid
        raise ValueError(f"`{argument}`: column(s) {complex_} hold complex numbers, and a model reads real ones: "
                         f"split each into two columns (e.g. `frame[{complex_[0] + '_re'!r}] = frame[{complex_[0]!r}]"
                         f".to_numpy().real` and `.imag`), or leave them out with `drop`.")
    text = [c for c in columns if not (types.is_numeric_dtype(frame[c]) or types.is_bool_dtype(frame[c]))]
    if text:
        examples = "; ".join(_cells_that_are_not_numbers(frame[c], c) for c in text[:3] if frame[c].notna().any())
        raise ValueError(f"`{argument}`: column(s) {text} do not hold numbers ({examples}). {advice}")


def _columns_named(frame: Any, names: Sequence[str], argument: str, absent: str = "") -> list[str]:
    """``names``, once each is a column of ``frame``; else an error naming ``argument`` (``absent``: what to say when
    no column comes close)."""
    columns = [str(c) for c in frame.columns]
    missing = [n for n in names if n not in columns]
    if missing:
        # a differently cased name first: difflib found no match for an anomaly newcomer's `S2` among s1 .. s8
        close = ([c for c in columns if c.lower() == missing[0].lower()]
                 or difflib.get_close_matches(missing[0], columns, n=1))
        hint = f" Did you mean {close[0]!r}?" if close else absent
        index_names = [str(n) for n in getattr(getattr(frame, "index", None), "names", []) or [] if n is not None]
        if missing[0] in index_names:  # a pandas user's `customer_id` was the DataFrame's index, not a column
            hint = f" {missing[0]!r} is the DataFrame's index: make it a column with `frame.reset_index()`."
        raise ValueError(f"`{argument}` names column(s) {missing} that the table does not have; its columns are "
                         f"{columns}.{hint}")
    return list(names)


def _same_columns(frame: Any, needed: Sequence[str], argument: str) -> None:
    """Raise unless the test or prediction table ``frame`` has the training table's columns ``needed``."""
    columns = [str(k) for k in frame.columns]
    missing = [c for c in needed if c not in set(columns)]
    if missing:
        # a closest-name hint here pointed an auditor at another column the table did have: only a column that
        # differs in case and is not needed itself is named (a regression newcomer's test table spelt `kwh` `KWH`)
        cased = [(m, c) for m in missing for c in columns if c.lower() == m.lower() and c not in needed]
        hint = "".join(f" Did you mean {c!r} for {m!r}?" for m, c in cased)
        # a newcomer renamed a column of their training CSV after the fit, and the unchanged, right predict file was
        # blamed: say which table sets the names
        hint += (" (The names come from the training table as it reads now: if it was changed since the fit, mend "
                 "that one.)")
        raise ValueError(f"`{argument}` lacks column(s) {missing} of the training table (it needs "
                         f"{list(needed)}); its columns are {columns}.{hint}")


def _some_columns(columns: Any, shown: int = 20) -> str:
    """The first ``shown`` column names, and how many more there are (an auditor's header-only table was shown 8 of
    its 9 columns, the target among those left out, without a word of the rest).

    >>> _some_columns(["a", "b", "c"], shown=2)
    "['a', 'b'] and 1 more"
    """
    names = [str(c) for c in columns]
    return f"{names[:shown]}" + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _zero_one(column: Any) -> bool:
    """Whether ``column`` holds booleans, or numbers that are all 0 or 1 (missing cells aside), and both values."""
    values = column.dropna()
    if values.dtype == bool:
        return values.nunique() == 2
    if not _pandas().api.types.is_numeric_dtype(values) or _pandas().api.types.is_complex_dtype(values):
        return False
    return set(values.unique().tolist()) == {0, 1}


def _warn_one_row_classes(labels: Any, name: str) -> None:
    """Warn when most of the classification ``target``'s classes hold a single row: a row id or a measurement named as
    the target (a newcomer's id column trained as a 2,000-class task, and "auto" read 99.2 %, clipped, unsaid)."""
    counts = Counter(labels.tolist())
    single = sum(1 for c in counts.values() if c == 1)
    # most classes of one row, holding half the rows or more: an id; three misspelt labels of a row each beside two
    # large classes are stray classes (a reviewer's 'benigm', 'bengin', 'malingant' were asked "is it a row id?")
    if len(counts) > 2 and single > len(counts) / 2 and 2 * single >= len(labels):
        rank_zero_warn(f"TableDataModule: `target` {name!r} holds {len(counts)} classes for {len(labels)} rows, "
                       f"{single} of them a single row: a classifier cannot learn a class from one row. Is it a row id "
                       "(name the label column as `target`, the id in `id_columns`), or a number to predict "
                       "(task='regression')?")
        return
    _warn_stray_classes(counts, name)


#: a class of at most this many rows, beside one a hundred times larger, is named at setup (:func:`_warn_stray_classes`)
_STRAY_ROWS = 3


def _warn_stray_classes(counts: Counter, name: str) -> None:
    """Warn of classes of a handful of rows (:data:`_STRAY_ROWS` or fewer) beside a class a hundred times larger:
    a misspelt label makes one (a newcomer's two rows labelled "benigm" became a third class without a word, and so did
    an 11 among 0 and 1)."""
    largest = max(counts.values(), default=0)
    # a label that differs from another only in case or spaces is said by `_warn_near_twin_labels`
    spelt = Counter(c.strip().casefold() for c in counts if isinstance(c, str))
    stray = sorted((c for c, k in counts.items() if k <= _STRAY_ROWS and 100 * k <= largest
                    and not (isinstance(c, str) and spelt[c.strip().casefold()] > 1)),
                   key=lambda c: (counts[c], str(c)))
    if not stray:
        return
    common = [str(c) for c, k in counts.items() if k > _STRAY_ROWS]

    def shown(c: Any) -> str:
        close = difflib.get_close_matches(str(c), common, n=1, cutoff=0.75) if isinstance(c, str) else []
        like = f", like {close[0]!r}" if close else ""
        return f"{c!r} ({counts[c]} row{'' if counts[c] == 1 else 's'}{like})"

    listed = ", ".join(shown(c) for c in stray[:4]) + (f" and {len(stray) - 4} more" if len(stray) > 4 else "")
    rank_zero_warn(f"TableDataModule: `target` {name!r} holds the class(es) {listed} beside classes of up to "
                   f"{largest} rows: each is a class of its own ({len(counts)} classes), which a classifier can hardly "
                   "learn from so few rows. A misspelt or stray label makes one: if so, correct those rows (the report "
                   "ranks them among the suspicious ones), or drop them.")


def _unique_columns(frame: Any, names: Sequence[str], which: str) -> None:
    """Raise when a column of ``names`` (those read) appears more than once in ``frame``: pandas then reads the name as
    all of them at once, and a DataFrame with two ``x`` columns failed in numpy ("operands could not be broadcast") or
    pandas ("The truth value of a Series is ambiguous")."""
    counts = Counter(str(c) for c in frame.columns)
    twice = [c for c in dict.fromkeys(names) if counts[c] > 1]
    if twice:
        raise ValueError(f"{which} has several columns named {twice[:4]}, and a name must pick one column: rename them "
                         "apart (e.g. `frame.columns = [...]`), or leave them out with `drop` if they are inputs.")


def _as_names(value: Any, argument: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"`{argument}` must be a column name or a list of column names, got {value!r}.")


def _warn_repeated_ids(frame: Any, id_columns: list[str], which: str, shown: int = 3, rows_shown: int = 4) -> None:
    """Warn where ``id_columns`` meant to name each row name a few rows alike (rows whose ids are all missing left
    out): the report names each row by them, and a data-cleaning newcomer's duplicated id sent them to the wrong row.
    Columns that repeat in most rows (a machine's name, a date: context, as the argument's docs allow) are not ids
    gone wrong: no warning there (a reviewer's 5 machine names over 200,000 rows were listed in 894,177 characters)."""
    if not id_columns:
        return
    ids = frame[id_columns]
    named = ~ids.isna().all(axis=1).to_numpy()
    try:
        repeated = np.flatnonzero(ids.duplicated(keep=False).to_numpy() & named)
    except (TypeError, ValueError):  # ids pandas cannot compare (lists, dicts in a cell: a reviewer's): no warning
        return
    if len(repeated) == 0 or 2 * len(repeated) > int(named.sum()):
        return
    groups: dict[tuple, list[int]] = {}
    missing = _pandas().isna
    for r, key in zip(repeated.tolist(), ids.iloc[repeated].itertuples(index=False, name=None)):
        # a missing part of an id is one key (pandas' `duplicated` counts NaN alike; two NaN objects are not equal)
        groups.setdefault(tuple(None if missing(v) else v for v in key), []).append(r)

    def listed(rows: list[int]) -> str:
        head = ", ".join(map(str, rows[:rows_shown]))
        return head if len(rows) <= rows_shown else f"{head}, ... ({len(rows)} rows)"
    some = "; ".join(f"rows {listed(rows)} ({', '.join(map(repr, key))})" for key, rows in list(groups.items())[:shown])
    more = f"; and {len(groups) - shown} more" if len(groups) > shown else ""
    rank_zero_warn(f"TableDataModule: `id_columns` {id_columns} do not tell the rows of {which} apart: {len(repeated)} "
                   f"rows share their id with another row ({some}{more}; rows counted from 0). The report and "
                   "predictions.csv name each row by these ids, and a repeated id names more than one row: find a row "
                   "by its `source_index` there (its position in the table, counted from 0 as here), or name more "
                   "columns in `id_columns`.")


def _looks_like_an_id(column: Any) -> bool:
    """Whole numbers, one per row, all different and evenly spaced (1, 2, 3, … in any order), or a whole-number
    column named like an id (``id``, ``record_id``, ``CustomerID``)."""
    types = _pandas().api.types
    if not types.is_integer_dtype(column) or types.is_bool_dtype(column) or len(column) < 3:
        return False
    name = str(column.name).lower()
    if name == "id" or name.endswith(("_id", " id", "-id")) or (str(column.name).endswith("ID") and name != "id"):
        return True
    if len(column) < 20:  # a few evenly spaced counts are not yet an id
        return False
    values = np.sort(column.to_numpy())
    steps = np.diff(values)
    return bool(steps.min() > 0 and steps.min() == steps.max())


def _numbers(frame: Any) -> Tensor:
    """The columns of ``frame`` as a float64 tensor ``[rows, columns]`` (a copy: pandas may hand out read-only arrays)."""
    return torch.tensor(np.ascontiguousarray(frame.to_numpy(dtype=np.float64, na_value=np.nan)))


def _share(name: str, value: Any, n: int) -> int:
    """A row count from ``value``: a fraction in [0, 1) of ``n`` (rounded) or a whole number of rows. NumPy numbers
    count as Python's (``np.int64(40)`` from a computed count was refused, as the other arguments' checks take it), and
    so does a whole float >= 1 (``2.0``): jsonargparse reads ``--data.init_args.val_size 2`` (a ``float | int``) as
    ``2.0``, which was refused from the CLI and configs as neither a fraction nor a count."""
    whole = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and value >= 1
        and float(value).is_integer())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not value >= 0 or (
            not whole and not value < 1):
        raise ValueError(f"`{name}` must be a fraction in [0, 1) of the rows or a whole number of rows >= 0, got "
                         f"{value!r}.")
    return int(value) if whole else int(round(float(value) * n))


def _no_features(features: Any) -> ValueError:
    return ValueError(f"`features` must name at least one column of the table, or be None (every column but "
                      f"`target`, `corrupted`, `drop` and `id_columns`), got {features!r}.")


def _check_frame(source: Any, argument: str) -> None:
    """Raise unless ``source``, given as ``argument`` (``frame``, ``test_frame`` or ``predict_frame``), is a pandas
    DataFrame or the path of a table file."""
    if isinstance(source, (str, os.PathLike)):
        if os.path.splitext(os.fspath(source))[1].lower() not in _READERS:
            # `test_frame="str"` was answered about `test_path`, an argument the user had not given
            raise ValueError(f"`{argument}` must be a pandas DataFrame (or the path of a table ending in one of "
                             f"{sorted(_READERS)}), got {os.fspath(source)!r}.")
        return
    if not isinstance(source, _pandas().DataFrame):
        raise ValueError(f"`{argument}` must be a pandas DataFrame, got a {type(source).__name__}.")


_FAR_OUT_TARGET = 1000.0  # robust standard deviations from the median: a squared error a million times a typical one


def _warn_far_out_targets(raw: Tensor, rows: Tensor, names: list[str], shown: int = 4) -> None:
    """Warn about regression targets more than 1000 robust standard deviations (1.4826 × MAD) from their column's
    median, over the usable ``rows``: a lab export's sentinel 999999 and a value typed a million times too large
    outweighed, squared, the whole table's errors, so the mean training loss barely moved and ITLM judged every round
    collapsed ("check the learning rate") and trimmed nothing, without a word on those rows (since 2026-12-06 ITLM's
    collapse check also reads the per-sample losses on a log scale and trims them)."""
    values = raw[rows]
    centre, scale = robust_scale(values, "robust")
    for j, name in enumerate(names):
        far = ((values[:, j] - centre[j]).abs() > _FAR_OUT_TARGET * scale[j]).nonzero().flatten()
        if len(far) == 0:
            continue
        order = far[(values[far, j] - centre[j]).abs().argsort(descending=True, stable=True)]
        cells = ", ".join(f"{float(values[i, j]):.10g} (row {int(rows[i])})" for i in order[:shown])
        more = f" and {len(far) - shown} more" if len(far) > shown else ""
        rank_zero_warn(f"TableDataModule: `target` {name!r} holds {len(far)} value(s) more than "
                       f"{_FAR_OUT_TARGET:g} robust standard deviations ({float(scale[j]):.4g}) from its median "
                       f"({float(centre[j]):.4g}): {cells}{more}. A sentinel (-999, 999999) or a typo? Squared, their "
                       "errors outweigh all the other rows' in the mean training loss. Empty those cells and pass "
                       "`missing='drop'`, or correct them. ITLM ranks such rows first and trims them (its collapse "
                       "check reads the per-sample losses a module hands `reduce_loss`; with a `training_step` of "
                       "your own that does not call it, a round may be judged collapsed: pass `on_collapse='warn'`).")


def _warn_near_twin_labels(classes: list[Any], name: str) -> None:
    """Warn when text labels differ only in case or surrounding spaces: an export's "malignant " and "Benign" beside
    "malignant" and "benign" made four classes out of two without a word, and ITLM counted the rows of the two
    stray spellings among the suspicious ones (their class had a handful of rows)."""
    groups: dict[str, list[str]] = {}
    for c in classes:
        if isinstance(c, str):
            groups.setdefault(c.strip().casefold(), []).append(c)
    twins = [g for g in groups.values() if len(g) > 1]
    if twins:
        shown = "; ".join(" / ".join(repr(v) for v in g) for g in twins[:4])
        rank_zero_warn(f"TableDataModule: `target` {name!r} holds labels that differ only in case or surrounding "
                       f"spaces ({shown}): each is a class of its own ({len(classes)} classes). If they mean the same "
                       f"class, clean the column first, e.g. `frame[{name!r}] = frame[{name!r}].str.strip()"
                       ".str.lower()`, and pass the DataFrame as `frame`.")


def _first_of_equal_rows(values: np.ndarray) -> np.ndarray:
    """For each row of the float64 matrix ``values`` ``[n, d]`` (finite: a usable row's), the position of the first
    row equal to it, value for value (-0.0 reads as 0.0). One sort of ``n`` byte keys, O(n log n): 0.09 s for
    100,000 rows of 30 columns, where comparing rows pairwise would take n² / 2 comparisons.

    >>> _first_of_equal_rows(np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [-0.0, 4.0], [0.0, 4.0]])).tolist()
    [0, 1, 0, 3, 3]
    """
    v = np.ascontiguousarray(values, dtype=np.float64).reshape(len(values), -1) + 0.0
    keys = v.view(np.dtype((np.void, v.itemsize * v.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def _target_key(frame: Any, columns: list[str], rows: np.ndarray) -> np.ndarray:
    """The ``columns`` (targets) of the table's ``rows`` as float64 ``[len(rows), len(columns)]``: numbers as they
    are, anything else (class names) by their order of appearance."""
    types = _pandas().api.types
    out = np.zeros((len(rows), len(columns)))
    for j, c in enumerate(columns):
        col = frame[c].iloc[rows]
        numeric = types.is_numeric_dtype(col) and not types.is_complex_dtype(col)
        out[:, j] = col.to_numpy(dtype=np.float64) if numeric else _pandas().factorize(col)[0]
    return out


class _Duplicates:
    """Which of the table's ``rows`` (positions) repeat an earlier row: ``inputs`` — the position of the first row
    with the same input values, for every row of the table (-1 for a row not used); ``exact`` — the same with the
    targets equal too (the inputs alone without a target)."""

    def __init__(self, x_all: Tensor, targets: np.ndarray | None, rows: np.ndarray, n_table: int) -> None:
        values = x_all[torch.from_numpy(rows)].numpy()
        self.inputs = np.full(n_table, -1, dtype=np.int64)
        self.exact = np.full(n_table, -1, dtype=np.int64)
        if len(rows) == 0:
            return
        self.inputs[rows] = rows[_first_of_equal_rows(values)]
        both = values if targets is None else np.concatenate([values, targets], axis=1)
        self.exact[rows] = rows[_first_of_equal_rows(both)]

    def copies(self, rows: np.ndarray) -> np.ndarray:
        """Those of ``rows`` that repeat an earlier row exactly (inputs and targets)."""
        return rows[self.exact[rows] != rows]

    def repeated_inputs(self, rows: np.ndarray) -> np.ndarray:
        """Those of ``rows`` whose inputs repeat an earlier row's (with the same targets or not)."""
        return rows[self.inputs[rows] != rows]

    def groups(self, rows: np.ndarray) -> np.ndarray:
        """For each of the table's rows, the first row of its group of equal inputs, -1 for a row whose inputs are
        the only ones of their kind among ``rows`` (or a row not used)."""
        first = self.inputs[rows]
        size = np.bincount(first, minlength=len(self.inputs))
        out = np.full(len(self.inputs), -1, dtype=np.int64)
        out[rows] = np.where(size[first] > 1, first, -1)
        return out

    def conflicting(self, rows: np.ndarray) -> np.ndarray:
        """For each of the table's rows, whether another of ``rows`` has the same inputs and other targets."""
        first, exact = self.inputs[rows], self.exact[rows]
        # a group of equal inputs whose rows have more than one first row of equal inputs-and-targets
        distinct = np.zeros(len(self.inputs), dtype=np.int64)
        np.add.at(distinct, first[exact == rows], 1)
        out = np.zeros(len(self.inputs), dtype=bool)
        out[rows] = distinct[first] > 1
        return out


def _target_text(frame: Any, columns: list[str], row: int) -> str:
    """The targets of table row ``row`` as the table holds them: ``'benign'``, ``151``, ``(151, 2.5)``."""
    def one(v: Any) -> str:
        v = v.item() if isinstance(v, np.generic) else v
        return f"{v:.10g}" if isinstance(v, float) else repr(v)
    values = [one(frame[c].iloc[row]) for c in columns]
    return values[0] if len(values) == 1 else f"({', '.join(values)})"


def _warn_duplicates(dup: _Duplicates, frame: Any, targets: list[str], train_pos: Tensor, val_pos: Tensor,
                     test_pos: Tensor, dropped: bool, shown: int = 4) -> None:
    """Warn about rows whose inputs repeat an earlier row's: how many (naming the first pairs), how many held-out rows
    have a training row's inputs, and the groups of equal inputs whose targets differ. An export's 3 % of rows given
    twice counted twice in training and, drawn into the test split beside their twin, raised the test score; its 1 %
    given twice with another label (one of the two wrong) went in without a word."""
    train, val, test = (p.numpy() for p in (train_pos, val_pos, test_pos))
    rows = np.sort(np.concatenate([train, val, test]))
    repeated = dup.repeated_inputs(rows)
    if len(repeated) == 0:
        return
    copies = len(dup.copies(rows))
    pairs = ", ".join(f"row {int(r)} = row {int(dup.inputs[r])}" for r in repeated[:shown])
    more = f" and {len(repeated) - shown} more" if len(repeated) > shown else ""
    # (none with the same target: "0 of them with the same `target` too (each copy counts again...)" was said of
    # rows that are no copies)
    left_out = " (`duplicates='drop'` left out the copies)" if dropped else ""
    same = (f", {copies} of them with the same `target` too (each copy counts again in training)" if targets and copies
            else f", each with another `target`{left_out}" if targets else " (each copy counts again in training)")
    trained = np.zeros(len(dup.inputs), dtype=bool)
    trained[dup.inputs[train]] = True  # the groups (by their first row) that have a training row
    leaks = [(name, int(trained[dup.inputs[pos]].sum())) for name, pos in (("test", test), ("validation", val))
             if len(pos)]
    held_out = sum(k for _, k in leaks)
    leak = ""
    if held_out:
        per_split = ", ".join(f"{name} {k}" for name, k in leaks if k)
        leak = (f" {held_out} held-out row(s) ({per_split}) have the inputs of a training row: their scores count rows "
                "the model trained on, not new ones.")
    advice = ("" if dropped or not copies else
              " To keep only the first of rows equal in inputs and `target` alike, pass `duplicates='drop'` "
              "(`--data.init_args.duplicates drop`).")
    rank_zero_warn(f"TableDataModule: {len(repeated)} of the table's {len(rows)} rows repeat the inputs of an "
                   f"earlier row exactly{same}: {pairs}{more} (rows as the report's `source_index` counts them)."
                   f"{leak}{advice}")
    if not targets:
        return
    conflicting = dup.conflicting(rows)
    groups = dup.groups(rows)
    firsts = np.unique(groups[conflicting])
    if len(firsts) == 0:
        return
    members = rows[conflicting[rows]]
    named = []
    for g in firsts[:shown]:
        group = members[groups[members] == g]
        named.append(f"rows {' / '.join(str(int(r)) for r in group)} "
                     f"({' / '.join(_target_text(frame, targets, int(r)) for r in group)})")
    more = f" and {len(firsts) - shown} more" if len(firsts) > shown else ""
    rank_zero_warn(f"TableDataModule: {len(firsts)} group(s) of rows have the same inputs but different `target` "
                   f"{targets[0] if len(targets) == 1 else targets!r}: {'; '.join(named)}{more}. Where the inputs fix "
                   "the target, at most one of each group's is right: the per-sample report marks their training "
                   "rows (`duplicate_group`, the group's first row, and `conflicting_target`); correct the wrong ones "
                   "in the table, or empty them and pass `missing='drop'`.")


def _warn_test_rows_seen(train_x: Tensor, test_x: Tensor, rows: np.ndarray, argument: str, shown: int = 4) -> None:
    """Warn when rows of a separate test table (``rows``: their positions in it) have the inputs of a training row:
    a "clean" test table cut from the same export as the training table shared rows with it, and its score counted
    rows the model had trained on. Said at setup, before a checkpoint's rows are known: a newcomer who appended the
    test rows to the training table after the fit was told, wrongly, that the checkpoint's model had trained on them
    (the changed table is warned about when the checkpoint is read)."""
    if len(test_x) == 0:
        return
    first = _first_of_equal_rows(torch.cat([train_x, test_x]).numpy())[len(train_x):]
    seen = rows[first < len(train_x)]
    if len(seen):
        named = ", ".join(str(int(r)) for r in seen[:shown]) + (f" and {len(seen) - shown} more" if len(seen) > shown
                                                               else "")
        rank_zero_warn(f"TableDataModule: {len(seen)} of the {len(rows)} rows of `{argument}` have the inputs of a "
                       f"training row exactly (its rows {named}): where the model was fitted on the training table as "
                       "it reads now, their scores count rows it trained on, not new ones. Leave them out of the test "
                       "table for a score of new rows.")


class TableDataModule(SplitLoaders, pl.LightningDataModule):
    """Your own table as training / validation / test splits: one row per sample, chosen columns as the inputs.

    Args:
        path: a ``.csv`` (comma-separated) or ``.tsv`` (tab-separated) file in UTF-8, or a ``.parquet`` file (read
            with pandas); another separator or encoding is an error that says how to convert the file. From
            Python you may pass ``frame`` instead.
        target: the column(s) to predict. ``task="classification"``: one column; its distinct values, sorted, become
            the classes ``0 … k-1`` (:attr:`classes` maps them back). ``"regression"``: one or more numeric columns.
            ``"anomaly"``: an optional 0/1 column of known anomalies, never read in training — it gives the test
            split its labels (ROC-AUC) and the per-sample report its ``corrupted`` column. With a test table
            (``test_path`` / ``test_frame``) that has it, the training table may lack it or leave it empty: an
            unlabelled table trained on, a labelled one tested by.
        task: ``"classification"``, ``"regression"`` or ``"anomaly"``.
        features: the input columns; ``None`` (default) = every column except ``target``, ``corrupted`` and
            ``drop``. They must hold numbers (or booleans): one-hot encode categories first (``pandas.get_dummies``).
        drop: columns to leave out when ``features`` is ``None`` (row ids, free text).
        id_columns: columns that name a row (an id, a machine's name, a date): never inputs, and written beside each
            row in the per-sample report and ``predictions.csv`` (after ``source_index``), from whichever table the row
            came from when it has them.
        corrupted: optional 0/1 column saying which rows you know to be bad; used only for metrics and the report's
            ``corrupted`` column, never in training. Not with ``task="anomaly"`` (its flags are ``target``).
        test_size: rows held out for testing, drawn with ``seed``: a fraction in [0, 1) or a count. They carry the
            table's corruption too; pass ``test_path`` (a table with the same columns) when you have clean ones.
            ``None`` (default): 0.2, or 0 for ``task="anomaly"`` without ``target`` (nothing to test against).
        val_size: rows held out for validation (same corruption as training), a fraction or a count; default 0.
        test_path: a separate test table (then ``test_size`` must be 0 or ``None``).
        predict_path: a table of new rows to predict, with the input columns (a target column is not needed and
            not read): ``trainer.predict`` / ``lit-robust predict`` then predict it instead of the test split, and
            ``predictions.csv`` names each row's position in it (``source_index``).
        scale: the inputs' scaling, fitted on the training rows: ``"robust"`` (median and 1.4826 × MAD, which
            outlying rows barely move), ``"standard"`` (mean and standard deviation) or ``"none"``.
        scale_target: the same for regression targets (default ``"robust"``: glitched targets inflate the standard
            deviation); predictions are in scaled units — multiply by :attr:`target_scale` and add
            :attr:`target_centre` to read them in the table's (:meth:`unscale_targets`; ``predictions.csv``, the
            reports' ``given_<column>`` / ``predicted_<column>`` and :class:`~lit_robust.MLPRegressor`'s test errors
            are in the table's units already; the reports' ``given_target`` / ``predicted_target`` are the model's,
            scaled; a target column named ``target`` gets ``given_target (table units)`` beside them).
        missing: rows with a missing or infinite value in a used column: ``"error"`` (default, the message counts
            them per column) or ``"drop"`` (left out, with a warning; the others keep their row numbers).
        batch_size: training batch size.
        eval_batch_size: batch size of the scoring, validation, test and prediction loaders.
        num_workers: DataLoader worker processes (0: read the rows in the main process).
        seed: the draw of the held-out test and validation rows.
        frame: a pandas DataFrame instead of ``path`` (Python only).
        test_frame: a pandas DataFrame instead of ``test_path`` (Python only).
        predict_frame: a pandas DataFrame instead of ``predict_path`` (Python only).
        duplicates: rows that repeat an earlier row exactly, inputs and target(s) alike: ``"keep"`` (default; they
            are used as they are) or ``"drop"`` (left out before the split, with a warning; the first of each is kept
            and every row keeps its row number). Either way a warning counts the rows whose inputs repeat an earlier
            row's, names the first, says how many held-out rows have a training row's inputs (their scores count rows
            the model trained on), and names the groups of equal inputs whose targets differ — at most one of each is
            right; those are kept, and the per-sample report marks each training row of a group of equal inputs
            (``duplicate_group``: its group's first row; ``conflicting_target``: the group's targets differ).

    After :meth:`setup`: :attr:`in_features`, :attr:`num_classes` and :attr:`classes` (classification),
    :attr:`out_features` (regression), :attr:`feature_names`, and ``train_source_index``: each training sample's row
    position in the table (0-based over the data rows; a CSV's line number is that + 2), which the per-sample report
    writes as ``source_index`` so that its rows join back to your table by position.
    """

    @property
    def _no_test_split_advice(self) -> str:  # type: ignore[override]
        # an auditor followed the first wording ("give a table ... as `test_path`") into dead ends: `test_path` changes
        # the config `--ckpt_path last` looks for, and an unlabelled anomaly table has no label column to test by
        rows = "New rows to score or predict go in `predict_path` (`--data.init_args.predict_path`)."
        if self.task == "anomaly" and not self.target_names:
            return ("An anomaly table without a `target` column of known anomalies has nothing to test against: each "
                    f"training row's score is in the fit's per-sample report. {rows}")
        return f"Fit with `test_size` > 0 or a `test_path` table to have one. {rows}"

    def __init__(
        self,
        path: str | None = None,
        target: str | list[str] | None = None,
        task: Task = "classification",
        features: list[str] | None = None,
        drop: list[str] | None = None,
        id_columns: str | list[str] | None = None,
        corrupted: str | None = None,
        test_size: float | int | None = None,
        val_size: float | int = 0,
        test_path: str | None = None,
        scale: Scaling = "robust",
        scale_target: Scaling = "robust",
        missing: Literal["error", "drop"] = "error",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        seed: int = 0,
        frame: Any = None,
        test_frame: Any = None,
        predict_path: str | None = None,
        predict_frame: Any = None,
        duplicates: Literal["keep", "drop"] = "keep",
    ) -> None:
        super().__init__()
        if task not in _TASKS:
            raise ValueError(f"`task` must be one of {list(_TASKS)}, got {task!r}.")
        if (path is None) == (frame is None):
            raise ValueError("Give the table as `path` (a .csv, .tsv or .parquet file) or, from Python, as `frame` "
                             f"(a pandas DataFrame) — exactly one of them; got path={path!r} and "
                             f"frame={'a ' + type(frame).__name__ if frame is not None else None}.")
        if test_path is not None and test_frame is not None:
            raise ValueError("Give the test table as `test_path` or `test_frame`, not both.")
        if predict_path is not None and predict_frame is not None:
            raise ValueError("Give the table to predict as `predict_path` or `predict_frame`, not both.")
        targets = _as_names(target, "target")
        if task != "regression" and len(targets) > 1:
            # a CLI user's three measured outputs under the default task answered only "must be one column"
            raise ValueError(f"`target` must be one column for task={task!r}, got {targets}. Several targets are "
                             "a regression: pass task='regression' (`--data.init_args.task regression`).")
        if task != "anomaly" and not targets:
            raise ValueError(f"`target` (the column to predict) is required for task={task!r}: name one column, e.g. "
                             "target='label'. (Only task='anomaly' trains without one.)")
        if corrupted is not None and not isinstance(corrupted, str):
            raise ValueError(f"`corrupted` must be the name of a 0/1 column, got {corrupted!r}.")
        if corrupted is not None and task == "anomaly":
            raise ValueError("`corrupted` is not used with task='anomaly': name the column of known anomalies as "
                             f"`target` instead (got corrupted={corrupted!r}).")
        if features is not None and not _as_names(features, "features"):
            # said at construction: an auditor's `features=[]` was accepted and refused only at `setup`
            raise _no_features(features)
        for name, value in (("frame", frame), ("test_frame", test_frame), ("predict_frame", predict_frame)):
            if value is not None:
                _check_frame(value, name)
        if features is not None and drop:
            raise ValueError(f"Pass `features` (the columns to use) or `drop` (the columns to leave out), not both; "
                             f"got features={features!r}, drop={drop!r}.")
        for name, how in (("scale", scale), ("scale_target", scale_target)):
            if how not in _SCALINGS:
                raise ValueError(f"`{name}` must be one of {list(_SCALINGS)}, got {how!r}.")
        if missing not in ("error", "drop"):
            raise ValueError(f"`missing` must be 'error' or 'drop', got {missing!r}.")
        if not isinstance(duplicates, str) or duplicates not in ("keep", "drop"):
            raise ValueError(f"`duplicates` must be 'keep' or 'drop', got {duplicates!r}.")
        has_test_table = test_path is not None or test_frame is not None
        if has_test_table and test_size not in (None, 0):
            raise ValueError(f"`test_size` must be 0 or None with a test table (`test_path`/`test_frame`), got "
                             f"{test_size!r}.")
        if test_size is not None:
            _share("test_size", test_size, 1)
        _share("val_size", val_size, 1)
        check_int("batch_size", batch_size, 1)
        check_int("eval_batch_size", eval_batch_size, 1)
        check_int("num_workers", num_workers, 0)
        check_seed("seed", seed)
        self.path, self.frame, self.test_path, self.test_frame = path, frame, test_path, test_frame
        self.predict_path, self.predict_frame = predict_path, predict_frame
        self.duplicates = duplicates
        #: for each row of the table, the first row with the same inputs when there are several, else -1 (setup)
        self._duplicate_group: np.ndarray | None = None
        self._conflicting: np.ndarray | None = None
        self.predict_set: IndexedDataset | None = None
        self.predict_source_index: Tensor | None = None
        self.task, self.target_names, self.corrupted_column = task, targets, corrupted
        self.features, self.drop = (None if features is None else _as_names(features, "features")), _as_names(drop, "drop")
        self.id_columns = _as_names(id_columns, "id_columns")
        self.test_size, self.val_size, self.scale, self.scale_target, self.missing = (
            test_size, val_size, scale, scale_target, missing)
        self.batch_size, self.eval_batch_size, self.num_workers, self.seed = batch_size, eval_batch_size, num_workers, seed
        self.target_kind = {"classification": "class", "regression": "regression", "anomaly": "anomaly"}[task]
        self.train_set: IndexedDataset | None = None
        self.val_set: IndexedDataset | None = None
        self.test_set: IndexedDataset | None = None
        self.train_source_index: Tensor | None = None
        self.val_source_index: Tensor | None = None
        self.test_source_index: Tensor | None = None
        self.classes: list[Any] | None = None
        self.feature_names: list[str] = []
        self.feature_centre = self.feature_scale = self.target_centre = self.target_scale = None
        self._table_digest: str | None = None
        self._split_from_table = False
        #: what the outputs name rows by, for each table read ("table", "test", "predict"), whole columns by row
        #: position (a split's ``*_source_index``): its ``id_columns`` and, for a regression, its own target values
        #: (unscaling the float32 targets read 302 as 301.99999693851 to an auditor)
        self._ids: dict[str, dict[str, list]] = {}
        self._given_targets: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ reading
    def _table(self, source: Any, argument: str) -> Any:
        if isinstance(source, (str, os.PathLike)):
            if argument.endswith("frame"):
                _check_frame(source, argument)
            frame = _read_table(source, argument, self.id_columns)
            what = f"`{argument}`={os.fspath(source)!r}"
        else:
            _check_frame(source, argument)
            frame, what = source, f"`{argument}`"
        if not all(isinstance(c, str) for c in frame.columns):
            # `pandas.DataFrame(array)` names its columns 0 .. d-1: the names given here are str (as a CSV's header),
            # and `frame["0"]` was pandas' bare `KeyError: '0'`. A renamed copy; the caller's frame is left as it is
            frame = frame.rename(columns=str)
        if len(frame) == 0:
            # a header row alone: an auditor's was told its columns "do not hold numbers ()"
            raise ValueError(f"{what} has no rows, only the columns {_some_columns(frame.columns)}: a table needs at "
                             "least one row.")
        return frame

    def _used_columns(self, frame: Any) -> list[str]:
        given = [*self.target_names, *([self.corrupted_column] if self.corrupted_column else [])]
        _columns_named(frame, self.target_names, "target")
        _columns_named(frame, self.id_columns, "id_columns")
        if self.corrupted_column:
            # a docs reader's own CSV with `--config configs/itlm_table.yaml`: the example's ground-truth column
            _columns_named(frame, [self.corrupted_column], "corrupted",
                           " It is the ground truth of which rows are corrupted, known only for a table corrupted on "
                           "purpose: leave it out for your own data (`--data.init_args.corrupted null` over a "
                           "config that names one).")
        if self.features is not None:
            if not self.features:
                raise _no_features(self.features)  # set after the constructor
            features = _columns_named(frame, self.features, "features")
            clash = [c for c in features if c in given or c in self.id_columns]
            if clash:
                raise ValueError(f"`features` must not include the `target`, `corrupted` or `id_columns` column(s), got "
                                 f"{clash}.")
        else:
            _columns_named(frame, self.drop, "drop")
            features = [str(c) for c in frame.columns
                        if str(c) not in given and str(c) not in self.drop and str(c) not in self.id_columns]
        _unique_columns(frame, [*features, *given, *self.id_columns], f"`{'path' if self.frame is None else 'frame'}`")
        if not features:
            raise ValueError(f"No input column is left: the table's columns are {[str(c) for c in frame.columns]}, "
                             f"and `target`, `corrupted`, `drop` and `id_columns` took them all.")
        ids = [c for c in features if _looks_like_an_id(frame[c])]
        if ids:
            # a CSV newcomer's `record_id` (1..n) went in as an input without a word, where text columns were refused
            rank_zero_warn(f"TableDataModule: column(s) {ids} look like row ids (whole numbers, a different one in "
                           "every row) and are used as inputs; leave them out with `drop` (or `id_columns`, to see them "
                           "beside each row of the report) unless they mean something.")
        if self.task == "anomaly" and not self.target_names:
            flags = [c for c in features if _zero_one(frame[c])]
            # many 0/1 columns are binary inputs (a newcomer's digits pixels that held only 0 and 1 were warned
            # about): then only those named like a flag
            named = [c for c in flags if re.search(r"anomal|outlier|fraud|label|target|flag|fault|^is_|_is_", c, re.I)]
            flags = flags if len(flags) <= 2 else named
            if flags:
                # an anomaly newcomer's `is_anomaly` column, left unnamed, trained the flow as its 7th input: the
                # ground truth leaked into the detector without a word
                rank_zero_warn(f"TableDataModule: column(s) {flags} hold only 0 and 1 and are used as inputs of the "
                               "anomaly detector. If one flags the known anomalies, name it `target` (read only to "
                               "test, never in training), or leave it out with `drop`.")
        complex_targets = [c for c in self.target_names if _pandas().api.types.is_complex_dtype(frame[c])]
        if complex_targets:  # read as float64 they lost their imaginary part, unsaid
            raise ValueError(f"`target` column(s) {complex_targets} hold complex numbers, and a model predicts real "
                             "ones: split each into two real columns (`.to_numpy().real` and `.imag`) and name both.")
        _check_numbers(frame, features, "features", "One-hot encode categories (`pandas.get_dummies(frame, "
                       "columns=[...])`), convert numbers written as text (`pandas.to_numeric`), or leave the columns "
                       "out with `drop` (or with `id_columns`, for a column that names each row, to see it beside each "
                       "row of the report).")
        return features

    def _usable_rows(self, frame: Any, columns: list[str], which: str) -> np.ndarray:
        """Positions of the rows with every used value present and finite (or an error, with ``missing="error"``)."""
        bad = np.zeros(len(frame), dtype=bool)
        counts = {}
        types = _pandas().api.types
        for c in columns:
            col = frame[c]
            miss = np.array(col.isna().to_numpy(), dtype=bool)  # a copy: pandas may hand out a read-only view
            if types.is_numeric_dtype(col) and not types.is_bool_dtype(col):
                miss |= ~np.isfinite(col.to_numpy(dtype=float, na_value=np.nan))
            if miss.any():
                counts[c] = int(miss.sum())
            bad |= miss
        if not bad.any():
            return np.arange(len(frame))
        per_column = ", ".join(f"{c!r} ({k})" for c, k in counts.items())
        words = _read_as_missing(frame, list(counts))
        empty = [c for c, k in counts.items() if k == len(frame) and c not in self.target_names]
        if empty and self.missing == "error":
            # `missing='drop'` left no row then, and the error blamed `test_size` (a reviewer's all-NaN column)
            raise ValueError(f"{which}: column(s) {empty[:4]} have no value in any of the {len(frame)} rows: leave "
                             f"{'it' if len(empty) == 1 else 'them'} out with `drop` (e.g. `drop=[{empty[0]!r}]`), "
                             "or fill them.")
        if self.missing == "error":
            # on the rows to predict, `missing='drop'` changes the fit's settings, and `--ckpt_path last` then found
            # no fit "with this config" (an anomaly newcomer followed the advice into a second error)
            later = (" (it is one of the fit's settings: from a checkpoint, pass the checkpoint file as `ckpt_path`, "
                     "not `last`)" if which.startswith("`predict") else "")
            raise ValueError(f"{which}: {int(bad.sum())} of {len(frame)} rows have a missing or infinite value in a "
                             f"used column ({per_column}), e.g. row {int(np.flatnonzero(bad)[0])}. Fill them, or pass "
                             f"`missing='drop'` to leave those rows out{later}.{words}{self._text_targets_too(frame)}")
        rank_zero_warn(f"TableDataModule: left out {int(bad.sum())} of {len(frame)} rows of {which} with a missing or "
                       f"infinite value ({per_column}); the other rows keep their row numbers (`source_index`).{words}")
        return np.flatnonzero(~bad)

    def _text_targets_too(self, frame: Any) -> str:
        """`` The `target` column 'y' also holds cells that are not numbers ...``: a regression's target cells that
        the missing-value error would leave for the next fit to find (a newcomer's 'n/a' cells were named, and after
        `missing='drop'` the next fit failed on '151 mg'); ``""`` when there are none."""
        if self.task != "regression" or self.missing != "error":
            return ""
        pd = _pandas()
        text = [c for c in self.target_names if c in frame and not pd.api.types.is_numeric_dtype(frame[c])
                and bool((frame[c].notna() & pd.to_numeric(frame[c], errors="coerce").isna()).any())]
        if not text:
            return ""
        cells = "; ".join(_cells_that_are_not_numbers(frame[c], c) for c in text)
        return (f" The `target` column(s) {text} also hold cells that are not numbers ({cells}): a regression "
                "predicts numbers, so correct those cells as well (or empty them: "
                "`pandas.to_numeric(column, errors='coerce')`).")

    def _class_index(self, column: Any, which: str) -> Tensor:
        assert self.classes is not None
        lookup = {v: i for i, v in enumerate(self.classes)}
        unknown = sorted({v for v in column.tolist() if v not in lookup}, key=str)
        if unknown:
            raise ValueError(f"`target` {self.target_names[0]!r} of {which} holds classes the training table does not "
                             f"have: {unknown[:5]} (training classes: {self.classes}).")
        return torch.tensor([lookup[v] for v in column.tolist()], dtype=torch.long)

    def _flags(self, column: Any, argument: str) -> Tensor:
        values = column.to_numpy()
        try:
            numeric = values.astype(float)
        except (TypeError, ValueError):
            numeric = None
        if numeric is None or not np.isin(numeric, (0.0, 1.0)).all():
            seen = sorted({str(v) for v in values.tolist()})[:6]
            raise ValueError(f"`{argument}` column {column.name!r} must hold 0/1 (or True/False) flags, got values "
                             f"{seen}.")
        return torch.from_numpy(numeric.astype(bool))

    def _usable_flags(self, column: Any, rows: np.ndarray, argument: str) -> Tensor:
        """:meth:`_flags` of the usable ``rows`` of ``column``, as a mask over every row of the table (False at the
        others): with ``missing="drop"`` a flag left empty is a row left out, not a bad flag (its NaN was refused as
        "must hold 0/1 flags")."""
        flags = torch.zeros(len(column), dtype=torch.bool)
        flags[torch.from_numpy(rows)] = self._flags(column.iloc[rows], argument)
        return flags

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if built_already(self):  # built once; a setting changed since is warned about
            return
        frame = self._table(self.path if self.frame is None else self.frame, "frame" if self.path is None else "path")
        names = self.target_names
        if self._unlabelled_training(frame):
            # an unlabelled anomaly table trained on, a labelled test table to test by (an anomaly newcomer's pair was
            # refused both ways: `target` missing from the training table, or no `target` to test by); an empty
            # label column in the training table counts as absent, not as missing values
            frame = frame.drop(columns=[c for c in names if c in frame.columns])
            self.target_names = []
        try:
            self._setup_from(frame, names)
        finally:
            self.target_names = names

    def _unlabelled_training(self, frame: Any) -> bool:
        """Whether an anomaly table is trained on without its ``target`` column: ``task="anomaly"`` with a test table
        (``test_path`` / ``test_frame``) that has the column, and a training table without it, or with it empty."""
        if self.task != "anomaly" or not self.target_names or (self.test_path is None and self.test_frame is None):
            return False
        if not all(c not in frame.columns or bool(frame[c].isna().all()) for c in self.target_names):
            return False
        test = self.test_frame if self.test_path is None else self._table(self.test_path, "test_path")
        return all(c in test.columns for c in self.target_names)  # else: the training table's error names it

    def _setup_from(self, frame: Any, names: list[str]) -> None:
        """:meth:`setup` of the training table ``frame`` (``self.target_names`` empty where it is unlabelled) and the
        other tables, which read the ``target`` columns ``names``."""
        features = self._used_columns(frame)
        self.feature_names = features
        self._ids = {"table": self._id_values(frame)}
        _warn_repeated_ids(frame, self.id_columns, "the table")
        used = [*features, *self.target_names, *([self.corrupted_column] if self.corrupted_column else [])]
        rows = self._usable_rows(frame, used, "the table")
        # the training table's rows, in order: another digest at `test` from a checkpoint means another split
        self._table_digest = hashlib.sha256(_pandas().util.hash_pandas_object(
            frame[used].iloc[rows], index=False).to_numpy().tobytes()).hexdigest()
        x_all = _numbers(frame[features])
        target_key = _target_key(frame, self.target_names, rows) if self.target_names else None
        dup = _Duplicates(x_all, target_key, rows, len(frame))
        dropped = self.duplicates == "drop" and len(dup.copies(rows)) > 0
        if dropped:
            copies = dup.copies(rows)
            shown = ", ".join(f"row {int(r)} = row {int(dup.exact[r])}" for r in copies[:4])
            rank_zero_warn(f"TableDataModule: left out {len(copies)} of {len(rows)} rows of the table that repeat an "
                           f"earlier row exactly{', inputs and `target` alike' if self.target_names else ''} ({shown}"
                           f"{f' and {len(copies) - 4} more' if len(copies) > 4 else ''}; `duplicates='drop'`); the "
                           "first of each is kept, and every row keeps its row number (`source_index`).")
            rows = rows[dup.exact[rows] == rows]
        has_test_table = self.test_path is not None or self.test_frame is not None
        labelled = bool(self.target_names)
        test_size = self.test_size if self.test_size is not None else (
            0 if has_test_table or (self.task == "anomaly" and not labelled) else 0.2)
        n = len(rows)
        n_test, n_val = _share("test_size", test_size, n), _share("val_size", self.val_size, n)
        if self.task == "anomaly" and not labelled and n_test:
            raise ValueError(f"`test_size`={test_size!r}: task='anomaly' without a `target` column of known anomalies "
                             "has nothing to test against; leave `test_size` at None (no test split) or name the "
                             "labels as `target`.")
        if n_test + n_val >= n:
            raise ValueError(f"`test_size` + `val_size` must leave training rows: {n_test} + {n_val} of the table's "
                             f"{n} usable rows.")
        perm = torch.from_numpy(rows)[torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))]
        test_pos, val_pos, train_pos = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
        self.feature_centre, self.feature_scale = robust_scale(x_all[train_pos], self.scale)

        def inputs(x: Tensor) -> Tensor:
            return ((x - self.feature_centre) / self.feature_scale).float()

        if self.task == "classification":
            column = frame[self.target_names[0]]
            values = column.to_numpy()
            if np.issubdtype(values.dtype, np.floating) and not np.all(np.mod(values[rows], 1) == 0):
                example = next(v for v in values[rows] if v % 1)
                # as a number, not numpy's repr (`np.float64(17.76...)`, a regression newcomer's)
                raise ValueError(f"`target` {self.target_names[0]!r} holds non-integer numbers (e.g. {float(example):.6g}): "
                                 "for a numeric target to predict pass task='regression'.")
            labels = column.iloc[rows]
            if np.issubdtype(values.dtype, np.floating) and bool((labels.abs() < 2.0 ** 53).all()):
                # whole numbers read as float64, named "0.0", "1.0" in every output: made float by missing cells
                # (left out with `missing="drop"`), or written "1.0" by the export (a lab system's whole label column,
                # or one cell of it); the check above refused any that are not whole
                labels = labels.astype(np.int64)
            self.classes = sorted(set(labels.tolist()), key=lambda v: (str(type(v)), v))
            alike = Counter(str(v) for v in self.classes)
            twins = [c for c in self.classes if alike[str(c)] > 1]
            if twins:
                # 1 and "1" (numbers and text in one column) were two classes that every output printed the same
                raise ValueError(f"`target` {self.target_names[0]!r} holds labels that read the same but differ in "
                                 f"type: {', '.join(f'{v!r} ({type(v).__name__})' for v in twins[:4])}: make them one "
                                 f"type, e.g. `frame[{self.target_names[0]!r}] = frame[{self.target_names[0]!r}]"
                                 ".astype(str)`.")
            _warn_near_twin_labels(self.classes, self.target_names[0])
            if len(self.classes) < 2:
                raise ValueError(f"`target` {self.target_names[0]!r} holds one class only ({self.classes}): a "
                                 "classifier needs at least two.")
            _warn_one_row_classes(labels, self.target_names[0])
            y_all = torch.zeros(len(frame), dtype=torch.long)
            y_all[torch.from_numpy(rows)] = self._class_index(labels, "the table")
        elif self.task == "regression":
            text = [c for c in self.target_names if not _pandas().api.types.is_numeric_dtype(frame[c])]
            if text:
                # the cells that are not numbers, and advice by how many: a regression newcomer's 2,000 float targets
                # with one typo ('broken' in row 7) were told neither the cell nor the row, and to pass classification
                pd = _pandas()
                cells = "; ".join(_cells_that_are_not_numbers(frame[c], c) for c in text if frame[c].notna().any())
                mostly = all(pd.to_numeric(frame[c], errors="coerce").notna().sum() > frame[c].notna().sum() / 2
                             for c in text)
                advice = ("most cells are numbers: correct those cells, or empty them (`pandas.to_numeric(column, "
                          "errors='coerce')`) and pass `missing='drop'`" if mostly else
                          "a regression predicts numbers (for labels pass task='classification')")
                raise ValueError(f"`target` column(s) {text} do not hold numbers ({cells}): {advice}.")
            raw = _numbers(frame[self.target_names])
            constant = [name for j, name in enumerate(self.target_names)
                        if len(train_pos) > 1 and bool((raw[train_pos, j] == raw[train_pos[0], j]).all())]
            if len(constant) == len(self.target_names):
                # a regression newcomer's export wrote 100.0 in every row: ITLM estimated 0 %, the report said every
                # row was clean, and the test R² was -0.47, without a word
                values = ", ".join(f"{float(v):.6g}" for v in raw[train_pos[0]].tolist())
                one = len(constant) == 1
                named = f"{constant[0]!r} holds one value" if one else f"columns {constant} each hold one value"
                ask = "Is it the column to predict?" if one else "Are they the columns to predict?"
                raise ValueError(f"`target` {named} in every training row ({values}): a regression has nothing to "
                                 f"learn from {'it' if one else 'them'}. {ask}")
            self.target_centre, self.target_scale = robust_scale(raw[train_pos], self.scale_target)
            self._given_targets = {"table": raw}
            y_all = ((raw - self.target_centre) / self.target_scale).float()
            _warn_far_out_targets(raw, torch.from_numpy(rows), self.target_names)
        else:
            y_all = (self._usable_flags(frame[self.target_names[0]], rows, "target").long() if labelled
                     else torch.zeros(len(frame), dtype=torch.long))
        flags = None
        if self.corrupted_column:
            flags = self._usable_flags(frame[self.corrupted_column], rows, "corrupted")
        elif self.task == "anomaly" and labelled:
            flags = y_all.bool()

        def split(pos: Tensor, with_flags: bool = True) -> IndexedDataset:
            return IndexedDataset(TensorDataset(inputs(x_all[pos]), y_all[pos]),
                                  corrupted=flags[pos] if flags is not None and with_flags else None)

        _warn_duplicates(dup, frame, self.target_names, train_pos, val_pos, test_pos, dropped)
        self._duplicate_group, self._conflicting = dup.groups(rows), dup.conflicting(rows)
        self.train_set, self.train_source_index = split(train_pos), train_pos.clone()
        if n_val:
            self.val_set, self.val_source_index = split(val_pos), val_pos.clone()
        self._split_from_table = bool(n_test or n_val)
        if n_test:
            self.test_set, self.test_source_index = split(test_pos, with_flags=False), test_pos.clone()
        self.target_names = names  # the test table's, where the training rows are unlabelled
        if has_test_table:
            self._setup_test_table(features, inputs, x_all[train_pos])
        if self.predict_path is not None or self.predict_frame is not None:
            self._setup_predict_table(features, inputs)
        remember_settings(self, ("path", "frame", "target_names", "task", "features", "drop", "id_columns",
                                 "corrupted_column", "test_size", "val_size", "test_path", "test_frame", "predict_path",
                                 "predict_frame", "scale", "scale_target", "missing", "seed", "duplicates"))

    def _setup_predict_table(self, features: list[str], inputs: Any) -> None:
        """New rows to predict: the inputs only (a CSV newcomer could not predict unlabelled rows from the CLI); their
        targets are placeholders (-1, 0.0) that ``describe_predictions`` leaves out of ``predictions.csv`` (NaN ones
        set off the warning about NaN targets, meant for training rows: a table newcomer's new rows were told to be
        dropped or imputed)."""
        frame, rows, argument = self._other_table(self.predict_path, self.predict_frame, "predict", features)
        self._ids["predict"] = self._id_values(frame)
        _warn_repeated_ids(frame, [c for c in self.id_columns if c in frame.columns], f"`{argument}`")
        x = inputs(_numbers(frame[features].iloc[rows]))
        y = (torch.zeros(len(rows), len(self.target_names)) if self.task == "regression"
             else torch.full((len(rows),), -1, dtype=torch.long))
        self.predict_set, self.predict_source_index = IndexedDataset(TensorDataset(x, y)), torch.from_numpy(rows)

    def predict_dataloader(self) -> Any:
        """The ``predict_path`` table's rows in order when there is one, else the test split (as every datamodule)."""
        if self.predict_set is not None:
            return self._loader(self.predict_set, False, self.eval_batch_size)
        return super().predict_dataloader()

    def _other_table(self, path: str | None, given: Any, name: str, needed: list[str]) -> tuple[Any, np.ndarray, str]:
        """A test or prediction table (``path`` or the DataFrame ``given``): it, the positions of its usable rows
        (with the training table's columns ``needed``), and the argument it came as."""
        argument = f"{name}_frame" if path is None else f"{name}_path"
        frame = self._table(given if path is None else path, argument)
        _same_columns(frame, needed, argument)
        _unique_columns(frame, [*needed, *(c for c in self.id_columns if c in frame.columns)], f"`{argument}`")
        return frame, self._usable_rows(frame, needed, f"`{argument}`"), argument

    def _setup_test_table(self, features: list[str], inputs: Any, train_x: Tensor) -> None:
        frame, rows, argument = self._other_table(self.test_path, self.test_frame, "test",
                                                  [*features, *self.target_names])
        self._ids["test"] = self._id_values(frame)
        _warn_repeated_ids(frame, [c for c in self.id_columns if c in frame.columns], f"`{argument}`")
        raw = _numbers(frame[features].iloc[rows])
        _warn_test_rows_seen(train_x, raw, rows, argument)
        x = inputs(raw)
        if self.task == "classification":
            y = self._class_index(frame[self.target_names[0]].iloc[rows], f"`{argument}`")
        elif self.task == "regression":
            self._given_targets["test"] = _numbers(frame[self.target_names])
            y = ((self._given_targets["test"][torch.from_numpy(rows)] - self.target_centre) / self.target_scale).float()
        elif self.target_names:
            y = self._flags(frame[self.target_names[0]].iloc[rows], "target").long()
        else:
            raise ValueError(f"`{argument}`: task='anomaly' without a `target` column has nothing to test against.")
        self.test_set, self.test_source_index = IndexedDataset(TensorDataset(x, y)), torch.from_numpy(rows)

    # ------------------------------------------------------------------ shapes
    def _set_up(self) -> IndexedDataset:
        if self.train_set is None:
            raise RuntimeError("TableDataModule: call `setup()` first (the table is read there).")
        return self.train_set

    @property
    def in_features(self) -> int:
        """The number of input columns (after :meth:`setup`): a model's ``in_features``."""
        return int(self._set_up()[0][1].numel())

    @property
    def num_classes(self) -> int | None:
        """The number of classes (classification, after :meth:`setup`), else ``None``."""
        self._set_up()
        return None if self.classes is None else len(self.classes)

    @property
    def out_features(self) -> int:
        """The number of target columns (regression, after :meth:`setup`): a regressor's ``out_features``."""
        self._set_up()
        return len(self.target_names) if self.task == "regression" else 1

    def describe_predictions(self, table: dict[str, list], loaders: Any = None) -> dict[str, list]:
        """``predictions.csv``'s columns (:class:`~lit_robust.PredictionWriter`) in the table's words, when they are
        predictions of this module's test split or ``predict_path`` table (``loaders`` is its predict loader):
        ``source_index`` (each row's position in the table, test table or table to predict) after ``index``; with classes, ``predicted_class`` (and
        ``target_class``) from :attr:`classes`; for a regression, ``predicted_<column>`` (and ``given_<column>``) in
        the table's units. Any other table comes back unchanged."""
        loader = loaders[0] if isinstance(loaders, (list, tuple)) and len(loaders) == 1 else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is None or "index" not in table:
            return table
        if dataset is self.test_set:
            rows, labelled = self.test_source_index, True
            source = "test" if self.test_path is not None or self.test_frame is not None else "table"
        elif dataset is self.predict_set:  # new rows: their targets are placeholders, left out
            rows, labelled, source = self.predict_source_index, False, "predict"
        else:
            return table
        out: dict[str, list] = {}
        for column, values in table.items():
            if not labelled and (column == "target" or column.startswith("target_")):
                continue
            out[column] = values
            if column == "index":
                out["source_index"] = rows[torch.as_tensor(values, dtype=torch.long)].tolist()
                out.update(self._ids_of(source, out["source_index"], table))
        q = len(self.target_names)
        given = self._given_of(source, out["source_index"]) if labelled and "source_index" in out else None
        out.update(self._in_table_terms(out, given, PREDICTION_CLASS_COLUMNS,
                                        {"predicted_": ["prediction"] if q == 1 else [f"prediction_{j}" for j in range(q)],
                                         "given_": ["target"] if q == 1 else [f"target_{j}" for j in range(q)]}))
        return out

    def describe_report(self, table: dict[str, list]) -> dict[str, list]:
        """A per-sample report's table (ITLM, the filters, …) with the class names beside the labels
        (``given_class``, ``predicted_class``) or, for a regression, the targets in the table's units
        (``given_<column>`` for every target column; ``predicted_<column>`` for a one-target regression, whose report
        has the model's outputs), appended; where rows of the table share their inputs, ``duplicate_group`` (for such a
        row, the first of them; empty for the others) and ``conflicting_target`` (True where those rows' targets
        differ: at most one of them is right)."""
        rows = (self.train_source_index[torch.as_tensor(table["index"], dtype=torch.long)].tolist()
                if "index" in table and self.train_source_index is not None else None)
        extra = self._in_table_terms(table, None if rows is None else self._given_of("table", rows),
                                     REPORT_CLASS_COLUMNS,
                                     {"given_": ["given_target"], "predicted_": ["predicted_target"]})
        ids = {} if rows is None else self._ids_of("table", rows, table)
        if rows is not None and self._duplicate_group is not None and self._conflicting is not None:
            group = self._duplicate_group[np.asarray(rows, dtype=np.int64)]
            if (group >= 0).any():  # rows of the table given more than once (the warning at setup names them)
                extra["duplicate_group"] = [int(g) if g >= 0 else None for g in group.tolist()]
                extra["conflicting_target"] = self._conflicting[np.asarray(rows, dtype=np.int64)].tolist()
        out: dict[str, list] = {}
        for column, values in table.items():  # the ids after `source_index` (else after `index`)
            out[column] = values
            if column == ("source_index" if "source_index" in table else "index"):
                out.update(ids)
        return {**out, **extra}

    def _id_values(self, frame: Any) -> dict[str, list]:
        """``id_columns`` of a table that has them, as plain values (dates and other objects as text)."""
        pd = _pandas()

        def plain(v: Any) -> Any:
            # a missing id (None, NaN, pandas' NA/NaT) stays missing: str() made it the id "nan" / "<NA>"
            if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
                return None
            v = v.item() if isinstance(v, np.generic) else v  # pandas < 2 lists an Int64 column as numpy ints
            return v if isinstance(v, (bool, int, float, str)) else str(v)
        return {c: [plain(v) for v in frame[c].tolist()] for c in self.id_columns if c in frame.columns}

    def _given_of(self, source: str, rows: list[int]) -> Tensor | None:
        """A regression's own target values ``[len(rows), q]`` of ``rows`` of table ``source`` (else ``None``)."""
        given = self._given_targets.get(source)
        return None if given is None else given[torch.as_tensor(rows, dtype=torch.long)]

    def _ids_of(self, source: str, rows: list[int], table: dict[str, list]) -> dict[str, list]:
        """The ``id_columns`` values of ``rows`` of table ``source``; a name the table already uses gains " (id)"."""
        return {(c if c not in table else f"{c} (id)"): [values[r] for r in rows]
                for c, values in self._ids.get(source, {}).items()}

    def _in_table_terms(self, table: dict[str, list], given: Tensor | None, labels: dict[str, str],
                        targets: dict[str, list[str]]) -> dict[str, list]:
        """Columns of class names (``labels``: index column → name column) or of a regression's targets in the
        table's units (``targets``: prefix → the scaled columns, one per target column), for those present; the
        ``"given_"`` ones are the table's own values (``given``: ``[rows, q]``, one per row of ``table``)."""
        out: dict[str, list] = {}

        def named(column: str) -> str:
            # a target column named "target" (scikit-learn's `as_frame` name) made `given_target` in the table's units
            # replace the report's own, scaled `given_target`: the table's gains " (table units)"
            return f"{column} (table units)" if column in table else column

        if self.classes is not None:
            for column, name in labels.items():
                if column in table:
                    out[name] = [None if v is None or int(v) < 0 or int(v) >= len(self.classes)
                                 else str(self.classes[int(v)]) for v in table[column]]
        elif self.task == "regression":
            for prefix, columns in targets.items():
                if prefix == "given_" and given is not None:
                    # the table's own values: also for several targets, whose report has no scaled target columns to
                    # unscale (a release check found a two-target report without them)
                    for j, name in enumerate(self.target_names):
                        out[named(f"{prefix}{name}")] = given[:, j].tolist()
                    continue
                if len(columns) != len(self.target_names) or not all(c in table for c in columns):
                    continue
                rows = len(table[columns[0]])
                scaled = torch.tensor([[math.nan if table[c][r] is None else float(table[c][r]) for c in columns]
                                       for r in range(rows)], dtype=torch.float64).reshape(rows, len(columns))
                units = self.unscale_targets(scaled)
                for j, name in enumerate(self.target_names):
                    out[named(f"{prefix}{name}")] = units[:, j].tolist()
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What the model was trained on, saved in Lightning's checkpoints: the input columns, the classes and the
        scaling fitted on the training rows, so that a later ``test`` or ``predict`` from the checkpoint scales its
        rows as the model's training rows were, even where the training table has changed since (an anomaly
        newcomer's appended rows moved the scores of the same new rows by a median 22 %, without a word)."""
        if self.feature_centre is None:
            return {}
        state: dict[str, Any] = {"features": list(self.feature_names), "feature_centre": self.feature_centre.tolist(),
                                 "feature_scale": self.feature_scale.tolist(), "table_digest": self._table_digest}
        if self.classes is not None:
            state["classes"] = self._plain_classes()
        if self.target_centre is not None:
            state["target_centre"], state["target_scale"] = self.target_centre.tolist(), self.target_scale.tolist()
        return state

    def _plain_classes(self) -> list[Any]:
        """:attr:`classes` as plain Python values (numpy scalars unwrapped), as checkpoints keep them."""
        return [c.item() if hasattr(c, "item") else c for c in self.classes or []]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or self.feature_centre is None:
            return
        if list(state["features"]) != list(self.feature_names):
            raise ValueError(f"The checkpoint's model was trained on the input columns {list(state['features'])}, "
                             f"but the table read now gives {list(self.feature_names)}: point the datamodule at a table "
                             "with the training run's columns (or its `features`).")
        saved = state.get("classes")
        if saved is not None and self.classes is not None and self._plain_classes() != list(saved):
            raise ValueError(f"The checkpoint's model was trained on the classes {list(saved)}, but the table read "
                             f"now has {list(self.classes)}: its class numbers would name other classes. Point the "
                             "datamodule at the table it was trained on (or one with the same classes).")
        changed = state.get("table_digest") not in (None, self._table_digest)
        trainer = getattr(self, "trainer", None)
        fitting = trainer is not None and getattr(getattr(trainer, "state", None), "fn", None) == "fit"
        if changed and fitting and not self._split_from_table:
            # a CLI newcomer edited labels in the CSV and resumed: accepted without a word (a changed row count is
            # refused, changed feature values change the scaling, warned below; changed labels changed nothing seen)
            rank_zero_warn("TableDataModule: the training table differs from the one the checkpoint's fit read (rows "
                           "changed or reordered: labels, targets or inputs), so the resumed fit trains on the rows "
                           "read now, and its selections, estimate and report, made by row, meet other values. For "
                           "the fit the checkpoint began, resume on that table; for the edited one, start a new fit.")
        if changed and self._split_from_table:
            # a newcomer appended 20 rows to their training CSV: `test` drew its split again, 30 of its 40 rows had
            # been training rows, and test accuracy read 0.725 for 0.667, with the scaling warning alone
            rank_zero_warn("TableDataModule: the table differs from the one the checkpoint's model was fitted on (rows "
                           "added, removed, changed or reordered), so its test and validation splits (`test_size`, "
                           "`val_size`) are drawn again from the rows read now: they may hold rows the model trained "
                           "on, and their scores then read high. Test on the fit's table, or give a fixed test table "
                           "(`test_path`).")
        centre, scale = (torch.tensor(state[k], dtype=self.feature_centre.dtype) for k in ("feature_centre",
                                                                                           "feature_scale"))
        if not (torch.equal(centre, self.feature_centre) and torch.equal(scale, self.feature_scale)):
            moved = int(((centre != self.feature_centre) | (scale != self.feature_scale)).sum())
            rank_zero_warn(f"TableDataModule: the training rows read now give another scaling than the checkpoint's "
                           f"model was trained with ({moved} of {len(self.feature_names)} columns' median or spread "
                           "differ: the training table has changed since); the checkpoint's scaling is used, so every "
                           "row is scaled as the model's training rows were. An anomaly threshold set at `predict` is "
                           "still set on the training rows read now.")
            self._rescale(0, (self.feature_centre, self.feature_scale), (centre, scale),
                          ("train_set", "val_set", "test_set", "predict_set"))
            self.feature_centre, self.feature_scale = centre, scale
        if "target_centre" in state and self.target_centre is not None:
            t_centre, t_scale = (torch.tensor(state[k], dtype=self.target_centre.dtype) for k in ("target_centre",
                                                                                                 "target_scale"))
            if not (torch.equal(t_centre, self.target_centre) and torch.equal(t_scale, self.target_scale)):
                rank_zero_warn("TableDataModule: the training targets read now give another scaling than the "
                               "checkpoint's model was trained with; targets and predictions are put in the table's "
                               "units with the checkpoint's (`target_centre`, `target_scale`).")
                # the rows to predict hold placeholder targets: left as they are
                self._rescale(1, (self.target_centre, self.target_scale), (t_centre, t_scale),
                              ("train_set", "val_set", "test_set"))
                self.target_centre, self.target_scale = t_centre, t_scale

    def _rescale(self, part: int, now: tuple[Tensor, Tensor], saved: tuple[Tensor, Tensor],
                 sets: Sequence[str]) -> None:
        """Re-scale tensor ``part`` (0: inputs, 1: targets) of the built ``sets`` from the scaling ``now``
        (centre, scale) to the checkpoint's ``saved`` one, in place (float tensors only)."""
        for name in sets:
            base = getattr(getattr(self, name, None), "dataset", None)
            if isinstance(base, TensorDataset) and base.tensors[part].is_floating_point():
                raw = base.tensors[part].double() * now[1] + now[0]
                tensors = list(base.tensors)
                tensors[part] = ((raw - saved[0]) / saved[1]).float()
                base.tensors = tuple(tensors)

    def transform(self, frame: Any) -> Tensor:
        """New rows as the model's inputs: ``frame``'s feature columns (:attr:`feature_names`, the training table's),
        scaled as the training rows were (``(x - feature_centre) / feature_scale``), float32 ``[rows, features]``, one
        row per row of ``frame`` in its order (after :meth:`setup`). For ``model(dm.transform(df))`` or an anomaly
        detector's ``predict_anomaly(dm.transform(df))`` on a DataFrame; ``predict_frame`` / ``predict_path`` do the
        same through ``trainer.predict``. Raw values give scores on the wrong scale without a word (an anomaly
        newcomer's raw breast-cancer rows: all 207 flagged).

        Raises ``ValueError`` for a missing feature column or a row with a missing or infinite value."""
        self._set_up()
        frame = self._table(frame, "frame")
        _same_columns(frame, self.feature_names, "frame")
        _unique_columns(frame, self.feature_names, "`frame`")
        _check_numbers(frame, self.feature_names, "frame", "Convert them as the training table's were.")
        values = _numbers(frame[self.feature_names])
        bad = ~torch.isfinite(values).all(1)
        if bool(bad.any()):
            raise ValueError(f"`frame`: {int(bad.sum())} of {len(frame)} rows have a missing or infinite value in a "
                             f"feature column, e.g. row {int(bad.nonzero()[0])}; `transform` gives one input per row, "
                             "so fill or drop them first.")
        return ((values - self.feature_centre) / self.feature_scale).float()

    def unscale_targets(self, predictions: Tensor) -> Tensor:
        """Regression predictions (or targets) ``[n, q]`` in the table's units: ``y · target_scale + target_centre``."""
        if self.task != "regression":
            raise ValueError(f"`unscale_targets` is for task='regression', this module's task is {self.task!r}.")
        self._set_up()
        p = torch.as_tensor(predictions, dtype=torch.float64).reshape(-1, len(self.target_names))
        return p * self.target_scale + self.target_centre
