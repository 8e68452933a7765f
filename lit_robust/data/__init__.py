"""Indexed datasets, corruption generators and LightningDataModules."""

from lit_robust.data.corruption import NoiseKind, corrupt_labels
from lit_robust.data.datamodules import (
    CorruptedClassificationDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SyntheticRegressionDataModule,
)
from lit_robust.data.indexed import IndexedBatch, IndexedDataset, unpack_batch
from lit_robust.data.mixture import MixedImagesDataModule

__all__ = [
    "IndexedDataset",
    "IndexedBatch",
    "unpack_batch",
    "corrupt_labels",
    "NoiseKind",
    "CorruptedClassificationDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "DigitsDataModule",
    "SyntheticRegressionDataModule",
    "MixedImagesDataModule",
]
