"""The :class:`SpectralNorm` callback: k-Lipschitz normalisation or sigma_max truncation of chosen layers.

The maths (power iteration, normalisation, truncation) and the module transform live in
:mod:`lit_robust.functional.spectral`; this callback holds the configuration and calls them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from lit_robust._backend import Callback, pl, rank_zero_warn
from lit_robust.functional.spectral import (
    ConvNorm,
    _check_iterations,
    _check_k,
    _check_patterns,
    _is_ours,
    _resolve_types,
    apply_spectral_norm,
    select_modules,
    spectral_norm_of,
    truncate_spectral_norm,
)

__all__ = ["SpectralNorm"]


class SpectralNorm(Callback):
    r"""k-Lipschitz spectral normalisation or :math:`\sigma_{\max}` truncation of chosen layers of any model.

    * ``mode="normalize"`` (thesis §3.4.3): at ``setup`` the chosen layers get the parametrisation
      :math:`W/(\hat\sigma/k)` (:func:`apply_spectral_norm`); their power-iteration state is part of the
      model's ``state_dict``, hence of every checkpoint, and ``trainer.fit(ckpt_path=...)`` restores it
      (the transform is applied before Lightning restores the weights).
    * ``mode="truncate"`` (thesis Alg. 7): after every optimizer step (checked at every training batch end;
      the operation is idempotent, so batches without a step change nothing) and once at fit start, each
      chosen weight is replaced by :func:`truncate_spectral_norm` — its exact largest singular value is then
      at most :math:`k` (up to the rounding of a float16 / bfloat16 weight). No extra state.

    Args:
        k: the bound per layer (> 0).
        modules: glob pattern(s) on module names (e.g. ``"head"``, ``"flows.*"``); ``None`` = every module of
            ``types``. A pattern that matches nothing is an error.
        types: module classes or names; default Linear and Conv1d/2d/3d.
        mode: ``"normalize"`` or ``"truncate"``.
        conv_norm: ``"matrix"`` or ``"operator"`` (normalize mode; see :mod:`lit_robust.functional.spectral`).
        n_power_iterations: per training forward (normalize mode).
        clamp: only shrink, :math:`W/\max(1,\hat\sigma/k)` (normalize mode).
        truncate_method: ``"scale"`` or ``"clip"`` (truncate mode).

    Examples:
        >>> sn = SpectralNorm(k=1.0, modules="head", mode="truncate")
        >>> sn.mode, sn.k
        ('truncate', 1.0)
    """

    def __init__(self, k: float = 1.0, modules: str | list[str] | None = None,
                 types: list[str] | None = None, mode: Literal["normalize", "truncate"] = "normalize",
                 conv_norm: ConvNorm = "matrix", n_power_iterations: int = 1, clamp: bool = False,
                 truncate_method: Literal["scale", "clip"] = "scale") -> None:
        super().__init__()
        self.k = _check_k(k)
        if mode not in ("normalize", "truncate"):
            raise ValueError(f"`mode` must be 'normalize' or 'truncate', got {mode!r}.")
        if conv_norm not in ("matrix", "operator"):
            raise ValueError(f"`conv_norm` must be 'matrix' or 'operator', got {conv_norm!r}.")
        if truncate_method not in ("scale", "clip"):
            raise ValueError(f"`truncate_method` must be 'scale' or 'clip', got {truncate_method!r}.")
        self.n_power_iterations = _check_iterations(n_power_iterations)
        if mode == "truncate" and conv_norm == "operator":
            # accepted and ignored: a newcomer's CNN read sigmas() 1.0 with operator norms of 2.4 and 2.0
            raise ValueError("`conv_norm='operator'` bounds a convolution's operator norm by a power iteration through "
                             "it, which `mode='normalize'` runs; `mode='truncate'` cuts the singular values of the "
                             "reshaped weight matrix (conv_norm='matrix') only. Use mode='normalize' with it, or "
                             "conv_norm='matrix'.")
        unused = [f"{name}={value!r}" for name, value, default, used in (
            ("clamp", clamp, False, mode == "normalize"),
            ("n_power_iterations", n_power_iterations, 1, mode == "normalize"),
            ("truncate_method", truncate_method, "scale", mode == "truncate")) if not used and value != default]
        if unused:
            rank_zero_warn(f"SpectralNorm: {', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect with "
                           f"mode={mode!r} (for mode="
                           f"{'truncate' if mode == 'normalize' else 'normalize'!r}).")
        _check_patterns(modules)
        _resolve_types(types)  # an unknown class name fails here, not at `setup`
        if not isinstance(clamp, bool):
            raise ValueError(f"`clamp` must be True or False, got {clamp!r}.")
        self.modules = modules
        self.types = types
        self.mode = mode
        self.conv_norm = conv_norm
        self.clamp = clamp
        self.truncate_method = truncate_method
        self.names: list[str] = []  # the modules this callback acts on

    @property
    def state_key(self) -> str:
        return self._generate_state_key(k=self.k, modules=self.modules, mode=self.mode)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        build = getattr(pl_module, "build_from_data", None)
        if callable(build):  # a ready-made module that reads its sizes from the data builds its layers at its setup,
            build()  # which Lightning runs after this one
        if self.mode == "normalize":
            apply_spectral_norm(pl_module, self.k, self.modules, self.types, self.conv_norm,
                                self.n_power_iterations, self.clamp)
            self.names = [n for n, m in select_modules(pl_module, self.modules, self.types) if _is_ours(m)]
        else:
            chosen = select_modules(pl_module, self.modules, self.types)
            bad = [n for n, m in chosen if parametrize.is_parametrized(m, "weight")]
            if bad:
                raise ValueError(f"`mode='truncate'` edits weights in place, but {bad} have a parametrised weight; "
                                 "choose other modules or use mode='normalize'.")
            self.names = [n for n, _ in chosen]

    def _truncate(self, pl_module: pl.LightningModule) -> None:
        mods = dict(pl_module.named_modules())
        with torch.no_grad():
            for name in self.names:
                w = mods[name].weight
                dim = 1 if isinstance(mods[name], (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
                w.copy_(truncate_spectral_norm(w, self.k, self.truncate_method, dim))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # not on a fit resumed from a checkpoint: its weights were truncated after the step before it was written,
        # and truncating them again moved them by float rounding (a resume newcomer's epoch-end resume differed from
        # the uninterrupted fit by 6e-08, its losses in the 7th digit)
        if self.mode == "truncate" and getattr(trainer, "ckpt_path", None) is None:
            self._truncate(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.mode == "truncate":
            self._truncate(pl_module)

    def sigmas(self, pl_module: nn.Module, names: list[str] | None = None) -> dict[str, float]:
        """Exact (SVD) spectral norm of each chosen layer's *effective* weight (matrix form); for a convolution
        normalised with ``conv_norm="operator"``, the norm it is held to: its operator norm at the layer's training
        input size, by 200 power iterations through it, which read it from below (within 0.04 % where its top two
        singular values were 1.0004 and 1.0000); its matrix form had read 0.52 and 0.63 for operator norms of 1.00 (a
        newcomer's CNN).

        Reading a normalised weight in training mode would advance its power iteration; this reads it with
        the normalisations in eval mode, so it changes no state. ``names`` defaults to :attr:`names`.
        """
        mods = dict(pl_module.named_modules())
        out = {}
        with torch.no_grad():
            for name in self.names if names is None else names:
                m = mods[name]
                dim = 1 if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
                params = list(m.parametrizations.weight) if parametrize.is_parametrized(m, "weight") else []
                modes = [p.training for p in params]
                for p in params:
                    p.eval()
                try:
                    operator = [p for p in params if getattr(p, "operator", False) and p._u.numel()]
                    if operator:
                        p = operator[0]
                        w = m.weight
                        u = p._operator_iterate(w, 200, p._seeded_u(tuple(p._u.shape)))
                        out[name] = float(torch.linalg.vector_norm(p._apply_conv(u, w)))
                    else:
                        out[name] = float(spectral_norm_of(m.weight, dim))
                finally:
                    for p, mode in zip(params, modes):
                        p.train(mode)
        return out
