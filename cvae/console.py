"""The terminal side: rich progress bars, one line per epoch, and errors turned into exit codes.

``ConsoleTracker`` is a Tracker, so the trainer reports to it exactly as to the history file
and W&B. When output is not a terminal (CI logs), rich draws no live bars and the epoch lines
stay plain text. ``quiet`` prints nothing but errors.

Exit codes (``handle_errors``): 0 done, 1 the run failed (the message says why), 2 bad input
(``UserError``: the message names the file, key or value and what is allowed), 130 Ctrl-C.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cvae.errors import Stopped, UserError
from cvae.history import REFERENCE_NAMES
from cvae.redact import redact
from cvae.run_folder import DATA_KEY, describe_data
from cvae.tracking import Tracker

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def make_console(quiet: bool = False) -> Console:
    return Console(quiet=quiet, highlight=False, soft_wrap=True)


def handle_errors(fn):
    """UserError -> one message, exit 2; Ctrl-C -> exit 130; any other exception -> message,
    exit 1 (``CVAE_DEBUG=1`` shows the traceback instead). URL passwords are masked."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err_console.print(f"error: {redact(str(e))}", markup=False)
            raise typer.Exit(2) from None
        except Stopped as e:
            err_console.print(f"stopped ({e.how}); a run resumes with cvae train --resume RUN_DIR", markup=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False)
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as e:  # the run failed: say why, exit 1
            if os.environ.get("CVAE_DEBUG"):
                raise
            err_console.print(f"failed: {e.__class__.__name__}: {redact(str(e))}", markup=False)
            raise typer.Exit(1) from None

    return wrapper


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
        if "threads" in config:
            how += f", {config['threads']} thread" + ("s" if config["threads"] != 1 else "")
        self.console.print(f"{verb} [bold]{config['name']}[/] -> {run_dir} ({how})")
        if DATA_KEY in config:
            self.console.print(f"data: {describe_data(config[DATA_KEY])}", markup=False)

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
            self.console.print(epoch_line(metrics, self._epochs), highlight=False)

    def _close_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def finish(self, status: str = "finished", reason: str | None = None) -> None:
        self._close_bar()
        if status != "finished":
            color = "red" if status == "failed" else "yellow"
            self.console.print(f"run {status}: {reason}", style=color, markup=False)


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """`epoch 3/10  loss .. mse .. kl .. beta .. tfr ..  |  val 24.1 dB (repeat-first 17.9, ...)`"""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    parts += [f"{k} {fmt(row['epoch/' + k], 3)}" for k in ("loss", "mse", "kl", "beta", "tfr") if "epoch/" + k in row]
    line = "  ".join(parts)
    if "val/psnr" in row:
        refs = ", ".join(f"{name} {row[key]:.2f}" for key, name in REFERENCE_NAMES.items() if key in row)
        line += f"  |  val PSNR {row['val/psnr']:.2f} dB ({refs})"
    if "perf/frames_per_s" in row:
        line += f"  |  {row['perf/frames_per_s']:.0f} frames/s"
    return line


def schedule_table(spec_obj, rows: list[dict], where: str):
    """The rich table of ``cvae spec show --schedule``."""
    from rich.table import Table

    kl, tf = spec_obj.kl_annealing, spec_obj.teacher_forcing
    title = (
        f"{spec_obj.name}: KL {kl.type} ({kl.cycles} cycles, ratio {kl.ratio:g}, per {kl.unit}); teacher forcing "
        f"{tf.ratio:g}, -{tf.decay_step:g}/{tf.unit} from {tf.unit} {tf.decay_start}, coin per {tf.mode}; {where}"
    )
    table = Table(title=title)
    columns = ["epoch", "steps", "beta", "tfr"] + (["beta at end", "tfr at end"] if "beta_last" in rows[0] else [])
    columns += ["coin", "teacher-forced"] if "coin" in rows[0] else []
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        cells = [str(r["epoch"]), str(r["steps"]), f"{r['beta']:.4g}", f"{r['tfr']:.4g}"]
        if "beta_last" in r:
            cells += [f"{r['beta_last']:.4g}", f"{r['tfr_last']:.4g}"]
        if "coin" in r:
            cells += [f"{r['coin']:.3f}", "yes" if r["teacher_forced"] else "no"]
        table.add_row(*cells)
    return table
