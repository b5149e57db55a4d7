"""A sweep that shows it is alive: its running trials' progress, as ``cvae sweep run`` and ``cvae sweep
status`` show it.

Trials run in worker processes (``--workers K``), in the command's own process (one worker), or on
other machines sharing the storage. Their progress is read where every worker writes it, about once
a second: which trials run, on which worker, from the study; how far each has got from its run
folder's ``history.jsonl``, read from where the last read stopped (its new lines only, never the whole
file again), and its planned steps once from its ``spec.yaml``. A trial whose run folder this machine
cannot see (another machine's) shows its reports to the pruner instead: its validated epochs.

``watching`` shows it: on a terminal a live table under the lines of finished trials; in a log or a
pipe a line per event (a trial started, an epoch ended, a trial finished); with ``--quiet`` nothing.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvae import history
from cvae.terminal import Fields

POLL_S = 1.0  # seconds between two reads of the study and the run folders


@dataclass
class TrialProgress:
    """How far a running trial has got."""

    number: int
    label: str | None = None
    worker: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0  # epochs done
    epochs: int | None = None  # planned
    step: int = 0  # optimizer steps done
    steps: int | None = None  # planned
    score: float | None = None  # the objective metric at the last epoch that validated
    score_epoch: int | None = None
    started: float | None = None  # time.time() of the trial's start

    @property
    def name(self) -> str:
        return f"trial {self.number}" + (f" [{self.label}]" if self.label else "")


def worker_label(worker: str | None) -> str:
    """``pid 12345`` for a worker process of this machine, ``host:pid`` for another machine's."""
    if not worker:
        return "-"
    host, pid = (worker.split(":") + [""])[:2]
    return f"pid {pid}" if host == socket.gethostname() else f"{host}:{pid}"


class HistoryTail:
    """A run folder's ``history.jsonl``, read from where the last read stopped. A resume rewrites the
    file shorter: then it is read again from its start."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = Path(path), 0, b""

    def new_rows(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
            if size < self.offset:  # rewritten by a resume
                self.offset, self.partial = 0, b""
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")  # the last piece: a line still being written
        rows = []
        for line in lines:
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict):
                    rows.append({k: history.decode(v) for k, v in row.items()})
        return rows


def planned(run_dir: Path) -> tuple[int | None, int | None]:
    """(epochs, optimizer steps) the run in ``run_dir`` plans, from its resolved spec and its data's file
    index; (None, None) where they cannot be told (no spec yet, its data not on this machine)."""
    from cvae.data.clips import steps_per_epoch_of
    from cvae.spec import load_spec

    try:
        spec = load_spec(Path(run_dir) / "spec.yaml")
    except Exception:
        return None, None
    try:
        return spec.train.epochs, sum(steps_per_epoch_of(spec)[0])
    except Exception:
        return spec.train.epochs, None


class TrialWatch:
    """One running trial, followed: its progress and the events (epochs) since the last look."""

    def __init__(self, trial, metric: str, epochs: int | None = None) -> None:
        attrs = trial.user_attrs
        started = trial.datetime_start.timestamp() if trial.datetime_start else None
        self.p = TrialProgress(
            trial.number, attrs.get("label"), worker_label(attrs.get("worker")), dict(trial.params), started=started
        )
        if attrs.get("cuda_visible_devices"):
            self.p.worker += f" (GPU {attrs['cuda_visible_devices']})"
        self.p.epochs, self.metric = epochs, metric
        self.run_dir = Path(attrs["run_dir"]) if attrs.get("run_dir") else None
        self.tail = HistoryTail(self.run_dir / history.FILE) if self.run_dir else None
        self.planned = False

    def update(self, trial) -> list[str]:
        """Read what is new; return a line per epoch that ended since the last look."""
        p = self.p
        if self.run_dir is None and trial.user_attrs.get("run_dir"):  # it has started since
            self.run_dir = Path(trial.user_attrs["run_dir"])
            self.tail = HistoryTail(self.run_dir / history.FILE)
        if self.run_dir is None or not self.run_dir.is_dir():  # another machine's: its pruner reports
            return self._from_reports(trial)
        if not self.planned and (self.run_dir / "spec.yaml").is_file():
            self.planned = True
            epochs, steps = planned(self.run_dir)
            p.epochs, p.steps = epochs or p.epochs, steps
        events = []
        for row in self.tail.new_rows():
            p.step = max(p.step, int(row.get("step", 0)))
            if history.is_epoch_row(row):
                p.epoch = int(row["epoch"])
                validated = isinstance(row.get(self.metric), int | float)
                if validated:
                    p.score, p.score_epoch = float(row[self.metric]), p.epoch
                events.append(self.epoch_line(validated))
        return events

    def _from_reports(self, trial) -> list[str]:
        p, events = self.p, []
        for epoch in sorted(e for e in trial.intermediate_values if e > p.epoch):
            p.epoch, p.score, p.score_epoch = epoch, float(trial.intermediate_values[epoch]), epoch
            events.append(self.epoch_line(True))
        return events

    def epoch_line(self, validated: bool) -> str:
        p = self.p
        steps = f" (step {p.step}/{p.steps})" if p.steps else f" (step {p.step})" if p.step else ""
        score = f"{self.metric} {history.with_unit(self.metric, p.score)}"
        if validated:
            what = score
        elif p.score is not None:
            what = f"not validated; last {score} (epoch {p.score_epoch})"
        else:
            what = "not validated yet"
        return f"{p.name} epoch {p.epoch}/{p.epochs or '?'} done{steps}: {what}"


def trial_progress(trial, metric: str, epochs: int | None = None) -> TrialProgress:
    """A running trial's progress, read once (``cvae sweep status``)."""
    watch = TrialWatch(trial, metric, epochs)
    watch.update(trial)
    return watch.p


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def running_table(
    running: list[TrialProgress], metric: str, params: bool = False, title: str = "running", now: float | None = None
):
    """The running trials: trial, worker, epoch and step of the planned, the last score and its epoch,
    the time so far (and ``params``: the trial's values)."""
    from cvae.sweep.text import metric_header, params_text
    from cvae.terminal import Col, table

    now = time.time() if now is None else now
    columns = [  # epoch and step: done of planned; the last score and the epoch it is from
        Col("trial", numeric=True),
        Col("worker"),
        Col("epoch", numeric=True),
        Col("step", numeric=True),
        Col("last\n" + metric_header(metric), numeric=True),
        Col("at\nepoch", numeric=True),
        Col("time", numeric=True),
    ]
    rows = [
        [
            str(p.number) + (f"\n[{p.label}]" if p.label else ""),
            p.worker,
            f"{p.epoch}/{p.epochs or '?'}",
            f"{p.step}/{p.steps}" if p.steps else str(p.step),
            "-" if p.score is None else f"{p.score:.2f}" if history.unit(metric) else f"{p.score:.4g}",
            "-" if p.score_epoch is None else str(p.score_epoch),
            "-" if p.started is None else _duration(now - p.started),
        ]
        for p in running
    ]
    if params:
        columns.append(Col("params"))
        for row, p in zip(rows, running, strict=True):
            row.append(params_text(p.params))
    return table(title, columns, rows)


# --------------------------------------------------------------------------- watching a sweep run


class SweepWatch:
    """Reads the study and the running trials' run folders (``poll``) and keeps what a live view shows
    (``renderable``); each poll returns its events: ``(kind, line)``, kind ``started``, ``epoch`` or
    ``finished``."""

    def __init__(self, url: str, study: str, metric: str, epochs: int | None = None) -> None:
        self.url, self.study_name, self.metric, self.epochs = url, study, metric, epochs
        # Set once the command has created or loaded the study: opened earlier, a second storage of a
        # new SQLite file would race the command's own to create its tables.
        self.ready = threading.Event()
        self.study = None
        self.began = time.time()
        self.known: set[int] | None = None  # trials finished before the watch began: not reported
        self.watches: dict[int, TrialWatch] = {}
        self.best: tuple[int, float] | None = None
        self.counts = {"finished": 0, "running": 0, "waiting": 0}

    def poll(self) -> list[tuple[str, str]]:
        """Read what changed since the last poll: the events, in order."""
        from optuna.trial import TrialState

        from cvae.sweep.study import load_study
        from cvae.sweep.text import params_text, trial_line

        if self.study is None:
            try:
                self.study = load_study(self.url, self.study_name)
            except Exception:  # not created yet (the command is preparing it)
                return []
        trials = self.study.get_trials(deepcopy=False)
        if self.known is None:
            self.known = {t.number for t in trials if t.state.is_finished()}
        events: list[tuple[str, str]] = []
        for t in trials:
            if t.state == TrialState.RUNNING and "run_dir" in t.user_attrs:  # (set with its worker and values)
                if t.number not in self.watches:
                    self.watches[t.number] = watch = TrialWatch(t, self.metric, self.epochs)
                    verb = "started" if (watch.p.started or 0) >= self.began - POLL_S else "running"
                    line = f"{watch.p.name} {verb} on {watch.p.worker}"
                    events.append(("started", line + (f": {params_text(t.params)}" if t.params else "")))
                events += [("epoch", line) for line in self.watches[t.number].update(t)]
            elif t.state.is_finished() and t.number not in self.known:
                self.known.add(t.number)
                watch = self.watches.pop(t.number, None)
                if watch is None and "run_dir" in t.user_attrs:  # it ran between two polls
                    watch = TrialWatch(t, self.metric, self.epochs)
                if watch is not None:  # its epochs not told yet, read after it ended
                    events += [("epoch", line) for line in watch.update(t)]
                events.append(("finished", trial_line(t, self.metric)))
        numbers = {t.number for t in trials}
        for gone in [n for n in self.watches if n not in numbers]:
            del self.watches[gone]
        self._tally(trials)
        return events

    def _tally(self, trials) -> None:
        from optuna.trial import TrialState

        self.counts = {
            "finished": sum(t.state.is_finished() for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials),
        }
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if complete:
            pick = max if self.study.direction.name == "MAXIMIZE" else min
            b = pick(complete, key=lambda t: t.value)
            self.best = (b.number, b.value)

    def headline(self) -> str:
        c = self.counts
        line = f"sweep {self.study_name}: {c['finished']} trials finished, {c['running']} running"
        line += f", {c['waiting']} queued" if c["waiting"] else ""
        if self.best is not None:
            line += f"; best {self.metric} {history.with_unit(self.metric, self.best[1])} (trial {self.best[0]})"
        return line

    def renderable(self, now: float | None = None):
        """The live view: the headline, and the running trials' table."""
        from rich.console import Group

        running = [w.p for _, w in sorted(self.watches.items())]
        parts = [Fields([self.headline()])]
        if running:
            parts.append(running_table(running, self.metric, now=now))
        return Group(*parts)


@contextlib.contextmanager
def watching(url: str, study: str, metric: str, console, epochs: int | None = None) -> Iterator[SweepWatch]:
    """Show a sweep's progress on ``console`` while the block runs (see the module doc), from when the
    block sets ``watch.ready`` (the study exists). A poll that fails (a storage briefly out of reach)
    is skipped, and said once after ten in a row: the display never stops the sweep. No console, or
    a quiet one: nothing is read or shown."""
    watch = SweepWatch(url, study, metric, epochs)
    if console is None or console.quiet:
        yield watch
        return
    live = None  # on a terminal: drawn once the study is ready (data synthesis may draw its bars before)

    def show(events: list[tuple[str, str]]) -> None:
        nonlocal live
        if console.is_terminal and live is None:
            from rich.live import Live

            live = Live(watch.renderable(), console=console, auto_refresh=False, transient=True)
            live.start()
        for kind, line in events:
            if live is None or kind == "finished":  # on a terminal the table shows starts and epochs
                console.print(Fields([line]))
        if live is not None:
            live.update(watch.renderable(), refresh=True)

    stop = threading.Event()

    def loop() -> None:
        failures = 0
        while not watch.ready.is_set():
            if stop.wait(0.1):
                return
        while True:
            try:
                show(watch.poll())
                failures = 0
            except Exception as e:
                failures += 1
                if failures == 10:
                    console.print(Fields([f"progress: the study cannot be read ({e.__class__.__name__}: {e})"]))
            if stop.wait(POLL_S):
                return

    thread = threading.Thread(target=loop, name="sweep-progress", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join(timeout=10)
        if watch.ready.is_set():
            with contextlib.suppress(Exception):
                show(watch.poll())  # what ended since the last poll
        if live is not None:
            live.stop()
