"""Shared fixtures: the synthetic tiny dataset, a tiny spec, a finished tiny run, hand-made Lab4 folders.

Threads: these tests run on small CPU machines where other work often shares the cores. With the
default intra-op pool (one thread per core) a contended torch process slows down many times over,
and the suite runs its files in parallel workers, so it pins torch to one thread unless
OMP_NUM_THREADS says otherwise. Subprocesses get the same environment.
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported anywhere
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import wandb  # noqa: E402, F401
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# wandb is imported above, at a shallow stack and before any hypothesis test has changed the
# recursion limit: its first import runs pydantic's docstring extraction (ast.parse), which on
# CPython 3.11.7 raised "SystemError: AST constructor recursion depth mismatch" when it first
# happened inside a late test; the half-imported module then broke every later W&B test.

REPO = Path(__file__).resolve().parents[1]


def tiny_overrides(root: Path | str, **extra: Any) -> dict[str, Any]:
    """Dotted overrides for a run that takes seconds on one CPU thread: tiny widths, 4-frame clips,
    12-frame validation rollouts, teacher forcing 0.5 per frame from the start (so the coins and
    the model's own outputs are used), frames squashed by a sigmoid (the template's unbounded
    output can blow up in a tiny model that feeds on itself), W&B off."""
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
    }
    out.update(extra)
    return out


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


def subprocess_env() -> dict[str, str]:
    """Environment for `python -m cvae.cli` children: this checkout first on the path, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
    env["WANDB_MODE"] = "disabled"
    env.pop("CVAE_DEBUG", None)
    env["COLUMNS"] = "200"  # rich: one message per line
    return env


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


@pytest.fixture
def lab4_factory() -> Callable[..., Path]:
    return make_lab4


# --------------------------------------------------------------------------- synthetic data and runs


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """cvae.synth's tiny preset: train 4 videos x 24 frames, val 1 x 40, test 2 x 40, 32x64."""
    from cvae.synth import synthesize

    root = tmp_path_factory.mktemp("tiny") / "data"
    synthesize(root, preset="tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_spec(tiny_data):
    from cvae.spec import load_spec

    return load_spec(None, tiny_overrides(tiny_data))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_spec) -> Path:
    """A finished 2-epoch tiny run (in-process train()), shared read-only by several tests."""
    from cvae.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny2"
    train(tiny_spec, run_dir)
    return run_dir
