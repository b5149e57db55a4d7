"""``cvae report --reproduce SCALE``: train the published report's seven settings at a scale, then
draw its figures from them (``cvae report``).

A scale changes the number of epochs, the data and the widths, nothing else: every setting counted
in epochs is scaled with the epochs (teacher-forcing decay start and step, LR milestones, fast-train
epochs), so each schedule keeps its shape over the shorter run; KL annealing's cycles are already
counted over the run. ``full`` trains the report's specs as published (a GPU job); ``cpu`` fits a
2-core CPU (docs/tracking.md has its measured time and what it shows).

The runs are ordinary run folders (``runs/report-<scale>/<name>``): a second call resumes the
unfinished ones and skips the finished.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from cvae import run_folder
from cvae.errors import UserError
from cvae.spec import apply_overrides, load_spec_dict, validate_spec

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
REPORT_SPECS = (
    "report_tf_0.5",
    "report_tf_0.1",
    "report_tf_0",
    "report_kl_monotonic",
    "report_kl_cyclical",
    "report_kl_none",
    "report_psnr",
)


@dataclass(frozen=True)
class Scale:
    epochs: Fraction  # the report's epochs times this
    clips: float  # the fraction of the training clips kept (data.partial and train.fast_partial alike)
    overrides: dict[str, Any] = field(default_factory=dict)  # the data and the widths
    about: str = ""


SLIM = {"model.frame_dim": 32, "model.pose_dim": 16, "model.z_dim": 8, "model.fusion_dim": 48}
SCALES = {
    "full": Scale(Fraction(1), 1.0, {}, "the report's specs as published: 70 epochs at template widths"),
    "cpu": Scale(
        Fraction(1, 5),
        0.05,
        {
            "data.root": "data/small",
            "data.preset": "small",
            "data.val_len": 120,
            **SLIM,
            "train.precision": "auto",
            "train.channels_last": "auto",
        },
        "14 epochs of 5% of the clips of the synthetic small dancer, quick-start widths, 120-frame validation",
    ),
}


def scaled(spec: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """A spec dict (resolved, every section present) at ``scale``; epochs round to whole ones, and an
    LR milestone stays at epoch 1 or later (at 0 it would never fire)."""
    out = copy.deepcopy(spec)
    f = scale.epochs
    train, tf, optim = out["train"], out["teacher_forcing"], out["optim"]
    train["epochs"] = max(1, round(train["epochs"] * f))
    train["fast_epochs"] = round(train["fast_epochs"] * f)
    if tf["unit"] == "epoch":
        tf["decay_start"] = round(tf["decay_start"] * f)
        tf["decay_step"] = min(1.0, float(tf["decay_step"] / f))
    optim["milestones"] = [max(1, round(m * f)) for m in optim["milestones"]]
    out["data"]["partial"] = round(out["data"]["partial"] * scale.clips, 9)
    train["fast_partial"] = round(train["fast_partial"] * scale.clips, 9)
    return apply_overrides(out, scale.overrides)


def scaled_specs(scale_name: str, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The seven report specs at the scale, ``overrides`` (``--set``) on top, each validated."""
    if scale_name not in SCALES:
        raise UserError(f"--reproduce {scale_name!r}: unknown scale; allowed: {', '.join(SCALES)}")
    out = {}
    for name in REPORT_SPECS:
        path = EXPERIMENTS / f"{name}.yaml"
        spec = validate_spec(load_spec_dict(path), str(path)).to_dict()
        data = apply_overrides(scaled(spec, SCALES[scale_name]), overrides)
        out[name] = validate_spec(data, f"{path} at scale {scale_name}").to_dict()
    return out


@dataclass
class Job:
    name: str
    spec_file: Path
    run_dir: Path
    proc: subprocess.Popen | None = None


def train_all(specs: dict[str, dict[str, Any]], runs_dir: Path, workers: int, console=None) -> list[Path]:
    """Train every spec into ``runs_dir/<name>``, ``workers`` at a time (each a ``cvae train``
    process with cores / workers threads); a finished run is skipped, an unfinished one resumed.
    Returns the run folders; a run that fails is a RuntimeError naming it, after the others end."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name, spec in specs.items():
        spec_file = runs_dir / "specs" / f"{name}.yaml"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        jobs.append(Job(name, spec_file, runs_dir / name))
    todo = []
    for job in jobs:
        status = run_folder.read_summary(job.run_dir).get("status")
        if status == run_folder.FINISHED:
            _say(console, f"{job.name}: finished before, skipped")
        else:
            todo.append(job)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    running: list[Job] = []
    failed = []
    while todo or running:
        while todo and len(running) < workers:
            job = todo.pop(0)
            job.proc = subprocess.Popen(_command(job), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            running.append(job)
            _say(console, f"{job.name}: training -> {job.run_dir}")
        time.sleep(1)
        for job in [j for j in running if j.proc.poll() is not None]:
            running.remove(job)
            err = job.proc.stderr.read().decode(errors="replace").strip()
            if job.proc.returncode == 0:
                best = run_folder.read_summary(job.run_dir).get("best/val_psnr")
                _say(console, f"{job.name}: done" + (f", best val PSNR {best:.2f} dB" if best is not None else ""))
            else:
                failed.append(f"{job.name} (exit {job.proc.returncode}): {err.splitlines()[-1] if err else ''}")
    if failed:
        raise RuntimeError("report runs failed: " + "; ".join(failed))
    return [job.run_dir for job in jobs]


def _command(job: Job) -> list[str]:
    cmd = [sys.executable, "-m", "cvae.cli", "train"]
    if (job.run_dir / run_folder.SPEC_FILE).is_file() and (job.run_dir / "checkpoints" / "last.pt").is_file():
        return [*cmd, "--resume", str(job.run_dir), "--quiet"]
    return [*cmd, str(job.spec_file), "--run-dir", str(job.run_dir), "--overwrite", "--quiet"]


def _say(console, line: str) -> None:
    if console is not None:
        console.print(line, markup=False)
