"""Where a filtered step's extra time goes on this device: 30 steps of each rule under torch.profiler.

Run 2 of the GPU check ran it as ``python3 profile_filter.py cuda`` (output: ``run2_profile_filter_steps.txt``).
Here it is the same script with one statement per line, a `sync` helper and the filter bound as a default
argument (for the linter); the steps it times are the same.
"""

import sys
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from lit_robust import BatchFilter, ImageClassifier, unpack_batch

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"


def sync() -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


torch.manual_seed(0)
module = ImageClassifier(backbone="cnn2", lr=0.05, momentum=0.0).to(dev)
module.train()
n = 100
batch = [torch.arange(n, device=dev), torch.rand(n, 1, 28, 28, device=dev), torch.randint(0, 10, (n,), device=dev)]
opt = torch.optim.SGD(module.parameters(), lr=0.01)
stub = SimpleNamespace(training=True, current_epoch=1, datamodule=None, world_size=1)
for rule in ["prl", "prl_g"]:
    filt = BatchFilter(rule, drop_ratio=0.3)
    filt.setup(stub, module, "fit")

    def filtered(filt: BatchFilter = filt) -> None:
        filt.on_train_batch_start(stub, module, batch, 0)
        out = module.per_sample_loss(batch)
        loss = module.reduce_loss(out[0], batch, out[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        filt.on_train_batch_end(stub, module, None, batch, 0)

    def plain() -> None:
        ib = unpack_batch(batch)
        loss = F.cross_entropy(module(ib.input), ib.target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for f in (filtered, plain):
        for _ in range(5):
            f()
        sync()
        t0 = time.perf_counter()
        for _ in range(30):
            f()
        sync()
        print(f"{rule} {f.__name__}: {1e3 * (time.perf_counter() - t0) / 30:.3f} ms/step", flush=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(30):
            filtered()
        sync()
    print(f"== {rule}: top ops by self CPU time over 30 filtered steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
    filt.teardown(stub, module, "fit")
