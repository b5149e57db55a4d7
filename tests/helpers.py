"""Helpers shared by the test files: the ``cvae`` command run for real, what its results must show,
a run folder's files read back, snapshots of folders, tiny sweeps, training callbacks that stop a
run, and the faults the reliability tests plant.

Test files import these (and conftest's fixtures come by name); no test file imports another.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"  # the shipped specs
TEMPLATE = EXPERIMENTS / "lab4_template.yaml"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m cvae.cli` children: this checkout first on the path, one thread,
    W&B off (``extra`` on top)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    env["WANDB_MODE"] = "disabled"
    env.pop("CVAE_DEBUG", None)
    # A test worker that ran W&B in-process holds a wandb-core service; children would log through it.
    env.pop("WANDB_SERVICE", None)
    env["COLUMNS"] = "200"  # rich: one message per line
    env.update(extra)
    return env


def cvae(*args, cwd: Path | None = None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m cvae.cli ARGS`` in a subprocess, its output captured."""
    return python("-m", "cvae.cli", *args, cwd=cwd, timeout=timeout, env=env)


def python(
    *args, cwd: Path | None = None, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python ARGS`` (a script, or ``-m module``) in a subprocess with ``subprocess_env``."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        env=env or subprocess_env(),
        cwd=cwd,
        timeout=timeout,
    )


def assert_ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


def assert_bad_input(r: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, one ``error:`` line naming every needle, no traceback."""
    assert r.returncode == 2, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr  # one message
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BOX = re.compile("[\u2500-\u257f]")  # rich's frame: box-drawing characters


def words(text: str) -> set[str]:
    """The words of a rendered table or panel, its frame taken out."""
    return set(BOX.sub(" ", text).split())


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root and its bytes (folders as empty entries)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"") for p in sorted(root.rglob("*"))}


def nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys -> the nested dict a spec YAML file holds."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def write_spec(path: Path, overrides: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(nested(overrides), sort_keys=False))
    return path


STEPS_PER_EPOCH = 12  # tiny_overrides on the tiny preset: 4 videos x (24 // 4) clips of 4 frames / batch 2


def tiny_overrides(root: Path | str, **extra: Any) -> dict[str, Any]:
    """Dotted overrides for a run that takes seconds on one CPU thread: tiny widths, 4-frame clips,
    12-frame validation rollouts, teacher forcing 0.5 per frame from the start (so the coins and
    the model's own outputs are used), frames squashed by a sigmoid (the template's unbounded
    output can blow up in a tiny model that feeds on itself), W&B off, no held-out test scoring at
    the end (a fifth of a tiny run's time; the tests of it ask for it: ``tracking.test_at_end``)."""
    out: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "data.root": str(root),
        "data.preset": None,
        "data.clip_len": 4,
        "data.val_len": 12,
        "model.frame_dim": 16,
        "model.pose_dim": 8,
        "model.z_dim": 4,
        "model.fusion_dim": 16,
        "model.output": "sigmoid",
        "train.epochs": 2,
        "train.batch_size": 2,
        "train.device": "cpu",
        "kl_annealing.type": "monotonic",
        "teacher_forcing.ratio": 0.5,
        "teacher_forcing.decay_start": 1,
        "teacher_forcing.decay_step": 0.2,
        "teacher_forcing.mode": "frame",
        "tracking.wandb.mode": "disabled",
        "tracking.gif_frames": 10,
        "tracking.test_at_end": False,
    }
    out.update(extra)
    return out


# --------------------------------------------------------------------------- a run folder's files


def history(run_dir: Path) -> list[dict]:
    """A run's history.jsonl as the package reads it (``cvae.history.read``: non-finite values
    decoded), and every line whole: the package's reader skips a line cut by a kill, a test must
    see one. The file must exist."""
    from cvae import history as run_history

    path = Path(run_dir) / run_history.FILE
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = run_history.read(path)
    assert len(rows) == len(lines), f"{path}: {len(lines) - len(rows)} line(s) not a whole JSON object"
    return rows


def without_perf(rows: list[dict]) -> list[dict]:
    """History rows without their timings (``perf/*``): what two runs of the same training share."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def summary(run_dir: Path) -> dict:
    """A run's summary.json as the package reads it (``cvae.run_folder.read_summary``); the file must
    exist and hold a JSON object (the package's reader gives {} for a missing or damaged one)."""
    from cvae.run_folder import SUMMARY_FILE, read_summary

    path = Path(run_dir) / SUMMARY_FILE
    assert isinstance(json.loads(path.read_text()), dict), path
    return read_summary(run_dir)


def assert_same_state(a: dict, b: dict) -> None:
    """Two state dicts: the same keys, bit-identical tensors."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def assert_same_training_state(a: Path, b: Path) -> None:
    """Two checkpoints hold bit-identical weights, optimizer and scheduler state and counters."""
    from cvae.training import checkpoint

    ca, cb = checkpoint.load(a), checkpoint.load(b)
    assert_same_state(ca["model"], cb["model"])
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        assert_same_state(sa, sb)
    assert ca["scheduler"] == cb["scheduler"]
    assert (ca["epoch"], ca["step"], ca["best_psnr"]) == (cb["epoch"], cb["step"], cb["best_psnr"])


def leftovers(root: Path) -> list[Path]:
    """Temporary files a write left behind."""
    return sorted(p for p in root.rglob("*") if ".tmp" in p.name and "wandb" not in p.parts)


# --------------------------------------------------------------------------- tiny sweeps


def sweep_base_spec(root: Path, **extra: Any) -> dict[str, Any]:
    """A trial of seconds: tiny widths, 16x32 frames, 4-frame clips, 2 epochs of 3 steps, 8-frame rollouts."""
    out = {
        "name": "tiny",
        "seed": 0,
        "data.root": str(root),
        "data.preset": None,
        "data.frame_size": [16, 32],
        "data.partial": 0.5,
        "data.clip_len": 4,
        "data.val_len": 8,
        "model.frame_dim": 16,
        "model.pose_dim": 8,
        "model.z_dim": 4,
        "model.fusion_dim": 16,
        "train.epochs": 2,
        "train.batch_size": 4,
        "train.device": "cpu",
        "optim.schedule": "none",
        "kl_annealing.type": "monotonic",
        "teacher_forcing.ratio": 0.5,
        "teacher_forcing.decay_start": 1,
        "teacher_forcing.decay_step": 0.2,
        "tracking.wandb.mode": "disabled",
        "tracking.gif_frames": 8,
    }
    return out | extra


def write_sweep(folder: Path, data_root: Path, sweep: dict[str, Any], **spec_extra: Any) -> Path:
    """folder/base.yaml (a tiny spec) and folder/sweep.yaml (``sweep`` with base: base.yaml)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = nested(sweep_base_spec(data_root, **spec_extra))
    (folder / "base.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **sweep}, sort_keys=False))
    return path


def trials_of(url: str, study: str):
    from cvae.sweep.study import load_study

    return load_study(url, study).get_trials(deepcopy=False)


SWEEPS = REPO / "sweeps"  # the shipped sweep files
SEARCH = {
    "optim.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "kl_annealing.ratio": {"type": "float", "low": 0.1, "high": 1.0},
}
# Pruning likely: compare with the median from the first finished trial on, from epoch 1.
PRUNE = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}


def tpe_sweep(n_trials: int, study: str = "sweep", n_startup_trials: int = 2) -> dict[str, Any]:
    """A TPE + median-pruning search of SEARCH with a budget of ``n_trials``."""
    return {
        "search": SEARCH,
        "sampler": {"type": "tpe", "n_startup_trials": n_startup_trials},
        "pruner": PRUNE,
        "budget": {"n_trials": n_trials},
        "study": study,
    }


def assert_clean_sweep(trials, n: int, n_epochs: int = 2, study: str = "sweep") -> None:
    """n trials, every one finished (complete or pruned), numbers and parameter sets unique; a
    complete one trained ``n_epochs`` epochs; each logged to W&B in the study's group."""
    from cvae.sweep.trial import run_epoch_rows as epoch_rows

    assert len(trials) == n, [(t.number, t.state.name) for t in trials]
    assert sorted(t.number for t in trials) == list(range(n))
    states = [t.state.name for t in trials]
    assert set(states) <= {"COMPLETE", "PRUNED"}, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert states.count("COMPLETE") >= 1
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == n, params
    for t in trials:  # each trained its own folder, with its own values
        run_dir = Path(t.user_attrs["run_dir"])
        spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
        assert spec["optim"]["lr"] == pytest.approx(t.params["optim.lr"])
        assert spec["kl_annealing"]["ratio"] == pytest.approx(t.params["kl_annealing.ratio"])
        assert (
            spec["tracking"]["wandb"]["group"] == study and spec["tracking"]["wandb"]["name"] == f"{study}-t{t.number}"
        )
        assert run_dir.name == str(t.number)
        epochs = [r["epoch"] for r in epoch_rows(run_dir)]
        assert epochs == list(range(1, len(epochs) + 1)) and epochs
        if t.state.name == "COMPLETE":
            assert len(epochs) == n_epochs
            assert t.value == pytest.approx(max(r["val/psnr"] for r in epoch_rows(run_dir)))
        assert t.user_attrs["epochs_done"] == len(epochs)


# --------------------------------------------------------------------------- training callbacks


class Stop(Exception):
    pass


class StopAtEpochEnd:
    """A callback that stops the run after epoch ``epoch`` (from 1; its checkpoint is already written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epoch:
            raise Stop(f"stopped after epoch {epoch}")


# --------------------------------------------------------------------------- faults


STEPS = 6  # tiny preset, data.partial 0.5: 12 clips of 4 frames, batch 2 -> 6 steps per epoch
KILL = {"train.epochs": 2, "data.partial": 0.5, "optim.milestones": [1]}  # epoch 2 crosses the LR milestone

# A wrapper around the CLI that plants one fault: `python fault.py WHERE N cvae-args...`.
FAULT_SCRIPT = r"""
import math, os, signal, sys

where, n = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
sys.argv[0] = "cvae"
calls = [0]
# "term:WHERE" sends SIGTERM (a clean stop: W&B's early termination) and "int:WHERE" SIGINT (Ctrl-C)
# at the point instead of SIGKILL.
sig, _, where = where.rpartition(":")
SIGNAL = {"term": signal.SIGTERM, "int": signal.SIGINT}.get(sig, signal.SIGKILL)
# Python ignores SIGINT in a process started with it ignored (a shell's background job): a user's
# Ctrl-C reaches a terminal's foreground job, so take it as the CLI in a terminal does.
signal.signal(signal.SIGINT, signal.default_int_handler)


def nth():
    calls[0] += 1
    return calls[0] == n


def kill_at_nth_call(module, name):
    # the signal as the n-th call of module.name begins
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        if nth():
            kill()
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


def kill():
    os.kill(os.getpid(), SIGNAL)


import cvae.data.clips
import cvae.training.checkpoint
import cvae.training.loop
import cvae.training.step

if where == "step":  # SIGKILL at the start of optimizer step n (inside an epoch)
    kill_at_nth_call(cvae.training.step, "loss_and_gradients")
elif where == "epoch_start":  # SIGKILL as epoch n begins (between epochs)
    kill_at_nth_call(cvae.data.clips, "epoch_batches")
elif where == "after_checkpoint":  # SIGKILL right after the n-th last.pt is complete
    save = cvae.training.checkpoint.save

    def save_then_kill(path, state, keep_previous=False):
        save(path, state, keep_previous)
        if path.name == "last.pt" and nth():
            kill()

    cvae.training.checkpoint.save = save_then_kill
elif where == "checkpoint_rename":  # SIGKILL inside checkpoint.save: tmp written, prev.pt kept, not renamed
    replace = os.replace

    def replace_or_kill(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)) == "last.pt" and nth():
            kill()
        return replace(src, dst, *args, **kwargs)

    os.replace = replace_or_kill
elif where == "validation":  # the n-th validation begins
    kill_at_nth_call(cvae.training.loop, "validate_model")
elif where == "nan_from_step":  # the clips of step n and later are NaN: a real non-finite loss
    step = cvae.training.step.loss_and_gradients

    def loss_and_gradients(model, x, *args, **kwargs):
        calls[0] += 1
        if calls[0] >= n:
            x = x * math.nan
        return step(model, x, *args, **kwargs)

    cvae.training.step.loss_and_gradients = loss_and_gradients
else:
    sys.exit(f"unknown fault {where}")

from cvae.cli import main

main()
"""


def flip_a_weight_byte(path: Path) -> None:
    """Flip one byte inside the first tensor stored in a checkpoint (not in zip padding)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 4)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        pos = info.header_offset + 30 + name_len + extra_len + 1
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0x10]))


def poison_generator(monkeypatch, from_step: int, frames_per_step: int) -> None:
    """Make the Generator's output NaN from optimizer step ``from_step`` on (it runs
    ``frames_per_step`` times per step: the clip's predicted frames)."""
    from cvae.model import Generator

    calls = {"n": 0}
    original = Generator.forward

    def poisoned(self, x):
        calls["n"] += 1
        out = original(self, x)
        return out * float("nan") if calls["n"] > (from_step - 1) * frames_per_step else out

    monkeypatch.setattr(Generator, "forward", poisoned)


def cli_in_process(*arg_lists: list[str]) -> subprocess.CompletedProcess:
    """Run ``cvae.cli.app`` on each argument list in one fresh interpreter (each must exit 0); its
    stdout ends with ``HEAVY [...]``: the torch, wandb and optuna modules the calls imported."""
    code = (
        "import sys\n"
        "from cvae.cli import app\n"
        f"for args in {list(arg_lists)!r}:\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (args, e.code)\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'wandb', 'optuna')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return r


# --------------------------------------------------------------------------- hand-made Lab4 folders


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def solid(value: int, size: tuple[int, int] = (8, 12), channel: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 image, ``value`` in one channel: frames tell their index by their color."""
    a = np.zeros((*size, 3), np.uint8)
    a[..., channel] = value
    return a


def make_split(
    root: Path,
    split: str,
    videos: dict[str, list[str]],
    size: tuple[int, int] = (8, 12),
    value: Callable[[str, int], int] | None = None,
) -> None:
    """Write ROOT/<split>/<split>_img and _label. ``videos`` maps a subfolder name ("" for a flat
    folder) to its file names; frame i of a video is solid red ``value(video, i)`` (default 10 * i),
    its pose solid green with the same value."""
    value = value or (lambda v, i: 10 * i)
    for video, names in videos.items():
        for name in names:
            i = int("".join(c for c in name if c.isdigit()))
            write_png(root / split / f"{split}_img" / video / name, solid(value(video, i), size, 0))
            write_png(root / split / f"{split}_label" / video / name, solid(value(video, i), size, 1))


def make_lab4(root: Path, n_frames: int = 12, size: tuple[int, int] = (8, 12)) -> Path:
    """A minimal valid dataset: train = 2 videos, val = 1 flat video, test = 1 video."""
    names = [f"frame{i}.png" for i in range(n_frames)]
    make_split(root, "train", {"a": names, "b": names}, size)
    make_split(root, "val", {"": names}, size)
    write_png(root / "test/test_img/0/frame0.png", solid(0, size))
    for name in names:
        write_png(root / "test/test_label/0" / name, solid(0, size, 1))
    return root
