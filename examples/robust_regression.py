"""Robust regression with corrupted targets: your own regressor, PRL(L) (= SPL for MSE) in one callback.

30% of the training targets follow a wrong linear function of the inputs (``linadv``, prl_paper §6);
inside every batch the samples with the largest ||y_hat - y|| are left out of the loss.

    python examples/robust_regression.py                         # ~30 s on 2 CPU cores: PRL(L), then the baseline
    python examples/robust_regression.py --corruption signflip   # or uninoise, pairflip, mixture
    python examples/robust_regression.py --fast                  # a few seconds (used by the tests)
"""

import argparse

import pytorch_lightning as pl
import torch
from torch import nn

from lit_robust import BatchFilter, RobustMixin, SyntheticLinearDataModule


class MyRegressor(RobustMixin, pl.LightningModule):
    def __init__(self, dim: int = 20, q: int = 4, lr: float = 3e-3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 64), nn.LeakyReLU(), nn.Linear(64, q))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):  # mean squared error per sample, and the predictions PRL(L) scores
        index, x, y = batch[:3]
        pred = self(x)
        return ((pred - y) ** 2).mean(1), pred

    def test_step(self, batch, batch_idx):
        index, x, y = batch[:3]
        pred = self(x)
        r2 = 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
        self.log("test_r2", r2.mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def run(callbacks: list, epochs: int, corruption: str) -> float:
    pl.seed_everything(0, verbose=False)
    data = SyntheticLinearDataModule(n=2000, dim=20, q=4, corruption=corruption, corrupt_ratio=0.3, batch_size=100,
                                     eval_batch_size=1000)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    model = MyRegressor()
    trainer.fit(model, data)
    return trainer.test(model, data, verbose=False)[0]["test_r2"]


def main(fast: bool = False, corruption: str = "linadv") -> dict:
    epochs = 3 if fast else 30
    prl = BatchFilter("prl", drop_ratio=0.3, warmup_epochs=1 if fast else 5)  # loss "mse" inferred from float targets
    r2 = run([prl], epochs, corruption)
    last = prl.history[-1]
    print(f"PRL(L) test R² {r2:.3f} under 30% {corruption}; {100 * last.dropped_corrupted_frac:.0f}% of the last "
          f"epoch's dropped samples were corrupted")
    out = {"test_r2": r2, "history": prl.history}
    if not fast:
        out["baseline_r2"] = base = run([], epochs, corruption)
        print(f"baseline (plain MSE) test R² {base:.3f}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--corruption", choices=["linadv", "signflip", "uninoise", "pairflip", "mixture"],
                        default="linadv")
    args = parser.parse_args()
    main(args.fast, args.corruption)
