"""What a training step would launch on a GPU, counted on any device: ATen ops per step (about one
kernel launch each) and host reads (each a sync on a GPU), by phase, with the trainer's CUDA branch
forced (``--no-cuda-style``: the branch of the device it runs on).

    python -m cvae.bench.step_ops [SPEC] [--set KEY=VALUE ...] [--steps N] [--tfr 0,1]

It trains one epoch of N + 1 steps of SPEC (default the template's: batch 2, clips of 16 frames, a
logged row every step) with the real loop (``cvae.training.loop.train``) on a small synthetic
dataset, and counts inside the epoch from its second step on (the first creates Adam's state),
the epoch's end included (``OpCounts`` around ``train_epoch``; the validation after it is left
out). ``Tensor.tolist`` counts as one host read (one copy to the host, no ATen op). The counts do
not depend on the widths or the frame size, so the model is built at widths 16/8/4/16 on 8x16
frames: seconds on a CPU. The CUDA branch forced: no host-side skip in the step, the divergence
guard's check deferred to the sync points, and fused Adam (what ``cvae.device.numerics`` picks on
CUDA; ``--adam foreach``: torch's default kernel for CUDA tensors). ``torch.compile``'s kernels are
not ATen ops: a compiled step is not counted here (its graphs and breaks: the tests, ``cvae doctor``).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import torch

from cvae.bench.timing import OpCounts
from cvae.spec import load_spec

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "experiments" / "lab4_template.yaml"
SMALL = {"model.frame_dim": 16, "model.pose_dim": 8, "model.z_dim": 4, "model.fusion_dim": 16}
PHASES = ("forward + backward", "grad clip", "optimizer", "loop: schedules, guard, logging, data")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path, nargs="?", default=DEFAULT_SPEC)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--tfr", default="0,1", help="teacher-forcing ratios, one count each (default 0,1)")
    ap.add_argument("--cuda-style", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--adam", choices=["fused", "foreach"], default="fused", help="Adam's kernel on CUDA")
    args = ap.parse_args()
    for tfr in (float(t) for t in args.tfr.split(",")):
        counts, steps = count_epoch(args.spec, args.overrides, args.steps, tfr, args.cuda_style, args.adam)
        print(report(args.spec, counts, steps, tfr, args.cuda_style, args.adam))


def count_epoch(spec_path: Path, overrides: list[str], steps: int, tfr: float, cuda_style: bool, adam: str = "fused"):
    """OpCounts of one epoch of ``steps`` steps of the spec at teacher forcing ``tfr``, and the steps."""
    import cvae.training.loop as loop
    import cvae.training.step as step_module
    from cvae.data.synth import synthesize

    base = load_spec(spec_path, overrides)
    B, T = base.train.batch_size, base.data.clip_len
    with tempfile.TemporaryDirectory(prefix="cvae-step-ops-") as tmp:
        root = Path(tmp) / "data"
        synthesize(root, "tiny", seed=0, train_videos=(steps + 1) * B, train_frames=T)
        spec = load_spec(
            spec_path,
            [
                *overrides,
                f"data.root={root}",
                "data.preset=null",
                "data.frame_size=[8, 16]",
                "data.partial=1.0",
                "data.val_len=4",
                *(f"{k}={v}" for k, v in SMALL.items()),
                "train.epochs=1",
                "train.fast_train=false",
                "train.device=cpu",
                f"teacher_forcing.ratio={tfr}",
                "teacher_forcing.floor=0",
                "tracking.wandb.mode=disabled",
            ],
        )
        counter = OpCounts()
        patches = phase_patches(counter, step_module, loop)
        if cuda_style:
            patches += cuda_branch_patches(loop, step_module, adam)
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
        try:
            for owner, name, value in patches:
                setattr(owner, name, value)
            loop.train(spec, Path(tmp) / "run")
        finally:
            for owner, name, value in reversed(originals):
                setattr(owner, name, value)
    return counter, steps


def phase_patches(counter: OpCounts, step_module, loop) -> list[tuple[object, str, object]]:
    """(owner, name, wrapper): the epoch counted under ``counter``, its calls sorted into phases."""

    def in_phase(fn, phase):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            before, counter.phase = counter.phase, phase
            try:
                return fn(*args, **kwargs)
            finally:
                counter.phase = before

        return wrapper

    def counted_epoch(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            counter.phase = PHASES[3]
            try:
                with counter:
                    return fn(*args, **kwargs)
            finally:
                counter.counting = False  # the validation after the epoch is not the step's

        return wrapper

    def from_second_step(fn):
        calls = [0]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            calls[0] += 1
            counter.counting = calls[0] > 1
            return fn(*args, **kwargs)

        return wrapper

    def tolist(fn):
        @functools.wraps(fn)
        def wrapper(self):
            counter.read()
            return fn(self)

        return wrapper

    return [
        (loop, "train_epoch", counted_epoch(loop.train_epoch)),
        (step_module, "loss_and_gradients", in_phase(from_second_step(step_module.loss_and_gradients), PHASES[0])),
        (torch.Tensor, "tolist", tolist(torch.Tensor.tolist)),
        (torch.nn.utils, "clip_grad_norm_", in_phase(torch.nn.utils.clip_grad_norm_, PHASES[1])),
        (torch.optim.Adam, "step", in_phase(torch.optim.Adam.step, PHASES[2])),
        (torch.optim.AdamW, "step", in_phase(torch.optim.AdamW.step, PHASES[2])),
    ]


def cuda_branch_patches(loop, step_module, adam: str) -> list[tuple[object, str, object]]:
    """The branches the trainer takes on CUDA: reading a value is a sync (``syncs_are_free`` false) in
    every module that asks, and Adam's kernel: ``fused`` (what ``cvae.device.numerics`` picks on CUDA)
    or ``foreach`` (torch's default for CUDA tensors)."""
    import cvae.training.guard as guard

    def never(device):
        return False

    out = [(m, "syncs_are_free", never) for m in (step_module, guard, loop) if hasattr(m, "syncs_are_free")]
    for cls in (torch.optim.Adam, torch.optim.AdamW):

        def init(self, params, *args, _init=cls.__init__, **kwargs):
            kwargs |= {"fused": adam == "fused" or None, "foreach": adam == "foreach" or None}
            _init(self, params, *args, **kwargs)

        out.append((cls, "__init__", init))
    return out


def report(spec_path: Path, counter: OpCounts, steps: int, tfr: float, cuda_style: bool, adam: str) -> str:
    branch = f"CUDA branch forced, {adam} Adam" if cuda_style else "this device's branch"
    lines = [
        f"{spec_path.name}, teacher forcing {tfr:g}, {steps} steps, {branch}: per step",
        f"  {'phase':40s} {'ops':>9s} {'host reads':>11s}",
    ]
    for phase in PHASES:
        ops, reads = counter.ops.get(phase, 0) / steps, counter.reads.get(phase, 0) / steps
        lines.append(f"  {phase:40s} {ops:9,.1f} {reads:11.2f}")
    ops, reads = sum(counter.ops.values()) / steps, sum(counter.reads.values()) / steps
    lines.append(f"  {'the whole step':40s} {ops:9,.1f} {reads:11.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
