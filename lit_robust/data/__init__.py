"""Indexed datasets, corruption generators and LightningDataModules."""

from lit_robust.data.backdoor import ATTACKS, BackdoorFashionMNISTDataModule, BackdoorMNISTDataModule
from lit_robust.data.corruption import TARGET_CORRUPTIONS, NoiseKind, TargetCorruption, corrupt_labels, corrupt_targets
from lit_robust.data.datamodules import (
    CorruptedClassificationDataModule,
    CorruptedRegressionDataModule,
    DiabetesDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    MNISTLandmarksDataModule,
    SyntheticLinearDataModule,
    SyntheticRegressionDataModule,
    ink_landmarks,
)
from lit_robust.data.image_folder import ImageFolderDataModule
from lit_robust.data.indexed import IndexedBatch, IndexedCollate, IndexedDataset, unpack_batch, unpack_eval_batch
from lit_robust.data.mixture import MixedImagesDataModule
from lit_robust.data.semi_supervised import MNIST_VALUE_RANGE, SemiSupervisedBackdoorMNISTDataModule
from lit_robust.data.spec import DataSpec
from lit_robust.data.table import TableDataModule, robust_scale

__all__ = [
    "IndexedDataset",
    "IndexedCollate",
    "IndexedBatch",
    "unpack_batch",
    "unpack_eval_batch",
    "corrupt_labels",
    "corrupt_targets",
    "NoiseKind",
    "TargetCorruption",
    "TARGET_CORRUPTIONS",
    "CorruptedClassificationDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "DigitsDataModule",
    "SyntheticRegressionDataModule",
    "CorruptedRegressionDataModule",
    "MNISTLandmarksDataModule",
    "DiabetesDataModule",
    "SyntheticLinearDataModule",
    "ink_landmarks",
    "MixedImagesDataModule",
    "TableDataModule",
    "ImageFolderDataModule",
    "robust_scale",
    "BackdoorMNISTDataModule",
    "BackdoorFashionMNISTDataModule",
    "ATTACKS",
    "SemiSupervisedBackdoorMNISTDataModule",
    "MNIST_VALUE_RANGE",
    "DataSpec",
]
