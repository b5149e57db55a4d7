"""A sweep that shows it is alive: its running trials' progress (trial, worker, epoch and step of the
planned, the last score with its unit) read from a real Optuna journal and real run folders, shown
live on a terminal (a fixed-width rich console), as a line per event in a log (`cvae sweep run` to a
pipe, one worker in its own process; tests/test_sweep_status.py checks the lines of two worker
processes), in `cvae sweep status`, and not at all with --quiet.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from helpers import assert_ok, cvae, trials_of, words, write_sweep

from cvae.history import epoch_rows
from cvae.sweep.progress import SweepWatch, watching
from cvae.sweep.status import status, status_tables
from cvae.sweep.study import quiet_experimental
from cvae.sweep.workers import this_worker
from cvae.terminal import make_console, render


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def running_trial(tmp_path, trained_run):
    """A journal study whose trial 0 runs on this machine: its run folder (a copy of a finished 2-epoch
    run, cut back to epoch 1 and four steps of epoch 2) and its attributes as the objective sets them."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    run = tmp_path / "trials" / "0"
    shutil.copytree(trained_run, run)
    rows = _rows(run / "history.jsonl")
    first = next(i for i, r in enumerate(rows) if "epoch/loss" in r)
    _write(run / "history.jsonl", rows[: first + 1 + 4])
    url = str(tmp_path / "optuna.journal")
    study = optuna.create_study(
        storage=JournalStorage(JournalFileBackend(url)), study_name="live", direction="maximize"
    )
    with quiet_experimental():
        study.set_metric_names(["val/psnr"])
    trial = study.ask()
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    for key, value in {"run_dir": str(run), "worker": this_worker(), "label": "good"}.items():
        trial.set_user_attr(key, value)
    return url, study, trial, run, rows


def test_a_running_trial_as_the_live_view_the_log_and_status_show_it(running_trial):
    url, study, trial, run, rows = running_trial
    full = epoch_rows(rows)
    steps = full[-1]["step"]  # 2 epochs of 12 steps
    watch = SweepWatch(url, "live", "val/psnr", epochs=2)
    events = watch.poll()
    lr = f"optim.lr={trial.params['optim.lr']:.4g}"
    epoch1 = f"epoch 1/2 done (step {full[0]['step']}/{steps}): val/psnr {full[0]['val/psnr']:.2f} dB"
    assert events == [
        ("started", f"trial 0 [good] started on pid {os.getpid()}: {lr}"),
        ("epoch", f"trial 0 [good] {epoch1}"),
    ]
    step_now = full[0]["step"] + 4
    for width in (80, 100, 160):  # the live view on a terminal of each width
        text = render(watch.renderable(now=watch.watches[0].p.started + 65), width)
        assert max(len(line) for line in text.splitlines()) <= width, text
        shown = words(text)
        for word in ("0", "[good]", "pid", str(os.getpid()), "1/2", f"{step_now}/{steps}", "(dB)", "1m05s"):
            assert word in shown, (width, word, text)
        assert f"{full[0]['val/psnr']:.2f}" in shown, text
        assert "sweep live: 0 trials finished, 1 running" in " ".join(text.split())

    _write(run / "history.jsonl", rows)  # the trial trains on: its second epoch ends
    assert watch.poll() == [
        ("epoch", f"trial 0 [good] epoch 2/2 done (step {steps}/{steps}): val/psnr {full[1]['val/psnr']:.2f} dB")
    ]
    (running,) = status(study, importance=False)["running"]  # `cvae sweep status` reads the same
    assert (running["epoch"], running["epochs"], running["step"], running["steps"]) == (2, 2, steps, steps)
    assert running["score"] == pytest.approx(full[1]["val/psnr"])
    shown = words(" ".join(render(item, 100) for item in status_tables(status(study, importance=False))))
    assert {"2/2", f"{steps}/{steps}", f"{full[1]['val/psnr']:.2f}", lr} <= shown

    best = max(r["val/psnr"] for r in full)
    study.tell(trial, best)
    ((kind, line),) = watch.poll()
    assert kind == "finished" and line.startswith(f"trial 0 [good]: {lr} -> val/psnr {best:.2f} dB")
    assert watch.headline() == f"sweep live: 1 trials finished, 0 running; best val/psnr {best:.2f} dB (trial 0)"
    assert watch.poll() == []  # told once


def test_another_machines_trial_shows_its_reports_to_the_pruner(running_trial, tmp_path):
    """Its run folder is not on this machine: its validated epochs come from the study."""
    url, study, _, _, _ = running_trial
    other = study.ask()
    other.set_user_attr("run_dir", str(tmp_path / "elsewhere" / "1"))
    other.set_user_attr("worker", "gpu-node-7:4242:99")
    other.report(21.5, 1)
    watch = SweepWatch(url, "live", "val/psnr", epochs=2)
    events = [line for kind, line in watch.poll() if line.startswith("trial 1")]
    assert events == ["trial 1 started on gpu-node-7:4242", "trial 1 epoch 1/2 done: val/psnr 21.50 dB"]
    text = render(watch.renderable(), 100)
    assert {"gpu-node-7:4242", "1/2", "21.50"} <= words(text)


def test_the_live_view_on_a_terminal_and_nothing_with_quiet(running_trial):
    """`watching` on a terminal (a rich console forced to be one, 100 columns): the live table is drawn
    and redrawn from its own thread while the sweep runs, and the finished trial's line stays."""
    from rich.console import Console

    url, study, trial, run, rows = running_trial
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None, highlight=False, soft_wrap=True)
    with watching(url, "live", "val/psnr", console, epochs=2) as watch:
        time.sleep(1.5)
        assert "pid" not in out.getvalue()  # nothing read before the study is ready
        watch.ready.set()
        time.sleep(2.5)  # polls once a second
        _write(run / "history.jsonl", rows)
        study.tell(trial, 20.0)
        time.sleep(2.5)
    text = out.getvalue()
    assert "running" in text and f"pid {os.getpid()}" in text and "1/2" in text  # the live table was drawn
    assert "trial 0 [good]: optim.lr=" in text and "-> val/psnr 20.00 dB" in text
    assert "epoch 1/2 done" not in text  # on a terminal the table shows epochs: no line each

    threads = threading.active_count()
    with watching(url, "live", "val/psnr", make_console(quiet=True)) as quiet:
        quiet.ready.set()
        time.sleep(1.5)
        assert threading.active_count() == threads and quiet.study is None  # nothing read, nothing shown


@pytest.mark.slow
def test_sweep_run_to_a_pipe_prints_a_line_per_event(tmp_path, tiny_data):
    """One worker (trials in the command's own process), output to a pipe: each trial's start, each
    epoch's end with its score in dB (the values its history holds), its end; --quiet: nothing."""
    sweep = {
        "search": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "enqueue": [{"name": "good", "params": {"optim.lr": 1e-2}}],
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2},
        "study": "pipe",
    }
    path = write_sweep(tmp_path, tiny_data, sweep)
    out = tmp_path / "out"
    r = cvae("sweep", "run", path, "--dir", out)
    assert_ok(r)
    lines = r.stdout.splitlines()
    for t in trials_of(str(out / "optuna.journal"), "pipe"):
        name = f"trial {t.number}" + (" [good]" if t.number == 0 else "")
        mine = [line for line in lines if line.startswith(f"{name} ") or line.startswith(f"{name}:")]
        epochs = epoch_rows(_rows(Path(t.user_attrs["run_dir"]) / "history.jsonl"))
        expected = [f"{name} started on pid "]
        expected += [f"{name} epoch {e['epoch']}/2 done (step {e['step']}/{epochs[-1]['step']}): "
                     f"val/psnr {e['val/psnr']:.2f} dB" for e in epochs]  # fmt: skip
        expected += [f"{name}: optim.lr={t.params['optim.lr']:.4g} -> val/psnr {t.value:.2f} dB, 2 epochs"]
        assert len(mine) == len(expected), r.stdout
        for line, start in zip(mine, expected, strict=True):
            assert line.startswith(start), (line, start, r.stdout)
    assert re.search(r"^best: trial \d, val/psnr \d+\.\d\d dB", r.stdout, re.M), r.stdout

    quiet = cvae("sweep", "run", path, "--dir", out, "--n-trials", "3", "--quiet")
    assert_ok(quiet)
    assert quiet.stdout == "" and len(trials_of(str(out / "optuna.journal"), "pipe")) == 3
