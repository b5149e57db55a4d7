"""Train several specs, a few at a time, as ordinary run folders: what ``cvae report --reproduce``
and ``cvae sweep confirm`` run.

Each run is a ``cvae train`` process with cores / workers threads and, on a machine with GPUs, a
GPU of its own (``cvae.placement``: the i-th of ``--gpus`` for the i-th of the runs at a time). A
call skips the runs that finished before and resumes the unfinished ones, so an interrupted batch
continues where it stopped. Ctrl-C (or SIGTERM) reaches every run: each stops cleanly (status ``stopped``) and the
next call resumes it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cvae import run_folder
from cvae.data.root import ensure_data
from cvae.errors import sigterm_stops
from cvae.placement import child_env
from cvae.spec import validate_spec


@dataclass
class Job:
    name: str
    spec_file: Path
    run_dir: Path
    proc: subprocess.Popen | None = None
    slot: int = 0  # which of the runs at a time it is: its GPU

    @property
    def log(self) -> Path:
        """What the run's process printed to stderr (its error, if it failed)."""
        return self.spec_file.with_suffix(".log")


def train_all(
    specs: dict[str, dict[str, Any]], runs_dir: Path, workers: int, console=None, gpus: list[str] = ()
) -> tuple[list[Path], list[str]]:
    """Train every spec into ``runs_dir/<name>``, ``workers`` at a time (each a ``cvae train``
    process with cores / workers threads, the i-th at a time on ``gpus[i]`` when given:
    ``cvae.placement.assign_gpus``); a finished run is skipped, an unfinished one resumed.
    Returns the run folders and one line per run that failed (after the others ended)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name, spec in specs.items():
        spec_file = runs_dir / "specs" / f"{name}.yaml"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        jobs.append(Job(name, spec_file, runs_dir / name))
    # Each dataset once, before any run starts: two runs generating one synthetic folder would collide.
    for root in {spec["data"]["root"]: spec for spec in specs.values()}.values():
        ensure_data(validate_spec(root), console)
    todo = []
    for job in jobs:
        status = run_folder.read_summary(job.run_dir).get("status")
        if status == run_folder.FINISHED:
            _say(console, f"{job.name}: finished before, skipped")
        else:
            todo.append(job)
    envs = [child_env(workers, gpus[i] if gpus else None) for i in range(workers)]
    running: list[Job] = []
    failed = []
    with sigterm_stops():
        return _run(jobs, todo, running, failed, workers, envs, console)


def _run(jobs: list[Job], todo: list[Job], running: list[Job], failed: list[str], workers: int, envs, console):
    try:
        while todo or running:
            while todo and len(running) < workers:
                job = todo.pop(0)
                job.slot = min(set(range(workers)) - {j.slot for j in running})  # a free slot: its GPU
                # Its own session: a terminal's Ctrl-C reaches this process, which passes it on once.
                with open(job.log, "w") as log:
                    job.proc = subprocess.Popen(
                        _command(job), env=envs[job.slot], stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
                    )
                running.append(job)
                _say(console, f"{job.name}: training -> {job.run_dir}")
            time.sleep(1)
            failed += _reap(running, console)
    except KeyboardInterrupt:  # each run stops cleanly, resumable by the next call
        for job in running:
            job.proc.send_signal(signal.SIGINT)
        for job in running:
            try:
                job.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                job.proc.kill()
        raise
    return [job.run_dir for job in jobs], failed


def _reap(running: list[Job], console) -> list[str]:
    """Remove the finished processes from ``running``; their failures, one line each."""
    failed = []
    for job in [j for j in running if j.proc.poll() is not None]:
        running.remove(job)
        err = job.log.read_text(errors="replace").strip() if job.log.exists() else ""
        if job.proc.returncode == 0:
            best = run_folder.read_summary(job.run_dir).get("best/val_psnr")
            _say(console, f"{job.name}: done" + (f", best val PSNR {best:.2f} dB" if best is not None else ""))
        else:
            failed.append(f"{job.name} (exit {job.proc.returncode}): {err.splitlines()[-1] if err else ''}")
            _say(console, f"{job.name}: {failed[-1]}")
    return failed


def _command(job: Job) -> list[str]:
    cmd = [sys.executable, "-m", "cvae.cli", "train"]
    if (job.run_dir / run_folder.SPEC_FILE).is_file() and run_folder.checkpoint_path(job.run_dir).is_file():
        return [*cmd, "--resume", str(job.run_dir), "--quiet"]
    return [*cmd, str(job.spec_file), "--run-dir", str(job.run_dir), "--overwrite", "--quiet"]


def _say(console, line: str) -> None:
    if console is not None:
        console.print(line, markup=False)
