"""End to end: ``cvae train`` with W&B offline, read back from the run's ``.wandb`` file.

Every run here is the real CLI in a subprocess (or the in-process ``train()`` the CLI calls),
with W&B's own folders pointed into tmp; nothing needs a W&B server or key.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import yaml
from helpers import REPO, STEPS_PER_EPOCH, cvae, git, tiny_overrides, write_spec, write_sweep
from helpers import history as local_history
from wandb_offline import read_offline_run

from cvae.history import epoch_rows
from cvae.tracking.media import LABEL_HEIGHT
from cvae.tracking.wandb_files import wandb_files
from cvae.tracking.wandb_run import RUN_ID_FILE

pytestmark = pytest.mark.slow

STEP_KEYS = ("train/loss", "train/mse", "train/kl", "train/beta", "train/tfr", "train/lr", "train/grad_norm")
WARNING = "W&B tracking is off"


def wandb_records(segment: Path) -> list[dict]:
    """Every record of one ``.wandb`` file (config updates included), via W&B's own reader."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(segment)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


# --------------------------------------------------------------------------- one offline run


def test_offline_cli_run_reads_back(tmp_path, tiny_data, wandb_env):
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data, **{"kl_annealing.cycles": 7}))
    run_dir = tmp_path / "run"
    done = cvae("train", spec, "--run-dir", run_dir, "--set", "tracking.wandb.mode=offline", "--set",
                "tracking.test_at_end=true", env=wandb_env, cwd=REPO, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert WARNING not in done.stdout + done.stderr

    run = read_offline_run(run_dir)
    assert run["run_id"] == (run_dir / RUN_ID_FILE).read_text().strip()
    assert run["state"] == "finished" and len(run["segments"]) == 1
    assert run["segments"][0].is_relative_to(run_dir / "wandb")

    # The config: the resolved spec flattened to its override names, plus where and what ran it.
    config = run["config"]
    assert config["kl_annealing.cycles"] == 7 and config["kl_annealing.type"] == "monotonic"
    assert config["model.frame_dim"] == 16 and config["data.clip_len"] == 4 and config["train.epochs"] == 2
    assert config["tracking.wandb.mode"] == "offline" and config["data.frame_size"] == [32, 64]
    assert config["run_dir"] == str(run_dir)
    assert all(config.get(f"versions.{p}") for p in ("python", "torch", "wandb"))
    # ...and the data it trained on, as summary.json records it
    data = json.loads((run_dir / "summary.json").read_text())["data_identity"]
    assert (config["data_identity.source"], config["data_identity.preset"]) == ("synthetic", "tiny")
    for key in ("train_fingerprint", "val_fingerprint", "train_frames", "val_frames", "root"):
        assert config[f"data_identity.{key}"] == data[key], key

    # History: every optimizer step (log_every 1) with the train keys, one row per epoch with val/perf.
    local = local_history(run_dir)
    history = run["history"]
    steps = [row["_step"] for row in history]
    total = 2 * STEPS_PER_EPOCH
    assert steps == list(range(1, total + 1))
    step_rows = [row for row in history if "train/loss" in row]
    assert len(step_rows) == total and all(set(STEP_KEYS) <= row.keys() for row in step_rows)
    local_steps = {r["step"]: r for r in local if "train/loss" in r}
    for row in step_rows:
        mine = local_steps[row["_step"]]
        for key in STEP_KEYS:
            assert row[key] == pytest.approx(mine[key], rel=1e-6, abs=1e-12), (key, row["_step"])
        # the logged parts add up to the logged loss: loss = mse + beta * kl
        expect = row["train/mse"] + row["train/beta"] * row["train/kl"]
        assert row["train/loss"] == pytest.approx(expect, rel=1e-4)
    assert {row["train/beta"] for row in step_rows} == {0.0, 0.5}  # monotonic over 2 epochs
    wandb_epochs = [row for row in history if "val/psnr" in row]
    assert [row["epoch"] for row in wandb_epochs] == [1, 2]
    for row in wandb_epochs:
        assert row["perf/frames_per_s"] > 0 and row["perf/epoch_s"] > 0
        assert 0 < row["val/mse"] < 1 and math.isfinite(row["val/psnr"])
        # the mean of per-frame PSNRs is near, not equal to, the PSNR of the mean MSE
        assert row["val/psnr"] == pytest.approx(10 * math.log10(1 / row["val/mse"]), abs=3)
    assert [r["val/psnr"] for r in wandb_epochs] == pytest.approx([r["val/psnr"] for r in epoch_rows(local)])

    # Media: the rollout GIF of each epoch (ground truth | prediction | pose), the same bytes as the
    # run folder's, decoding to gif_frames frames 4x the frame size (and gaps) under their labels.
    gifs = [p for p in run["files"] if p.suffix == ".gif"]
    assert len(gifs) == 2
    assert {p.read_bytes() for p in gifs} == {p.read_bytes() for p in (run_dir / "media").glob("*.gif")}
    frames = iio.imread(gifs[-1], index=None)
    assert frames.shape == (10, LABEL_HEIGHT + 4 * 32, 4 * (3 * 64 + 2 * 2), 3)
    assert wandb_epochs[-1]["val/rollout"]["_type"] == "video-file"
    # ...and the per-frame PSNR chart with its references, as the run folder's plot
    plots = [p for p in run["files"] if p.suffix == ".png" and "psnr_plot" in p.name]
    assert len(plots) == 2 and wandb_epochs[-1]["val/psnr_plot"]["_type"] == "image-file"
    assert iio.imread(plots[-1]).shape[:2] == iio.imread(run_dir / "plots" / "val_psnr.png").shape[:2]

    # The per-frame PSNR line plot: W&B's line chart over a table of (frame, psnr), logged by every
    # validation that is the run's best so far (the chart draws the last one logged: the best epoch's).
    improving = [
        r["epoch"] for i, r in enumerate(wandb_epochs) if all(r["val/psnr"] > q["val/psnr"] for q in wandb_epochs[:i])
    ]
    assert [r["epoch"] for r in wandb_epochs if "val/psnr_per_frame_table" in r] == improving
    best = max(wandb_epochs, key=lambda r: r["val/psnr"])
    table_ref = best["val/psnr_per_frame_table"]
    assert table_ref["_type"] == "table-file" and table_ref["nrows"] == 11  # val_len 12: frames 1..11
    tables = sorted(p for p in run["files"] if p.name.endswith(".table.json"))
    assert len(tables) == len(improving)
    last_table = next(p for p in tables if p.name == Path(table_ref["path"]).name)
    table = json.loads(last_table.read_text())
    assert table["columns"] == ["frame", "psnr"] and [r[0] for r in table["data"]] == list(range(1, 12))
    # one val video: its mean per-frame PSNR is the epoch's val/psnr
    assert sum(r[1] for r in table["data"]) / 11 == pytest.approx(best["val/psnr"], rel=1e-5)
    charts = [
        rec["config"]["update"]["_wandb.visualize.val/psnr_per_frame"]["panel_config"]
        for rec in wandb_records(run["segments"][0])
        if rec["type"] == "config" and "_wandb.visualize.val/psnr_per_frame" in rec["config"].get("update", {})
    ]
    assert charts and charts[-1]["panelDefId"] == "wandb/line/v0"
    assert charts[-1]["fieldSettings"]["x"] == "frame" and charts[-1]["fieldSettings"]["y"] == "psnr"

    # Summary: val/psnr is its max over the run; best and status as in summary.json.
    summary = run["summary"]
    local_summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val/psnr"] == pytest.approx(max(r["val/psnr"] for r in epoch_rows(local)))
    assert summary["best/val_psnr"] == pytest.approx(local_summary["best/val_psnr"])
    assert summary["best/val_psnr"] == pytest.approx(summary["val/psnr"])
    assert summary["best/epoch"] == local_summary["best/epoch"]
    assert summary["status"] == local_summary["status"] == "finished"
    assert summary["epochs_done"] == 2 and summary["steps"] == total
    # The best checkpoint on the held-out test videos (the tiny dancer has their truth), under test/ keys
    for key in ("test/psnr", "test/psnr_repeat_first", "test/psnr_mean_frame", "test/psnr_shifted_pose"):
        assert summary[key] == pytest.approx(local_summary[key])
    assert summary["test/epoch"] == local_summary["best/epoch"]
    assert "held-out test videos (2 videos" in done.stdout


# --------------------------------------------------------------------------- which code, which run


def test_a_run_from_another_repository_records_its_own_code_and_is_found_by_its_folder(tmp_path, tiny_data, wandb_env):
    """Started from another git repository with overrides: the W&B config records cvae-sweeps' own
    version and the commit of its own checkout (not the repository the command ran in), the absolute
    run folder and the overrides; the run is named after its folder and tagged with its overrides,
    unset tracking.wandb.* settings stay out of the config, and the per-frame PSNR plot is titled
    with the run's W&B name."""
    from importlib import metadata

    from PIL import Image

    other = tmp_path / "another-repo"
    other.mkdir()
    git(other, "init", "-q")
    git(other, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "theirs")
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data, **{"train.epochs": 1}))
    args = ["train", spec, "--run-dir", "runs/lr-2e-3", "--set", "optim.lr=0.002", "--kl_annealing.cycles=3"]
    done = subprocess.run(
        [sys.executable, "-m", "cvae.cli", *map(str, args), "--set", "tracking.wandb.mode=offline"],
        cwd=other, env=wandb_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    run_dir = other / "runs" / "lr-2e-3"
    run = read_offline_run(run_dir)
    config = run["config"]

    assert config["git_commit"] == git(REPO, "rev-parse", "HEAD") != git(other, "rev-parse", "HEAD")
    assert config["git_dirty"] is bool(git(REPO, "status", "--porcelain", "--untracked-files=no"))
    assert config["versions.cvae_sweeps"] == metadata.version("cvae-sweeps")
    assert config["run_dir"] == str(run_dir.resolve())  # absolute, though given relative
    assert config["overrides"] == ["optim.lr=0.002", "kl_annealing.cycles=3"]  # tracking.* are not what it trains
    assert run["meta"]["display_name"] == "lr-2e-3"
    assert {"optim.lr=0.002", "kl_annealing.cycles=3"} <= set(run["meta"]["tags"])
    unset = [k for k, v in config.items() if k.startswith("tracking.wandb.") and v in (None, "", [], {})]
    assert unset == [] and "tracking.wandb.project" not in config and config["tracking.wandb.mode"] == "offline"
    assert Image.open(run_dir / "plots" / "val_psnr.png").text["Title"] == "lr-2e-3: validation rollout, epoch 1"


PARENT_THAT_USED_WANDB = """
import os, subprocess, sys, wandb
run = wandb.init(mode="offline", dir=sys.argv[1], settings=wandb.Settings(silent=True))
run.finish()
assert os.environ.get("WANDB_SERVICE"), "wandb no longer hands its service to children"
done = subprocess.run([sys.executable, "-m", "cvae.cli", *sys.argv[3:]], cwd=sys.argv[2])
sys.exit(done.returncode)
"""


def test_a_run_started_by_a_process_that_used_wandb_keeps_its_logs(tmp_path, tiny_data, wandb_env):
    """A notebook or script that used W&B hands its wandb-core service to the children it starts
    (WANDB_SERVICE), and that service resolves folders against its own working folder: a relative
    run folder used to lose the child's W&B logs without a word. They land in the run folder."""
    parent_dir, child_cwd = tmp_path / "parent", tmp_path / "elsewhere"
    parent_dir.mkdir()
    child_cwd.mkdir()
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data, **{"train.epochs": 1}))
    args = ["train", str(spec), "--run-dir", "runs/child", "--set", "tracking.wandb.mode=offline"]
    done = subprocess.run(
        [sys.executable, "-c", PARENT_THAT_USED_WANDB, str(parent_dir), str(child_cwd), *args],
        cwd=parent_dir, env=wandb_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "W&B tracking is off" not in done.stdout + done.stderr
    run = read_offline_run(child_cwd / "runs" / "child")
    assert run["state"] == "finished" and run["summary"]["epochs_done"] == 1


def test_the_per_frame_psnr_chart_shows_the_best_epoch(tmp_path, tiny_data, wandb_env, monkeypatch):
    """W&B's per-frame PSNR chart draws the last table logged: the run logs the curve when a validation
    is its best, so the chart shows the best epoch's curve, not the last epoch's. Here the last of
    three validations is made 5 dB worse than it was (the real rollout, its scores lowered)."""
    import dataclasses

    from cvae.run_folder import prepare
    from cvae.spec import load_spec
    from cvae.tracking.wandb_run import WandbTracker
    from cvae.training import loop

    real, calls = loop.validate_model, []

    def last_one_worse(*args, **kwargs):
        val = real(*args, **kwargs)
        calls.append(val.metrics["val/psnr"])
        if len(calls) < 3:
            return val
        metrics = val.metrics | {"val/psnr": val.metrics["val/psnr"] - 5}
        return dataclasses.replace(val, metrics=metrics, curve=val.curve - 5)

    monkeypatch.setattr(loop, "validate_model", last_one_worse)
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 3, "tracking.wandb.mode": "offline"}))
    run_dir = tmp_path / "run"
    prepare(run_dir, resume=False, overwrite=False)
    loop.train(spec, run_dir, [WandbTracker(mode="offline")])

    run = read_offline_run(run_dir)
    epochs = {row["_step"]: row["epoch"] for row in run["history"] if "val/psnr" in row}
    psnr = {row["epoch"]: row["val/psnr"] for row in run["history"] if "val/psnr" in row}
    best = max(psnr, key=psnr.get)
    assert best != 3 and run["summary"]["best/epoch"] == best
    logged = [row for row in run["history"] if "val/psnr_per_frame_table" in row]
    assert logged and epochs[logged[-1]["_step"]] == best  # the last curve logged is the best epoch's
    table_file = next(p for p in run["files"] if p.name == Path(logged[-1]["val/psnr_per_frame_table"]["path"]).name)
    ys = [r[1] for r in json.loads(table_file.read_text())["data"]]
    assert sum(ys) / len(ys) == pytest.approx(psnr[best], rel=1e-5)  # one val video: its curve's mean is val/psnr


# --------------------------------------------------------------------------- sweep agent


def test_simulated_sweep_agent_launch(tmp_path, tiny_data, wandb_env):
    """What ``wandb agent`` does: a param file, the sweep variables, ``${args}`` as --key=value."""
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_overrides(tiny_data, **{"kl_annealing.cycles": 7, "train.epochs": 1, "tracking.wandb.mode": None}),
    )
    params = tmp_path / "sweep-params.yaml"
    agent_values = {"kl_annealing.cycles": 3, "optim.lr": 0.002, "teacher_forcing.ratio": 0.25}
    params.write_text(yaml.safe_dump({"wandb_version": 1, **{k: {"value": v} for k, v in agent_values.items()}}))
    env = wandb_env | {
        "WANDB_MODE": "offline",
        "WANDB_SWEEP_ID": "sweep123",
        "WANDB_SWEEP_PARAM_PATH": str(params),
        "WANDB_RUN_ID": "agentrun42",
    }
    run_dir = tmp_path / "agent-run"
    # teacher_forcing.ratio comes only from the param file; --set loses to the agent's values.
    args = ["--kl_annealing.cycles=3", "--optim.lr=0.002", "--set", "kl_annealing.cycles=5"]
    done = cvae("train", spec, "--run-dir", run_dir, *args, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr + done.stdout

    saved = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert saved["kl_annealing"]["cycles"] == 3 and saved["optim"]["lr"] == 0.002
    assert saved["teacher_forcing"]["ratio"] == 0.25
    assert saved["teacher_forcing"]["decay_start"] == 1  # untouched keys keep the spec file's values

    run = read_offline_run(run_dir)
    assert run["run_id"] == "agentrun42" == (run_dir / RUN_ID_FILE).read_text().strip()
    for key, value in agent_values.items():
        assert run["config"][key] == value, key
    assert run["config"]["model.frame_dim"] == 16
    # ...and training used them
    step_rows = [r for r in local_history(run_dir) if "train/loss" in r]
    assert {r["train/lr"] for r in step_rows} == {0.002} and {r["train/tfr"] for r in step_rows} == {0.25}


# --------------------------------------------------------------------------- resume


class StopAfterFirstEpoch:
    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if epoch == 1:
            raise RuntimeError("stopped by the test after epoch 1")


def test_interrupted_run_resumes_into_the_same_wandb_run(tmp_path, tiny_data, wandb_env):
    from cvae.run_folder import prepare as prepare_run_dir
    from cvae.spec import load_spec
    from cvae.tracking.wandb_run import WandbTracker
    from cvae.training.loop import train

    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 3, "tracking.wandb.mode": "offline"}))
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, resume=False, overwrite=False)
    tracker = WandbTracker(mode="offline")
    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(spec, run_dir, [tracker], [StopAfterFirstEpoch()])
    assert tracker.error is None

    # An exception in a callback marks the W&B run failed, with the reason.
    first = read_offline_run(run_dir)
    assert first["state"] == "failed"
    assert first["summary"]["status"] == "failed"
    assert "RuntimeError: stopped by the test" in first["summary"]["failure_reason"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"

    done = cvae("train", "--resume", run_dir, env=wandb_env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr + done.stdout

    run = read_offline_run(run_dir)
    assert run["run_id"] == first["run_id"] and len(run["segments"]) == 2
    assert {p.stem for p in run["segments"]} == {f"run-{first['run_id']}"}
    assert run["state"] == "finished" and run["summary"]["status"] == "finished"
    steps = [row["_step"] for row in run["history"]]
    assert steps == list(range(1, 3 * STEPS_PER_EPOCH + 1))  # increasing, none missing, none twice
    assert [row["epoch"] for row in run["history"] if "val/psnr" in row] == [1, 2, 3]
    assert [row["epoch"] for row in epoch_rows(local_history(run_dir))] == [1, 2, 3]
    assert run["summary"]["epochs_done"] == 3
    assert run["summary"]["val/psnr"] == pytest.approx(max(r["val/psnr"] for r in run["history"] if "val/psnr" in r))

    # `cvae sync` of the run folder uploads both starts (`wandb sync` of it finds none)
    r = cvae("sync", run_dir, "--dry-run", env=wandb_env, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Would sync 2 run(s)" in r.stdout + r.stderr
    assert all(str(segment) in r.stdout + r.stderr for segment in run["segments"])


# --------------------------------------------------------------------------- one place to sync


def test_cvae_sync_finds_every_run_of_a_sweep_and_of_a_runs_folder(tmp_path, tiny_data, wandb_env):
    """`wandb sync --dry-run` on a sweep folder or a runs folder finds nothing (it looks only in a
    run's own wandb/ folder); `cvae sync` finds every offline run beneath them and hands them to
    `wandb sync`, whose own dry run then lists each."""
    runs = tmp_path / "runs"
    sweep = {
        "overrides": {"train.epochs": 1},
        "search": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2},
    }
    path = write_sweep(tmp_path / "sw", tiny_data, sweep, **{"tracking.wandb.mode": "offline"})
    done = cvae("sweep", "run", path, "--dir", runs / "sweeps" / "s", env=wandb_env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr + done.stdout
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data, **{"train.epochs": 1}))
    done = cvae(
        "train",
        spec,
        "--run-dir",
        runs / "single",
        "--set",
        "tracking.wandb.mode=offline",
        env=wandb_env,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    trial_logs = [f for t in ("0", "1") for f in wandb_files(runs / "sweeps" / "s" / "trials" / t)]
    single_log = wandb_files(runs / "single")
    assert len(trial_logs) == 2 and len(single_log) == 1

    own = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", str(runs / "sweeps" / "s")],
        env=wandb_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "No runs to sync" in own.stdout + own.stderr

    for target, logs in ((runs / "sweeps" / "s", trial_logs), (runs, trial_logs + single_log)):
        r = cvae("sync", target, "--dry-run", env=wandb_env, cwd=REPO, timeout=600)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert f"Would sync {len(logs)} run(s)" in out, out
        for log in logs:
            assert str(log) in out, (log, out)

    # an upload without a W&B login fails with wandb's reason, and exit 1 (nothing reaches a server)
    no_login = {k: v for k, v in wandb_env.items() if k != "WANDB_API_KEY"}
    no_login |= {"HOME": str(tmp_path / "home"), "WANDB_BASE_URL": "http://127.0.0.1:9"}
    r = cvae("sync", runs / "single", env=no_login, cwd=REPO, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "wandb login" in r.stdout + r.stderr and "failed: wandb sync exited" in r.stderr


# --------------------------------------------------------------------------- failures


def test_wandb_failure_never_stops_training(tmp_path, tiny_data, wandb_env):
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    blocker = run_dir / "wandb"
    blocker.write_text("a file where W&B wants its folder\n")
    os.chmod(blocker, 0o444)
    done = cvae(
        "train",
        spec,
        "--run-dir",
        run_dir,
        "--set",
        "tracking.wandb.mode=offline",
        env=wandb_env,
        cwd=REPO,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count(WARNING) == 1, output
    assert str(run_dir / "wandb") in output
    rows = local_history(run_dir)
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert [r["epoch"] for r in epoch_rows(rows)] == [1, 2]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert blocker.is_file() and not (run_dir / RUN_ID_FILE).exists()


def test_nan_loss_marks_the_wandb_run_failed(tmp_path, tiny_data, wandb_env):
    # lr 1 with no gradient clipping: the weights blow up and the loss is NaN at step 2 (seed 0).
    overrides = {"optim.lr": 1.0, "train.grad_clip": 0, "optim.schedule": "none", "tracking.wandb.mode": "offline"}
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data, **overrides))
    run_dir = tmp_path / "run"
    done = cvae("train", spec, "--run-dir", run_dir, env=wandb_env, cwd=REPO, timeout=600)
    assert done.returncode == 1, done.stderr + done.stdout
    assert "non-finite loss" in done.stderr

    run = read_offline_run(run_dir)
    assert run["state"] == "failed"
    reason = run["summary"]["failure_reason"]
    assert run["summary"]["status"] == "failed"
    assert reason.startswith("TrainingDiverged: non-finite loss at step")
    assert reason == json.loads((run_dir / "summary.json").read_text())["failure_reason"]
    logged = [row["_step"] for row in run["history"]]
    assert logged == [r["step"] for r in local_history(run_dir)]  # the non-finite step is not logged


def wandb_references(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """The files a run folder's W&B logs refer to: (media and other run files, relative to their
    segment's files/ folder, as absolute paths; the local files of logged artifacts, absolute)."""
    from cvae.tracking.wandb_files import inspect_log, wandb_files

    files, artifacts = [], []
    for log in wandb_files(run_dir):
        for line in inspect_log(log, summary=False).splitlines():
            record = json.loads(line)
            if record.get("type") == "files":
                files += [log.parent / "files" / f["path"] for f in record["files"].get("files", [])]
            elif record.get("type") == "artifact":
                artifacts += [Path(c["local_path"]) for c in record["artifact"]["manifest"]["contents"]]
    return files, artifacts


def test_a_moved_run_folder_holds_every_file_its_wandb_records_refer_to(tmp_path, tiny_data, wandb_env):
    """The per-frame PSNR tables are logged as W&B artifacts, whose files W&B stages under the user's
    home unless told otherwise: they stay in the run folder, so a folder copied to another machine
    (here: moved, the home emptied) still holds every file its W&B records name."""
    home = tmp_path / "home"
    env = wandb_env | {"HOME": str(home)}
    env.pop("WANDB_DATA_DIR")  # no place of the user's: the run folder's own
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data, **{"tracking.wandb.mode": "offline"}))
    made = tmp_path / "made-here" / "run"
    done = cvae("train", spec, "--run-dir", made, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr + done.stdout
    files, artifacts = wandb_references(made)
    assert len(artifacts) >= 2 and any(p.suffix == ".gif" for p in files)  # a per-frame table and the model, GIFs
    assert not [p for p in home.rglob("*") if "wandb" in p.parts]  # nothing of W&B's under the home
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(made, moved)
    for path in files + artifacts:
        assert path.is_relative_to(made), path  # nothing outside the run folder
        assert (moved / path.relative_to(made)).is_file(), path
