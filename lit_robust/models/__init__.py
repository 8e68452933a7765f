"""Ready-made LightningModules that adopt :class:`~lit_robust.RobustMixin`, and reading their backbones back."""

from lit_robust.models.backbone_checkpoint import load_backbone
from lit_robust.models.coteaching import CoTeaching, CoTeachingEpochRecord
from lit_robust.models.gan import DCGAN
from lit_robust.models.linear_probe import LinearProbe
from lit_robust.models.simclr import SimCLR, random_views, simclr_backbone
from lit_robust.models.supervised import ImageClassifier, LinearRegressor, MLPClassifier, MLPRegressor

__all__ = [
    "ImageClassifier",
    "MLPClassifier",
    "LinearRegressor",
    "MLPRegressor",
    "CoTeaching",
    "CoTeachingEpochRecord",
    "DCGAN",
    "SimCLR",
    "simclr_backbone",
    "random_views",
    "LinearProbe",
    "load_backbone",
]
