"""Timing tools of the benchmark and the measurement scripts: medians taken in turns, FLOP counts,
the device's matmul rate, each ATen op's own time, and what the device is.

``OpTimes`` is what ``python -m cvae.bench.step_time --ops`` and ``python -m cvae.bench.rollout_time
--ops`` use to see where a step's time goes.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cvae.device import cpu_flags, fast_bf16


def failure(e: BaseException) -> str:
    """A skipped setting's reason: the exception's class and first line."""
    text = str(e).strip()
    return f"failed: {e.__class__.__name__}" + (f": {text.splitlines()[0][:200]}" if text else "")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def round_robin(
    fns: dict[str, Callable[[], Any]], repeats: int, device: torch.device, progress=None
) -> dict[str, float]:
    """Median seconds of one call of each fn, timed in turns (fn1, fn2, ..., fn1, fn2, ...)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
        if progress:
            progress(r + 1, repeats)
    return {k: statistics.median(v) for k, v in times.items()}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the convolutions and matmuls fn runs, forward and backward (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul (2 n^3 FLOPs), median of ``repeats`` after a warm-up."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    t = round_robin({"mm": lambda: a @ b}, repeats, device)["mm"]
    return 2 * n**3 / t


def conv_kind(weight_shape, groups: int | None = None) -> str:
    """``1x1``, ``3x3``, ... or ``depthwise``, from a convolution weight's shape (out, in / groups,
    kh, kw) and its groups; without the groups (torch.profiler records shapes only), one input
    channel per group with several outputs is taken for depthwise, as in this model."""
    one_in = weight_shape[1] == 1  # input channels per group
    depthwise = one_in and (groups > 1 if groups is not None else weight_shape[0] > 1)
    return "depthwise" if depthwise else "x".join(str(k) for k in weight_shape[2:])


class OpTimes(TorchDispatchMode):
    """Wall seconds spent inside each ATen op run under it, by op name, with the convolutions split
    by direction and kind (``convolution forward 1x1``). Each op is timed around its own call, so
    the sum leaves out the Python between ops; on the CPU ops are synchronous, so that is the op's
    own time (on CUDA it would be the launch). Unlike torch.profiler it adds no per-op overhead to
    what it reports: the profiler put ``cat`` at 14% of a training step whose cats take 2%."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[str, float] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        dt = time.perf_counter() - t0
        name = func.overloadpacket.__name__
        if name == "convolution":
            name = f"convolution forward {conv_kind(args[1].shape, args[8])}"  # (input, weight, ..., groups)
        elif name == "convolution_backward":
            name = f"convolution backward {conv_kind(args[2].shape, args[9])}"  # (grad, input, weight, ...)
        self.seconds[name] = self.seconds.get(name, 0.0) + dt
        return out

    def convolutions(self) -> float:
        """Seconds inside convolutions, forward and backward."""
        return sum(v for k, v in self.seconds.items() if k.startswith("convolution "))


HOST_READ = "_local_scalar_dense"  # the op behind .item(), float(), int(), bool() and tolist() of a tensor


class OpCounts(TorchDispatchMode):
    """ATen ops run under it, by phase (``phase``, set by the caller), as a GPU would launch them: every
    op that computes (views, which launch nothing, left out) is about one kernel launch; the
    ``_local_scalar_dense`` op is a host read of a value (on a GPU a sync: the host waits until the
    queue drains). Counted on any device, so the CPU can count what a CUDA step would launch."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "other"
        self.counting = True  # False: run ops without counting them (a warm-up)
        self.ops: dict[str, int] = {}
        self.reads: dict[str, int] = {}

    def read(self) -> None:
        """Count a host read that is no ATen op (``Tensor.tolist``: one device-to-host copy)."""
        if self.counting:
            self.reads[self.phase] = self.reads.get(self.phase, 0) + 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ == HOST_READ:
            self.read()
        elif self.counting and not func.is_view and func.namespace != "profiler":  # record_function: no kernel
            self.ops[self.phase] = self.ops.get(self.phase, 0) + 1
        return func(*args, **(kwargs or {}))


def device_info(device: torch.device) -> dict[str, Any]:
    """What the device is and which settings it supports."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        return {
            "name": name,
            "compute_capability": f"{major}.{minor}",
            "bf16_native": fast_bf16(device),
            "compile": True,
            "cuda_graphs": True,
        }
    flags = cpu_flags()
    model_name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return {
        "name": model_name,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "bf16_native": fast_bf16(device),
        "cxx_compiler": shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++"),
    }


def describe(device: torch.device, info: dict[str, Any]) -> str:
    if device.type == "cuda":
        return f"{device} ({info['name']}, sm {info['compute_capability']})"
    feats = " ".join([info["cpu_capability"]] + [f for f in ("avx512_bf16", "amx_bf16") if info.get(f)])
    return f"cpu ({info['name']}, {info['threads']} threads, {feats})"


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
