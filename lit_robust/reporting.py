"""Rich tables and matplotlib figures for selection callbacks."""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["round_table", "round_line", "print_table", "plot_score_histograms", "fmt_pct",
           "corrupted_validation_note"]


#: ITLM's ``keep_ratio="auto"`` clips an estimated corrupted fraction at or above this to it: ITLM (like every
#: trimming method here) assumes a clean majority
AUTO_RATE_CAP = 0.5


def fmt_estimate(rate: float | None) -> str:
    """An estimated corrupted fraction as the round table and line show it: as estimated, and where ITLM clipped
    it (at or above :data:`AUTO_RATE_CAP`, NaN included), what it used.

    >>> fmt_estimate(0.3125), fmt_estimate(0.62), fmt_estimate(None)
    ('31.25%', '62.00% (clipped to 50.00%)', '—')
    """
    if rate is None:
        return fmt_pct(None)
    return fmt_pct(rate) if rate < AUTO_RATE_CAP else f"{fmt_pct(rate)} (clipped to {fmt_pct(AUTO_RATE_CAP)})"


_PLAIN = str.maketrans({"→": "->", "—": "-", "–": "-", "×": "x", "…": "...", "≥": ">=", "≤": "<=", "ε": "eps"})


def _stdout_encoding() -> str:
    return getattr(sys.stdout, "encoding", None) or "utf-8"


def stdout_encodes(text: str) -> bool:
    """Whether standard output's encoding can write ``text`` (ASCII or cp1252 cannot write "→" or "•"; an encoding
    Python does not know counts as ASCII)."""
    try:
        text.encode(_stdout_encoding())
        return True
    except (LookupError, UnicodeEncodeError):
        return False


def for_stdout(text: str) -> str:
    """``text`` as standard output can take it: unchanged where it encodes, else with our arrows and dashes spelt in
    ASCII and anything left replaced. A round line's "→" stopped an operator's fit with UnicodeEncodeError when
    stdout was ASCII or cp1252 (``PYTHONIOENCODING``, a Windows console): a log line must never end a fit."""
    if stdout_encodes(text):
        return text
    encoding = _stdout_encoding()
    try:
        "".encode(encoding)
    except LookupError:  # an encoding Python does not know: take ASCII
        encoding = "ascii"
    return text.translate(_PLAIN).encode(encoding, errors="replace").decode(encoding)


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def percent_at_most(x: float) -> str:
    """``x`` as a percentage with one decimal, rounded down: an upper bound that reads as one (a backdoor user's
    5,699 clean of 5,700 kept read "at most 100.0% clean")."""
    return f"{math.floor(1000 * x) / 10:.1f}%"


def _fmt_loss(first: float | None, last: float | None, epochs: int = 2) -> str:
    if first is None and last is None:
        return "—"
    if epochs == 1 and first is not None:  # its first epoch is its last (a backdoor user read "0.7009 → 0.7009")
        return f"{first:.4g}"
    return f"{'—' if first is None else f'{first:.4g}'} → {'—' if last is None else f'{last:.4g}'}"


def _metric_names(history: Sequence[Any]) -> list[str]:
    names: list[str] = []
    for rec in history:
        for k in rec.metrics:
            if k not in names:
                names.append(k)
    return names


def _metrics_epoch(rec: Any) -> str:
    """`` (epoch 1)`` after a round's metric that comes from a validation before the round's last epoch."""
    epoch = getattr(rec, "metrics_from_epoch", None)
    return "" if epoch is None else f" (epoch {epoch})"


def round_table(history: Sequence[Any], monitor: str | None = None, title: str = "ITLM rounds") -> Table:
    """A rich table with one row per finished round (``RoundRecord`` objects).

    The ``train loss`` column (first → last epoch of the round) appears when a record has it, the ``collapsed``
    column when a round collapsed (see :class:`lit_robust.ITLM`'s ``on_collapse``), the ``est. corrupted`` column
    when a round's keep count was estimated (``ITLM(keep_ratio="auto")``).
    """
    from rich.table import Table

    metric_names = _metric_names(history)
    plain = None if stdout_encodes("→—") else _PLAIN
    with_loss = any(getattr(r, "first_epoch_loss", None) is not None for r in history)
    with_collapse = any(getattr(r, "collapsed", False) for r in history)
    with_estimate = any(getattr(r, "estimated_corruption", None) is not None for r in history)
    table = Table(title=title)
    for col in ("round", "epochs", "kept", "clean precision", "corrupted dropped"):
        table.add_column(col, justify="right")
    if with_estimate:
        table.add_column("est. corrupted", justify="right")
    if with_loss:
        table.add_column("train loss", justify="right")
    for k in metric_names:
        table.add_column(k, justify="right")
    if with_collapse:
        table.add_column("collapsed", justify="center")
    for rec in history:
        row = [str(rec.round), str(rec.epochs), f"{rec.kept}/{rec.n}", fmt_pct(rec.clean_precision),
               fmt_pct(rec.corrupted_recall)]
        if with_estimate:
            row.append(fmt_estimate(getattr(rec, "estimated_corruption", None)))
        if with_loss:
            row.append(_fmt_loss(rec.first_epoch_loss, rec.last_epoch_loss, rec.epochs))
        row += [f"{rec.metrics[k]:.4f}{_metrics_epoch(rec)}" if k in rec.metrics else "—" for k in metric_names]
        if with_collapse:
            row.append("yes" if rec.collapsed else "")
        # spelt as stdout will show them, so that rich sizes the columns for it ("->" is one wider than "→": a
        # release checker's latin-1 table had its right border out of line)
        table.add_row(*(cell if plain is None else cell.translate(plain) for cell in row))
    return table


def corrupted_validation_note(history: Sequence[Any], val_loaders: Any) -> str | None:
    """A line to print under the round table where its ``val_*`` columns were measured on corrupted labels: the
    validation loaders' datasets carry ground-truth ``corrupted`` flags (the benchmark datamodules' ``val_size``
    split, drawn from the noisy training data) and some are set. ``None`` otherwise.

    A hurried CLI user read ``itlm_digits``' val_acc 0.44 (its validation labels 40 % corrupted) against a clean
    test accuracy of 0.829, and val_loss rising round after round while the selection got cleaner."""
    names = [k for k in _metric_names(history) if k.startswith("val")]
    if not names or val_loaders is None:
        return None
    loaders = val_loaders if isinstance(val_loaders, (list, tuple)) else [val_loaders]
    flags = [getattr(getattr(dl, "dataset", None), "corrupted", None) for dl in loaders]
    if not flags or any(f is None for f in flags):
        return None  # no ground truth for every validation set: nothing known to say
    bad, n = sum(int(f.sum()) for f in flags), sum(len(f) for f in flags)
    if bad == 0:
        return None
    return (f"{' and '.join(names)}: measured against validation labels of which {bad} of {n} ({bad / n:.1%}) are "
            "corrupted, like the training labels: they score agreement with those labels, so they can get worse "
            "while the model gets better. Judge the model on clean labels (the test split).")


def progress_console(progress_bar: Any) -> Any:
    """The rich console of a running ``RichProgressBar`` (what prints above its live display), else ``None``."""
    if progress_bar is None or not getattr(progress_bar, "is_enabled", False):
        return None
    return getattr(getattr(progress_bar, "progress", None), "console", None)


def print_line(text: str, progress_bar: Any = None) -> None:
    """Print one line during training on a line of its own: above a running progress bar, through the bar's writer
    (an observant newcomer's log files had ITLM's round lines glued to the end of the epoch's bar line); without one,
    through rich's console (plain ``print`` without rich)."""
    text = for_stdout(text)
    console = progress_console(progress_bar)
    if console is not None:  # RichProgressBar's live display: its console prints above it
        console.print(text, highlight=False, soft_wrap=True)
        return
    if progress_bar is not None and getattr(progress_bar, "is_enabled", False):
        if hasattr(progress_bar, "train_progress_bar"):  # TQDMProgressBar: tqdm clears its bars, prints, redraws
            from tqdm import tqdm

            tqdm.write(text)
            return
    try:
        from rich.console import Console
    except ImportError:  # rich only formats: without it (a bare torch + Lightning install) print plain text
        print(text)
        return
    Console().print(text, highlight=False, soft_wrap=True)


def print_table(table: Table, console: Any = None) -> None:
    """Print a rich table whole: into a log file or a pipe rich would cut it to 80 columns (``1347/1…``), so there
    the console is made as wide as the table; a terminal keeps its width."""
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console()
    if not stdout_encodes("→—"):  # stdout cannot take the table's arrows and lines: draw it in ASCII instead
        class _Narrow(io.StringIO):
            encoding = "ascii"  # rich then draws the table's box in ASCII

        buffer = _Narrow()
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        Console(file=buffer, width=natural, color_system=None).print(table)
        print(for_stdout(buffer.getvalue()), end="")
        return
    if not console.is_terminal:
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        console = Console(file=console.file, width=max(console.width, natural))
    console.print(table)


def round_line(rec: Any, num_rounds: int | None = None, title: str = "ITLM") -> str:
    """One line summing up a finished round (a ``RoundRecord``), printed after each round.

    >>> from lit_robust.callbacks.itlm import RoundRecord
    >>> round_line(RoundRecord(round=1, epochs=2, kept=144, n=240, clean_precision=0.9, corrupted_recall=0.75,
    ...                        first_epoch_loss=1.5, last_epoch_loss=0.5, metrics={"val_acc": 0.8}), num_rounds=3)
    'ITLM round 1/2: 2 epochs on 144/240 samples, clean precision 90.00%, corrupted dropped 75.00%, train loss 1.5 → 0.5, val_acc 0.8000'
    >>> round_line(RoundRecord(round=1, epochs=1, kept=165, n=240, estimated_corruption=0.3125))
    'ITLM round 1: 1 epoch on 165/240 samples, estimated corrupted 31.25%'
    """
    last = f"/{num_rounds - 1}" if num_rounds is not None else ""
    parts = [f"{rec.epochs} epoch{'s' if rec.epochs != 1 else ''} on {rec.kept}/{rec.n} samples"]
    if getattr(rec, "estimated_corruption", None) is not None:
        parts.append(f"estimated corrupted {fmt_estimate(rec.estimated_corruption)}")
    if rec.clean_precision is not None:
        parts.append(f"clean precision {fmt_pct(rec.clean_precision)}")
    if rec.corrupted_recall is not None:
        parts.append(f"corrupted dropped {fmt_pct(rec.corrupted_recall)}")
    if getattr(rec, "first_epoch_loss", None) is not None or getattr(rec, "last_epoch_loss", None) is not None:
        parts.append(f"train loss {_fmt_loss(rec.first_epoch_loss, rec.last_epoch_loss, rec.epochs)}")
    parts += [f"{k} {v:.4f}{_metrics_epoch(rec)}" for k, v in rec.metrics.items()]
    if getattr(rec, "collapsed", False):
        parts.append("COLLAPSED")
    return f"{title} round {rec.round}{last}: " + ", ".join(parts)


def plot_score_histograms(score_history: Sequence[dict], folder: str, filename: str = "scores.png") -> str:
    """One panel per scoring pass: histograms of clean vs corrupted samples' scores (log10 scale), or, where no pass
    knows the ground truth, of the samples it kept vs dropped (each pass's ``"kept"`` mask; an image-folder newcomer
    with real data got no plot and no word why). A pass's ``"title"``, where given, names its panel (default
    "scores before round <round>")."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import torch

    passes = [h for h in score_history if h.get("corrupted") is not None]
    groups = ("clean", "corrupted")
    if not passes:
        passes = [{**h, "corrupted": ~h["kept"]} for h in score_history if h.get("kept") is not None]
        groups = ("kept", "dropped")
    if not passes:
        raise ValueError("no scoring pass with ground truth or a selection to plot.")
    fig, axes = plt.subplots(1, len(passes), figsize=(3.2 * len(passes), 2.8), squeeze=False)
    for ax, h in zip(axes[0], passes):
        s, c = h["scores"], h["corrupted"]
        finite = torch.isfinite(s)
        v = torch.log10(s[finite].clamp(min=1e-8))
        cf = c[finite]
        bins = torch.linspace(float(v.min()), float(v.max()) + 1e-6, 40).tolist() if v.numel() else 10
        ax.hist(v[~cf].tolist(), bins=bins, alpha=0.6, label=groups[0], color="tab:blue")
        ax.hist(v[cf].tolist(), bins=bins, alpha=0.6, label=groups[1], color="tab:red")
        ax.set_title(h.get("title", f"scores before round {h['round']}"))
        ax.set_xlabel("log10 score")
    axes[0][0].set_ylabel("samples")
    axes[0][0].legend()
    fig.tight_layout()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, filename)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
