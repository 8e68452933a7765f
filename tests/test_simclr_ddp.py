"""SimCLR on two real gloo ranks (``ddp_cpu_strategy``: forked where safe): NT-Xent takes its negatives from the global batch."""

import pytest
import pytorch_lightning as pl
import torch
from lightly.loss import NTXentLoss
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import IndexedDataset, SimCLR
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
