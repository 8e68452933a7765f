"""Unsupervised anomaly detection with contaminated training data (thesis ch. 2–3).

* :class:`RealNVP` / :class:`RobustRealNVP` — density estimation with per-batch trimming of the
  lowest-density points and spectrally normalised couplings (thesis Alg. 2);
* :class:`RCA` — two autoencoders exchanging their lowest-error samples (thesis Alg. 1); :class:`AutoEncoder`;
* datamodules with contamination flags (two moons, one-class MNIST / FashionMNIST) and :func:`roc_auc`;
* :func:`anomaly_threshold` (``fit_threshold`` / ``predict_anomaly`` of every detector): yes/no for new samples.
"""

from lit_robust.anomaly.base import AnomalyDetector, anomaly_threshold, check_finite, roc_auc
from lit_robust.anomaly.data import (
    AnomalyDataModule,
    OneClassFashionMNISTDataModule,
    OneClassMNISTDataModule,
    TwoMoonsAnomalyDataModule,
    anomaly_count,
    pca_features,
    two_moons,
)
from lit_robust.anomaly.flows import AffineCoupling, RealNVP, RobustRealNVP
from lit_robust.anomaly.rca import (
    RCA,
    AutoEncoder,
    MLPAutoEncoder,
    rca_exchange_masks,
    rca_keep_ratio,
    reconstruction_error,
)

__all__ = [
    "AnomalyDetector",
    "anomaly_threshold",
    "roc_auc",
    "check_finite",
    "RealNVP",
    "RobustRealNVP",
    "AffineCoupling",
    "RCA",
    "AutoEncoder",
    "MLPAutoEncoder",
    "rca_exchange_masks",
    "rca_keep_ratio",
    "reconstruction_error",
    "AnomalyDataModule",
    "TwoMoonsAnomalyDataModule",
    "OneClassMNISTDataModule",
    "OneClassFashionMNISTDataModule",
    "anomaly_count",
    "two_moons",
    "pca_features",
]
