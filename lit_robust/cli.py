"""The `lit-robust` command: LightningCLI (fit/validate/test/predict) plus `demo`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningCLI

__all__ = ["RobustCLI", "main"]


class RobustCLI(LightningCLI):
    """LightningCLI whose Trainer shows a RichProgressBar unless the config turns progress bars off."""

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        cfg = self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init["trainer"]
        callbacks = cfg.get("callbacks") or []
        if cfg.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs.setdefault("callbacks", [])
            kwargs["callbacks"] = list(kwargs["callbacks"]) + [RichProgressBar()]
        return super().instantiate_trainer(**kwargs)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``lit-robust``: ``lit-robust demo`` or ``lit-robust {fit,validate,test,predict} --config X``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "demo":
        from lit_robust.demo import run_demo

        run_demo(argv[1:])
        return
    RobustCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=argv,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
