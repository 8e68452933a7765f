"""Evaluation mode for a pass inside training, with every submodule's own mode put back after it.

``module.train(was_training)`` would set every submodule to the whole module's mode: a fine-tuner's frozen backbone,
kept in eval mode, ran the rest of the epoch in training mode after the first-step check (its BatchNorm statistics
moved for 47 batches)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

Modes = list[tuple[torch.nn.Module, bool]]


def enter_eval(module: torch.nn.Module) -> Modes:
    """Each submodule's mode, then ``module.eval()``; give the result to :func:`restore_modes`."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    return modes


def restore_modes(modes: Modes) -> None:
    """Put back the modes :func:`enter_eval` saw (each submodule its own, not the whole module's)."""
    for m, mode in modes:
        m.training = mode


@contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """``module.eval()`` inside the block; afterwards each submodule gets back the mode it had before."""
    modes = enter_eval(module)
    try:
        yield
    finally:
        restore_modes(modes)
