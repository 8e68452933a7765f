"""Lightning callbacks."""

from lit_robust.callbacks.itlm import ITLM, RoundRecord

__all__ = ["ITLM", "RoundRecord"]
