"""One-line display of lit_robust's own warnings.

Python shows a warning as ``file:line: Category: message`` followed by the source line that raised it. For a warning
raised inside lit_robust that source line is this library's code (``rank_zero_warn(f"ITLM round {round_}: ...``),
which tells a user nothing and doubles the lines between a fit's output (the demo printed 32 lines for 16 warnings).
Lightning drops that line for its own warnings by wrapping :func:`warnings.formatwarning`; this does the same for
files under this package, and hands every other warning to the formatter that was in place.
"""

from __future__ import annotations

import warnings
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_installed = False


def _from_lit_robust(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, ValueError):
        return False


def install_one_line_format() -> None:
    """Wrap the current :func:`warnings.formatwarning` (once) so that lit_robust's warnings omit the source line."""
    global _installed
    if _installed:  # once: a package imported later (the unified `lightning`) may wrap it again, which is fine
        return
    _installed = True
    previous = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):  # noqa: ANN001, ANN202 (the stdlib signature)
        if _from_lit_robust(filename):
            return f"{filename}:{lineno}: {category.__name__}: {message}\n"
        return previous(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning
