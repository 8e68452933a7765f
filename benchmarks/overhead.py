"""Benchmark: the run-time overhead of lit_robust's machinery, as ratios against plain Lightning/PyTorch.

Every measurement times a *candidate* (lit_robust's way) against a *reference* (the plain way) on the
same model (``ImageClassifier(backbone="cnn2")``) and data (3,000 offline MNIST training digits), in
interleaved pairs (candidate/reference, then reference/candidate, ...), so that the load of a shared
machine hits both alike. The reported ratio is the median of the per-pair ratios; the spread is their
inter-quartile range and min-max.

Measurements (issue 2, item 9):

* ``itlm/scoring_pass_throughput``: ``ITLM.score_training_set`` throughput ÷ a plain ``Trainer.predict``
  over the same loader (target >= 0.9);
* ``itlm/scoring_pass_vs_no_grad_loop`` (no target): the same scoring pass ÷ a bare eval/no-grad loop of
  ``sample_scores``, which tells lit_robust's own cost apart from Lightning's predict loop;
* ``mixin/training_step``: a training step through the mixin with no selector active
  (``per_sample_loss`` + ``reduce_loss``) ÷ the same module's plain step with ``F.cross_entropy`` mean
  (forward, loss, backward, SGD step; target <= 1.02);
* ``filter/prl_step``, ``filter/spl_step``, ``filter/prl_g_step`` (issue 4): one training step with
  ``BatchFilter(rule, drop_ratio=0.3)`` active ÷ the plain step (targets <= 1.05, 1.05, 2.0);
* ``filter/prl_g_step`` is PRL(G) in one backward (book-keeping, the default backend; issue 17, target
  <= 1.3), ``filter/prl_g_two_pass_step`` the earlier two-backward path on the same model, and
  ``filter/prl_g_step_mlp`` / ``filter/prl_g_step_wide_cnn`` the book-keeping step on an MLP (784-512-512-10)
  and a wider CNN (64/128 channels, 3×3) so the claim does not rest on one shape;
  ``filter/prl_g_step_small_cnn`` the same on a small CNN over 8×8 images (no target: a cheap step, where the
  second convolution's per-sample gradients weigh as much as the rest of it);
  ``filter/prl_g_vs_opacus`` our PRL(G) step ÷ the same step with Opacus 1.6's per-sample gradients
  (``GradSampleModule``: norms from ``grad_sample``, kept mean written into ``.grad``; the thesis's way,
  3.93× a plain step in its Table 4.6), after checking that both give the same norms (max |Δ| printed);
* ``backdoor/adversarial_trigger_step`` (issue 5): one PRL-AT training step (``AdversarialTrigger`` + PRL
  filter) ÷ the plain step (target <= 2.1, issue 17: the inner step's extra forward and input-only backward are
  the floor; ``benchmarks/adversarial_trigger_profile.py`` splits the step into its sections);
* ``itlm/fit``: a whole ITLM fit (``initial_round_on_all=False``, so every round trains on
  ``floor(alpha * n)`` samples after exactly one scoring pass) ÷ (the same number of epochs of plain
  training on a fixed subset of that size + one scoring pass per round) (target <= 1.10).
* ``data/indexed_loader_throughput`` (issue 17, item 4): one epoch of a ``DataLoader`` (batch 4,096, shuffled)
  over ``IndexedDataset(TensorDataset(x, y), targets=..., corrupted=...)`` ÷ one over the ``TensorDataset`` it
  wraps, 300,000 tabular rows (throughput, target >= 0.95);
  ``data/indexed_loader_vs_batched_tensor_loader`` (no target): the same loader ÷ plain PyTorch's batched
  fetch of the ``TensorDataset`` (a ``BatchSampler`` as sampler, ``batch_size=None``), the fastest plain way;
* ``data/itlm_fit_n1e4`` / ``_n1e5`` / ``_n1e6``: a whole ITLM fit of a linear model on n tabular rows
  (3 one-epoch rounds, alpha = 0.65, batch 1,024, through a ``DataLoader`` over an ``IndexedDataset``) ÷ a plain
  Lightning fit of the same model for 3 epochs on all n rows fed by a bare generator of shuffled
  ``index_select`` batches, the cheapest fetch there is (no target: ITLM trains on 2.3 n samples and scores 2 n,
  plain trains on 3 n); ``data/itlm_fit_per_sample_fetch_n1e5`` / ``_n1e6`` (full mode only): the same ITLM fit with
  batched fetching switched off (``__getitems__ = None``, every loader fetches sample by sample as before) ÷ the
  same reference, the before figure. Rows too long for a mode have 0 repetitions there and are not run.

Later rules add their own rows: write a function ``fn(ctx, reps) -> list[(candidate_s, reference_s)]``
and append a :class:`Measurement` to ``MEASUREMENTS`` (or decorate it with :func:`measurement`).

Usage::

    python benchmarks/overhead.py            # -> benchmarks/results/overhead.md (+ .json, the saved run)
    python benchmarks/overhead.py --quick    # < 60 s
    python benchmarks/overhead.py --smoke    # a few seconds, for the test suite
    python benchmarks/overhead.py --only filter/prl_step filter/spl_step --out benchmarks/results/overhead_filters.md
    python benchmarks/overhead.py --device cuda --quick --synthetic --out benchmarks/results/overhead_cuda.md  # GPU
    python benchmarks/overhead.py --render benchmarks/results/overhead.json  # re-print a saved run, no timing

``--device cuda`` runs every row on the GPU (Trainer ``accelerator="gpu"``; hand-written loops move the module and
batches with :func:`to_device`) and times with ``torch.cuda.synchronize()`` around each timed call, so the
table's median milliseconds are absolute step times on that device. ``--synthetic`` replaces offline MNIST by
random MNIST-shaped images and labels (timing only), for machines without the data or torchvision. On a device
other than the CPU a row that raises is reported as failed and the others still run (exit status 1).
``--only`` picks rows, ``--threads`` sets torch's threads (1 by default), ``--no-pin-malloc`` leaves glibc's malloc
thresholds dynamic. Modes, ``--out``, ``--render`` and the JSON last line (the ratios) are ``harness.py``'s; every
pair runs in this one process (``--jobs`` is 1).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_DATA_ROOT, Benchmark, main, md_table, reproduce_note  # noqa: E402
from harness import quiet as _quiet  # noqa: E402

DEVICE = "cpu"  # set by execute(): "cpu" or "cuda"


# -- the framework -------------------------------------------------------------------------------------
@dataclass
class Context:
    """Shared setup handed to every measurement."""

    data_root: str
    train_size: int
    batch_size: int
    eval_batch_size: int
    fit_epochs_per_round: int
    fit_rounds: int
    keep_ratio: float = 0.65
    cache: dict[str, Any] = field(default_factory=dict)
    level: str = "full"  # "full", "quick" or "smoke": rows may scale their data with it


@dataclass
class Measurement:
    """One named ratio: ``fn(ctx, reps)`` returns ``reps`` pairs of (candidate seconds, reference seconds)."""

    name: str
    description: str
    fn: Callable[[Context, int], list[tuple[float, float]]]
    kind: Literal["time", "throughput"] = "time"  # "time": candidate/reference; "throughput": reference/candidate
    target: float | None = None  # upper bound for "time" ratios, lower bound for "throughput" ratios
    reps: dict[str, int] = field(default_factory=lambda: {"full": 15, "quick": 3, "smoke": 1})

    def ratios(self, pairs: list[tuple[float, float]]) -> list[float]:
        if self.kind == "time":
            return [c / r for c, r in pairs]
        return [r / c for c, r in pairs]

    def meets(self, ratio: float) -> bool | None:
        if self.target is None:
            return None
        return ratio <= self.target if self.kind == "time" else ratio >= self.target


MEASUREMENTS: list[Measurement] = []


class Skipped(Exception):
    """Raised by a measurement that cannot run here (e.g. an optional benchmark dependency is not installed)."""


def measurement(name: str, description: str, kind: Literal["time", "throughput"] = "time",
                target: float | None = None, reps: dict[str, int] | None = None):
    """Register ``fn(ctx, reps) -> [(candidate_s, reference_s), ...]`` as a named measurement."""

    def wrap(fn: Callable[[Context, int], list[tuple[float, float]]]):
        m = Measurement(name, description, fn, kind, target)
        if reps:
            m.reps.update(reps)
        MEASUREMENTS.append(m)
        return fn

    return wrap


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any]) -> float:
    _sync()  # on a GPU: time the work itself, not how fast it was queued
    t = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t


def to_device(batch: Any) -> Any:
    """A batch (tensors, lists, tuples) moved to the benchmark's device."""
    if isinstance(batch, torch.Tensor):
        return batch.to(DEVICE, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b) for b in batch)
    return batch


def interleave(candidate: Callable[[], Any], reference: Callable[[], Any], reps: int) -> list[tuple[float, float]]:
    """Time ``reps`` pairs, alternating which of the two runs first."""
    pairs = []
    for i in range(reps):
        if i % 2 == 0:
            c = _timed(candidate)
            r = _timed(reference)
        else:
            r = _timed(reference)
            c = _timed(candidate)
        pairs.append((c, r))
    return pairs


# -- shared setup ----------------------------------------------------------------------------------------


def pin_malloc() -> bool:
    """Keep glibc from handing freed activation buffers back to the OS between passes (Linux only).

    With glibc's dynamic thresholds a process can fall into a state where every forward pass re-maps
    and page-faults its multi-megabyte buffers (~100k minor faults per scoring pass here, +50 % time),
    and which path suffers more depends on the allocation history, not on the code measured. Fixing
    the mmap threshold at its maximum (32 MiB) and the trim threshold at 1 GiB removes that state; it
    applies to candidate and reference alike.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**30))


def _trainer(**kwargs: Any):
    import pytorch_lightning as pl

    return pl.Trainer(accelerator="gpu" if DEVICE == "cuda" else "cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def _datamodule(ctx: Context):
    """The MNIST training split (no validation), with `predict_dataloader` = the scoring loader."""
    if "dm" not in ctx.cache and ctx.data_root == "synthetic":
        ctx.cache["dm"] = _synthetic_datamodule(ctx)
    if "dm" not in ctx.cache:
        from lit_robust import MNISTDataModule

        class DM(MNISTDataModule):
            def predict_dataloader(self):
                return self.scoring_dataloader()

        dm = DM(root=ctx.data_root, clean_ratio=0.7, noise="random", train_size=ctx.train_size, val_size=0,
                batch_size=ctx.batch_size, eval_batch_size=ctx.eval_batch_size, seed=0)
        dm.setup("fit")
        ctx.cache["dm"] = dm
    return ctx.cache["dm"]


def _synthetic_datamodule(ctx: Context):
    """MNIST-shaped random images (normalised-MNIST value range) with random labels, 30% flagged: timing only."""
    import pytorch_lightning as pl
    from torch.utils.data import TensorDataset

    from lit_robust import IndexedDataset, corrupt_labels
    from lit_robust.data.base import SplitLoaders

    class Synthetic(SplitLoaders, pl.LightningDataModule):
        num_classes = 10

        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(0)
            x = torch.rand(ctx.train_size, 1, 28, 28, generator=g) * (2.8215 + 0.4242) - 0.4242
            y = torch.randint(0, 10, (ctx.train_size,), generator=g)
            noisy, bad = corrupt_labels(y, 0.7, "random", 10, seed=0)
            self.train_set = IndexedDataset(TensorDataset(x, y), targets=noisy, corrupted=bad)
            self.batch_size, self.eval_batch_size, self.num_workers = ctx.batch_size, ctx.eval_batch_size, 0

        def predict_dataloader(self):
            return self.scoring_dataloader()

    return Synthetic()


def _model(seed: int = 0):
    import pytorch_lightning as pl

    from lit_robust import ImageClassifier

    pl.seed_everything(seed, verbose=False)
    return ImageClassifier(backbone="cnn2", lr=0.05, momentum=0.0).to(DEVICE)


# -- issue 2 measurements -----------------------------------------------------------------------------------
@measurement("itlm/scoring_pass_throughput",
             "ITLM.score_training_set over the training set ÷ Trainer.predict over the same loader (throughput)",
             kind="throughput", target=0.9, reps={"full": 41, "quick": 3, "smoke": 1})
def scoring_vs_predict(ctx: Context, reps: int) -> list[tuple[float, float]]:
    from lit_robust import ITLM

    dm = _datamodule(ctx)
    module = _model()
    trainer = _trainer()
    trainer.predict(module, datamodule=dm)  # attaches the datamodule (and warms up)
    itlm = ITLM(keep_ratio=ctx.keep_ratio, round_epochs=[1, 1], verbose=False, plot=False)  # scoring only

    def itlm_pass() -> None:
        # Trainer.predict's teardown leaves the module on the CPU, and predict moves it to the device at its start:
        # the ITLM side moves it too (outside a fit nothing else would; a no-op on the CPU)
        itlm.score_training_set(trainer, module.to(DEVICE))

    itlm_pass()
    return interleave(itlm_pass,
                      lambda: trainer.predict(module, datamodule=dm), reps)


@measurement("itlm/scoring_pass_vs_no_grad_loop",
             "ITLM.score_training_set ÷ a bare `eval()` + `torch.no_grad()` loop of `sample_scores` over the same "
             "loader (throughput; no target — it separates lit_robust's cost from Lightning's predict loop)",
             kind="throughput", target=None, reps={"full": 41, "quick": 3, "smoke": 1})
def scoring_vs_bare_loop(ctx: Context, reps: int) -> list[tuple[float, float]]:
    from lit_robust import ITLM

    dm = _datamodule(ctx)
    module = _model()
    trainer = _trainer()
    trainer.predict(module, datamodule=dm)  # attaches the datamodule
    module.to(DEVICE)  # predict's teardown left it on the CPU
    itlm = ITLM(keep_ratio=ctx.keep_ratio, round_epochs=[1, 1], verbose=False, plot=False)  # scoring only

    def bare() -> None:
        module.eval()
        with torch.no_grad():
            scores = [module.sample_scores(to_device(batch)) for batch in dm.scoring_dataloader()]
        torch.cat(scores)

    itlm.score_training_set(trainer, module), bare()  # warm-up
    return interleave(lambda: itlm.score_training_set(trainer, module), bare, reps)


@measurement("mixin/training_step",
             "training step through the mixin, no selector (per_sample_loss + reduce_loss) ÷ plain step "
             "(F.cross_entropy mean); forward, loss, backward, SGD step",
             kind="time", target=1.02, reps={"full": 401, "quick": 15, "smoke": 2})
def mixin_step_vs_plain(ctx: Context, reps: int) -> list[tuple[float, float]]:
    from lit_robust import unpack_batch

    dm = _datamodule(ctx)
    module = _model()
    module.train()
    assert not module.batch_selectors
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    batch = to_device(next(iter(dm.train_dataloader())))
    steps = 1  # per timed pair member: short, tightly interleaved blocks are the least exposed to preemption

    def mixin_steps() -> None:
        for _ in range(steps):
            out = module.per_sample_loss(batch)
            losses, outputs = out if isinstance(out, tuple) else (out, None)
            loss = module.reduce_loss(losses, batch, outputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def plain_steps() -> None:
        for _ in range(steps):
            b = unpack_batch(batch)
            loss = F.cross_entropy(module(b.input), b.target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for _ in range(5):  # warm-up
        mixin_steps(), plain_steps()
    return interleave(mixin_steps, plain_steps, reps)


@measurement("itlm/fit",
             "whole ITLM fit (initial_round_on_all=False, reinit=True) ÷ (plain fit of the same epochs on a "
             "fixed subset of floor(alpha*n) samples + one scoring pass per round)",
             kind="time", target=1.10, reps={"full": 9, "quick": 1, "smoke": 1})
def itlm_fit_vs_plain(ctx: Context, reps: int) -> list[tuple[float, float]]:
    from torch.utils.data import DataLoader, Subset

    from lit_robust import ITLM
    from lit_robust.selection.rules import keep_count

    dm = _datamodule(ctx)
    E, R = ctx.fit_epochs_per_round, ctx.fit_rounds
    n = len(dm.train_set)
    subset = Subset(dm.train_set, list(range(keep_count(n, ctx.keep_ratio))))

    def itlm_fit() -> None:
        module = _model()
        itlm = ITLM(keep_ratio=ctx.keep_ratio, round_epochs=[E] * R, initial_round_on_all=False, verbose=False,
                    plot=False)
        passes = []
        score = itlm.score_training_set
        itlm.score_training_set = lambda trainer, pl_module: (passes.append(1), score(trainer, pl_module))[1]
        _trainer(max_epochs=E * R, callbacks=[itlm]).fit(module, datamodule=dm)
        # the workload the reference reproduces: R rounds on floor(alpha * n) samples, one scoring pass each
        assert len(passes) == R and [h.kept for h in itlm.history] == [len(subset)] * R

    def plain_fit_and_scoring() -> None:
        module = _model()
        trainer = _trainer(max_epochs=E * R)
        trainer.fit(module, train_dataloaders=DataLoader(subset, batch_size=ctx.batch_size, shuffle=True))
        module.to(DEVICE)  # the fit's teardown left it on the CPU (ITLM scores inside its fit, on the device)
        loader = dm.scoring_dataloader()
        with torch.no_grad():  # the plain way to score: eval mode, no grad, one pass per round
            module.eval()
            for _ in range(R):
                for batch in loader:
                    module.sample_scores(to_device(batch))

    return interleave(itlm_fit, plain_fit_and_scoring, reps)


# -- issue 4 measurements: per-batch filters --------------------------------------------------------------------
def _filter_step_pairs(ctx: Context, reps: int, rule: str, trigger: Any = None, model_fn: Callable[[], Any] | None = None,
                       candidate: Callable[..., Callable[[], None]] | None = None,
                       **filter_kw: Any) -> list[tuple[float, float]]:
    """One training step with ``BatchFilter(rule)`` active (its per-step hooks, the score, the trim, the
    masked mean, backward, SGD step) — and, with ``trigger`` (an ``AdversarialTrigger``), its inner step first —
    vs. the plain step (``F.cross_entropy`` mean, backward, SGD step). ``model_fn`` builds another model than
    ``cnn2``; ``candidate(module, batch, plain_step)`` returns another step to time against the filtered one
    (then the pairs are (filtered, candidate))."""
    from types import SimpleNamespace

    from lit_robust import BatchFilter, unpack_batch

    dm = _datamodule(ctx)
    module = (model_fn or _model)()
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    batch = to_device(next(iter(dm.train_dataloader())))
    callbacks = [BatchFilter(rule, drop_ratio=0.3, **filter_kw)] + ([trigger] if trigger is not None else [])
    filt = callbacks[0]
    stub = SimpleNamespace(training=True, current_epoch=1, datamodule=None, world_size=1)  # what the callbacks read from a Trainer
    for cb in callbacks:  # registers the filter with the module (and, for prl_g, the recorder)
        cb.setup(stub, module, "fit")

    def filtered_step() -> None:
        b = list(batch)  # a trigger replaces the input of the (list) batch it is given
        for cb in callbacks:
            cb.on_train_batch_start(stub, module, b, 0)
        out = module.per_sample_loss(b)
        loss = module.reduce_loss(out[0], b, out[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for cb in reversed(callbacks):
            cb.on_train_batch_end(stub, module, None, b, 0)

    def plain_step() -> None:
        ib = unpack_batch(batch)
        loss = F.cross_entropy(module(ib.input), ib.target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    try:
        for _ in range(5):  # warm-up
            filtered_step(), plain_step()
        filt.on_train_batch_start(stub, module, batch, 0)
        losses, outputs = module.per_sample_loss(batch)
        kept = filt.keep_mask(losses, batch, outputs, module)
        filt.on_train_batch_end(stub, module, None, batch, 0)
        assert int(kept.sum()) == int(0.7 * len(batch[0]))  # the filter really trims
        if trigger is not None:  # and the trigger really perturbs
            assert trigger.last_perturbation is not None and float(trigger.last_perturbation.abs().max()) > 0
        if candidate is not None:
            other = candidate(ctx, module, batch, plain_step)
            for _ in range(3):
                other()
            return interleave(filtered_step, other, reps)
        return interleave(filtered_step, plain_step, reps)
    finally:
        for cb in reversed(callbacks):
            cb.teardown(stub, module, "fit")


_FILTER_REPS = {"full": 401, "quick": 15, "smoke": 2}  # quick: under 60 s on 2 quiet cores (41 took 89 s)


@measurement("filter/prl_step", "training step with BatchFilter('prl', drop_ratio=0.3) ÷ plain step (PRL(L): "
             "the loss-layer gradient norm from the logits, no extra backward)", kind="time", target=1.05,
             reps=_FILTER_REPS)
def prl_step(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _filter_step_pairs(ctx, reps, "prl")


@measurement("filter/spl_step", "training step with BatchFilter('spl', drop_ratio=0.3) ÷ plain step",
             kind="time", target=1.05, reps=_FILTER_REPS)
def spl_step(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _filter_step_pairs(ctx, reps, "spl")


@measurement("filter/prl_g_step", "training step with BatchFilter('prl_g', drop_ratio=0.3) ÷ plain step (PRL(G): "
             "exact per-sample gradient norms, selection and the kept samples' gradient from the step's one backward: "
             "book-keeping)", kind="time", target=1.3, reps=_FILTER_REPS)
def prl_g_step(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _filter_step_pairs(ctx, reps, "prl_g", prl_g_backend="bookkeeping")


@measurement("filter/prl_g_two_pass_step", "training step with BatchFilter('prl_g', drop_ratio=0.3, "
             "prl_g_backend='two_pass') ÷ plain step (the earlier path: one extra backward to the activations for "
             "the norms, then the filtered loss's backward)", kind="time", target=None, reps=_FILTER_REPS)
def prl_g_two_pass_step(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _filter_step_pairs(ctx, reps, "prl_g", prl_g_backend="two_pass")


def _mlp_model():
    import pytorch_lightning as pl

    from lit_robust import ImageClassifier

    pl.seed_everything(0, verbose=False)
    return ImageClassifier(backbone="mlp", hidden=512, hidden_layers=2, lr=0.05, momentum=0.0).to(DEVICE)


def _wide_cnn_model():
    from torch import nn

    module = _model()
    module.net = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Flatten(), nn.Linear(128 * 7 * 7, 10)).to(DEVICE)
    return module


@measurement("filter/prl_g_step_mlp", "training step with BatchFilter('prl_g', drop_ratio=0.3) ÷ plain step on an MLP "
             "(ImageClassifier(backbone='mlp', hidden=512, hidden_layers=2): 784-512-512-10)", kind="time",
             target=1.3, reps=_FILTER_REPS)
def prl_g_step_mlp(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _filter_step_pairs(ctx, reps, "prl_g", model_fn=_mlp_model, prl_g_backend="bookkeeping")


@measurement("filter/prl_g_step_wide_cnn", "training step with BatchFilter('prl_g', drop_ratio=0.3) ÷ plain step on a "
             "wider CNN (Conv 1→64 3×3, pool, Conv 64→128 3×3, pool, Linear 6272→10)", kind="time", target=1.3,
             reps={"full": 101, "quick": 5, "smoke": 2})
def prl_g_step_wide_cnn(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _filter_step_pairs(ctx, reps, "prl_g", model_fn=_wide_cnn_model, prl_g_backend="bookkeeping")


def _small_cnn_model():
    from torch import nn

    module = _model()
    module.net = nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                               nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10)).to(DEVICE)
    return module


@measurement("filter/prl_g_step_small_cnn", "training step with BatchFilter('prl_g', drop_ratio=0.3) ÷ plain step on a "
             "small CNN over 8×8 images, the size of scikit-learn's digits (MNIST average-pooled to 8×8, Conv 1→32 "
             "3×3, Conv 32→32 3×3, pool, Linear 512→128→10): a cheap step, where the per-sample gradients of the "
             "second convolution cost about as much as the rest of the step (no target)", kind="time",
             reps=_FILTER_REPS)
def prl_g_step_small_cnn(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _filter_step_pairs(ctx, reps, "prl_g", model_fn=_small_cnn_model, prl_g_backend="bookkeeping")


def _opacus_prl_g_step(ctx: Context, module: Any, batch: Any, plain_step: Callable[[], None]) -> Callable[[], None]:
    """PRL(G) through Opacus's per-sample gradients on a copy of ``module.net`` (same weights): forward, backward of
    the summed losses (``grad_sample`` per parameter), norms, the (score, index) trim, the kept mean into ``.grad``,
    SGD step. Checks first that Opacus's norms equal ours on this batch, and records the largest difference."""
    import copy

    from opacus import GradSampleModule

    from lit_robust import unpack_batch
    from lit_robust.functional.scores import prl_g_scores
    from lit_robust.selection.rules import batch_keep_count, smallest_k_mask

    ib = unpack_batch(batch)
    net = copy.deepcopy(module.net)
    gsm = GradSampleModule(net, loss_reduction="sum")
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01)
    k, _ = batch_keep_count(len(ib.index), 0.3)

    def norms() -> torch.Tensor:
        losses = F.cross_entropy(gsm(ib.input), ib.target, reduction="none")
        opt.zero_grad(set_to_none=True)
        for p in params:
            p.grad_sample = None
        losses.sum().backward()
        return torch.stack([p.grad_sample.reshape(len(ib.index), -1).norm(dim=1) for p in params], 1).norm(dim=1)

    def step() -> None:
        scores = norms()
        mask = smallest_k_mask(scores, k, ib.index)
        for p in params:
            p.grad = p.grad_sample[mask].sum(0) / k
        opt.step()

    ours, _ = prl_g_scores(module.net, lambda: F.cross_entropy(module.net(ib.input), ib.target, reduction="none"))
    net.load_state_dict(module.net.state_dict())
    theirs = norms()
    diff = float((ours - theirs).abs().max())
    ctx.cache.setdefault("notes", []).append(
        f"`filter/prl_g_vs_opacus`: Opacus {_opacus_version()} `GradSampleModule` per-sample gradient norms vs ours on "
        f"the same model and batch: max |Δ| = {diff:.2e} (norms up to {float(ours.max()):.3g}).")
    ctx.cache["opacus_norm_max_abs_diff"] = diff
    assert diff <= 1e-4 * max(1.0, float(ours.max())), f"Opacus and lit_robust norms differ by {diff}"
    return step


def _opacus_version() -> str:
    from importlib.metadata import version

    return version("opacus")


@measurement("filter/prl_g_vs_opacus", "our PRL(G) training step (book-keeping) ÷ the same step with Opacus's "
             "per-sample gradients (GradSampleModule, `grad_sample` norms, kept mean), cnn2 model; Opacus is a "
             "benchmark-only dependency (`pip install -e .[bench]`)", kind="time", target=None, reps=_FILTER_REPS)
def prl_g_vs_opacus(ctx: Context, reps: int) -> list[tuple[float, float]]:
    import importlib.util

    if importlib.util.find_spec("opacus") is None:
        raise Skipped("Opacus is not installed (`pip install -e .[bench]`)")
    return _filter_step_pairs(ctx, reps, "prl_g", candidate=_opacus_prl_g_step, prl_g_backend="bookkeeping")


# -- issue 5 measurement: adversarial trigger --------------------------------------------------------------------
@measurement("backdoor/adversarial_trigger_step", "training step of PRL-AT (AdversarialTrigger(tau=0.16) + "
             "BatchFilter('prl', drop_ratio=0.3): the inner step's forward, filter preview and backward to the "
             "inputs, then the filtered outer step) ÷ plain step", kind="time", target=2.1, reps=_FILTER_REPS)
def adversarial_trigger_step(ctx: Context, reps: int) -> list[tuple[float, float]]:
    from lit_robust import AdversarialTrigger

    return _filter_step_pairs(ctx, reps, "prl", AdversarialTrigger(tau=0.16, value_range=(-0.4242, 2.8215)))


# -- issue 17 measurements: the data path -------------------------------------------------------------------
_LOADER_ROWS = {"full": 300_000, "quick": 50_000, "smoke": 5_000}


def _tabular(ctx: Context, n: int, dim: int = 20, classes: int = 10) -> dict[str, Any]:
    """n rows of Gaussian features, labels of a random linear map, 30 % of them replaced at random (seed 0)."""
    key = f"tabular_{n}_{dim}_{classes}"
    if key not in ctx.cache:
        from lit_robust import corrupt_labels

        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, dim, generator=g)
        y = (x @ torch.randn(dim, classes, generator=g)).argmax(1)
        noisy, mask = corrupt_labels(y, 0.7, "random", classes, seed=0)
        ctx.cache[key] = {"x": x, "y": y, "noisy": noisy, "mask": mask}
    return ctx.cache[key]


def _epoch(loader: Any) -> None:
    for _ in loader:
        pass


def _batched_tensor_loader(ds: Any, batch_size: int, seed: int) -> Any:
    """Plain PyTorch's batched fetch: the sampler yields whole batches and ``TensorDataset[list]`` indexes once."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    sampler = BatchSampler(RandomSampler(ds, generator=torch.Generator().manual_seed(seed)), batch_size, False)
    return DataLoader(ds, sampler=sampler, batch_size=None)


def _indexed_loader_pairs(ctx: Context, reps: int, batched_reference: bool) -> list[tuple[float, float]]:
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset

    t = _tabular(ctx, _LOADER_ROWS[ctx.level])
    base = TensorDataset(t["x"], t["y"])
    indexed = IndexedDataset(base, targets=t["noisy"], corrupted=t["mask"])
    candidate = DataLoader(indexed, batch_size=4096, shuffle=True, generator=torch.Generator().manual_seed(0))
    reference = (_batched_tensor_loader(base, 4096, 0) if batched_reference else
                 DataLoader(base, batch_size=4096, shuffle=True, generator=torch.Generator().manual_seed(0)))
    first = next(iter(candidate))
    assert len(first) == 4 and first[1].shape == (4096, t["x"].shape[1])  # (index, input, target, is_corrupted)
    _epoch(candidate), _epoch(reference)  # warm-up
    return interleave(lambda: _epoch(candidate), lambda: _epoch(reference), reps)


@measurement("data/indexed_loader_throughput",
             "one shuffled epoch of a DataLoader (batch 4096) over IndexedDataset(TensorDataset(x, y), targets, "
             "corrupted) ÷ one over the TensorDataset it wraps (throughput; 300,000 rows × 20 float32 features in "
             "full mode, 50,000 in quick)", kind="throughput", target=0.95, reps={"full": 15, "quick": 3, "smoke": 1})
def indexed_loader_throughput(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _indexed_loader_pairs(ctx, reps, batched_reference=False)


@measurement("data/indexed_loader_vs_batched_tensor_loader",
             "the same IndexedDataset loader ÷ plain PyTorch's batched fetch of the TensorDataset (BatchSampler as "
             "sampler, batch_size=None; throughput, no target)", kind="throughput", target=None,
             reps={"full": 41, "quick": 5, "smoke": 1})
def indexed_loader_vs_batched(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _indexed_loader_pairs(ctx, reps, batched_reference=True)


def _linear_modules() -> tuple[type, type]:
    import pytorch_lightning as pl

    from lit_robust import RobustMixin, unpack_batch

    class RobustLinear(RobustMixin, pl.LightningModule):
        def __init__(self, dim: int, classes: int) -> None:
            super().__init__()
            self.net = torch.nn.Linear(dim, classes)

        def per_sample_loss(self, batch: Any) -> Any:
            b = unpack_batch(batch)
            logits = self.net(b.input)
            return F.cross_entropy(logits, b.target, reduction="none"), logits

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class PlainLinear(pl.LightningModule):
        def __init__(self, dim: int, classes: int) -> None:
            super().__init__()
            self.net = torch.nn.Linear(dim, classes)

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, prog_bar=True)  # as RobustMixin.training_step logs it
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return RobustLinear, PlainLinear


class _ShuffledBatches:
    """The cheapest in-process feed a plain fit can have: each epoch, a fresh permutation (seeded by the epoch)
    cut into batches gathered with ``index_select``; no DataLoader, no per-sample step."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int = 0) -> None:
        self.x, self.y, self.batch_size, self.seed, self.epoch = x, y, batch_size, seed, 0

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self) -> Any:
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        self.epoch += 1
        for chunk in order.split(self.batch_size):
            yield self.x.index_select(0, chunk), self.y.index_select(0, chunk)


def _itlm_fit_pairs(ctx: Context, reps: int, n: int, per_sample: bool = False) -> list[tuple[float, float]]:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import ITLM, IndexedDataset
    from lit_robust.selection.rules import keep_count

    class PerSampleIndexedDataset(IndexedDataset):
        __getitems__ = None  # DataLoader's switch: fetch sample by sample, as before batched fetching

    t = _tabular(ctx, n)
    dim, classes, batch_size = t["x"].shape[1], 10, 1024
    robust, plain = _linear_modules()
    cls = PerSampleIndexedDataset if per_sample else IndexedDataset
    indexed = cls(TensorDataset(t["x"], t["y"]), targets=t["noisy"], corrupted=t["mask"])

    def itlm_fit() -> None:
        pl.seed_everything(0, verbose=False)
        itlm = ITLM(keep_ratio=ctx.keep_ratio, round_epochs=[1, 1, 1], verbose=False, plot=False)
        loader = DataLoader(indexed, batch_size=batch_size, shuffle=True)
        _trainer(max_epochs=3, callbacks=[itlm]).fit(robust(dim, classes), train_dataloaders=loader)
        assert [h.kept for h in itlm.history] == [n] + [keep_count(n, ctx.keep_ratio)] * 2

    def plain_fit() -> None:
        pl.seed_everything(0, verbose=False)
        _trainer(max_epochs=3).fit(plain(dim, classes), train_dataloaders=_ShuffledBatches(t["x"], t["noisy"],
                                                                                            batch_size))

    if n <= 100_000:  # warm-up (first-call costs); at 10^6 they are lost in the fit time
        itlm_fit(), plain_fit()
    return interleave(itlm_fit, plain_fit, reps)


_FIT_DESCRIPTION = ("whole ITLM fit, linear model, {n} tabular rows × 20 features, 10 classes (30 % random labels), "
                    "3 one-epoch rounds, α = 0.65, batch 1024 (training and scoring){how} ÷ plain Lightning fit of the "
                    "same model for 3 epochs on all rows, fed shuffled batches by a bare generator of `index_select` "
                    "gathers (no DataLoader: the cheapest fetch there is; its training_step logs train_loss, as the "
                    "mixin's does)")
_PER_SAMPLE = (", batched fetching switched off (`__getitems__ = None`: every loader fetches sample by sample, as "
               "before issue 17)")


@measurement("data/itlm_fit_n1e4", _FIT_DESCRIPTION.format(n="10,000", how=""), kind="time", target=None,
             reps={"full": 9, "quick": 3, "smoke": 1})
def itlm_fit_n1e4(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _itlm_fit_pairs(ctx, reps, 10_000)


@measurement("data/itlm_fit_n1e5", _FIT_DESCRIPTION.format(n="100,000", how=""), kind="time", target=None,
             reps={"full": 5, "quick": 0, "smoke": 0})
def itlm_fit_n1e5(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _itlm_fit_pairs(ctx, reps, 100_000)


@measurement("data/itlm_fit_n1e6", _FIT_DESCRIPTION.format(n="1,000,000", how=""), kind="time", target=None,
             reps={"full": 3, "quick": 0, "smoke": 0})
def itlm_fit_n1e6(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _itlm_fit_pairs(ctx, reps, 1_000_000)


@measurement("data/itlm_fit_per_sample_fetch_n1e5",
             _FIT_DESCRIPTION.format(n="100,000", how=_PER_SAMPLE),
             kind="time", target=None, reps={"full": 3, "quick": 0, "smoke": 0})
def itlm_fit_per_sample_n1e5(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _itlm_fit_pairs(ctx, reps, 100_000, per_sample=True)


@measurement("data/itlm_fit_per_sample_fetch_n1e6",
             _FIT_DESCRIPTION.format(n="1,000,000", how=_PER_SAMPLE + " (one pair)"),
             kind="time", target=None, reps={"full": 1, "quick": 0, "smoke": 0})
def itlm_fit_per_sample_n1e6(ctx: Context, reps: int) -> list[tuple[float, float]]:
    return _itlm_fit_pairs(ctx, reps, 1_000_000, per_sample=True)



# -- running -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """A mode's sizes (``level`` picks each row's repetitions) and the script's options, as the saved run keeps them."""

    level: str = "full"
    train_size: int = 3000
    batch_size: int = 100
    eval_batch_size: int = 250
    fit_epochs_per_round: int = 2
    fit_rounds: int = 5
    keep_ratio: float = 0.65
    device: str = "cpu"
    threads: int = 1
    synthetic: bool = False
    pin_malloc: bool = True
    only: tuple[str, ...] | None = None


FULL = Protocol()
QUICK = Protocol(level="quick", train_size=2000, fit_epochs_per_round=1, fit_rounds=2)
SMOKE = Protocol(level="smoke", train_size=600, fit_epochs_per_round=1, fit_rounds=2)


def run_measurements(ctx: Context, level: str, names: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for m in MEASUREMENTS:
        if names and m.name not in names:
            continue
        reps = m.reps[level]
        if reps == 0:  # too long for this mode
            print(f"# {m.name}: not run in {level} mode", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            pairs = m.fn(ctx, reps)
        except Skipped as why:
            print(f"# {m.name}: skipped ({why})", flush=True)
            ctx.cache.setdefault("notes", []).append(f"`{m.name}`: not measured — {why}.")
            continue  # no row (a GPU run without Opacus printed the previous row's figures under this one's name)
        except Exception as err:
            if DEVICE == "cpu":
                raise
            # one run on a rented GPU: report the row as failed and measure the others
            rows.append({"name": m.name, "description": m.description, "kind": m.kind, "target": m.target,
                         "error": f"{type(err).__name__}: {err}"[:500], "seconds": time.perf_counter() - t0})
            print(f"# {m.name}: FAILED on {DEVICE}: {rows[-1]['error']}", flush=True)
            continue
        ratios = m.ratios(pairs)
        med = statistics.median(ratios)
        row = {
            "name": m.name, "description": m.description, "kind": m.kind, "target": m.target, "reps": len(pairs),
            "ratio": med, "q25": _quantile(ratios, 0.25), "q75": _quantile(ratios, 0.75),
            "min": min(ratios), "max": max(ratios),
            "ratio_of_medians": (statistics.median(c for c, _ in pairs) / statistics.median(r for _, r in pairs))
            ** (1 if m.kind == "time" else -1),
            "candidate_ms": 1e3 * statistics.median(c for c, _ in pairs),
            "reference_ms": 1e3 * statistics.median(r for _, r in pairs),
            "met": m.meets(med), "seconds": time.perf_counter() - t0,
            "pairs_s": [[round(c, 5), round(r, 5)] for c, r in pairs],
        }
        rows.append(row)
        print(f"# {m.name}: ratio {med:.4f} (IQR {row['q25']:.4f}-{row['q75']:.4f}, n={len(pairs)}) "
              f"in {row['seconds']:.1f}s; median {row['candidate_ms']:.3f} / {row['reference_ms']:.3f} ms on "
              f"{DEVICE}", flush=True)
    return rows


def _device_name() -> str:
    if DEVICE == "cuda":
        return f"cuda ({torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"cpu ({platform.machine()})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                   help="folder holding MNIST/raw (default: $LIT_ROBUST_DATA or ../shared/data; unused with --synthetic)")
    p.add_argument("--only", nargs="+", default=None, help="measurement names to run")
    p.add_argument("--no-pin-malloc", action="store_true", help="leave glibc's malloc thresholds dynamic")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is the most stable on a shared machine)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the models run (default cpu)")
    p.add_argument("--synthetic", action="store_true",
                   help="random MNIST-shaped images instead of offline MNIST (timing only; no data or torchvision)")


def configure(p: Protocol, args: argparse.Namespace) -> Protocol:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("`--device cuda` needs a CUDA device; torch.cuda.is_available() is False.")
    if not args.synthetic and not (Path(args.data_root) / "MNIST" / "raw").is_dir():
        raise SystemExit(f"`--data-root` must hold MNIST/raw (or pass --synthetic), got {args.data_root!r}.")
    if args.threads < 1:
        raise SystemExit(f"`--threads` must be an integer >= 1, got {args.threads}.")
    known = [m.name for m in MEASUREMENTS]
    if args.only and not set(args.only) <= set(known):
        raise SystemExit(f"`--only` must name measurements among {sorted(known)}, got {args.only}.")
    return dataclasses.replace(p, device=args.device, threads=args.threads, synthetic=args.synthetic,
                               pin_malloc=not args.no_pin_malloc, only=tuple(args.only) if args.only else None)


def execute(p: Protocol, args: argparse.Namespace, jobs: int) -> dict[str, Any]:
    """Every row in this process, each in interleaved pairs (candidate and reference share the machine's load)."""
    global DEVICE
    if jobs != 1:
        raise SystemExit(f"`--jobs` must be 1 for overhead (pairs are timed in one process), got {jobs}.")
    DEVICE = p.device
    pinned = pin_malloc() if p.pin_malloc else False
    _quiet()
    torch.set_num_threads(p.threads)
    ctx = Context(data_root="synthetic" if p.synthetic else args.data_root, train_size=p.train_size,
                  batch_size=p.batch_size, eval_batch_size=p.eval_batch_size,
                  fit_epochs_per_round=p.fit_epochs_per_round, fit_rounds=p.fit_rounds, keep_ratio=p.keep_ratio,
                  level=p.level)
    rows = run_measurements(ctx, p.level, list(p.only) if p.only else None)
    out = {"device_name": _device_name(), "malloc_pinned": pinned, "rows": rows, "notes": ctx.cache.get("notes", [])}
    if "opacus_norm_max_abs_diff" in ctx.cache:
        out["opacus_norm_max_abs_diff"] = ctx.cache["opacus_norm_max_abs_diff"]
    return out


# -- reporting (from the saved run only) ---------------------------------------------------------------------
def _pre_harness_reproduce(s: dict[str, Any], m: dict[str, Any]) -> str:
    """The fixed Reproduce line of a run saved before the harness: its recorded command where that names its rows
    and its ``--out``; else the rows with ``--out FILE.md`` (``--out <file>.md`` was read by a shell as the
    redirections ``<file`` and ``>.md``: "file: No such file or directory")."""
    if not s.get("only"):
        return "Reproduce: `python benchmarks/overhead.py`."
    if "--only" in m["command"] and "--out" in m["command"]:
        return f"Reproduce: `{m['command']}`."
    return f"Reproduce: `python benchmarks/overhead.py --only {' '.join(s['only'])} --out FILE.md`."


def render(saved: dict[str, Any]) -> str:
    """The table. A run saved before the harness (``meta["pre_harness"]``) has no device line when its results
    name no device, and keeps its fixed Reproduce line and any note added by hand after the run."""
    s, res, m = saved["settings"], saved["results"], saved["meta"]

    def target(r: dict[str, Any]) -> str:
        if r["target"] is None:
            return "—"
        return f"{'≤' if r['kind'] == 'time' else '≥'} {r['target']:g}"

    def cells(r: dict[str, Any]) -> list[str]:
        if "error" in r:
            return [f"`{r['name']}`", f"**failed**: {r['error']}", "", "", "", "", "", target(r), "**no**"]
        met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
        return [f"`{r['name']}`", f"{r['ratio']:.3f}", f"{r['q25']:.3f} – {r['q75']:.3f}",
                f"{r['min']:.3f} – {r['max']:.3f}", f"{r['ratio_of_medians']:.3f}", str(r["reps"]),
                f"{r['candidate_ms']:.1f} / {r['reference_ms']:.1f}", target(r), met]

    lines = ["# lit_robust overhead (ratios, not absolute times)", ""]
    if "device_name" in res:
        lines += [f"Device: {res['device_name']}." + (" Times are CUDA-synchronised, so the median milliseconds are "
                                                       "absolute step times on it." if s["device"] == "cuda" else ""), ""]
    images = "synthetic MNIST-shaped (random) images" if s["synthetic"] else "offline MNIST training digits"
    lines += [
        f"Model `ImageClassifier(backbone=\"cnn2\")`; {s['train_size']} {images}; training batch {s['batch_size']}, "
        f"scoring/predict batch {s['eval_batch_size']}; ITLM fit: {s['fit_rounds']} rounds × "
        f"{s['fit_epochs_per_round']} epoch(s), α = {s['keep_ratio']}. Candidate and reference are timed in "
        "interleaved pairs; ratio = median of the per-pair ratios (time ratios: candidate ÷ reference, lower is "
        "better; throughput ratios: higher is better).",
        "",
        *md_table(["measurement", "ratio (median)", "IQR", "min – max", "ratio of medians", "pairs",
                   "candidate / reference (median ms)", "target", "met"], [cells(r) for r in res["rows"]]),
        "", "What each row times:", "",
        *[f"* `{r['name']}`: {r['description']}." for r in res["rows"]],
    ]
    if res["notes"]:
        lines += ["", *res["notes"]]
    arch, system = m["machine"].split(", ", 1)
    lines += [
        "",
        "glibc malloc thresholds pinned (`pin_malloc`): " + ("yes" if res["malloc_pinned"] else "**no**") + ". Without "
        "it a process on this VM sometimes falls into a state where each forward pass page-faults its buffers afresh "
        "(bare loops +50 %, Lightning's predict loop less), which pushed the scoring ÷ predict ratio to 0.78–0.90 "
        "in some runs while scoring ÷ bare no-grad loop stayed at 1.00.",
        "",
        f"Mode {saved['mode']}; wall time {m['wall_s']:.0f} s; torch threads {s['threads']}; date {m['date']}; "
        f"machine: {arch}, {m['cpus']} CPU cores (shared), {system}; torch {m['torch']}.",
        "",
        # a run of some rows named them (a reviewer found `overhead_backdoor.md`'s one row told to run all 19, which
        # overwrites overhead.md); a run that saved no .json says so
        _pre_harness_reproduce(s, m)
        if m.get("pre_harness") else f"Reproduce: `{m['command']}` {reproduce_note(saved, 'overhead.json')}.",
        "",
    ]
    return "\n".join(lines) + m.get("note_added_by_hand", "")


def headline(saved: dict[str, Any]) -> dict[str, Any]:
    res = saved["results"]
    ok = [r for r in res["rows"] if "error" not in r]
    out: dict[str, Any] = {
        "device": res.get("device_name"), "ratios": {r["name"]: round(r["ratio"], 4) for r in ok},
        "spread_iqr": {r["name"]: [round(r["q25"], 4), round(r["q75"], 4)] for r in ok},
        "targets_met": {r["name"]: r["met"] for r in ok},
        "median_ms": {r["name"]: [round(r["candidate_ms"], 3), round(r["reference_ms"], 3)] for r in ok}}
    if len(ok) < len(res["rows"]):
        out["failed"] = {r["name"]: r["error"] for r in res["rows"] if "error" in r}
    if "opacus_norm_max_abs_diff" in res:
        out["opacus_norm_max_abs_diff"] = res["opacus_norm_max_abs_diff"]
    return out


BENCHMARK = Benchmark(name="overhead", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      execute=execute, render=render, headline=headline, add_arguments=add_arguments,
                      configure=configure, jobs={"full": 1, "quick": 1, "smoke": 1}, data=False)

if __name__ == "__main__":
    if "failed" in main(BENCHMARK):  # a row failed on the device: the table says which; the exit status too
        raise SystemExit(1)
