"""Fine-tune a pretrained network under ITLM without losing the pretraining: `reinit="restore"`.

ITLM's default re-draws the model at random at each round start (the paper's protocol, for training from scratch).
For a pretrained network pass `reinit="restore"`: every round starts again from the weights the fit started with.
Frozen parameters (`requires_grad=False`) are never re-drawn.

    python examples/itlm_finetune_pretrained.py            # 15-30 s on 2 CPU cores
    python examples/itlm_finetune_pretrained.py --fast     # a few seconds (used by the tests)
"""

import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust import ITLM, DigitsDataModule, RobustMixin


class FineTuner(RobustMixin, pl.LightningModule):
    def __init__(self, backbone: nn.Module, lr: float = 0.02) -> None:
        super().__init__()
        self.backbone, self.head, self.lr = backbone, nn.Linear(64, 10), lr

    def forward(self, x):
        return self.head(self.backbone(x))

    def per_sample_loss(self, batch):
        index, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def test_step(self, batch, batch_idx):
        index, x, y = batch[:3]
        self.log("test_acc", (self(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def pretrained_backbone(epochs: int) -> nn.Module:
    """Stands in for your pretrained network (in practice: `backbone.load_state_dict(torch.load(...))`). Here it is
    trained on 500 clean digits the task below never sees: the validation split of a datamodule with the same seed
    and `train_size` holds the samples after the task's training samples."""
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU())
    clean = DigitsDataModule(clean_ratio=1.0, train_size=700, val_size=500, seed=0)
    clean.setup("fit")
    model = FineTuner(backbone, lr=0.05)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, torch.utils.data.DataLoader(clean.val_set, batch_size=64, shuffle=True))
    return backbone


def main(fast: bool = False) -> dict:
    rounds = [2, 2] if fast else [4, 4, 4]
    pl.seed_everything(0)
    weights = pretrained_backbone(epochs=3 if fast else 20).state_dict()
    accs = {}
    for reinit in ("restore", True):
        pl.seed_everything(0)
        backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU())
        backbone.load_state_dict(weights)
        model = FineTuner(backbone)
        # the task: 700 digits, 30 % of their labels flipped at random; the test split stays clean
        data = DigitsDataModule(clean_ratio=0.7, train_size=700, seed=0, batch_size=32)
        itlm = ITLM(keep_ratio=0.7, round_epochs=rounds, reinit=reinit, verbose=False, plot=False)
        trainer = pl.Trainer(max_epochs=sum(rounds), callbacks=[itlm], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, data)
        accs[reinit] = trainer.test(model, data, verbose=False)[0]["test_acc"]
    print(f"ITLM reinit='restore' (pretraining kept): test accuracy {accs['restore']:.3f}; "
          f"reinit=True (re-drawn at random each round): {accs[True]:.3f}")
    return {"restore": accs["restore"], "redrawn": accs[True]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="a few seconds instead of ~1 minute")
    main(parser.parse_args().fast)
