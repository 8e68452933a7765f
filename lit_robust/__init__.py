"""lit_robust: make any LightningModule robust to corrupted training data.

Public API::

    from lit_robust import ITLM, BatchFilter, RobustMixin, IndexedDataset
"""

from lit_robust.anomaly import (
    RCA,
    AutoEncoder,
    OneClassFashionMNISTDataModule,
    OneClassMNISTDataModule,
    RealNVP,
    RobustRealNVP,
    TwoMoonsAnomalyDataModule,
    roc_auc,
)
from lit_robust.backbone_checkpoint import load_backbone
from lit_robust.callbacks import (
    ITLM,
    AdversarialTrigger,
    BackdoorMetrics,
    BatchFilter,
    FilterEpochRecord,
    RoundRecord,
    SampleGrid,
)
from lit_robust.coteaching import CoTeaching, CoTeachingEpochRecord
from lit_robust.data import (
    BackdoorFashionMNISTDataModule,
    BackdoorMNISTDataModule,
    CorruptedRegressionDataModule,
    DataSpec,
    DiabetesDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    IndexedBatch,
    IndexedDataset,
    MixedImagesDataModule,
    MNISTDataModule,
    MNISTLandmarksDataModule,
    SemiSupervisedBackdoorMNISTDataModule,
    SyntheticLinearDataModule,
    SyntheticRegressionDataModule,
    corrupt_labels,
    corrupt_targets,
    unpack_batch,
)
from lit_robust.distributed import global_batch_keep_mask, global_smallest_k_mask, global_trim_mask
from lit_robust.estimation import (
    CorruptionEstimate,
    estimate_corruption,
    estimate_corruption_from_predictions,
    estimate_corruption_from_probs,
)
from lit_robust.gan import DCGAN
from lit_robust.linear_probe import LinearProbe
from lit_robust.losses import bootstrap_loss
from lit_robust.mixin import BatchSelector, RobustMixin
from lit_robust.models import ImageClassifier, LinearRegressor, MLPRegressor
from lit_robust.report import load_report
from lit_robust.samplers import SelectionSampler, ShardedSampler
from lit_robust.selection import keep_count, rank_order, smallest_k_mask, trim_mask
from lit_robust.simclr import SimCLR, random_views, simclr_backbone
from lit_robust.spectral import SpectralNorm, apply_spectral_norm, remove_spectral_norm, truncate_spectral_norm

__version__ = "0.1.0.dev0"

__all__ = [
    "ITLM",
    "RoundRecord",
    "BatchFilter",
    "FilterEpochRecord",
    "CoTeaching",
    "CoTeachingEpochRecord",
    "RobustMixin",
    "BatchSelector",
    "IndexedDataset",
    "DataSpec",
    "IndexedBatch",
    "unpack_batch",
    "corrupt_labels",
    "corrupt_targets",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "DigitsDataModule",
    "SyntheticRegressionDataModule",
    "CorruptedRegressionDataModule",
    "MNISTLandmarksDataModule",
    "DiabetesDataModule",
    "SyntheticLinearDataModule",
    "MixedImagesDataModule",
    "ImageClassifier",
    "DCGAN",
    "SampleGrid",
    "LinearRegressor",
    "MLPRegressor",
    "bootstrap_loss",
    "keep_count",
    "rank_order",
    "smallest_k_mask",
    "trim_mask",
    "global_smallest_k_mask",
    "global_trim_mask",
    "global_batch_keep_mask",
    "SelectionSampler",
    "ShardedSampler",
    "SpectralNorm",
    "apply_spectral_norm",
    "remove_spectral_norm",
    "truncate_spectral_norm",
    "RealNVP",
    "RobustRealNVP",
    "RCA",
    "AutoEncoder",
    "TwoMoonsAnomalyDataModule",
    "OneClassMNISTDataModule",
    "OneClassFashionMNISTDataModule",
    "roc_auc",
    "AdversarialTrigger",
    "BackdoorMetrics",
    "BackdoorMNISTDataModule",
    "BackdoorFashionMNISTDataModule",
    "SimCLR",
    "LinearProbe",
    "simclr_backbone",
    "random_views",
    "load_backbone",
    "SemiSupervisedBackdoorMNISTDataModule",
    "CorruptionEstimate",
    "estimate_corruption",
    "estimate_corruption_from_predictions",
    "load_report",
    "estimate_corruption_from_probs",
]
