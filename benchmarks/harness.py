"""The one benchmark harness: modes, seeds, worker pool, timing, the saved run, markdown and the JSON last line.

A script in ``benchmarks/`` keeps only its protocol and its paper table; it describes itself as a
:class:`Benchmark` and hands ``argv`` to :func:`main`::

    BENCHMARK = Benchmark(
        name="filter_auto_digits",            # the script's stem; results/<name>.md and .json in full mode
        doc=__doc__,
        modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},  # protocol settings (dataclasses) per mode
        tasks=tasks,                          # (settings, args) -> list of picklable task dicts
        run=run_one,                          # task -> JSON-able result (top level: it runs in spawned workers)
        render=render,                        # saved run -> markdown (everything it prints comes from the saved run)
        headline=headline,                    # saved run -> the headline figures of the JSON last line
    )

    if __name__ == "__main__":
        main(BENCHMARK)

Every run, in every mode, goes the same way: ``--quick`` / ``--smoke`` pick the settings (full by default), ``--seeds``
replaces the protocol's seeds where it has them, the tasks run in ``--jobs`` spawned workers (one torch thread each),
and the harness builds the *saved run* — ``{"benchmark", "mode", "settings", "results", "meta"}`` with ``meta`` the
date, machine, torch version, worker count, wall time and command line. The markdown is ``render(saved)``, so a saved
run re-renders to the same bytes: ``python benchmarks/<name>.py --render benchmarks/results/<name>.json`` (from the
repository root) prints it again without training (``--out`` writes it), and ``tests/test_benchmark_results.py``
checks that every committed table is exactly its JSON rendered. Full mode writes ``results/<name>.md`` and ``.json``
(``--out`` elsewhere, in any mode); the last line printed is always one JSON object:
``{"benchmark", "mode", **headline(saved), "wall_s"}``.

Scripts whose runs do not fit "independent tasks in a pool" (timing in interleaved pairs in one process, resumable
stores) pass ``execute=`` instead of ``tasks``/``run``: ``(settings, args, jobs) -> results``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import datetime as _dt
import importlib.util
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_DATA_ROOT = Path(os.environ.get("LIT_ROBUST_DATA", HERE.parents[0].parent / "shared" / "data"))
MODES = ("full", "quick", "smoke")


# -- what every protocol uses ---------------------------------------------------------------------------------------
def quiet() -> None:
    """Silence Lightning's INFO banners and the warnings every small CPU run triggers."""
    import pytorch_lightning  # noqa: F401  (it sets its logger to INFO on import)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in (".*does not have many workers.*", ".*The number of training batches.*",
                    ".*GPU available.*", ".*isinstance.*LeafSpec.*", ".*too small to drop.*",
                    ".*Total length of.*", ".*validation_step.*"):
        warnings.filterwarnings("ignore", message=message)


def own_classifier(net: Any, make_optimizer: Any) -> Any:
    """A newcomer's own classifier as the README has it: ``net`` (inputs to ``[B, C]`` logits) in a LightningModule
    with the mixin, per-sample cross-entropy returned with the logits, test accuracy logged, and the optimizer
    ``make_optimizer(parameters)``."""
    import torch
    import torch.nn.functional as F

    from lit_robust import RobustMixin, unpack_eval_batch
    from lit_robust._backend import pl

    class OwnClassifier(RobustMixin, pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def per_sample_loss(self, batch: Any) -> Any:
            _, x, y = batch[:3]
            logits = self.net(x)
            return F.cross_entropy(logits, y, reduction="none"), logits

        def test_step(self, batch: Any, batch_idx: int) -> None:
            b = unpack_eval_batch(batch)
            self.log("test_acc", (self.net(b.input).argmax(1) == b.target).float().mean())

        def configure_optimizers(self) -> Any:
            return make_optimizer(self.parameters())

    return OwnClassifier()


def trainer(max_epochs: int, callbacks: list, **kwargs: Any) -> Any:
    """A CPU Trainer without logger, checkpoints, progress bar, model summary or sanity validation."""
    import pytorch_lightning as pl

    kwargs.setdefault("num_sanity_val_steps", 0)
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def run_tasks(fn: Callable[[dict], Any], tasks: list[dict], jobs: int) -> Iterator[Any]:
    """``fn(task)`` for every task, in order; in ``jobs`` spawned worker processes when ``jobs > 1``."""
    if jobs <= 1:
        for t in tasks:
            yield fn(t)
        return
    with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        yield from pool.map(fn, tasks)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# -- markdown -------------------------------------------------------------------------------------------------------
def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "---") -> list[str]:
    """A markdown table as lines: the header, the rule (``align`` per column), one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([align] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def pm(mean: float, std: float, digits: int = 1, n: int | None = None) -> str:
    """``mean ± std`` with ``digits`` decimals; ``mean (1 seed)`` when ``n`` (the number of values) is 1, whose
    standard deviation is no measurement."""
    if n == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def beside(ours: str, paper: float | str | None) -> str:
    """Our figure with the paper's in parentheses (``–`` where the paper has none)."""
    return f"{ours} ({'–' if paper is None else paper})"


def machine_line(meta: dict[str, Any]) -> str:
    """One sentence on where and when a saved run was measured (from its ``meta``)."""
    cpu = f" ({meta['cpu']})" if meta.get("cpu") else ""  # runs saved before 2026-12-04 did not record it
    return (f"Wall time {meta['wall_s'] / 60:.1f} min ({meta['jobs']} worker process(es) x 1 torch thread); date "
            f"{meta['date']}; machine: {meta['machine']}, {meta['cpus']} CPU cores{cpu} (shared with other jobs); torch "
            f"{meta['torch']}.")


def cpu_model() -> str | None:
    """The CPU's model name (Linux's /proc/cpuinfo, else the platform's): figures of the same code and seeds moved
    by up to 3.8 points between hosts (a reviewer's re-run of itlm_reinit), and the tables named no CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# -- the saved run --------------------------------------------------------------------------------------------------
def jsonable(obj: Any) -> Any:
    """Dataclasses as dicts, tuples as lists, NaN/inf as None: what ``json.dumps`` writes and reads back unchanged."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def meta(wall_s: float, jobs: int, argv: Sequence[str], name: str) -> dict[str, Any]:
    """Date, machine, torch version, worker count, wall time and the command line of a run."""
    import torch

    return {"date": _dt.date.today().isoformat(), "machine": f"{platform.machine()}, {platform.system()} "
            f"{platform.release()}", "cpus": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__, "python":
            platform.python_version(), "jobs": jobs, "wall_s": round(wall_s, 1),
            "command": shlex.join(["python", f"benchmarks/{name}.py", *argv])}


def split_out(command: str) -> tuple[list[str], str | None]:
    """A saved command's arguments without its ``--out FILE`` / ``--out=FILE``, and that ``FILE`` (the last one given;
    ``None`` without one)."""
    argv, kept, out, skip = shlex.split(command), [], None, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--out" and i + 1 < len(argv):
            out, skip = argv[i + 1], True
        elif arg.startswith("--out="):
            out = arg.split("=", 1)[1]
        else:
            kept.append(arg)
    return kept, out


def saved_json(saved: dict[str, Any], default: str) -> str | None:
    """Where the command of a saved run wrote its ``.json``, for its Reproduce line: beside its ``--out`` (the path as
    given), else ``benchmarks/results/<default>`` in full mode; ``None`` when it wrote none (quick or smoke without
    ``--out``). A script whose ``configure`` picks another full-mode output names it as ``default``."""
    out = split_out(saved["meta"]["command"])[1]
    if out:
        return Path(out).with_suffix(".json").as_posix()
    return f"benchmarks/results/{default}" if saved["mode"] == "full" else None


def reproduce_note(saved: dict[str, Any], default: str, also: str = "") -> str:
    """The parenthesis of a Reproduce line: which saved run the command writes (and ``also``, e.g. "the grids") and
    how to re-print it, or that it wrote nothing (a quick or smoke run without ``--out``)."""
    path = saved_json(saved, default)
    if path is None:
        return "(printed only: `--out FILE.md` writes the table and the saved run beside it, `FILE.json`)"
    return (f"(writes this file, `{path}`{', ' + also if also else ''}; `--render {path}` re-prints it without "
            "training)")


def save(saved: dict[str, Any], text: str, out: Path) -> None:
    """Write the markdown to ``out`` and the saved run beside it (``.json``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(saved, indent=1) + "\n")


def load_module(name: str) -> Any:
    """Import ``benchmarks/<name>.py`` as a module (its dataclasses resolve through ``sys.modules``)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def parts_and_arms(parts: Sequence[str], arms: Sequence[str], arms_field: str, arms_help: str
                   ) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[Any, argparse.Namespace], Any]]:
    """A script's ``add_arguments`` and ``configure`` for ``--parts`` (which of ``parts`` to run: the protocol's
    ``parts`` field) and ``--arms`` (which of ``arms``: its ``arms_field``), both a subset on the command line."""
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--parts", nargs="+", choices=parts, help="which parts to run (default: all)")
        ap.add_argument("--arms", nargs="+", choices=arms, metavar="ARM", help=f"{arms_help}, of {list(arms)}")

    def configure(p: Any, args: argparse.Namespace) -> Any:
        if args.parts:
            p = dataclasses.replace(p, parts=tuple(args.parts))
        if args.arms:
            p = dataclasses.replace(p, **{arms_field: tuple(args.arms)})
        return p

    return add_arguments, configure


def render_saved(path: str | Path) -> str:
    """The markdown of a saved run, by the script named in it."""
    saved = json.loads(Path(path).read_text())
    return load_module(saved["benchmark"]).BENCHMARK.render(saved)


# -- the benchmark --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Benchmark:
    """One benchmark script: its protocol settings per mode and the functions that run, render and summarise it.

    ``modes`` maps ``"full"``, ``"quick"`` and ``"smoke"`` to the protocol's settings (any object; a dataclass with
    a ``seeds`` field gets ``--seeds``). ``tasks(settings, args)`` lists the independent runs and ``run(task)`` does
    one (a top-level function: it is pickled into spawned workers); or ``execute(settings, args, jobs)`` does them
    all. ``render(saved)`` and ``headline(saved)`` read only the saved run. ``add_arguments(parser)`` adds the
    script's own options; ``configure(settings, args)`` applies them (and raises ``SystemExit`` naming the option on
    bad values); ``summarise(results, settings, args)`` turns the list of results into what is saved under
    ``"results"`` (the list itself by default).
    """

    name: str
    doc: str
    modes: dict[str, Any]
    render: Callable[[dict[str, Any]], str]
    headline: Callable[[dict[str, Any]], dict[str, Any]]
    tasks: Callable[[Any, argparse.Namespace], list[dict]] | None = None
    run: Callable[[dict], Any] | None = None
    execute: Callable[[Any, argparse.Namespace, int], Any] | None = None
    summarise: Callable[[list[Any], Any, argparse.Namespace], Any] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    configure: Callable[[Any, argparse.Namespace], Any] | None = None
    jobs: dict[str, int] = dataclasses.field(default_factory=lambda: {"full": 2, "quick": 1, "smoke": 1})
    data: bool = True  # whether ``--data-root`` means anything to it

    def __post_init__(self) -> None:
        if (self.execute is None) == (self.tasks is None or self.run is None):
            raise ValueError(f"benchmark {self.name!r}: give either `tasks` and `run`, or `execute`")
        missing = [m for m in MODES if m not in self.modes]
        if missing:
            raise ValueError(f"benchmark {self.name!r}: `modes` must hold {list(MODES)}, missing {missing}")

    def parser(self) -> argparse.ArgumentParser:
        # "resolve": a script's own option (e.g. its own --data-root) replaces the harness's
        p = argparse.ArgumentParser(prog=f"benchmarks/{self.name}.py", description=self.doc.split("\n\n")[0],
                                    formatter_class=argparse.RawDescriptionHelpFormatter, conflict_handler="resolve")
        level = p.add_mutually_exclusive_group()
        level.add_argument("--quick", action="store_true", help="the reduced protocol (< 60 s on 2 cores)")
        level.add_argument("--smoke", action="store_true", help="tiny data, a few seconds (the test suite's run)")
        level.add_argument("--render", default=None, metavar="JSON",
                           help="run nothing: print the markdown of a saved run (with --out, write it)")
        p.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the protocol's seeds")
        p.add_argument("--jobs", type=int, default=None,
                       help=f"worker processes (default: {', '.join(f'{k} {v}' for k, v in self.jobs.items())})")
        p.add_argument("--out", default=None, help=f"markdown output (full mode default: results/{self.name}.md; "
                       "--quick / --smoke write none unless given; the saved run goes beside it as .json)")
        p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                       help="folder holding MNIST/raw and FashionMNIST/raw (default: $LIT_ROBUST_DATA or "
                            "../shared/data beside the repository, whatever the working folder)" if self.data
                       else "unused by this script (accepted like every script's)")
        if self.add_arguments is not None:
            self.add_arguments(p)
        return p

    def settings(self, mode: str, args: argparse.Namespace) -> Any:
        s = self.modes[mode]
        if args.seeds is not None:
            if not (dataclasses.is_dataclass(s) and any(f.name == "seeds" for f in dataclasses.fields(s))):
                # a protocol of parts (anomaly.py: moons, MNIST) has seeds per part, which `--seeds` does not reach
                parts = {f.name: list(getattr(s, f.name).seeds) for f in dataclasses.fields(s)
                         if hasattr(getattr(s, f.name), "seeds")} if dataclasses.is_dataclass(s) else {}
                why = ("each part of its protocol fixes its own seeds (" + "; ".join(
                    f"{name} {seeds}" for name, seeds in parts.items()) + ")") if parts else "its protocol has no seeds"
                raise SystemExit(f"`--seeds` is not an option of {self.name}: {why}; got --seeds {args.seeds}")
            bad = [x for x in args.seeds if x < 0]
            if bad:
                raise SystemExit(f"`--seeds` must be integers >= 0, got {args.seeds}")
            s = dataclasses.replace(s, seeds=tuple(args.seeds))
        return self.configure(s, args) if self.configure is not None else s

    def results(self, settings: Any, args: argparse.Namespace, jobs: int) -> Any:
        if self.execute is not None:
            return self.execute(settings, args, jobs)
        results = list(run_tasks(self.run, self.tasks(settings, args), jobs))
        return self.summarise(results, settings, args) if self.summarise is not None else results


def mode_of(args: argparse.Namespace) -> str:
    """The mode a parsed command line asks for: ``"quick"``, ``"smoke"`` or ``"full"``."""
    return "quick" if args.quick else "smoke" if args.smoke else "full"


def output_path(name: str, args: argparse.Namespace) -> Path | None:
    """Where a run writes its markdown (``--out``; ``results/<name>.md`` in full mode; else nowhere): for scripts
    that put files of their own (plots, image grids) beside it."""
    return Path(args.out) if args.out else (RESULTS / f"{name}.md" if mode_of(args) == "full" else None)


def main(bench: Benchmark, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``bench`` as its command line says; returns (and prints last) the headline JSON object."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = bench.parser().parse_args(argv)
    if args.render:
        path = Path(args.render)
        if not path.is_file():
            raise SystemExit(f"`--render` must be a saved run (.json), got {args.render!r}: no such file")
        saved = json.loads(path.read_text())
        if saved.get("benchmark") != bench.name:
            raise SystemExit(f"`--render` must be a saved run of {bench.name}, got one of "
                             f"{saved.get('benchmark')!r} ({args.render})")
        text = bench.render(saved)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        summary = {"benchmark": bench.name, "mode": "render", **bench.headline(saved),
                   "wall_s": saved["meta"]["wall_s"]}
        print(json.dumps(jsonable(summary)), flush=True)
        return summary

    mode = mode_of(args)
    jobs = args.jobs if args.jobs is not None else bench.jobs[mode]
    if jobs < 1:
        raise SystemExit(f"`--jobs` must be >= 1, got {jobs}")
    if bench.data and not Path(args.data_root).is_dir():
        raise SystemExit(f"`--data-root` must be a folder holding MNIST/raw (and FashionMNIST/raw), got "
                         f"{args.data_root!r}: no such folder")
    settings = bench.settings(mode, args)
    t0 = time.perf_counter()
    results = bench.results(settings, args, jobs)
    saved = {"benchmark": bench.name, "mode": mode, "settings": jsonable(settings), "results": jsonable(results),
             "meta": meta(time.perf_counter() - t0, jobs, argv, bench.name)}
    saved = json.loads(json.dumps(saved))  # render exactly what --render will read back
    text = bench.render(saved)
    print(text)
    out = output_path(bench.name, args)  # read after `configure`, which may point it elsewhere
    if out is not None:
        save(saved, text, out)
    summary = {"benchmark": bench.name, "mode": mode, **bench.headline(saved), "wall_s": saved["meta"]["wall_s"]}
    print(json.dumps(jsonable(summary)), flush=True)
    return summary
