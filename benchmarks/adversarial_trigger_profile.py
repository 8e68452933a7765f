"""Benchmark: where a PRL-AT training step's time goes (issue 17, item 3), as ratios to a plain step.

The setting of ``benchmarks/overhead.py``'s ``backdoor/adversarial_trigger_step`` row: ``ImageClassifier(backbone=
"cnn2")``, one batch of 100 offline MNIST training digits, SGD, ``BatchFilter("prl", drop_ratio=0.3)`` and
``AdversarialTrigger(tau=0.16)``. Every section below is timed once per round, the sections of a round in a
rotating order, so the load of a shared machine hits all of them alike; a section's ratio is the median over rounds
of (its time ÷ the plain step's time in the same round). Setup a section needs (e.g. the forward pass whose graph
a backward section runs) is done untimed.

Three tables:

1. the sections of a step: the plain step and its forward/backward halves; the PRL-filtered outer step; the inner
   step's forward, filter preview, backward to the inputs (``torch.autograd.grad`` — what the callback did before
   — and :func:`lit_robust.callbacks.adversarial_trigger.input_gradient`, what it does now), a backward to inputs
   *and* parameters (what skipping parameter gradients saves), the perturbation arithmetic; and the whole PRL-AT
   step before and now;
2. ``torch.profiler`` operator table of the inner backward, before and now (ms per step, self CPU time);
3. oneDNN vs PyTorch's native kernel for a convolution's input gradient, over a few layer shapes (why
   ``input_gradient`` routes layers with <= 4 input channels per group to the native kernel).

Usage::

    python benchmarks/adversarial_trigger_profile.py           # -> results/adversarial_trigger_profile.md (+ .json)
    python benchmarks/adversarial_trigger_profile.py --quick   # < 60 s
    python benchmarks/adversarial_trigger_profile.py --smoke   # a few seconds, for the test suite
    python benchmarks/adversarial_trigger_profile.py --render benchmarks/results/adversarial_trigger_profile.json

Modes, ``--out``, ``--render`` and the JSON last line (the headline ratios) are ``harness.py``'s; every section is
timed in this one process (``--jobs`` is 1).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Benchmark, main, md_table, quiet, reproduce_note  # noqa: E402
from overhead import Context, _datamodule, _model, _quantile, pin_malloc  # noqa: E402

TAU, VALUE_RANGE, DROP = 0.16, (-0.4242, 2.8215), 0.3

# (in_channels, out_channels, kernel, stride, image size, batch): cnn2's two layers, 1- and 3-channel stems, wider
GRID = [(1, 16, 5, 1, 28, 100), (1, 64, 3, 1, 28, 100), (3, 16, 5, 1, 32, 100), (3, 64, 7, 2, 64, 32),
        (3, 64, 3, 1, 32, 64), (4, 32, 3, 1, 32, 64), (8, 16, 3, 1, 28, 100), (8, 64, 3, 1, 32, 64),
        (16, 32, 5, 1, 14, 100), (32, 64, 3, 1, 16, 64)]


class Bench:
    """The model, batch, callbacks and the section functions (each returns its own timed seconds)."""

    def __init__(self, ctx: Context) -> None:
        from types import SimpleNamespace

        from lit_robust import AdversarialTrigger, BatchFilter, unpack_batch
        from lit_robust.callbacks import adversarial_trigger as at_module

        self.at_module = at_module
        self.dm = _datamodule(ctx)
        self.module = _model()
        self.module.train()
        self.opt = torch.optim.SGD(self.module.parameters(), lr=0.01)
        self.batch = next(iter(self.dm.train_dataloader()))
        self.ib = unpack_batch(self.batch)
        self.filt = BatchFilter("prl", drop_ratio=DROP)
        self.trigger = AdversarialTrigger(tau=TAU, value_range=VALUE_RANGE)
        self.stub = SimpleNamespace(training=True, current_epoch=1, datamodule=None)  # what the callbacks read
        for cb in (self.filt, self.trigger):
            cb.setup(self.stub, self.module, "fit")

    def close(self) -> None:
        for cb in (self.trigger, self.filt):
            cb.teardown(self.stub, self.module, "fit")

    # -- helpers ---------------------------------------------------------------------------------------------
    def _outer(self, b: list) -> None:
        out = self.module.per_sample_loss(b)
        loss = self.module.reduce_loss(out[0], b, out[1])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def _inner_graph(self) -> tuple[Tensor, Tensor, Tensor]:
        x_var = self.ib.input.detach().clone().requires_grad_(True)
        probe = list(self.batch)
        probe[1] = x_var
        losses, logits = self.module.per_sample_loss(probe)
        keep = self.module.batch_keep_mask(losses.detach(), probe, logits.detach(), record=False)
        return x_var, losses, keep

    @staticmethod
    def _time(fn: Callable[[], Any]) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    # -- sections ----------------------------------------------------------------------------------------------
    def plain_step(self) -> float:
        def run() -> None:
            loss = F.cross_entropy(self.module(self.ib.input), self.ib.target)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return self._time(run)

    def plain_forward(self) -> float:
        return self._time(lambda: F.cross_entropy(self.module(self.ib.input), self.ib.target))

    def plain_backward(self) -> float:
        loss = F.cross_entropy(self.module(self.ib.input), self.ib.target)

        def run() -> None:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return self._time(run)

    def prl_step(self) -> float:
        def run() -> None:
            b = list(self.batch)
            self.filt.on_train_batch_start(self.stub, self.module, b, 0)
            self._outer(b)
            self.filt.on_train_batch_end(self.stub, self.module, None, b, 0)
        return self._time(run)

    def inner_forward(self) -> float:
        def run() -> None:
            x_var = self.ib.input.detach().clone().requires_grad_(True)
            probe = list(self.batch)
            probe[1] = x_var
            self.module.per_sample_loss(probe)
        return self._time(run)

    def inner_preview(self) -> float:
        with torch.no_grad():
            losses, logits = self.module.per_sample_loss(self.batch)
        return self._time(lambda: self.module.batch_keep_mask(losses, self.batch, logits, record=False))

    def inner_backward_autograd(self) -> float:
        x_var, losses, keep = self._inner_graph()
        return self._time(lambda: torch.autograd.grad(losses[keep].sum(), x_var))

    def inner_backward_input_gradient(self) -> float:
        x_var, losses, keep = self._inner_graph()
        return self._time(lambda: self.at_module.input_gradient(losses[keep].sum(), x_var))

    def inner_backward_with_params(self) -> float:
        x_var, losses, keep = self._inner_graph()

        def run() -> None:
            self.opt.zero_grad(set_to_none=True)
            losses[keep].sum().backward()
        t = self._time(run)
        self.opt.zero_grad(set_to_none=True)
        return t

    def inner_arithmetic(self) -> float:
        from lit_robust.functional.backdoor import perturb_inputs, perturbation_from_sign_sum, sign_sum

        x_var, losses, keep = self._inner_graph()
        grads = torch.autograd.grad(losses[keep].sum(), x_var)[0]

        def run() -> None:
            signs, count = sign_sum(grads, keep)
            c = perturbation_from_sign_sum(signs, count, TAU)
            perturb_inputs(self.ib.input.detach(), c, VALUE_RANGE)
        return self._time(run)

    def _at_step(self) -> None:
        b = list(self.batch)
        self.filt.on_train_batch_start(self.stub, self.module, b, 0)
        self.trigger.on_train_batch_start(self.stub, self.module, b, 0)
        self._outer(b)
        self.trigger.on_train_batch_end(self.stub, self.module, None, b, 0)
        self.filt.on_train_batch_end(self.stub, self.module, None, b, 0)

    def at_step_before(self) -> float:
        now = self.at_module.input_gradient
        self.at_module.input_gradient = lambda total, inputs: torch.autograd.grad(total, inputs)[0]
        try:
            return self._time(self._at_step)
        finally:
            self.at_module.input_gradient = now

    def at_step_now(self) -> float:
        return self._time(self._at_step)


SECTIONS: list[tuple[str, str]] = [
    ("plain_step", "plain step: forward, `F.cross_entropy` mean, backward, SGD step (the reference)"),
    ("plain_forward", "plain step's forward + loss"),
    ("plain_backward", "plain step's backward + SGD step (parameter gradients)"),
    ("prl_step", "outer step alone: `BatchFilter('prl')` step (forward, PRL scores and trim, masked mean, backward, "
                 "SGD step)"),
    ("inner_forward", "inner: forward at the clean inputs (input requires grad)"),
    ("inner_preview", "inner: the filter's preview of the kept samples (`batch_keep_mask(record=False)`)"),
    ("inner_backward_autograd", "inner: backward to the inputs, `torch.autograd.grad` (before; oneDNN everywhere)"),
    ("inner_backward_input_gradient", "inner: backward to the inputs, `input_gradient` (now; native kernel for the "
                                      "1-channel first conv)"),
    ("inner_backward_with_params", "inner: backward to inputs *and* parameters (`.backward()`; what skipping "
                                   "parameter gradients saves)"),
    ("inner_arithmetic", "inner: signs, `c`, clip into the value range"),
    ("at_step_before", "whole PRL-AT step, before (`torch.autograd.grad` in the inner step)"),
    ("at_step_now", "whole PRL-AT step, now (`input_gradient`)"),
]


def time_sections(bench: Bench, rounds: int) -> dict[str, list[float]]:
    names = [n for n, _ in SECTIONS]
    for name in names:  # warm-up
        getattr(bench, name)()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(getattr(bench, name)())
    return times


def op_table(bench: Bench, steps: int) -> dict[str, list[tuple[str, str, float]]]:
    """Top operators (self CPU ms per inner backward) of the inner backward, before and now."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for label, fn in (("before", lambda t, x: torch.autograd.grad(t, x)[0]),
                      ("now", bench.at_module.input_gradient)):
        graphs = [bench._inner_graph() for _ in range(steps)]
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for x_var, losses, keep in graphs:
                fn(losses[keep].sum(), x_var)
        rows = []
        for e in prof.key_averages(group_by_input_shape=True):
            if e.key.startswith("aten::") and e.self_cpu_time_total > 0:
                shapes = ", ".join(str(list(s)) for s in e.input_shapes[:2] if s)
                rows.append((e.key, shapes, e.self_cpu_time_total / 1e3 / steps))
        rows.sort(key=lambda r: -r[2])
        out[label] = rows[:6]
    return out


def _conv_input_grad(go: Tensor, x: Tensor, w: Tensor, stride: int, onednn: bool) -> Tensor:
    """The input gradient of one convolution (``padding = kernel // 2``), on oneDNN or on the native kernel."""
    k = w.shape[-1]
    torch.backends.mkldnn.enabled = onednn
    try:
        return torch.ops.aten.convolution_backward(go, x, w, None, [stride, stride], [k // 2, k // 2], [1, 1], False,
                                                   [0, 0], 1, [True, False, False])[0]
    finally:
        torch.backends.mkldnn.enabled = True


def kernel_grid(reps: int, shapes: list[tuple[int, ...]]) -> list[dict[str, Any]]:
    """oneDNN vs native input gradient of one convolution, interleaved pairs."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for ic, oc, k, s, size, n in shapes:
        x = torch.randn(n, ic, size, size, generator=gen)
        w = torch.randn(oc, ic, k, k, generator=gen)
        go = torch.randn_like(F.conv2d(x, w, stride=s, padding=k // 2))
        _conv_input_grad(go, x, w, s, True), _conv_input_grad(go, x, w, s, False)  # warm-up
        pairs = []
        for i in range(reps):
            order = (False, True) if i % 2 else (True, False)
            t = {}
            for onednn in order:
                t0 = time.perf_counter()
                _conv_input_grad(go, x, w, s, onednn)
                t[onednn] = time.perf_counter() - t0
            pairs.append((t[True], t[False]))
        rows.append({"shape": [ic, oc, k, s, size, n], "onednn_ms": 1e3 * statistics.median(a for a, _ in pairs),
                     "native_ms": 1e3 * statistics.median(b for _, b in pairs),
                     "ratio": statistics.median(b / a for a, b in pairs), "reps": reps})
    return rows


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    plain = times["plain_step"]
    out = {}
    for name, ts in times.items():
        ratios = [t / p for t, p in zip(ts, plain)]
        out[name] = {"ratio": statistics.median(ratios), "q25": _quantile(ratios, 0.25),
                     "q75": _quantile(ratios, 0.75), "ms": 1e3 * statistics.median(ts)}
    before = [a / b for a, b in zip(times["at_step_before"], times["at_step_now"])]
    out["before_over_now"] = {"ratio": statistics.median(before), "q25": _quantile(before, 0.25),
                              "q75": _quantile(before, 0.75), "ms": float("nan")}
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Protocol:
    """Rounds of section timings, profiled inner backwards and kernel-grid pairs; the setting the saved run keeps."""

    rounds: int = 201
    grid_reps: int = 15
    prof_steps: int = 20
    train_size: int = 3000
    tau: float = TAU
    drop: float = DROP
    value_range: tuple[float, float] = VALUE_RANGE
    grid: tuple[tuple[int, ...], ...] = tuple(GRID)
    sections: tuple[tuple[str, str], ...] = tuple(SECTIONS)  # (name, what the table says it is)


FULL = Protocol()
QUICK = Protocol(rounds=21, grid_reps=5, prof_steps=5)
SMOKE = Protocol(rounds=2, grid_reps=1, prof_steps=1, train_size=600, grid=tuple(GRID[:1]))


def configure(p: Protocol, args: argparse.Namespace) -> Protocol:
    if not (Path(args.data_root) / "MNIST" / "raw").is_dir():
        raise SystemExit(f"`--data-root` must hold MNIST/raw, got {args.data_root!r}.")
    return p


def execute(p: Protocol, args: argparse.Namespace, jobs: int) -> dict[str, Any]:
    """The sections in rotating order, the operator profile and the kernel grid, all in this one process."""
    if jobs != 1:
        raise SystemExit(f"`--jobs` must be 1 for adversarial_trigger_profile (sections are timed in one process), "
                         f"got {jobs}.")
    pinned = pin_malloc()
    quiet()
    torch.set_num_threads(1)
    ctx = Context(data_root=args.data_root, train_size=p.train_size, batch_size=100, eval_batch_size=250,
                  fit_epochs_per_round=1, fit_rounds=1)
    bench = Bench(ctx)
    try:
        times = time_sections(bench, p.rounds)
        ops = op_table(bench, p.prof_steps)
    finally:
        bench.close()
    grid = kernel_grid(p.grid_reps, [tuple(s) for s in p.grid])
    return {"sections": summarise(times), "ops": ops, "grid": grid,
            "times_s": {k: [round(t, 5) for t in v] for k, v in times.items()}, "threads": torch.get_num_threads(),
            "malloc_pinned": pinned, "cpu_name": cpu_name()}


def render(saved: dict[str, Any]) -> str:
    """The three tables, from the saved run only (a run saved before the harness keeps its fixed Reproduce line)."""
    p, res, m = saved["settings"], saved["results"], saved["meta"]
    s = res["sections"]
    b = s["before_over_now"]
    lines = [
        "# Where a PRL-AT step's time goes (ratios to a plain step)",
        "",
        f"`ImageClassifier(backbone=\"cnn2\")`, one training batch of 100 of {p['train_size']} offline MNIST digits, "
        f"SGD; `BatchFilter('prl', drop_ratio={p['drop']})` + `AdversarialTrigger(tau={p['tau']})`. {p['rounds']} "
        "rounds; in each round every section is timed once, in a rotating order; ratio = median over rounds of "
        f"section ÷ the plain step of the same round (IQR beside it). Shared {m['cpus']}-core machine: other "
        "engineers' jobs ran meanwhile, so absolute times are noisy; the ratios are the figures to read.",
        "",
        *md_table(["section", "÷ plain step (median)", "IQR", "median ms"],
                  [[desc, f"{s[name]['ratio']:.3f}", f"{s[name]['q25']:.3f} – {s[name]['q75']:.3f}",
                    f"{s[name]['ms']:.1f}"] for name, desc in p["sections"]]),
        "",
        f"PRL-AT step before ÷ now, same rounds: {b['ratio']:.3f} (IQR {b['q25']:.3f} – {b['q75']:.3f}).",
        "",
        "## Inner backward, operators (self CPU ms per step, `torch.profiler`, top 6)",
        "",
        "| | operator | first input shapes | ms / step |",  # (md_table would write the empty cell as "|  |")
        *md_table(["", "operator", "first input shapes", "ms / step"],
                  [[label, f"`{name}`", shapes, f"{ms:.2f}"] for label in ("before", "now")
                   for name, shapes, ms in res["ops"][label]])[1:],
        "",
        "## A convolution's input gradient: oneDNN vs PyTorch's native kernel",
        "",
        "`aten.convolution_backward` for the input only (`output_mask=[True, False, False]`), float32, one thread, "
        "interleaved pairs; native = `torch.backends.mkldnn.enabled = False` around the call.",
        "",
        *md_table(["in → out channels", "kernel, stride", "image, batch", "oneDNN ms", "native ms", "native ÷ oneDNN"],
                  [[f"{ic} → {oc}", f"{k}×{k}, {st}", f"{size}², {n}", f"{g['onednn_ms']:.2f}",
                    f"{g['native_ms']:.2f}", f"{g['ratio']:.2f}"]
                   for g in res["grid"] for ic, oc, k, st, size, n in [g["shape"]]]),
        "",
        f"Mode {saved['mode']}; wall time {m['wall_s']:.0f} s; torch threads {res['threads']}; glibc malloc pinned: "
        f"{'yes' if res['malloc_pinned'] else 'no'}; date {m['date']}; {res['cpu_name']}, {m['cpus']} "
        f"CPU cores (shared), torch {m['torch']}.",
        "",
        "Reproduce: `python benchmarks/adversarial_trigger_profile.py`." if m.get("pre_harness") else
        f"Reproduce: `{m['command']}` {reproduce_note(saved, 'adversarial_trigger_profile.json')}.",
        "",
    ]
    return "\n".join(lines)


def headline(saved: dict[str, Any]) -> dict[str, Any]:
    s, res = saved["results"]["sections"], saved["results"]
    return {"ratios": {n: round(s[n]["ratio"], 4) for n, _ in saved["settings"]["sections"]},
            "at_step_before_over_now": round(s["before_over_now"]["ratio"], 4),
            "grid_native_over_onednn": {"x".join(map(str, g["shape"])): round(g["ratio"], 3) for g in res["grid"]}}


BENCHMARK = Benchmark(name="adversarial_trigger_profile", doc=__doc__,
                      modes={"full": FULL, "quick": QUICK, "smoke": SMOKE}, execute=execute, render=render,
                      headline=headline, configure=configure, jobs={"full": 1, "quick": 1, "smoke": 1})

if __name__ == "__main__":
    main(BENCHMARK)
