"""PNG grids of images generated from fixed latent vectors, one per ITLM round (itlm_paper Figure 3)."""

from __future__ import annotations

import os
from typing import Any, Literal

import torch

from lit_robust._backend import Callback, pl, rank_zero_info, rank_zero_only
from lit_robust._lightning import continues_earlier_fit
from lit_robust._modes import evaluating
from lit_robust.callbacks._report_file import checked_folder

__all__ = ["SampleGrid", "save_grid"]


def _grid_pixels(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """``[3, H', W']`` uint8 grid of images in ``[-1, 1]`` with one or three channels (one is repeated)."""
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=nrow, normalize=True, value_range=(-1.0, 1.0), padding=2, pad_value=1.0)
    return grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def save_grid(images: torch.Tensor, path: str, nrow: int = 8) -> None:
    """Write images in ``[-1, 1]`` (``[N, C, H, W]``) as one PNG grid: grayscale when ``C == 1`` (small files), RGB
    when ``C == 3``, and for any other ``C`` one grayscale grid per channel, stacked top to bottom in channel order.

    Any other channel count has no faithful PNG mode: 2 and 4 channels became 'LA' and 'RGBA' (a channel read as
    transparency), 5 or more crashed PIL after the training time was spent.

    >>> import tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
    >>> save_grid(torch.zeros(4, 5, 8, 8), path, nrow=2)
    >>> Image.open(path).mode, Image.open(path).size  # 5 grids of 2 x 2 images (8 px + 2 px padding) on each other
    ('L', (22, 110))
    """
    from PIL import Image

    channels = images.shape[1]
    if channels == 3:
        img = Image.fromarray(_grid_pixels(images, nrow).permute(1, 2, 0).contiguous().numpy())  # mode "RGB"
    else:
        grids = [_grid_pixels(images[:, c : c + 1], nrow)[0] for c in range(channels)]
        img = Image.fromarray(torch.cat(grids, dim=0).numpy())  # 2-D uint8: mode "L"
    img.save(path, optimize=True)


class SampleGrid(Callback):
    """Save what the generator makes of its fixed latent vectors, at the end of every round or epoch.

    The module must offer ``generate(z)`` (images in ``[-1, 1]``) and a ``fixed_z`` tensor of latent
    vectors, as :class:`~lit_robust.DCGAN` does. With ``every="round"`` a grid is written at the end of
    each :class:`~lit_robust.ITLM` round (found among the Trainer's callbacks; without one, the whole fit
    is one round) as ``round{r}.png``; with ``every="epoch"`` after every epoch as ``epoch{e}.png``.
    Images of one channel are drawn in grayscale, of three in RGB, of any other count as one grayscale grid per
    channel, stacked top to bottom (see :func:`save_grid`). A fit that ends inside a round (``max_steps``,
    ``max_time``, ``EarlyStopping``) writes its last round's grid, under that round's name, when training ends.
    The generator runs in evaluation mode, without gradients. Written paths are kept in :attr:`paths` (``{round or epoch: path}``).

    Args:
        dirpath: output folder, made and checked to be writable when the fit starts; default
            ``<trainer.log_dir>/samples`` (``log_dir`` is the ``default_root_dir`` when there is no logger).
        every: ``"round"`` or ``"epoch"``.
        nrow: images per row of the grid.
    """

    def __init__(self, dirpath: str | None = None, every: Literal["round", "epoch"] = "round", nrow: int = 8) -> None:
        super().__init__()
        if every not in ("round", "epoch"):
            raise ValueError(f"`every` must be 'round' or 'epoch', got {every!r}.")
        if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
            raise ValueError(f"`nrow` must be an integer >= 1, got {nrow!r}.")
        self.dirpath = dirpath
        self.every = every
        self.nrow = nrow
        self.paths: dict[int, str] = {}
        # the global step at which each key's grid was drawn, on every rank (the write decision asks for the
        # broadcast `log_dir`, so all ranks must take it alike): a grid already drawn from the final weights is
        # not drawn again when training ends
        self._steps: dict[int, int] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(dirpath=self.dirpath, every=self.every)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not continues_earlier_fit(trainer):  # a second fit on the same Trainer goes on, as ITLM does
            self.paths = {}  # this fit's grids (a resumed fit restores the earlier ones after setup)
            self._steps = {}
        z = getattr(pl_module, "fixed_z", None)
        if not callable(getattr(pl_module, "generate", None)) or not isinstance(z, torch.Tensor) or z.ndim < 2:
            raise TypeError(f"`SampleGrid` needs a module with `generate(z)` and a `fixed_z` tensor of latent vectors "
                            f"(as lit_robust.DCGAN has); `{type(pl_module).__name__}` lacks them.")
        if self.dirpath is not None:
            # checked before training, as ITLM's `plot_dir` is: a file of that name failed the fit at its first grid,
            # after a round of training, in a FileExistsError traceback (a folder that cannot be made: one line
            # without the argument's name)
            checked_folder(trainer, self.dirpath, "dirpath")

    def _round_end(self, trainer: pl.Trainer, epoch: int) -> int | None:
        """The round that ``epoch`` ends, or ``None`` when the epoch is inside a round."""
        itlm = self._itlm(trainer)
        if itlm is None:
            return 0 if trainer.max_epochs is not None and epoch + 1 == trainer.max_epochs else None
        r = itlm.round_of_epoch(epoch)
        return r if epoch + 1 == sum(itlm.round_epochs[: r + 1]) else None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        key = epoch if self.every == "epoch" else self._round_end(trainer, epoch)
        if key is not None:
            self._write(trainer, pl_module, key)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # `max_steps` (Lightning then sets max_epochs=-1), `max_time` or early stopping end the fit inside a round,
        # whose end never came: a reviewer's max_steps fit wrote no grid at all. (A resumed fit that had already
        # finished trains nothing and never gets here.)
        epoch = max(trainer.current_epoch - 1, 0)  # the last epoch trained, counted once it has ended
        if self.every == "epoch":
            key = epoch
        else:
            itlm = self._itlm(trainer)
            key = 0 if itlm is None else itlm.round_of_epoch(epoch)
        if self._steps.get(key) != trainer.global_step:  # else the last epoch's end drew these very weights
            self._write(trainer, pl_module, key)

    @staticmethod
    def _itlm(trainer: pl.Trainer) -> Any:
        from lit_robust.callbacks.itlm import ITLM

        return next((cb for cb in trainer.callbacks if isinstance(cb, ITLM)), None)

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, key: int) -> None:
        # `log_dir` broadcasts, so every rank asks for it; only rank 0 writes
        # a leading `~` is the home folder, as in `report_dir` and Lightning's `default_root_dir` (a user's
        # `dirpath="~/grids"` wrote into a folder named `~` under the current one)
        folder = (os.path.expanduser(os.fspath(self.dirpath)) if self.dirpath
                  else os.path.join(trainer.log_dir or trainer.default_root_dir, "samples"))
        self._steps[key] = trainer.global_step
        self._save(pl_module, folder, key, f"{self.every}{key}.png")

    @rank_zero_only
    def _save(self, pl_module: Any, folder: str, key: int, filename: str) -> None:
        os.makedirs(folder, exist_ok=True)
        with evaluating(pl_module), torch.no_grad():
            images = pl_module.generate(pl_module.fixed_z).float().cpu()
        path = os.path.join(folder, filename)
        save_grid(images, path, self.nrow)
        if not self.paths:  # once per fit: where the grids go
            rank_zero_info(f"SampleGrid: sample grids written to {folder}")
        self.paths[key] = path

    def state_dict(self) -> dict[str, Any]:
        return {"paths": dict(self.paths), "steps": dict(self._steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.paths = dict(state_dict["paths"])
        self._steps = dict(state_dict.get("steps", {}))  # checkpoints from before the steps were kept have none
