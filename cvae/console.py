"""The terminal side of a run: rich progress bars and one line per epoch.

``ConsoleTracker`` is a Tracker, so the trainer reports to it exactly as to the history file
and W&B. When output is not a terminal (CI logs), rich draws no live bars and the epoch lines
stay plain text. ``quiet`` prints nothing but errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cvae.tracking import Tracker


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def task(console: Console | None, description: str, total: int | None = None) -> Iterator:
    """A progress bar for long work; yields ``update(done, total)``. No-op when console is None."""
    if console is None or console.quiet or not console.is_terminal:  # no live bars in logs
        yield lambda done, total=None: None
        return
    with make_progress(console) as progress:
        tid = progress.add_task(description, total=total, info="")

        def update(done: int, total: int | None = None) -> None:
            progress.update(tid, completed=done, total=total)

        yield update


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}"
    return str(value)


class ConsoleTracker(Tracker):
    """Progress bar per epoch (live loss, beta, teacher-forcing ratio) and a validation line."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task = None
        self._epochs = 0
        self._first_step = 0

    def start(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        self._epochs = config["train"]["epochs"]
        verb = "Resuming" if resume else "Training"
        t = config["train"]
        how = t["precision"] + (" + channels_last" if t["channels_last"] is True else "")
        self.console.print(f"{verb} [bold]{config['name']}[/] -> {run_dir} ({how})")

    def on_epoch_start(self, epoch: int, steps: int, first_step: int) -> None:
        if self.console.quiet or not self.console.is_terminal:
            return
        self._progress = make_progress(self.console)
        self._progress.start()
        self._task = self._progress.add_task(f"epoch {epoch + 1}/{self._epochs}", total=steps, info="")
        self._first_step = first_step

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._progress is not None and "train/loss" in metrics:
            info = " ".join(f"{k[6:]} {fmt(metrics[k], 3)}" for k in ("train/loss", "train/beta", "train/tfr"))
            self._progress.update(self._task, completed=step - self._first_step, info=info)
        if "epoch" in metrics and "epoch/loss" in metrics:
            self._close_bar()
            self.console.print(epoch_line(metrics, self._epochs), highlight=False)

    def _close_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def finish(self, status: str = "finished", reason: str | None = None) -> None:
        self._close_bar()
        if status != "finished":
            self.console.print(f"[red]run {status}[/]: {reason}")


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """`epoch 3/10  loss .. mse .. kl .. beta .. tfr ..  |  val 24.1 dB (repeat-first 17.9, ...)`"""
    parts = [f"epoch {row['epoch'] + 1}/{epochs}"]
    parts += [f"{k} {fmt(row['epoch/' + k], 3)}" for k in ("loss", "mse", "kl", "beta", "tfr") if "epoch/" + k in row]
    line = "  ".join(parts)
    if "val/psnr" in row:
        refs = ", ".join(
            f"{name} {row[key]:.2f}"
            for name, key in (
                ("repeat-first", "val/psnr_repeat_first"),
                ("mean-frame", "val/psnr_mean_frame"),
                ("shifted-pose", "val/psnr_shifted_pose"),
            )
            if key in row
        )
        line += f"  |  val PSNR {row['val/psnr']:.2f} dB ({refs})"
    if "perf/frames_per_s" in row:
        line += f"  |  {row['perf/frames_per_s']:.0f} frames/s"
    return line
