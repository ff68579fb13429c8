"""Where the time of one call goes: a ``torch.profiler`` table of the kernels it launches (``--profile`` in
benchmarks/sparse.py and benchmarks/gla.py)."""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile


def kernel_table(fn, device: str, steps: int = 3, rows: int = 15) -> str:
    """Run ``fn`` once untimed, then ``steps`` times under the profiler; return the ``rows`` most expensive ops by
    device time (CUDA) or CPU time, averaged per step, as the profiler's text table."""
    cuda = str(device).startswith("cuda")
    fn()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        if cuda:
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return f"({steps} steps)\n" + prof.key_averages().table(sort_by=key, row_limit=rows)
