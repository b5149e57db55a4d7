"""WandbTracker against real offline W&B runs, read back with ``wandb leet inspect``."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
from wandb_offline import read_offline_run

from cvae.redact import redact
from cvae.spec import flatten as flatten_config
from cvae.tracking.wandb_run import RUN_ID_FILE, WandbTracker

CONFIG = {
    "name": "t",
    "seed": 3,
    "kl_annealing": {"type": "cyclical", "cycles": 10, "ratio": 1.0},
    "optim": {"name": "adam", "lr": 1e-3},
    "train": {"device": "cpu"},
    "tracking": {"wandb": {"mode": "offline", "api_key": "abc123secret"}},
    "storage": "postgresql://alice:hunter2@db.example/optuna",
}


@pytest.fixture(autouse=True)
def _wandb_env(wandb_env, tmp_path, monkeypatch):
    """conftest's ``wandb_env`` in this process (no sweep, run or project of the caller's; W&B's
    folders in tmp), and no W&B mode or run folder either: the tracker's own defaults apply."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(tmp_path / "wandb-home" / "wandb_artifact_dir"))


def write_gif(path, n=5, h=32, w=96):
    # distinct frames: a GIF writer may merge identical consecutive frames
    frames = [np.full((h, w, 3), 30 * i + 10, np.uint8) for i in range(n)]
    for i, f in enumerate(frames):
        f[:, i * 10 : i * 10 + 5] = 255
    iio.mimsave(path, frames, duration=0.1, loop=0)


def log_epoch(tracker, epoch, psnr, steps_per_epoch=2):
    for s in range((epoch - 1) * steps_per_epoch + 1, epoch * steps_per_epoch + 1):
        tracker.log({"train/mse": 1.0 / s, "train/kl": 0.5}, step=s)
    step = epoch * steps_per_epoch
    tracker.log({"epoch": epoch, "val/psnr": psnr, "perf/frames_per_s": 100.0}, step=step)
    return step


def test_flatten_and_redact():
    flat = flatten_config({"a": {"b": {"c": 1}, "d": []}, "e": {}, "f": "x"})
    assert flat == {"a.b.c": 1, "a.d": [], "e": {}, "f": "x"}
    assert redact("postgresql://user:pw@host/db") == "postgresql://user:***@host/db"
    assert redact("redis://:p@ss@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("postgresql://host:5432/db") == "postgresql://host:5432/db"
    assert redact("sqlite:///study.db") == "sqlite:///study.db"
    cfg = redact(flatten_config(CONFIG))
    assert cfg["tracking.wandb.api_key"] == "***"
    assert cfg["storage"] == "postgresql://alice:***@db.example/optuna"
    assert cfg["kl_annealing.cycles"] == 10
    # a secret-looking key with a number is a hyperparameter, not a secret
    assert redact({"model": {"num_tokens": 12, "token": "t0k"}}) == {"model": {"num_tokens": 12, "token": "***"}}


def test_offline_run_reads_back(tmp_path):
    run_dir = tmp_path / "run"
    gif, png = tmp_path / "sample.gif", tmp_path / "plot.png"
    write_gif(gif)
    iio.imwrite(png, np.zeros((16, 24, 3), np.uint8))

    tracker = WandbTracker(mode="offline", project="test", tags=["unit"])
    data = {"root": tmp_path / "data", "frame_size": (32, 64)}  # a Path and a tuple, as a spec has
    tracker.start(run_dir, {**CONFIG, "data": data}, resume=False)
    assert tracker.active and tracker.error is None
    for epoch, psnr in enumerate([10.0, 14.0, 12.0], start=1):
        step = log_epoch(tracker, epoch, psnr)
    tracker.log({"train/late": 1.0}, step=step - 3)  # goes backwards: lands on the current step
    tracker.log_media("val/sample", gif, step=step)
    tracker.log_media("val/plot", png, step=step)
    tracker.log_curve("val/psnr_per_frame", [0, 1, 2], [20.0, 18.0, 17.5], "frame", "psnr", step=step)
    tracker.summary({"best/val_psnr": 14.0, "best/epoch": 2})
    tracker.finish()
    assert not tracker.active

    assert (run_dir / "wandb").is_dir()
    run = read_offline_run(run_dir)
    assert run["run_id"] == tracker.run_id == (run_dir / RUN_ID_FILE).read_text().strip()
    assert run["state"] == "finished"
    assert len(run["segments"]) == 1

    config = run["config"]
    assert config["kl_annealing.cycles"] == 10 and config["optim.lr"] == 1e-3
    assert config["run_dir"] == str(run_dir) and config["device"] == "cpu"
    assert config["data.root"] == str(tmp_path / "data") and config["data.frame_size"] == [32, 64]
    assert config["versions.wandb"] and config["versions.python"]
    assert config["tracking.wandb.api_key"] == "***"
    assert config["storage"] == "postgresql://alice:***@db.example/optuna"
    assert "hunter2" not in str(config) and "abc123secret" not in str(config)

    history = run["history"]
    steps = [row["_step"] for row in history]
    assert steps == sorted(set(steps)) and steps[-1] == 6
    assert [row["epoch"] for row in history if "epoch" in row] == [1, 2, 3]
    assert [row["val/psnr"] for row in history if "val/psnr" in row] == [10.0, 14.0, 12.0]
    assert all("train/mse" in row for row in history)
    last = history[-1]
    assert last["train/late"] == 1.0  # not dropped
    assert last["val/sample"]["_type"] == "video-file"
    assert last["val/plot"]["_type"] == "image-file"
    assert last["val/psnr_per_frame_table"]["_type"] == "table-file"

    summary = run["summary"]
    assert summary["val/psnr"] == 14.0  # the max, not the last value (12)
    assert summary["best/epoch"] == 2 and summary["status"] == "finished"

    gifs = [p for p in run["files"] if p.suffix == ".gif"]
    assert len(gifs) == 1 and gifs[0].is_relative_to(run_dir / "wandb")
    frames = iio.mimread(gifs[0])
    assert len(frames) == 5 and all(f.shape[:2] == (32, 96) for f in frames)
    assert any(p.suffix == ".png" for p in run["files"])
    assert any(p.name.endswith(".table.json") for p in run["files"])


def test_resume_continues_the_same_run(tmp_path):
    run_dir = tmp_path / "run"
    first = WandbTracker(mode="offline", project="test")
    first.start(run_dir, CONFIG, resume=False)
    for epoch, psnr in [(1, 10.0), (2, 14.0)]:
        log_epoch(first, epoch, psnr)
    first.log({"train/mse": 0.01}, step=5)  # logged after the last checkpoint (step 4)...
    first.finish("failed", reason="killed")
    assert read_offline_run(run_dir)["state"] == "failed"

    second = WandbTracker(mode="offline", project="test")
    second.start(run_dir, CONFIG, resume=True)
    assert second.run_id == first.run_id
    second.log({"train/mse": 0.02, "train/relogged": 1.0}, step=5)  # ...and again after resuming
    second.log({"train/mse": 0.03}, step=6)
    second.log({"epoch": 3, "val/psnr": 12.0}, step=6)
    log_epoch(second, 4, 13.0)
    second.finish()

    run = read_offline_run(run_dir)
    assert len(run["segments"]) == 2
    assert {p.stem for p in run["segments"]} == {f"run-{first.run_id}"}
    assert run["run_id"] == first.run_id and run["state"] == "finished"
    history = run["history"]
    steps = [row["_step"] for row in history]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [row["epoch"] for row in history if "epoch" in row] == [1, 2, 3, 4]
    # the re-logged step 5 is kept, on the first step after the old ones, not dropped
    assert history[5]["train/relogged"] == 1.0 and history[5]["epoch"] == 3
    assert run["summary"]["val/psnr"] == 14.0  # max over both starts
    assert run["summary"]["status"] == "finished"


def test_unwritable_wandb_dir_warns_once_and_goes_on(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "wandb").write_text("not a folder")
    tracker = WandbTracker(mode="offline")
    with pytest.warns(RuntimeWarning) as caught:
        tracker.start(run_dir, CONFIG, resume=False)
        tracker.log({"train/mse": 1.0}, step=1)
        tracker.log_media("val/sample", run_dir / "missing.gif", step=1)
        tracker.summary({"best/val_psnr": 1.0})
        tracker.finish("failed", reason="x")
    assert len(caught) == 1
    assert "W&B" in str(caught[0].message) and "wandb" in str(caught[0].message)
    assert not tracker.active and tracker.error


def test_failure_mid_run_is_reported_on_the_console(tmp_path):
    from io import StringIO

    from rich.console import Console

    out = StringIO()
    tracker = WandbTracker(mode="offline", console=Console(file=out, width=300))
    run_dir = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the console gets the warning, not `warnings`
        tracker.start(run_dir, CONFIG, resume=False)
        tracker.log({"train/mse": 1.0}, step=1)
        tracker.log_media("val/sample", run_dir / "missing.gif", step=2)  # raises inside wandb
        tracker.log({"train/mse": 2.0}, step=3)  # a no-op now
        tracker.log_media("val/sample", run_dir / "missing.gif", step=4)
        tracker.finish()
    assert out.getvalue().count("W&B tracking is off") == 1
    assert "val/sample" in out.getvalue()
    run = read_offline_run(run_dir)
    assert [row["_step"] for row in run["history"]] == [1]
    assert "val/sample" in run["summary"]["tracker_error"]


def test_disabled_mode_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tracker = WandbTracker(mode="disabled")
    tracker.start(run_dir, CONFIG, resume=False)
    tracker.log({"train/mse": 1.0}, step=1)
    tracker.log_media("val/sample", run_dir / "missing.gif", step=1)
    tracker.log_curve("c", [0], [1], "x", "y", step=1)
    tracker.summary({"a": 1})
    tracker.finish()
    assert list(run_dir.iterdir()) == []
    assert tracker.error is None


def test_mode_from_environment(monkeypatch):
    assert WandbTracker(mode=None).mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert WandbTracker(mode=None).mode == "disabled"
    assert WandbTracker(mode="offline").mode == "offline"  # an explicit mode wins
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert WandbTracker(mode=None).mode == "offline"
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    assert WandbTracker().project == "from-env"
    monkeypatch.delenv("WANDB_PROJECT")
    assert WandbTracker().project == "cvae-sweeps"
    with pytest.raises(ValueError, match="offline"):
        WandbTracker(mode="ofline")


def test_sweep_agent_values_win(tmp_path, monkeypatch):
    # A new process, as an agent launches it: wandb reads the sweep variables once per process.
    params = tmp_path / "params.yaml"
    params.write_text("optim.lr:\n  value: 0.5\nkl_annealing.cycles:\n  value: 3\n")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun1")
    run_dir = tmp_path / "run"
    script = f"""
import json
from cvae.tracking.wandb_run import WandbTracker
tracker = WandbTracker(mode="offline")
tracker.start({str(run_dir)!r}, json.loads({json.dumps(json.dumps(CONFIG))}), resume=False)
tracker.log({{"train/mse": 1.0}}, step=1)
tracker.finish()
assert tracker.error is None, tracker.error
"""
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root, timeout=60)
    assert (run_dir / RUN_ID_FILE).read_text().strip() == "agentrun1"
    run = read_offline_run(run_dir)
    assert run["run_id"] == "agentrun1"
    assert run["config"]["optim.lr"] == 0.5 and run["config"]["kl_annealing.cycles"] == 3
    assert run["config"]["seed"] == 3  # values the sweep does not set stay


@pytest.mark.parametrize("policy, versions", [("best", 1), ("all", 2), ("none", 0)])
def test_the_best_checkpoint_as_a_model_artifact(tmp_path, policy, versions):
    """tracking.wandb.log_model: `best` logs the run's best once as it ends, `all` a version at each
    improvement (the final call adds none when that best is logged already), `none` never."""
    run_dir = tmp_path / "run"
    ckpt = tmp_path / "best.pt"
    tracker = WandbTracker(mode="offline", project="test", name="m", log_model=policy)
    tracker.start(run_dir, CONFIG, resume=False)
    for epoch, psnr in ((1, 20.0), (2, 21.5)):
        log_epoch(tracker, epoch, psnr)
        ckpt.write_bytes(f"weights of epoch {epoch}".encode())
        tracker.log_model(ckpt, {"epoch": epoch, "val/psnr": psnr, "spec": "m"}, final=False)
    tracker.log_model(ckpt, {"epoch": 2, "val/psnr": 21.5, "spec": "m"}, final=True)
    tracker.finish()
    models = [a for a in read_offline_run(run_dir)["artifacts"] if a["type"] == "model"]
    assert len(models) == versions
    for a in models:
        assert a["name"] == f"m-{tracker.run_id}" and set(a["aliases"]) == {"best", "latest"}
    if models:
        assert json.loads(models[-1]["metadata"]) == {"epoch": 2, "val/psnr": 21.5, "spec": "m"}
        entry = models[-1]["manifest"]["contents"][0]
        assert entry["path"] == "best.pt" and int(entry["size"]) == len(b"weights of epoch 2")


def test_a_pruned_run_is_tagged_and_a_sigterm_stop_marked_preempting(tmp_path):
    pruned = WandbTracker(mode="offline", project="test", tags=["study"])
    pruned.start(tmp_path / "p", CONFIG, resume=False)
    log_epoch(pruned, 1, 10.0)
    pruned.finish("pruned", "pruned after epoch 1")
    run = read_offline_run(tmp_path / "p")
    assert set(run["meta"]["tags"]) == {"study", "pruned"} and not run["preempting"]
    assert run["meta"]["job_type"] == "train"  # the default job type
    for how, marked in (("SIGTERM", True), ("Ctrl-C", False)):
        stopped = WandbTracker(mode="offline", project="test")
        stopped.start(tmp_path / how, CONFIG, resume=False)
        log_epoch(stopped, 1, 10.0)
        stopped.finish("stopped", f"{how}; resumes with --resume")
        assert read_offline_run(tmp_path / how)["preempting"] is marked, how
