r"""k-Lipschitz spectral normalisation and :math:`\sigma_{\max}` truncation, for any model.

Two ways to bound the spectral norm (largest singular value :math:`\sigma`) of chosen weights:

* **normalisation** (thesis §3.4.3, after Miyato et al. 2018): the layer uses
  :math:`W_{SN} = W / (\hat\sigma(W)/k)`, with :math:`\hat\sigma` a power-iteration estimate whose vectors
  are updated once per training forward and stored as buffers (so they travel in ``state_dict`` and in
  Lightning checkpoints). Gradients flow through :math:`\hat\sigma`. torch's own
  ``torch.nn.utils.parametrizations.spectral_norm`` fixes :math:`k = 1`.
* **truncation** (thesis Alg. 7, §5.4.3): after each optimizer step the weight is replaced by the nearest
  weight whose exact (SVD) largest singular value is at most :math:`k`.

Pure functions (no Lightning): :func:`power_iteration`, :func:`k_lipschitz_normalize`,
:func:`truncate_spectral_norm`, :func:`weight_matrix`. Module transform: :func:`apply_spectral_norm` /
:func:`remove_spectral_norm`. The Lightning callback is :class:`lit_robust.SpectralNorm`
(:mod:`lit_robust.callbacks.spectral_norm`).

Convolutions. ``conv_norm="matrix"`` bounds the norm of the weight reshaped to
``[out_channels, in_channels * prod(kernel)]`` — what Miyato et al. and torch do. That number is *not*
the Lipschitz constant of the convolution: for stride 1 the convolution's operator norm can be up to
:math:`\sqrt{\prod \text{kernel}}` times larger (Tsuzuku et al. 2018), so the layer is not guaranteed to be
:math:`k`-Lipschitz. ``conv_norm="operator"`` runs the power iteration through the convolution itself
(its adjoint by autograd) at the input size seen in the layer's forward, so it bounds the true operator
norm of the layer (zero padding, any stride/dilation/groups) for that input size. A fully connected layer
is the same in both modes.

Note on power iteration: :math:`\hat\sigma \le \sigma`, so :math:`\sigma(W_{SN}) = k\,\sigma/\hat\sigma`
is :math:`k` only once the iteration has converged (15 iterations at registration, then
``n_power_iterations`` per training forward, as in torch). In eval mode the vectors are frozen, so a weight
changed after the last training forward (by the last optimizer step) is divided by an estimate one step
old. Use truncation for an exact bound at every step.
"""

from __future__ import annotations

import fnmatch
import importlib
import numbers
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lit_robust._checks import check_bool, check_has_values, check_number

__all__ = [
    "apply_spectral_norm",
    "remove_spectral_norm",
    "select_modules",
    "power_iteration",
    "k_lipschitz_normalize",
    "truncate_spectral_norm",
    "weight_matrix",
    "spectral_norm_of",
    "KLipschitzWeight",
    "held_power_iteration",
]

ConvNorm = Literal["matrix", "operator"]
DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


# -- checks --------------------------------------------------------------------------------------------------
def _check_k(k: Any) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0 or k == float("inf"):
        raise ValueError(f"`k` (the Lipschitz bound per layer) must be a finite number > 0, got {k!r}.")
    return float(k)


def _check_iterations(n: Any) -> int:
    # numpy integers count (as in lit_robust._checks), returned as a Python int for the hyper-parameters
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"`n_power_iterations` must be an integer >= 1, got {n!r}.")
    return int(n)


# -- pure functions --------------------------------------------------------------------------------------------
def weight_matrix(weight: Tensor, dim: int = 0) -> Tensor:
    """``weight`` as a matrix with dimension ``dim`` as rows (``[out, in * prod(kernel)]`` for a conv)."""
    if not isinstance(weight, Tensor):
        raise ValueError(f"`weight` must be a tensor, got {type(weight).__name__}.")
    if weight.ndim < 2:
        raise ValueError(f"`weight` must have >= 2 dimensions (a spectral norm is a matrix's), got shape "
                         f"{tuple(weight.shape)}.")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -weight.ndim <= dim < weight.ndim:
        raise ValueError(f"`dim` must be an integer in [{-weight.ndim}, {weight.ndim - 1}] (a dimension of the weight of "
                         f"shape {tuple(weight.shape)}), got {dim!r}.")
    if dim != 0:
        weight = weight.movedim(dim, 0)
    return weight.reshape(weight.shape[0], -1)


def spectral_norm_of(weight: Tensor, dim: int = 0) -> Tensor:
    """Exact largest singular value (by SVD) of :func:`weight_matrix` ``(weight, dim)``."""
    return torch.linalg.matrix_norm(weight_matrix(weight, dim).detach().float(), ord=2)


def _normalize(x: Tensor, eps: float) -> Tensor:
    return x / x.norm().clamp_min(eps)


@torch.no_grad()
def power_iteration(matrix: Tensor, u: Tensor, v: Tensor, n_iterations: int = 1,
                    eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    r"""``n_iterations`` of power iteration for the top singular pair of ``matrix`` (shape ``[m, n]``).

    :math:`v \leftarrow W^\top u / \|W^\top u\|,\ u \leftarrow W v / \|W v\|`; returns new ``(u, v)``
    (shapes ``[m]``, ``[n]``); :math:`u^\top W v` is then the estimate :math:`\hat\sigma \le \sigma`.

    >>> W = torch.diag(torch.tensor([3.0, 1.0]))
    >>> u, v = power_iteration(W, torch.tensor([0.6, 0.8]), torch.ones(2), n_iterations=30)
    >>> round(float(u @ W @ v), 4)
    3.0
    """
    _check_iterations(n_iterations)
    for _ in range(n_iterations):
        v = _normalize(matrix.t() @ u, eps)
        u = _normalize(matrix @ v, eps)
    return u, v


def k_lipschitz_normalize(weight: Tensor, sigma: Tensor, k: float, clamp: bool = False) -> Tensor:
    r"""Thesis §3.4.3: :math:`W_{SN} = W / (\sigma / k)`; with ``clamp=True``, :math:`W / \max(1, \sigma/k)`.

    ``sigma`` is the (estimated) spectral norm of ``weight``; gradients flow through both.

    >>> k_lipschitz_normalize(torch.tensor([[4.0, 0.0], [0.0, 1.0]]), torch.tensor(4.0), k=2.0).tolist()
    [[2.0, 0.0], [0.0, 0.5]]
    """
    k = _check_k(k)
    ratio = sigma / k
    if clamp:
        ratio = ratio.clamp_min(1.0)
    return weight / ratio


@torch.no_grad()
def truncate_spectral_norm(weight: Tensor, k: float, method: Literal["scale", "clip"] = "scale",
                           dim: int = 0) -> Tensor:
    r"""A copy of ``weight`` whose exact largest singular value is at most ``k`` (thesis Alg. 7).

    * ``"scale"``: :math:`W \cdot \min(1, k/\sigma_{\max})` — the whole matrix shrinks, directions kept.
    * ``"clip"``: :math:`U \min(S, k) V^\top` — only the singular values above :math:`k` are cut; the
      nearest matrix (Frobenius norm) with :math:`\sigma_{\max} \le k`.

    A weight already within the bound is returned unchanged (the operation is idempotent). A float16 / bfloat16
    weight is truncated in float64 and rounded back to its dtype, which can move its largest singular value
    slightly above ``k`` (by about that format's rounding: a reviewer's bfloat16 weight had 1.5018 for ``k=1.5``).

    >>> truncate_spectral_norm(torch.tensor([[3.0, 0.0], [0.0, 1.0]]), 1.5, "clip").tolist()
    [[1.5, 0.0], [0.0, 1.0]]
    >>> truncate_spectral_norm(torch.tensor([[3.0, 0.0], [0.0, 1.0]]), 1.5, "scale").tolist()
    [[1.5, 0.0], [0.0, 0.5]]
    """
    k = _check_k(k)
    if method not in ("scale", "clip"):
        raise ValueError(f"`method` must be 'scale' or 'clip', got {method!r}.")
    # an integer weight ended in torch's "linalg.matrix_norm: Expected a floating point or complex tensor", an empty
    # one in "cannot reshape tensor of 0 elements", naming no argument
    if isinstance(weight, Tensor) and not weight.dtype.is_floating_point:
        raise ValueError(f"`weight` must be a floating-point tensor, got dtype {weight.dtype}.")
    if isinstance(weight, Tensor) and weight.numel() == 0:
        raise ValueError(f"`weight` must hold at least one element, got shape {tuple(weight.shape)}.")
    if isinstance(weight, Tensor):
        check_has_values("weight", weight)
    mat = weight_matrix(weight, dim)
    work = mat.double() if mat.dtype in (torch.float16, torch.bfloat16) else mat
    if not bool(torch.isfinite(work).all()):
        raise FloatingPointError("cannot truncate the spectral norm of a weight holding NaN/inf values.")
    if method == "scale":
        sigma = torch.linalg.matrix_norm(work, ord=2)
        out = work * torch.clamp(k / sigma, max=1.0) if sigma > 0 else work
    else:
        u, s, vh = torch.linalg.svd(work, full_matrices=False)
        if bool((s <= k).all()):
            return weight.clone()
        out = (u * s.clamp(max=k)) @ vh
    out = out.to(weight.dtype)
    if dim != 0:
        moved = weight.movedim(dim, 0)
        return out.reshape(moved.shape).movedim(0, dim)
    return out.reshape(weight.shape)


# -- parametrisation -------------------------------------------------------------------------------------------
class KLipschitzWeight(nn.Module):
    r"""A ``torch.nn.utils.parametrize`` parametrisation: ``weight -> weight / (sigma_hat / k)``.

    Holds the power-iteration state as buffers (``_u``, ``_v``; ``_u`` alone in ``"operator"`` mode, a
    tensor with the layer's input shape) and the last estimate ``sigma`` (for reporting). The vectors are
    updated in training mode only, as in torch's ``spectral_norm``. In operator mode a forward at another input
    size in eval mode (or under :func:`held_power_iteration`) uses an estimate of its own for that size, kept aside
    until the next training forward and not saved, so ``_u`` stays the training size's.

    Build it through :func:`apply_spectral_norm`.
    """

    def __init__(self, weight: Tensor, k: float = 1.0, n_power_iterations: int = 1, eps: float = 1e-12,
                 clamp: bool = False, dim: int = 0, conv: nn.Module | None = None) -> None:
        super().__init__()
        self.k = _check_k(k)
        self.n_power_iterations = _check_iterations(n_power_iterations)
        self.eps = eps
        self.clamp = clamp
        self.dim = dim
        self.operator = conv is not None
        self.register_buffer("sigma", torch.full((), float("nan"), dtype=weight.dtype, device=weight.device))
        if self.operator:
            nd = conv.weight.ndim - 2
            self._conv_args = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                   groups=conv.groups)
            self._conv_fn = _CONV_FN[nd]
            self._spatial_dims = nd
            self._in_channels = conv.in_channels
            # the input shape is known at the first forward (see _record_input_shape); empty until then
            self.register_buffer("_u", torch.empty(0, dtype=weight.dtype, device=weight.device))
            # an eval-mode (or held) forward at another input size: its own estimate, kept aside (not a buffer: the
            # checkpoint holds the training state only) so that `_u` stays the training size's
            self._size_u: Tensor | None = None  # the one this forward uses, set by the pre-hook
            self._size_cache: tuple[tuple[int, ...], Tensor] | None = None  # the last such size's, until training
        else:
            mat = weight_matrix(weight.detach(), dim)
            g = torch.Generator(device="cpu").manual_seed(0)
            u = torch.randn(mat.shape[0], generator=g).to(mat)
            v = torch.randn(mat.shape[1], generator=g).to(mat)
            u, v = power_iteration(mat, _normalize(u, eps), _normalize(v, eps), 15, eps)
            self.register_buffer("_u", u)
            self.register_buffer("_v", v)

    # operator mode ---------------------------------------------------------------------------------------------
    def _record_input_shape(self, module: nn.Module, args: tuple) -> None:
        x = args[0]
        spatial = tuple(x.shape[-self._spatial_dims:])
        shape = (1, self._in_channels, *spatial)
        self._size_u = None
        if tuple(self._u.shape) == shape:
            return
        weight = module.parametrizations.weight.original
        if self._u.numel() and not self.training:
            # eval mode or held_power_iteration: one forward at another size replaced the training state, and the
            # next training step restarted its power iteration from scratch (a reviewer's sigma_hat 1.102 -> 1.089)
            cached = self._size_cache
            if cached is None or cached[0] != shape or cached[1].device != self._u.device:
                with torch.no_grad():
                    cached = (shape, self._operator_iterate(weight, 15, self._seeded_u(shape)))
                self._size_cache = cached
            self._size_u = cached[1]
            return
        self._u = self._seeded_u(shape)
        with torch.no_grad():
            self._operator_iterate(weight, 15)

    def _seeded_u(self, shape: tuple[int, ...]) -> Tensor:
        g = torch.Generator(device="cpu").manual_seed(0)
        return _normalize(torch.randn(shape, generator=g).to(device=self._u.device, dtype=self._u.dtype), self.eps)

    def _apply_conv(self, x: Tensor, weight: Tensor) -> Tensor:
        return self._conv_fn(x, weight, None, **self._conv_args)

    @torch.no_grad()
    def _operator_iterate(self, weight: Tensor, n: int, start: Tensor | None = None) -> Tensor:
        """``n`` power iterations from ``start``, or from ``_u`` (then stored in it); returns the new vector."""
        u = self._u if start is None else start
        w = weight.detach()
        for _ in range(n):
            with torch.enable_grad():
                x = u.detach().requires_grad_(True)
                y = self._apply_conv(x, w)
                v = _normalize(y.detach(), self.eps)
                (adj,) = torch.autograd.grad(y, x, grad_outputs=v)  # the adjoint A^T v
            u = _normalize(adj, self.eps)
        if start is None:
            self._u.copy_(u)
        return u

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "_u"
        if self.operator and key in state_dict and state_dict[key].shape != self._u.shape:
            self._u = torch.empty_like(state_dict[key], device=self._u.device, dtype=self._u.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # forward ---------------------------------------------------------------------------------------------------
    def forward(self, weight: Tensor) -> Tensor:
        if self.operator:
            if self._u.numel() == 0:
                raise RuntimeError("SpectralNorm(conv_norm='operator') needs the layer's input size: run one forward "
                                   "pass through the model before reading the normalised weight.")
            if self.training:
                self._operator_iterate(weight, self.n_power_iterations)
                self._size_cache = None  # estimated for weights that are now moving on
            u = (self._size_u if self._size_u is not None and not self.training else self._u).clone()
            y = self._apply_conv(u, weight)
            sigma = (y * _normalize(y.detach(), self.eps)).sum()  # <A u, v> with v = A u / |A u|, grad via W
        else:
            mat = weight_matrix(weight, self.dim)
            if self.training:
                u, v = power_iteration(mat.detach(), self._u, self._v, self.n_power_iterations, self.eps)
                self._u.copy_(u)
                self._v.copy_(v)
            sigma = self._u.clone() @ mat @ self._v.clone()
        with torch.no_grad():
            self.sigma.copy_(sigma.detach())
        return k_lipschitz_normalize(weight, sigma, self.k, self.clamp)

    def right_inverse(self, value: Tensor) -> Tensor:
        # assigning `module.weight = W` stores W itself as the unnormalised weight (as torch's spectral_norm does)
        return value

    def extra_repr(self) -> str:
        mode = "operator" if self.operator else "matrix"
        return f"k={self.k}, n_power_iterations={self.n_power_iterations}, clamp={self.clamp}, norm={mode}"


# -- module selection -----------------------------------------------------------------------------------------
@contextmanager
def held_power_iteration(model: nn.Module) -> Iterator[None]:
    """Within the block, the :class:`KLipschitzWeight` parametrisations of ``model`` do not advance their power
    iteration (they divide by their stored estimate, as in eval mode), whatever the model's mode; their modes are
    restored after. For reading a model in training mode without changing it (an anomaly newcomer's scores, read
    straight after ``fit`` with the module still in training mode, moved by up to 160 at each call).

    >>> net = nn.Sequential(nn.Linear(4, 4)); _ = apply_spectral_norm(net)
    >>> norm = net[0].parametrizations.weight[0]
    >>> u = norm._u.clone()
    >>> with held_power_iteration(net):
    ...     _ = net(torch.ones(1, 4))
    >>> torch.equal(u, norm._u), norm.training
    (True, True)
    """
    norms = [m for m in model.modules() if isinstance(m, KLipschitzWeight) and m.training]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()


def _resolve_type(t: type | str) -> type:
    if isinstance(t, type):
        if not issubclass(t, nn.Module):
            raise ValueError(f"`types` entries must be torch.nn.Module subclasses, got {t!r}.")
        return t
    if isinstance(t, str):
        mod_name, _, name = t.rpartition(".")
        try:
            obj = getattr(importlib.import_module(mod_name or "torch.nn"), name)
        except (ImportError, AttributeError):
            obj = None
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return obj
    raise ValueError(f"`types` entries must be module classes or their names (e.g. 'Linear', "
                     f"'torch.nn.Conv2d'), got {t!r}.")


def _check_patterns(modules: Any) -> list[str] | None:
    """``modules`` as a list of non-empty glob patterns (``None`` = every name), else a ``ValueError``."""
    if modules is None:
        return None
    patterns = [modules] if isinstance(modules, str) else (list(modules) if isinstance(modules, Sequence) else None)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"`modules` must be a glob pattern (e.g. 'head'), a non-empty list of them, or None, got "
                         f"{modules!r}.")
    return patterns


def _resolve_types(types: Any) -> tuple[type, ...]:
    """``types`` (a module class or name, or a non-empty sequence of them; ``None`` = the defaults) as classes."""
    if types is None:
        return DEFAULT_TYPES
    if isinstance(types, (type, str)):
        types = [types]
    if not isinstance(types, Sequence):
        raise ValueError(f"`types` must be a module class or name (e.g. 'Linear'), a list of them, or None, got "
                         f"{types!r}.")
    if not types:
        raise ValueError("`types` must name at least one module class, got an empty list.")
    return tuple(_resolve_type(t) for t in types)


def _has_matrix_weight(module: nn.Module) -> bool:
    # a parametrised weight is checked through its stored original: reading `module.weight` would run the
    # parametrisation (and advance a power iteration in training mode)
    if parametrize.is_parametrized(module, "weight"):
        w = module.parametrizations.weight.original
    else:
        w = getattr(module, "weight", None)
    return isinstance(w, Tensor) and w.ndim >= 2


def select_modules(model: nn.Module, modules: str | Sequence[str] | None = None,
                   types: type | str | Sequence[type | str] | None = None) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of ``model`` whose type is in ``types`` and whose qualified name matches
    one of the glob patterns ``modules`` (``fnmatch``: ``"flows.*.s.*"``, ``"head"``; ``None`` = every name).

    Every pattern must match at least one module of the chosen types, otherwise a ``ValueError`` names it.
    """
    patterns = _check_patterns(modules)
    resolved = _resolve_types(types)
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, resolved) and _has_matrix_weight(m)]
    type_names = ", ".join(t.__name__ for t in resolved)
    if patterns is None:
        if not candidates:
            raise ValueError(f"`types` ({type_names}) match no module with a weight in {type(model).__name__}.")
        return candidates
    chosen: list[tuple[str, nn.Module]] = []
    for pattern in patterns:
        hits = [(n, m) for n, m in candidates if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            names = [n for n, _ in candidates][:12]
            raise ValueError(f"`modules` pattern {pattern!r} matches no module of type ({type_names}) in "
                             f"{type(model).__name__}; candidate names: {names}.")
        chosen += [h for h in hits if all(h[1] is not c[1] for c in chosen)]
    return chosen


def _is_ours(module: nn.Module) -> bool:
    return _ours(module) is not None


def _ours(module: nn.Module) -> KLipschitzWeight | None:
    """The :class:`KLipschitzWeight` of ``module``'s weight, if :func:`apply_spectral_norm` normalised it."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, KLipschitzWeight)), None)


# -- transform --------------------------------------------------------------------------------------------------
def apply_spectral_norm(model: nn.Module, k: float = 1.0, modules: str | Sequence[str] | None = None,
                        types: type | str | Sequence[type | str] | None = None, conv_norm: ConvNorm = "matrix",
                        n_power_iterations: int = 1, clamp: bool = False, eps: float = 1e-12) -> list[str]:
    r"""Register a k-Lipschitz normalisation :math:`W/(\hat\sigma/k)` on the chosen modules' ``weight``.

    Args:
        model: any ``nn.Module`` (a LightningModule included).
        k: the bound per layer, :math:`k > 0` (a stack of :math:`L` such layers with 1-Lipschitz activations
            is :math:`k^L`-Lipschitz).
        modules: glob pattern(s) on qualified module names; ``None`` = all modules of ``types``.
        types: module classes (or names such as ``"Linear"``); default Linear and Conv1d/2d/3d.
        conv_norm: ``"matrix"`` (reshaped weight, Miyato et al.) or ``"operator"`` (the convolution's operator
            norm at the input size of its forward); see the module docstring.
        n_power_iterations: iterations per training forward.
        clamp: ``False``: divide by :math:`\hat\sigma/k` always (thesis); ``True``: only shrink,
            :math:`W/\max(1, \hat\sigma/k)`.
        eps: the power iteration divides each vector by its norm, at least ``eps`` (no division by zero).

    Returns:
        The names of the normalised modules (modules already normalised by this function are skipped).

    Checkpoints: the power-iteration vectors are buffers of the model, so ``state_dict`` and Lightning
    checkpoints carry them; load them into a model transformed the same way (the keys become
    ``<name>.parametrizations.weight.original`` and ``<name>.parametrizations.weight.0._u``).

    >>> _ = torch.manual_seed(0)  # the power iteration starts from random vectors: its estimate, hence the bound
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> apply_spectral_norm(net, k=2.0)
    ['0', '2']
    >>> bool(spectral_norm_of(net[0].weight) <= 2.0 * 1.01)  # 9 of 300 other seeds exceeded 1 %
    True
    """
    k = _check_k(k)
    _check_iterations(n_power_iterations)
    # both were stored unchecked: clamp="no" (truthy) only shrank, eps=nan made every estimate NaN at the first forward
    check_bool("clamp", clamp)
    check_number("eps", eps, 0, low_open=True)
    if conv_norm not in ("matrix", "operator"):
        raise ValueError(f"`conv_norm` must be 'matrix' or 'operator', got {conv_norm!r}.")
    done, kept = [], []
    for name, module in select_modules(model, modules, types):
        p = _ours(module)
        if p is not None:
            if (p.k, p.clamp, p.operator) != (k, clamp, conv_norm == "operator" and isinstance(module, _CONV)):
                kept.append(f"{name} (k={p.k}, clamp={p.clamp}, conv_norm="
                            f"{'operator' if p.operator else 'matrix'})")
            continue
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
        operator = conv_norm == "operator" and isinstance(module, _CONV)
        if operator and getattr(module, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"`conv_norm='operator'` supports zero padding only; module {name!r} has "
                             f"padding_mode={module.padding_mode!r}. Use conv_norm='matrix'.")
        param = KLipschitzWeight(module.weight, k, n_power_iterations, eps, clamp, dim,
                                 conv=module if operator else None)
        parametrize.register_parametrization(module, "weight", param, unsafe=operator)
        if operator:
            module.register_forward_pre_hook(param._record_input_shape)
        done.append(name)
    if kept:
        # a notebook newcomer's second call with k=3 on the same model kept k=1 without a word, and the SpectralNorm
        # callback listed the layer in `names` as its own
        warnings.warn(f"apply_spectral_norm: {', '.join(kept)} already normalised with other settings, which stay: "
                      f"k={k}, clamp={clamp}, conv_norm={conv_norm!r} are not applied to them. Call "
                      "`remove_spectral_norm(model)` first to normalise them anew.", UserWarning, stacklevel=2)
    return done


SPECTRAL_NORM_KEY = "lit_robust_spectral_norm"  # a checkpoint's record of the normalised layers and their settings
_ORIGINAL = ".parametrizations.weight.original"


def spectral_norm_settings(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module name: the settings of its normalisation}`` for each layer of ``model`` that
    :func:`apply_spectral_norm` normalised: what :func:`restore_spectral_norm` needs to rebuild it."""
    out = {}
    for name, module in model.named_modules():
        p = _ours(module)
        if p is not None:
            out[name] = {"k": float(p.k), "n_power_iterations": int(p.n_power_iterations), "eps": float(p.eps),
                         "clamp": bool(p.clamp), "conv_norm": "operator" if p.operator else "matrix"}
    return out


def record_spectral_norm(model: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Put :func:`spectral_norm_settings` into ``checkpoint`` (under :data:`SPECTRAL_NORM_KEY`) where ``model`` has
    normalised layers, for :func:`restore_spectral_norm`: a load without the ``SpectralNorm`` callback."""
    normalised = spectral_norm_settings(model)
    if normalised:
        checkpoint[SPECTRAL_NORM_KEY] = normalised


def restore_spectral_norm(model: nn.Module, checkpoint: dict[str, Any]) -> list[str]:
    """Normalise the layers of ``model`` that the checkpoint's weights were saved normalised (keys
    ``<name>.parametrizations.weight.original``) and ``model`` has plain, with the settings the checkpoint records
    (:data:`SPECTRAL_NORM_KEY`, written by :class:`~lit_robust.RobustMixin`), so that its ``state_dict`` loads: a
    model trained under :class:`~lit_robust.SpectralNorm` loaded for inference without the callback ended in torch's
    "Missing key(s) ... Unexpected key(s) ...parametrizations.weight.original" (a newcomer's). Returns the names;
    a checkpoint without the record (written before 2026-12-07) is refused naming the layers and the fix."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        return []
    mods = {n.replace("_orig_mod.", ""): (n, m) for n, m in model.named_modules()}
    todo = _saved_normalised_held_plain(mods, state)
    if not todo:
        return []
    record = {n.replace("_orig_mod.", ""): v for n, v in (checkpoint.get(SPECTRAL_NORM_KEY) or {}).items()}
    unknown = [n for n in todo if n not in record]
    if unknown:
        raise ValueError(f"The checkpoint's layers {unknown} were saved under spectral normalisation (their keys end "
                         f"in `{_ORIGINAL[1:]}`), but it does not record its settings (a checkpoint written before "
                         "2026-12-07, or by a module without RobustMixin). Normalise them as the fit did before "
                         f"loading: `lit_robust.apply_spectral_norm(model, k=<the fit's k>, modules={unknown})`, then "
                         "`model.load_state_dict(checkpoint['state_dict'])`; under a Trainer (`lit-robust test`, "
                         "`trainer.test(ckpt_path=...)`) add the fit's `SpectralNorm` callback.")
    for name in todo:
        own, module = mods[name]
        kw = record[name]
        apply_spectral_norm(model, kw["k"], fnmatch_escape(own), type(module), kw["conv_norm"],
                            kw["n_power_iterations"], kw["clamp"], kw["eps"])
    return todo


def spectral_norm_from_callbacks(model: nn.Module, state_dict: Any, callbacks: Sequence[Any] | None) -> list[str]:
    """Normalise ``model`` as each ``SpectralNorm(mode="normalize")`` among ``callbacks`` does at setup, where
    ``state_dict`` holds normalised weights (``<name>.parametrizations.weight.original``) of layers ``model`` holds
    plain; returns the layers normalised. Nothing without such keys or callbacks."""
    if not callbacks or not hasattr(state_dict, "keys"):
        return []
    mods = {n.replace("_orig_mod.", ""): (n, m) for n, m in model.named_modules()}
    if not _saved_normalised_held_plain(mods, state_dict):
        return []
    done = []
    for cb in callbacks:
        if type(cb).__name__ == "SpectralNorm" and getattr(cb, "mode", None) == "normalize":
            done += apply_spectral_norm(model, cb.k, cb.modules, cb.types, cb.conv_norm, cb.n_power_iterations,
                                        cb.clamp)
    return done


def _saved_normalised_held_plain(mods: dict[str, tuple[str, nn.Module]], state_dict: Any) -> list[str]:
    """The layers (by name without ``_orig_mod.``; ``mods`` maps those names to the model's ``(name, module)``) whose
    weights ``state_dict`` holds normalised (``<name>.parametrizations.weight.original``) and the model plain."""
    saved = sorted({k[:-len(_ORIGINAL)].replace("_orig_mod.", "") for k in state_dict.keys() if k.endswith(_ORIGINAL)})
    return [n for n in saved if n in mods and not parametrize.is_parametrized(mods[n][1], "weight")]


def fnmatch_escape(name: str) -> str:
    """``name`` as a glob pattern that matches it alone (``[`` and ``]``, ``*``, ``?`` bracketed)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in name)


def remove_spectral_norm(model: nn.Module) -> list[str]:
    """Remove every normalisation added by :func:`apply_spectral_norm`, baking the normalised weight in."""
    removed = []
    for name, module in model.named_modules():
        if _is_ours(module):
            hooks = [h for h, fn in module._forward_pre_hooks.items()
                     if getattr(fn, "__self__", None) in list(module.parametrizations.weight)]
            for h in hooks:
                del module._forward_pre_hooks[h]
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            removed.append(name)
    return removed
