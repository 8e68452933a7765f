"""MNIST-family datamodules with a backdoor attack in the training set (robust_dnn_thesis §5.5; itlm_paper §6.4)."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable
from typing import Any, Literal

from torch import Tensor

from lit_robust._backend import rank_zero_warn
from lit_robust._checks import check_int, check_seed
from lit_robust.data.base import built_already
from lit_robust.data.datamodules import MNISTDataModule, _check_ratio
from lit_robust.functional.backdoor import (
    BlendTrigger,
    PatchTrigger,
    Trigger,
    WatermarkTrigger,
    as_trigger,
    poison,
    poison_test_set,
)

__all__ = ["BackdoorMNISTDataModule", "BackdoorFashionMNISTDataModule", "ATTACKS"]

Attack = Literal["patch", "blend", "watermark_x", "watermark_l"]
ATTACKS = ("patch", "blend", "watermark_x", "watermark_l")


class BackdoorMNISTDataModule(MNISTDataModule):
    r"""MNIST whose training (and validation) pool carries a backdoor attack; the test split stays clean.

    A fraction ``poison_rate`` of the pool gets the trigger and the attacker's label
    (:func:`lit_robust.functional.backdoor.poison`): multi-target ``a → (a+1) mod 10`` when ``target`` is ``None``
    (thesis §5.5, Table 5.8), single-target ``source → target`` (``poison_rate`` is then the fraction of
    class ``source``; itlm_paper §6.4), or all-to-one (BadNets) with ``target`` and ``source=None``: samples of every
    other class get ``target`` (``poison_rate`` is then the fraction of the samples not of class ``target``).
    Samples are ``(index, image, label, is_poisoned)``; the flag is ground
    truth for metrics only. :meth:`poisoned_test_set` puts the trigger on every test image, and
    :class:`~lit_robust.BackdoorMetrics` picks :attr:`trigger`, :attr:`attack_target` and :attr:`attack_source` up
    from here.

    ``predict_dataloader()`` (``lit-robust predict``) predicts the clean test split, in a fixed order: the images a
    deployed model meets. Predictions on triggered images: ``trainer.predict(model, dataloaders=...)`` over
    :meth:`poisoned_test_set`'s images; the attack's success rates are :class:`~lit_robust.BackdoorMetrics`' job.

    Attacks (on normalised pixels, :attr:`value_range` = the scale of black and white):
    ``"patch"`` (BadNets 3×3 checkerboard, bottom-right), ``"blend"`` (Gaussian blend, a = ``blend_alpha``),
    ``"watermark_x"`` / ``"watermark_l"`` (a white X / L, ``watermark_size`` pixels); or your own ``trigger``
    (:attr:`attack` is then ``"custom"`` and :attr:`trigger` says which).

    Args:
        attack: one of ``"patch"`` (the default when no ``trigger`` is given), ``"blend"``, ``"watermark_x"``,
            ``"watermark_l"``.
        trigger: your own trigger instead of ``attack``: a :class:`~lit_robust.functional.backdoor.Trigger` (e.g.
            ``PatchTrigger(pattern=..., position=(0, 0))``, ``BlendTrigger(pattern=...)``; left with
            ``value_range=None`` it takes :attr:`value_range`, as its patterns' intensities are in [0, 1]) or a plain
            function ``images -> images`` working on the normalised images (wrapped by
            :func:`~lit_robust.functional.backdoor.as_trigger`; its results are clipped into :attr:`value_range`).
        poison_rate: :math:`\varepsilon \in [0, 1]`.
        target: the attacker's label (single-target) or ``None`` (multi-target).
        source: the class that is poisoned in a single-target attack; ``None`` with a ``target``: every other class
            (all-to-one).
        trigger_seed: seeds the blend trigger's noise image (an integer).
        blend_alpha: the blend trigger's weight ``a`` of its noise image, in (0, 1] (``attack="blend"`` only).
        watermark_size: the watermark's size in pixels, in [2, 28] (``"watermark_x"`` / ``"watermark_l"`` only).
        root: torchvision root holding ``MNIST/raw`` (``FashionMNIST/raw`` for the FashionMNIST variant).
        download: download the data set into ``root`` if it is missing (needs internet; default off).
        train_size: training samples drawn (seeded) from the training pool; ``None`` = all that remain after
            ``val_size``.
        val_size: validation samples, poisoned as the training samples; ``0`` for none.
        batch_size: training batch size.
        eval_batch_size: batch size of the validation, test, prediction and scoring loaders.
        num_workers: ``DataLoader`` worker processes (0: load in the main process).
        seed: seeds the subsample, the split and the choice of poisoned samples.
    """

    _settings = (*MNISTDataModule._settings, "poison_rate", "attack_target", "attack_source", "trigger")

    def __init__(self, root: str = "data", attack: Attack | None = None, poison_rate: float = 0.15,
                 target: int | None = None, source: int | None = None, trigger_seed: int = 0,
                 blend_alpha: float = 0.1, watermark_size: int = 7, download: bool = False,
                 train_size: int | None = None, val_size: int = 0, batch_size: int = 128,
                 eval_batch_size: int = 1000, num_workers: int = 0, seed: int = 0,
                 trigger: Trigger | Callable[[Tensor], Any] | None = None) -> None:
        super().__init__(root=root, download=download, train_size=train_size, val_size=val_size,
                         batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed)
        if trigger is not None and attack is not None:
            raise ValueError(f"pass `attack` (a built-in trigger) or `trigger` (your own), not both; got "
                             f"attack={attack!r} and trigger={trigger!r}.")
        if trigger is None and attack is None:
            attack = "patch"
        if trigger is None and attack not in ATTACKS:
            close = difflib.get_close_matches(str(attack), ATTACKS, n=1)  # a newcomer's 'blnd'
            raise ValueError(f"`attack` must be one of {', '.join(map(repr, ATTACKS))}, got {attack!r}"
                             + (f" (did you mean {close[0]!r}?)." if close else "."))
        _check_ratio("poison_rate", poison_rate)
        if isinstance(blend_alpha, bool) or not (isinstance(blend_alpha, numbers.Real) and 0 < blend_alpha <= 1):
            # the trigger's own check said `alpha`, a name the datamodule does not take (a backdoor newcomer); checked
            # whatever the attack, as `watermark_size` is (a newcomer's blend_alpha=5.0 beside the patch passed)
            raise ValueError(f"`blend_alpha` must be in (0, 1], got {blend_alpha!r}.")
        for name, value, default, used_by in (("blend_alpha", blend_alpha, 0.1, ("blend",)),
                                              ("watermark_size", watermark_size, 7, ("watermark_x", "watermark_l"))):
            if value != default and attack not in used_by:
                # a user who meant to switch the trigger but left `attack` at its default got no word
                fix = ("leave it out (it has no effect on a trigger of your own)" if trigger is not None else
                       f"it has no effect. Pass `attack={used_by[0]!r}` to use it")
                shown = "a trigger of your own" if trigger is not None else f"attack={attack!r}"
                rank_zero_warn(f"`{name}`={value!r} sets the {' / '.join(used_by)} trigger, which this attack does not "
                               f"use ({shown}): {fix}.")
        # in the datamodule's names: the triggers' own checks said `size` (a backdoor reviewer's watermark_size=1),
        # and a float seed failed in torch at setup; the MNIST-family images are 28x28
        check_seed("trigger_seed", trigger_seed)  # the BlendTrigger's `seed`: a torch seed
        check_int("watermark_size", watermark_size, 2, 28)
        if target is not None and source == target:
            raise ValueError(f"a single-target attack (`target`={target!r}) needs a `source` class != `target` (or "
                             f"source=None: every other class), got source={source!r}.")
        if target is None and source is not None:
            raise ValueError(f"`source`={source!r} needs a single-target attack, but `target` is None (multi-target "
                             "a -> a+1 poisons every class); pass `target`, or `source=None`.")
        for name, v in (("target", target), ("source", source)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                  or not 0 <= v < self.num_classes):
                raise ValueError(f"`{name}` must be a class in [0, {self.num_classes - 1}] or None, got {v!r}.")
        self.poison_rate = poison_rate
        self.attack_target, self.attack_source = target, source
        if trigger is not None:
            self.attack: str = "custom"
            self.trigger = as_trigger(trigger, self.value_range)  # a non-callable or another range: a clear error
        else:
            self.attack = attack
            self.trigger = self.make_trigger(attack, trigger_seed, blend_alpha, watermark_size)

    @property
    def value_range(self) -> tuple[float, float]:
        """Black and white in the normalised scale, e.g. ``(-0.4242, 2.8215)`` for MNIST."""
        return ((0.0 - self._mean) / self._std, (1.0 - self._mean) / self._std)

    def make_trigger(self, attack: str, seed: int, alpha: float, size: int) -> Trigger:
        vr = self.value_range
        if attack == "patch":
            return PatchTrigger(size=3, value_range=vr)
        if attack == "blend":
            return BlendTrigger(alpha=alpha, seed=seed, value_range=vr)
        return WatermarkTrigger(shape="X" if attack == "watermark_x" else "L", size=size, value_range=vr)

    def setup(self, stage: str | None = None) -> None:
        if built_already(self):  # built once; a setting changed since is warned about
            return
        x, y, x_test, y_test = self.load()
        pool, n_train = self._pool(len(y))
        x, y = x[pool], y[pool]
        x_p, y_p, mask = poison(x, y, self.trigger, self.poison_rate, target=self.attack_target, source=self.attack_source,
                                num_classes=self.num_classes, seed=self.seed + 1)
        if self.poison_rate > 0 and not bool(mask.any()):
            rank_zero_warn(f"`poison_rate`={self.poison_rate} poisons no sample of the {len(y)} in the training pool "
                           f"({'of class ' + str(self.attack_source) if self.attack_source is not None else ''}); "
                           "the run trains without a backdoor. Raise `poison_rate` or `train_size`.")
        self._make_splits(x_p, y, y_p, mask, n_train, x_test, y_test, labels=True)

    def poisoned_test_set(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(triggered test images, true labels, attacker labels)`` (:func:`lit_robust.functional.backdoor.poison_test_set`)."""
        if self.test_set is None:
            raise RuntimeError("call `setup()` first.")
        x, y = self.test_set.dataset.tensors
        return poison_test_set(x, y, self.trigger, target=self.attack_target, num_classes=self.num_classes,
                               source=self.attack_source)


class BackdoorFashionMNISTDataModule(BackdoorMNISTDataModule):
    """FashionMNIST whose training (and validation) pool carries a backdoor attack; the test split stays clean.

    The same attacks and arguments as :class:`BackdoorMNISTDataModule`, on FashionMNIST's images (``root`` holds
    ``FashionMNIST/raw``).
    """

    _name, _mean, _std = "FashionMNIST", 0.2860, 0.3530
