"""Which Lightning lit_robust is built on: ``pytorch_lightning`` or the unified ``lightning`` package's
``lightning.pytorch`` (the same code under two names, whose classes are not interchangeable: a
``lightning.Trainer`` refuses a ``pytorch_lightning.LightningModule``).

Chosen once, when lit_robust is first imported:

1. the environment variable ``LIT_ROBUST_LIGHTNING`` (``pytorch_lightning`` or ``lightning``), when set;
2. else ``lightning`` when the process has imported ``lightning`` and not ``pytorch_lightning`` (a script that
   starts with ``import lightning as L``);
3. else ``pytorch_lightning`` (lit_robust's dependency), or ``lightning`` when only that one is installed.

Every module of lit_robust imports Lightning from here (``from lit_robust._backend import pl``), never by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

__all__ = ["ENV_VAR", "LIGHTNING", "PACKAGES", "pl", "choose_backend", "foreign_lightning", "mismatch_advice",
           "import_submodule"]

ENV_VAR = "LIT_ROBUST_LIGHTNING"
PACKAGES = {"pytorch_lightning": "pytorch_lightning", "lightning": "lightning.pytorch"}


def choose_backend(environ: dict[str, str], imported: set[str] | dict, installed: set[str]) -> str:
    """The backend's name (a key of :data:`PACKAGES`) by the rules of the module docstring, pure.

    >>> choose_backend({}, {"lightning"}, {"lightning", "pytorch_lightning"})
    'lightning'
    >>> choose_backend({}, set(), {"lightning", "pytorch_lightning"})
    'pytorch_lightning'
    >>> choose_backend({"LIT_ROBUST_LIGHTNING": "lightning"}, set(), {"lightning", "pytorch_lightning"})
    'lightning'
    """
    wanted = environ.get(ENV_VAR, "").strip()
    if wanted:
        if wanted not in PACKAGES:
            raise ImportError(f"the environment variable {ENV_VAR} must be one of {sorted(PACKAGES)} (the Lightning "
                              f"package lit_robust builds on), got {wanted!r}.")
        if wanted not in installed:
            raise ImportError(f"{ENV_VAR}={wanted!r}, but {wanted!r} is not installed: `pip install {wanted}` or "
                              f"unset {ENV_VAR}.")
        return wanted
    if "lightning" in imported and "pytorch_lightning" not in imported and "lightning" in installed:
        return "lightning"
    if "pytorch_lightning" in installed:
        return "pytorch_lightning"
    if "lightning" in installed:
        return "lightning"
    raise ImportError("lit_robust needs Lightning: `pip install pytorch-lightning` (or the unified `lightning`).")


LIGHTNING = choose_backend(dict(os.environ), set(sys.modules),
                           {name for name in PACKAGES if importlib.util.find_spec(name) is not None})
#: ``pytorch_lightning``, or ``lightning.pytorch``: use as ``pl.Trainer``, ``pl.callbacks.Callback``, ...
pl: ModuleType = importlib.import_module(PACKAGES[LIGHTNING])


def import_submodule(name: str) -> ModuleType:
    """``pl``'s submodule ``name`` (e.g. ``"cli"``: ``pytorch_lightning.cli`` or ``lightning.pytorch.cli``)."""
    return importlib.import_module(f"{PACKAGES[LIGHTNING]}.{name}")


# what lit_robust uses by name, from the chosen package
Callback = pl.callbacks.Callback
BasePredictionWriter = pl.callbacks.BasePredictionWriter
ModelCheckpoint = pl.callbacks.ModelCheckpoint
ProgressBar = pl.callbacks.ProgressBar
RichProgressBar = pl.callbacks.RichProgressBar
TrainerFn = import_submodule("trainer.states").TrainerFn
MisconfigurationException = import_submodule("utilities.exceptions").MisconfigurationException
is_overridden = import_submodule("utilities.model_helpers").is_overridden
_rank_zero = import_submodule("utilities.rank_zero")
rank_zero_info, rank_zero_only, rank_zero_warn = _rank_zero.rank_zero_info, _rank_zero.rank_zero_only, _rank_zero.rank_zero_warn


def foreign_lightning(obj: object) -> str | None:
    """The other Lightning package's name when ``obj`` (a trainer, a module, or such a class) is built on it, else
    ``None``: a class whose bases include one of the other package's classes.

    >>> foreign_lightning(pl.Trainer) is None
    True
    """
    other = "lightning" if LIGHTNING == "pytorch_lightning" else "pytorch_lightning"
    cls = obj if isinstance(obj, type) else type(obj)
    return other if any(c.__module__.split(".")[0] == other for c in cls.__mro__) else None


def mismatch_advice(obj: object, what: str) -> str | None:
    """One sentence for a ``what`` (e.g. ``"the Trainer"``) from the other Lightning package, else ``None``."""
    other = foreign_lightning(obj)
    if other is None:
        return None
    return (f"{what} is `{other}`'s, but lit_robust was imported on `{PACKAGES[LIGHTNING]}` in this process: "
            f"`{other}`'s and `{LIGHTNING}`'s classes do not mix (Lightning refuses a module or datamodule of the "
            f"other). Import `{other}` before lit_robust, or set {ENV_VAR}={other} in the environment (for the "
            f"CLI: `{ENV_VAR}={other} lit-robust fit ...`).")
