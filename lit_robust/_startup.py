"""Ctrl-C while a ``lit-robust`` command starts: one line, not Python's traceback of the imports.

Importing lit_robust, torch and Lightning takes seconds; a CLI user who pressed Ctrl-C in that time (a typo seen in
the command line) got a 30-line ``KeyboardInterrupt`` traceback through the import machinery. In a ``lit-robust``
command only (the console script, or ``python -m lit_robust``), :func:`quiet_interrupt_while_starting` puts a
SIGINT handler in place from the package's first line until :func:`lit_robust.cli.main` starts, which puts Python's
own back (a fit's Ctrl-C is said by the CLI). Nothing heavy is imported here.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

_EXIT_SIGINT = 128 + signal.SIGINT  # 130, what a shell reports for a process ended by Ctrl-C


def in_a_lit_robust_command() -> bool:
    """Whether this process runs the ``lit-robust`` command: the console script, or ``python -m lit_robust`` (read
    from ``sys.orig_argv``, since ``sys.argv[0]`` is ``-m`` while the package is imported)."""
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    if name in ("lit-robust", "lit-robust.exe", "lit-robust-script.py"):
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return any(orig[i] == "-m" and orig[i + 1] == "lit_robust" for i in range(len(orig) - 1))


def _interrupted_while_starting(signum: int, frame: Any) -> None:
    sys.stderr.write("lit-robust: interrupted (Ctrl-C) while starting; nothing ran.\n")
    sys.stderr.flush()
    os._exit(_EXIT_SIGINT)  # no traceback, no clean-up to do: nothing has run


def quiet_interrupt_while_starting() -> None:
    """In a ``lit-robust`` command, and where Python's own SIGINT handler is in place (not one of the user's, nor
    outside the main thread), end a Ctrl-C during the imports with one line and exit status 130."""
    try:
        if in_a_lit_robust_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupted_while_starting)
    except ValueError:  # not the main thread
        pass


def restore_interrupt() -> None:
    """Put Python's SIGINT handler back where :func:`quiet_interrupt_while_starting` replaced it (the CLI's start)."""
    try:
        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:
        pass
