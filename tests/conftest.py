"""Shared fixtures: the synthetic tiny dataset, a tiny spec, a finished tiny run, hand-made Lab4
folders, a workspace for bad-input tests, W&B's environment in tmp, the fault-planting CLI wrapper.
Plain helpers are tests/helpers.py.

Threads: these tests run on small CPU machines where other work often shares the cores. With the
default intra-op pool (one thread per core) a contended torch process slows down many times over,
and the suite runs its files in parallel workers, so it pins torch to one thread unless
OMP_NUM_THREADS says otherwise. Subprocesses get the same environment.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported anywhere
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import shutil  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import wandb  # noqa: E402, F401
from helpers import FAULT_SCRIPT, make_lab4, subprocess_env, tiny_overrides, write_spec  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# wandb is imported above, at a shallow stack and before any hypothesis test has changed the
# recursion limit: its first import runs pydantic's docstring extraction (ast.parse), which on
# CPython 3.11.7 raised "SystemError: AST constructor recursion depth mismatch" when it first
# happened inside a late test; the half-imported module then broke every later W&B test.


@pytest.fixture
def lab4_factory() -> Callable[..., Path]:
    return make_lab4


# --------------------------------------------------------------------------- synthetic data and runs


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """cvae.data.synth's tiny preset: train 4 videos x 24 frames, val 1 x 40, test 2 x 40, 32x64."""
    from cvae.data.synth import synthesize

    root = tmp_path_factory.mktemp("tiny") / "data"
    synthesize(root, preset="tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_spec(tiny_data):
    from cvae.spec import load_spec

    return load_spec(None, tiny_overrides(tiny_data, **{"tracking.test_at_end": True}))  # trained_run: held-out too


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_spec) -> Path:
    """A finished 2-epoch tiny run (in-process train()), shared read-only by several tests."""
    from cvae.training.loop import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny2"
    train(tiny_spec, run_dir)
    return run_dir


@pytest.fixture
def run_copy(tmp_path, trained_run) -> Path:
    """A copy of ``trained_run`` to damage or change."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A valid hand-made dataset and spec (8x12 frames) in tmp_path/ws; runs go to ws/run."""
    ws = tmp_path / "ws"
    make_lab4(ws / "data")
    write_spec(ws / "spec.yaml", tiny_overrides(ws / "data", **{"data.frame_size": [8, 12]}))
    return ws


# --------------------------------------------------------------------------- W&B and faults

# What a W&B sweep agent or a caller's shell may have set: a test's run must not join their sweep or run.
WANDB_RUN_VARS = (
    "WANDB_SWEEP_ID",
    "WANDB_SWEEP_PARAM_PATH",
    "WANDB_RUN_ID",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "WANDB_RESUME",
    "WANDB_NAME",
    "WANDB_DISABLED",
    "WANDB_API_KEY",
)
WANDB_FOLDER_VARS = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR")


@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> dict[str, str]:
    """The environment of CLI children (``subprocess_env``) with W&B offline, no sweep, run or key of
    the caller's, and W&B's folders in tmp_path/wandb-home. This process gets the same folders and
    loses the same variables (its W&B mode stays as set above: in-process tests name theirs)."""
    env = subprocess_env(WANDB_MODE="offline")
    for var in WANDB_RUN_VARS:
        env.pop(var, None)
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "wandb-home"
    for var in WANDB_FOLDER_VARS:
        env[var] = str(home / var.lower())
        monkeypatch.setenv(var, env[var])
    return env


@pytest.fixture
def fault_script(tmp_path) -> Path:
    """helpers.FAULT_SCRIPT as a file: ``python fault.py WHERE N cvae-args...`` plants one fault."""
    path = tmp_path / "fault.py"
    path.write_text(FAULT_SCRIPT)
    return path
