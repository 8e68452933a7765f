"""SimCLR on two real gloo ranks (``ddp_cpu_strategy``: forked where safe): NT-Xent takes its negatives from the global batch."""

import pytest
import pytorch_lightning as pl
import torch
from lightly.loss import NTXentLoss
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import IndexedDataset, LinearProbe, SimCLR
from tests.conftest import ddp_cpu_strategy, fit_ranks


class SpySimCLR(SimCLR):
    def __init__(self, out: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.out, self.record = out, {}

    def contrastive_loss(self, v1, v2):
        z1, z2 = self.projection_head(self.backbone(torch.cat([v1, v2]))).chunk(2)
        loss = self.criterion(z1, z2)
        if not self.record:
            self.record = {"z1": z1.detach(), "z2": z2.detach(), "loss": loss.detach(),
                           "gather": self.criterion.gather_distributed}
        return loss

    def on_train_end(self) -> None:
        torch.save(self.record, f"{self.out}.{self.trainer.global_rank}")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_loss_uses_the_negatives_of_every_rank(tmp_path):
    out = str(tmp_path / "rank")
    n = 32

    def make():  # after seed_everything(0)
        data = IndexedDataset(TensorDataset(torch.randn(n, 1, 28, 28), torch.zeros(n, dtype=torch.long)))
        model = SpySimCLR(out, width=4, projection_dim=8)
        trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(), logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        return trainer, model, DataLoader(data, batch_size=8)

    fit_ranks(make)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1))
    assert r0["gather"] and r1["gather"]
    one_process = NTXentLoss(temperature=0.5)
    # with equal local batches, the ranks' mean loss is the one-process loss over the global batch ...
    global_loss = one_process(torch.cat([r0["z1"], r1["z1"]]), torch.cat([r0["z2"], r1["z2"]]))
    assert torch.allclose((r0["loss"] + r1["loss"]) / 2, global_loss, atol=1e-5)
    # ... and not what each rank would get from its own negatives only
    local = (one_process(r0["z1"], r0["z2"]) + one_process(r1["z1"], r1["z2"])) / 2
    assert not torch.allclose(local, global_loss, atol=1e-4)


class StatsProbe(LinearProbe):
    def __init__(self, out: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.out = out

    def on_train_start(self) -> None:
        super().on_train_start()
        torch.save((self.feature_mean.clone(), self.feature_std.clone()), f"{self.out}.{self.trainer.global_rank}")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("world", [2, 3])
def test_probe_feature_statistics_count_each_sample_once_on_any_number_of_ranks(tmp_path, world):
    """A reviewer's 5 samples on 2 ranks: the statistics read Lightning's padded DistributedSampler shards, which
    repeat a sample to even out the ranks, so the standardisation depended on the number of processes."""
    out = str(tmp_path / "rank")
    g = torch.Generator().manual_seed(0)
    # one image per scale, so that a sample counted twice moves the mean
    x = torch.rand(5, 1, 12, 12, generator=g) * torch.arange(1, 6).view(5, 1, 1, 1).float()
    y = torch.randint(0, 3, (5,), generator=g)

    def make():  # after seed_everything(0)
        probe = StatsProbe(out, width=2, num_classes=3)
        trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=world, strategy=ddp_cpu_strategy(), logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        return trainer, probe, DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=2)

    fit_ranks(make)
    pl.seed_everything(0, verbose=False)
    z = LinearProbe(width=2, num_classes=3).backbone.eval()(x).double()  # the same backbone, one process
    for r in range(world):
        mean, std = torch.load(f"{out}.{r}", weights_only=True)
        torch.testing.assert_close(mean, z.mean(0).float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(std, z.std(0).float().clamp(min=1e-6), rtol=1e-5, atol=1e-6)
