"""The device-sensitive paths on a CUDA device, against CPU references (issue 17). Every test here is marked
``cuda``: without a CUDA device they are skipped (``pytest -m cuda`` runs them where there is one)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import lit_robust as lr
from lit_robust.data.indexed import unpack_batch
from lit_robust.selection import radix
from lit_robust.selection.rules import batch_keep_count, keep_count, rank_order, smallest_k_mask, trim_mask
from lit_robust.selection.sharded import SimulatedCollectives, sharded_smallest_k_masks
from tests.conftest import REPO, TinyModel, blobs, glitched_energy_table

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")


@pytest.fixture
def exact_float32():
    """Full float32 matrix products and convolutions (no TF32) while a test compares numbers with a CPU reference."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def gpu_trainer(tmp_path, max_epochs: int = 1, callbacks=(), **kw: Any) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), default_root_dir=tmp_path, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, accelerator="gpu", devices=1, **kw)


def tied_scores(n: int, dtype: torch.dtype, seed: int) -> Tensor:
    """Scores with many exact ties, both zeros, and NaN/±inf."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(-20, 20, (n,), generator=g).to(dtype) / 4
    s[torch.randperm(n, generator=g)[: n // 10]] = float("nan")
    s[torch.randperm(n, generator=g)[: n // 20]] = float("inf")
    s[torch.randperm(n, generator=g)[: n // 20]] = -float("inf")
    s[torch.randperm(n, generator=g)[: n // 20]] = -0.0
    return s


# ------------------------------------------------------------------------------------------- pure selection
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(3))
def test_selection_on_cuda_equals_cpu(dtype, seed):
    n = 5000
    s = tied_scores(n, dtype, seed)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 10))
    sc, ic = s.to(CUDA), index.to(CUDA)
    assert torch.equal(rank_order(sc, ic).cpu(), rank_order(s, index))
    for k in (0, 1, n // 3, n - 1, n):
        assert torch.equal(smallest_k_mask(sc, k, ic).cpu(), smallest_k_mask(s, k, index))
    assert torch.equal(trim_mask(sc, 0.7, ic).cpu(), trim_mask(s, 0.7, index))
    assert torch.equal(radix.ordered_key(sc).cpu(), radix.ordered_key(s))
    assert torch.equal(lr.global_trim_mask(sc, ic, 0.7).cpu(), lr.global_trim_mask(s, index, 0.7))


@pytest.mark.parametrize("algorithm", ["gather", "histogram"])
def test_sharded_selection_on_cuda_equals_cpu(algorithm):
    n, world = 20000, 3
    s = tied_scores(n, torch.float32, 5)
    index = torch.randperm(n, generator=torch.Generator().manual_seed(6))
    cuts = [0, 7000, 7001, n]  # uneven shards, one of a single sample
    shards = [(s[a:b], index[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]

    def masks(device: str) -> list[Tensor]:
        out, _ = sharded_smallest_k_masks([x.to(device) for x, _ in shards], [i.to(device) for _, i in shards],
                                          lambda m: keep_count(m, 0.37), SimulatedCollectives(world),
                                          algorithm=algorithm, bits_per_pass=8)
        return [m.cpu() for m in out]

    want = smallest_k_mask(s, keep_count(n, 0.37), index)
    got = masks("cuda")
    assert torch.equal(torch.cat(got), want)
    assert all(torch.equal(a, b) for a, b in zip(got, masks("cpu")))


# ---------------------------------------------------------------------------------------------------- models
class ConvNet(lr.RobustMixin, pl.LightningModule):
    """Conv2d + GroupNorm + Linear on 8×8 digits: the PRL(G) layers (ghost norms and the torch.func fallback)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * 8 * 8, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def per_sample_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        b = unpack_batch(batch)
        logits = self(b.input)
        return F.cross_entropy(logits, b.target, reduction="none"), logits

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def digit_set(n: int = 128) -> lr.IndexedDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target[:n], dtype=torch.long)
    noisy, bad = lr.corrupt_labels(y, 0.7, "random", 10, seed=0)
    return lr.IndexedDataset(TensorDataset(x, y), targets=noisy, corrupted=bad)


def per_sample_grad_norms(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Slow reference: one backward per sample, in float64 on the CPU."""
    m = copy.deepcopy(model).double().cpu()
    out = []
    for i in range(x.shape[0]):
        m.zero_grad()
        F.cross_entropy(m(x[i:i + 1].double().cpu()), y[i:i + 1].cpu()).backward()
        out.append(torch.sqrt(sum((p.grad ** 2).sum() for p in m.parameters())))
    return torch.stack(out)


def cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class FirstBatch(pl.Callback):
    """Keeps the first training batch and the module's weights before its step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.batch = [t.detach().cpu() if isinstance(t, Tensor) else t for t in batch]
            self.state = cpu_state(pl_module)


class FirstScores(lr.BatchFilter):
    """Keeps the scores of the first batch ranked. Both PRL(G) backends rank through `_select`: the default one
    process backend ("bookkeeping") computes them inside the backward and never calls `scores` (this test's first
    run on a GPU found it spying on `scores`, which only "two_pass" calls)."""

    first: Tensor | None = None

    def _select(self, scores, index, eps):
        if self.first is None:
            self.first = scores.detach()
        return super()._select(scores, index, eps)


@pytest.mark.parametrize("backend", ["bookkeeping", "two_pass"])
def test_prl_g_scores_on_cuda_are_exact_per_sample_gradient_norms(tmp_path, exact_float32, backend):
    pl.seed_everything(0, verbose=False)
    filt, first = FirstScores("prl_g", drop_ratio=0.25, prl_g_backend=backend), FirstBatch()
    trainer = gpu_trainer(tmp_path, callbacks=[first, filt], max_steps=1)
    trainer.fit(ConvNet(), DataLoader(digit_set(), batch_size=32, shuffle=True))
    assert filt.first.device.type == "cuda"
    _, x, y = first.batch[:3]
    model = ConvNet()
    model.load_state_dict(first.state)
    want = per_sample_grad_norms(model.net, x, y)
    torch.testing.assert_close(filt.first.double().cpu(), want, rtol=1e-4, atol=1e-7)
    rec = filt.history[0]
    assert rec.seen == 32 and rec.dropped == 32 - batch_keep_count(32, 0.25)[0]


def test_batch_filter_counts_on_cuda(tmp_path):
    pl.seed_everything(0, verbose=False)
    filt = lr.BatchFilter("prl", drop_ratio=0.3)
    ds = digit_set(120)
    gpu_trainer(tmp_path, 2, [filt]).fit(ConvNet(), DataLoader(ds, batch_size=32, shuffle=True))
    per_epoch = sum(b - batch_keep_count(b, 0.3)[0] for b in (32, 32, 32, 24))
    assert [(r.seen, r.dropped) for r in filt.history] == [(120, per_epoch)] * 2
    assert all(r.corrupted_seen == int(ds.corrupted.sum()) for r in filt.history)


class SnapshotITLM(lr.ITLM):
    """Keeps each scoring pass's scores and a CPU copy of the weights that computed them."""

    def score_training_set(self, trainer, pl_module):
        index, scores, corrupted = super().score_training_set(trainer, pl_module)
        self.snapshot = (index.detach(), scores.detach(), cpu_state(pl_module))
        return index, scores, corrupted


def test_itlm_scoring_pass_on_cuda_matches_cpu(tmp_path, exact_float32):
    pl.seed_everything(0, verbose=False)
    ds = blobs(240)
    itlm = SnapshotITLM(keep_ratio=0.7, round_epochs=[2, 1], plot=False)
    loader = DataLoader(ds, batch_size=32, shuffle=True, pin_memory=True)
    trainer = gpu_trainer(tmp_path, 3, [itlm])
    trainer.fit(TinyModel(), loader)
    index, scores, state = itlm.snapshot
    assert scores.device.type == "cuda"
    model = TinyModel()
    model.load_state_dict(state)
    with torch.no_grad():
        model.eval()
        cpu = F.cross_entropy(model(ds.dataset.tensors[0]), ds.targets, reduction="none")
    dense = torch.empty(240)
    dense[index.cpu()] = scores.float().cpu()
    torch.testing.assert_close(dense, cpu, rtol=1e-5, atol=1e-6)
    want = torch.nonzero(trim_mask(cpu, 0.7)).flatten()
    got = itlm.selection.cpu()
    near = (cpu - cpu[want].max()).abs() <= 1e-5  # a swap is allowed only between float-equal scores
    assert got.numel() == want.numel() == keep_count(240, 0.7)
    assert set(got.tolist()) ^ set(want.tolist()) <= set(torch.nonzero(near).flatten().tolist())


def test_itlm_loaders_keep_pin_memory_on_cuda(tmp_path):
    pl.seed_everything(0, verbose=False)
    seen: list[torch.device] = []

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(unpack_batch(batch).input.device)

    itlm = lr.ITLM(keep_ratio=0.8, round_epochs=[1, 1], plot=False)
    loader = DataLoader(blobs(96), batch_size=32, shuffle=True, pin_memory=True)
    trainer = gpu_trainer(tmp_path, 2, [itlm, Probe()])
    trainer.fit(TinyModel(), loader)
    assert trainer.train_dataloader.pin_memory
    assert itlm._scoring_loader(trainer, trainer.lightning_module).pin_memory
    assert seen and all(d.type == "cuda" for d in seen)


def test_reinitialize_on_cuda_is_seeded_and_leaves_the_global_rng_alone():
    model = ConvNet().to(CUDA)
    state_cpu, state_cuda = torch.get_rng_state(), torch.cuda.get_rng_state()
    model.reinitialize(3)
    first = [p.detach().clone() for p in model.parameters()]
    model.reinitialize(3)
    assert all(torch.equal(a, b) for a, b in zip(first, model.parameters()))
    model.reinitialize(4)
    assert not all(torch.equal(a, b) for a, b in zip(first, model.parameters()))
    assert torch.equal(torch.get_rng_state(), state_cpu) and torch.equal(torch.cuda.get_rng_state(), state_cuda)
    assert all(p.device.type == "cuda" for p in model.parameters())


def test_random_views_on_cuda():
    x = torch.rand(6, 1, 28, 28, device=CUDA)
    same = lr.random_views(x, crop_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0), max_rotation=0.0, jitter=0.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    a = lr.random_views(x, generator=torch.Generator(CUDA).manual_seed(1))
    b = lr.random_views(x, generator=torch.Generator(CUDA).manual_seed(1))
    assert a.device.type == "cuda" and torch.equal(a, b)


def test_dcgan_noise_stream_is_the_same_on_cuda_and_cpu():
    """The DCGAN draws its latent noise from a CPU generator that checkpoints carry, then moves it: the same
    stream whatever the device, so a run resumed on another device draws the same noise."""
    on_gpu, on_cpu = lr.DCGAN(latent_dim=8, g_width=4, d_width=4).to(CUDA), lr.DCGAN(latent_dim=8, g_width=4, d_width=4)
    z = on_gpu.sample_noise(5)
    assert z.device.type == "cuda"
    assert torch.equal(z.cpu(), on_cpu.sample_noise(5))


def test_overhead_benchmark_runs_on_cuda(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "overhead_cuda.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "overhead.py"), "--device", "cuda", "--smoke", "--synthetic",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device"].startswith("cuda")
    assert out.exists()


# ------------------------------------------------------------------------- unknown corruption rate (issue 15)
def cpu_trainer(tmp_path, max_epochs: int, callbacks=()) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), default_root_dir=tmp_path, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, accelerator="cpu", devices=1)


def itlm_auto_fit(trainer_for, tmp_path, **trainer_kw: Any) -> tuple[lr.ITLM, Any]:
    pl.seed_everything(0, verbose=False)
    ds = blobs(300)
    itlm = lr.ITLM(keep_ratio="auto", round_epochs=[3, 2, 2], plot=False, report=True, report_dir=str(tmp_path))
    loader = DataLoader(ds, batch_size=30, shuffle=True)
    trainer_for(tmp_path, 7, [itlm], **trainer_kw).fit(TinyModel(), loader)
    return itlm, lr.load_report(itlm.report_path, as_frame=True)


@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_itlm_auto_and_its_report_on_cuda_match_a_cpu_fit(tmp_path, exact_float32, precision):
    """`keep_ratio="auto"` estimates from scores (and predicted labels) that live on the GPU: the estimates, the
    selection sizes and the per-sample report agree with the same seed's fit on the CPU."""
    gpu, gpu_rows = itlm_auto_fit(gpu_trainer, tmp_path / "gpu", precision=precision)
    cpu, cpu_rows = itlm_auto_fit(cpu_trainer, tmp_path / "cpu")
    est = [r.estimated_corruption for r in gpu.history[1:]]
    want = [r.estimated_corruption for r in cpu.history[1:]]
    assert all(e is not None and 0.0 <= e < 0.5 for e in est), est
    tol = 0.01 if precision == "32-true" else 0.04  # a sample or three may cross the cut under autocast
    assert all(abs(a - b) <= tol for a, b in zip(est, want)), (est, want)
    assert all(abs(a.kept - b.kept) <= tol * 300 for a, b in zip(gpu.history, cpu.history))
    true_rate = float(blobs(300).corrupted.float().mean())
    assert abs(est[-1] - true_rate) <= 0.06, (est[-1], true_rate)
    assert len(gpu_rows) == len(cpu_rows) == 300 and gpu_rows["index"].is_unique
    assert set(gpu_rows["index"]) == set(range(300))
    assert int(gpu_rows["kept"].sum()) == gpu.history[-1].kept
    post = gpu_rows["clean_posterior"]
    assert post.notna().all() and ((post >= 0) & (post <= 1)).all()
    # most suspicious first: the top rows are mostly the truly corrupted ones, as on the CPU
    top = int(true_rate * 300)
    assert gpu_rows["corrupted"][:top].mean() >= cpu_rows["corrupted"][:top].mean() - 0.05


def test_batch_filter_auto_on_cuda_matches_a_cpu_fit(tmp_path, exact_float32):
    def fit(trainer_for, folder):
        pl.seed_everything(0, verbose=False)
        filt = lr.BatchFilter("prl", drop_ratio="auto", warmup_epochs=4)
        trainer_for(folder, 6, [filt]).fit(ConvNet(), DataLoader(digit_set(480), batch_size=16, shuffle=True))
        return filt

    gpu, cpu = fit(gpu_trainer, tmp_path / "gpu"), fit(cpu_trainer, tmp_path / "cpu")
    assert gpu.estimated_corruption is not None and cpu.estimated_corruption is not None
    assert abs(gpu.estimated_corruption - cpu.estimated_corruption) <= 0.02, (gpu.estimated_corruption,
                                                                              cpu.estimated_corruption)
    assert abs(gpu.estimated_corruption - 0.3) <= 0.05  # 30 % of the labels were flipped
    assert [r.seen for r in gpu.history] == [480] * 6
    assert abs(gpu.history[-1].dropped - cpu.history[-1].dropped) <= 10


@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_glitched_readings_are_dropped_by_itlm_auto_on_cuda(tmp_path, precision):
    """The energy table's 9999 readings (squared errors near 1e8, past float16's largest number) under autocast: ITLM
    `"auto"` on the GPU counts exactly them as corrupted and drops them, as on the CPU
    (tests/test_squared_error_restart.py), where an overflow to inf or a lost far-out fence would change the count."""
    pytest.importorskip("pandas")
    train, test, glitched_share = glitched_energy_table(seed=0)
    pl.seed_everything(0, verbose=False)
    data = lr.TableDataModule(frame=train, target="kwh", task="regression", corrupted="is_bad", test_frame=test, seed=0)
    itlm = lr.ITLM(keep_ratio="auto", round_epochs=[10, 1], seed=0, verbose=False, plot=True)  # keeps the scores
    gpu_trainer(tmp_path, 11, [itlm], precision=precision).fit(lr.MLPRegressor(), data)
    assert itlm.history[1].estimated_corruption == pytest.approx(glitched_share, abs=1e-9)
    scores, kept = itlm.score_history[0]["scores"], itlm.score_history[0]["kept"]
    assert torch.isfinite(scores).all()
    glitched = scores > 1e6
    assert int(glitched.sum()) == round(glitched_share * len(train)) and not kept[glitched].any()
