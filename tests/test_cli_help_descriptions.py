"""`lit-robust fit --model.help lit_robust.X` describes every argument of every public model, datamodule and callback.

jsonargparse reads an argument's description from the Google-style ``Args:`` entry of that name (docstring-parser,
over the class, its ``__init__`` and its bases): an entry that names several arguments (``lr, weight_decay: Adam.``,
``hidden / hidden_layers: ...``) or no entry at all leaves the argument with only "(type: ..., default: ...)" in the
help, which a release auditor found for ImageClassifier, MLPRegressor, LinearRegressor, RCA and others. The help's
heading is the docstring's first line (docstring-parser's short description): a summary wrapped over two lines was
shown cut mid-sentence ("... and a linear:"). Both are checked here with jsonargparse's own parser, as the CLI builds
it, so that whatever it reads is what is tested.
"""

from __future__ import annotations

import inspect

import jsonargparse
import pytest
import pytorch_lightning as pl

import lit_robust

PUBLIC_CLASSES = sorted(
    name for name in lit_robust.__all__
    if inspect.isclass(obj := getattr(lit_robust, name))
    and issubclass(obj, (pl.LightningModule, pl.LightningDataModule, pl.Callback))
)


def _parser_for(cls: type) -> jsonargparse.ArgumentParser:
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "x", fail_untyped=False)  # as LightningCLI adds a model / datamodule / callback
    return parser


def _own_parameters(cls: type) -> list[str]:
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_the_public_classes_are_found():
    assert {"ImageClassifier", "MLPRegressor", "LinearRegressor", "RCA", "LinearProbe", "ITLM",
            "MNISTDataModule"} <= set(PUBLIC_CLASSES)


def test_every_argument_of_every_public_class_has_a_help_description():
    missing: list[str] = []
    for name in PUBLIC_CLASSES:
        cls = getattr(lit_robust, name)
        parser = _parser_for(cls)
        helps = {action.dest[len("x."):]: action.help for action in parser._actions
                 if action.dest.startswith("x.") and not action.dest.endswith(".help")}
        # the __init__'s own parameters, and those jsonargparse resolves through **kwargs (a base class's)
        names = _own_parameters(cls) + [n for n in helps if "." not in n and n not in _own_parameters(cls)]
        for arg in names:
            if arg not in helps:
                missing.append(f"{name}.{arg} (not added by jsonargparse)")
            elif not (helps[arg] or "").strip():
                missing.append(f"{name}.{arg}")
    assert not missing, (f"{len(missing)} arguments without a description in `--*.help` (give each its own "
                         "'name: description' entry under the class docstring's Args:):\n  " + "\n  ".join(missing))


def test_every_public_class_help_heading_is_its_whole_summary():
    bad: list[str] = []
    for name in PUBLIC_CLASSES:
        cls = getattr(lit_robust, name)
        heading = _parser_for(cls).groups["x"].title
        summary = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
        if summary.endswith(":"):
            bad.append(f"{name}: the summary ends with ':': {summary!r}")
        elif heading.rstrip(".") != summary.rstrip("."):
            bad.append(f"{name}: the help's heading {heading!r} is not the whole summary {summary!r} "
                       "(docstring-parser reads the first line only: make the summary one line)")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name,arg,words", [
    ("ImageClassifier", "hidden", "cnn2"), ("ImageClassifier", "hidden_layers", "resnet18"),
    ("MLPRegressor", "momentum", "beta1"), ("MLPRegressor", "in_features", "datamodule"),
    ("MLPRegressor", "out_features", "datamodule"),
])
def test_the_audited_descriptions_say_what_was_missing(name, arg, words):
    help_text = next(a.help for a in _parser_for(getattr(lit_robust, name))._actions if a.dest == f"x.{arg}")
    assert words in (help_text or "")
