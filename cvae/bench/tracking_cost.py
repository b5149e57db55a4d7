"""Time what tracking adds to one quick-start epoch, with no training at all.

Per epoch the trainer logs ``steps / log_every`` step rows and one epoch row (history.jsonl and
W&B), updates the summary, writes the validation GIF (``gif_frames`` frames of ground truth |
prediction | pose) and the per-frame PSNR plot, and logs the GIF and the per-frame curve to W&B.
This script does exactly that with the quick start's sizes (read from its spec and dataset
preset), times each part, and divides by a quick-start epoch's wall time (train + validation),
read from a finished quick-start run (``--run``) or given (``--epoch-s``).

W&B offline hands rows to its ``wandb-core`` process, which writes them while training goes on;
on a small CPU that process competes with training, so its CPU time is counted too (Linux: read
from /proc for the children of this process).

    python -m cvae.bench.tracking_cost --run runs/quickstart          # or --epoch-s 80
    python -m cvae.bench.tracking_cost --epochs 6 --json
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
PARTS = ("local_rows_s", "wandb_rows_s", "gif_s", "plot_s", "wandb_media_s", "wandb_core_cpu_s")


def children_cpu_s() -> float | None:
    """CPU seconds (user + system) of every live descendant of this process, from /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(fields[1])  # field 4: ppid
        ticks[int(d.name)] = int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    me, mine = os.getpid(), set()
    frontier = {me}
    while frontier:
        frontier = {pid for pid, pp in parent.items() if pp in frontier and pid not in mine}
        mine |= frontier
    return sum(ticks[p] for p in mine) / os.sysconf("SC_CLK_TCK")


@contextmanager
def clock(timing: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall time to ``timing[key]``."""
    t = time.perf_counter()
    yield
    timing[key] += time.perf_counter() - t


def quickstart_epoch_s(run: Path) -> float:
    """Median wall time of a finished run's epochs (training + validation)."""
    from cvae import history

    rows = history.epoch_rows(history.read(run / history.FILE))
    times = [r["perf/epoch_s"] + r.get("perf/val_s", 0.0) for r in rows if "perf/epoch_s" in r]
    if not times:
        raise SystemExit(f"{run}: no epoch rows with perf/epoch_s in history.jsonl")
    return statistics.median(times)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=str(DEFAULT_SPEC))
    ap.add_argument("--run", type=Path, help="a finished run of the spec: its median epoch time is the baseline")
    ap.add_argument("--epoch-s", type=float, help="baseline epoch time in seconds (instead of --run)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs to simulate (the first one pays imports)")
    ap.add_argument("--noise", action="store_true", help="random frames in the GIF (slowest to encode)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    return ap.parse_args(argv)


def sizes_of(spec) -> dict[str, Any]:
    """What one epoch of ``spec`` logs: its optimizer steps (from the training clips its dataset holds,
    as the trainer counts them; a steady epoch, after any fast-training ones), step rows, the val
    video's length and the GIF's frames."""
    from cvae.data.clips import steps_per_epoch_of
    from cvae.data.synth import PRESETS

    steps = steps_per_epoch_of(spec)[0][-1]
    preset = PRESETS[spec.data.preset or "small"]
    val_len = min(preset.val_frames, spec.data.val_len or preset.val_frames)
    return {
        "steps_per_epoch": steps,
        "step_rows_per_epoch": steps // spec.tracking.log_every,
        "val_len": val_len,
        "gif_frames": min(spec.tracking.gif_frames, val_len),
    }


def isolate_wandb(tmp: Path) -> None:
    """W&B's folders in ``tmp``, no sweep or run of the caller's, silent."""
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        os.environ[var] = str(tmp / "wandb-home" / var.lower())
    for var in ("WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_RUN_ID", "WANDB_SERVICE"):
        os.environ.pop(var, None)
    os.environ["WANDB_SILENT"] = "true"


def gif_content(spec, n: int, noise: bool, tmp: Path):
    """(frames, poses, prediction) of ``n`` frames at the spec's size: a synthetic dancer val video and
    a blurred copy as the prediction (GIF encoding time depends on content), or noise (worst case)."""
    import torch

    H, W = spec.data.frame_size
    if noise:
        g = torch.Generator().manual_seed(0)
        frames = torch.randint(0, 256, (n, 3, H, W), dtype=torch.uint8, generator=g)
        poses = torch.randint(0, 256, (n, 3, H, W), dtype=torch.uint8, generator=g)
        return frames, poses, torch.rand((n, 3, H, W), generator=g)
    from cvae.data.frames import load_split
    from cvae.data.layout import scan_split
    from cvae.data.synth import synthesize

    root = tmp / "data"
    synthesize(root, spec.data.preset or "small", train_videos=1, train_frames=1, val_videos=1,
               val_frames=n, test_videos=0)  # fmt: skip
    frames, poses = load_split(scan_split(root, "val"), (H, W)).video(0)
    blur = torch.nn.functional.avg_pool2d(frames.float() / 255, 3, stride=1, padding=1)
    return frames, poses, (0.9 * blur + 0.05).clamp(0, 1)


def measure(spec, sizes: dict[str, Any], content, epochs: int, run_dir: Path):
    """Log ``epochs`` epochs' worth of rows, media and summaries through the local and the W&B offline
    trackers, timing each part. Returns the per-epoch timings and the one-time costs."""
    import numpy as np

    from cvae.tracking.media import plot_psnr, side_by_side, write_gif
    from cvae.tracking.tracker import LocalTracker
    from cvae.training.loop import plot_curves

    frames, poses, pred = content
    curve = (20 + np.random.default_rng(0).random(sizes["val_len"] - 1)).tolist()
    one_time: dict[str, float] = {}
    t = time.perf_counter()
    import wandb  # noqa: F401  (timed: the import a run pays once)

    from cvae.tracking.wandb_run import WandbTracker

    one_time["import_wandb_s"] = time.perf_counter() - t
    local, remote = LocalTracker(), WandbTracker(mode="offline", project="bench-tracking")
    t = time.perf_counter()
    local.start(run_dir, spec.to_dict(), False)
    remote.start(run_dir, spec.to_dict(), False)
    one_time["start_s"] = time.perf_counter() - t
    if remote.error:
        raise SystemExit(f"W&B did not start: {remote.error}")

    per_epoch: list[dict[str, float]] = []
    step = 0
    for epoch in range(epochs):
        cpu0 = children_cpu_s()
        timing = dict.fromkeys(PARTS, 0.0)
        for _ in range(sizes["step_rows_per_epoch"]):
            step += spec.tracking.log_every
            row = {f"train/{k}": float(step) for k in ("loss", "mse", "kl", "grad_norm")}
            row |= {"train/beta": 1.0, "train/tfr": 0.5, "train/lr": 1e-3, "epoch": epoch}
            for tracker, key in ((local, "local_rows_s"), (remote, "wandb_rows_s")):
                with clock(timing, key):
                    tracker.log(row, step)
        epoch_row = {f"epoch/{k}": 0.1 for k in ("loss", "mse", "kl", "grad_norm", "beta", "tfr", "lr")}
        epoch_row |= {f"val/{k}": 20.0 for k in ("psnr", "mse", "psnr_shifted_pose", "psnr_repeat_first")}
        epoch_row |= {"val/psnr_mean_frame": 20.0, "perf/frames_per_s": 60.0, "perf/epoch_s": 80.0, "perf/val_s": 10.0}
        summary = {"epochs_done": epoch + 1, "steps": step, "best/val_psnr": 20.0, "best/epoch": epoch}
        with clock(timing, "gif_s"):
            gif = write_gif(run_dir / "media" / f"val_epoch{epoch + 1:03d}.gif", side_by_side(frames, pred, poses))
        with clock(timing, "plot_s"):
            plot_psnr(
                run_dir / "plots" / "val_psnr.png", {"prediction": curve, "shifted poses": curve}, {"ref": 18.0}, "t"
            )
        with clock(timing, "wandb_media_s"):
            remote.log_media("val/rollout", gif, step)
            remote.log_curve("val/psnr_per_frame", list(range(1, len(curve) + 1)), curve, "frame", "psnr", step)
        for tracker, key in ((local, "local_rows_s"), (remote, "wandb_rows_s")):
            with clock(timing, key):
                tracker.log({"epoch": epoch, **epoch_row}, step)
                tracker.summary(summary)
        time.sleep(1.0)  # let wandb-core write this epoch's records before reading its CPU time
        cpu1 = children_cpu_s()
        timing["wandb_core_cpu_s"] = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else float("nan")
        per_epoch.append(timing)
        if remote.error:
            raise SystemExit(f"W&B failed: {remote.error}")

    t = time.perf_counter()
    plot_curves(run_dir)  # plots/curves.png from history.jsonl, once at the end of a run
    one_time["curves_png_s"] = time.perf_counter() - t
    t = time.perf_counter()
    local.finish()
    remote.finish()
    one_time["finish_s"] = time.perf_counter() - t
    return per_epoch, one_time


def summarize(args, spec, sizes, per_epoch, one_time) -> dict[str, Any]:
    """Medians over the steady epochs, and their share of a quick-start epoch's wall time."""
    steady = per_epoch[1:] or per_epoch  # the first epoch pays matplotlib's and imageio's imports
    median = {k: statistics.median(e[k] for e in steady) for k in PARTS}
    main_thread = sum(v for k, v in median.items() if k != "wandb_core_cpu_s")
    core = median["wandb_core_cpu_s"]
    total = main_thread + (0.0 if math.isnan(core) else core)
    first_epoch = sum(v for k, v in per_epoch[0].items() if k != "wandb_core_cpu_s")
    baseline = args.epoch_s or (quickstart_epoch_s(args.run) if args.run else None)
    H, W = spec.data.frame_size
    result = {
        "spec": args.spec,
        "gif_content": "noise" if args.noise else "synthetic dancer",
        "sizes": {
            "steps_per_epoch": sizes["steps_per_epoch"],
            "step_rows_per_epoch": sizes["step_rows_per_epoch"],
            "gif": [sizes["gif_frames"], H, 3 * W + 4],
            "curve_points": sizes["val_len"] - 1,
        },
        "per_epoch_median_s": {k: round(v, 4) for k, v in median.items()},
        "per_epoch_main_thread_s": round(main_thread, 4),
        "per_epoch_with_wandb_core_s": round(total, 4),
        "first_epoch_main_thread_s": round(first_epoch, 4),
        "one_time_s": {k: round(v, 3) for k, v in one_time.items()},
        "baseline_epoch_s": baseline,
    }
    if baseline:
        result["overhead_pct"] = {
            "main_thread": round(100 * main_thread / baseline, 3),
            "with_wandb_core_cpu": round(100 * total / baseline, 3),
            "first_epoch": round(100 * first_epoch / baseline, 3),
        }
    return result


def print_result(result: dict[str, Any]) -> None:
    print(f"quick-start sizes: {result['sizes']}")
    for k, v in result["per_epoch_median_s"].items():
        print(f"  {k:<18} {1000 * v:8.1f} ms / epoch")
    main_thread, total = result["per_epoch_main_thread_s"], result["per_epoch_with_wandb_core_s"]
    first = result["first_epoch_main_thread_s"]
    print(f"  main thread        {1000 * main_thread:8.1f} ms / epoch (first epoch {1000 * first:.1f} ms)")
    print(f"  + wandb-core CPU   {1000 * total:8.1f} ms / epoch")
    print(f"  once per run: {result['one_time_s']}")
    if result["baseline_epoch_s"]:
        pct = result["overhead_pct"]
        print(
            f"baseline epoch {result['baseline_epoch_s']:.1f} s: overhead {pct['main_thread']:.2f}% (main thread), "
            f"{pct['with_wandb_core_cpu']:.2f}% with wandb-core's CPU, first epoch {pct['first_epoch']:.2f}%"
        )


def main(argv: list[str] | None = None) -> None:
    from cvae.spec import load_spec

    args = parse_args(argv)
    spec = load_spec(args.spec)
    sizes = sizes_of(spec)
    tmp = Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    atexit.register(shutil.rmtree, tmp, True)
    isolate_wandb(tmp)
    run_dir = tmp / "run"
    run_dir.mkdir()
    content = gif_content(spec, sizes["gif_frames"], args.noise, tmp)
    per_epoch, one_time = measure(spec, sizes, content, args.epochs, run_dir)
    result = summarize(args, spec, sizes, per_epoch, one_time)
    if args.json:
        print(json.dumps(result))
    else:
        print_result(result)


if __name__ == "__main__":
    main()
