"""ITLM on your own LightningModule: adopt RobustMixin, return per-sample losses, add the callback.

    python examples/itlm_noisy_labels.py            # ~1 minute on 2 CPU cores
    python examples/itlm_noisy_labels.py --fast     # a few seconds (used by the tests)
"""

import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

import lit_robust
from lit_robust import ITLM, DigitsDataModule, RobustMixin


class MyClassifier(RobustMixin, pl.LightningModule):  # 1. adopt the mixin
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):  # 2. one loss per sample; batches are (index, x, y[, is_corrupted])
        index, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    # training_step comes from RobustMixin: reduce_loss(per_sample_loss(batch)), logged as train_loss

    def test_step(self, batch, batch_idx):
        index, x, y = batch[:3]
        self.log("test_acc", (self(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main(fast: bool = False) -> dict:
    rounds = [1, 1, 2] if fast else [2, 2, 2, 2, 2, 20]
    pl.seed_everything(0)
    # digits with 40% of the labels flipped systematically (class a -> a+1); the test split stays clean
    data = DigitsDataModule(clean_ratio=0.6, noise="systematic", batch_size=64)
    # 3. keep the 55% smallest losses each round, of every class: the flips here all go to the next digit, and one
    # trim over all classes would empty some (it kept 0 of the 133 samples labelled 2, test accuracy 0.732)
    itlm = ITLM(keep_ratio=0.55, round_epochs=rounds, per_class=True)
    trainer = pl.Trainer(max_epochs=sum(rounds), callbacks=[itlm], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False)
    model = MyClassifier()
    trainer.fit(model, data)
    acc = trainer.test(model, data, verbose=False)[0]["test_acc"]
    print(f"lit_robust {lit_robust.__version__}: test accuracy {acc:.3f}, "
          f"last selection {100 * itlm.history[-1].clean_precision:.1f}% clean")
    return {"test_acc": acc, "history": itlm.history}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    main(parser.parse_args().fast)
