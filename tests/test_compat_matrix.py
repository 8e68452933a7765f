"""Compatibility matrix (issue 17): every callback and ready-made module × precision × eager / ``torch.compile``.

Each cell fits a tiny model on a tiny data set (one or two epochs) and checks what lit_robust decided:

* **exactly, in every cell** — the rule applied to the cell's *own* scores, against a slow Python reference
  (a filter's keep-mask is the ``floor((1-ε) B)`` smallest ``(score, index)``; an ITLM selection the ``floor(αn)``
  smallest of its scoring pass; RCA's and Co-teaching's exchanges), that the mask reached the loss (the step's
  loss is the mean over the kept samples), that ITLM trains on its selection only, and the bounds
  (``‖c‖∞ ≤ τ`` on the ``τ/|K|`` lattice, ``σ_max ≤ k`` after truncation);
* **against an eager float32 fit** of the same seed on the same device — the scores, within
  :data:`SCORE_TOL` of the reference scores' scale, and the selections: a sample may fall on the other side of
  the cut only if its reference score lies within twice the observed score deviation of the cut (a ranking,
  count or mask bug shows as a mismatch far from the cut; rounding can only swap near-ties).

Why tolerances at all: ``torch.compile`` fuses and reorders float32 arithmetic, and ``bf16-mixed`` /
``16-mixed`` round matrix products to 8 / 11 significant bits, so scores differ from eager float32 by rounding
and, after a few optimizer steps, by the rounding of the whole trajectory.

A user compiles a LightningModule with ``torch.compile(model)`` and hands the result to ``Trainer.fit``
(Lightning unwraps it and compiles ``forward`` and the ``*_step`` methods); the compiled cells do exactly that.
With CUDA the matrix also runs with ``accelerator="gpu"`` in ``32-true``, ``16-mixed`` and ``bf16-mixed``
(those cells are marked ``cuda``: ``pytest -m cuda``).

PRL(G) on a compiled module uses the one-backward path (the two-pass path's extra backward cannot run on a
compiled graph with donated buffers, and says so).
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import lit_robust as lr
from lit_robust.anomaly import rca as rca_module
from lit_robust.data.indexed import unpack_batch
from lit_robust.functional.backdoor import PatchTrigger
from lit_robust.functional.scores import loss_layer_scores
from lit_robust.selection.rules import batch_keep_count, keep_count
from tests.conftest import blobs

HAS_CUDA = torch.cuda.is_available()
HAS_LIGHTLY = importlib.util.find_spec("lightly") is not None
HAS_GRID = importlib.util.find_spec("torchvision") is not None and importlib.util.find_spec("PIL") is not None

#: ``torch.compile`` backend per device. On CUDA the default, inductor. On the CPU ``aot_eager``: TorchDynamo and
#: AOTAutograd as with inductor — where graph breaks, guards and autograd failures (e.g. freed or donated buffers)
#: arise — without inductor's C++ code generation, which took 15-150 s per cell on our shared 2-core machine
#: (every CPU cell also passed with inductor: ``LIT_ROBUST_CPU_COMPILE_BACKEND=inductor``).
COMPILE_BACKEND = {"cpu": os.environ.get("LIT_ROBUST_CPU_COMPILE_BACKEND", "aot_eager"), "cuda": "inductor"}

#: the largest deviation of a cell's scores (and other compared values) from eager float32's, relative to the
#: reference values' scale (their largest magnitude). float32 (compiled) only reorders arithmetic; the half
#: types round every matrix product and, over the steps of a fit, the trajectory (measured on the CPU under
#: bf16-mixed: <= 0.017 for scores, log-densities and outputs, 0.042 for accuracies; LinearProbe, see its case).
SCORE_TOL = {"32-true": 1e-4, "bf16-mixed": 0.15, "16-mixed": 0.05}
#: the mean deviation of AdversarialTrigger's perturbation from eager float32's, in units of tau, in half precision
#: (measured 0.050 under bf16-mixed on the CPU: after a few steps the signs of small input-gradient components differ)
TRIGGER_TOL = 0.15


# ---------------------------------------------------------------------------------------------- models and data
class Net(lr.RobustMixin, pl.LightningModule):
    """A two-layer classifier for the 2-D blobs."""

    def __init__(self, d_in: int = 2, hidden: int = 16, classes: int = 3, lr: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, classes))
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def per_sample_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        b = unpack_batch(batch)
        logits = self(b.input)
        return F.cross_entropy(logits, b.target, reduction="none"), logits

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def blob_loader(n: int = 192, batch_size: int = 32) -> DataLoader:
    return DataLoader(blobs(n), batch_size=batch_size, shuffle=True)


_DIGITS: dict[str, Tensor] = {}


def digits(n: int, offset: int = 0) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8×8 digits, pixels in [0, 1] (no download)."""
    if not _DIGITS:
        from sklearn.datasets import load_digits

        d = load_digits()
        _DIGITS["x"] = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        _DIGITS["y"] = torch.tensor(d.target, dtype=torch.long)
    return _DIGITS["x"][offset:offset + n], _DIGITS["y"][offset:offset + n]


def digit_sets(n_train: int = 256, n_val: int = 128) -> tuple[lr.IndexedDataset, lr.IndexedDataset]:
    """Digits with 30% systematic label noise (flags kept), and a clean validation split."""
    x, y = digits(n_train)
    noisy, bad = lr.corrupt_labels(y, 0.7, "systematic", 10, seed=0)
    xv, yv = digits(n_val, offset=n_train)
    return (lr.IndexedDataset(TensorDataset(x, y), targets=noisy, corrupted=bad),
            lr.IndexedDataset(TensorDataset(xv, yv)))


def gan_images(n: int = 128) -> lr.IndexedDataset:
    """Digits scaled to the DCGAN's [-1, 1], unlabeled (dummy target 0), the first quarter flagged as 'bad'."""
    x, _ = digits(n)
    flags = torch.arange(n) < n // 4
    return lr.IndexedDataset(TensorDataset(2 * x - 1, torch.zeros(n, dtype=torch.long)), corrupted=flags)


def image_classifier() -> lr.ImageClassifier:
    return lr.ImageClassifier(backbone="mlp", num_classes=10, image_size=8, hidden=32, lr=0.05)


# ------------------------------------------------------------------------------------------------------ spies
class SpyFilter(lr.BatchFilter):
    """A BatchFilter that keeps, for every training batch it is asked about, the scores, indices, mask and losses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[dict[str, Any]] = []
        self._last_scores: Tensor | None = None

    def scores(self, losses: Tensor, batch: Any, outputs: Any, module: Any) -> Tensor:
        s = super().scores(losses, batch, outputs, module)
        self._last_scores = s
        return s

    def _mask(self, losses: Tensor, batch: Any, outputs: Any, module: Any, record: bool) -> Tensor:
        self._last_scores = None
        mask = super()._mask(losses, batch, outputs, module, record)
        if self._trainer is not None and self._trainer.training:
            s = self._last_scores
            self.steps.append({"index": unpack_batch(batch).index.detach().cpu(), "mask": mask.detach().cpu(),
                               "losses": losses.detach().float().cpu(), "record": record,
                               "scores": None if s is None else s.detach().float().cpu(),
                               "eps": self.drop_ratio_at(self._trainer.current_epoch)})
        return mask

    def reduce_in_backward(self, losses: Tensor, batch: Any, outputs: Any, module: Any,
                           prior_keep: Tensor | None = None) -> Tensor | None:
        # PRL(G)'s one-backward path ranks inside the backward: its scores and mask are read once the step ended
        out = super().reduce_in_backward(losses, batch, outputs, module, prior_keep)
        if out is not None:
            self._deferred = (unpack_batch(batch).index.detach().cpu(), losses.detach().float().cpu(),
                              self.drop_ratio_at(self._trainer.current_epoch))
        return out

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        deferred, self._deferred = getattr(self, "_deferred", None), None
        if deferred is not None:
            index, losses, eps = deferred
            rec = self._recorder
            self.steps.append({"index": index, "mask": rec.last_mask.detach().cpu(), "losses": losses,
                               "record": True, "scores": rec.last_scores.detach().float().cpu(), "eps": eps})
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class SpyITLM(lr.ITLM):
    """An ITLM that keeps every scoring pass's ``(index, scores)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[tuple[Tensor, Tensor]] = []

    def score_training_set(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        index, scores, corrupted = super().score_training_set(trainer, pl_module)
        self.passes.append((index.detach().cpu(), scores.detach().float().cpu()))
        return index, scores, corrupted


class SpyClustering(lr.ActivationClustering):
    """An ActivationClustering that keeps its feature pass's ``(index, features, labels)``."""

    def _feature_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        index, feats, labels, corrupted = super()._feature_pass(trainer, pl_module)
        self.pass_ = (index.detach().cpu(), feats.detach().float().cpu(), labels.detach().cpu())
        return index, feats, labels, corrupted


class SpyTrigger(lr.AdversarialTrigger):
    """An AdversarialTrigger that keeps every batch's perturbation ``c``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cs: list[Tensor] = []

    def perturbation(self, module: Any, batch: Any) -> Tensor:
        c = super().perturbation(module, batch)
        self.cs.append(c.detach().float().cpu())
        return c


class SpyCoTeaching(lr.CoTeaching):
    """A CoTeaching that keeps each batch's two score vectors and two keep-masks (and network 1's losses)."""

    def selections(self, batch: Any, losses: tuple[Tensor, Tensor], outputs: tuple[Any, Any],
                   drop_ratio: float) -> tuple[Tensor, Tensor]:
        keep1, keep2 = super().selections(batch, losses, outputs, drop_ratio)
        if not hasattr(self, "steps"):
            self.steps = []
        target = unpack_batch(batch).target
        s1, s2 = (loss_layer_scores(self.rule, l_i, o_i, target, self.loss) for l_i, o_i in zip(losses, outputs))
        self.steps.append({"index": unpack_batch(batch).index.detach().cpu(), "eps": drop_ratio,
                           "s1": s1.detach().float().cpu(), "s2": s2.detach().float().cpu(),
                           "keep1": keep1.detach().cpu(), "keep2": keep2.detach().cpu(),
                           "l1": losses[0].detach().float().cpu()})
        return keep1, keep2


class StepSpy(Callback):
    """Every training step's returned loss and batch indices."""

    def __init__(self) -> None:
        self.losses: list[float | None] = []
        self.indices: list[Tensor] = []
        self.epochs: list[int] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach().float()) if isinstance(loss, Tensor) else None)
        self.indices.append(unpack_batch(batch).index.detach().cpu())
        self.epochs.append(trainer.current_epoch)


# ------------------------------------------------------------------------------------------- slow references
def slow_keep(scores: Tensor, index: Tensor, k: int) -> Tensor:
    """The ``k`` samples ranked first by ``(score, index)``, non-finite scores last — plain Python."""
    s, ix = scores.tolist(), index.tolist()
    order = sorted(range(len(s)), key=lambda i: (not math.isfinite(s[i]), s[i] if math.isfinite(s[i]) else 0.0, ix[i]))
    keep = torch.zeros(len(s), dtype=torch.bool)
    keep[order[:k]] = True
    return keep


# ------------------------------------------------------------------------------------------------------ cases
@dataclass
class Setup:
    """One cell's fit: the module, its data, callbacks and epochs, and what to read back afterwards."""

    model: pl.LightningModule
    data: dict[str, Any]  # keyword arguments of Trainer.fit besides the model
    callbacks: list[Callback]
    max_epochs: int
    observe: Callable[[pl.LightningModule], dict[str, Any]]
    loss_is_filtered_mean: bool = True  # the step's loss is the mean of the filter's kept losses
    cleanup: Callable[[], None] = lambda: None
    half_tol: float = 1.0  # a factor on SCORE_TOL / TRIGGER_TOL in half precision, where a case states why


def _probe_points(device: str) -> Tensor:
    g = torch.Generator().manual_seed(7)
    return (4 * torch.rand(64, 2, generator=g) - 2).to(device)


def _eval_out(model: nn.Module, fn: Callable[[], Tensor]) -> Tensor:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return fn().detach().float().cpu()
    finally:
        model.train(was)


def case_itlm(tmp: str) -> Setup:
    itlm = SpyITLM(keep_ratio=0.667, round_epochs=[1, 1])  # keeps 128 of 192: whole batches of 32
    steps = StepSpy()
    model = Net()

    def observe(m: pl.LightningModule) -> dict[str, Any]:
        trained_last_round = torch.cat([ix for ix, e in zip(steps.indices, steps.epochs) if e == 1])
        return {"itlm": itlm.passes, "selection": itlm.selection.cpu(), "keep_ratio": 0.667,
                "trained_last_round": trained_last_round}

    return Setup(model, {"train_dataloaders": blob_loader()}, [itlm, steps], 2, observe)


def case_activation_clustering(tmp: str) -> Setup:
    ac, steps = SpyClustering(warmup_epochs=1, verbose=False), StepSpy()
    model = Net()

    def observe(m: pl.LightningModule) -> dict[str, Any]:
        trained_last_round = torch.cat([ix for ix, e in zip(steps.indices, steps.epochs) if e == 1])
        res = ac.clusters
        return {"ac": {"pass": ac.pass_, "score": res.score.float(), "suspicious": res.suspicious.clone()},
                "selection": ac.selection.cpu(), "trained_last_round": trained_last_round}

    return Setup(model, {"train_dataloaders": blob_loader()}, [ac, steps], 2, observe)


def case_filter(rule: str) -> Callable[[str], Setup]:
    def build(tmp: str) -> Setup:
        filt, steps = SpyFilter(rule, drop_ratio=0.3), StepSpy()
        model = Net()
        # PRL(G) in one backward: the step's loss value is the whole batch's mean (the kept samples' gradient is
        # formed in the backward; tests/test_prl_g_bookkeeping.py checks it against the two-pass gradient)
        return Setup(model, {"train_dataloaders": blob_loader()}, [filt, steps], 1,
                     lambda m: {"filter": filt.steps, "step_losses": steps.losses},
                     loss_is_filtered_mean=rule != "prl_g")

    return build


def case_coteaching(tmp: str) -> Setup:
    model = SpyCoTeaching(Net(), rule="prl", drop_ratio=0.3)
    steps = StepSpy()
    return Setup(model, {"train_dataloaders": blob_loader()}, [steps], 1,
                 lambda m: {"coteaching": m.steps, "step_losses": steps.losses}, loss_is_filtered_mean=False)


def case_adversarial_trigger(tmp: str) -> Setup:
    train, _ = digit_sets()
    filt, trig, steps = SpyFilter("prl", drop_ratio=0.3), SpyTrigger(tau=0.05, value_range=(0.0, 1.0)), StepSpy()
    return Setup(image_classifier(), {"train_dataloaders": DataLoader(train, batch_size=32, shuffle=True)},
                 [filt, trig, steps], 1,
                 lambda m: {"filter": filt.steps, "step_losses": steps.losses, "trigger": trig.cs, "tau": 0.05})


def case_spectral(mode: str) -> Callable[[str], Setup]:
    def build(tmp: str) -> Setup:
        k = 1.0 if mode == "normalize" else 0.5
        sn, steps = lr.SpectralNorm(k=k, mode=mode), StepSpy()
        model = Net()

        def observe(m: pl.LightningModule) -> dict[str, Any]:
            sig = sn.sigmas(m)
            return {"sigmas": sig, "k": k, "mode": mode,
                    "close": {"outputs": _eval_out(m, lambda: m(_probe_points(m.device))),
                              "sigmas": torch.tensor(list(sig.values()))}}

        return Setup(model, {"train_dataloaders": blob_loader()}, [sn, steps], 1, observe,
                     loss_is_filtered_mean=False)

    return build


def case_backdoor_metrics(tmp: str) -> Setup:
    train, val = digit_sets()
    filt, steps = SpyFilter("spl", drop_ratio=0.3), StepSpy()
    metrics = lr.BackdoorMetrics(trigger=PatchTrigger(size=2, value_range=(0.0, 1.0)), target=None, num_classes=10)
    model = image_classifier()

    def observe(m: pl.LightningModule) -> dict[str, Any]:
        xv, yv = digits(128, offset=256)
        trigger = PatchTrigger(size=2, value_range=(0.0, 1.0))
        xv = xv.to(m.device)
        clean = _eval_out(m, lambda: m(xv)).argmax(1)
        trig = _eval_out(m, lambda: m(trigger(xv))).argmax(1)
        return {"filter": filt.steps, "step_losses": steps.losses, "backdoor": metrics.results, "dataset": train,
                "recomputed": {"clean_acc": float((clean == yv).float().mean()),
                               "poison_acc": float((trig == yv).float().mean())},
                "close": {"accuracies": torch.tensor([metrics.results["val"]["clean_acc"],
                                                      metrics.results["val"]["poison_acc"]])}}

    return Setup(model, {"train_dataloaders": DataLoader(train, batch_size=32, shuffle=True),
                         "val_dataloaders": DataLoader(val, batch_size=64)},
                 [filt, metrics, steps], 1, observe)


def case_dcgan(tmp: str) -> Setup:
    """DCGAN trimmed by ITLM (score -log D(x)), with a SampleGrid after each round."""
    itlm, steps = SpyITLM(keep_ratio=0.75, round_epochs=[1, 1]), StepSpy()
    grid = lr.SampleGrid(dirpath=os.path.join(tmp, "grids")) if HAS_GRID else None
    model = lr.DCGAN(latent_dim=8, g_width=4, d_width=4, image_size=8, num_fixed=8)

    def observe(m: pl.LightningModule) -> dict[str, Any]:
        trained_last_round = torch.cat([ix for ix, e in zip(steps.indices, steps.epochs) if e == 1])
        out = {"itlm": itlm.passes, "selection": itlm.selection.cpu(), "keep_ratio": 0.75,
               "trained_last_round": trained_last_round,
               "close": {"images": _eval_out(m, lambda: m.generate(m.fixed_z))}}
        if grid is not None:
            out["grid"] = dict(grid.paths)
        return out

    return Setup(model, {"train_dataloaders": DataLoader(gan_images(), batch_size=32, shuffle=True)},
                 [itlm, steps] + ([grid] if grid is not None else []), 2, observe, loss_is_filtered_mean=False)


def _moons() -> lr.TwoMoonsAnomalyDataModule:
    return lr.TwoMoonsAnomalyDataModule(n_train=256, contamination=0.1, anomalies="uniform", n_test=64,
                                        batch_size=64, seed=0, drop_last=True)


def case_realnvp(tmp: str) -> Setup:
    model = lr.RobustRealNVP(dim=2, n_couplings=2, hidden=16, drop_ratio=0.1)  # trims by -log p, SN coupling nets
    filt = SpyFilter("spl", drop_ratio=0.1)
    model.batch_filter = filt  # the module's own filter (returned by its configure_callbacks), observed
    steps = StepSpy()

    def observe(m: pl.LightningModule) -> dict[str, Any]:
        return {"filter": filt.steps, "step_losses": steps.losses,
                "close": {"log_prob": _eval_out(m, lambda: m.log_prob(_probe_points(m.device)))}}

    return Setup(model, {"datamodule": _moons()}, [steps], 2, observe)


def case_rca(tmp: str) -> Setup:
    model = lr.RCA(dim=2, hidden=16, latent=2, drop_ratio=0.2, dropout=0.0)  # no dropout: scores deterministic
    calls: list[dict[str, Any]] = []
    original = rca_module.rca_exchange_masks

    def recording(e1: Tensor, e2: Tensor, keep_ratio: float, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        m1, m2 = original(e1, e2, keep_ratio, index)
        calls.append({"e1": e1.detach().float().cpu(), "e2": e2.detach().float().cpu(), "beta": keep_ratio,
                      "index": index.detach().cpu(), "m1": m1.detach().cpu(), "m2": m2.detach().cpu()})
        return m1, m2

    rca_module.rca_exchange_masks = recording  # RCA.training_step looks the function up in its module
    return Setup(model, {"datamodule": _moons()}, [], 2,
                 lambda m: {"rca": calls,
                            "close": {"score": _eval_out(m, lambda: m.anomaly_score(_probe_points(m.device)))}},
                 loss_is_filtered_mean=False, cleanup=lambda: setattr(rca_module, "rca_exchange_masks", original))


def _two_views(n: int = 128) -> lr.IndexedDataset:
    x, y = digits(n)
    return lr.IndexedDataset(_ViewPairs(x, y))


class _ViewPairs(torch.utils.data.Dataset):
    """Two fixed views per image (the image and its mirror): SimCLR's batches without random augmentation."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[list[Tensor], Tensor]:
        return [self.x[i], self.x[i].flip(-1)], self.y[i]


def case_simclr(tmp: str) -> Setup:
    model = lr.SimCLR(backbone="cnn", width=4, projection_dim=8, augment="none")
    steps = StepSpy()
    probe, _ = digits(32, offset=512)

    def observe(m: pl.LightningModule) -> dict[str, Any]:
        return {"close": {"step_losses": torch.tensor(steps.losses),
                          "features": _eval_out(m, lambda: m(probe.to(m.device)))}}

    return Setup(model, {"train_dataloaders": DataLoader(_two_views(), batch_size=32, shuffle=True)}, [steps], 1,
                 observe, loss_is_filtered_mean=False)


def case_linear_probe(tmp: str) -> Setup:
    train, _ = digit_sets()
    filt, steps = SpyFilter("prl", drop_ratio=0.3), StepSpy()
    sn = lr.SpectralNorm(k=1.0, modules="head", mode="truncate")
    model = lr.LinearProbe(backbone="cnn", width=4, num_classes=10, lr=0.05)

    def observe(m: pl.LightningModule) -> dict[str, Any]:
        return {"filter": filt.steps, "step_losses": steps.losses, "sigmas": sn.sigmas(m), "k": 1.0,
                "mode": "truncate"}

    # half_tol: the frozen backbone's features are rounded to 8 (bf16) significant bits *before* they are
    # standardised, and dividing by a feature's small spread magnifies that rounding (measured under bf16-mixed on
    # the CPU, eager, seeds 0-19 of this cell: 0.013-0.122 of the PRL scores' scale, 0.044 at the seed 0 it runs;
    # compiled with aot_eager the same to 4 digits for seeds 0-9; allowed 0.15 * 2.0 = 0.30)
    return Setup(model, {"train_dataloaders": DataLoader(train, batch_size=32, shuffle=True)},
                 [filt, sn, steps], 1, observe, half_tol=2.0)


CASES: dict[str, Callable[[str], Setup]] = {
    "itlm": case_itlm,
    "activation_clustering": case_activation_clustering,
    "filter_prl": case_filter("prl"),
    "filter_spl": case_filter("spl"),
    "filter_prl_g": case_filter("prl_g"),
    "coteaching": case_coteaching,
    "adversarial_trigger": case_adversarial_trigger,
    "spectral_normalize": case_spectral("normalize"),
    "spectral_truncate": case_spectral("truncate"),
    "backdoor_metrics": case_backdoor_metrics,
    "dcgan_itlm_sample_grid": case_dcgan,
    "robust_realnvp": case_realnvp,
    "rca": case_rca,
    "simclr": case_simclr,
    "linear_probe": case_linear_probe,
}


# ---------------------------------------------------------------------------------------------------- running
def fit_cell(case: str, device: str, precision: str, compiled: bool, tmp: str) -> dict[str, Any]:
    """Fit one cell from seed 0 and return its observations."""
    pl.seed_everything(0, verbose=False)
    setup = CASES[case](tmp)
    model: Any = torch.compile(setup.model, backend=COMPILE_BACKEND[device]) if compiled else setup.model
    trainer = pl.Trainer(
        max_epochs=setup.max_epochs, callbacks=setup.callbacks, default_root_dir=tmp, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
        deterministic=True if device == "cpu" else "warn",
    )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*")
            trainer.fit(model, **setup.data)
    finally:
        setup.cleanup()
    # observed on the fit's device: Lightning's teardown leaves the module on the CPU with its forward still compiled,
    # and observing there made inductor compile CPU kernels for a CUDA cell (the first GPU run's 32-true
    # spectral_normalize cell spent over 40 s in inductor's probe of the CPU's vector instructions, twice)
    obs = setup.observe(setup.model.to(device))
    obs["loss_is_filtered_mean"] = setup.loss_is_filtered_mean
    obs["half_tol"] = setup.half_tol
    return obs


_REFERENCE: dict[tuple[str, str], dict[str, Any]] = {}


def reference(case: str, device: str, tmp: str) -> dict[str, Any]:
    """The eager float32 fit of ``case`` on ``device`` (computed once per session)."""
    key = (case, device)
    if key not in _REFERENCE:
        _REFERENCE[key] = fit_cell(case, device, "32-true", False, tmp)
    return _REFERENCE[key]


# ----------------------------------------------------------------------------------------------------- checks
@dataclass
class Tally:
    """What a cell's comparison with eager float32 found (reported as junit properties)."""

    max_dev: float = 0.0  # largest value deviation seen, relative to the reference scale
    swaps: int = 0  # samples on the other side of a cut than in the reference (all of them near the cut)
    compared: int = 0  # selections compared
    notes: list[str] = field(default_factory=list)

    def deviation(self, what: str, value: Tensor, ref: Tensor, tol: float) -> float:
        assert value.shape == ref.shape, f"{what}: shape {tuple(value.shape)} vs reference {tuple(ref.shape)}"
        assert bool(torch.isfinite(value).all()), f"{what}: non-finite values {value}"
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        dev = float((value - ref).abs().max()) if ref.numel() else 0.0
        rel = dev / scale if scale > 0 else dev
        self.max_dev = max(self.max_dev, rel)
        assert rel <= tol, f"{what}: deviates from eager float32 by {rel:.3g} of its scale (allowed {tol})"
        return dev

    def selection(self, what: str, mask: Tensor, ref_mask: Tensor, ref_scores: Tensor, dev: float) -> None:
        """Every sample on the other side of the cut than in the reference must have a reference score within
        twice the observed score deviation of the cut."""
        self.compared += 1
        diff = mask != ref_mask
        if not bool(diff.any()):
            return
        kept, dropped = ref_scores[ref_mask], ref_scores[~ref_mask]
        assert kept.numel() and dropped.numel(), f"{what}: selections differ where the reference keeps all or none"
        cut = 0.5 * (float(kept.max()) + float(dropped.min()))
        far = diff & ((ref_scores - cut).abs() > 2 * dev + 1e-12)
        assert not bool(far.any()), (f"{what}: {int(far.sum())} samples changed side far from the cut (reference "
                                     f"scores {ref_scores[far].tolist()}, cut {cut:.6g}, score deviation {dev:.3g})")
        self.swaps += int(diff.sum())


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


def check_exact(obs: dict[str, Any], precision: str) -> None:
    """The rules applied to the cell's own numbers: equal to the slow references, whatever the precision."""
    loss_rtol = 1e-5 if precision == "32-true" else 1e-2  # a half-precision loss is averaged in its own dtype
    if "filter" in obs:
        recorded = [st for st in obs["filter"] if st["record"]]
        assert recorded, "the filter ranked no training batch"
        for i, st in enumerate(obs["filter"]):
            n, eps = st["index"].numel(), st["eps"]
            if eps == 0.0:
                assert bool(st["mask"].all()), f"batch {i}: dropped samples at drop ratio 0"
                continue
            assert st["scores"] is not None and st["scores"].shape == (n,), f"batch {i}: no scores"
            k, _ = batch_keep_count(n, eps)
            want = slow_keep(st["scores"], st["index"], k)
            assert torch.equal(st["mask"], want), f"batch {i}: mask is not the {k} smallest (score, index) of {n}"
        if obs["loss_is_filtered_mean"]:
            losses = [x for x in obs["step_losses"] if x is not None]
            assert len(losses) == len(recorded), f"{len(losses)} step losses for {len(recorded)} filtered batches"
            for i, (loss, st) in enumerate(zip(losses, recorded)):
                want = float(st["losses"][st["mask"]].mean())
                assert _close(loss, want, loss_rtol), f"step {i}: loss {loss} is not the kept mean {want}"
    if "itlm" in obs:
        assert obs["itlm"], "ITLM scored nothing"
        index, scores = obs["itlm"][-1]
        n = index.numel()
        dense = torch.full((n,), float("nan"))
        dense[index] = scores
        want = torch.nonzero(slow_keep(dense, torch.arange(n), keep_count(n, obs["keep_ratio"]))).flatten()
        assert torch.equal(obs["selection"], want), "ITLM's selection is not the floor(alpha n) smallest scores"
        trained = torch.sort(obs["trained_last_round"]).values
        assert torch.equal(trained, want), "the last round did not train on exactly the selection, once each"
    if "ac" in obs:
        index, feats, labels = obs["ac"]["pass"]
        order = torch.argsort(index)
        want = lr.activation_clusters(feats[order], labels[order]).suspicious
        assert torch.equal(obs["ac"]["suspicious"], want), "the clustering is not that of the recorded features"
        keep = torch.nonzero(~want).flatten()
        assert keep.numel() < index.numel(), "activation clustering flagged nothing on the blobs"
        assert torch.equal(obs["selection"], keep), "the selection is not the unflagged samples"
        trained = torch.sort(obs["trained_last_round"]).values
        assert torch.equal(trained, keep), "the last round did not train on exactly the selection, once each"
    if "coteaching" in obs:
        losses = obs["step_losses"]
        assert len(losses) == len(obs["coteaching"]) > 0
        for i, (st, loss) in enumerate(zip(obs["coteaching"], losses)):
            k, _ = batch_keep_count(st["index"].numel(), st["eps"]) if st["eps"] else (st["index"].numel(), False)
            assert torch.equal(st["keep1"], slow_keep(st["s1"], st["index"], k)), f"step {i}: network 1's selection"
            assert torch.equal(st["keep2"], slow_keep(st["s2"], st["index"], k)), f"step {i}: network 2's selection"
            want = float(st["l1"][st["keep2"]].mean())  # network 1 learns from what network 2 keeps
            assert _close(loss, want, loss_rtol), f"step {i}: network 1's loss {loss} is not over net 2's choice"
    if "trigger" in obs:
        previews = [st for st in obs["filter"] if not st["record"]]
        assert len(previews) == len(obs["trigger"]) > 0
        tau = obs["tau"]
        for i, (c, st) in enumerate(zip(obs["trigger"], previews)):
            assert float(c.abs().max()) <= tau * (1 + 1e-6), f"step {i}: ||c||_inf > tau"
            steps = c * int(st["mask"].sum()) / tau  # eq. 5.5: a sum of signs over the kept samples, times tau/|K|
            assert float((steps - steps.round()).abs().max()) < 1e-3, f"step {i}: c is off the tau/|K| lattice"
    if "sigmas" in obs:
        k = obs["k"]
        for name, sigma in obs["sigmas"].items():
            if obs["mode"] == "truncate":
                assert sigma <= k * (1 + 1e-5), f"{name}: sigma_max {sigma} > k = {k} after truncation"
            else:  # power iteration: sigma_hat <= sigma, so W k / sigma_hat is at or slightly above k
                assert k * (1 - 1e-3) <= sigma <= k * 1.05, f"{name}: sigma {sigma} of the normalised weight, k = {k}"
    if "backdoor" in obs:
        val = obs["backdoor"]["val"]
        n = 128
        for key in ("clean_acc", "poison_acc"):
            assert abs(val[key] - obs["recomputed"][key]) <= 1.5 / n, (
                f"backdoor/val_{key} {val[key]} is not the accuracy of the final model {obs['recomputed'][key]}")
        last = [st for st in obs["filter"] if st["record"]]
        bad = obs["dataset"].corrupted
        dropped = torch.cat([st["index"][~st["mask"]] for st in last])
        poisoned = int(bad.sum())
        precision_, recall = obs["backdoor"]["dropped"]["precision"], obs["backdoor"]["dropped"]["recall"]
        assert _close(precision_, int(bad[dropped].sum()) / dropped.numel(), 1e-9), "dropped precision"
        assert _close(recall, int(bad[dropped].sum()) / poisoned, 1e-9), "dropped recall"
    if "grid" in obs:
        from PIL import Image

        assert sorted(obs["grid"]) == [0, 1], obs["grid"]  # one grid per ITLM round
        with Image.open(obs["grid"][0]) as img:
            assert img.size == (8 * 10 + 2, 10 + 2), img.size  # 8 images of 8x8 in one row, 2-pixel padding
    if "rca" in obs:
        assert obs["rca"], "RCA exchanged nothing"
        for i, c in enumerate(obs["rca"]):
            k = max(keep_count(c["index"].numel(), c["beta"]), 1)
            assert torch.equal(c["m1"], slow_keep(c["e2"], c["index"], k)), f"step {i}: A1 must train on A2's choice"
            assert torch.equal(c["m2"], slow_keep(c["e1"], c["index"], k)), f"step {i}: A2 must train on A1's choice"


def check_against_reference(obs: dict[str, Any], ref: dict[str, Any], tol: float) -> Tally:
    """Scores within ``tol`` of eager float32's; selections equal to its selections up to near-ties."""
    t = Tally()

    def scored(what: str, s: Tensor, r: Tensor, ix: Tensor, r_ix: Tensor, mask: Tensor, r_mask: Tensor) -> None:
        assert torch.equal(ix, r_ix), f"{what}: a different batch than the reference's (data order changed)"
        dev = t.deviation(what, s, r, tol)
        t.selection(what, mask, r_mask, r, dev)

    if "filter" in obs:
        assert len(obs["filter"]) == len(ref["filter"]), "a different number of ranked batches than the reference"
        for i, (st, rt) in enumerate(zip(obs["filter"], ref["filter"])):
            if rt["scores"] is None:
                assert st["scores"] is None
                continue
            scored(f"batch {i}", st["scores"], rt["scores"], st["index"], rt["index"], st["mask"], rt["mask"])
    if "itlm" in obs:
        for i, ((ix, s), (r_ix, r)) in enumerate(zip(obs["itlm"], ref["itlm"], strict=True)):
            n = ix.numel()
            k = keep_count(n, obs["keep_ratio"])
            scored(f"scoring pass {i}", s, r, ix, r_ix, slow_keep(s, ix, k), slow_keep(r, r_ix, k))
    if "ac" in obs:
        # the signed distance ratio to the two cluster centres: positive = flagged
        n = obs["ac"]["score"].numel()
        scored("clustering", obs["ac"]["score"], ref["ac"]["score"], torch.arange(n), torch.arange(n),
               ~obs["ac"]["suspicious"], ~ref["ac"]["suspicious"])
    if "coteaching" in obs:
        for i, (st, rt) in enumerate(zip(obs["coteaching"], ref["coteaching"], strict=True)):
            scored(f"step {i} net 1", st["s1"], rt["s1"], st["index"], rt["index"], st["keep1"], rt["keep1"])
            scored(f"step {i} net 2", st["s2"], rt["s2"], st["index"], rt["index"], st["keep2"], rt["keep2"])
    if "rca" in obs:
        for i, (c, rc) in enumerate(zip(obs["rca"], ref["rca"], strict=True)):
            scored(f"step {i} A1 errors", c["e1"], rc["e1"], c["index"], rc["index"], c["m2"], rc["m2"])
            scored(f"step {i} A2 errors", c["e2"], rc["e2"], c["index"], rc["index"], c["m1"], rc["m1"])
    if "trigger" in obs:
        # c = tau/|K| * (sum of the kept samples' input-gradient signs): a gradient component near zero that changes
        # sign moves one entry by 2 tau/|K|, so c is compared by its mean deviation, in units of tau
        trigger_tol = 1e-3 if tol <= SCORE_TOL["32-true"] else TRIGGER_TOL * obs["half_tol"]
        for i, (c, rc) in enumerate(zip(obs["trigger"], ref["trigger"], strict=True)):
            mean_dev = float((c - rc).abs().mean()) / obs["tau"]
            t.max_dev = max(t.max_dev, mean_dev)
            assert mean_dev <= trigger_tol, (f"step {i}: perturbation deviates from eager float32 by {mean_dev:.3g} "
                                             f"tau on average (allowed {trigger_tol})")
    for name, value in obs.get("close", {}).items():
        t.deviation(name, value, ref["close"][name], tol)
    return t


# ------------------------------------------------------------------------------------------------------ matrix
def _cells() -> list[Any]:
    cuda_precisions = ["32-true", "16-mixed", "bf16-mixed"]
    cells = []
    for device, precisions in (("cpu", ["32-true", "bf16-mixed"]), ("cuda", cuda_precisions)):
        for compiled in (False, True):
            for precision in precisions:
                for case in CASES:
                    marks = [pytest.mark.cuda] if device == "cuda" else []
                    if case == "simclr" and not HAS_LIGHTLY:
                        marks.append(pytest.mark.skip(reason="SimCLR needs lightly"))
                    mode = "compiled" if compiled else "eager"
                    cells.append(pytest.param(case, device, precision, compiled, marks=marks,
                                              id=f"{device}-{mode}-{precision}-{case}"))
    return cells


@pytest.fixture(scope="module")
def shared_compile_cache():
    """The compiled cells share TorchDynamo's caches (a module of the same code and shapes is not traced again:
    the CPU half of the file takes a third of the time). The recompilation limits are raised so that the many
    modules going through the same ``RobustMixin.training_step`` never reach them, and reaching one is an error
    instead of a silent fall-back to eager code."""
    import torch._dynamo

    torch._dynamo.reset()
    patch = {k: v for k, v in {"recompile_limit": 256, "cache_size_limit": 256, "accumulated_recompile_limit": 8192,
                               "accumulated_cache_size_limit": 8192, "fail_on_recompile_limit_hit": True}.items()
             if hasattr(torch._dynamo.config, k)}
    with torch._dynamo.config.patch(**patch):
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize(("case", "device", "precision", "compiled"), _cells())
def test_cell(case: str, device: str, precision: str, compiled: bool, tmp_path, one_torch_thread, shared_compile_cache,
              record_property, request) -> None:
    if case == "filter_prl_g" and compiled:
        # the filter cells share `Net`: TorchDynamo does not guard on module hooks, so a graph compiled by the
        # prl/spl cells would run without PRL(G)'s recording hooks (the error says to reset, as here)
        torch._dynamo.reset()
    # The first GPU run (H200, torch 2.11, inductor): 8 of the 14 compiled bf16-mixed cells gave exactly their 16-mixed
    # twin's deviation, 5 of them after the reset above; eager, the two precisions never agree. Cause unknown (not
    # TorchDynamo's in-memory cache, which that reset empties): `benchmarks/gpu_check.sh` runs each precision's
    # compiled cells in a process of its own with inductor's on-disk caches off, to tell.
    if (case, device, precision, compiled) == ("robust_realnvp", "cuda", "32-true", True):
        # measured once on an H200 (torch 2.11, inductor): 1.35e-4 of the scale at batch 3 against 1e-4 allowed; every
        # other compiled 32-true cell stayed under 4e-6. Not yet known whether that is inductor's reordering inside
        # the flow's log-determinants or a real drift: kept visible, not widened to pass
        request.applymarker(pytest.mark.xfail(reason="RealNVP compiled on CUDA deviated 1.35e-4 (> 1e-4) on an H200",
                                              strict=False))
    obs = fit_cell(case, device, precision, compiled, str(tmp_path))
    check_exact(obs, precision)
    if precision == "32-true" and not compiled:
        _REFERENCE.setdefault((case, device), obs)
        return
    tol = SCORE_TOL[precision] * (obs["half_tol"] if precision != "32-true" else 1.0)
    tally = check_against_reference(obs, reference(case, device, str(tmp_path / "reference")), tol)
    record_property("max_relative_deviation", f"{tally.max_dev:.3g}")
    record_property("selection_swaps", f"{tally.swaps} in {tally.compared} selections")
    print(f"{case} {device} {precision} {'compiled' if compiled else 'eager'}: max deviation {tally.max_dev:.3g} "
          f"of scale, {tally.swaps} near-cut swaps in {tally.compared} selections")
