"""Seconds per training step of a spec at one precision and memory format, optionally profiled.

Usage: python -m cvae.bench.step_time SPEC [--precision fp32|bf16] [--channels-last] [--seconds S]
                                            [--profile] [--ops]

The step is the bench's (``cvae.bench.settings.our_step``: ``loss_and_gradients``, grad clip, Adam; teacher forcing
0, beta 1) on a random batch of the spec's shape, with the tuned CPU allocator. It times whole
steps for at least S seconds after 3 warm-up steps. For one setting in isolation; ``cvae bench``
compares settings side by side.

``--profile`` then prints torch.profiler's table of 3 more steps. The profiler's per-op overhead
inflates the many small ops (it put ``cat`` at 14% of a step whose cats take 2%).

``--ops`` times the ops themselves: every ATen op of 3 steps, timed around its own call
(``cvae.bench.timing.OpTimes``; CPU ops are synchronous), with the convolutions by kind, and beside them
the reference step (``cvae.bench.reference_loop.reference_step``: fp32, default layout, fed from memory), taken
in turns. The convolutions' own time is a floor under the step with these kernels: it says how fast
the step could get if everything else took no time (docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from cvae.bench.reference_loop import reference_step
from cvae.bench.settings import fresh_model, our_step, with_settings
from cvae.bench.timing import OpTimes, conv_kind, round_robin
from cvae.device import tune_cpu_allocator
from cvae.spec import load_spec
from cvae.training.loop import build_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--ops", action="store_true", help="time each op, and the reference step")
    args = ap.parse_args()
    tune_cpu_allocator()
    spec = with_settings(load_spec(args.spec), args.precision, args.channels_last)
    B, T, (H, W) = spec.train.batch_size, spec.data.clip_len, spec.data.frame_size
    torch.manual_seed(0)
    x, pose = torch.rand(B, T, 3, H, W), torch.rand(B, T, 3, H, W)
    model = fresh_model(spec, torch.device("cpu"), args.channels_last, None)
    opt = build_optimizer(spec, model)[0]

    def step():
        return our_step(model, opt, x, pose, spec, 1.0, 0.0)

    s, n = timed_steps(step, args.seconds)
    layout = "channels_last" if args.channels_last else "default layout"
    print(f"{args.spec.name}, {args.precision}, {layout}: {1000 * s:,.0f} ms/step over {n} steps, "
          f"{B * (T - 1) / s:.1f} trained frames/s")  # fmt: skip
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(3):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        print_conv_kinds(prof, steps=3)
    if args.ops:
        print_op_floor(spec, x, pose, step)


def timed_steps(step, seconds: float) -> tuple[float, int]:
    """Mean seconds per step over at least ``seconds`` (after 3 warm-up steps), and the steps."""
    for _ in range(3):
        step()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return (time.perf_counter() - t0) / n, n


def print_op_floor(spec, x, pose, step, rounds: int = 3) -> None:
    """Our step's ops by own time, and the reference step beside the convolutions' own time.

    Round-robin, ``rounds`` times: one reference step, one of ours alone, one of ours under the
    timer (its Python hook per op makes the step itself slower, not the ops it times); medians."""
    ref_spec = with_settings(spec, "fp32", False)
    model = fresh_model(ref_spec, torch.device("cpu"), False, None)
    opt = build_optimizer(ref_spec, model)[0]
    ref_step = lambda: reference_step(model, opt, x, pose, ref_spec, 1.0, 0.0)  # noqa: E731
    ref_step()  # warm-up
    convs: list[float] = []
    per_op: dict[str, float] = {}

    def step_under_timer():
        with OpTimes() as ops:
            step()
        convs.append(ops.convolutions())
        for k, v in ops.seconds.items():
            per_op[k] = per_op.get(k, 0.0) + v / rounds

    t = round_robin({"reference": ref_step, "ours": step, "timed": step_under_timer}, rounds, torch.device("cpu"))
    ref, ours, conv = t["reference"], t["ours"], statistics.median(convs)
    print(f"\nops of our step by own time (mean of {rounds} steps; the step alone: {1000 * ours:,.0f} ms):")
    for name, sec in sorted(per_op.items(), key=lambda kv: -kv[1])[:14]:
        print(f"  {name:32s} {1000 * sec:8,.0f} ms  {100 * sec / ours:5.1f}%")
    print(f"convolutions: {1000 * conv:,.0f} ms of the step's {1000 * ours:,.0f} ms ({100 * conv / ours:.0f}%)")
    print(f"reference step (fp32, default layout, from memory): {1000 * ref:,.0f} ms; ours is "
          f"{ref / ours:.2f}x; with nothing but these convolutions it could be at most "
          f"{ref / conv:.2f}x; 1.8x needs a step of {1000 * ref / 1.8:,.0f} ms (medians of {rounds})")  # fmt: skip


def print_conv_kinds(prof, steps: int) -> None:
    """Self CPU time per step of the convolutions, forward and backward, by kernel kind."""
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / steps
    kinds: dict[tuple[str, str], float] = {}
    # oneDNN's kernels run inside mkldnn_convolution and convolution_backward; torch sends some
    # convolutions (1x1 ones with one thread, for one) to its own _slow_conv2d kernels instead.
    forward = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward")
    backward = ("aten::convolution_backward", "aten::_slow_conv2d_backward")
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key not in forward + backward or not e.input_shapes:
            continue
        w = e.input_shapes[1] if e.key in forward else e.input_shapes[2]  # the weight
        kind = conv_kind(w) if len(w) == 4 else "?"
        key = ("forward" if e.key in forward else "backward", kind)
        kinds[key] = kinds.get(key, 0.0) + e.self_cpu_time_total / steps
    print("convolutions by kind (self CPU time per step, share of all self time):")
    for (direction, kind), us in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {direction:8s} {kind:9s} {us / 1000:8,.0f} ms  {100 * us / total:5.1f}%")


if __name__ == "__main__":
    main()
