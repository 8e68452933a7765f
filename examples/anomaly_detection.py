"""Unsupervised anomaly detection when the training data already contain anomalies.

Two moons with 5% *clustered* anomalies mixed into the training set (thesis §3.5.1). A plain Real NVP
learns the anomaly cluster as part of the density; RobustRealNVP trims the 5% lowest-density points of every
batch and keeps its coupling networks k-Lipschitz; RCA trains two autoencoders on each other's
lowest-error samples. Each model scores a held-out test split (higher = more anomalous): ROC-AUC. Then a yes/no
decision per test point: RobustRealNVP's threshold is set on its training scores at its 5 % contamination.

    python examples/anomaly_detection.py          # ~2 minutes on 2 CPU cores
    python examples/anomaly_detection.py --fast   # a few seconds (used by the tests)
"""

import argparse

import pytorch_lightning as pl

from lit_robust import RCA, RealNVP, RobustRealNVP, TwoMoonsAnomalyDataModule


def fit_and_test(model: pl.LightningModule, epochs: int, data: TwoMoonsAnomalyDataModule) -> float:
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, data)
    return trainer.test(model, data, verbose=False)[0]["test_auroc"]  # ROC-AUC, anomalies vs normal points


def main(fast: bool = False) -> dict:
    epochs, n = (3, 600) if fast else (60, 2000)
    pl.seed_everything(0, verbose=False)
    robust = RobustRealNVP(dim=2, drop_ratio=0.05, k=1.0)  # = RealNVP(..., drop_ratio=0.05, spectral_norm=True)
    data = TwoMoonsAnomalyDataModule(n_train=n, contamination=0.05, anomalies="clustered", seed=0)
    aucs = {
        "RealNVP": fit_and_test(RealNVP(dim=2), epochs, data),
        "RobustRealNVP": fit_and_test(robust, epochs, data),
        "RCA": fit_and_test(RCA(dim=2, hidden=64, latent=1, drop_ratio=0.05, warmup_epochs=epochs // 10), epochs, data),
    }
    trimmed = robust.batch_filter.history[-1]  # what RobustRealNVP dropped in its last epoch
    print(", ".join(f"{name} ROC-AUC {auc:.3f}" for name, auc in aucs.items()))
    print(f"RobustRealNVP's trimmed points in the last epoch: {100 * trimmed.dropped_corrupted_frac:.0f}% anomalies "
          f"(the training set holds {100 * trimmed.corrupted_frac:.0f}%)")
    # yes/no for new points: the threshold is the training scores' top 5 % (drop_ratio), not each batch's own
    threshold = robust.fit_threshold(data.train_dataloader())
    flagged = robust.predict_anomaly(data.x_test)
    hits = int((flagged & data.test_is_anomaly).sum())
    print(f"RobustRealNVP, threshold {threshold:.2f} on -log p: {int(flagged.sum())} of {len(flagged)} test points "
          f"flagged, {hits} of the {int(data.test_is_anomaly.sum())} anomalies among them")
    return {"auc": aucs, "trimmed": trimmed, "flagged": flagged, "is_anomaly": data.test_is_anomaly}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    main(parser.parse_args().fast)
