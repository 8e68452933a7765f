"""The `lit-robust` command: LightningCLI (fit/validate/test/predict) plus `demo`.

Six things on top of LightningCLI, all for the paths users take:

* the rich progress bar is *added* to the callbacks the config names (never replaces them);
* ``predict`` writes the predictions into the run's log folder as ``predictions.csv`` (a
  :class:`~lit_robust.PredictionWriter` added like the progress bar, unless the config names a
  ``BasePredictionWriter``): LightningCLI discards what ``trainer.predict`` returns;
* ``fit`` writes the per-sample report of every ``ITLM`` and ``BatchFilter`` in the config (or brought by the model,
  e.g. ``RealNVP``'s trimming), and of an ``RCA`` model, whose ``report`` is left at its default (``None``), into the
  logger's folder or its ``report_dir`` — ``report: false`` turns it off;
* ``--ckpt_path last`` / ``best`` in ``validate``/``test``/``predict`` (and a resumed ``fit``) finds the checkpoint
  of the fit it follows — LightningCLI would look in the new run's empty version folder and evaluate an
  untrained model; without ``--ckpt_path`` they say, before and below their results, that the model is the
  config's own, and where the last fit with that config is;
* a ``class_path`` may name a module of the current folder (the user's own LightningModule), as with
  ``python -m lit_robust``;
* a mistake in the user's input — a lit_robust check, a Lightning ``MisconfigurationException``, a missing file —
  ends in one line naming the config key, the library's message and exit status 2, not a traceback
  (``--debug`` or ``LIT_ROBUST_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import errno
import glob
import hashlib
import importlib
import importlib.util
import inspect
import json
import linecache
import logging
import math
import os
import pickle
import re
import shlex
import signal
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import update_wrapper
from pathlib import Path
from types import MethodType
from typing import Any

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentError, DefaultHelpFormatter, Namespace

from lit_robust._backend import (
    BasePredictionWriter,
    MisconfigurationException,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
    TQDMProgressBar,
    import_submodule,
    is_overridden,
    mismatch_advice,
    pl,
    rank_zero_only,
    rank_zero_warn,
)
from lit_robust._checks import SEED_MAX, _is_int, _is_real
from lit_robust._lightning import (
    RUN_ID_VARIABLE,
    forward_sigterm_to_started_processes,
    sigterm_noted,
    sigterm_without_collectives,
)
from lit_robust._startup import restore_interrupt
from lit_robust.callbacks.prediction_writer import PredictionWriter
from lit_robust.report import DIVERGED_FACTOR, class_label, datamodule_classes
from lit_robust.reporting import stdout_encodes
from lit_robust.selection.auto_drop import cleanlab_hint, resolved_warmup

_lightning_cli = import_submodule("cli")  # pytorch_lightning.cli or lightning.pytorch.cli (lit_robust/_backend.py)
LightningArgumentParser, LightningCLI = _lightning_cli.LightningArgumentParser, _lightning_cli.LightningCLI

__all__ = ["RobustCLI", "UserInputError", "main", "run"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
# where Lightning's own checks live (the unified `lightning` package too, where installed)
_LIGHTNING_DIRS = tuple(os.path.realpath(os.path.dirname(spec.origin)) + os.sep
                        for spec in map(importlib.util.find_spec, ("pytorch_lightning", "lightning_fabric", "lightning"))
                        if spec is not None and spec.origin)
_EVAL_COMMANDS = ("validate", "test", "predict")
# written into a run folder by a `fit` that ran to its end (:class:`_FitEndMark`)
FIT_END_MARK = "fit_ended.json"


class UserInputError(Exception):
    """A mistake in the command line or config, already phrased for the user (the CLI prints it and exits 2)."""


def check_checkpoint_dirs(callbacks: Sequence[Any]) -> None:
    """Every ``ModelCheckpoint`` with a local ``dirpath`` can write there, checked before training (created if
    missing): a CLI newcomer's ``dirpath /etc/passwd/ck`` failed at the first save, after an epoch had trained, with
    the OS error alone and no config key (the reports' ``report_dir`` is checked at construction)."""
    for cb in callbacks:
        path = getattr(cb, "dirpath", None) if isinstance(cb, pl.callbacks.ModelCheckpoint) else None
        if not path or "://" in str(path):
            continue
        path = os.fspath(path)
        try:
            os.makedirs(path, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path):
                pass
        except OSError as err:
            reason = "a file, not a folder" if os.path.isfile(path) else (err.strerror or type(err).__name__)
            raise UserInputError(f"`dirpath` of ModelCheckpoint must be a folder it can write its checkpoints to, "
                                 f"got {path!r} ({reason}).") from None


#: a list of known subclasses longer than this in an argument's help is cut to its first few names (a backbone typed
#: ``nn.Module`` listed torch's ~760, making `--model.help lit_robust.SimCLR` 728 lines); `fit --help`'s longest
#: list, the callbacks with lit_robust's among them, has 35
_MAX_SUBCLASSES_LISTED, _SUBCLASSES_SHOWN_WHEN_CUT = 60, 8


def shorten_subclass_list(help_text: str, limit: int = _MAX_SUBCLASSES_LISTED,
                          shown: int = _SUBCLASSES_SHOWN_WHEN_CUT) -> str:
    """An argument's help with a ``known subclasses: a, b, ...`` list of more than ``limit`` names cut to lit_robust's
    own and the first ``shown`` others, with a count of the rest (jsonargparse lists every subclass imported, so a
    project with many callbacks of its own would otherwise hide lit_robust's).

    >>> shorten_subclass_list("(type: Module, known subclasses: a.A, a.B, lit_robust.X, a.C)", limit=2, shown=1)
    '(type: Module, known subclasses: a.A, lit_robust.X and 2 more; any importable class path)'
    >>> shorten_subclass_list("(type: Module, known subclasses: a.A, a.B)", limit=2, shown=1)
    '(type: Module, known subclasses: a.A, a.B)'
    """
    head, sep, tail = help_text.partition(", known subclasses: ")
    if not sep:
        return help_text
    listed, close, rest = tail.rpartition(")")
    names = listed.split(", ")
    if len(names) <= limit:
        return help_text
    others = [n for n in names if not n.startswith("lit_robust.")][:shown]
    kept = [n for n in names if n.startswith("lit_robust.") or n in others]
    return (f"{head}{sep}{', '.join(kept)} and {len(names) - len(kept)} more; any importable class path"
            f"{close}{rest}")


class RobustHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, with long lists of known subclasses shortened (:func:`shorten_subclass_list`)."""

    def _get_help_string(self, action: Any) -> str:
        return shorten_subclass_list(super()._get_help_string(action))


class RobustArgumentParser(LightningArgumentParser):
    """A parser error shows a one-line usage and, for a class argument, only the class the user named."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", RobustHelpFormatter)
        if not args:
            # jsonargparse makes a `--model.help CLASS` parser with no name, and argparse then takes the script's:
            # `python -m lit_robust` showed "usage: __main__.py [--model.lr LR] ..."
            kwargs.setdefault("prog", "lit-robust")
        super().__init__(*args, **kwargs)

    def print_usage(self, file: Any = None) -> None:  # the full usage of `fit` runs to ~100 lines
        (file or sys.stdout).write(f"usage: {self.prog} [--config CONFIG] [--KEY VALUE ...]\n")

    def format_help(self) -> str:
        # `--model.help lit_robust.ITLM` printed the docstrings' reST (``x``, :class:`~lit_robust.X`) as it is
        return plain_text(super().format_help())

    def error(self, message: str, ex: Exception | None = None) -> Any:
        parsers = [self, getattr(ex, "subcommand_parser", None)]  # a YAML key is checked by the parent parser
        if parsers[1] is None and getattr(self, "_subcommands_action", None) is not None:
            # `--print_config` checks a config's keys in the top parser, whose options hold no command's (a CLI
            # newcomer's misspelt `max_epoch:` lost its "did you mean" there)
            parsers += list(getattr(self._subcommands_action, "_name_parser_map", {}).values())
        options = list(dict.fromkeys(o for p in parsers if p is not None for o in p._option_string_actions
                                     if o.startswith("--")))
        message = _module_search_hint(suggest_option(tidy_parser_message(_name_the_yaml_file(message)), options))
        message = _config_place_hint(_empty_config_hint(_null_init_args_hint(_function_type_hint(message))))
        message = _unparsed_value_hint(_non_number_hint(_null_required_hint(message)))
        return super().error(foreign_lightning_hint(required_section_hint(message)), ex)


def _unparsed_value_hint(message: str) -> str:
    """A list or mapping given on the command line that is not valid YAML (a ``}`` missing): jsonargparse reads it as
    a string and reports it as no path, no list and no import path over ten lines (a CLI newcomer's inline callback
    list); say in one line that the value does not parse, and where. Any other message is returned as is."""
    key = re.match(r'\s*Parser key "([^"]+)"', message)
    given = re.search(r"^\s*Given value: (.*)$", message, re.M)
    if key is None or given is None or "Given value type: <class 'str'>" not in message:
        return message
    value = given.group(1).strip()
    if not value.startswith(("[", "{")):
        return message
    try:
        yaml.safe_load(value)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at character {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "it does not parse"
        return (f'Parser key "{key.group(1)}": the value is not valid YAML or JSON ({problem}{where}; a bracket or '
                f"brace missing?), so it was read as a string: {value}")
    return message


#: the ``--config`` files of the command line being run (:func:`run`), for :func:`_name_the_yaml_file`
_config_files: list[str] = []
#: the command line being run (:func:`run`), for :func:`_loose_entry_classes`
_command_line: list[str] = []


def _loose_entry_classes(argv: Sequence[str], files: Sequence[str]) -> list[str]:
    """The ``class_path`` of every class entry that sets arguments beside it (``{class_path: X, lr: 0.1}``), in the
    YAML/JSON values of ``argv``'s options and in the ``files``, in that order. jsonargparse merges such an entry onto
    the config's entry at that place and names that one's class: a CLI newcomer's
    ``--trainer.callbacks '[{"class_path": "lit_robust.BatchFilter", "drop_ratio": 0.3}]'`` over a config listing
    ``ITLM`` was told its slip was beside ``class_path: lit_robust.ITLM``.

    >>> _loose_entry_classes(["--trainer.callbacks", '[{"class_path": "B", "drop_ratio": 0.3}]'], [])
    ['B']
    """
    docs = []
    for arg in argv:
        value = arg.partition("=")[2] if arg.startswith("--") else arg
        if value.lstrip().startswith(("[", "{")):
            try:
                docs.append(yaml.safe_load(value))
            except yaml.YAMLError:
                continue
    for path in files:
        try:
            with open(path, encoding="utf-8-sig") as f:
                docs.append(yaml.safe_load(f))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
    found: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, list):
            for v in obj:
                walk(v)
        elif isinstance(obj, dict):
            if isinstance(obj.get("class_path"), str) and set(obj) - {"class_path", "init_args", "dict_kwargs"}:
                found.append(obj["class_path"])
            for v in obj.values():
                walk(v)

    for doc in docs:
        walk(doc)
    return found


def _config_documents() -> Iterator[tuple[str, Any]]:
    """``(path, document)`` of each ``--config`` file of this command that reads as YAML (a BOM is no content)."""
    for path in _config_files:
        try:
            with open(path, encoding="utf-8-sig") as f:
                yield path, yaml.safe_load(f)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue


def _empty_config_hint(message: str) -> str:
    """jsonargparse's whole report on a ``--config`` file that is not a YAML mapping is "Unexpected config: " and the
    file's text (a reviewer's empty file; a file of comments only, a Windows editor's empty file holding just a BOM, a
    list of mappings dumped the whole file, naming none): say which file it is and what it holds instead."""
    if not message.lstrip().startswith("Unexpected config:"):
        return message
    found = []
    for path, doc in _config_documents():
        if doc is None:
            found.append(f"--config {path!r} is empty" + (" (comments only)" if _has_comment(path) else ""))
        elif not isinstance(doc, dict):
            kind = "a list" if isinstance(doc, list) else f"a single value ({type(doc).__name__})"
            found.append(f"--config {path!r} holds {kind}, not a mapping of keys")
    where = found[0] if found else "a --config holds no mapping of settings"
    return f"{where}: a config is a YAML mapping of `model:`, `data:` and `trainer:` (see configs/ for examples)."


def _file_text(path: str) -> str:
    """A config file's text (a byte-order mark dropped: no content), ``""`` where it cannot be read."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return ""


def _has_comment(path: str) -> bool:
    return any(line.lstrip().startswith("#") for line in _file_text(path).splitlines())


def duplicate_keys(text: str) -> list[tuple[str, int, int]]:
    r"""``(key path, first line, repeated line)`` of every key a YAML text names twice in one mapping. PyYAML, and so
    jsonargparse, keeps the last value without a word (a CLI user's config set ``lr`` twice, and the fit ran with the
    value below the one they had edited); a merge key's (``<<:``) keys are overridden by design and not counted.

    >>> duplicate_keys("model:\n  init_args:\n    lr: 0.05\n    lr: 0.5\ntrainer: {callbacks: [{a: 1, a: 2}]}\n")
    [('model.init_args.lr', 3, 4), ('trainer.callbacks[0].a', 5, 5)]
    >>> duplicate_keys("base: &b {x: 1}\nuse:\n  <<: *b\n  x: 2\n")
    []
    >>> duplicate_keys("a:\n  1: x\n  '1': y\n  true: z\n")  # keys compared as PyYAML builds them (1 == True)
    [('a.true', 2, 4)]
    """
    found: list[tuple[str, int, int]] = []
    constructor = yaml.constructor.SafeConstructor()

    def identity(key: yaml.ScalarNode) -> Any:
        # the key PyYAML's dict holds, not its text: `1` and `'1'` are two keys (a false alarm), while `true` and
        # `True`, `1` and `0x1`, `~` and `null` are one key set twice (PyYAML kept the last without a word)
        try:
            built = constructor.construct_object(key)
            hash(built)
            return built
        except Exception:  # a value PyYAML cannot build is left to jsonargparse, which says why
            return (key.tag, key.value)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge":
                    continue
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                where = f"{path}.{name}" if path else str(name)
                built = identity(key) if name is not None else None
                if name is not None and built in seen:
                    found.append((where, seen[built] + 1, key.start_mark.line + 1))
                elif name is not None:
                    seen[built] = key.start_mark.line
                walk(value, where)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]")

    walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    return found


#: the places where jsonargparse reads a string as the path of a settings file: a top-level section, an entry of a
#: callback or logger list, and a class's ``init_args``
_SECTIONS = ("model", "data", "trainer", "optimizer", "lr_scheduler")
_ENTRY_LISTS = ("callbacks", "logger")


def _settings_files(doc: Any, base: str, path: str = "") -> Iterator[tuple[str, str]]:
    """``(key path, file)`` of every settings file a loaded config names where jsonargparse reads one
    (``model: model.yaml``, ``callbacks: [cb.yaml]``, ``init_args: args.yaml``): the path as jsonargparse takes it, from
    ``base``, the folder of the config naming it; only existing files (a missing one is jsonargparse's to name)."""
    if not isinstance(doc, dict):
        return
    for key, value in doc.items():
        where = f"{path}.{key}" if path else str(key)
        at_class = (key in _SECTIONS and not path) or key == "init_args"
        items = (list(enumerate(value)) if isinstance(value, list) else [(None, value)]) if key in _ENTRY_LISTS else []
        for i, item in items:
            if isinstance(item, str) and os.path.isfile(os.path.join(base, item)):
                yield (where if i is None else f"{where}[{i}]"), os.path.join(base, item)
        if at_class and isinstance(value, str) and os.path.isfile(os.path.join(base, value)):
            yield where, os.path.join(base, value)
        elif isinstance(value, dict):
            yield from _settings_files(value, base, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from _settings_files(item, base, f"{where}[{i}]")


def _stdin_text() -> str:
    """``--config -``: standard input's text, put back as a new ``sys.stdin`` for jsonargparse to read."""
    import io

    text = sys.stdin.read()
    sys.stdin = io.StringIO(text)
    return text


def _first_duplicate(text: str, base: str, prefix: str = "", depth: int = 0) -> tuple[str, str, list] | None:
    """``(file or None, key path prefix, duplicate_keys(...))`` of the first text set a key twice in: ``text``
    itself, else a settings file it names (:func:`_settings_files`), recursively; ``None`` when none does."""
    try:
        twice = duplicate_keys(text)
        doc = yaml.safe_load(text)
    except yaml.YAMLError:  # a text that cannot be parsed is left to jsonargparse, which says why
        return None
    if twice:
        return None, prefix, twice
    for key, path in _settings_files(doc, base) if depth < 8 else ():  # 8: a file naming itself ends
        found = _first_duplicate(_file_text(path), os.path.dirname(path), f"{prefix}{key}.", depth + 1)
        if found is not None:
            return (path if found[0] is None else found[0]), *found[1:]
    return None


def check_duplicate_keys(paths: Sequence[str], sections: Sequence[tuple[str, str]] = ()) -> None:
    """Raise :class:`UserInputError` naming the first key a ``--config`` sets twice: a file's, the YAML text itself
    where the argument names no file (jsonargparse reads it as the config: ``--config '{trainer: ...}'``), standard
    input's (``-``), or a settings file any of them names (``model: model.yaml``: jsonargparse reads it from the
    config's folder), as a section given on the command line does (``sections``: ``("model", "model.yaml")``). A file
    that cannot be read or parsed is left to jsonargparse, which says why."""
    for path in paths:
        if path == "-":
            text, base = _stdin_text(), os.getcwd()
        elif os.path.isfile(path):
            text, base = _file_text(path), os.path.dirname(path)
        else:  # config text on the command line: its repeated key was kept silently, as a file's was
            text, base = path, os.getcwd()
        _refuse_duplicate(_first_duplicate(text, base), f"--config {path!r}")
    for key, path in sections:
        found = _first_duplicate(_file_text(path), os.path.dirname(path), f"{key}.") if os.path.isfile(path) else None
        _refuse_duplicate(found if found is None or found[0] else (path, *found[1:]), f"--{key}")


def _refuse_duplicate(found: tuple[str | None, str, list] | None, given: str) -> None:
    if found is None:
        return
    nested, prefix, twice = found
    key, first, again = twice[0]
    more = f" (and {len(twice) - 1} more key(s) set twice)" if len(twice) > 1 else ""
    where = given if nested is None else f"{nested!r} (named by {given})"
    raise UserInputError(f"{where} sets {prefix + key!r} twice, on lines {first} and {again}{more}: YAML would keep "
                         "the last value without a word; delete the one you do not mean.")


def _null_init_args_hint(message: str) -> str:
    """An ``init_args:`` left empty (its every line commented out: YAML reads null) made jsonargparse say
    "'NoneType' object has no attribute 'keys'" (within 17 lines for a callback of a list): say which entry of which
    ``--config`` it is and what to do. Any other message is returned as is."""
    m = re.search(r"Problem with given class_path '([\w.]+)':\s*'NoneType' object has no attribute 'keys'", message)
    if m is None:
        return message
    for path, key, entry in _config_class_entries(m.group(1)):
        if "init_args" in entry and entry["init_args"] is None:
            return (f"{key}: `init_args:` of `class_path: {entry['class_path']}` in --config {path!r} is empty "
                    "(null: every line under it commented out?); give it the class's arguments, one level down, "
                    "or delete the `init_args:` line to take the defaults.")
    return message


def _config_class_entries(class_path: str):
    """``(path, key, entry)`` for each ``class_path`` entry of the ``--config`` files (a file's path, or its text
    given inline) whose class has the name of ``class_path``'s last part, in file order; files that are not YAML are
    passed over."""
    short = class_path.rpartition(".")[2]
    for path in _config_files:
        try:
            doc = yaml.safe_load(_file_text(path) if os.path.isfile(path) else path if path != "-" else "")
        except yaml.YAMLError:
            continue
        for key, entry in _class_entries(doc, ""):
            if str(entry.get("class_path", "")).rpartition(".")[2] == short:
                yield path, key, entry


def _null_required_hint(message: str) -> str:
    """A required argument given as null (``keep_ratio: null``: YAML's empty value) read "the following arguments are
    required: keep_ratio", as if the config had left it out: say that it is null, and what the class allows (its own
    check's message, where a lit_robust class has one: argument, allowed values, value received). Any other message
    is returned as is."""
    m = re.search(r"Problem with given class_path '([\w.]+)':\s*the following arguments are required: ([\w, ]+)",
                  message)
    if m is None:
        return message
    required = [n.strip() for n in m.group(2).split(",")]
    for path, key, entry in _config_class_entries(m.group(1)):
        args = entry.get("init_args")
        null = [n for n in required if n in args and args[n] is None] if isinstance(args, dict) else []
        if null:
            return (f"{key}: `{null[0]}` of `class_path: {entry['class_path']}` is null in --config {path!r}, "
                    f"and it has no default: {_own_check(m.group(1), args, null[0])}")
    return message


def _own_check(class_path: str, init_args: dict, name: str, found_only: bool = False) -> str:
    """The message of a lit_robust class's own check of ``init_args`` where it is about ``name`` (``"`keep_ratio`
    must be in (0, 1], got None ..."``), else a plain request for a value (``""`` with ``found_only``)."""
    cls = _import_quietly(class_path)
    if isinstance(cls, type) and cls.__module__.startswith("lit_robust."):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cls(**init_args)
        except Exception as err:  # noqa: BLE001 - any other failure leaves the plain request
            if str(err).startswith(f"`{name}`"):
                return str(err)
    return "" if found_only else f"give `{name}` a value (`--help` of the class lists what it takes)."


#: jsonargparse's report of a value its float or int type refused, and of a union's refusal
#: (:func:`_collapse_value_unions`)
_FLOAT_REFUSED = re.compile(r"Expected a <class '(?P<kind>float|int)'>\. Got value: (?P<plain>.*)$"
                            r"|expected (?P<types>[^\n]*\b(?:a number|an integer)\b[^\n]*), got (?P<quoted>'[^'\n]*')$")
#: a nested class's argument said by :func:`_non_number_hint` one parser down (CoTeaching's ``model``)
_NESTED_SAID = re.compile(r"\s*(?P<said>[\w.]+\.init_args\.(?P<name>\w+) \([\w.]+\): `(?P=name)` .*)$")


def _non_number_hint(message: str) -> str:
    """A value a number argument's type refused (``--model.init_args.lr nan``) said "Expected a <class 'float'>. Got
    value: nan" -- of a value the user had typed as a number: jsonargparse's YAML reads ``nan`` and ``inf`` as text
    (only ``.nan``/``.inf`` are floats), and a non-numeric text was told the same in Python's words; an integer
    argument given a fraction, nan or text ("Expected a <class 'int'>. Got value: 2.5") alike. Say it as the
    class's own check does for that value (argument, allowed range, value received), or for a Trainer argument of
    :data:`_TRAINER_RANGES` its range; otherwise what the argument takes, in words. Any other message is returned as
    is."""
    lines = message.rstrip().splitlines()
    outer = re.match(r'\s*Parser key "([\w.]+)":\s*$', lines[0])
    nested = _NESTED_SAID.match(lines[-1]) if len(lines) == 3 and outer else None
    if nested and re.match(r"\s*Problem with given class_path '[\w.]+':\s*$", lines[1]):
        # said by the nested class's parser relative to its owner (`model.init_args.lr` for CoTeaching's
        # `--model.init_args.model.init_args.lr nan`): the key the user typed, in one line
        return f"{outer.group(1)}.init_args.{nested.group('said')}"
    refused = _FLOAT_REFUSED.search(lines[-1].strip()) if len(lines) >= 2 else None
    key_line = re.match(r'\s*Parser key "([\w.]+)":\s*$', lines[-2]) if refused else None
    if refused is None or key_line is None:
        return message
    given = refused.group("plain") if refused.group("plain") is not None else refused.group("quoted")[1:-1]
    try:
        value: Any = float(given)
    except ValueError:
        value = given
    if refused.group("quoted") is not None and isinstance(value, str):
        return message  # a text where a number is expected: said so plainly already (keep_ratio: half)
    key = key_line.group(1)
    name = key.rpartition(".")[2]
    head = re.match(r'\s*Parser key "([\w.]+)":', lines[0])
    owner = [re.search(r"Problem with given class_path '([\w.]+)'", line) for line in lines[:-2]]
    class_path = next((m.group(1) for m in reversed(owner) if m is not None), None)
    if class_path is None and not key.startswith("trainer."):
        return message  # a class's own parser: said again, with the class, by the parser above it
    if class_path is not None and _takes_a_sequence(class_path, name):
        return message  # the refused value is one item of a list (`round_epochs [1.5, 0.5]`), not the argument's
    shown = given if isinstance(value, float) else repr(given)
    if class_path is not None and head is not None:
        label = f"{head.group(1)}.init_args.{name} ({class_path})"
        own = _own_check(class_path, {**_config_init_args(class_path), name: value}, name, found_only=True)
        if own:
            return f"{label}: {own}"
    else:
        label = key
        trainer_range = _TRAINER_RANGES.get(key.removeprefix("trainer."))
        if key.startswith("trainer.") and trainer_range is not None:
            return f"{label}: `{name}` must be {trainer_range[0]}, got {shown}."
    plain = "an integer" if refused.group("kind") == "int" else "a number"
    types = (refused.group("types") or plain).replace("an integer or a number", "a number")
    text = (" (as YAML reads it, nan and inf are text: the floats are .nan and .inf)"
            if isinstance(value, float) and not math.isfinite(value) else "")
    return f"{label}: `{name}` must be {types}, got {given!r}{text}."


def _takes_a_sequence(class_path: str, name: str) -> bool:
    """Whether ``name`` of ``class_path`` is annotated as a list, tuple or sequence (its items are refused alone)."""
    cls = _import_quietly(class_path)
    try:
        annotation = inspect.signature(cls).parameters[name].annotation
    except (TypeError, ValueError, KeyError):
        return False
    return bool(re.search(r"\b(list|tuple|Sequence|Iterable)\b", str(annotation)))


def _config_init_args(class_path: str) -> dict[str, Any]:
    """The ``init_args`` of the first entry of ``class_path`` (by its class name) in the ``--config`` files, with
    the classes nested in it built (CoTeaching's ``model``), for :func:`_own_check`; ``{}`` when there is none."""
    for _, _, entry in _config_class_entries(class_path):
        args = entry.get("init_args")
        if isinstance(args, dict):
            return {k: _built(v) for k, v in args.items()}
    return {}


def _built(value: Any) -> Any:
    """``value`` with a ``{class_path, init_args}`` mapping built into its object where it can be; as given where
    not (the check of the argument in question comes first in lit_robust's classes)."""
    if not (isinstance(value, dict) and "class_path" in value):
        return value
    cls = _import_quietly(str(value["class_path"]))
    if not isinstance(cls, type):
        return value
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**{k: _built(v) for k, v in (value.get("init_args") or {}).items()})
    except Exception:  # noqa: BLE001 - left as given: the outer class's own check says what it may
        return value


def _class_entries(node: Any, path: str) -> Iterator[tuple[str, dict]]:
    """``(key path, mapping)`` of every mapping with a ``class_path`` in a loaded YAML document."""
    if isinstance(node, dict):
        if "class_path" in node:
            yield path, node
        for key, value in node.items():
            yield from _class_entries(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _class_entries(item, f"{path}[{i}]")


def _config_place_hint(message: str) -> str:
    """``lit-robust --config X fit``: jsonargparse says "Option 'model...' is not accepted before subcommand 'fit'",
    which did not tell a CLI user that the file belongs after the command (a reviewer's)."""
    m = re.search(r"is not accepted before subcommand '(\w+)'", message)
    if m is None:
        return message
    return (message + f"\n  A `--config` before the command is read as a file of commands (`{m.group(1)}:` at its "
            f"top); a config of `model:`, `data:` and `trainer:` goes after it: `lit-robust {m.group(1)} --config "
            "FILE`.")


def _function_type_hint(message: str) -> str:
    """A function named by its import path (``trigger: mymodel.white_patch``) is refused by jsonargparse unless its
    type hints match the argument's: say so (a backdoor user's unannotated trigger cost them a debug session)."""
    if "to be a function that returns" not in message or "needs type hints that match" in message:
        return message
    return (message + "\n  A function given by its import path needs type hints that match, e.g. "
            "`def white_patch(x: torch.Tensor) -> torch.Tensor:`.")


def _name_the_yaml_file(message: str) -> str:
    """A YAML syntax error names ``"<unicode string>"`` (jsonargparse parses the file's text): put the path of the
    ``--config`` file that does not parse there (a hurried CLI user could not tell which of their files it was)."""
    if '"<unicode string>"' not in message:
        return message
    for path in _config_files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            yaml.safe_load(text)
        except yaml.YAMLError as err:
            return message.replace('"<unicode string>"', repr(path)).rstrip("\n") + _yaml_lines(path, text, err)
        except (OSError, UnicodeDecodeError):
            continue
    return message


def _yaml_lines(path: str, text: str, err: yaml.YAMLError) -> str:
    r"""The lines of a config around its YAML syntax error, numbered, with a caret under the place PyYAML names: a CLI
    user's key indented one level too little was named on the line after it ("mapping values are not allowed"), and
    the line numbers alone did not show the slip (pure).

    >>> err = None
    >>> try:
    ...     yaml.safe_load("trainer:\nmax_epochs: 3\n  devices: 1\n")
    ... except yaml.YAMLError as e:
    ...     err = e
    >>> print(_yaml_lines("a.yaml", "trainer:\nmax_epochs: 3\n  devices: 1\n", err))
    <BLANKLINE>
      'a.yaml' lines 2-3 (YAML nests by indentation, spaces only; the slip is often on the line above the one named):
          2 | max_epochs: 3
          3 |   devices: 1
                       ^
    """
    mark = getattr(err, "problem_mark", None)
    lines = text.splitlines()
    context = getattr(err, "context_mark", None)
    if mark is not None and context is not None and mark.line >= len(lines):
        # the end of the file (an unclosed quote): the place the scan began is the slip (a reviewer's caret sat under
        # column 1 of the last line)
        mark = context
    if mark is None:
        return ""
    last = min(mark.line, len(lines) - 1)
    if last < 0:
        return ""
    first = max(0, last - 1)
    width = len(str(last + 1))
    shown = "\n".join(f"    {i + 1:>{width + 2}} | {lines[i].replace(chr(9), '<tab>')}" for i in range(first, last + 1))
    tabs = lines[last][:mark.column].count("\t")  # each shown as 5 characters
    caret = " " * (4 + width + 2 + 3 + mark.column + 4 * tabs) + "^"
    span = f"line {last + 1}" if first == last else f"lines {first + 1}-{last + 1}"
    return (f"\n  {path!r} {span} (YAML nests by indentation, spaces only; the slip is often on the line above the one "
            f"named):\n{shown}\n{caret}")


def _module_search_hint(message: str) -> str:
    """``No module named 'mymodels'`` gains where modules are looked up, and, when ``mymodels.py`` lies beside a
    ``--config`` file in another folder, how to reach it: a CLI user who ran ``lit-robust fit --config
    project/my.yaml`` from the folder above got the bare line (the docs say the current folder is searched)."""
    m = re.search(r"No module named '([\w.]+)'", message)
    if m is None or message[m.end():].startswith(" (a `class_path`'s module is looked up"):  # said already
        return message
    named = re.search(r"given class_path '([^']+\.(?:ya?ml|json))'", message)
    if named is not None:
        # `model: model.yaml`, a file of the entry's settings that is not there: jsonargparse then tries the name as
        # a class path, and the module hint sent a CLI user to their current folder, not the config's
        start = _start_dir or os.getcwd()  # jsonargparse reads a config inside its folder: paths from the start
        configs = [os.path.join(start, c) for c in _config_files
                   if named.group(1) in _file_text(os.path.join(start, c))]
        beside = os.path.normpath(os.path.dirname(configs[0])) if configs else None
        where = (f"beside the config that names it, in {beside}" if beside
                 else "beside the config that names it (a relative path is read from that config's folder)")
        return (message[:m.start()] + f"{named.group(1)!r} reads as a file of this entry's settings, which "
                f"jsonargparse looks for {where}: there is no such file there (nor a class of that name)"
                + message[m.end():])
    # jsonargparse parses a config inside its folder: the folder searched is the one the command started in
    top, cwd = m.group(1).split(".")[0], _start_dir or os.getcwd()
    folders = dict.fromkeys(os.path.dirname(os.path.join(cwd, c)) for c in _config_files)
    beside = next((os.path.normpath(d) for d in folders if os.path.normpath(d) != cwd and (
        os.path.isfile(os.path.join(d, f"{top}.py")) or os.path.isdir(os.path.join(d, top)))), None)
    hint = (f" (a `class_path`'s module is looked up in the current folder, {cwd}, and on PYTHONPATH"
            + (f"; `{top}` is beside the config, in {beside}: run from there, or put `PYTHONPATH={beside}` before the "
               "command" if beside else "") + ")")
    return message[:m.end()] + hint + message[m.end():]


_REST_ROLE = re.compile(r":(class|func|meth|attr|data|mod|obj|exc|math):`~?([^`]+)`")
#: the LaTeX of the docstrings' :math: roles as a terminal shows it
_LATEX_SYMBOLS = {
    "varepsilon": "ε", "epsilon": "ε", "alpha": "α", "beta": "β", "delta": "δ", "Delta": "Δ", "sigma": "σ", "tau": "τ",
    "theta": "θ", "pi": "π", "ell": "ℓ", "in": "∈", "le": "≤", "ge": "≥", "ne": "≠", "sim": "~", "approx": "≈",
    "pm": "±", "times": "×", "cdot": "·", "to": "→", "leftarrow": "←", "infty": "∞", "odot": "⊙", "circ": "∘",
    "lfloor": "⌊", "rfloor": "⌋", "langle": "⟨", "rangle": "⟩", "sum": "Σ", "prod": "Π", "partial": "∂",
    "nabla": "∇", "top": "ᵀ", "sqrt": "√", "max": "max", "min": "min", "log": "log", "exp": "exp", "det": "det",
    "cos": "cos", "arg": "arg", "bmod": "mod",
}


def plain_math(latex: str) -> str:
    """A :math: role's LaTeX with its common commands as Unicode (``\\hat\\varepsilon`` as ε̂).

    >>> plain_math(r"\\hat\\varepsilon \\in [0, 0.5)"), plain_math(r"\\|\\nabla_\\theta \\ell_i\\|_2 \\le \\text{std}(x)")
    ('ε̂ ∈ [0, 0.5)', '‖∇_θ ℓ_i‖_2 ≤ std(x)')
    >>> plain_math("R^2"), plain_math("x^{3}"), plain_math("2^20")
    ('R²', 'x³', '2^20')
    """
    text = re.sub(r"\\(?:text|operatorname|mathrm|mathcal|mathbb)\s*\{([^{}]*)\}", r"\1", latex)
    text = re.sub(r"\\(?:mathcal|mathbb)\s*([A-Za-z])", r"\1", text)
    text = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", text)
    text = re.sub(r"\\frac\s*([^\s{}\\])([^\s{}\\])", r"\1/\2", text)  # \frac1q
    text = text.replace("\\|", "‖").replace("\\,", " ").replace("\\{", "{").replace("\\}", "}")
    text = re.sub(r"\\([A-Za-z]+)", lambda m: _LATEX_SYMBOLS.get(m[1], m[0]), text)
    text = re.sub(r"\^\{?([23])\}?(?!\d)", lambda m: "²³"[int(m[1]) - 2], text)  # R^2 -> R² (a release check)
    # \hat x -> x̂ (a combining circumflex after the letter it covers)
    return re.sub(r"\\hat\s*\{?([^\s{}])\}?", "\\1\u0302", text).replace("\\hat", "")


def plain_text(text: str) -> str:
    """Docstring reST as a terminal shows it: a role's target without its module path, double backticks single,
    a :math: role's LaTeX in Unicode (:func:`plain_math`).

    >>> plain_text("a ``.csv`` file; see :class:`~lit_robust.ITLM`, :attr:`classes` and :math:`0.5 n`")
    'a `.csv` file; see `ITLM`, `classes` and `0.5 n`'
    """
    text = _REST_ROLE.sub(lambda m: f"`{plain_math(m[2]) if m[1] == 'math' else m[2].rpartition('.')[2]}`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def required_section_hint(message: str) -> str:
    """``the following arguments are required: fit.data`` (a config without a ``data:`` or ``model:`` section) gains
    a line saying how the section is written; any other message is returned as is."""
    m = re.match(r"the following arguments are required: (.+)", message)
    if m is None:
        return message
    lines = [message.rstrip()]
    for name in (n.strip().rpartition(".")[2] for n in m.group(1).split(",")):
        if name in ("model", "data"):
            what = "a LightningModule" if name == "model" else "a LightningDataModule"
            lines.append(f"  the config has no `{name}:` section: name {what}, e.g. `{name}: {{class_path: "
                         f"{_CLASS_EXAMPLES[name]}, init_args: {{...}}}}` (or `--{name} {_CLASS_EXAMPLES[name]}` on "
                         "the command line); the repository's configs/ hold complete examples.")
    return "\n".join(lines)


def foreign_lightning_hint(message: str) -> str:
    """A parser error about a class built on the other Lightning package (a ``lightning.LightningModule`` where
    lit_robust runs on ``pytorch_lightning``, a ``lightning.pytorch.callbacks.ModelCheckpoint``, ...) gains a line
    saying so and how to switch (:mod:`lit_robust._backend`); any other message is returned as is."""
    for path in dict.fromkeys(re.findall(r"class_path'?\s*[:=]\s*'([\w.]+)'|Import path ([\w.]+)", message)):
        cls = _import_quietly(path[0] or path[1])
        advice = None if not isinstance(cls, type) else mismatch_advice(cls, f"`{cls.__qualname__}`", cli=True)
        if advice is not None:
            return message if advice in message else f"{message.rstrip()}\n  {advice}"
    return message


def _import_quietly(path: str) -> Any:
    """The object at the dotted ``path`` (``module.Name``), or ``None`` when it does not import."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None) if module else None
    except Exception:  # a path that does not import is jsonargparse's to report
        return None


_UNION_HEAD = "Does not validate against any of the Union subtypes"
#: how a type of a ``Union`` reads in a message: ``Union[float, Literal['auto']]`` -> "a number or 'auto'"
_TYPE_WORDS = {"<class 'float'>": "a number", "<class 'int'>": "an integer", "<class 'str'>": "a string",
               "<class 'bool'>": "true or false", "<class 'NoneType'>": "null"}


def _top_level_parts(listing: str) -> list[str]:
    """``"[a, b[c, d], e]"`` -> ``["a", "b[c, d]", "e"]``: split at the commas outside brackets."""
    parts, depth, start, inner = [], 0, 0, listing.strip()[1:-1]
    for i, ch in enumerate(inner):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    return [p.strip() for p in [*parts, inner[start:]] if p.strip()]


def _type_words(subtypes: str) -> str:
    """``[<class 'float'>, typing.Literal['auto']]`` -> ``a number or 'auto'``; a ``Callable[...]`` reads "a
    function (its import path)" (a segmentation user's loss read "collections.abc.Callable[[torch.Tensor,
    torch.Tensor] or torch.Tensor")."""
    words: list[str] = []
    for part in _top_level_parts(subtypes):
        literal = re.fullmatch(r"typing\.Literal\[(.*)\]", part)
        if literal:
            words.append(literal.group(1))
        elif re.match(r"(?:collections\.abc|typing)\.Callable\b", part):
            words.append("a function (its import path, e.g. mymodule.my_function)")
        else:
            words.append(_TYPE_WORDS.get(part, part))
    return " or ".join(dict.fromkeys(words))


def _collapse_value_unions(message: str) -> str:
    """A value that fits none of an argument's plain types (``keep_ratio: half``): jsonargparse's seven lines (the
    subtypes, one error each, the value's type and the value) become ``expected a number or 'auto', got 'half'``.
    A union over classes (its errors are ``- Problem with given class_path ...`` blocks) is left alone."""
    lines = message.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == _UNION_HEAD:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("Given value:")), None)
            block = lines[i + 1:end] if end is not None else []
            subtypes = next((b.strip()[len("Subtypes:"):] for b in block if b.strip().startswith("Subtypes:")), None)
            if end is not None and subtypes and not any("Problem with given class_path" in b for b in block):
                # the value as given, spaces kept: `keep_ratio: "auto "` read "expected a number or 'auto', got 'auto'"
                given = lines[end].lstrip()[len("Given value:"):].removeprefix(" ")
                indent = line[: len(line) - len(line.lstrip())]
                meant = given.strip().lower()
                hint = f" (did you mean {meant!r}?)" if meant != given and f"'{meant}'" in subtypes else ""
                # why a function's import path did not do: the module or name missing (jsonargparse's reason)
                why = next((b.split("expects a function or a callable class:", 1)[1].strip() for b in block
                            if "expects a function or a callable class:" in b), "")
                why = f" (as a function: {why})" if why else ""
                out.append(f"{indent}expected {_type_words(subtypes)}, got {given!r}{hint}{why}")
                i = end + 1
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _with_cleanlab_hint(message: str) -> str:
    """``message`` with :func:`~lit_robust.selection.auto_drop.cleanlab_hint` added where it refuses confident
    learning as an ``estimator``: the type hint refuses it before the callback's own error could say how to use it
    (a release check's YAML user got the bare list of estimators)."""
    m = re.search(r'key "(?:[\w.]*\.)?estimator":\s*Expected [^\n]*Got value: (\S+)', message)
    hint = cleanlab_hint(m.group(1).strip("'\"")) if m else ""
    return message + "." + hint if hint and hint not in message else message


_SEQUENCE_REFUSED = re.compile(r"Expected a <class '(?:collections\.abc\.Sequence|list|tuple)'>\. Got value: (?P<v>[^\n]*)$",
                               re.MULTILINE)


def _with_sequence_hint(message: str) -> str:
    """``message`` with how to write a list where jsonargparse refused a value for a sequence argument: a CLI user's
    ``--trainer.callbacks.init_args.round_epochs 2,2`` got "Expected a <class 'collections.abc.Sequence'>. Got value:
    2,2" and no word of brackets."""
    m = _SEQUENCE_REFUSED.search(message)
    if m is None:
        return message
    given = m.group("v").strip().strip("'\"")
    example = f"[{given}]" if re.fullmatch(r"[\w.+-]+(?:\s*,\s*[\w.+-]+)*", given) else "[2, 2]"
    return (f"{message}. A list is written in brackets, e.g. {example} (on the command line quoted: "
            f"'{example}').")


def tidy_parser_message(message: str) -> str:
    """Of jsonargparse's "Does not validate against any of the Union subtypes" report, keep the problem with the
    class the config names (dropping the attempts at the base class and at None), and say in one line what a value
    that fits none of an argument's plain types should have been (:func:`_collapse_value_unions`)."""
    message = _with_sequence_hint(_with_cleanlab_hint(message))
    if _UNION_HEAD not in message:
        return message
    entry = (_class_entry_hint(message.splitlines()[0], message) or _unknown_short_class_hint(message)
             or _wrong_kind_of_class_hint(message))
    if entry is not None:
        return entry
    message = _collapse_value_unions(message)
    if _UNION_HEAD not in message:
        return message
    lines = message.splitlines()
    head = lines[0]
    nested = _callback_override_miss(head, message)
    if nested is not None:
        return nested
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)- Problem with given class_path '([^']+)':", line)
        if m is None or m.group(2).startswith(("pytorch_lightning.", "lightning.")):
            continue
        indent = len(m.group(1))
        block = [line.strip()[2:]]
        for nxt in lines[i + 1:]:
            if not nxt.strip():
                continue  # jsonargparse puts a blank line under a nested key, before its reasons
            if len(nxt) - len(nxt.lstrip()) <= indent:
                break
            block.append(nxt.strip())
        return "\n  ".join([head] + block)
    return message


def suggest_option(message: str, options: Sequence[str] = ()) -> str:
    """Say what a misspelt key was probably meant to be: ``Option 'drop_rato' is not accepted`` for a class the
    config names gains ``: did you mean 'drop_ratio'? BatchFilter takes ...`` (its ``__init__`` arguments), and
    ``unrecognized arguments: --trainer.max_epoch 3`` gains ``(did you mean --trainer.max_epochs?)`` from the
    parser's ``options``. A message without such a line, or a class that cannot be imported, is returned as is."""
    loose = _loose_entry_classes(_command_line, _config_files)

    def beside(m: re.Match) -> str:
        # the entry written so is named, not the config's entry jsonargparse merged it onto (when they differ)
        named = m.group(1) if m.group(1) in loose or not loose else loose[0]
        return f"class_path '{named}':{m.group(2)}" + _BESIDE_IN_STACKED.format(named)

    message = re.sub(r"class_path '([^']+)':(\s*\n\s*)Option 'class_path' is not accepted.*", beside, message)
    message = re.sub(r"class_path '([^']+)':(\s*\n\s*)Option '([^']+)' is not accepted",
                     lambda m: m.group(0) + _init_argument_hint(m.group(1), m.group(3)), message)
    key = re.match(r'\s*(?:error: )?Parser key "([^"]+)"', message)
    # not where a hint follows already: a nested parser's message passes here twice (a misspelt trigger function,
    # `trigger: mytrig.white_pach`, got "(did you mean 'mytrig.white_patch'?)" twice)
    message = re.sub(r"class_path '([\w.]+)':(\s*\n\s*)module '([\w.]+)' has no attribute '(\w+)'(?! \()",
                     lambda m: m.group(0) + _attribute_hint(m.group(3), m.group(4), key.group(1) if key else None),
                     message)
    if "found character that cannot start any token" in message:
        message += "\n  (a tab? YAML indents with spaces only)"
    indexed = re.match(r"unrecognized arguments: (--trainer\.callbacks\[\d+\]\S*)", message)
    if indexed is not None:  # `--trainer.callbacks[0].init_args.round_epochs`: "did you mean --trainer.callbacks.help?"
        return f"unrecognized arguments: {_NO_CALLBACK_INDEX.format(given=indexed.group(1))}"
    bare = re.match(r"unrecognized arguments: (\S+\.ya?ml)\b", message)
    if bare is not None:  # a CLI newcomer's `lit-robust fit my.yaml`
        return f"{message} (a config file goes after `--config`: --config {bare.group(1)})"
    unknown = (re.match(r"unrecognized arguments: (--\S+)", message)
               or re.match(r"Subcommand '\w+' does not accept option '([\w.]+)'", message))  # a key in the YAML
    # the same key under `--print_config`, which jsonargparse reads by its group (a CLI newcomer's `max_epoch:` lost
    # the hint there, the command the docs point at to inspect a config)
    grouped = re.match(r"Group '([\w.]+)' does not accept option '([\w.]+)'", message)
    if unknown is None and grouped is None:
        return message
    if "(did you mean" in message:
        return message  # said by the nested class's parser already (it read "(did you mean --keep_ratio?)" twice)
    key = unknown.group(1).split("=")[0] if unknown is not None else f"{grouped.group(1)}.{grouped.group(2)}"
    dashed = not key.startswith("--")  # a YAML key: compare without the dashes, suggest it as written
    first, _, rest = key.lstrip("-").partition(".")
    if rest and first != "init_args" and difflib.get_close_matches(first, ["init_args"], cutoff=0.8):
        # `--trainer.callbacks.init_arg.keep_ratio` (a CLI newcomer's) reached the class's parser as
        # `--init_arg.keep_ratio`, and was told "did you mean --keep_ratio?", twice
        return f"{message} (did you mean init_args.{rest}? A class's arguments go under `init_args`)"
    if dashed:
        # an indentation slip that is still valid YAML (a CLI user's): `model:` indented under `trainer:` read
        # "did you mean trainer.overfit_batches?", `init_args:` dedented to the top level got no hint
        sections = {o[2:].partition(".")[0] for o in options}
        first, _, rest = key.partition(".")
        inner = rest.partition(".")[0]
        if first in sections and inner in sections and inner != first:
            return (f"{message} (`{inner}:` is indented under `{first}:`; it belongs at the top level of the config, "
                    f"as `{rest}`)")
        if first == "init_args":
            return (f"{message} (`init_args:` is at the top level of the config; it belongs one level below a class "
                    "entry's `class_path:`, e.g. under `model:` or `data:`)")
    close = difflib.get_close_matches(f"--{key}" if dashed else key, list(options), n=1)
    fixed = _fix_one_part(key.lstrip("-"), options) if "." in key else None
    if fixed is not None:
        # one misspelt part of a longer key, the rest kept as written: a misspelt section (`modle:` in a YAML reads
        # 'modle.init_args.backbone', whose whole name is far from every option's), or a CLI newcomer's
        # `--trainer.callback.init_args.keep_ratio`, which read "did you mean --trainer.callbacks.help?"
        close = [f"--{fixed}"]
    if not close:
        return message
    return f"{message} (did you mean {close[0][2:] if dashed else close[0]}?)"


def _fix_one_part(key: str, options: Sequence[str]) -> str | None:
    """``key`` (dotted, no dashes) with its one misspelt part replaced by the closest part the ``options`` have at
    that place, the parts after it kept as written (a class's arguments are not among the parser's options); ``None``
    where the key's parts all occur as options, or the misspelt part is close to none.

    >>> _fix_one_part("trainer.callback.init_args.keep_ratio", ["--trainer.callbacks", "--trainer.max_epochs"])
    'trainer.callbacks.init_args.keep_ratio'
    """
    parts = key.split(".")
    names = [o[2:].split(".") for o in options if o.startswith("--") and "." in o]  # sections and their keys
    for i, part in enumerate(parts):
        nexts = sorted({n[i] for n in names if len(n) > i and n[:i] == parts[:i]})
        if not nexts:
            return None  # past the parser's options (a class's own arguments): kept as written
        if part in nexts:
            continue
        near = difflib.get_close_matches(part, nexts, n=1)
        if not near:
            return None
        parts[i] = near[0]
        return ".".join(parts)
    return None


#: the kind of class each parser key takes, for the classes :func:`_attribute_hint` lists
_KEY_KINDS = {"model": ("LightningModule", "models"), "data": ("LightningDataModule", "datamodules"),
              "trainer.callbacks": ("Callback", "callbacks")}


def _attribute_hint(module: str, name: str, key: str | None = None) -> str:
    """`` (did you mean 'lit_robust.ITLM'?)`` for a misspelt class of an importable module; for a name close to
    none, the module's classes of the kind ``key`` (``model``, ``data``, ``trainer.callbacks``) takes, else ``""``."""
    try:
        found = importlib.import_module(module)
    except Exception:  # a module that does not import: jsonargparse's message says so
        return ""
    names = [n for n in dir(found) if not n.startswith("_")]
    # the same name in another case first: difflib's ratio of 'Itlm' to 'ITLM' is 0.25 (a CLI newcomer's
    # `lit_robust.Itlm` got no suggestion where `lit_robust.ITLN` did)
    close = ([n for n in names if n.lower() == name.lower()]
             or difflib.get_close_matches(name, names, n=1, cutoff=0.7))
    if close:
        return f" (did you mean '{module}.{close[0]}'?)"
    if key not in _KEY_KINDS:
        return ""
    # `--data.class_path lit_robust.NoSuchData` said only that the attribute is missing, not what `data` may name
    base, what = _KEY_KINDS[key]
    kinds = [getattr(found, n) for n in names]
    listed = sorted(n for n, c in zip(names, kinds) if isinstance(c, type) and issubclass(c, getattr(pl, base)))
    if not listed:
        return ""
    return f" ({module}'s {what}: {', '.join(listed)}; or a class of your own by its module, `my_module.MyClass`)"


#: an entry on the command line or in a second ``--config`` that sets arguments beside ``class_path``
#: (``{class_path: X, keep_ratio: 0.5}``), merged onto the first config's entry at that place: jsonargparse says
#: "Option 'class_path' is not accepted" (a GAN newcomer's stacked config; the same slip in one config gets
#: :func:`_class_entry_hint`'s line)
_BESIDE_IN_STACKED = ("an entry sets its arguments beside `class_path: {0}` (on the command line, or in a second "
                      "`--config`?): a class's arguments go one level down, under `init_args:`, e.g. "
                      "`{{class_path: {0}, init_args: {{...}}}}`.")


def _init_argument_hint(class_path: str, key: str, cutoff: float = 0.6) -> str:
    """``: did you mean 'drop_ratio'? BatchFilter takes a, b, ...`` for ``key`` of the class at ``class_path``."""
    cls = _import_quietly(class_path)
    if cls is None:
        return ""
    name = class_path.rpartition(".")[2]
    names = sorted(_parameters(cls))
    if not names:
        return ""
    close = difflib.get_close_matches(key, names, n=1, cutoff=cutoff)
    return f": {f'did you mean {close[0]!r}? ' if close else ''}{name} takes {', '.join(names)}"


_BASE_CALLBACKS = ("pytorch_lightning.Callback", "lightning.pytorch.Callback", "lightning.Callback")


#: a callback of the list picked by its position on the command line, which jsonargparse cannot do
_NO_CALLBACK_INDEX = ("{given}: the command line cannot pick a callback of the list by its position; "
                      "`--trainer.callbacks.init_args.X` sets `X` of the last callback of the list, so to change "
                      "another one edit a copy of the config (or list that callback last)")


def _callback_override_miss(head: str, message: str) -> str | None:
    """``--trainer.callbacks.init_args.X V`` goes to the *last* callback of the config's list (jsonargparse's rule);
    where that one has no ``X`` (a ModelCheckpoint closing the list, a newcomer's case), say so in one line instead
    of the Union report, or ``None`` when the message is another one."""
    given = re.search(r"^\s*Given value: NestedArg\(key='([^']+)', val=(.*)\)\s*$", message, re.M)
    tried = [m for m in re.finditer(r"Problem with given class_path '([^']+)':\s*\n\s*(.*)", message)
             if m.group(1) not in _BASE_CALLBACKS]  # the config's last callback, not the Union's base class
    if not head.startswith('Parser key "trainer.callbacks"') or given is None or len(tried) != 1:
        return None
    last, key, value = tried[0], given.group(1), given.group(2)
    if re.match(r"\d+\.", key):  # `--trainer.callbacks.0.init_args.X`: a hurried user's try at an index
        return f"{head}\n  {_NO_CALLBACK_INDEX.format(given=f'--trainer.callbacks.{key}')}"
    if last.group(2).strip() != f"Option '{key}' is not accepted":
        return None  # it takes `key`, the value is wrong: the usual report says why
    hint = _init_argument_hint(last.group(1), key, cutoff=0.8)
    if "did you mean" in hint:  # a misspelt argument of that callback (a newcomer's `drop_rato` got no suggestion)
        return (f"{head}\n  --trainer.callbacks.init_args.{key}: the last callback of the list, {last.group(1)}, takes "
                f"no `{key}`{hint}.")
    return (f"{head}\n  --trainer.callbacks.init_args.{key} {value.strip(chr(39))} goes to the last callback of the list, "
            f"{last.group(1)}, which takes no `{key}` (jsonargparse's rule); to set `{key}` of another callback, "
            "edit a copy of the config (or list that callback last).")


def _subclasses(base: type) -> list[type]:
    """Every subclass of ``base`` imported so far (depth first, each once)."""
    seen: dict[type, None] = {}
    todo = list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen[cls] = None
            todo.extend(cls.__subclasses__())
    return list(seen)


def _unknown_short_class_hint(message: str) -> str | None:
    """``class_path: ModelCheckPoint`` (a short name that names no class): jsonargparse's report ends in "expected
    list[Callback] or Callback or null, got <the whole list>", naming neither the entry nor the class meant (a CLI
    user's misspelt `ModelCheckPoint` and `ITML`); say which name is unknown and the closest class of the expected
    kind imported here. ``None`` for any other message."""
    name = re.search(r"Expected a dot import path string: (\S+)", message)
    subtypes = re.search(r"^\s*Subtypes: (.*)$", message, re.M)
    if name is None or subtypes is None:
        return None
    bases = []
    for path in re.findall(r"(?:<class '|list\[)([\w.]+)", subtypes.group(1)):
        module, _, attr = path.rpartition(".")
        try:
            base = getattr(importlib.import_module(module), attr)
        except Exception:  # noqa: BLE001 - not importable here: no suggestion from it
            continue
        if isinstance(base, type) and base is not type(None) and base not in bases:
            bases.append(base)
    if not bases:
        return None
    given = name.group(1)
    # a Union with a Literal of names (SimCLR's `backbone: "cnn" | "resnet18" | "resnet50" | Module`): the string was
    # meant as one of those names, not as a class (a CLI newcomer's `--model.init_args.backbone resnet34` was told
    # only about `class_path: resnet34`, which they never wrote)
    literal = re.search(r"typing\.Literal\[([^\]]*)\]", subtypes.group(1))
    if literal is not None:
        choices = ", ".join(literal.group(1).split(", "))
        head = message.splitlines()[0]
        return (f"{head}\n  {given!r} is not one of the names it takes ({choices}); or a class of the expected kind "
                f"({' or '.join(b.__name__ for b in bases)}), written as `class_path: my_module.MyClass`.")
    known = {c.__name__: c for b in bases for c in _subclasses(b) if not c.__name__.startswith("_")}
    close = ([n for n in known if n.lower() == given.lower()]
             or difflib.get_close_matches(given, list(known), n=1, cutoff=0.7))
    kind = " or ".join(b.__name__ for b in bases)
    meant = (f": did you mean `{close[0]}` (`{known[close[0]].__module__}.{close[0]}`)?" if close else ".")
    head = message.splitlines()[0]
    return (f"{head}\n  `class_path: {given}` names no {kind} known by that name{meant} A short name works for a class "
            "that lit_robust or Lightning provides; name a class of your own with its module, `my_module.MyClass`.")


def _wrong_kind_of_class_hint(message: str) -> str | None:
    """A class that imports but is not of the kind expected (a CLI newcomer's `--trainer.callbacks+=
    lit_robust.ImageClassifier`): jsonargparse's report said that the path was "either not accessible or invalid".
    Say which kind of class it is and where it goes; ``None`` for any other message."""
    if "Import path does not correspond to a subclass of" not in message:
        return None
    given = re.search(r"^\s*Given value: ([\w.]+)\s*$", message, re.M)
    wanted = re.search(r"does not correspond to a subclass of (\w+)", message)
    if given is None or wanted is None:
        return None
    module, _, attr = given.group(1).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except Exception:  # noqa: BLE001 - not importable: the report's own words stand
        return None
    if not isinstance(cls, type):
        return None
    name = given.group(1)
    other = mismatch_advice(cls, f"`{cls.__qualname__}`", cli=True)
    if other is not None:  # the other Lightning package's class is of the kind, in that package (a reviewer's)
        return f"{message.splitlines()[0]}\n  {other}"
    where = (f": it is a model (a LightningModule), named under `model:` (`--model {name}`)"
             if issubclass(cls, pl.LightningModule) else
             f": it is a datamodule, named under `data:` (`--data {name}`)"
             if issubclass(cls, pl.LightningDataModule) else
             f": it is a callback, listed under `trainer.callbacks:` (`--trainer.callbacks+={name}`)"
             if issubclass(cls, pl.Callback) else "")
    return f"{message.splitlines()[0]}\n  {name} is not a {wanted.group(1)}{where}."


#: a class the user might name, per parser key, for the example in :func:`_class_entry_hint`
_CLASS_EXAMPLES = {"model": "lit_robust.ImageClassifier", "data": "lit_robust.MNISTDataModule",
                   "trainer.callbacks": "lit_robust.BatchFilter"}


def _class_entry_hint(head: str, message: str) -> str | None:
    """A class entry written without ``class_path`` (``model: {lr: 0.1}``) or with its arguments beside it
    (``model: {class_path: X, lr: 0.1}``): jsonargparse tries the base class ("Option 'lr' is not accepted") or
    reports the whole entry as no subclass; say in one line how the entry is written instead. ``None`` for any
    other message."""
    key = re.match(r'Parser key "([^"]+)"', head)
    given = re.search(r"^\s*Given value: (.*)$", message, re.M)
    tried = re.findall(r"Problem with given class_path '([^']+)':", message)
    if key is None or given is None or any(not t.startswith(("pytorch_lightning.", "lightning.")) for t in tried):
        return None  # the config names a class of its own: the usual report is about that class
    try:
        value = ast.literal_eval(given.group(1).strip())
    except (ValueError, SyntaxError):
        return None
    entries = value if isinstance(value, list) else [value]
    name = key.group(1)
    example = _CLASS_EXAMPLES.get(name, "package.module.ClassName")
    if (name == "trainer.callbacks" and isinstance(value, dict) and value
            and all(isinstance(v, dict) and "class_path" in v for v in value.values())):
        # a CLI newcomer's `callbacks:` written as a mapping of names (`itlm: {class_path: ...}`) was told that "a
        # callback" needs `class_path:`, which each had
        return (f"{head}\n  `trainer.callbacks:` is a YAML list, one `- class_path: ...` item per callback; got a "
                f"mapping of names ({', '.join(map(str, value))}): write each as a list item, without its name.")
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        loose = [k for k in entry if k not in ("class_path", "init_args", "dict_kwargs")]
        if not loose:
            continue
        where = "a callback of `trainer.callbacks`" if name == "trainer.callbacks" else f"`{name}:`"
        typo = [k for k in loose if isinstance(k, str) and difflib.get_close_matches(k, ["init_args"], cutoff=0.8)]
        if typo and "class_path" in entry:  # `init_arg:` / `initargs:` (a CLI newcomer's) read as an argument
            return (f"{head}\n  {where} has `{typo[0]}:` beside `class_path: {entry['class_path']}`: did you mean "
                    "`init_args:`? A class's arguments go under `init_args:`.")
        if "class_path" in entry:
            return (f"{head}\n  {where} sets {', '.join(map(repr, loose))} beside `class_path: {entry['class_path']}`; "
                    "a class's arguments go one level down, under `init_args:`.")
        return (f"{head}\n  {where} needs `class_path:`, the class to build (e.g. `{example}`, or your own "
                f"`my_module.MyClass`), with its arguments under `init_args:`; got {entry!r}.")
    return None


_CKPT_LAST = ("`last`: the newest checkpoint of an earlier `lit-robust fit` with the same model, data and callbacks "
              "(under the logger's version_* folders or the ModelCheckpoint's dirpath)")
#: ``--help`` of ``--ckpt_path`` per subcommand (what :meth:`RobustCLI._resolve_ckpt_path` does with it)
CKPT_PATH_HELP = {
    "fit": f"Checkpoint to resume the fit from: a file, or {_CKPT_LAST}, if there is one.",
    **{sub: f"Checkpoint whose weights to {sub} on: a file; {_CKPT_LAST}; or `best`: that fit's best model "
            "(its ModelCheckpoint monitors a metric). Without it, the model as the config builds it (warned)."
        for sub in _EVAL_COMMANDS},
}


_Instantiator = getattr(_lightning_cli, "_InstantiatorFn", None)  # Lightning's, where it has one (2.3+)


if _Instantiator is not None:
    class _TopLevelHyperparameters(_Instantiator):
        """Lightning's instantiator, giving the config's hyper-parameters to the configured class only.

        Lightning registers it for every LightningModule the model's config builds, so a module nested in it --
        ``CoTeaching(model=MyModule(...))`` -- got the wrapper's hyper-parameters from its ``save_hyperparameters()``
        (a newcomer's ``self.hparams.lr`` raised AttributeError); a nested one now keeps its own, as in Python."""

        def __call__(self, class_type: type, *args: Any, applied_instantiation_links: dict, **kwargs: Any) -> Any:
            dump = self.cli.config.get(self.cli.subcommand) if self.cli.subcommand else self.cli.config
            node = dump.get(self.key) if dump is not None else None
            path = node.get("class_path") if isinstance(node, Namespace) else None
            top = _import_quietly(path) if path else None
            if top is not None and class_type is not top:
                return class_type(*args, **kwargs)
            return super().__call__(class_type, *args, applied_instantiation_links=applied_instantiation_links,
                                    **kwargs)


_RICH_BAR_TEXT = "━•"  # what Lightning's RichProgressBar writes beside ASCII


# what `lit-robust --help` lists and each sub-command's `--help` starts with: Lightning takes the first paragraph of
# the Trainer method's docstring, whose line break cut test's and predict's ("... never run on your")
DEMO_HELP = ("A plain baseline against ITLM on scikit-learn's digits with 40% wrong labels (no download, ~10-30 s); "
             "`lit-robust demo --help` for its flags.")
SUBCOMMAND_HELP = {
    "fit": "Train the model with the config's callbacks (ITLM, a filter, ...); checkpoints and the per-sample report "
           "go into the run's folder, `--ckpt_path last` resumes.",
    "validate": "One pass over the validation set with the weights of `--ckpt_path` (a file, `last` or `best`).",
    "test": "One pass over the test set with the weights of `--ckpt_path` (a file, `last` or `best`).",
    "predict": "Predictions with the weights of `--ckpt_path` (a file, `last` or `best`), written to predictions.csv "
               "in the run's folder.",
}


def _robust_parser_class(given: type | None) -> type[LightningArgumentParser]:
    """The parser class of a :class:`RobustCLI`: ``RobustArgumentParser``, or a user's own ``parser_class=`` (where
    Lightning takes the argument) with RobustArgumentParser's behaviour mixed in. Making the parser in
    ``init_parser`` had dropped a subclass's ``RobustCLI(parser_class=MyParser)`` without a word."""
    if given is None or given is LightningArgumentParser or issubclass(RobustArgumentParser, given):
        return RobustArgumentParser
    if issubclass(given, RobustArgumentParser):
        return given
    return type(given.__name__, (RobustArgumentParser, given), {"__module__": given.__module__})


class RobustCLI(LightningCLI):
    """LightningCLI with the progress bar added to (not replacing) the config's callbacks and the fit's own
    checkpoint behind ``--ckpt_path last``/``best``."""

    def __init__(self, *args: Any, given_argv: Sequence[str] | None = None, **kwargs: Any) -> None:
        self._given_argv = None if given_argv is None else list(given_argv)  # as typed: for the next-step line
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # Lightning's own `init_parser` with RobustArgumentParser, as `LightningCLI(parser_class=...)` (new in
        # pytorch-lightning 2.5.1) would do
        kwargs.setdefault("dump_header", [f"{pl.__name__}=={pl.__version__}"])
        parser = _robust_parser_class(getattr(self, "parser_class", None))(**kwargs)
        parser.add_argument("-c", "--config", action=ActionConfigFile,
                            help="Path to a configuration file in json or yaml format.")
        return parser

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        # Lightning lists each sub-command with its Trainer method's first docstring paragraph, whatever the
        # sub-parser's description: the listed help is set here, the description through `parser_kwargs`
        super()._add_subcommands(parser, **kwargs)
        listed = getattr(parser._subcommands_action, "_choices_actions", None)
        for choice in listed or ():
            choice.help = SUBCOMMAND_HELP.get(choice.dest, choice.help)
        if listed is not None and parser is self.parser:
            # `demo` is run before LightningCLI parses anything (`run`); listed here only, a docs newcomer did not
            # find it in `lit-robust --help`
            listed.insert(0, argparse._SubParsersAction._ChoicesPseudoAction("demo", (), DEMO_HELP))
        if parser is self.parser:
            parser.prog = "lit-robust"  # `python -m lit_robust` named itself `__main__.py`
        for name, sub in self._subcommand_parsers.items():
            # argparse builds a sub-command's name from the parent's usage: every parser error began
            # "usage: lit-robust [-h] [-c CONFIG] {demo,fit,...} ... [options] fit", and its tip told the user to run
            # that line with `--help` (a reviewer's)
            sub.prog = f"lit-robust {name}"
            for group in sub._action_groups:  # the method's arguments, titled with its cut docstring paragraph
                if any(a.dest == "ckpt_path" for a in group._group_actions):
                    group.title = f"Arguments of `{name}`"

    _complete = False  # `fit --ckpt_path last` found a finished fit: `fit` runs nothing (`_say_if_complete`)

    def _add_instantiators(self) -> None:
        super()._add_instantiators()
        if _Instantiator is not None:  # the same registrations, with nested modules keeping their own hparams
            for key, cls, sub in (("model", self._model_class, self.subclass_mode_model),
                                  ("data", self._datamodule_class, self.subclass_mode_data)):
                self.parser.add_instantiator(_TopLevelHyperparameters(cli=self, key=key),
                                             _lightning_cli._get_module_type(cls), subclasses=sub)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        for action in parser._actions:  # Trainer's docstring would describe `last` as "of the previous trainer.fit"
            if action.dest == "ckpt_path":
                action.help = CKPT_PATH_HELP[subcommand]
        return parser

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # LightningCLI warns whenever `args` and `sys.argv` are both given; `main` always passes the argv it read
        try:
            self.config = parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)
        except UnicodeDecodeError as err:  # a checkpoint given as `--config`, a UTF-16 YAML: a traceback
            raise UserInputError(_undecodable_config(err)) from None
        sub = self.config.get("subcommand") if isinstance(self.config, Namespace) else None
        seed = self.config.get(f"{sub}.seed_everything" if sub else "seed_everything")
        if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed <= SEED_MAX:
            # Lightning's `seed_everything` refused it later, inside LightningCLI's constructor: a 30-line traceback
            # ending in "-1 is not in bounds, numpy accepts from 0 to 4294967295"
            raise UserInputError(f"`seed_everything` must be true, false or an integer in [0, {SEED_MAX}] (the range "
                                 f"Lightning's `seed_everything` takes), got {seed}.")
        _check_trainer_numbers(self.config[sub] if sub else self.config)
        dropped = _replaced_callbacks(self.config[sub].get("trainer.callbacks") if sub else None)
        if dropped:
            # a list replaces a list: a second `--config`, or `--trainer.callbacks X`, dropped the first config's ITLM
            # and the fit ran plain training without a word (a reviewer's)
            message = (f"lit-robust {sub}: note: `trainer.callbacks` of "
                       + "; ".join(f"{path} ({', '.join(names)})" for path, names in dropped)
                       + " were replaced by a later `--config` or `--trainer.callbacks`, so they do not run. To add "
                       "callbacks to a config's list write `callbacks+:` in the later YAML, or "
                       "`--trainer.callbacks+=CLASS` on the command line.\n")
            if first_process_to_say(message):
                sys.stderr.write(message)
        for key, old, new, kept in _carried_init_args(self.config[sub] if sub else None):
            # `--data lit_robust.TableDataModule` on a config of MNIST landmarks kept its `val_size: 1000` and half of a
            # regression newcomer's table went to validation; `--model LinearProbe` kept an image model's `lr` (two
            # newcomers, without a word)
            listed = ", ".join(f"`{arg}`={value!r}" for arg, value in kept)
            message = (f"lit-robust {sub}: note: `{key}` is {new} here, in place of the config's {old}, and it keeps "
                       f"the config's {listed} (jsonargparse carries over the arguments the new class takes too). "
                       f"Give them on the command line (`--{key}.init_args.NAME VALUE`) for other values.\n")
            if first_process_to_say(message):
                sys.stderr.write(message)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI rebuilds the model from the hyper-parameters saved in a checkpoint *file* given as
        # `--ckpt_path`, over the config and the command line. As it does, and also for a checkpoint saved from the
        # Python API (its hyper-parameters name no class: the config's model class is meant; LightningCLI gave up
        # on those); hyper-parameters that do not fit that class are one line, and each value of the user's that
        # they replace is named in a warning.
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = dict(read_checkpoint(ckpt_path).get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        model = self.config[sub].get("model")
        class_path = model.get("class_path") if isinstance(model, Namespace) else None
        if "_class_path" in hparams:
            saved_class = hparams.pop("_class_path")
            mine, theirs = _import_quietly(class_path or ""), _import_quietly(saved_class)
            if isinstance(mine, type) and isinstance(theirs, type) and not issubclass(theirs, mine):
                # LightningCLI would quietly build the checkpoint's class instead of the config's (a SimCLR checkpoint
                # under the LinearProbe config: "No test_step() method defined", a newcomer's run)
                raise UserInputError(
                    f"`--ckpt_path {ckpt_path}` was written by a fit of {saved_class}, but the config's model is "
                    f"{class_path}: is it a checkpoint of another model (e.g. the pretraining stage's)? Pass a "
                    f"checkpoint of {'an' if mine.__name__[:1] in 'AEIOU' else 'a'} {mine.__name__} fit, or the config "
                    f"of {saved_class}.")
            class_path = saved_class
            saved: dict[str, Any] = {"class_path": class_path, "dict_kwargs": hparams}
        else:
            saved = {"class_path": class_path, "init_args": hparams} if class_path else hparams
        before = _model_args(self.config.get(sub))
        exit_on_error, self.parser.exit_on_error = self.parser.exit_on_error, False
        try:
            self.config = self.parser.parse_object({sub: {"model": saved}}, self.config)
        except ArgumentError as err:
            problem = "; ".join(line.strip() for line in str(err).splitlines()[1:]
                                if line.strip() and not line.strip().startswith("Problem with given class_path"))
            raise UserInputError(
                f"`--ckpt_path {ckpt_path}`: the hyper-parameters saved in it ({', '.join(sorted(hparams))}) do not "
                f"fit the config's model {class_path} ({problem}); is it a checkpoint of another model?") from None
        finally:
            self.parser.exit_on_error = exit_on_error
        after = _model_args(self.config.get(sub))
        # an argument the config leaves `None` is read from the data at setup (`in_features`, `num_classes`): the
        # checkpoint's value is that reading, not a replacement (a table newcomer's refusal of a changed table ended
        # "which replaced the config's in_features=None -> 13: is it a checkpoint of another fit?" of the same fit)
        changed = {k: (before[k], after.get(k)) for k in before
                   if k in after and after[k] != before[k] and before[k] is not None}
        if changed:
            listed = ", ".join(f"{k}={old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
            self._ckpt_rebuilt = listed  # named again if the run then fails on the rebuilt model (see `main`)
            rank_zero_warn(f"`--ckpt_path`: the model is rebuilt from the hyper-parameters saved in the checkpoint "
                           f"(Lightning's rule), which replace the config's / command line's {listed}.")

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """LightningCLI's ``optimizer:`` / ``lr_scheduler:`` (``--optimizer Adam``), with a fresh optimizer and
        scheduler at every ``configure_optimizers`` call, as a module's own method makes them. Lightning builds one
        pair when the CLI starts and hands back the same objects on every call, so ITLM's re-drawn rounds kept the
        whole fit's Adam moments and scheduler position (a CLI newcomer's StepLR ran 20 epochs deep by the last round:
        learning rate 2.4e-6, test accuracy 0.441)."""
        parser = self._parser(subcommand)
        opt_init = self._automatic_init(parser._optimizers)
        own = getattr(type(self.model), "cli_optimizer_note", None)
        if opt_init and own:  # before Lightning's warning that it overrides the module's method
            raise UserInputError(f"`optimizer:` (`--optimizer`) replaces the module's `configure_optimizers` with one "
                                 f"optimizer, but {type(self.model).__name__} {own}")
        super()._add_configure_optimizers_method_to_model(subcommand)
        bound = self.model.__dict__.get("configure_optimizers")
        made = getattr(getattr(bound, "__func__", None), "keywords", None)
        if not opt_init or not isinstance(made, dict) or "optimizer" not in made:
            return  # no `optimizer:` in the config: the module's own method stays
        sched_init = self._automatic_init(parser._lr_schedulers)
        cli = self

        def configure_optimizers(module: pl.LightningModule) -> Any:
            optimizer = _lightning_cli.instantiate_class(module.parameters(), opt_init)
            scheduler = _lightning_cli.instantiate_class(optimizer, sched_init) if sched_init else None
            return cli.configure_optimizers(module, optimizer, scheduler)

        update_wrapper(configure_optimizers, self.configure_optimizers)  # Lightning's `is_overridden` reads it
        self.model.configure_optimizers = MethodType(configure_optimizers, self.model)

    def _automatic_init(self, registry: dict[str, Any]) -> Any:
        """The config's ``class_path``/``init_args`` of the optimizer or scheduler group Lightning links to the
        model's ``configure_optimizers`` (``"AUTOMATIC"``; at most one of each, which Lightning checked)."""
        for key, (cls, link) in registry.items():
            if link == "AUTOMATIC":
                init = self._get(self.config_init, key)
                if init and not isinstance(cls, tuple):
                    init = _lightning_cli._global_add_class_path(cls, init)
                if init:
                    return init
        return None

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        cfg = self._get(self.config_init, "trainer", default={})
        callbacks = cfg.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        added: list[pl.Callback] = []
        if cfg.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            # Lightning's rich bar ended an ASCII or cp1252 stdout's fit at teardown with UnicodeEncodeError on its
            # "•" (a docs auditor); tqdm, on stderr, falls back to ASCII by itself
            added.append(RichProgressBar() if stdout_encodes(_RICH_BAR_TEXT) else TQDMProgressBar())
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in callbacks):
            added.append(PredictionWriter())  # LightningCLI drops what `trainer.predict` returns: write it
        config = self._dumped_config("fit") if self.subcommand == "fit" else None
        if config is not None:
            added.append(_ConfigInCheckpoint(config))
        if self.subcommand == "fit":
            added.append(_FitEndMark())
        if added:  # `callbacks=` in kwargs would replace the config's list: extend it instead
            kwargs["callbacks"] = callbacks + added
        trainer = super().instantiate_trainer(**kwargs)
        if _runs_in_started_processes(trainer):
            # `ddp_spawn` / `ddp_fork`: the run folder's version is chosen here, before the processes start with a
            # copy of the Trainer, so that this process names the folder they write (it opened the next version
            # after the fit, and the end of fit's lines named a folder with nothing in it)
            for logger in trainer.loggers:
                if type(logger).__name__ in ("CSVLogger", "TensorBoardLogger"):
                    _ = logger.version
        sigterm_without_collectives(trainer)
        if _runs_in_started_processes(trainer):
            _RESTORE_SIGTERM.append(forward_sigterm_to_started_processes())
        _note_more_processes_than_cores(trainer)
        return trainer

    # -- checkpoints of an earlier fit -------------------------------------------------------------------
    def before_fit(self) -> None:
        enable_reports([*self.trainer.callbacks, *model_callbacks(self.model), self.model])
        check_checkpoint_dirs(self.trainer.callbacks)
        self._resolve_ckpt_path("fit")  # after: it looks for the reports of a fit that `last` found

    def before_validate(self) -> None:
        self._resolve_ckpt_path("validate")

    def before_test(self) -> None:
        self._resolve_ckpt_path("test")

    def before_predict(self) -> None:
        self._predict_advice = predict_step_advice(self.model)
        self._resolve_ckpt_path("predict")

    def _resolve_ckpt_path(self, subcommand: str) -> None:
        cfg = self.config_init[subcommand]
        ckpt = cfg.get("ckpt_path")
        if ckpt is None:
            if subcommand in _EVAL_COMMANDS:
                self._no_ckpt_note = no_checkpoint_note(
                    subcommand, self._last_fit_checkpoint(self._fit_signature(subcommand))[0])
                self._say_no_ckpt_note()  # before the run, as below its metrics: one form, no warning source line
            return
        ckpt = str(ckpt)
        if ckpt not in ("last", "best"):
            if not os.path.isfile(ckpt) and not ckpt.startswith(("hpc", "registry")) and "://" not in ckpt:
                raise UserInputError(f"`--ckpt_path` must be an existing checkpoint file, `last` or `best`; "
                                     f"{ckpt!r} " + ("is a folder" if os.path.isdir(ckpt) else "does not exist")
                                     + ".")
            if subcommand == "fit" and os.path.isfile(ckpt):
                self._refuse_another_seed(ckpt)
            return
        mine = self._fit_signature(subcommand)
        found, searched = self._last_fit_checkpoint(mine)
        if found is not None and subcommand in _EVAL_COMMANDS:
            self._say_other_length(subcommand, ckpt, found, mine)
        if found is None:
            if subcommand == "fit" and ckpt == "last":  # Lightning's own meaning: resume if there is anything
                self._say_fresh_fit(mine, searched)
                # and so it is: `last` passed on, Lightning would take the newest `last.ckpt` in a ModelCheckpoint
                # `dirpath` shared with another config's fit, and resume that (a release auditor's never-run config
                # "started from scratch", trained nothing and wrote the other fit's report)
                cfg["ckpt_path"] = None
                return
            known_other = None if mine is None else find_last_checkpoint(
                self.trainer, lambda path: _saved_fit_signature(path) not in (None, mine))[0]
            others = "" if known_other is None else (
                " The checkpoints there come from fits with another model, data, callbacks or seed (their version "
                "folder's config.yaml differs)" + _closest_fit_note(mine, self.trainer, subcommand == "fit") + ".")
            raise UserInputError(
                f"`--ckpt_path {ckpt}`: no checkpoint of an earlier fit with this config was found (looked in "
                f"{', '.join(searched)}).{others}{self._unknown_fits_note()} Run `lit-robust fit` with this config "
                "first (a ModelCheckpoint of your own needs `save_last: true`, and no `monitor` for ITLM's final "
                "model), or pass the path of a checkpoint file.")
        if ckpt == "best":
            best = _best_model_path(found)
            if best is None:
                raise UserInputError(f"`--ckpt_path best`: the last checkpoint of the earlier fit ({found}) records "
                                     "no best model (its ModelCheckpoint has no `monitor`); use `--ckpt_path last` "
                                     "or a checkpoint file.")
            found = best
        epochs_done = self._epochs_done(ckpt, found)
        cfg["ckpt_path"] = found
        if subcommand in _EVAL_COMMANDS:
            # a DDP newcomer's 1-process `test` loaded their 2-process fit (another batch size) where they had two
            # fits of the config, and nothing said which; said below the metrics (a run that fails on its config
            # says that error alone)
            self._loaded_note = (f"`--ckpt_path {ckpt}` is {found} (the newest fit with this model, data, callbacks "
                                 "and seed; its batch size, strategy and devices may differ).")
        if subcommand == "fit":
            self._complete = self._say_if_complete(found, epochs_done)
        # the earlier fit logged into another version folder: Lightning's note that ModelCheckpoint's dirpath
        # changed is expected here, not news
        warnings.filterwarnings("ignore", message="The dirpath has changed from", category=UserWarning)


    def after_validate(self) -> None:
        self._say_no_ckpt_note()
        self._say_loaded()
        self._say_if_nothing_ran("validate")

    def after_test(self) -> None:
        self._say_no_ckpt_note()
        self._say_loaded()
        self._say_if_nothing_ran("test")

    def after_predict(self) -> None:
        self._say_no_ckpt_note()
        self._say_loaded()
        self._say_if_nothing_ran("predict")

    def _say_if_nothing_ran(self, subcommand: str) -> None:
        """Say when the data gave the command no batch at all: an auditor's `validate` with `val_size 0` exited 0
        after its checkpoint notes, with no word that nothing was validated."""
        attr, split = {"validate": ("num_val_batches", "validation"), "test": ("num_test_batches", "test"),
                       "predict": ("num_predict_batches", "predict")}[subcommand]
        counts = getattr(self.trainer, attr, None)
        if (not isinstance(counts, list) or any(c != 0 for c in counts) or not self.trainer.is_global_zero
                or _runs_in_started_processes(self.trainer)):  # `ddp_spawn`: counted in those processes, not here
            return
        size = {"validate": " (its `val_size` of 0, say)", "test": " (its `test_size` of 0, say)"}.get(subcommand, "")
        sys.stderr.write(f"lit-robust {subcommand}: note: the data gave no {split} batches{size}, so nothing ran "
                         "and no metric was computed.\n")

    def predict(self, **kwargs: Any) -> None:
        """``trainer.predict``; an error raised inside Lightning's default ``predict_step`` (a module without its own,
        whose ``forward`` got the whole batch) gets the advice to add one (:func:`predict_step_advice`), in one line."""
        try:
            self.trainer.predict(**kwargs)
        except Exception as err:
            said = getattr(self, "_predict_advice", None)
            if said is None or not raised_in_the_default_predict_step(err):
                raise
            raise ValueError(f"{said}: `forward` got the whole batch and raised {type(err).__name__}: {err}") from err

    def fit(self, **kwargs: Any) -> None:
        """``trainer.fit``, unless ``--ckpt_path last`` found a fit that already ran every epoch: Lightning would
        open a new version folder with a config and a plot of the old rounds, print that fit's round table as if
        just trained and train nothing; this skips it (:meth:`_say_if_complete` said why)."""
        if not self._complete:
            self.trainer.fit(**kwargs)  # `_FitEndMark` marks a fit that ran to its end, in the processes that ran it
            if _runs_in_started_processes(self.trainer):
                _point_checkpoints_at_the_run(self.trainer)
            self._fail_if_the_final_model_collapsed()
            self._say_next_step()

    def _say_next_step(self) -> None:
        """Where the fitted model is and the command that tests it: a hurried CLI user's filter fits ended on
        "`Trainer.fit` stopped" and a report path, with no checkpoint path and no word of `test --ckpt_path last`."""
        if self.trainer.interrupted or not self.trainer.is_global_zero or self._given_argv is None:
            return
        if type(self.model).test_step is pl.LightningModule.test_step:
            # nothing to test (a GAN's results are its sample grids); a SimCLR user's pretraining ended without the
            # path of the checkpoint the fine-tuning needs, found with `ls`
            found = find_last_checkpoint(self.trainer)[0]
            if found is not None:
                from lit_robust.models.simclr import SimCLR

                after = (f"; fine-tune on it with `--model.backbone_checkpoint {found}`"
                         if isinstance(self.model, SimCLR) else "")
                sys.stderr.write(f"lit-robust fit: the fitted model is {found}{after}.\n")
            return
        try:  # an unlabelled anomaly table has no test split, and says so when asked for one
            if self.datamodule is not None and _runs_in_started_processes(self.trainer):
                # `ddp_spawn`: the datamodule was set up in the processes the fit ran in, not in this one
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # said once already, by the fit
                    self.datamodule.setup("test")
            loaders = self.datamodule.test_dataloader() if self.datamodule is not None else None
        except Exception:  # noqa: BLE001 - no test split, whatever the datamodule raises for it
            loaders = None
        found = find_last_checkpoint(self.trainer)[0]
        if found is None:
            return
        # where a `--ckpt_path` file's hyper-parameters replaced values of the command line, the fit's config is not
        # the command line's, and `last` found another fit of that command line (a modules newcomer's resume with
        # `--model.drop_ratio 0.1` trained `'auto'`, and the printed command tested another fit's 0.1 model): the file
        ckpt = found if getattr(self, "_ckpt_rebuilt", None) else "last"
        if loaders:
            sys.stderr.write(f"lit-robust fit: the fitted model is {found}; test it on the test split with\n"
                             f"  {test_command(self._given_argv, ckpt=ckpt)}\n")
            return
        # no test split (an anomaly table without labels): an anomaly newcomer's fits ended without the checkpoint's
        # path, and the way on is `predict` on new data, which the datamodule reads from `predict_path`/`_root`
        params = inspect.signature(type(self.datamodule).__init__).parameters if self.datamodule is not None else {}
        arg = next((a for a in ("predict_path", "predict_root") if a in params), None)
        if arg is None:
            sys.stderr.write(f"lit-robust fit: the fitted model is {found}.\n")
            return
        new = "NEW_ROWS.csv" if arg == "predict_path" else "NEW_IMAGES/"
        what = ("your file of new rows, with the training table's columns" if arg == "predict_path" else
                "your folder of new images")
        sys.stderr.write(f"lit-robust fit: the fitted model is {found}; there is no test split to test it on: score "
                         f"new data with\n  {test_command(self._given_argv, 'predict', ckpt)} --data.{arg} {new}\n"
                         f"  ({new}: {what}).\n")

    def _fail_if_the_final_model_collapsed(self) -> None:
        """Exit 1 when the final model of an ITLM-style callback did not learn (:func:`collapse_error`). Under
        ``ddp_spawn`` the callbacks ran in the started processes, whose rank 0 wrote the verdict into the fit-end mark
        (:class:`_FitEndMark`): this process's copies never ran (a newcomer's fit at learning rate 80 collapsed every
        round and exited 0 under ``ddp_spawn``, 1 under ``ddp``)."""
        if self.trainer.interrupted:
            return
        if _runs_in_started_processes(self.trainer):
            folder = _own_log_dir(self.trainer)
            try:
                mark = json.loads((Path(folder) / FIT_END_MARK).read_text()) if folder else {}
            except (OSError, ValueError):
                mark = {}
            message = mark.get("collapsed") if isinstance(mark, dict) else None
        else:
            message = collapse_error(self.trainer, self.model)
        if message is None:
            return
        if self.trainer.is_global_zero:
            sys.stderr.write(message)
        raise SystemExit(1)

    def _refuse_another_seed(self, ckpt: str) -> None:
        """Raise when ``fit --ckpt_path FILE`` resumes a fit of another ``seed_everything``: the resume goes on with
        that fit's seed, while the new run folder's config.yaml records this one, and a preemptible-cluster user's
        ``test --seed_everything 1 --ckpt_path last`` then tested the seed-0 fit as seed 1's (0.829 for 0.887)."""
        theirs, mine = _saved_fit_signature(ckpt), self._fit_signature("fit")
        seeds = (None if theirs is None else theirs.get("seed_everything"),
                 None if mine is None else mine.get("seed_everything"))
        if not all(type(v) is int for v in seeds) or seeds[0] == seeds[1]:  # `false`/None: no seed to compare
            return
        raise UserInputError(f"`--ckpt_path {ckpt}` resumes a fit with `seed_everything` {seeds[0]}, but this run's is "
                             f"{seeds[1]}: the resume continues that fit (lit_robust's callbacks restore its random "
                             f"state), while this run's folder would record {seeds[1]}. Pass `--seed_everything "
                             f"{seeds[0]}` to resume that fit, or leave out `--ckpt_path` for a new fit with seed "
                             f"{seeds[1]}.")

    @staticmethod
    def _epochs_done(ckpt: str, found: str) -> Any:
        """The epochs the fit had finished when it wrote the checkpoint ``--ckpt_path last``/``best`` found: its
        ``epoch`` + 1, but its ``epoch`` for one written inside that epoch (``every_n_train_steps``) before its last
        batch; ``None`` when it holds more than weights, which Lightning loads itself. A :class:`UserInputError` when
        the file cannot be read: a preemptible-cluster user's fit killed while it wrote one ended the resume in
        "OSError: [Errno 22] Invalid argument" and a traceback."""
        from lit_robust.callbacks._resume import mid_epoch_checkpoint

        try:
            checkpoint = torch.load(found, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError:  # readable, but not weights only (a reviewer's `Path` in the checkpoint)
            return None
        except Exception as exc:  # noqa: BLE001 - a zip archive cut short, an empty file: no checkpoint to resume
            why = (str(exc).strip().splitlines() or [""])[0][:160]
            raise UserInputError(f"`--ckpt_path {ckpt}` found {found}, but torch cannot read it ({type(exc).__name__}"
                                 f"{': ' + why if why else ''}; {os.path.getsize(found)} bytes): a fit stopped while "
                                 "writing it leaves such a file. Pass an earlier checkpoint of that fit as "
                                 "`--ckpt_path FILE`, or move the damaged file away and run again.") from None
        epoch = checkpoint.get("epoch")
        if not isinstance(epoch, int):
            return None
        point = mid_epoch_checkpoint(checkpoint)
        # a `last.ckpt` of `every_n_train_steps` written inside the last epoch read as a finished fit: `fit --ckpt_path
        # last` of a preempted job trained nothing of that epoch's remaining steps and exited 0
        if point is not None:
            return epoch if not point.last_batch else epoch + 1
        try:  # written after an epoch's end had run in full (Lightning counts it completed): `epoch` is the next one
            total = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
            after_end = total["completed"] == total["processed"] == total["started"] == epoch
        except (KeyError, TypeError):
            after_end = False
        # a resume of a last-batch checkpoint that trained nothing (below: `_end_of_fit_pending`) saves one such: its
        # next `--ckpt_path last` read "already ran its 4 epochs (`max_epochs` 3)"
        return epoch if after_end else epoch + 1

    def _missing_reports(self, found: str) -> list[Any]:
        """The callbacks (or module) set to write a per-sample report into the run folder, whose file is not in the
        folder of the fit that wrote ``found``: a fit killed after its last checkpoint and before its report. Only
        for a checkpoint in its fit's own folder (``<run>/checkpoints/``): with a ModelCheckpoint ``dirpath``
        elsewhere the run folder is not known, and a reviewer's finished fits were "resumed" again and again."""
        from lit_robust.callbacks._report_file import report_enabled

        if Path(found).parent.name != "checkpoints":
            return []
        run = Path(found).parent.parent
        missing = []
        for cb in [*self.trainer.callbacks, *model_callbacks(self.model), self.model]:
            if getattr(cb, "report_dir", None) is not None:
                continue  # a folder of the user's own: a report there may be another fit's
            if not report_enabled(getattr(cb, "report", None), None):
                continue
            name = getattr(cb, "_report_name", None) or getattr(getattr(cb, "_report", None), "filename", None)
            fmt = getattr(cb, "report_format", None)
            if isinstance(name, str) and isinstance(fmt, str) and not (run / f"{name}.{fmt}").is_file():
                missing.append(cb)
        return missing

    @staticmethod
    def _end_of_fit_pending(found: str) -> bool | None:
        """For a checkpoint written at the final epoch's last batch, in that batch's ``on_train_batch_end`` (before
        the epoch's end: ``ModelCheckpoint(every_n_train_steps=...)``): whether the fit that wrote it stopped before
        its end-of-fit work (no :data:`FIT_END_MARK` of that step in its run folder), ``None`` where that folder is
        not known (a ModelCheckpoint ``dirpath`` elsewhere); ``False`` for any other checkpoint."""
        from lit_robust.callbacks._resume import epoch_whose_end_was_skipped

        try:
            checkpoint = torch.load(found, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - `_epochs_done` read it already; one with more than weights: not this case
            return False
        if epoch_whose_end_was_skipped(checkpoint) is None:
            return False
        if Path(found).parent.name != "checkpoints":
            return None
        try:
            ended = json.loads((Path(found).parent.parent / FIT_END_MARK).read_text())["global_step"]
        except (OSError, ValueError, KeyError, TypeError):
            return True
        return not (isinstance(ended, int) and ended >= checkpoint.get("global_step", 0))

    def _say_if_complete(self, found: str, epochs_done: Any) -> bool:
        """Whether ``fit --ckpt_path last`` found a fit which already ran every epoch (it would train nothing), said
        on stderr (a DDP newcomer's requeued job "resumed" an earlier, finished fit, printed its round table as if
        just trained and exited 0). Not when that fit's per-sample report is missing: the resumed fit, which trains
        nothing, writes it (a preemptible-cluster user's kill after the last checkpoint lost it for good)."""
        max_epochs = self.trainer.max_epochs
        complete = (isinstance(epochs_done, int) and max_epochs is not None and max_epochs >= 0
                    and epochs_done >= max_epochs)
        pending = self._end_of_fit_pending(found) if complete else False
        if pending:
            # the fit was stopped in its final validation or end-of-fit work, after the step checkpoint of its last
            # batch (a preempted job's): "nothing to train" left that work undone for good. Lightning resumes such a
            # checkpoint after the epoch's end: it runs the end of the fit, not that epoch's validation
            if self.trainer.is_global_zero:
                sys.stderr.write(f"lit-robust fit: note: `--ckpt_path last` found {found}, written at the last batch "
                                 f"of the fit's final epoch ({epochs_done} of {max_epochs}), and its folder has no "
                                 f"{FIT_END_MARK}, which a fit writes when it runs to its end (a fit of an earlier "
                                 "lit-robust wrote none): taken for a fit stopped before its end, this run "
                                 "trains nothing and does the end-of-fit work (callbacks' reports and plots, "
                                 "`on_train_end`) into a new run folder. Lightning does not run that epoch's "
                                 "validation again: its `val_*` metrics are missing (`lit-robust validate --ckpt_path last` measures them).\n")
            return False
        missing = self._missing_reports(found) if complete else []
        if missing:
            run = str(Path(found).parent.parent)
            for cb in missing:  # into the killed fit's folder, where the next `--ckpt_path last` looks for it
                cb.report_dir = run
            if self.trainer.is_global_zero:
                sys.stderr.write(f"lit-robust fit: note: `--ckpt_path last` found {found}, a fit that already ran its "
                                 f"{epochs_done} epochs but stopped before writing the per-sample report of "
                                 f"{', '.join(type(cb).__name__ for cb in missing)}: this run trains nothing and "
                                 f"writes it into {run}.\n")
            return False
        if complete and self.trainer.is_global_zero:
            # ITLM's rounds add up to `max_epochs`: raising it alone is refused, raising both starts a new fit (a docs
            # auditor followed "raise `--trainer.max_epochs`" into that error)
            rounds = any(isinstance(getattr(cb, "round_epochs", None), (list, tuple)) for cb in self.trainer.callbacks)
            longer = ("A fit with rounds (`round_epochs`) cannot be lengthened by a resume: for longer rounds start a "
                      "new fit, without `--ckpt_path`" if rounds else
                      "To train longer raise `--trainer.max_epochs`; to start again leave out `--ckpt_path`")
            # a last-batch step checkpoint in a ModelCheckpoint `dirpath` outside its run folder: whether that fit
            # ended is not known here
            unknown = ("" if pending is not None else
                       " It was written at the final epoch's last batch, before that epoch's end: if that fit was "
                       "stopped there (its final validation, reports or plots missing), pass the file as "
                       "`--ckpt_path FILE` and Lightning resumes it and does the end-of-fit work.")
            sys.stderr.write(f"lit-robust fit: note: `--ckpt_path last` found {found}, a fit that already ran its "
                             f"{epochs_done} epochs (`max_epochs` {max_epochs}): nothing to train, so nothing runs and "
                             f"nothing is written. {longer}.{unknown}\n")
        return complete

    def _say_fresh_fit(self, mine: dict[str, Any] | None, searched: list[str]) -> None:
        """``fit --ckpt_path last`` with no earlier fit of this config starts from scratch (Lightning's meaning), but
        Lightning says "there is no last checkpoint available ... HINT: Set ModelCheckpoint(..., save_last=True)",
        wrong where a fit with another setting left one (a newcomer changed `auto_margin` to resume and trained 25
        epochs from scratch without a word of why): say which fit was closest and what differs, instead."""
        warnings.filterwarnings("ignore", message=r".*is set, but there is no last checkpoint available")
        if not self.trainer.is_global_zero:
            return
        closest = "" if mine is None else _closest_fit_note(mine, self.trainer).removeprefix("; ")
        why = (f" The checkpoints found come from fits with another config; {closest}." if closest
               else f" (Looked in {' and '.join(searched)}.)")
        sys.stderr.write(f"lit-robust fit: note: `--ckpt_path last` found no checkpoint of an earlier fit with this "
                         f"config, so this fit starts from scratch.{why}{self._unknown_fits_note()}\n")

    def _say_no_ckpt_note(self) -> None:
        # said before the run, and again below its metrics: the first scrolls away under Lightning's output and the
        # metrics printed last are what a user reads
        note = getattr(self, "_no_ckpt_note", None)
        if note is not None and self.trainer.is_global_zero:
            sys.stderr.write(f"lit-robust {self.subcommand}: note: {note}\n")

    def _say_loaded(self) -> None:
        note = getattr(self, "_loaded_note", None)
        if note is not None and self.trainer.is_global_zero:
            sys.stderr.write(f"lit-robust {self.subcommand}: {note}\n")

    def _last_fit_checkpoint(self, mine: dict[str, Any] | None) -> tuple[str | None, list[str]]:
        """The checkpoint ``--ckpt_path last`` loads -- the newest of a fit whose config has the signature
        ``mine`` (any, for ``None``) -- and the folders searched."""
        # a checkpoint whose fit's config is unknown (written by a fit in Python, into the same lightning_logs) is
        # not "an earlier fit with this config": a docs reader's `test --ckpt_path last` tested their notebook's
        # plain baseline and said it was the newest fit with these callbacks, and `fit` resumed ITLM from it
        return find_last_checkpoint(self.trainer, None if mine is None else (
            lambda path: _saved_fit_signature(path) == mine))

    def _unknown_fits_note(self) -> str:
        """`` N checkpoints there, e.g. <path>, were written by fits outside `lit-robust fit` ...`` -- those
        ``--ckpt_path last`` passes over -- or ``""``."""
        found = fit_checkpoints(self.trainer, lambda path: _saved_fit_signature(path) is None)[0]
        if not found:
            return ""
        newest = max(found, key=lambda p: (os.path.getmtime(p), p))
        many = f"{len(found)} checkpoints there, the newest {newest}, were" if len(found) > 1 else f"{newest} was"
        return (f" {many} written by a fit outside `lit-robust fit` (no config recorded: a fit in Python, say), which "
                "`last` does not take; pass a file's path as `--ckpt_path` to use one.")

    def _say_other_length(self, subcommand: str, ckpt: str, found: str, mine: dict[str, Any] | None) -> None:
        """Note when the fit ``--ckpt_path last`` loads trained for another ``max_epochs``/``max_steps`` than this
        command line says (not part of a fit's identity: a resume may extend it), naming the newest fit of this
        config that trained as long, if any (a backdoor newcomer's `test` read a 2-epoch trial run's weights over
        the 20-epoch fit its command line described, and took its attack success for the defence's)."""
        config = self._dumped_config(subcommand)
        budget = None if config is None else training_budget(config)
        theirs = _saved_budget(found)
        if budget is None or theirs is None or theirs == budget or not self.trainer.is_global_zero:
            return
        differ = "; ".join(signature_differences({"trainer": budget}, {"trainer": theirs}))
        same = find_last_checkpoint(self.trainer, lambda p: _saved_fit_signature(p) == mine
                                    and _saved_budget(p) == budget)[0]
        other = (f" The newest that trained as long: {same} (pass it as `--ckpt_path`)." if same else "")
        sys.stderr.write(f"lit-robust {subcommand}: note: `--ckpt_path {ckpt}` loads the newest fit of this config, "
                         f"{found}, which trained for another length ({differ}).{other}\n")

    def _dumped_config(self, subcommand: str) -> dict[str, Any] | None:
        """This run's config as LightningCLI writes it into a fit's ``config.yaml``; ``None`` when it cannot be
        dumped."""
        try:
            return yaml.safe_load(self._parser(subcommand).dump(self.config[subcommand], skip_none=False))
        except Exception:  # noqa: BLE001 - an undumpable config: fall back to the newest checkpoint
            return None

    def _fit_signature(self, subcommand: str) -> dict[str, Any] | None:
        """What decides the fitted weights in this run's config (see :func:`fit_signature`)."""
        config = self._dumped_config(subcommand)
        return None if config is None else fit_signature(config)


#: Trainer arguments Lightning takes without a check, each with its allowed range and the test of it
_TRAINER_RANGES = {
    # 0 ended the fit's first step in a traceback, "ZeroDivisionError: integer modulo by zero"; -1 stepped at every
    # batch without a word
    "accumulate_grad_batches": ("an integer >= 1 (the batches whose gradients make one optimizer step)",
                                lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    # a negative value was taken and clipped nothing (Lightning skips clipping at <= 0) without a word; `.inf` too
    "gradient_clip_val": ("a finite number >= 0, or null (0 and null clip nothing)",
                          lambda v: _is_real(v) and math.isfinite(v) and v >= 0),
    # 0 ended the first epoch in a traceback, "ZeroDivisionError: integer modulo by zero"; -1 validated after every
    # epoch without a word
    "check_val_every_n_epoch": ("an integer >= 1, or null (validation every `val_check_interval` batches)",
                                lambda v: _is_int(v) and v >= 1),
    # an integer 0 ended the first step in a traceback, "ZeroDivisionError: integer modulo by zero" (a negative one
    # and a fraction outside [0, 1] Lightning refuses itself, in one line)
    "val_check_interval": ("an integer >= 1 (training batches), a float in [0.0, 1.0] (that fraction of each epoch), "
                           "or a duration",
                           lambda v: not _is_int(v) or v != 0),
    # -1 logged at every step (any step % -1 is 0) without a word
    "log_every_n_steps": ("an integer >= 0, or null (0 logs no training step)", lambda v: _is_int(v) and v >= 0),
    # -2 ran no sanity check without a word (Lightning reads only -1 as "every validation batch")
    "num_sanity_val_steps": ("an integer >= 0, -1 (every validation batch), or null",
                             lambda v: _is_int(v) and v >= -1),
    # a negative minimum was taken without a word
    "min_epochs": ("an integer >= 0, or null", lambda v: _is_int(v) and v >= 0),
    "min_steps": ("an integer >= 0, or null", lambda v: _is_int(v) and v >= 0),
}


def _check_trainer_numbers(config: Any) -> None:
    """Refuse a Trainer argument of :data:`_TRAINER_RANGES` outside its range, before anything is built."""
    if not isinstance(config, Namespace):
        return
    for key, (allowed, fits) in _TRAINER_RANGES.items():
        value = config.get(f"trainer.{key}")
        if value is not None and not fits(value):
            raise UserInputError(f"`{key}` must be {allowed}, got {value!r}.")
    for low, high, endless in (("min_epochs", "max_epochs", -1), ("min_steps", "max_steps", -1)):
        # `min_epochs 5` beside `max_epochs 2` trained 2 epochs without a word (the maximum wins)
        least, most = config.get(f"trainer.{low}"), config.get(f"trainer.{high}")
        if _is_int(least) and _is_int(most) and most != endless and least > most:
            raise UserInputError(f"`{low}` must be at most `{high}` ({most}; the fit stops there), got {least}.")


def _closest_fit_note(mine: dict[str, Any], trainer: pl.Trainer, resume: bool = True) -> str:
    """``; the closest, <path>, differs in ...``: the checkpoint whose fit's config differs from ``mine`` in the
    fewest keys (a ``last.ckpt`` first, then the newest of those), named with its differences (a CLI newcomer's
    ``--ckpt_path last`` failed after a fit with other ``round_epochs`` without saying which key); ``""`` when no
    fit's config can be read."""
    ranked = []
    # every checkpoint file, not only the `last.ckpt`s: a docs auditor's trial fit without one, a single key away, lost
    # to another data set's fit that had one
    for path in {p for d in _checkpoint_dirs(trainer) for p in glob.glob(os.path.join(d, "*.ckpt"))}:
        theirs = _saved_fit_signature(path)
        differing = [] if theirs is None else _differing_keys(mine, theirs)
        if differing:
            not_last = not os.path.basename(path).startswith(ModelCheckpoint.CHECKPOINT_NAME_LAST)
            ranked.append((len(differing), not_last, -os.path.getmtime(path), path, theirs))
    if not ranked:
        return ""
    *_, path, theirs = min(ranked, key=lambda r: r[:4])
    differences = "; ".join(signature_differences(mine, theirs))
    keys = _differing_keys(mine, theirs)
    if resume and any(k.startswith("callbacks") for k in keys):
        # a resume needs the callbacks' arguments it was written with: passing the file was then refused (a resume
        # newcomer's changed `keep_ratio`)
        return (f"; the closest, {path}, differs in {differences}: repeat that fit's values to resume it (a resume "
                "needs the callbacks' arguments it was written with)")
    if resume and any(k == "seed_everything" for k in keys):
        # a resume keeps its fit's seed: passing the file under another seed was then refused (a CLI newcomer's)
        return (f"; the closest, {path}, differs in {differences}: repeat that fit's values to resume it (a resume "
                "needs the seed it was written with)")
    # `test`/`validate`/`predict` resume nothing (a CLI newcomer's `test` was told to "repeat that fit's values to
    # resume it"), and take the file as it is
    return f"; the closest, {path}, differs in {differences}: repeat that fit's values, or pass that file as `--ckpt_path`"


def _note_more_processes_than_cores(trainer: pl.Trainer) -> None:
    """A note where a CPU fit runs more processes than the machine has cores: a hurried CLI user's `--trainer.devices
    3` on 2 cores started 3 gloo processes without a word, ran slower than one and read another val_acc (each process
    trains on its own batches of `batch_size`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = trainer.num_devices * trainer.num_nodes
    if trainer.accelerator.__class__.__name__ == "CPUAccelerator" and processes > cores and trainer.is_global_zero:
        sys.stderr.write(f"lit-robust: note: {processes} processes on {cores} CPU cores (`--trainer.devices` "
                         f"{trainer.num_devices}): slower than one process here, and each trains on its own batches "
                         "of `batch_size`, so results differ from one process's (docs/capabilities/distributed.md).\n")


def test_command(argv: Sequence[str], subcommand: str = "test", ckpt: str = "last") -> str:
    """The ``lit-robust test`` (or ``subcommand``) command for a fit's arguments: the same arguments, whose
    ``--model.*`` and other overrides are part of the fit's config that ``--ckpt_path last`` looks for, with ``test``
    for ``fit`` and ``--ckpt_path last`` (or ``ckpt``) for any ``--ckpt_path`` given.

    >>> test_command(["fit", "--config", "configs/itlm digits.yaml", "--ckpt_path", "x.ckpt", "--model.lr", "0.1"])
    "lit-robust test --config 'configs/itlm digits.yaml' --model.lr 0.1 --ckpt_path last"
    """
    out, skip, replaced = [], False, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--ckpt_path":
            skip = True
            continue
        if arg.startswith("--ckpt_path="):
            continue
        if not replaced and arg == "fit" and (i == 0 or argv[i - 1] not in ("-c", "--config")):
            out.append(subcommand)
            replaced = True
            continue
        out.append(arg)
    command = shlex.join(["lit-robust", *out, "--ckpt_path", ckpt])
    # a fit of classes built on the unified `lightning` package needs the variable again (a newcomer's `test`, run as
    # printed, was refused)
    backend = os.environ.get("LIT_ROBUST_LIGHTNING")
    return f"LIT_ROBUST_LIGHTNING={shlex.quote(backend)} {command}" if backend else command


def no_checkpoint_note(subcommand: str, last_fit: str | None) -> str:
    """What ``lit-robust validate/test/predict`` without ``--ckpt_path`` says (before the run and again after it):
    the model is as the config builds it, and where the last fit with this config left its weights."""
    head = (f"no `--ckpt_path`: `{subcommand}` runs on the model as the config builds it (untrained unless it loads "
            "weights itself)")
    if last_fit is not None:
        return f"{head}, not the last fit with this config ({last_fit}): pass `--ckpt_path last` for that one."
    return f"{head}; no earlier fit with this config was found: run `lit-robust fit` first, or pass a checkpoint file."


# a datamodule's arguments that change how the data are loaded, not which data the weights were fitted on; and
# any argument named `predict*`, the data a `predict` reads (an anomaly newcomer's "score tomorrow's file",
# `--data.init_args.predict_csv new.csv`, found no fit "with this config")
_LOADER_ONLY = frozenset({"batch_size", "eval_batch_size", "num_workers", "download", "pin_memory"})
# `root` is loader-only only on a datamodule that declares it a download cache (`root_is_a_download_cache = True`:
# MNIST's and the other fixed data sets' modules, where it says where the files lie); on any other class it is the
# data: a folder newcomer's relabelled copy of their folder, `fit --data.init_args.root fixed --ckpt_path last`,
# "found" the first folder's finished fit and trained nothing, and a user's own datamodule whose `root` is their data
# would have done the same. A class that cannot be imported counts its `root` too (at worst "no earlier fit").


def _root_is_a_download_cache(class_path: Any) -> bool:
    if not isinstance(class_path, str) or not class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        owner = importlib.import_module(module or "lit_robust")
    except Exception:  # noqa: BLE001 - an unimportable class: its `root` counts
        return False
    return getattr(getattr(owner, name, None), "root_is_a_download_cache", False) is True


def _loader_only(name: str, class_path: Any = None) -> bool:
    if name == "root":
        return _root_is_a_download_cache(class_path)
    return name in _LOADER_ONLY or name.startswith("predict")


def fit_signature(config: dict[str, Any]) -> dict[str, Any]:
    """The model, the data (less the loader-only and ``predict*`` arguments), the callbacks and the seed of a config: a checkpoint
    fitted under another one is not "the last fit with this config" (an anomaly newcomer's seed-0 test loaded the
    seed-2 fit's weights). An argument set to ``None`` counts as unset (a datamodule that gained an optional argument
    no longer refused every earlier fit)."""
    data = config.get("data")
    if isinstance(data, dict) and isinstance(data.get("init_args"), dict):
        data = {**data, "init_args": {k: v for k, v in data["init_args"].items()
                                      if not _loader_only(k, data.get("class_path"))}}
    trainer = config.get("trainer") or {}
    return _without_none(_warmups_in_use({"model": config.get("model"), "data": data,
                                          "callbacks": trainer.get("callbacks") if isinstance(trainer, dict) else None,
                                          "seed_everything": config.get("seed_everything")}))


def _warmups_in_use(obj: Any) -> Any:
    """``obj`` with every ``warmup_epochs`` beside a ``drop_ratio`` (the init_args of BatchFilter, CoTeaching, RCA,
    RealNVP) replaced by the warm-up it means (:func:`~lit_robust.selection.auto_drop.resolved_warmup`), at any depth:
    the default became ``None`` (0 with a number), and the ``config.yaml`` of a fit made before it reads 0, so
    ``--ckpt_path last`` of that fit started a new one from scratch ("differs in warmup_epochs: 0, '(unset)' here")."""
    if isinstance(obj, list):
        return [_warmups_in_use(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _warmups_in_use(v) for k, v in obj.items()}
    warmup, ratio = out.get("warmup_epochs"), out.get("drop_ratio")
    if "warmup_epochs" in out and "drop_ratio" in out and (warmup is None or type(warmup) is int) and (
            ratio == "auto" or (isinstance(ratio, (int, float)) and not isinstance(ratio, bool))):
        out["warmup_epochs"] = resolved_warmup(warmup, ratio)
    return out


def training_budget(config: dict[str, Any]) -> dict[str, Any]:
    """How long a config's fit trains (``trainer.max_epochs`` / ``max_steps``, unset ones left out): not part of a
    fit's identity (a resume may extend it); ``--ckpt_path last`` notes a fit that trained for another length."""
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    return {k: trainer[k] for k in ("max_epochs", "max_steps") if trainer.get(k) not in (None, -1)}


def _saved_budget(ckpt: str) -> dict[str, Any] | None:
    """:func:`training_budget` of the fit that wrote ``ckpt`` (its version folder's ``config.yaml``), ``None`` when
    it cannot be read."""
    config = _saved_config(ckpt)
    return None if config is None else training_budget(config)


def _without_none(obj: Any) -> Any:
    """``obj`` with every dict entry whose value is ``None`` left out, at any depth."""
    if isinstance(obj, dict):
        return {k: _without_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_without_none(v) for v in obj]
    return obj


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` of a config signature; a list of plain values is one leaf (``round_epochs``)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_leaves(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


_ABSENT = "(unset)"


def _differing_keys(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    a, b = _leaves(theirs), _leaves(mine)
    return [k for k in dict.fromkeys([*a, *b]) if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def signature_differences(mine: dict[str, Any], theirs: dict[str, Any], limit: int = 4) -> list[str]:
    """What differs between two fit signatures (:func:`fit_signature`), as the config keys a user writes (``trainer.callbacks[0]
    .init_args.round_epochs``): ``key: <theirs> in that fit, <mine> here``; at most ``limit`` entries."""
    a, b = _leaves(theirs), _leaves(mine)
    absent = _ABSENT
    keys = _differing_keys(mine, theirs)
    def shown(value: Any) -> str:  # an argument left out (or null): its default, not the string '(unset)'
        return "unset (the default)" if value is absent else repr(value)

    named = [f"{'trainer.' if k.startswith('callbacks') else ''}{k}: {shown(a.get(k, absent))} in that fit, "
             f"{shown(b.get(k, absent))} here" for k in keys[:limit]]
    return named + ([f"{len(keys) - limit} more"] if len(keys) > limit else [])


def _model_args(cfg: Any) -> dict[str, Any]:
    """The ``init_args`` of a parsed config's model, as a plain dict (empty when there is none)."""
    model = cfg.get("model") if cfg is not None and hasattr(cfg, "get") else None
    args = model.get("init_args") if model is not None and hasattr(model, "get") else None
    if args is None:
        return {}
    return dict(args.as_dict() if isinstance(args, Namespace) else args)


def read_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file that exists), or a :class:`UserInputError` saying why it is none: an
    auditor's `--ckpt_path` to a YAML file, a garbage or empty file, or a `torch.save`d dict ended in a 24-line
    traceback whose last line advised loading with ``weights_only=False``, which runs whatever the file holds."""
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - whatever torch's unpickler raises, the file is not a checkpoint
        # torch names the reason after "WeightsUnpickler error:" (e.g. "Unsupported global: GLOBAL mymod.Foo", an
        # object of the user's own in its hyper-parameters), on that line or the next
        text = str(exc)
        _, found, after = text.partition("WeightsUnpickler error:")
        reason = next((line.strip() for line in after.splitlines() if line.strip()), "") if found else ""
        why = (reason if reason else "the file is empty" if os.path.getsize(path) == 0 else
               f"not a file written by `torch.save`: {type(exc).__name__}")
        raise UserInputError(f"`--ckpt_path {path}` is not a checkpoint file (torch could not read it: {why}): pass "
                             "a `.ckpt` file written by a Lightning fit, `last` or `best`.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        holds = f"a dict with keys {sorted(map(str, ckpt))[:5]}" if isinstance(ckpt, dict) else \
            f"a {type(ckpt).__name__}"
        raise UserInputError(f"`--ckpt_path {path}` is not a Lightning checkpoint: it holds {holds}, with no "
                             "`state_dict` (a file saved with `torch.save`?). Pass a `.ckpt` file written by a "
                             "Lightning fit, `last` or `best`.")
    return ckpt


def _saved_fit_signature(ckpt: str) -> dict[str, Any] | None:
    """:func:`fit_signature` of the ``config.yaml`` LightningCLI saved in the version folder of the fit that wrote
    ``ckpt`` (``<log_dir>/checkpoints/x.ckpt``); ``None`` when there is none (a fit outside the CLI, a
    ModelCheckpoint ``dirpath`` elsewhere), which matches any config."""
    config = _saved_config(ckpt)
    return None if config is None else fit_signature(config)


#: the top-level checkpoint key under which ``lit-robust fit`` records its config (:class:`_ConfigInCheckpoint`)
CONFIG_KEY = "lit_robust_fit_config"


class _ConfigInCheckpoint(pl.Callback):
    """Writes the fit's config into every checkpoint it saves (under :data:`CONFIG_KEY`), so that ``--ckpt_path
    last`` can tell the fits apart in a ModelCheckpoint ``dirpath`` shared by several configs, where no
    ``config.yaml`` sits beside the files (a CLI newcomer's `test` loaded another config's weights, test accuracy
    0.093 against 0.930, and a never-run config's `fit` found that finished fit and trained nothing). No state of
    its own: a checkpoint loads into a Trainer without it, in Python too, without Lightning's missing-callback
    warning."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config


def predict_step_advice(model: Any) -> str | None:
    """For ``predict`` of a module that keeps Lightning's default ``predict_step``, which hands the whole batch to
    ``forward``, the advice to add one (``None`` for a module with its own): a CLI newcomer's module was told by
    Lightning that predicting "requires `forward`", and once it had one, `forward` got the batch's list (lit_robust's
    batches lead with the sample index) and raised a traceback. Raised at once where the module has no ``forward``
    either, and for lit_robust's own modules without predictions (DCGAN, SimCLR); else the default step runs as
    Lightning's (a ``forward`` that reads the whole batch, HF-style, predicts), and :meth:`RobustCLI.predict` adds the
    advice to an error raised inside it."""
    if type(model).predict_step is not pl.LightningModule.predict_step:
        return None
    name = type(model).__name__
    if type(model).__module__.startswith("lit_robust."):
        raise ValueError(f"`lit-robust predict` writes a model's predictions, and lit_robust's {name} makes none (it "
                         "has no `predict_step`): predict with the classifier or regressor you fit on what it learnt "
                         "(e.g. `LinearProbe` after `SimCLR`).")
    said = (f"`lit-robust predict` needs the module's own `predict_step`, and {name} has none: Lightning's default "
            "hands the whole batch to `forward` (lit_robust's datamodules give `[index, input, target, ...]`). Add "
            f"one to {name}, e.g. `def predict_step(self, batch, batch_idx): return "
            "self(lit_robust.unpack_eval_batch(batch).input).argmax(1)` for a classifier (a regressor: without "
            "`.argmax(1)`; `unpack_eval_batch` reads lit_robust's batches and `(input, target)` pairs; batches of "
            "your own: take their input)")
    if type(model).forward is pl.LightningModule.forward:
        raise ValueError(f"{said}.")
    return said


def raised_in_the_default_predict_step(err: BaseException) -> bool:
    """Whether ``err`` was raised inside Lightning's default ``predict_step`` (in the ``forward`` it calls with the
    whole batch), read off its traceback in this process."""
    code = pl.LightningModule.predict_step.__code__
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def collapse_error(trainer: pl.Trainer, model: Any) -> str | None:
    """The error line of a fit whose final ITLM-style model did not learn, else ``None``: the last round collapsed, or
    the final model predicts one class for nearly every training sample (read off its report, so on the rank that
    writes it). The fitted model, the one ``last.ckpt`` holds and ``test --ckpt_path last`` tests, is that round's.
    The fit exited 0 with a model at chance accuracy, its warnings scrolled away, and a pipeline went on to test and
    ship it: a CLI newcomer's learning rate 80 collapsed every round; a photo-folder newcomer's CNN learned in three
    rounds and collapsed in the last, and 3 of their 7 fits exited 0 with a model testing at 0.200 on 5 classes. No
    round is judged collapsed when, without a validation split, a loss falls from a spike to the uniform guess's, and a
    folder newcomer's 4 fits at learning rates 0.1-0.5 exited 0 with models testing at 0.200. ``on_collapse='raise'``
    stops at the first collapsed round."""
    from lit_robust.callbacks import ITLM
    from lit_robust.callbacks.itlm import FEW_STEPS, _optimizer_steps_per_epoch, limited_train_batches

    for cb in [*trainer.callbacks, *model_callbacks(model)]:
        history = getattr(cb, "history", None)
        if not isinstance(cb, ITLM) or not history:
            continue
        one = cb.final_one_class  # known on the rank that wrote the report
        diverged = getattr(cb, "final_diverged", None)
        if not history[-1].collapsed and one is None and diverged is None:
            continue
        name, n = type(cb).__name__, len(history)
        if not history[-1].collapsed and diverged is not None:
            # a CLI newcomer's regression at `lr 5` read train losses of 1e10-1e13 and a test R² of -3.7e11, exit 0
            what = (f"the final model of {name} misses the training targets by a median of {diverged[0]:.4g}, more "
                    f"than {DIVERGED_FACTOR:g} times their median absolute deviation ({diverged[1]:.4g}): it did "
                    "not learn, though its last round was not judged collapsed")
            cause = "A common cause is a learning rate too large for a freshly initialised model (`--model.lr`)."
        elif not history[-1].collapsed:
            # no round was judged collapsed (without a validation split a loss that falls from a spike to the uniform
            # guess's passes), yet the final model names one class for nearly every sample: a folder newcomer's 4
            # fits at lr 0.1-0.5 exited 0 this way with models testing at 0.200
            c, p, total = one
            what = (f"the final model of {name} predicts class {class_label(c, datamodule_classes(trainer))} for {p} "
                    f"of the {total} training samples, whose labels spread over several classes: it did not learn, "
                    "though its last round was not judged collapsed")
            cause = ("A common cause is a learning rate too large for a freshly initialised model (`--model.lr`); "
                     "a validation split (the datamodule's `val_size`) lets each round be judged by its accuracy.")
        elif all(rec.collapsed for rec in history):
            what = f"every round of {name} ({n} of {n}) collapsed: its model did not learn"
            cause = "A common cause is a learning rate too large for a freshly initialised model (`--model.lr`)."
        else:
            learned = [rec.round for rec in history if not rec.collapsed]
            what = (f"the last round of {name} (round {history[-1].round}) collapsed: its model did not learn, "
                    f"though round{'s' if len(learned) > 1 else ''} {', '.join(map(str, learned))} did")
            cause = ("The fitted model is that last round's. Common causes: a learning rate too large for a freshly "
                     "initialised model (`--model.lr`; one that a short round survives can diverge in a long one), or "
                     "a round too short to learn in (`round_epochs`); with `reinit: false` each round starts from the "
                     "one before instead of a fresh model.")
        cause = cause.replace("(`--model.lr`", f"(`--model.lr`{_fit_learning_rate(trainer)}", 1)
        limited, steps = limited_train_batches(trainer), _optimizer_steps_per_epoch(trainer)
        if (limited is not None and steps is not None and steps <= FEW_STEPS
                and (history[-1].collapsed or diverged is None)):
            # a CLI newcomer's quick check with `--trainer.limit_train_batches 2` was told to lower the learning rate
            # (making it worse) or a batch of 64 of 1,200 samples; a limit that leaves more steps is not named (an
            # adversarial reviewer's 0.9, 17 steps an epoch at lr 20)
            cause = (f"`--trainer.limit_train_batches` {limited} leaves {steps} optimizer step"
                     f"{'' if steps == 1 else 's'} an epoch, too few to learn in: a quick check's setting, where this "
                     "is expected; leave it out (or raise it) to train a usable model.")
        return (f"lit-robust fit: error: {what} (the warnings above say why), so the fitted model is not usable. "
                f"{cause} The checkpoints and the report were written.\n")
    return None


def _fit_learning_rate(trainer: pl.Trainer) -> str:
    """``"; this fit's was 0.5: try 0.05"`` -- the learning rate the optimizer started from (before any scheduler),
    for the messages that blame it: a folder newcomer whose fits collapsed was told "a learning rate too large" and
    had to look up which one the config had set."""
    try:
        groups = [g for opt in trainer.optimizers for g in opt.param_groups]
        rates = sorted({float(g.get("initial_lr", g["lr"])) for g in groups})
    except Exception:  # noqa: BLE001 - an optimizer without plain param groups: the advice stays general
        return ""
    if len(rates) == 1 and rates[0] > 0:
        return f"; this fit's was {rates[0]:g}: try {rates[0] / 10:g}"
    return f"; this fit's were {', '.join(f'{r:g}' for r in rates)}" if rates else ""


class _FitEndMark(pl.Callback):
    """Writes :data:`FIT_END_MARK` into the run folder of a fit that ran to its end (the final validation, the reports
    of ``on_train_end`` and of the callbacks' ``on_fit_end`` before it): its global step. The checkpoint alone cannot
    say so: a ``last.ckpt`` of ``every_n_train_steps`` written at the final epoch's last batch is the same file whether
    the fit then ended or was stopped in its final validation (:meth:`RobustCLI._end_of_fit_pending`).

    A callback, in the processes that ran the fit: written by ``lit-robust`` after ``trainer.fit`` returned, under
    ``ddp_spawn`` the main process's logger opened another version folder and its global step read 0. An
    interrupted or failed fit never reaches ``on_fit_end``. No state of its own, as :class:`_ConfigInCheckpoint`."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        # the verdict on the final model, read where the callbacks ran (`RobustCLI._fail_if_the_final_model_collapsed`
        # reads it under `ddp_spawn`, whose main process holds copies that never ran)
        collapsed = collapse_error(trainer, pl_module)
        # rank 0's folder read without `trainer.log_dir`'s broadcast: the other ranks returned above, and rank 0 alone
        # in that collective ended every 2-process `lit-robust fit` in a gloo 'Connection closed by peer' traceback
        try:
            folder = _own_log_dir(trainer)
        except Exception:  # noqa: BLE001 - a logger of another kind, whose folder cannot be read: no mark, as below
            folder = None
        if folder is None:
            return
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / FIT_END_MARK).write_text(json.dumps({"global_step": trainer.global_step,
                                                                 "collapsed": collapsed}) + "\n")
        except OSError as exc:  # a read-only folder: the fit itself succeeded
            rank_zero_warn(f"lit-robust fit: could not write {FIT_END_MARK} into {folder} ({exc}): a later "
                           "`--ckpt_path last` of this fit may run its end-of-fit work again.")


def _saved_config(ckpt: str) -> dict[str, Any] | None:
    """The config of the ``lit-robust fit`` that wrote ``ckpt``: recorded in the checkpoint, else the
    ``config.yaml`` LightningCLI saved beside its ``checkpoints`` folder, else ``None``."""
    try:
        recorded = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get(CONFIG_KEY)
    except Exception:  # noqa: BLE001 - an unreadable file: Lightning reports it if it is loaded
        recorded = None
    if isinstance(recorded, dict):
        return recorded
    saved = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(ckpt))), "config.yaml")
    try:
        with open(saved, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def model_callbacks(model: pl.LightningModule) -> list[pl.Callback]:
    """The callbacks a module brings itself (``configure_callbacks``, e.g. :class:`~lit_robust.RealNVP`'s trimming
    filter), which Lightning adds only once the fit starts."""
    if not is_overridden("configure_callbacks", model, pl.LightningModule):
        return []
    found = model.configure_callbacks()
    return list(found) if isinstance(found, Sequence) else [found]


def enable_reports(callbacks: Sequence[Any]) -> None:
    """``lit-robust fit``'s default: every callback (or module) that can write a per-sample report (``ITLM``,
    ``BatchFilter``, ``RCA``, ``CoTeaching``) and whose ``report`` is ``None`` (not set in the config) writes it;
    an explicit ``report: false`` stays off."""
    from lit_robust.anomaly import RCA
    from lit_robust.callbacks import ITLM, BatchFilter
    from lit_robust.models import CoTeaching

    for cb in callbacks:
        if isinstance(cb, (ITLM, BatchFilter, RCA, CoTeaching)) and cb.report is None:
            cb.report = True


def _checkpoint_dirs(trainer: pl.Trainer) -> list[str]:
    """Where this Trainer's ModelCheckpoints write, with the logger's version folder left open (``version_*``)."""
    dirs: list[str] = []
    for cb in trainer.checkpoint_callbacks:
        if cb.dirpath is not None:
            dirs.append(os.fspath(cb.dirpath))
        elif trainer.loggers:
            logger = trainer.loggers[0]
            save_dir = logger.save_dir or trainer.default_root_dir
            name = logger.name
            base = os.path.join(save_dir, str(name)) if name else save_dir
            dirs.append(os.path.join(base, "version_*", "checkpoints"))
            dirs.append(os.path.join(base, "*", "checkpoints"))  # a logger with a string version
        else:
            dirs.append(os.path.join(trainer.default_root_dir, "checkpoints"))
    return list(dict.fromkeys(dirs))


def find_last_checkpoint(trainer: pl.Trainer, accept: Callable[[str], bool] | None = None
                         ) -> tuple[str | None, list[str]]:
    """The newest ``last*.ckpt`` written by a fit with this Trainer's checkpoint settings (and, given ``accept``,
    one it accepts: the CLI's fits of the same config), and where it looked.

    Without one, and when no ModelCheckpoint monitors a metric (Lightning's default keeps just the latest epoch's
    file), the newest ``*.ckpt`` there: the end of that fit too.
    """
    found, dirs = fit_checkpoints(trainer, accept)
    if not found:
        return None, dirs
    return max(found, key=lambda p: (os.path.getmtime(p), p)), dirs


def fit_checkpoints(trainer: pl.Trainer, accept: Callable[[str], bool] | None = None) -> tuple[set[str], list[str]]:
    """The checkpoints that end a fit with this Trainer's checkpoint settings (those ``accept`` takes), as
    :func:`find_last_checkpoint` chooses among them, and where it looked."""
    dirs = _checkpoint_dirs(trainer)
    if not dirs:
        return set(), ["(checkpointing is off: `trainer.enable_checkpointing: false`)"]

    def matching(pattern: str) -> set[str]:
        paths = {p for d in dirs for p in glob.glob(os.path.join(d, pattern))}
        return paths if accept is None else {p for p in paths if accept(p)}

    found = matching(f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}*.ckpt")
    if not found and all(cb.monitor is None for cb in trainer.checkpoint_callbacks):
        found = matching("*.ckpt")
    return found, dirs


def _best_model_path(last: str) -> str | None:
    state = torch.load(last, map_location="cpu", weights_only=True).get("callbacks", {})
    for key, value in state.items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict):
            best = value.get("best_model_path")
            if best and os.path.isfile(best):
                return str(best)
    return None


# -- turning a user's mistake into one line --------------------------------------------------------------------
# raised by a `raise` statement of lit_robust's, these are its checks of the user's input
_USER_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError, RuntimeError, NotImplementedError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]


def _raise_site(exc: BaseException) -> Any:
    """The innermost frame of ``exc``'s traceback when its line is a ``raise`` statement (a check), else ``None``."""
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
    return tb.tb_frame if line.strip().startswith("raise") else None


def _raised_by_lit_robust(exc: BaseException) -> bool:
    """True when ``exc`` comes from a ``raise`` statement in lit_robust's own source: one of its checks."""
    site = _raise_site(exc)
    return site is not None and os.path.realpath(site.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep)


def _raised_by_a_configured_constructor(exc: BaseException) -> bool:
    """True when ``exc`` comes from a ``raise`` statement in the ``__init__`` of a LightningModule, datamodule or
    callback -- a class a config names (the user's own): its check of the config's arguments, as lit_robust's are.
    An error raised deeper (a bug in a call it makes) keeps its traceback."""
    site = _raise_site(exc)
    return site is not None and site.f_code.co_name == "__init__" and isinstance(
        site.f_locals.get("self"), (pl.LightningModule, pl.LightningDataModule, pl.Callback))


def _raised_by_lightning_building_the_trainer(exc: BaseException) -> bool:
    """True when ``exc`` comes from a ``raise`` statement in Lightning while the CLI built the Trainer: its check of
    the ``trainer`` arguments (``--trainer.strategy dpp``, ``--trainer.devices two``), which a newcomer got as a
    35-line traceback. An error raised in the user's own code (a callback's ``__init__`` bug) is not one."""
    site = _raise_site(exc)
    if site is None or not os.path.realpath(site.f_code.co_filename).startswith(_LIGHTNING_DIRS):
        return False
    return _init_frame(exc, lambda obj: isinstance(obj, pl.Trainer)) is not None


def _raised_by_lightning_checking_the_loaders(exc: BaseException) -> bool:
    """True when ``exc`` is the ``ValueError`` Lightning's fit loop raises at its data set-up for a Trainer argument
    that does not fit the training loader (``val_check_interval`` above its batches): a 30-line traceback for a
    user's `--trainer.val_check_interval 1000` on 16 batches, where ITLM's own check of the same says one line."""
    site = _raise_site(exc)
    return (isinstance(exc, ValueError) and site is not None and site.f_code.co_name == "setup_data"
            and os.path.realpath(site.f_code.co_filename).startswith(_LIGHTNING_DIRS))


def _raised_by_a_lightning_constructor(exc: BaseException) -> bool:
    """True when ``exc`` comes from a ``raise`` statement in the ``__init__`` of one of Lightning's classes (a logger
    or callback a config names): its check that the optional package the class needs is installed."""
    site = _raise_site(exc)
    return (site is not None and site.f_code.co_name == "__init__"
            and os.path.realpath(site.f_code.co_filename).startswith(_LIGHTNING_DIRS))


def bug_in_a_configured_constructor(exc: BaseException) -> BaseException | None:
    """The first error in ``exc``'s chain raised inside the ``__init__`` of a LightningModule, datamodule or callback
    a config names: a bug in the user's class (``NameError``, a failing call), which jsonargparse wraps in its "Does not
    validate against any of the Union subtypes" report, so that the traceback ended on that report (a newcomer read
    70 lines ending in ``Expected a <class 'NoneType'>``)."""
    configured = (pl.LightningModule, pl.LightningDataModule, pl.Callback)
    return next((e for e in _chain(exc) if _init_frame(e, lambda obj: isinstance(obj, configured)) is not None), None)


def user_error(exc: BaseException) -> BaseException | None:
    """The user-facing error in ``exc``'s chain: ours, a lit_robust check (or a user's own class's check of its
    constructor arguments), or Lightning's config error."""
    for e in _chain(exc):
        if isinstance(e, (UserInputError, MisconfigurationException)):
            return e
        if isinstance(e, _USER_ERRORS) and (_raised_by_lit_robust(e) or (
                isinstance(e, (ValueError, TypeError, OSError)) and _raised_by_a_configured_constructor(e))):
            return e
        if (isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError))
                or isinstance(e, OSError) and e.errno == errno.EROFS) and e.filename is not None:
            # a path of the config that names no file, wherever it is opened (a CLI user's own datamodule reading a
            # missing file in `setup` ended in a 44-line traceback, its `raise FileNotFoundError` in `__init__` in 31),
            # or one that cannot be written (a CLI user's `--trainer.default_root_dir` on a read-only mount: 40 lines)
            return e
        if isinstance(e, (ValueError, TypeError, ImportError)) and _raised_by_lightning_building_the_trainer(e):
            return e
        if _raised_by_lightning_checking_the_loaders(e):
            return e
        if isinstance(e, ImportError) and _raised_by_a_lightning_constructor(e):
            # `--trainer.logger WandbLogger` without wandb: Lightning's own "Requirement 'wandb>=0.12.10' not met"
            # and its pip hint, which an MLOps newcomer found at the end of a 70-line jsonargparse traceback
            return e
        if isinstance(e, RuntimeError) and str(e).startswith("Early stopping conditioned on metric"):
            # EarlyStopping's monitor names no logged metric (ModelCheckpoint's says so in a MisconfigurationException,
            # one line; EarlyStopping's RuntimeError was a traceback, a reviewer's `val_accuracy`)
            return e
        if isinstance(e, RuntimeError) and str(e).startswith("Error(s) in loading state_dict"):
            # `--ckpt_path` names a checkpoint of another model: torch's message, shortened to its first lines
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            more = f" (and {len(lines) - 3} more lines)" if len(lines) > 3 else ""
            if ".parametrizations.weight.original" in str(e):
                # a model trained under SpectralNorm, tested without it, was told to pass a checkpoint of this model
                return UserInputError(
                    "`--ckpt_path`: the checkpoint's weights were saved under spectral normalisation (keys "
                    "`<layer>.parametrizations.weight.original`), and the config's model has plain layers: add the "
                    "fit's SpectralNorm callback to the command (`--trainer.callbacks+=lit_robust.SpectralNorm` with "
                    "its `k` and `modules`). A module with RobustMixin normalises them itself from checkpoints "
                    "written since 2026-12-07.")
            return UserInputError(f"`--ckpt_path`: the checkpoint does not fit the config's model: "
                                  f"{' '.join(lines[:3])}{more}. Pass a checkpoint of this model.")
    for e in _chain(exc):
        # a list of loggers, one of them without its package: jsonargparse keeps Lightning's message as text only (a
        # release checker's `logger: [CSVLogger, WandbLogger]` ended in 72 lines)
        missing = _MISSING_PACKAGE.search(str(e)) if isinstance(e, ValueError) else None
        if missing is not None:
            return UserInputError(f"`{missing.group(1)}`: {missing.group(2).strip()}")
    return None


def error_of_a_spawned_process(exc: BaseException) -> UserInputError | None:
    """Under ``ddp_spawn`` the fit runs in processes torch starts, and an error there comes back as the text of its
    traceback (``ProcessRaisedException``), not as the exception: a user's mistake that lit_robust checks in
    ``setup`` (``round_epochs`` against ``max_epochs``) ended in two tracebacks and exit status 1, where ``ddp``
    gives one line. The same rule as :func:`user_error`'s for lit_robust's checks, read off the text: the innermost
    frame is a ``raise`` statement in lit_robust's source, of one of the errors a check raises (or a
    ``UserInputError`` / Lightning's ``MisconfigurationException`` anywhere)."""
    if type(exc).__name__ != "ProcessRaisedException":
        return None
    text = str(exc)
    lines = text[text.rfind("Traceback (most recent call last):"):].splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if not frames:
        return None
    last = frames[-1]
    end = last + 1
    while end < len(lines) and lines[end].startswith("    "):  # the frame's code line and its ^^^ markers
        end += 1
    found = re.match(r"([\w.]+): (.*)", "\n".join(lines[end:]).strip(), re.S)
    where = re.match(r'  File "(.+?)", line (\d+), in ', lines[last])
    if found is None or where is None:
        return None
    kind, message = found.group(1).rsplit(".", 1)[-1], found.group(2)
    if kind in ("UserInputError", "MisconfigurationException"):
        return UserInputError(message)
    path, line = where.group(1), int(where.group(2))
    ours = os.path.realpath(path).startswith(_PACKAGE_DIR + os.sep)
    raised = linecache.getline(path, line).strip().startswith("raise")
    if ours and raised and kind in {e.__name__ for e in _USER_ERRORS}:
        err = UserInputError(message)
        # the started process's objects are copies, so `_entry_key` cannot match them by identity: it matches the
        # frames' code to the config's classes instead (the line named `trainer.max_epochs` where `ddp` names
        # `trainer.callbacks[0].init_args.round_epochs (lit_robust.ITLM)`)
        err.spawned_frames = [(m.group(1), int(m.group(2)), m.group(3)) for m in (
            re.match(r'  File "(.+?)", line (\d+), in (\w+)', lines[i]) for i in frames) if m is not None]
        return err
    return None


def _defines_frame(cls: type, path: str, line: int, name: str) -> bool:
    """Whether a method ``name`` of ``cls`` (or of a class it derives from) holds line ``line`` of file ``path``."""
    for klass in cls.__mro__:
        code = getattr(inspect.unwrap(vars(klass).get(name, None) or (lambda: None)), "__code__", None)
        if code is None or os.path.realpath(code.co_filename) != os.path.realpath(path):
            continue
        lines = [n for _, _, n in code.co_lines() if n is not None]
        if lines and code.co_firstlineno <= line <= max(lines):
            return True
    return False


def _replaced_callbacks(final: Any) -> list[tuple[str, list[str]]]:
    """``(config file, [class names])`` of the callbacks a ``--config`` file lists that the parsed config ``final``
    (its ``trainer.callbacks``) no longer holds: a later list replaced theirs."""
    def name(entry: Any) -> str:
        path = entry.get("class_path") if isinstance(entry, (dict, Namespace)) else entry
        return str(path or "").rsplit(".", 1)[-1]

    kept = {name(c) for c in final} if isinstance(final, list) else set()
    dropped = []
    for path, doc in _config_documents():
        listed = (doc.get("trainer") or {}).get("callbacks") if isinstance(doc, dict) and isinstance(
            doc.get("trainer"), dict) else None
        names = [name(c) for c in listed] if isinstance(listed, list) else []
        gone = [n for n in names if n and n not in kept]
        if gone:
            dropped.append((path, gone))
    return dropped


def _carried_init_args(final: Any) -> list[tuple[str, str, str, list[tuple[str, Any]]]]:
    """``(key, config's class, final class, [(argument, value)])`` for ``model`` and ``data`` where the parsed config
    ``final`` names another class than a ``--config`` file does, and keeps arguments that file set for its class
    (not given on the command line)."""
    if not isinstance(final, Namespace):
        return []
    found = []
    for key in ("model", "data"):
        new = str(final.get(f"{key}.class_path") or "")
        if not new:
            continue
        for _, doc in _config_documents():
            entry = doc.get(key) if isinstance(doc, dict) else None
            old = entry.get("class_path") if isinstance(entry, dict) else None
            given = entry.get("init_args") if isinstance(entry, dict) else None
            if not isinstance(old, str) or not isinstance(given, dict) or (
                    old.rsplit(".", 1)[-1] == new.rsplit(".", 1)[-1]):
                continue
            on_command_line = {a.split("=", 1)[0] for a in _command_line if a.startswith("--")}
            kept = [(arg, final.get(f"{key}.init_args.{arg}")) for arg in given
                    if final.get(f"{key}.init_args.{arg}", _ABSENT) is not _ABSENT
                    and not {f"--{key}.{arg}", f"--{key}.init_args.{arg}"} & on_command_line]
            if kept:
                found.append((key, old.rsplit(".", 1)[-1], new.rsplit(".", 1)[-1], kept))
    return found


def _undecodable_config(err: UnicodeDecodeError) -> str:
    """What is wrong with the ``--config`` file that is no UTF-8 text (a reviewer passed a checkpoint as the config,
    and a YAML saved as UTF-16 by Notepad; each ended in a ``UnicodeDecodeError`` traceback)."""
    for path in _config_files:
        try:
            head = Path(path).read_bytes()
            head.decode("utf-8")
        except UnicodeDecodeError as bad:
            kind = (" It looks like a checkpoint: pass it as `--ckpt_path`." if head[:2] == b"PK" or head[:1] == b"\x80"
                    else " It is UTF-16: save it as UTF-8." if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "")
            return (f"`--config` must be a YAML or JSON file in UTF-8 text, got {path!r}, whose byte "
                    f"{bad.start} ({head[bad.start]:#04x}) is not UTF-8.{kind}")
        except OSError:
            continue
    return f"a config file is not UTF-8 text ({err}): save it as UTF-8."


_MISSING_PACKAGE = re.compile(r"Problem with given class_path '([^']+)':\s*(Requirement '[^']+' not met\.[^\n]*)")


def _config_entries(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(key path, value)`` of every class entry (``class_path`` + ``init_args``) or object in a parsed config."""
    if isinstance(node, Namespace):
        node = vars(node)
    if isinstance(node, dict):
        if "class_path" in node:
            yield path, node
        for k, v in node.items():
            yield from _config_entries(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _config_entries(v, f"{path}[{i}]")
    elif hasattr(node, "__dict__") and not isinstance(node, (str, bytes, type)):
        yield path, node


def _frames_selves(exc: BaseException) -> list[Any]:
    """The ``self`` of each frame of the traceback, outermost first."""
    selves = []
    tb = exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if obj is not None:
            selves.append(obj)
        tb = tb.tb_next
    return selves


def _entry_key(cli: RobustCLI | None, exc: BaseException) -> tuple[str | None, Any]:
    """The config key of the object whose code raised ``exc`` (instantiated or being constructed)."""
    if cli is None:
        return None, None
    sub = getattr(cli, "subcommand", None)
    selves = _frames_selves(exc)
    init = getattr(cli, "config_init", None)
    if init is not None:  # objects exist: match by identity
        objs = list(_config_entries(init.get(sub, init) if sub else init))
        for frame in reversed(getattr(exc, "spawned_frames", [])):  # raised in a process `ddp_spawn` started
            for path, obj in objs:
                if _defines_frame(type(obj), *frame):
                    return path, obj
        # innermost first: the model's training step runs a filter's scoring, and a filter's `loss='ce'` on a
        # regression model was named as the model's argument (a CLI newcomer set the filter's, not the model's)
        for s in reversed(selves):
            for path, obj in objs:
                if obj is s:
                    return path, s
        for s in selves:
            if not isinstance(s, pl.Callback):
                # the model holds the running Trainer (`_trainer`): Lightning's own errors inside it, such as
                # `limit_train_batches=0.0001`, were named by the model's key instead of the Trainer argument
                continue
            for path, obj in objs:
                # a callback the entry holds and adds itself (RobustRealNVP's trimming filter, from
                # `configure_callbacks`): its error is the entry's argument (`report_dir`), named as RCA's is
                if any(v is s for v in getattr(obj, "__dict__", {}).values()):
                    return path, obj
    config = getattr(cli, "config", None)
    if config is None:
        return None, None
    entries = [(p, e) for p, e in _config_entries(config.get(sub, config) if sub else config) if isinstance(e, dict)]
    for s in selves:  # constructors running: match by class path, then by the arguments given
        name = type(s).__qualname__  # a config may name it by any import path (lit_robust.ITLM)
        matches = [(p, e) for p, e in entries if str(e["class_path"]).rsplit(".", 1)[-1] == name]
        if len(matches) > 1:
            frame_args = _init_locals(exc, s)
            narrowed = [(p, e) for p, e in matches
                        if all(frame_args.get(k, v) == v for k, v in _as_dict(e.get("init_args")).items())]
            matches = narrowed or matches
        if matches:
            return matches[0][0], s
    return None, None


def _as_dict(ns: Any) -> dict[str, Any]:
    if ns is None:
        return {}
    return dict(vars(ns)) if isinstance(ns, Namespace) else dict(ns)


def _init_frame(exc: BaseException, accept: Callable[[Any], bool]) -> Any:
    """The outermost ``__init__`` frame of ``exc``'s traceback whose ``self`` ``accept`` takes, or ``None``."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "__init__" and accept(tb.tb_frame.f_locals.get("self")):
            return tb.tb_frame
        tb = tb.tb_next
    return None


def _init_locals(exc: BaseException, obj: Any) -> dict[str, Any]:
    frame = _init_frame(exc, lambda s: s is obj)
    return {} if frame is None else dict(frame.f_locals)


def _parameters(cls: type) -> set[str]:
    """The ``__init__`` parameters ``cls`` takes: its own, and its parents' as long as each ``__init__`` passes
    ``**kwargs`` on. Every parent's were listed: a backdoor newcomer's ``clean_ratio``, a parameter of
    ``MNISTDataModule`` that ``BackdoorMNISTDataModule`` does not take, was refused and then "did you mean
    'clean_ratio'?" in a list of the accepted ones."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            break
        names |= {n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return names


def describe(cli: RobustCLI | None, exc: BaseException) -> str:
    """``<config key> (<class>): <message>`` for a user's mistake (the key when it can be told), and the command
    of a config's comment that writes a file the message says is missing (:func:`_comment_that_writes`)."""
    said = _describe(cli, exc)
    hint = _comment_that_writes(said)
    return f"{said[:-1]}{hint}." if hint and said.endswith(".") else said + hint


def _comment_that_writes(message: str) -> str:
    """`` (the config's comment writes it: `<command>`)`` where a comment line of a ``--config`` file holds a
    command with ``--write NAME`` and the message names ``NAME`` as missing: `configs/itlm_table.yaml` from a fresh
    folder said "no such file" of the table that its comment's `python examples/... --write` makes (a newcomer's)."""
    if "no such file" not in message.lower() and "does not exist" not in message.lower():
        return ""
    for path in _config_files:
        try:
            with open(path, encoding="utf-8-sig") as f:
                lines = f.readlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            found = re.match(r"\s*#\s*(.*--write\s+(\S+).*?)\s*$", line)
            if found and os.path.basename(found.group(2).rstrip("/")) in message:
                return f" (the config's comment writes it: `{found.group(1)}`)"
    return ""


def _describe(cli: RobustCLI | None, exc: BaseException) -> str:
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, FileNotFoundError) and isinstance(exc.filename, str) and not os.path.isabs(exc.filename):
        message += f" (a relative path is read from the current folder, {os.getcwd()})"
    # `name` or `name=value` (Lightning's "`strategy='dpp'`")
    names = [n.rsplit(".", 1)[-1] for n in re.findall(r"`([A-Za-z_][\w.]*)(?:=[^`]*)?`", message)]
    path, obj = _entry_key(cli, exc)
    if path is None and message.startswith("No supported gpu backend found"):  # Lightning names no argument
        return (f"trainer.accelerator: {message} torch finds no GPU on this machine: use `--trainer.accelerator cpu` "
                "(or `auto`).")
    root = _default_root_dir(cli)
    if root and (path is None or not os.path.isdir(root)) and isinstance(exc, OSError) and isinstance(
            exc.filename, str) and (os.path.abspath(exc.filename) + os.sep).startswith(os.path.abspath(root) + os.sep):
        # `--trainer.default_root_dir /proc/x`: "[Errno 2] No such file or directory: '/proc/x'", no argument named.
        # A callback that fails to make its folder under a root that is no folder (ModelCheckpoint's, under
        # `fast_dev_run`, which makes no log folder first) was named instead, though the root is the mistake
        return (f"trainer.default_root_dir: must be a folder that can be created and written into, got {root!r}: "
                f"{message}")
    if path is None:
        # Lightning's "`Trainer(devices='0')` value is not a valid input" and "`Timer(duration='abc')` is not a valid
        # duration" (from `max_time`) named the argument only inside a call, or not at all
        names += ["max_time" if m.group(1) == "Timer" else m.group(2)
                  for m in re.finditer(r"`(Trainer|Timer)\((\w+)=", message)]
        trainer_arg = next((n for n in names if n in _parameters(pl.Trainer)), None)
        return f"trainer.{trainer_arg}: {message}{_registry_hint(message)}" if trainer_arg else message
    cls = type(obj)
    arg = next((n for n in names if n in _parameters(cls)), None)
    label = f"{path}.init_args.{arg}" if arg else path
    return f"{label} ({_import_path(cls)}): {message}"


def _import_path(cls: type) -> str:
    """The shortest ``package.Class`` path that imports ``cls`` (``lit_robust.ITLM``,
    ``pytorch_lightning.callbacks.EarlyStopping``, ``mypkg.data.MyDataModule``): the top-level package alone named a
    user's class, or Lightning's, by a path that does not import (``mypkg.MyDataModule``)."""
    parts = cls.__module__.split(".")
    for end in range(1, len(parts)):
        module = sys.modules.get(".".join(parts[:end]))
        if module is not None and getattr(module, cls.__qualname__, None) is cls:
            return f"{'.'.join(parts[:end])}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _default_root_dir(cli: RobustCLI | None) -> str | None:
    """The ``trainer.default_root_dir`` the command's config gives, if any."""
    config, sub = getattr(cli, "config", None), getattr(cli, "subcommand", None)
    try:
        root = config.get(f"{sub}.trainer.default_root_dir") if config is not None and sub else None
    except (AttributeError, KeyError, TypeError):
        return None
    return str(root) if root else None


def _registry_hint(message: str) -> str:
    """`` (did you mean 'ddp_spawn'?)`` for Lightning's "invalid strategy name: `strategy='ddp_spwn'`" (or accelerator
    name), from the names its registry holds; ``""`` when none is close (Lightning's own message lists only a few)."""
    given = re.search(r"invalid (strategy|accelerator) name: `\w+='([^']*)'`", message)
    if given is None:
        return ""
    from pytorch_lightning.accelerators import AcceleratorRegistry
    from pytorch_lightning.strategies import StrategyRegistry

    kind, name = given.groups()
    names = StrategyRegistry.available_strategies() if kind == "strategy" else AcceleratorRegistry.available_accelerators()
    close = difflib.get_close_matches(name.lower(), [str(n) for n in names], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _parse_debug(argv: list[str]) -> tuple[list[str], bool]:
    debug = os.environ.get("LIT_ROBUST_DEBUG", "").strip().lower() in ("1", "true", "yes")
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        debug = True
    return argv, debug


def _attached_config(arg: str) -> str | None:
    """The file of a config option written in one word (``--config=X``, ``-c=X``, ``-cX``), else ``None``."""
    for prefix in ("--config=", "-c="):
        if arg.startswith(prefix):
            return arg[len(prefix):]
    return arg[2:] if arg.startswith("-c") and not arg.startswith("--") and len(arg) > 2 else None


def config_first(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config X`` (or ``-c X``, ``--config=X``, ``-c=X``) of the subcommand moved right after
    it, in their order: jsonargparse applies the arguments in order, so an override written before ``--config`` was
    replaced by the config or failed (a newcomer's ``--trainer.callbacks.init_args.warmup_epochs 1 --config my.yaml``:
    a 13-line ``NestedArg`` report, the callbacks not existing yet). Overrides then always win over the config.

    >>> config_first(["fit", "--trainer.max_epochs", "2", "--config", "a.yaml", "--config=b.yaml"])
    ['fit', '--config', 'a.yaml', '--config=b.yaml', '--trainer.max_epochs', '2']
    >>> config_first(["fit", "--trainer.max_epochs", "2", "-c", "a.yaml", "-c=b.yaml"])
    ['fit', '-c', 'a.yaml', '-c=b.yaml', '--trainer.max_epochs', '2']
    """
    if not argv or argv[0].startswith("-"):
        return argv
    configs: list[str] = []
    others: list[str] = []
    rest = argv[1:]
    i = 0
    while i < len(rest):
        # `-c` too: LightningCLI's short form (`lit-robust fit --help` lists it) was left in place, and an override
        # written before it was silently replaced by the config's value
        if rest[i] in ("-c", "--config") and i + 1 < len(rest):
            configs += rest[i:i + 2]
            i += 2
            continue
        (configs if _attached_config(rest[i]) is not None else others).append(rest[i])
        i += 1
    return [argv[0], *configs, *others]


#: options that take no value, or an optional one (a number after them is no value of theirs)
_NO_VALUE_OPTIONS = frozenset({"-h", "--help", "--print_config", "--version", "-V", "--debug"})


def attach_dashed_numbers(argv: list[str]) -> list[str]:
    """``argv`` with ``--key -inf`` written ``--key=-inf``: argparse takes a value that starts with ``-`` for an
    option unless it is a plain negative number (``-5``, ``-0.5``), so ``--model.init_args.lr -inf`` and
    ``--model.init_args.weight_decay -1e-4`` ended in "argument --model: expected one argument", which named neither
    the key nor the value (a second CLI sweep's). Attached, the value reaches the argument's own check.

    >>> attach_dashed_numbers(["fit", "--model.init_args.lr", "-inf", "--trainer.max_epochs", "-5", "--help"])
    ['fit', '--model.init_args.lr=-inf', '--trainer.max_epochs', '-5', '--help']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg, nxt = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        if (arg.startswith("--") and "=" not in arg and arg not in _NO_VALUE_OPTIONS and nxt is not None
                and nxt.startswith("-") and not re.fullmatch(r"-\d+|-\d*\.\d+", nxt) and _reads_as_float(nxt)):
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def _reads_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _config_file_args(argv: Sequence[str]) -> list[str]:
    """The ``--config`` / ``-c`` files of a command line, in their order (``-c=X`` and ``--config=X`` included).

    >>> _config_file_args(["fit", "--config=a.yaml", "-c", "b.yaml", "-cc.yaml", "--trainer.max_epochs", "2"])
    ['a.yaml', 'b.yaml', 'c.yaml']
    """
    files, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in ("-c", "--config"):
            if i + 1 < len(argv):
                files.append(argv[i + 1])
            skip = True
        elif _attached_config(arg) is not None:
            files.append(_attached_config(arg))
    return files


def _section_file_args(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``(section, value)`` of each top-level section given on the command line (``--model model.yaml``,
    ``--data=data.yaml``): a value naming a file is read by jsonargparse as that section's settings.

    >>> _section_file_args(["fit", "--model", "m.yaml", "--data=d.yaml", "--trainer.max_epochs", "2"])
    [('model', 'm.yaml'), ('data', 'd.yaml')]
    """
    found = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name.startswith("--") and name[2:] in _SECTIONS:
            if eq:
                found.append((name[2:], value))
            elif i + 1 < len(argv):
                found.append((name[2:], argv[i + 1]))
    return found


def run(args: Sequence[str] | None = None) -> RobustCLI | None:
    """Run ``lit-robust`` with ``args`` (default ``sys.argv[1:]``) and return the CLI object (``None`` for
    ``demo``). Errors propagate; :func:`main` turns a user's mistake into a message and exit status 2. Every
    ``--config`` is read before the other arguments (:func:`config_first`)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "demo":
        from lit_robust.demo import run_demo

        run_demo(argv[1:])
        return None
    given, argv = argv, attach_dashed_numbers(config_first(argv))
    _config_files[:] = _config_file_args(argv)
    _command_line[:] = argv
    check_duplicate_keys(_config_files, _section_file_args(argv))
    return RobustCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        given_argv=given,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        # allow_abbrev: `--trainer.max_epoch 3` would silently set max_epochs (argparse's prefix matching)
        parser_kwargs={"allow_abbrev": False, "usage": "lit-robust [-h] [-c CONFIG] {demo,fit,validate,test,predict} ...",
                       "description": "lit_robust's LightningCLI. `lit-robust demo --help`: the built-in demo "
                                      "(baseline vs ITLM on noisy digits, no download). A config naming classes "
                                      "built on the unified `lightning` package (`import lightning as L`): run with "
                                      "LIT_ROBUST_LIGHTNING=lightning. A mistake in the input ends in one line "
                                      "and exit status 2; `--debug` (or LIT_ROBUST_DEBUG=1) shows the traceback. "
                                      "`predict` writes predictions.csv into the run's folder.",
                       **{name: {"description": text} for name, text in SUBCOMMAND_HELP.items()}},
        args=argv,
    )


def add_working_directory_to_path() -> None:
    """Let a config's ``class_path`` name a module in the current folder (``mymodel.MyModule``), as ``python -m
    lit_robust`` would: the ``lit-robust`` script's ``sys.path`` starts at its own folder, not the user's. Appended,
    so that a file there never shadows an installed package. Appended as an absolute path even where ``""`` (the
    current folder, under ``python -c``, a notebook or the REPL) is on the path: jsonargparse reads a config's
    ``class_path`` from the config's own folder, where ``""`` then points (a newcomer's ``main()`` from ``python -c``
    with the config in another folder could not import their ``mymodel.py``)."""
    global _start_dir
    cwd = _start_dir = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)


#: the folder ``lit-robust`` started in (:func:`add_working_directory_to_path`)
_start_dir: str | None = None


class _NoCloudTips(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines: an unlabelled-data newcomer found
    a run's estimate, report path and round table buried under them, twice per command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip")


def _drop_cloud_tips() -> None:
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoCloudTips) for f in log.filters):
            log.addFilter(_NoCloudTips())


_RESTORE_SIGTERM: list[Callable[[], None]] = []  # puts back the SIGTERM handler of this process after a command


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``lit-robust``: ``lit-robust demo`` or ``lit-robust {fit,validate,test,predict} --config X``.

    A mistake in the input ends with ``lit-robust <command>: error: <config key>: <message>`` on stderr and exit
    status 2; ``--debug`` (or ``LIT_ROBUST_DEBUG=1``) shows the traceback instead. A ``class_path`` may name a module
    of the current folder (:func:`add_working_directory_to_path`).
    """
    restore_interrupt()  # Python's own Ctrl-C from here on (the imports' one-line exit is over)
    argv, debug = _parse_debug(list(sys.argv[1:] if args is None else args))
    if argv in (["--version"], ["-V"]):  # was "a command is needed"
        from lit_robust import __version__

        print(f"lit-robust {__version__}")
        return
    given = _command_word(argv)
    command = given or ""  # for the messages below (`lit-robust fit: error: ...`)
    commands = ["demo", *SUBCOMMAND_HELP]
    # `--print_config` takes an optional value (`--print_config skip_default fit`), read as the command above: let it
    # through when a command follows; alone, jsonargparse's "expected "subcommand" to be one of {fit,...}" left
    # `demo` out
    printing = any(a == "--print_config" or a.startswith("--print_config=") for a in argv)
    if given not in commands and not any(a in ("-h", "--help") for a in argv) and not (
            printing and any(a in commands for a in argv)):
        # jsonargparse's three lines (usage, tip, "invalid choice") left `demo` out and suggested nothing
        close = difflib.get_close_matches(given or "", commands, n=1, cutoff=0.6)
        sys.stderr.write("lit-robust: error: "
                         + (f"unknown command {given!r}" if given else "a command is needed")
                         + (f" (did you mean {close[0]!r}?)" if close else "")
                         + f"; the commands are {', '.join(commands)} (`lit-robust --help`).\n")
        raise SystemExit(2)
    before = argv[:argv.index(given)] if given in SUBCOMMAND_HELP else []
    early = next((a for a in before if a.startswith("--print_config=") and "skip_default" in a), None)
    if early is not None:
        # before the command, jsonargparse's skip_default dropped the command itself and said 'expected "subcommand"
        # to be one of {fit,validate,test,predict}, but it was not provided' of a line that gave `fit`
        sys.stderr.write(f"lit-robust: error: `{early}` before the command drops the command from the config it "
                         f"prints; put it after the command: `lit-robust {given} --config FILE {early}`.\n")
        raise SystemExit(2)
    add_working_directory_to_path()
    _drop_cloud_tips()
    if not debug:
        sys.unraisablehook = _quiet_about_terminated_workers(sys.unraisablehook)
    sigterm_noted(reset=True)  # a SIGTERM of an earlier run in this process (a notebook, the tests) is not this one's
    # this command's id; Lightning's launcher passes it on to the processes it starts (torchrun's share their own)
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    started_here = RUN_ID_VARIABLE not in os.environ
    if started_here:
        # torchrun's run id may be the same for every launch (a fixed `--rdzv-id`, a job id): its agent's pid, the
        # parent of every process of this launch on this node, tells launches apart
        os.environ[RUN_ID_VARIABLE] = (uuid.uuid4().hex if elastic == "none"
                                       else f"torchrun-{elastic}-{os.getppid()}")
    try:
        run(argv)
    except SystemExit as exc:
        stop = stopped_by(exc)
        if stop is None:
            raise
        _say_run_stopped(command, exc, *stop,
                         epochs_done=_epochs_if_training_ended(exc) if command == "fit" else None)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user's mistake
        if not debug and (workers_terminated(exc) or sigterm_noted()):
            # SIGTERM to the whole process group (SLURM's preemption, `timeout`): the loader workers die first and
            # the fit ended in their RuntimeError, a traceback and exit status 1 (a reproducibility newcomer), not
            # as a preempted fit. Under DDP one process may stop at its epoch's end while another, signalled a moment
            # later, waits in a collective and fails on "Connection closed by peer" (a DDP newcomer's run): the
            # preemption's doing too
            _say_run_stopped(command, exc, "SIGTERM", 128 + signal.SIGTERM)
        err = user_error(exc) or error_of_a_spawned_process(exc)
        if debug:
            raise
        if err is None:
            bug = bug_in_a_configured_constructor(exc)
            if bug is not None and bug is not exc:
                # the traceback ends at the user's bug, not at jsonargparse's Union report that wraps it
                raise bug from None
            raise
        cli = next((s for s in _frames_selves(exc) if isinstance(s, RobustCLI)), None)
        rebuilt = getattr(cli, "_ckpt_rebuilt", None)
        # a checkpoint of another fit rebuilds the model, and the error is about the rebuilt one (a CLI newcomer was
        # told to set `model.image_size` to the 8 their config said, the checkpoint's 28 named only in a warning)
        also = ("" if rebuilt is None else f" (the model was rebuilt from the hyper-parameters saved in `--ckpt_path`, "
                f"which replaced the config's {rebuilt}: is it a checkpoint of another fit?)")
        message = f"lit-robust {command}: error: {describe(cli, err)}{also}\n"
        if first_process_to_say(message):  # a DDP newcomer read each config mistake once per process
            sys.stderr.write(message + "(run again with --debug for the traceback)\n")
        _remove_empty_log_dir(cli)
        raise SystemExit(2) from None
    finally:
        while _RESTORE_SIGTERM:  # the handler a `ddp_spawn` command put in place
            _RESTORE_SIGTERM.pop()()
        if started_here:  # a later command in this process (a notebook, the tests) is another command
            os.environ.pop(RUN_ID_VARIABLE, None)



def first_process_to_say(message: str) -> bool:
    """Whether this process is the first of its ``lit-robust`` command's processes to say ``message`` (always true
    outside a multi-process run). Under DDP every process meets the same config mistake and printed it: a DDP
    newcomer read each error twice. A message only one process meets is still said, by that process. The processes
    of one command share :data:`RUN_ID_VARIABLE` (Lightning's launcher copies the environment into the processes
    it starts); the first to create an empty marker file named after the command and the message says it."""
    run = os.environ.get(RUN_ID_VARIABLE)
    # Lightning's and torchrun's processes have LOCAL_RANK (WORLD_SIZE is gone by now: Lightning's teardown drops it)
    if not run or ("LOCAL_RANK" not in os.environ and getattr(rank_zero_only, "rank", 0) == 0):
        return True
    folder = tempfile.gettempdir()
    _remove_stale_markers(folder)
    digest = hashlib.sha1(message.encode()).hexdigest()[:16]
    marker = os.path.join(folder, f"{_MARKER_PREFIX}{run}-{digest}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:  # an unwritable temporary folder: better twice than never
        return True
    return True


_MARKER_PREFIX = "lit-robust-said-"
_MARKER_LIFETIME_S = 3600.0  # the processes of one command meet its mistake within seconds of each other


def _remove_stale_markers(folder: str) -> None:
    """Remove the markers of :func:`first_process_to_say` older than an hour: nothing can know when the last process
    of a command has spoken, so each command's markers stay until a later command clears them."""
    now = time.time()
    for path in glob.glob(os.path.join(glob.escape(folder), f"{_MARKER_PREFIX}*")):
        try:
            if now - os.stat(path).st_mtime > _MARKER_LIFETIME_S:
                os.remove(path)
        except OSError:  # removed by another process meanwhile, or not ours to remove
            pass


def _command_word(argv: Sequence[str]) -> str | None:
    """The command of a ``lit-robust`` command line: its first word that is neither an option nor the file of a
    ``-c``/``--config`` given before it (``lit-robust -c run.yaml fit``)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-c", "--config"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _epochs_if_training_ended(exc: BaseException) -> int | None:
    """The number of epochs of a fit stopped after its last epoch had ended (in the end-of-fit work: ITLM's report
    and plot), else ``None``."""
    cli = next((s for s in _frames_selves(exc) if isinstance(s, RobustCLI)), None)
    trainer = getattr(cli, "trainer", None)
    try:
        done = trainer.fit_loop.epoch_progress.current.processed
        return done if trainer.max_epochs is not None and 0 < trainer.max_epochs <= done else None
    except AttributeError:
        return None


def _say_run_stopped(command: str, exc: BaseException, signal_name: str, status: int,
                     epochs_done: int | None = None) -> None:
    """:func:`_say_stopped` for the run ``exc`` stopped, with whether a fit had written a checkpoint; a fit that had
    written none leaves no empty version folder (a CLI newcomer's Ctrl-C in epoch 0 left one, and was told to
    resume)."""
    cli = next((s for s in _frames_selves(exc) if isinstance(s, RobustCLI)), None)
    written = _checkpoints_written(cli) if command == "fit" else None
    if written is False:
        _remove_empty_log_dir(cli)
    _say_stopped(command, signal_name, status, epochs_done=epochs_done, checkpoints=written)


def _checkpoints_written(cli: RobustCLI | None) -> bool | None:
    """Whether the fit's ModelCheckpoints had written a checkpoint when it stopped; ``None`` when not known (no
    trainer, or a checkpoint callback with a remote or unset folder) or when the fit was itself resumed from one,
    which remains."""
    trainer = getattr(cli, "trainer", None)
    if getattr(trainer, "ckpt_path", None) is not None:
        return None  # a resumed fit: the checkpoint it resumed from remains (`--ckpt_path last` finds it again)
    callbacks = [cb for cb in getattr(trainer, "callbacks", []) if isinstance(cb, ModelCheckpoint)]
    if trainer is None or not callbacks:
        return None if trainer is None else False
    for cb in callbacks:
        if cb.last_model_path or cb.best_model_path:
            return True
        folder = cb.dirpath
        if not folder or "://" in str(folder):
            return None
        if os.path.isdir(folder) and any(name.endswith(".ckpt") for name in os.listdir(folder)):
            return True
    return False


def _say_stopped(command: str, signal_name: str, status: int, epochs_done: int | None = None,
                 checkpoints: bool | None = None) -> None:
    """Say that the run was stopped by ``signal_name`` and exit with ``status`` (128 + the signal, the shell's).
    ``checkpoints``: whether a fit had written any (``None``: not known)."""
    # only a fit writes checkpoints to resume from (a release checker's Ctrl-C'd `test` was told they remain)
    resume = ("; the checkpoints written so far remain: resume with the same command and `--ckpt_path last`"
              if command == "fit" else "")
    if command == "fit" and checkpoints is False:
        # a CLI newcomer's Ctrl-C in epoch 0 was told to resume from checkpoints there were none of
        resume = "; no checkpoint had been written yet, so there is nothing to resume: run the command again"
    if epochs_done is not None:
        # a CLI user's Ctrl-C just after ITLM's report line was told to resume, which then said the fit had run all
        # its epochs and wrote nothing; the plot was never written
        resume = (f" after training: its {epochs_done} epochs had run and the checkpoints were written (resuming "
                  "would train nothing), but the work at the end of a fit was cut short, so a callback's report or "
                  "plot (ITLM's `itlm_scores.png`) may be missing; a new fit writes them")
    if getattr(rank_zero_only, "rank", 0) == 0:  # once, not once per DDP process (a DDP newcomer read it twice)
        sys.stderr.write(f"lit-robust {command}: stopped by {signal_name}{resume}. Exit status {status}, as for a "
                         f"process killed by {signal_name}.\n")
    raise SystemExit(status) from None


def _quiet_about_terminated_workers(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """``sys.unraisablehook`` less the workers' SIGTERM: PyTorch raises it from its SIGCHLD handler wherever the main
    process is, and inside logging's lock release Python prints it as "Exception ignored in: ... Traceback ..."
    (a reproducibility newcomer's preempted CLI fit), above the one line that says the fit was stopped."""
    if getattr(hook, "_lit_robust_quiet", False):
        return hook

    def quiet(unraisable: Any) -> None:
        if unraisable.exc_value is not None and workers_terminated(unraisable.exc_value):
            return
        hook(unraisable)

    quiet._lit_robust_quiet = True  # type: ignore[attr-defined]
    return quiet


def workers_terminated(exc: BaseException) -> bool:
    """Whether the run ended because its DataLoader workers were killed by SIGTERM (PyTorch's "DataLoader worker
    (pid(s) ...) is killed by signal: Terminated."), as when the signal goes to the whole process group."""
    return any(isinstance(e, RuntimeError) and "DataLoader worker" in str(e)
               and "killed by signal: Terminated" in str(e) for e in _chain(exc))


def stopped_by(exc: SystemExit) -> tuple[str, int] | None:
    """``(signal, exit status)`` when Lightning ended the run because it was stopped, else ``None``. Lightning ends a
    fit that received SIGTERM with a SystemExit without a code: exit status 0, so a scheduler that requeues failed jobs
    took a preempted fit for a finished one (a DDP newcomer); a fit stopped by Ctrl-C with ``sys.exit(1)``, the status
    of any failure, and no word on resuming (an MLOps newcomer). The shell's statuses instead: 128 + the signal."""
    if type(exc).__name__ == "SIGTERMException":  # by name: either Lightning package's
        return "SIGTERM", 128 + signal.SIGTERM
    if exc.code == 1 and isinstance(exc.__context__, KeyboardInterrupt):
        return "Ctrl-C (SIGINT)", 128 + signal.SIGINT
    return None


_START_FILES = {"config.yaml", "hparams.yaml"}  # what the CLI and the logger write before training starts


def _remove_empty_log_dir(cli: RobustCLI | None) -> None:
    """The run's log folder (``lightning_logs/version_N``) when the mistake stopped it before anything but the run's
    config and hyper-parameters was written there: removed, so that failed tries leave no empty version folders behind
    (two newcomers found a trail of them; another one, whose resume was refused at restore, folders of a lone
    ``config.yaml``)."""
    trainer = getattr(cli, "trainer", None)
    # rank 0's folder, removed by rank 0 alone: under DDP every rank stopped on the mistake, and two removing it
    # at once ended a DDP newcomer's one-line error in a 40-line FileNotFoundError traceback of rank 1's
    if trainer is None or not trainer.loggers or not trainer.is_global_zero:
        return
    try:
        folder = _own_log_dir(trainer)
    except Exception:  # noqa: BLE001 - a logger of another kind: its folder is left alone
        return
    if not folder or not os.path.isdir(folder):
        return
    try:
        _remove_if_start_files_only(trainer, folder)
    except OSError:  # the folder changed under us (another process): nothing of the user's is at stake
        pass


def _runs_in_started_processes(trainer: Any) -> bool:
    """Whether ``trainer`` runs its fit, test or predict in processes it starts with a copy of itself (``ddp_spawn``,
    ``ddp_fork``): this process then holds the state of before the run (the datamodule not set up, no batch counts,
    no callback history), and the weights, status and metrics Lightning copies back."""
    return type(getattr(getattr(trainer, "strategy", None), "launcher", None)).__name__ == "_MultiProcessingLauncher"


def _point_checkpoints_at_the_run(trainer: Any) -> None:
    """Under ``ddp_spawn``, after the fit: give this process's ModelCheckpoints the folder their copies wrote into
    (``<log_dir>/checkpoints``, as Lightning resolves it; the run's version was fixed before the start). Left unset,
    "the fitted model is ..." looked in every ``version_*`` and named another fit's ``last.ckpt`` (a newcomer's table
    fit was told of an earlier MNIST fit's checkpoint)."""
    if trainer.loggers and type(trainer.loggers[0]).__name__ not in ("CSVLogger", "TensorBoardLogger"):
        return  # a logger of another kind: its folder is not known here
    folder = os.path.join(_own_log_dir(trainer) if trainer.loggers else trainer.default_root_dir, "checkpoints")
    for cb in trainer.checkpoint_callbacks:
        if cb.dirpath is None:
            cb.dirpath = folder


def _own_log_dir(trainer: Any) -> str | None:
    """This process's ``trainer.log_dir``, read as Lightning reads it but without its broadcast from rank 0 (a
    collective, which one rank alone would wait in): for code that runs on rank 0 only."""
    if not trainer.loggers:
        return trainer.default_root_dir
    logger = trainer.loggers[0]
    return logger.log_dir if type(logger).__name__ in ("CSVLogger", "TensorBoardLogger") else logger.save_dir


def _remove_if_start_files_only(trainer: Any, folder: str) -> None:
    names = set(os.listdir(folder))
    if names <= _START_FILES and all(os.path.isfile(os.path.join(folder, n)) for n in names):
        for name in names:
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)
        # and the logger's own folder when the run made it and left it empty (a release check's first fit, refused
        # for a missing data root, left an empty `lightning_logs/`), never the folder the user runs in
        parent = os.path.dirname(os.path.abspath(folder))
        logger_name = getattr(trainer.logger, "name", None)
        if (logger_name and os.path.basename(parent) == logger_name and not os.listdir(parent)
                and parent not in (os.getcwd(), os.path.abspath(str(trainer.default_root_dir)))):
            os.rmdir(parent)

if __name__ == "__main__":  # pragma: no cover
    main()
