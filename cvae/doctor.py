"""``cvae doctor``: what this machine offers for training, then a short end-to-end check on a device.

The check runs the real trainer (``cvae.training.loop.train``) in a temporary folder on the synthetic
tiny dancer at the template's widths (128/32/12/192; batch 2, clips of 4 frames): a few training
steps in each precision the device trains in natively (fp32 always, bf16 where it is native), the
validation rollout, checkpoints, and a stop after the first epoch resumed to the end, whose weights
must equal those of the same run left alone (exactly on the CPU; within float noise on CUDA, whose
kernels need not be deterministic). One line per check; a failed check ends the command with exit
code 1.
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
CUDA_RESUME_TOLERANCE = 1e-4  # largest weight difference accepted after a resume on CUDA


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

    from cvae.device import cpu_flags, fast_bf16

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
            f"bf16 {'native' if fast_bf16(dev) else 'not native'}, fp16 yes (train.precision offers fp32 and bf16)"
        )
    return lines


def doctor_spec(root: Path, device: str, precision: str, epochs: int = 2):
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
        },
    )


def timed(name: str, fn: Callable[[], str]) -> Check:
    t0 = time.perf_counter()
    try:
        detail = fn()
        return Check(name, True, detail, time.perf_counter() - t0)
    except Exception as e:  # a check that fails says why and the others still run
        return Check(name, False, f"{e.__class__.__name__}: {e}".splitlines()[0][:300], time.perf_counter() - t0)


def run_checks(device_name: str, report: Callable[[Check], Any] = lambda c: None) -> list[Check]:
    """The checks on ``device_name`` (auto, cpu, cuda, cuda:N), each reported as it ends."""

    from cvae.data.synth import synthesize
    from cvae.device import fast_bf16, resolve_device
    from cvae.errors import Stopped
    from cvae.training.loop import train

    device = resolve_device(device_name, "--device")
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        report(check)

    with tempfile.TemporaryDirectory(prefix="cvae-doctor-") as tmp:
        work = Path(tmp)
        root = work / "data"
        add(timed("data", lambda: f"the synthetic tiny dancer, {synthesize(root, 'tiny', seed=0)['images']} PNGs"))
        precisions = ["fp32"] + (["bf16"] if fast_bf16(device) else [])
        if "bf16" not in precisions:
            add(Check("train bf16", None, f"bf16 is not native on {device} (train.precision auto trains fp32 here)"))
        for precision in precisions:

            def one_run(precision=precision) -> str:
                s = train(doctor_spec(root, str(device), precision), work / f"run-{precision}")
                rows = [r for r in _history(work / f"run-{precision}") if "epoch/loss" in r]
                loss, fps = rows[-1]["epoch/loss"], rows[-1]["perf/frames_per_s"]
                if not math.isfinite(loss) or not math.isfinite(s["final/psnr"]):
                    raise RuntimeError(f"non-finite figures: loss {loss}, val PSNR {s['final/psnr']}")
                return (
                    f"{s['steps']} steps at template widths on {device}, loss {loss:.4g}, {fps:.1f} trained "
                    f"frames/s; validation rollout {s['final/psnr']:.2f} dB; checkpoints written"
                )

            add(timed(f"train {precision}", one_run))

        def resume() -> str:
            class StopAfterFirst:
                def on_epoch_end(self, epoch, metrics):
                    if epoch == 1:
                        raise Stopped("SIGTERM")

            spec, run = doctor_spec(root, str(device), "fp32"), work / "run-stopped"
            try:
                train(spec, run, callbacks=[StopAfterFirst()])
            except Stopped:
                pass
            train(spec, run, resume=True)
            a, b = (_weights(r) for r in (run, work / "run-fp32"))
            diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
            limit = 0.0 if device.type == "cpu" else CUDA_RESUME_TOLERANCE
            if diff > limit:
                raise RuntimeError(f"the resumed run's weights differ from the uninterrupted run's by {diff:.3g}")
            return f"stopped after epoch 1 and resumed: the weights equal the uninterrupted run's (off by {diff:.3g})"

        if next(c for c in checks if c.name == "train fp32").ok:
            add(timed("exact resume", resume))
        else:
            add(Check("exact resume", None, "needs the fp32 run"))
    return checks


def _weights(run: Path) -> dict:
    import torch

    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


def _history(run: Path) -> list[dict]:
    from cvae import history

    return history.read(run / history.FILE)
