"""Helpers shared by the benchmark scripts (quiet Lightning, a bare Trainer, a process pool, mean ± std)."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import statistics
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def quiet() -> None:
    """Silence Lightning's INFO banners and the warnings every small CPU run triggers."""
    import pytorch_lightning  # noqa: F401  (it sets its logger to INFO on import)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in (".*does not have many workers.*", ".*The number of training batches.*",
                    ".*GPU available.*", ".*isinstance.*LeafSpec.*", ".*too small to drop.*",
                    ".*Total length of.*", ".*validation_step.*"):
        warnings.filterwarnings("ignore", message=message)


def trainer(max_epochs: int, callbacks: list, **kwargs: Any) -> Any:
    """A CPU Trainer without logger, checkpoints, progress bar, model summary or sanity validation."""
    import pytorch_lightning as pl

    kwargs.setdefault("num_sanity_val_steps", 0)
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def run_tasks(fn: Callable[[dict], Any], tasks: list[dict], jobs: int) -> Iterator[Any]:
    """``fn(task)`` for every task, in order; in ``jobs`` spawned worker processes when ``jobs > 1``."""
    if jobs <= 1:
        for t in tasks:
            yield fn(t)
        return
    with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        yield from pool.map(fn, tasks)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
