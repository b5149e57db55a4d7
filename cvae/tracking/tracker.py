"""Trackers: where a run's metrics, media and summary go.

The trainer talks to one ``Tracker`` (the interface below, after accelerate's GeneralTracker).
``LocalTracker`` always runs: it writes ``history.jsonl`` and ``summary.json`` in the run
folder. Other trackers (W&B) are added beside it through ``MultiTracker``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvae import history
from cvae.placement import GPU_KEY
from cvae.run_folder import DATA_KEY, FAILED, read_summary, write_summary


class Tracker:
    """Interface every tracker implements. All methods are no-ops by default."""

    def start(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        """Open the run. ``config`` is the resolved spec as a nested dict."""

    def on_epoch_start(self, epoch: int, steps: int, first_step: int) -> None:
        """Epoch ``epoch`` (counted from 1) of ``steps`` optimizer steps, numbered from
        ``first_step + 1``, begins."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log scalar metrics at optimizer step ``step`` (never smaller than a previous step)."""

    def log_media(self, key: str, path: Path, step: int) -> None:
        """Log a media file (``.gif`` video or ``.png`` image) written under the run folder."""

    def log_curve(self, key: str, xs: list[float], ys: list[float], x_name: str, y_name: str, step: int) -> None:
        """Log a curve (e.g. per-frame PSNR) as one plot."""

    def summary(self, values: dict[str, Any]) -> None:
        """Set summary values (best PSNR, its epoch, ...)."""

    def log_model(self, path: Path, metadata: dict[str, Any], final: bool) -> None:
        """The best checkpoint ``path`` was written (``final``: the run ended normally, this is its best),
        with ``metadata``: its epoch and val/psnr, the spec's name, the data it trained on."""

    def finish(self, status: str = "finished", reason: str | None = None) -> None:
        """Close the run. ``status``: ``finished``, ``pruned``, ``stopped`` or ``failed``
        (cvae/run_folder.py); ``reason`` says why a run failed or stopped."""


class LocalTracker(Tracker):
    """Writes ``history.jsonl`` (one object per logged point) and ``summary.json``."""

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self._summary: dict[str, Any] = {}

    def start(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        self.run_dir = Path(run_dir)
        if resume:  # a summary cut short by a kill reads as empty: the trainer writes it again
            self._summary = read_summary(self.run_dir)
        for key in (DATA_KEY, "device", GPU_KEY, "numerics"):  # what the run trains on, where, how: from the start
            if key in config:
                self._summary[key] = config[key]
        self._write_summary()

    def log(self, metrics: dict[str, float], step: int) -> None:
        assert self.run_dir is not None
        history.append(self.run_dir / history.FILE, {"step": step, **metrics})

    def summary(self, values: dict[str, Any]) -> None:
        self._summary.update({k: history.encode(v) for k, v in values.items()})
        self._write_summary()

    def finish(self, status: str = "finished", reason: str | None = None) -> None:
        self._summary["status"] = status
        # a resumed run that finished: the earlier attempt's reason no longer applies
        self._summary.pop("failure_reason", None)
        self._summary.pop("stop_reason", None)
        if reason is not None:
            self._summary["failure_reason" if status == FAILED else "stop_reason"] = reason
        self._write_summary()

    def _write_summary(self) -> None:
        assert self.run_dir is not None
        write_summary(self.run_dir, self._summary)


class MultiTracker(Tracker):
    """Fans every call out to several trackers, in order."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def start(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        for t in self.trackers:
            t.start(run_dir, config, resume)

    def on_epoch_start(self, epoch: int, steps: int, first_step: int) -> None:
        for t in self.trackers:
            t.on_epoch_start(epoch, steps, first_step)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def log_media(self, key: str, path: Path, step: int) -> None:
        for t in self.trackers:
            t.log_media(key, path, step)

    def log_curve(self, key: str, xs: list[float], ys: list[float], x_name: str, y_name: str, step: int) -> None:
        for t in self.trackers:
            t.log_curve(key, xs, ys, x_name, y_name, step)

    def summary(self, values: dict[str, Any]) -> None:
        for t in self.trackers:
            t.summary(values)

    def log_model(self, path: Path, metadata: dict[str, Any], final: bool) -> None:
        for t in self.trackers:
            t.log_model(path, metadata, final)

    def finish(self, status: str = "finished", reason: str | None = None) -> None:
        """Every tracker is closed even if one fails (a full disk must not leave W&B open)."""
        error = None
        for t in self.trackers:
            try:
                t.finish(status, reason)
            except Exception as e:
                error = error or e
        if error is not None:
            raise error
