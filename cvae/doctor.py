"""``cvae doctor``: what this machine offers for training, then a short end-to-end check on a device.

The checks, one line each, on the synthetic tiny dancer at the template's widths (128/32/12/192;
batch 2, clips of 4 frames), every one through the code a run uses:

- ``data``: the synthetic tiny dancer, generated;
- ``numerics``: what fp32, tf32 and bf16 run as on the device, and the flags a run sets;
- ``train fp32`` (and ``train bf16`` where bf16 is native): the real trainer, a few steps, the
  validation rollout, checkpoints;
- ``teacher forcing``: a step with every clip forced (the whole clip in one batched call) against
  the same step taken frame by frame, and a step in each other mode (per clip, per frame, the
  posterior on the previous frame) with finite loss and gradients;
- ``compiled step``: the training step compiled whole (``torch.compile``, ``fullgraph``: no graph
  break; CUDA graphs on a GPU, ``train.compile: reduce-overhead``) against the eager step, with no
  recompilation as beta and the teacher-forcing ratio change. On the CPU the graph is captured and
  differentiated (dynamo and AOT autograd) but not built into C++, which takes minutes on a small
  CPU; on CUDA inductor builds it;
- ``bench --quick``: ``cvae bench``'s smoke run at these widths;
- ``rollout memory`` (CUDA): the peak GPU memory of a 630-frame validation rollout;
- ``exact resume``: a run stopped after its first epoch and resumed equals the same run left alone,
  weight for weight (tolerance 0), under ``train.deterministic``.

A failed check ends the command with exit code 1; the others still run.
"""

from __future__ import annotations

import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE_WIDTHS = {"model.frame_dim": 128, "model.pose_dim": 32, "model.z_dim": 12, "model.fusion_dim": 192}
ROLLOUT_FRAMES = 630  # the lab's validation video
TF_TOLERANCE = 1e-5  # relative loss (and, times 10, gradient) difference of the batched forced step
COMPILE_TOLERANCE = 1e-3  # relative loss and gradient difference of the compiled step from the eager one


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        return f"{mark}  {self.name}: {self.detail}" + (f" ({self.seconds:.1f} s)" if self.ok is not None else "")


def machine_lines() -> list[str]:
    """torch, the CPU and its threads, every CUDA device with its memory and precisions."""
    import torch

    from cvae.device import cpu_flags, fast_bf16, has_tf32

    flags = cpu_flags()
    cpu_name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    lines = [
        f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}), Python {platform.python_version()}",
        f"cpu: {cpu_name}; {torch.get_num_threads()} threads; capability {torch.backends.cpu.get_cpu_capability()}; "
        f"bf16 {'native (' + ', '.join(native) + ')' if native else 'emulated (train.precision auto: fp32)'}",
    ]
    if not torch.cuda.is_available():
        lines.append("cuda: not available")
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        dev = torch.device(f"cuda:{i}")
        lines.append(
            f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}; "
            f"bf16 {'native' if fast_bf16(dev) else 'not native'}, TF32 {'yes' if has_tf32(dev) else 'no'}"
        )
    return lines


def doctor_spec(root: Path, device: str, precision: str, epochs: int = 2, **extra: Any):
    from cvae.spec import load_spec

    return load_spec(
        None,
        {
            "name": f"doctor-{precision}",
            "data.root": str(root),
            "data.clip_len": 4,
            "data.partial": 0.25,  # 6 of the tiny preset's 24 clips: 3 steps an epoch
            "data.val_len": 16,
            "tracking.test_at_end": False,  # the tiny dancer's 2 x 40 held-out frames would cost 5x its validation
            **TEMPLATE_WIDTHS,
            "train.epochs": epochs,
            "train.batch_size": 2,
            "train.device": device,
            "train.precision": precision,
            "train.channels_last": precision == "bf16",
            "optim.schedule": "none",
            "teacher_forcing.ratio": 0.5,
            "teacher_forcing.mode": "sequence",
            "tracking.wandb.mode": "disabled",
            "tracking.gif_frames": 4,
            **extra,
        },
    )


def timed(name: str, fn: Callable[[], str]) -> Check:
    """Run a check: ok with the detail line ``fn`` returns, skipped where it raises ``Skip`` (the reason),
    failed where it raises anything else (the error's first line)."""
    t0 = time.perf_counter()
    try:
        detail = fn()
        return Check(name, True, detail, time.perf_counter() - t0)
    except Skip as e:
        return Check(name, None, str(e))
    except Exception as e:  # a check that fails says why and the others still run
        return Check(name, False, f"{e.__class__.__name__}: {e}".splitlines()[0][:300], time.perf_counter() - t0)


class Skip(Exception):
    """A check that does not apply to this device: its reason."""


def run_checks(device_name: str, report: Callable[[Check], Any] = lambda c: None) -> list[Check]:
    """The checks on ``device_name`` (auto, cpu, cuda, cuda:N), each reported as it ends."""
    from cvae.data.synth import synthesize
    from cvae.device import fast_bf16, resolve_device

    device = resolve_device(device_name, "--device")
    checks: list[Check] = []

    def add(check: Check) -> Check:
        checks.append(check)
        report(check)
        return check

    with tempfile.TemporaryDirectory(prefix="cvae-doctor-") as tmp:
        work = Path(tmp)
        root = work / "data"
        add(timed("data", lambda: f"the synthetic tiny dancer, {synthesize(root, 'tiny', seed=0)['images']} PNGs"))
        add(timed("numerics", lambda: numerics_line(device)))
        precisions = ["fp32"] + (["bf16"] if fast_bf16(device) else [])
        if "bf16" not in precisions:
            add(Check("train bf16", None, f"bf16 is not native on {device} (train.precision auto trains fp32 here)"))
        for precision in precisions:
            add(timed(f"train {precision}", lambda p=precision: train_check(root, work, device, p)))
        add(timed("teacher forcing", lambda: teacher_forcing_check(root, device)))
        add(timed("compiled step", lambda: compiled_step_check(root, device)))
        add(timed("bench --quick", lambda: bench_check(root, device)))
        add(timed("rollout memory", lambda: rollout_memory_check(root, device)))
        add(timed("exact resume", lambda: resume_check(root, work, device)))
    return checks


# --------------------------------------------------------------------------- the checks


def numerics_line(device) -> str:
    import torch

    from cvae.device import apply_numerics, has_tf32, numerics

    n = numerics(device, "fp32")
    apply_numerics(n)
    b = torch.backends
    flags = f"cuDNN conv {b.cudnn.conv.fp32_precision}, matmul {b.cuda.matmul.fp32_precision}"
    tf32 = "tf32 runs TF32 tensor cores" if has_tf32(device) else "tf32 runs fp32 (no TF32 here)"
    return (
        f"{device}: fp32 is IEEE fp32 ({flags}); {tf32}; bf16 {numerics(device, 'auto').precision == 'bf16'} "
        f"by auto; cudnn.benchmark {n.cudnn_benchmark}; fused Adam {n.fused_adam}"
    )


def train_check(root: Path, work: Path, device, precision: str) -> str:
    from cvae import history
    from cvae.training.loop import train

    run = work / f"run-{precision}"
    s = train(doctor_spec(root, str(device), precision), run)
    last = history.last_epoch_row(run / history.FILE)
    loss, fps = last["epoch/loss"], last["perf/frames_per_s"]
    if not math.isfinite(loss) or not math.isfinite(s["final/psnr"]):
        raise RuntimeError(f"non-finite figures: loss {loss}, val PSNR {s['final/psnr']}")
    return (
        f"{s['steps']} steps at template widths on {device}, loss {loss:.4g}, {fps:.1f} trained "
        f"frames/s; validation rollout {s['final/psnr']:.2f} dB; checkpoints written"
    )


def _step_inputs(root: Path, device, spec):
    """A fresh seeded model of ``spec`` on ``device``, its optimizer, and two real clips of the tiny dancer."""
    import torch

    from cvae.data.clips import clip_starts, gather
    from cvae.data.frames import load_split
    from cvae.data.layout import scan_split
    from cvae.model import build_model
    from cvae.training.loop import build_optimizer

    train_set = load_split(scan_split(root, "train"), spec.data.frame_size).to(device)
    starts = torch.tensor(clip_starts(train_set.starts, train_set.lengths, spec.data.clip_len), device=device)[:2]
    x, pose = gather(train_set.frames, starts, spec.data.clip_len), gather(train_set.poses, starts, spec.data.clip_len)
    torch.manual_seed(0)
    model = build_model(spec, device)
    return model, build_optimizer(spec, model)[0], x, pose


def _grads(model) -> dict:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def _gap(grads: dict, reference: dict) -> float:
    """The largest difference of a gradient entry from the reference's, relative to the reference's
    largest entry over all parameters (what the global-norm clip and the update see): a parameter
    whose own gradient nearly cancels out would otherwise magnify mere summation order."""
    scale = max(float(g.abs().max()) for g in reference.values())
    return max(float((grads[k] - g).abs().max()) for k, g in reference.items()) / max(scale, 1e-12)


def teacher_forcing_check(root: Path, device) -> str:
    """Every clip forced: the batched call equals the frame-by-frame loop (the coins and z drawn alike);
    the other modes give finite loss and gradients."""
    import torch

    from cvae.device import apply_numerics, numerics
    from cvae.training.step import loss_and_gradients

    apply_numerics(numerics(device, "fp32"))
    spec = doctor_spec(root, str(device), "fp32")
    model, _, x, pose = _step_inputs(root, device, spec)
    out = {}
    for batched in (True, False):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        loss = loss_and_gradients(model, x, pose, spec, 1.0, 1.0, all_forced=batched)["loss"]
        out[batched] = (float(loss), _grads(model))
    diff = abs(out[True][0] - out[False][0]) / abs(out[False][0])
    gdiff = _gap(out[True][1], out[False][1])
    if not diff <= TF_TOLERANCE or not gdiff <= 10 * TF_TOLERANCE:
        raise RuntimeError(
            f"the batched forced step differs from the frame by frame one: loss {diff:.2g}, grads {gdiff:.2g}"
        )
    modes = {
        "sequence": {"teacher_forcing.mode": "sequence"},
        "frame": {"teacher_forcing.mode": "frame"},
        "epoch": {"teacher_forcing.mode": "epoch"},
        "posterior previous": {"model.posterior": "previous"},
    }
    for name, extra in modes.items():
        s = doctor_spec(root, str(device), "fp32", **extra)
        m, _, xs, ps = _step_inputs(root, device, s)
        tfr = 0.0 if name == "epoch" else 0.5  # an epoch's coin came up 0: every frame fed back
        loss = float(loss_and_gradients(m, xs, ps, s, 1.0, tfr)["loss"])
        bad = [k for k, g in _grads(m).items() if not bool(torch.isfinite(g).all())]
        if not math.isfinite(loss) or bad:
            raise RuntimeError(f"mode {name}: loss {loss}, non-finite gradients in {bad[:3]}")
    return (
        f"every clip forced, batched = frame by frame (loss {diff:.1g}, gradients {gdiff:.1g} apart); "
        f"{', '.join(modes)}: finite loss and gradients"
    )


def compiled_step_check(root: Path, device) -> str:
    """The step compiled whole (no graph break, one graph as beta and teacher forcing change) against eager."""
    import torch
    import torch._dynamo

    from cvae.device import apply_numerics, numerics
    from cvae.training.step import StepGradients, spec_terms

    apply_numerics(numerics(device, "fp32"))
    mode = "reduce-overhead" if device.type == "cuda" else None
    spec = doctor_spec(root, str(device), "fp32", **{"train.compile": mode or True})
    eager_spec = doctor_spec(root, str(device), "fp32")
    model, _, x, pose = _step_inputs(root, device, spec)
    terms = spec_terms(spec)
    beta, tfr = torch.tensor(0.5, device=device), torch.tensor(0.5, device=device)
    explained = torch._dynamo.explain(terms)(model, x, pose, beta, tfr, False)
    if explained.graph_break_count:
        raise RuntimeError(f"{explained.graph_break_count} graph breaks: {explained.break_reasons[0].reason}")
    compiled = StepGradients(spec, device)
    if device.type != "cuda":  # capture and AOT autograd, without inductor's C++ build (minutes here)
        compiled.terms = torch.compile(terms, backend="aot_eager", fullgraph=True)
    eager = StepGradients(eager_spec, device)
    frames0 = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    worst = 0.0
    for b, t in ((0.5, 0.5), (0.1, 0.3), (1.0, 0.0)):  # the schedules move: no recompilation
        results = []
        for step in (compiled, eager):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(2)
            loss = float(step(model, _NoOpt(), x, pose, b, t)["loss"])
            results.append((loss, _grads(model)))
        (lc, gc), (le, ge) = results
        worst = max(worst, abs(lc - le) / abs(le))
        worst = max(worst, _gap(gc, ge))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - frames0
    if worst > COMPILE_TOLERANCE:
        raise RuntimeError(f"the compiled step differs from the eager one by {worst:.2g} (relative)")
    if graphs > 1:
        raise RuntimeError(f"{graphs} graphs compiled for three steps: beta or teacher forcing recompiled it")
    how = "CUDA graphs (reduce-overhead)" if mode else "dynamo + AOT autograd, no C++ build on the CPU"
    return f"0 graph breaks, {graphs} graph for 3 schedule values, {how}; loss and gradients {worst:.1g} from eager"


class _NoOpt:
    """The compiled-step check compares gradients only: an optimizer that does nothing but clear them."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass


def bench_check(root: Path, device) -> str:
    from cvae.bench.run import run
    from cvae.bench.settings import QUICK

    spec = doctor_spec(root, str(device), "fp32", **{"data.partial": 1.0})
    r = run(spec, device, QUICK)
    best = r["speedup"]["train_best"]
    return (
        f"train {r['train'][best]:.1f} trained frames/s ({best}, {r['speedup']['train_best_vs_reference']:.2f}x the "
        f"lab's loop), rollout {r['speedup']['rollout_best_vs_reference']:.2f}x, at template widths"
    )


def rollout_memory_check(root: Path, device) -> str:
    """The peak GPU memory of the validation's 630-frame rollout (its own and the shifted poses: 2 videos)."""
    import torch

    from cvae.device import resolve_precision
    from cvae.model import build_model
    from cvae.training.rollout import rollout

    if device.type != "cuda":
        raise Skip("GPU memory: CUDA only")
    precision = resolve_precision("auto", device)
    spec = doctor_spec(root, str(device), precision)
    model = build_model(spec, device)
    first = torch.rand(2, 3, *spec.data.frame_size, device=device)
    poses = torch.randint(0, 256, (2, ROLLOUT_FRAMES, 3, *spec.data.frame_size), dtype=torch.uint8, device=device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    rollout(model, first, poses, 0, precision)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    videos = f"2 videos x {ROLLOUT_FRAMES} frames"
    return f"{peak / 2**20:.0f} MiB above the model for {videos} at template widths ({precision})"


def resume_check(root: Path, work: Path, device) -> str:
    from cvae.errors import Stopped
    from cvae.training.loop import train

    class StopAfterFirst:
        def on_epoch_end(self, epoch, metrics):
            if epoch == 1:
                raise Stopped("SIGTERM")

    spec = doctor_spec(root, str(device), "fp32", **{"train.deterministic": True})
    whole, stopped = work / "resume-whole", work / "resume-stopped"
    train(spec, whole)
    try:
        train(spec, stopped, callbacks=[StopAfterFirst()])
    except Stopped:
        pass
    train(spec, stopped, resume=True)
    a, b = _weights(stopped), _weights(whole)
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    if diff > 0:
        raise RuntimeError(f"the resumed run's weights differ from the uninterrupted run's by {diff:.3g}")
    return "stopped after epoch 1 and resumed: the weights equal the uninterrupted run's (off by 0), deterministic"


def _weights(run: Path) -> dict:
    from cvae import run_folder
    from cvae.training.checkpoint import load

    return load(run_folder.checkpoint_path(run, run_folder.LAST))["model"]
