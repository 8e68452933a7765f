"""Where a callback's per-sample report goes: resolved and checked at setup, on every rank, before training."""

from __future__ import annotations

import os
from typing import Any

from lit_robust.report import REPORT_FORMATS, folder_error

__all__ = ["check_report_args", "report_enabled", "resolve_report_path"]


def check_report_args(report: Any, report_dir: Any, report_format: Any) -> None:
    """The checks every callback with a report shares (constructor arguments)."""
    if report is not None and not isinstance(report, bool):
        raise ValueError(f"`report` must be True, False or None (None: on when `report_dir` is given or under "
                         f"`lit-robust fit`, else off), got {report!r}.")
    if report_dir is not None and (not isinstance(report_dir, (str, os.PathLike)) or not os.fspath(report_dir)):
        raise ValueError(f"`report_dir` must be a folder path (a non-empty str or os.PathLike) or None, got "
                         f"{report_dir!r}.")
    if report_format not in REPORT_FORMATS:
        raise ValueError(f"`report_format` must be one of {list(REPORT_FORMATS)}, got {report_format!r}.")
    if report is False and report_dir is not None:
        raise ValueError(f"`report_dir` only applies with a report: got report_dir={os.fspath(report_dir)!r} with "
                         "report=False; pass report=True (or leave it None), or drop `report_dir`.")
    if report_format == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as err:
            raise ValueError("`report_format` 'parquet' needs pyarrow, which is not installed: `pip install pyarrow` "
                             "(or `pip install \"lit-robust[report]\"`), or use report_format='csv'.") from err


def report_enabled(report: bool | None, report_dir: Any) -> bool:
    """``report=True``, or ``None`` with a ``report_dir`` (``lit-robust fit`` sets ``None`` to ``True``)."""
    return report is True or (report is None and report_dir is not None)


def resolve_report_path(trainer: Any, report_dir: Any, filename: str) -> str:
    """The report's path: ``report_dir`` or the logger's folder (``trainer.log_dir``; the Trainer's
    ``default_root_dir`` without a logger), checked to be writable on rank 0. Call on every rank (both
    ``trainer.log_dir`` and the outcome are broadcast); every rank raises the same ``ValueError`` when the folder
    cannot be written."""
    folder = os.fspath(report_dir) if report_dir is not None else trainer.log_dir
    problem = folder_error(folder) if trainer.global_rank == 0 else None
    problem = trainer.strategy.broadcast(problem)
    if problem is not None:
        if report_dir is not None:
            raise ValueError(f"`report_dir` must be a folder the report can be written into, got {folder!r} "
                             f"({problem}).")
        raise ValueError(f"the report goes into the logger's folder (`trainer.log_dir`) when `report_dir` is not "
                         f"given, and {folder!r} cannot be written ({problem}); pass `report_dir`, or report=False.")
    return os.path.join(folder, filename)
