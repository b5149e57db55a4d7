"""The console tracker: a progress bar per epoch (live loss, beta, teacher-forcing ratio) and one line
per epoch with its validation beside the references.

``ConsoleTracker`` is a Tracker, so the trainer reports to it exactly as to the history file and
W&B. When output is not a terminal (CI logs) rich draws no live bars and the epoch lines stay plain
text. Lines wrap to the terminal's width (80 columns in a log) between their fields, never inside a
word or a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from cvae.history import REFERENCE_NAMES
from cvae.run_folder import DATA_KEY, describe_data
from cvae.terminal import Fields, fmt, make_progress
from cvae.tracking.tracker import Tracker


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
        if "threads" in config:
            how += f", {config['threads']} thread" + ("s" if config["threads"] != 1 else "")
        self.console.print(Fields([f"{verb} {config['name']}", f"-> {run_dir}", f"({how})"], sep=" "))
        if DATA_KEY in config:
            self.console.print(Fields([f"data: {describe_data(config[DATA_KEY])}"]))

    def on_epoch_start(self, epoch: int, steps: int, first_step: int) -> None:
        if self.console.quiet or not self.console.is_terminal:
            return
        self._progress = make_progress(self.console)
        self._progress.start()
        self._task = self._progress.add_task(f"epoch {epoch}/{self._epochs}", total=steps, info="")
        self._first_step = first_step

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._progress is not None and "train/loss" in metrics:
            info = " ".join(f"{k[6:]} {fmt(metrics[k], 3)}" for k in ("train/loss", "train/beta", "train/tfr"))
            self._progress.update(self._task, completed=step - self._first_step, info=info)
        if "epoch" in metrics and "epoch/loss" in metrics:
            self._close_bar()
            self.console.print(Fields(epoch_fields(metrics, self._epochs)))

    def _close_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def finish(self, status: str = "finished", reason: str | None = None) -> None:
        self._close_bar()
        if status != "finished":
            color = "red" if status == "failed" else "yellow"
            self.console.print(f"run {status}: {reason}", style=color, markup=False)


def epoch_fields(row: dict[str, Any], epochs: int) -> list[str]:
    """``epoch 3/10``, ``loss ..``, ``mse ..``, ``kl ..``, ``beta ..``, ``tfr ..``, ``43 frames/s``,
    ``val PSNR 24.10 dB (repeat-first 17.90, ...)``: an epoch's line, field by field."""
    fields = [f"epoch {row['epoch']}/{epochs}"]
    fields += [f"{k} {fmt(row['epoch/' + k], 3)}" for k in ("loss", "mse", "kl", "beta", "tfr") if "epoch/" + k in row]
    if "perf/frames_per_s" in row:
        fields.append(f"{row['perf/frames_per_s']:.0f} frames/s")
    if "val/psnr" in row:
        refs = ", ".join(f"{name} {row[key]:.2f}" for key, name in REFERENCE_NAMES.items() if key in row)
        fields.append(f"val PSNR {row['val/psnr']:.2f} dB" + (f" ({refs})" if refs else ""))
    return fields
