"""Which Lightning lit_robust is built on: ``pytorch_lightning`` or the unified ``lightning`` package's
``lightning.pytorch`` (the same code under two names, whose classes are not interchangeable: a
``lightning.Trainer`` refuses a ``pytorch_lightning.LightningModule``).

Chosen once, when lit_robust is first imported:

1. the environment variable ``LIT_ROBUST_LIGHTNING`` (``pytorch_lightning`` or ``lightning``), when set;
2. else whichever of ``lightning`` and ``pytorch_lightning`` the process imported first (a script that starts
   with ``import lightning as L`` gets ``lightning``, even when it imports something of ``pytorch_lightning`` next);
3. else ``pytorch_lightning`` (lit_robust's dependency), or ``lightning`` when only that one is installed.

Every module of lit_robust imports Lightning from here (``from lit_robust._backend import pl``), never by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["ENV_VAR", "LIGHTNING", "PACKAGES", "pl", "choose_backend", "foreign_lightning", "mismatch_advice",
           "warn_if_mixed_lightning", "import_submodule"]

ENV_VAR = "LIT_ROBUST_LIGHTNING"
PACKAGES = {"pytorch_lightning": "pytorch_lightning", "lightning": "lightning.pytorch"}


def choose_backend(environ: dict[str, str], imported: Sequence[str], installed: set[str]) -> str:
    """The backend's name (a key of :data:`PACKAGES`) by the rules of the module docstring, pure; ``imported``:
    the names of the imported modules in the order they were imported (``list(sys.modules)``).

    >>> choose_backend({}, ["torch", "lightning", "pytorch_lightning"], {"lightning", "pytorch_lightning"})
    'lightning'
    >>> choose_backend({}, [], {"lightning", "pytorch_lightning"})
    'pytorch_lightning'
    >>> choose_backend({"LIT_ROBUST_LIGHTNING": "lightning"}, [], {"lightning", "pytorch_lightning"})
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
    first = next((name for name in imported if name in PACKAGES), None)
    if first is not None and first in installed:
        return first
    if "pytorch_lightning" in installed:
        return "pytorch_lightning"
    if "lightning" in installed:
        return "lightning"
    raise ImportError("lit_robust needs Lightning: `pip install pytorch-lightning` (or the unified `lightning`).")


def _running_the_cli() -> bool:
    """The console script, or ``python -m lit_robust`` (while the package imports, ``sys.argv[0]`` is still
    ``"-m"`` there: a CLI newcomer's mistyped variable got a traceback): ``sys.orig_argv`` names the module."""
    if sys.argv and os.path.basename(sys.argv[0]) in ("lit-robust", "lit-robust.exe"):
        return True
    argv = list(getattr(sys, "orig_argv", []))
    return any(a == "-m" and b in ("lit_robust", "lit_robust.__main__", "lit_robust.cli") for a, b in zip(argv, argv[1:]))


try:
    LIGHTNING = choose_backend(dict(os.environ), list(sys.modules),
                               {name for name in PACKAGES if importlib.util.find_spec(name) is not None})
except ImportError as err:
    if not _running_the_cli():
        raise
    # the CLI's contract for a user's mistake: one line, exit status 2 (the console script imports lit_robust
    # before its `main` can catch anything)
    print(f"lit-robust: error: {err}", file=sys.stderr)
    raise SystemExit(2) from None
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
TQDMProgressBar = pl.callbacks.TQDMProgressBar
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


def mismatch_advice(obj: object, what: str, cli: bool = False) -> str | None:
    """One sentence for a ``what`` (e.g. ``"the Trainer"``) from the other Lightning package, else ``None``;
    ``cli``: the advice for a config of ``lit-robust``."""
    other = foreign_lightning(obj)
    if other is None:
        return None
    head = (f"{what} is `{other}`'s, but lit_robust was imported on `{PACKAGES[LIGHTNING]}` in this process: "
            f"`{other}`'s and `{LIGHTNING}`'s classes do not mix")
    if cli:
        return (f"{head}. Run `{ENV_VAR}={other} lit-robust ...` for classes of your own built on `{other}`; for "
                f"Lightning's own, a short `class_path` (e.g. `ModelCheckpoint`) names the package in use.")
    return (f"{head} (Lightning refuses a module or datamodule of the other, and takes a callback of the other for "
            f"a plain one). Import `{other}` before lit_robust and `{LIGHTNING}`, or set {ENV_VAR}={other} in "
            "the environment.")


def warn_if_mixed_lightning(trainer: object) -> None:
    """Warn (rank 0) when a fit mixes the two packages: the Trainer, or one of its callbacks (a ``ModelCheckpoint``
    of the other package is not Lightning's checkpoint callback: it adds its own, and ``ckpt_path="best"`` then means
    that one's), comes from the package lit_robust was not imported on."""
    advice = mismatch_advice(trainer, "the Trainer")
    if advice is not None:
        rank_zero_warn(advice)
        return
    for cb in getattr(trainer, "callbacks", None) or []:
        other = foreign_lightning(cb)
        if other is not None:
            # the Trainer is of lit_robust's package: the callback is the stray one (a newcomer told to import the
            # other package first broke a script whose every other class was `lightning`'s)
            ours, name = PACKAGES[LIGHTNING], type(cb).__name__
            # Lightning's own callback: import it from the other package; the user's own: its base class (a release
            # checker's `Stray` was told `from lightning.pytorch.callbacks import Stray`, which does not exist)
            own = type(cb).__module__.split(".")[0] in ("lightning", "pytorch_lightning")
            fix = (f"Import it from `{ours}` (e.g. `from {ours}.callbacks import {name}`)" if own else
                   f"Build `{name}` on `{ours}.Callback`")
            rank_zero_warn(f"the callback `{name}` is `{other}`'s, while the Trainer and lit_robust are `{ours}`'s: "
                           "Lightning runs its hooks but does not know it for one of its own (a `ModelCheckpoint` of it is "
                           f"not the Trainer's checkpoint callback). {fix}.")
            return
