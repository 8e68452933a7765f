"""Lightning callbacks."""

from lit_robust.callbacks.activation_clustering import ActivationClustering
from lit_robust.callbacks.adversarial_trigger import AdversarialTrigger
from lit_robust.callbacks.backdoor_metrics import BackdoorMetrics
from lit_robust.callbacks.batch_filter import BatchFilter, FilterEpochRecord
from lit_robust.callbacks.itlm import ITLM, RoundRecord
from lit_robust.callbacks.prediction_writer import PredictionWriter
from lit_robust.callbacks.sample_grid import SampleGrid
from lit_robust.callbacks.spectral_norm import SpectralNorm

__all__ = ["ITLM", "RoundRecord", "BatchFilter", "FilterEpochRecord", "SampleGrid", "AdversarialTrigger",
           "BackdoorMetrics", "SpectralNorm", "ActivationClustering", "PredictionWriter"]
