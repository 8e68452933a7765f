"""What lit_robust prints: its own warnings on one line, everyone else's as before; its lines and tables on any stdout."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

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
    # in a fresh interpreter: pytest replaces `showwarning` while a test runs. Deprecations ignored (the last -W that
    # matches wins): at the floors (matplotlib 3.7-3.10 with pyparsing 3.3) importing matplotlib shows pyparsing's
    # deprecation warnings, a UserWarning and DeprecationWarning subclass, first
    code = ("import warnings, lit_robust; "
            f"warnings.warn_explicit('shown', UserWarning, {ITLM_FILE!r}, 7); "
            "warnings.warn_explicit('other', UserWarning, 'elsewhere.py', 3)")
    run = subprocess.run([sys.executable, "-W", "always", "-W", "ignore::DeprecationWarning", "-c", code],
                         capture_output=True, text=True,
                         cwd=Path(lit_robust.__file__).parent.parent, check=True)
    assert run.stderr.startswith(f"{ITLM_FILE}:7: UserWarning: shown\nelsewhere.py:3: UserWarning: other\n")


def _ascii_stdout(monkeypatch, encoding="ascii"):
    import io

    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding=encoding, errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", stream)
    return buffer


def test_round_lines_and_tables_print_on_a_stdout_that_is_not_utf8(monkeypatch):
    """An operator's fit with PYTHONIOENCODING=ascii (or a cp1252 console) stopped at round 0 with UnicodeEncodeError
    on the round line's arrow."""
    from lit_robust.callbacks.itlm import RoundRecord
    from lit_robust.reporting import print_line, print_table, round_line, round_table

    rec = RoundRecord(round=1, epochs=2, kept=144, n=240, clean_precision=0.9, corrupted_recall=0.75,
                      first_epoch_loss=1.5, last_epoch_loss=0.5, metrics={})
    for encoding in ("ascii", "cp1252"):
        buffer = _ascii_stdout(monkeypatch, encoding)
        print_line(round_line(rec, num_rounds=3))
        print_table(round_table([rec]))
        out = buffer.getvalue().decode(encoding)
        assert "train loss 1.5 -> 0.5" in out, out
        assert "| 1.5 -> 0.5" in out.replace("  ", " "), out


@pytest.mark.parametrize("encoding", ["ascii", "latin-1", "cp1252"])
def test_the_round_tables_lines_are_as_wide_on_a_stdout_that_is_not_utf8(monkeypatch, encoding):
    """Under latin-1 a release checker's round table had its train-loss cells ("->" for "→") one character wider than
    their column, and the right border out of line: the cells are spelt as stdout shows them before rich sizes them."""
    from lit_robust.callbacks.itlm import RoundRecord
    from lit_robust.reporting import print_table, round_table

    recs = [RoundRecord(round=r, epochs=2, kept=144, n=240, clean_precision=0.9, corrupted_recall=None,
                        first_epoch_loss=1.5, last_epoch_loss=0.5, metrics={}) for r in range(2)]
    buffer = _ascii_stdout(monkeypatch, encoding)
    print_table(round_table(recs))
    lines = [line for line in buffer.getvalue().decode(encoding).splitlines() if line.startswith(("+", "|"))]
    assert len(lines) == 6 and len({len(line) for line in lines}) == 1, lines
    assert "| 1.5 -> 0.5 |" in lines[3]


def test_a_utf8_stdout_keeps_the_arrows(monkeypatch):
    from lit_robust.reporting import for_stdout

    _ascii_stdout(monkeypatch, "utf-8")
    assert for_stdout("1.5 → 0.5 — ε") == "1.5 → 0.5 — ε"


@pytest.mark.parametrize("encoding", ["ascii", "cp1252", "utf-8"])
def test_a_cli_fit_with_its_default_progress_bar_ends_on_a_stdout_that_is_not_utf8(tmp_path, monkeypatch, encoding,
                                                                                   one_torch_thread):
    """With the rounds' lines spelt in ASCII, a docs auditor's `PYTHONIOENCODING=ascii lit-robust fit` still ended
    with UnicodeEncodeError and exit 1: Lightning's rich progress bar wrote its "•" at teardown. The CLI adds tqdm's
    bar (on stderr, ASCII by itself) where stdout cannot take rich's; a UTF-8 stdout keeps the rich bar."""
    import yaml

    from lit_robust.cli import run
    from tests.conftest import REPO
    from tests.test_cli import shrink

    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    assert cfg["trainer"].get("enable_progress_bar", True) is not False  # the user's default: a bar
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _ascii_stdout(monkeypatch, encoding)
    cli = run(["fit", "--config", str(path)])
    bar = type(cli.trainer.progress_bar_callback).__name__
    assert bar == ("RichProgressBar" if encoding == "utf-8" else "TQDMProgressBar")
    assert (Path(cli.trainer.log_dir) / "itlm_report.csv").is_file()


def test_an_upper_bound_in_percent_is_rounded_down_and_a_one_epoch_loss_shown_once():
    from lit_robust.reporting import _fmt_loss, percent_at_most

    # a backdoor user's 5,699 clean of 5,700 kept read "the selection is at most 100.0% clean"
    assert percent_at_most(5699 / 5700) == "99.9%" and percent_at_most(0.875) == "87.5%"
    assert percent_at_most(1) == "100.0%"
    # a round of one epoch read "train loss 0.7009 → 0.7009"
    assert _fmt_loss(0.7009, 0.7009, epochs=1) == "0.7009" and _fmt_loss(1.5, 0.5, epochs=3) == "1.5 → 0.5"
    assert _fmt_loss(1.5, 1.5, epochs=2) == "1.5 → 1.5"  # two epochs that did not lower it: said as such
