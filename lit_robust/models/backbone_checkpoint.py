"""Read a SimCLR backbone from a checkpoint file without executing anything stored in it.

Three layouts are recognised (the first that fits):

* ``"lit_robust"`` — a checkpoint of :class:`~lit_robust.SimCLR` or :class:`~lit_robust.LinearProbe`
  (Lightning: the weights under ``"state_dict"``, the backbone under the prefix ``backbone.``; the architecture
  in ``"hyper_parameters"``);
* ``"bolts"`` — a lightning-bolts ``SimCLR`` checkpoint (``pl_bolts.models.self_supervised.SimCLR``): the
  backbone under ``encoder.`` (a torchvision-named ResNet-18/50 with an unused ImageNet classifier
  ``encoder.fc.*``, dropped here), the projection under ``projection.`` (ignored), the architecture in the
  hyper-parameters ``arch``, ``first_conv`` and ``maxpool1``. pl_bolts is never imported: the layout was
  taken from lightning-bolts 0.7.0's source and checked numerically (``tests/fixtures/bolts_simclr_layout.json``);
* ``"plain"`` — the backbone's own ``state_dict`` (``torch.save(model.backbone.state_dict(), path)``), alone or
  under ``"state_dict"``; the architecture then comes from the arguments.

Files are read with ``torch.load(..., weights_only=True)``: tensors, numbers, strings and containers only. A
file that needs anything else (a pickled class, a function) is refused with an error before any of it runs.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lit_robust.models.simclr import BACKBONES, simclr_backbone

__all__ = ["load_backbone", "read_weights_only", "backbone_state_dict", "BackboneCheckpoint"]

_ARCH_ARGS = ("backbone", "in_channels", "width", "first_conv", "maxpool1")
_DEFAULTS = {"backbone": "cnn", "in_channels": 1, "width": 16, "first_conv": True, "maxpool1": True}
_BOLTS_DEFAULTS = {"backbone": "resnet50", "in_channels": 3, "first_conv": True, "maxpool1": True}  # SimCLR defaults


def _damage(path: str) -> str | None:
    """Why ``path`` cannot be a checkpoint at all (empty, a cut-off zip archive, neither zip nor pickle), or ``None``
    when it looks like one: a complete zip archive (``torch.save``'s format) or a pickle stream (its legacy one)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        return None
    if head.startswith(b"PK"):
        return "a zip archive without its central directory: the file was cut short (truncated) or overwritten"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # pickle PROTO opcode and a protocol 2-5
        return None
    return f"neither a zip archive nor a pickle stream; it starts with the bytes {head!r}"


# torch's restricted unpickler met something besides tensors, numbers, strings and containers
_NOT_WEIGHTS_ONLY = ("allowed global", "Unsupported global", "Unsupported operand", "Unsupported class")


def read_weights_only(path: str | os.PathLike, argument: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name ``argument``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is damaged or no checkpoint
    at all (empty, truncated, random bytes) and for a readable file that is not a weights-only checkpoint (a pickle
    of arbitrary objects is refused by torch's restricted unpickler before it can run code).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        # a folder was told "no such file ... has the run that writes it finished?" though it exists (a newcomer's
        # `--model.backbone_checkpoint checkpoints/simclr_mnist`)
        inside = sorted(f for f in os.listdir(path) if f.endswith(".ckpt"))
        raise IsADirectoryError(f"`{argument}` must be a checkpoint file, got the folder {path!r}: pass a .ckpt inside "
                                f"it ({', '.join(inside[:4]) + (', ...' if len(inside) > 4 else '') if inside else 'it holds none'}).")
    if not os.path.isfile(path):
        # a SimCLR newcomer's fine-tuning config ran before (or in another folder than) its pretraining: say where
        where = "" if os.path.isabs(path) else f"; a relative path is read from the current folder, {os.getcwd()}"
        raise FileNotFoundError(f"`{argument}` must be an existing checkpoint file, got {path!r} (no such file{where}: "
                                "has the run that writes it, e.g. the pretraining, finished?).")
    damage = _damage(path)
    if damage is None:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, KeyError,
                ValueError) as err:
            text = str(err).strip()
            first = text.splitlines()[0] if text else type(err).__name__
            if not (isinstance(err, pickle.UnpicklingError) and any(k in text for k in _NOT_WEIGHTS_ONLY)):
                detail = next((line.strip() for line in text.splitlines() if "error" in line.lower() and
                               line.strip() != "Weights only load failed."), first) if text else first
                damage = f"{type(err).__name__}: {detail[:200]}"
            else:
                why = next((line.strip() for line in reversed(text.splitlines()) if any(k in line for k in
                                                                                        _NOT_WEIGHTS_ONLY)), first)
                raise ValueError(
                    f"`{argument}` {path!r} cannot be read as a weights-only checkpoint ({why[:300]}). lit_robust "
                    "loads checkpoints with `torch.load(..., weights_only=True)` only, so that no code stored in the "
                    "file runs. If you trust the file, re-save its weights in a trusted environment, e.g. "
                    "`torch.save({'state_dict': model.state_dict()}, path)`."
                ) from None
    raise ValueError(
        f"`{argument}` file {path!r} is damaged or not a checkpoint ({damage}; {os.path.getsize(path)} bytes). "
        "Expected a file written by `torch.save` (e.g. a Lightning `.ckpt`); copy or download it again, or save it "
        "anew."
    ) from None


class BackboneCheckpoint(dict):
    """The backbone's state dict (plain ``dict`` of tensors) plus where it came from: ``layout``
    (``"lit_robust"``, ``"bolts"`` or ``"plain"``) and ``arch`` (architecture hyper-parameters found in the file)."""

    layout: str
    arch: dict[str, Any]
    #: the recorded ``feature_dim`` of a lit_robust checkpoint pretrained with your own encoder (its module is not in
    #: the hyper-parameters), else ``None``
    own_feature_dim: int | None = None


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor)
                                                          for k, v in obj.items())


def backbone_state_dict(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> BackboneCheckpoint:
    """The backbone weights of a loaded checkpoint object, renamed to :func:`~lit_robust.simclr_backbone`'s names
    (see the module docstring for the layouts)."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"`{source}` must hold a dict (a Lightning checkpoint or a state dict), got "
                         f"{type(checkpoint).__name__}.")
    sd = checkpoint.get("state_dict", checkpoint)
    if not _tensor_dict(sd):
        raise ValueError(f"`{source}` holds no state dict: expected a Lightning checkpoint (weights under "
                         "'state_dict') or a dict of tensors; top-level keys: "
                         f"{sorted(map(str, checkpoint))[:12]}.")
    hp = checkpoint.get("hyper_parameters") if sd is not checkpoint else None
    hp = dict(hp) if isinstance(hp, Mapping) else {}
    out = BackboneCheckpoint()
    if any(k.startswith("backbone.") for k in sd):
        out.layout = "lit_robust"
        out.update({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})
        out.arch = {k: hp[k] for k in _ARCH_ARGS if k in hp and hp[k] is not None}
        if "backbone" not in hp and hp.get("feature_dim") is not None:
            out.own_feature_dim = int(hp["feature_dim"])
    elif any(k.startswith("encoder.") for k in sd):
        out.layout = "bolts"
        out.update({k[len("encoder."):]: v for k, v in sd.items()
                    if k.startswith("encoder.") and not k.startswith("encoder.fc.")})  # fc: bolts' unused classifier
        arch = {"in_channels": int(out["conv1.weight"].shape[1])} if "conv1.weight" in out else {}
        if "arch" in hp:
            arch["backbone"] = hp["arch"]
        arch.update({k: bool(hp[k]) for k in ("first_conv", "maxpool1") if k in hp})
        out.arch = arch
    else:
        out.layout = "plain"
        out.update(sd)
        out.arch = {}
    return out


def _describe(arch: Mapping[str, Any]) -> str:
    keys = ("backbone", "in_channels", "first_conv", "maxpool1") if arch["backbone"] != "cnn" else \
        ("backbone", "in_channels", "width")
    return ", ".join(f"{k}={arch[k]!r}" for k in keys)


def mismatch_report(model: nn.Module, sd: Mapping[str, Tensor], limit: int = 8) -> str | None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(sd) if sd[k].shape != own[k].shape)
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f", ... ({len(items)} in all)" if len(items) > limit else ""
            parts.append(f"{label}: {items[:limit]}{more}")
    return "; ".join(parts)


def load_backbone(checkpoint: str | os.PathLike, backbone: str | nn.Module | None = None, in_channels: int | None = None,
                  width: int | None = None, first_conv: bool | None = None, maxpool1: bool | None = None,
                  argument: str = "checkpoint") -> nn.Module:
    """Build the backbone a checkpoint file was trained with and load its weights (strictly).

    The architecture comes from the file's hyper-parameters where it has them; an argument given here must
    agree with them (a conflict is an error; an argument the architecture does not use, ``width`` of a ResNet,
    ``first_conv`` / ``maxpool1`` of the cnn, is none), and fills in what the file does not say (then the defaults of
    :func:`~lit_robust.simclr_backbone`; lightning-bolts files: bolts' defaults ``resnet50``, ``first_conv=True``,
    ``maxpool1=True``). ``maxpool1`` has no weights, so a plain state dict cannot tell it: pass it.

    ``backbone`` may be your own encoder (an ``nn.Module``): the file's backbone weights (under ``backbone.`` in a
    :class:`~lit_robust.SimCLR` or :class:`~lit_robust.LinearProbe` checkpoint, or a plain state dict) are loaded
    into it, strictly, and it is returned; the other architecture arguments are not used.

    ``argument`` is the name the error messages give the file (``"checkpoint"``; a caller that takes the path as
    another argument passes that name, e.g. ``"backbone_checkpoint"``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a weights-only file, no state dict in it, an architecture argument contradicting the
            file, or weights that do not fit the architecture (missing / unexpected keys and shape mismatches are
            listed).

    >>> import tempfile, os
    >>> from lit_robust import SimCLR
    >>> path = os.path.join(tempfile.mkdtemp(), "simclr.ckpt")
    >>> torch.save({"state_dict": SimCLR(width=4).state_dict(), "hyper_parameters": {"backbone": "cnn", "width": 4}},
    ...            path)
    >>> load_backbone(path).feature_dim
    16
    """
    found = backbone_state_dict(read_weights_only(checkpoint, argument), f"{argument} {os.fspath(checkpoint)!r}")
    if isinstance(backbone, nn.Module):  # your own encoder: its weights only, strictly
        return _load_strictly(backbone, found, f"`{argument}` {os.fspath(checkpoint)!r}",
                              f"your backbone {type(backbone).__name__}", OWN_ENCODER_FIX)
    if found.own_feature_dim is not None and backbone is None:
        # an auditor's probe on an own-encoder SimCLR file was told to pass the CNN's `width` and `in_channels`
        raise ValueError(f"`{argument}` {os.fspath(checkpoint)!r} was pretrained with your own encoder (the file records "
                         f"its feature_dim={found.own_feature_dim}, not the module): pass it as `backbone`, e.g. "
                         "`backbone=MyEncoder()` or `--model.backbone mymodule.MyEncoder`, with "
                         f"feature_dim={found.own_feature_dim}.")
    given = {"backbone": backbone, "in_channels": in_channels, "width": width, "first_conv": first_conv,
             "maxpool1": maxpool1}
    defaults = {**_DEFAULTS, **(_BOLTS_DEFAULTS if found.layout == "bolts" else {})}
    kind = backbone if backbone is not None else found.arch.get("backbone", defaults["backbone"])
    # `first_conv` and `maxpool1` shape the resnets only, `width` the cnn only: a SimCLR user's `first_conv=False`
    # beside a cnn checkpoint, and a reviewer's `width=99` beside a resnet one, were refused as "another architecture"
    unused = ("first_conv", "maxpool1") if kind == "cnn" else ("width",)
    conflicts = [f"`{k}`={v!r} but the checkpoint says {found.arch[k]!r}" for k, v in given.items()
                 if v is not None and k in found.arch and found.arch[k] != v and k not in unused]
    if conflicts:
        raise ValueError(f"`{argument}` {os.fspath(checkpoint)!r} ({found.layout} layout) was trained with another "
                         f"architecture: {'; '.join(conflicts)}. Leave these arguments unset to use the checkpoint's.")
    arch = {k: given[k] if given[k] is not None else found.arch.get(k, defaults[k]) for k in _ARCH_ARGS}
    if arch["backbone"] not in BACKBONES:
        raise ValueError(f"`backbone` must be one of {BACKBONES}, got {arch['backbone']!r} (from "
                         f"{'the arguments' if given['backbone'] else 'the checkpoint'}).")
    model = simclr_backbone(arch["backbone"], arch["in_channels"], arch["width"], arch["first_conv"], arch["maxpool1"])
    return _load_strictly(model, found, f"`{argument}` {os.fspath(checkpoint)!r}", f"the backbone {_describe(arch)}",
                          "Pass the architecture it was trained with (`backbone`, `in_channels`, `width`, "
                          "`first_conv`).")


OWN_ENCODER_FIX = "Pass the encoder class (and arguments) it was pretrained with."


def check_weights_fit(model: nn.Module, found: BackboneCheckpoint, source: str, what: str, fix: str) -> None:
    """Raise a ``ValueError`` listing what of ``found`` does not fit ``model`` (missing / unexpected keys, shapes)
    and ``fix``; nothing when it fits."""
    report = mismatch_report(model, found)
    if report is not None:
        prefix = _extra_prefix(set(model.state_dict()), set(found))
        if prefix is not None:
            # the right class, its weights saved under a module's attribute (an image newcomer's `net.features.` was
            # told to pass another encoder class)
            fix = (f"The file's weights are the backbone's under the prefix {prefix!r}: save them without it, e.g. "
                   f"`{{k.removeprefix({prefix!r}): v for k, v in state_dict.items() if k.startswith({prefix!r})}}`.")
        raise ValueError(f"{source} ({found.layout} layout) does not fit {what}: {report}. {fix}")


def _extra_prefix(own: set[str], saved: set[str]) -> str | None:
    """The one prefix that turns every key of ``own`` into a key of ``saved`` (``net.features.``), else ``None``.

    >>> _extra_prefix({"a.weight", "b.bias"}, {"net.a.weight", "net.b.bias", "head.weight"})
    'net.'
    """
    if not own or own <= saved:
        return None
    key = min(own)
    for k in saved:
        if k.endswith("." + key):
            prefix = k[: -len(key)]
            if {prefix + o for o in own} <= saved:
                return prefix
    return None


def _load_strictly(model: nn.Module, found: BackboneCheckpoint, source: str, what: str, fix: str) -> nn.Module:
    """``model`` with ``found``'s weights (strict), or :func:`check_weights_fit`'s error."""
    check_weights_fit(model, found, source, what, fix)
    model.load_state_dict(dict(found), strict=True)
    return model
