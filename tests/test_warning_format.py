"""lit_robust's own warnings are shown on one line; everyone else's as before."""

import subprocess
import sys
import warnings
from pathlib import Path

import lit_robust
from lit_robust._warnings import install_one_line_format

ITLM_FILE = str(Path(lit_robust.__file__).parent / "callbacks" / "itlm.py")


def test_lit_robust_warning_has_no_source_line():
    text = warnings.formatwarning("ITLM round 1: few kept", UserWarning, ITLM_FILE, 12, line="rank_zero_warn(...)")
    assert text == f"{ITLM_FILE}:12: UserWarning: ITLM round 1: few kept\n"


def test_other_warnings_keep_the_previous_format(tmp_path):
    user_file = tmp_path / "train.py"
    user_file.write_text("x = 1\n")
    text = warnings.formatwarning("careful", UserWarning, str(user_file), 1, line="x = 1")
    assert text == f"{user_file}:1: UserWarning: careful\n  x = 1\n"


def test_installing_twice_wraps_once():
    before = warnings.formatwarning
    install_one_line_format()
    assert warnings.formatwarning is before


def test_a_warning_shown_from_the_package():
    # in a fresh interpreter: pytest replaces `showwarning` while a test runs
    code = ("import warnings, lit_robust; "
            f"warnings.warn_explicit('shown', UserWarning, {ITLM_FILE!r}, 7); "
            "warnings.warn_explicit('other', UserWarning, 'elsewhere.py', 3)")
    run = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                         cwd=Path(lit_robust.__file__).parent.parent, check=True)
    assert run.stderr.startswith(f"{ITLM_FILE}:7: UserWarning: shown\nelsewhere.py:3: UserWarning: other\n")
