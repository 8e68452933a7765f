"""Find the bad samples in a data set: train under ITLM with `report=True`, open the per-sample report, look at
the most suspicious rows first, and measure how many of them really are mislabelled; then fix the data (relabel the
top rows) and train again.

    python examples/find_bad_samples.py            # about 30 s of CPU time
    python examples/find_bad_samples.py --fast     # a few seconds (used by the tests)
    python examples/find_bad_samples.py --report-dir reports   # keep the report (default: a new temporary folder)

The report is a CSV (`pandas.read_csv` opens it; `lit_robust.load_report` gives a DataFrame when pandas is
installed). Here it is read as a list of dicts so that the example needs nothing beyond lit_robust.
"""

import argparse
import tempfile

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lit_robust import ITLM, DigitsDataModule, IndexedDataset, RobustMixin, load_report


class MyClassifier(RobustMixin, pl.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):  # (losses, logits): the report's predicted label is the logits' argmax
        index, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


@torch.no_grad()
def accuracy(model: pl.LightningModule, data: DigitsDataModule) -> float:
    model.eval()
    hits = [(model(x).argmax(1) == y).float() for _, x, y in data.test_dataloader()]
    return float(torch.cat(hits).mean())


def main(fast: bool = False, report_dir: str | None = None) -> dict:
    rounds = [2, 1, 1] if fast else [4, 4, 4, 8]
    report_dir = report_dir or tempfile.mkdtemp(prefix="lit_robust_report_")
    pl.seed_everything(0)
    # scikit-learn's digits, 30% of the 1,300 training labels replaced at random (ground truth kept, metrics only)
    data = DigitsDataModule(clean_ratio=0.7, noise="random", batch_size=64)
    itlm = ITLM(keep_ratio=0.7, round_epochs=rounds, verbose=False, plot=False, report=True, report_dir=report_dir)
    trainer = pl.Trainer(max_epochs=sum(rounds), callbacks=[itlm], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(MyClassifier(), data)

    rows = load_report(itlm.report_path, as_frame=False)  # most suspicious first; pandas: load_report(path)
    last = f"score_round_{len(rounds) - 1}"
    print(f"report: {itlm.report_path} ({len(rows)} rows)")
    print(f"{'rank':>4} {'index':>5} {'score':>7} {'given':>5} {'predicted':>9} {'P(clean)':>8} {'mislabelled':>11}")
    for r in rows[:20]:
        print(f"{r['rank']:>4} {r['index']:>5} {r[last]:>7.3f} {r['given_label']:>5} {r['predicted_label']:>9} "
              f"{r['clean_posterior']:>8.3f} {str(r['corrupted']):>11}")

    # how many to look at: the clean posterior's estimate of the number of bad samples, sum of P(corrupted)
    estimated = round(sum(1.0 - r["clean_posterior"] for r in rows))
    truly_bad = sum(r["corrupted"] for r in rows)
    precision = {k: sum(r["corrupted"] for r in rows[:k]) / k for k in (20, 100, max(estimated, 1), truly_bad)}
    for k, p in precision.items():
        print(f"precision of the top {k}: {100 * p:.1f}% truly mislabelled")
    print(f"estimated bad samples: {estimated} (truly: {truly_bad} of {len(rows)})")

    # fix the data: relabel the top rows with the final model's prediction (to drop them instead, train on
    # IndexedDataset(Subset(data.train_set.dataset, keep), targets=data.train_set.targets[keep]), `keep` the rows
    # left; a Subset of data.train_set itself would keep the full set's indices)
    train = data.train_set                     # IndexedDataset: `.dataset` holds the inputs, `.targets` the labels
    fixed = train.targets.clone()
    for r in rows[:estimated]:
        fixed[r["index"]] = r["predicted_label"]
    true_labels = torch.stack([y for _, y in train.dataset])  # this example's data keeps them; yours will not
    label_accuracy = {"given": float((train.targets == true_labels).float().mean()),
                      "relabelled": float((fixed == true_labels).float().mean())}
    print(f"labels correct: {100 * label_accuracy['given']:.1f}% given, "
          f"{100 * label_accuracy['relabelled']:.1f}% after relabelling the top {estimated}")
    # ... and train again, plainly, on the fixed labels (or keep ITLM's final model: compare on the test split)
    relabelled = IndexedDataset(train.dataset, targets=fixed)
    pl.seed_everything(0)
    again = MyClassifier()
    pl.Trainer(max_epochs=sum(rounds), logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(again, DataLoader(relabelled, batch_size=64, shuffle=True))
    test = {"ITLM's final model": accuracy(trainer.lightning_module, data), "retrained on fixed labels": accuracy(again, data)}
    for name, acc in test.items():
        print(f"test accuracy, {name}: {100 * acc:.1f}%")
    return {"rows": rows, "precision": precision, "estimated": estimated, "truly_bad": truly_bad,
            "label_accuracy": label_accuracy, "test_accuracy": test}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--report-dir", default=None, help="folder for itlm_report.csv (default: a temporary one)")
    args = parser.parse_args()
    main(args.fast, args.report_dir)
