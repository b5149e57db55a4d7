"""Time each ATen op around its own call: what the scripts here use to see where a step's time goes.

Used by ``scripts/train_step_time.py --ops`` and ``scripts/profile_rollout.py --ops``.
"""

from __future__ import annotations

import time

from torch.utils._python_dispatch import TorchDispatchMode


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
