"""The maths of every rule as tensor functions, without Lightning: robust losses, per-batch scores, spectral
normalisation, backdoor triggers and the corrupted-fraction estimators.

Import the functions from their modules (``lit_robust.functional.scores``, ``.spectral``, ``.backdoor``,
``.losses``, ``.estimation``, ``.clustering``); the names below are also re-exported from :mod:`lit_robust`.
"""

from lit_robust.functional.clustering import ActivationClusters, activation_clusters
from lit_robust.functional.estimation import (
    CorruptionEstimate,
    estimate_corruption,
    estimate_corruption_from_class_floor,
    estimate_corruption_from_interior,
    estimate_corruption_from_predictions,
    estimate_corruption_from_probs,
    estimate_corruption_from_spread,
)
from lit_robust.functional.losses import bootstrap_loss
from lit_robust.functional.spectral import apply_spectral_norm, remove_spectral_norm, truncate_spectral_norm

__all__ = [
    "bootstrap_loss",
    "apply_spectral_norm",
    "remove_spectral_norm",
    "truncate_spectral_norm",
    "CorruptionEstimate",
    "estimate_corruption",
    "estimate_corruption_from_class_floor",
    "estimate_corruption_from_interior",
    "estimate_corruption_from_predictions",
    "estimate_corruption_from_probs",
    "estimate_corruption_from_spread",
    "ActivationClusters",
    "activation_clusters",
]
