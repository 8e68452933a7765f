"""A resumed fit must find each stateful callback's own state in the checkpoint (pure bookkeeping over the
checkpoint's keys; the callbacks call :func:`check_resumable` from ``on_load_checkpoint``)."""

from __future__ import annotations

from typing import Any

from lit_robust._backend import TrainerFn

__all__ = ["check_resumable"]


def check_resumable(callback: Any, trainer: Any, checkpoint: dict[str, Any]) -> bool:
    """In a resumed fit, raise when ``checkpoint`` holds the state of a callback of ``callback``'s class under another
    key than ``callback.state_key`` that no callback of that class on ``trainer`` claims: the fit resumes a run whose
    callback had other arguments (e.g. ``keep_ratio``). Lightning would skip that state with a note and the resumed
    fit would run on without it (a newcomer's resume with another ``keep_ratio``: a history of one round, 0.87 test
    accuracy against 0.93, silently).

    Keys are Lightning's ``state_key``: the class name and the arguments that tell two instances apart, e.g.
    ``ITLM{'keep_ratio': 0.7, 'round_epochs': [3, 3, 3, 6]}``.

    Returns whether the callback's ``load_state_dict`` should restore the state (only in a fit).
    """
    if trainer.state.fn != TrainerFn.FITTING:
        # validate/test/predict from a checkpoint use the weights only: the callback keeps its state (Lightning would
        # restore it too; a newcomer's `trainer.test(ckpt_path="best")` rewound ITLM's history by a round)
        return False
    saved = checkpoint.get("callbacks") or {}
    cls = type(callback)
    mine = callback.state_key
    if mine in saved:
        return True
    prefix = f"{cls.__qualname__}{{"
    claimed = {cb.state_key for cb in trainer.callbacks if type(cb) is cls}
    others = sorted(k for k in saved if isinstance(k, str) and k.startswith(prefix) and k not in claimed)
    if others:
        raise ValueError(f"the checkpoint was written by {others[0]}, but this fit has {mine}: a resumed fit needs the "
                         f"{cls.__qualname__} arguments it was written with (its rounds, selection and estimates "
                         "depend on them). Resume with those arguments, or start a new fit (no `ckpt_path`) from the "
                         "checkpoint's weights, e.g. `MyModel.load_from_checkpoint(path)`.")
    return True
