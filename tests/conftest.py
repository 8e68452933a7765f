from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import IndexedDataset, RobustMixin, corrupt_labels, unpack_batch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIT_ROBUST_DATA", REPO.parent / "shared" / "data"))


warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*number of training batches.*")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` need a CUDA device: without one they are skipped (run them with ``pytest -m cuda``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.fail(f"offline MNIST expected under {SHARED_DATA} (set LIT_ROBUST_DATA)")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread: small models gain nothing from intra-op threads, and on a loaded
    2-core machine the threads only contend (5-20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rank_start_method() -> str:
    """How the tests start real gloo ranks on the CPU: ``fork`` — the ranks are copies of this process, instead of a
    fresh Python that imports torch, Lightning and the test module again (3-15 s per launch on the shared 2-core
    machine, against < 1 s) — or ``spawn`` where forking is not safe: no ``fork`` start method, or CUDA already
    initialised in this process. The process group, collectives and code under test are the same either way."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods() or torch.cuda.is_initialized():
        return "spawn"
    return "fork"


def ddp_cpu_strategy() -> str:
    """The strategy of the tests' multi-rank CPU fits: ``ddp_fork`` (``ddp_spawn`` where :func:`rank_start_method`
    says fork is not safe), the same DDP strategy and gloo process group as ``ddp_spawn``. ``tests/test_itlm_ddp.py``
    keeps a fit on ``ddp_spawn`` and one on ``ddp`` (the script launcher), so the launchers users take stay tested;
    :func:`fit_ranks` checks that what ``ddp_spawn`` would send to its ranks pickles."""
    return f"ddp_{rank_start_method()}"


def start_ranks(fn, args: tuple, nprocs: int) -> None:
    """``torch.multiprocessing`` ranks ``fn(rank, *args)``, started by :func:`rank_start_method`, joined; on one torch
    thread in this process (a forked rank must not enter an OpenMP region whose thread pool stayed here)."""
    import torch.multiprocessing as mp

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mp.start_processes(fn, args=args, nprocs=nprocs, join=True, start_method=rank_start_method())
    finally:
        torch.set_num_threads(threads)


def fit_ranks(make) -> None:
    """``trainer.fit`` of ``make()``'s ``(trainer, module, data)``, tried a second time (fresh objects, same seed)
    if a launched rank dies of a signal. Seen when these tests run after other test files (3 of 8 such runs on
    2026-11-30, 0 of 16 fits in isolation): rank 1 aborts in torch's teardown ("terminate called without an active
    exception") after `Trainer.fit` has ended; the cause was not found. A retry that fails again fails the test,
    and the records the test checks are the second try's.

    The trainer, module and data must pickle (``ddp_spawn`` sends them to its ranks): checked here whatever the
    launcher. The fit runs on one torch thread in this process, so that forked ranks never enter an OpenMP
    parallel region whose thread pool stayed in the parent (Lightning gives each rank one thread on 2 cores)."""
    threads = torch.get_num_threads()
    try:
        for attempt in (0, 1):
            pl.seed_everything(0, verbose=False)
            trainer, module, data = make()
            pickle.dumps((trainer, module, data))
            torch.set_num_threads(1)
            try:
                trainer.fit(module, data)
                return
            except torch.multiprocessing.ProcessExitedException as err:
                if attempt or err.signal_name is None:
                    raise
    finally:
        torch.set_num_threads(threads)


def blobs(n: int = 240, seed: int = 0, clean_ratio: float = 0.7):
    """Three Gaussian blobs in 2-D with random label noise (ground truth kept)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centers = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    x = centers[y] + 0.7 * torch.randn(n, 2, generator=g)
    noisy, mask = corrupt_labels(y, clean_ratio, "random", 3, seed=seed)
    return IndexedDataset(TensorDataset(x, y), targets=noisy, corrupted=mask)


def overlapping_blobs(n: int = 480, sd: float = 2.0, seed: int = 0):
    """:func:`blobs`' three classes with every label right, but spread (``sd``) until they overlap: a hard clean task
    whose training error (13-23 % at sd 2-2.5 with :class:`TinyModel`) "disagreement" cannot tell from wrong labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centers = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    x = centers[y] + sd * torch.randn(n, 2, generator=g)
    return IndexedDataset(TensorDataset(x, y))


def glitched_energy_table(seed: int = 0):
    """A newcomer's energy table (``benchmarks/newcomer_tables.py``'s, at 25 % glitched): Friedman1 targets read as kWh,
    2,000 rows with a fifth held out, 25 % of the training readings glitched in equal parts to 0, 9999 or +150.
    Returns the training frame (with its `is_bad` flags), the test frame and the share of 9999 readings in the
    training frame."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from newcomer_tables import energy_frames

    train, test = energy_frames(seed, 0.25, 2000)
    return train, test, float((train["kwh"] == 9999.0).mean())


class TinyModel(RobustMixin, pl.LightningModule):
    def __init__(self, lr: float = 0.1, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        self.lr = lr
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):
        b = unpack_batch(batch)
        logits = self(b.input)
        return F.cross_entropy(logits, b.target, reduction="none"), logits

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[0].detach().cpu())
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        b = unpack_batch(batch)
        self.log("val_loss", F.cross_entropy(self(b.input), b.target))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class BlobsData(pl.LightningDataModule):
    def __init__(self, n: int = 240, batch_size: int = 32, with_val: bool = False) -> None:
        super().__init__()
        self.ds = blobs(n)
        self.batch_size = batch_size
        self.with_val = with_val

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.ds, batch_size=64) if self.with_val else []


def graphs_compiled_over(tmp_path, make_module, data, epochs: int, callbacks=(), compile_step: bool = False) -> int:
    """How many graphs ``torch.compile`` builds (a counting backend, after a dynamo reset) while a seeded
    ``epochs``-epoch fit of the compiled ``make_module()`` runs: equal counts for 2 and 6 epochs mean nothing in the
    step recompiles per epoch (a batch number, an epoch schedule or the logger's state traced into the graph).
    ``compile_step``: compile the module's ``training_step`` alone (a user's compiled step) instead of the module."""
    torch._dynamo.reset()
    count = 0

    def backend(gm, example_inputs):
        nonlocal count
        count += 1
        return gm.forward

    pl.seed_everything(0, verbose=False)
    module = make_module()
    if compile_step:
        module.training_step = torch.compile(module.training_step, backend=backend)
    else:
        module = torch.compile(module, backend=backend)
    tiny_trainer(tmp_path, epochs, list(callbacks)).fit(module, data)
    return count


class MixinStep(TinyModel):
    """TinyModel with the mixin's own ``training_step``, as most users have it (TinyModel's records the batches)."""

    training_step = RobustMixin.training_step


def tiny_trainer(tmp_path, max_epochs: int, callbacks=(), **kw) -> pl.Trainer:
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), default_root_dir=tmp_path,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                      deterministic=True, **kw)
