"""docs/reliability.md, promise 6: bad input of any kind exits 2 with one message naming the
file, key or value and what is allowed, and writes or overwrites nothing. One table of cases, run
in-process (typer's CliRunner); tests/test_cli.py runs the same handler in subprocesses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import flip_a_weight_byte, snapshot
from typer.testing import CliRunner

# One table: each case makes one thing wrong in a valid workspace and gives the command line.
# `ws` holds a valid 8x12 dataset (ws/data) and spec (ws/spec.yaml) (conftest's `workspace`);
# `run` is a finished tiny run (conftest's `run_copy`) for the cases that need one.
# Cases tests/test_cli.py already runs are listed in docs/reliability.md and not repeated here.
BAD_INPUT = []


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def case(name: str, *needles: str, run: bool = False, marks=()):
    """Register a bad-input case: the decorated function breaks something and returns the CLI args."""

    def register(setup):
        BAD_INPUT.append(pytest.param(setup, needles, run, id=name, marks=marks))
        return setup

    return register


def _edit(ws: Path, key: str, value) -> Path:
    """Set a dotted key of ws/spec.yaml (a section may be replaced by a scalar)."""
    data = yaml.safe_load((ws / "spec.yaml").read_text())
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    (ws / "spec.yaml").write_text(yaml.safe_dump(data))
    return ws / "spec.yaml"


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _train(ws: Path, *args) -> list:
    return ["train", *args, "--run-dir", ws / "run"]


def _sweep(ws: Path, text: str) -> list:
    return ["sweep", "run", _write(ws / "sweep.yaml", "base: spec.yaml\n" + text), "--dir", ws / "sweep-out"]


SEARCH_LR = "search:\n  optim.lr: {type: float, low: 0.0001, high: 0.01, log: true}\nbudget: {n_trials: 2}\n"


# --- spec files
@case("spec-not-a-mapping", "list.yaml", "must be a mapping")
def _(ws, run):
    return _train(ws, _write(ws / "list.yaml", "- 1\n- 2\n"))


@case("spec-not-text", "bin.yaml", "not a text file")
def _(ws, run):
    return _train(ws, _write(ws / "bin.yaml", b"\xff\xfe\x00\x81"))


@case("spec-extends-missing", "nope.yaml", "not found")
def _(ws, run):
    return _train(ws, _write(ws / "child.yaml", "extends: nope.yaml\n"))


@case("spec-extends-loop", "a.yaml", "loops back")
def _(ws, run):
    _write(ws / "b.yaml", "extends: a.yaml\n")
    return _train(ws, _write(ws / "a.yaml", "extends: b.yaml\n"))


@case("spec-section-given-a-scalar", "spec.yaml", "`train` is a section")
def _(ws, run):
    return _train(ws, _edit(ws, "train", 3))


@case("spec-wrong-type", "spec.yaml", "train.epochs", "'three'")
def _(ws, run):
    return _train(ws, _edit(ws, "train.epochs", "three"))


@case("spec-unsafe-name", "`name`", "letters, digits", "'../../etc'")
def _(ws, run):
    return _train(ws, _edit(ws, "name", "../../etc"))


@case("spec-width-not-a-multiple", "model.frame_dim", "multiple of 8", "12")
def _(ws, run):
    return _train(ws, _edit(ws, "model.frame_dim", 12))


@case("spec-bad-device", "train.device", "auto, cpu, cuda", "'tpu'")
def _(ws, run):
    return _train(ws, _edit(ws, "train.device", "tpu"))


@case("spec-device-unavailable", "train.device", "'cuda'", "CUDA is not available", "auto, cpu", marks=NO_CUDA)
def _(ws, run):
    return _train(ws, _edit(ws, "train.device", "cuda"))


# --- overrides
@case("override-without-value", "train.epochs", "key=value")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "train.epochs")


@case("override-replaces-a-section", "override `train`", "unknown key")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "train=3")


@case("override-frame-size-3", "data.frame_size", "at least (4, 4)", "[3, 64]")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "data.frame_size=[3,64]")


@case("override-bad-choice", "kl_annealing.type", "'cyclical', 'monotonic' or 'none'", "sigmoid")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--kl_annealing.type=sigmoid")


@case("override-wandb-mode", "tracking.wandb.mode", "'offline'", "sometimes")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "tracking.wandb.mode=sometimes")


@case("override-on-nan", "train.on_nan", "'stop' or 'skip_batch'", "ignore")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "train.on_nan=ignore")


@case("override-negative-skip-limit", "train.max_skipped_batches", "greater than or equal to 0")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--train.max_skipped_batches=-1")


@case("override-not-a-list", "optim.milestones", "'abc'")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "optim.milestones=abc")


@case("stray-argument", "'extra'", "--key=value")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "extra")


# --- dataset folders
@case("data-missing-split", "data/val/val_img", "folder missing")
def _(ws, run):
    shutil.rmtree(ws / "data/val")
    return _train(ws, ws / "spec.yaml")


@case("data-missing-pose-folder", "data/val/val_label", "pose folder missing")
def _(ws, run):
    shutil.rmtree(ws / "data/val/val_label")
    return _train(ws, ws / "spec.yaml")


@case("data-empty-folder", "data/val/val_img", "no PNG frames")
def _(ws, run):
    for png in (ws / "data/val").rglob("*.png"):
        png.unlink()
    return _train(ws, ws / "spec.yaml")


@case("data-files-beside-video-folders", "data/train/train_img", "both PNG files and video subfolders")
def _(ws, run):
    shutil.copy(ws / "data/train/train_img/a/frame0.png", ws / "data/train/train_img/frame0.png")
    return _train(ws, ws / "spec.yaml")


@case("data-root-is-a-file", "f/train/train_img", "folder missing")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", f"data.root={_write(ws / 'f', 'x')}")


@case("data-mistyped-root-with-a-preset", "data.root", "dta", "did you mean", "cvae data synth", "--preset small")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", f"data.root={ws / 'dta'}", "--set", "data.synth_seed=1")


@case("data-preset-from-the-file-root-from-the-flag", "data.root", "folder not found", "--set", "--preset tiny")
def _(ws, run):
    _edit(ws, "data.preset", "tiny")  # the spec names a preset; the root comes from the command line
    return _train(ws, ws / "spec.yaml", "--set", f"data.root={ws / 'elsewhere'}")


@case("data-root-above-the-dataset", "not a Lab4 dataset", "found data/", "did you mean")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", f"data.root={ws}")


@case("data-unpaired-val-frame", "data/val/val_img/frame99.png", "no pose image")
def _(ws, run):
    shutil.copy(ws / "data/val/val_img/frame0.png", ws / "data/val/val_img/frame99.png")
    return _train(ws, ws / "spec.yaml")


@case("data-corrupt-pose-png", "data/train/train_label/b/frame3.png", "not a readable PNG")
def _(ws, run):
    _write(ws / "data/train/train_label/b/frame3.png", b"\x89PNG\r\n\x1a\n garbage")
    return _train(ws, ws / "spec.yaml")


@case("data-truncated-png", "data/train/train_img/a/frame5.png", "not a readable PNG")
def _(ws, run):
    _truncate(ws / "data/train/train_img/a/frame5.png", 0.6)
    return _train(ws, ws / "spec.yaml")


@case("data-clips-longer-than-videos", "data.clip_len 50", "longest video (12 frames)")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "data.clip_len=50")


@case("data-fewer-clips-than-a-batch", "4 training clips", "data.clip_len 6", "train.batch_size (8)")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "data.clip_len=6", "--set", "train.batch_size=8")


@case("predict-without-test-split", "data/test/test_img", "folder missing", run=True)
def _(ws, run):
    shutil.rmtree(ws / "data/test")
    return ["predict", run, "--data", ws / "data", "--out", ws / "pred"]


# --- checkpoints and run folders
@case("evaluate-ckpt-middle", "--ckpt 'middle'", "best, last", run=True)
def _(ws, run):
    return ["evaluate", run, "--ckpt", "middle"]


@case("evaluate-device-unavailable", "--device", "'cuda:1'", "CUDA is not available", run=True, marks=NO_CUDA)
def _(ws, run):
    return ["evaluate", run, "--device", "cuda:1"]


@case("predict-not-a-device", "--device", "'gpu0'", "not a device", "cpu, cuda", run=True)
def _(ws, run):
    return ["predict", run, "--data", ws / "data", "--out", ws / "pred", "--device", "gpu0"]


@case("evaluate-run-trained-on-cuda", "spec.yaml", "train.device", "'cuda'", "--device", run=True, marks=NO_CUDA)
def _(ws, run):
    text = (run / "spec.yaml").read_text()
    (run / "spec.yaml").write_text(text.replace("device: auto", "device: cuda").replace("device: cpu", "device: cuda"))
    return ["evaluate", run]


@case("evaluate-truncated-last", "checkpoints/last.pt", "not a readable cvae checkpoint", run=True)
def _(ws, run):
    _truncate(run / "checkpoints/last.pt")
    return ["evaluate", run, "--ckpt", "last"]


@case("evaluate-flipped-weight-byte", "checkpoints/best.pt", "checksum mismatch", run=True)
def _(ws, run):
    flip_a_weight_byte(run / "checkpoints/best.pt")
    return ["evaluate", run]


@case("evaluate-empty-checkpoint", "checkpoints/best.pt", "not a readable cvae checkpoint", run=True)
def _(ws, run):
    _write(run / "checkpoints/best.pt", b"")
    return ["evaluate", run]


@case("evaluate-weights-of-another-spec", "checkpoints/best.pt", "its widths differ", run=True)
def _(ws, run):
    _edit(run, "model.frame_dim", 32)
    return ["evaluate", run]


@case("resume-without-a-run", "data", "no run to resume")
def _(ws, run):
    return ["train", "--resume", ws / "data"]


@case("resume-without-checkpoints", "checkpoints/last.pt", "checkpoint not found", run=True)
def _(ws, run):
    shutil.rmtree(run / "checkpoints")
    return ["train", "--resume", run]


@case("resume-both-checkpoints-damaged", "checkpoints/last.pt", "checkpoints/prev.pt", "not a readable", run=True)
def _(ws, run):
    _truncate(run / "checkpoints/last.pt")
    _truncate(run / "checkpoints/prev.pt")
    return ["train", "--resume", run]


@case("resume-edited-spec", "spec.yaml", "train.epochs", "greater than or equal to 1", run=True)
def _(ws, run):
    _edit(run, "train.epochs", 0)
    return ["train", "--resume", run]


@case("resume-with-overrides", "--resume", "no SPEC or overrides", run=True)
def _(ws, run):
    return ["train", "--resume", run, "--set", "train.epochs=3"]


# --- CLI flags
@case("train-without-spec", "missing SPEC", "--resume")
def _(ws, run):
    return ["train"]


@case("score-frame-size-3", "--frame-size '3'", "HxW")
def _(ws, run):
    from cvae.cli import app

    if "score" not in {c.name or c.callback.__name__ for c in app.registered_commands}:
        pytest.skip("this checkout has no `cvae score` command")
    return ["score", _write(ws / "s.csv", "id\n"), "--data", ws / "data", "--frame-size", "3"]


@case("synth-preset-huge", "preset 'huge'", "tiny, small, lab4")
def _(ws, run):
    return ["data", "synth", ws / "new", "--preset", "huge"]


@case("synth-bad-layout", "layout 'plaid'", "videos, flat")
def _(ws, run):
    return ["data", "synth", ws / "new", "--preset", "tiny", "--layout", "plaid"]


@case("evaluate-split-train", "--split 'train'", "val, test", run=True)
def _(ws, run):
    return ["evaluate", run, "--split", "train"]


@case("synth-bad-appearance", "appearance 'plaid'", "same, varied")
def _(ws, run):
    return ["data", "synth", ws / "new", "--appearance", "plaid"]


@case("unknown-option", "No such option: --bogus")
def _(ws, run):
    return ["evaluate", ws, "--bogus"]


@case("option-not-an-integer", "'--pose-shift'", "valid integer")
def _(ws, run):
    return ["evaluate", ws, "--pose-shift", "abc"]


# --- sweep files (the rest: tests/test_sweep_file.py)
@case("sweep-unknown-key", "sweep.yaml", "sampler.n_startup")
def _(ws, run):
    return _sweep(ws, SEARCH_LR + "sampler: {type: tpe, n_startup: 3}\n")


@case("sweep-searches-a-non-key", "sweep.yaml", "`optim.lrr` is not a key", "did you mean `optim.lr`")
def _(ws, run):
    return _sweep(ws, "search:\n  optim.lrr: {type: float, low: 0.1, high: 0.2}\nbudget: {n_trials: 2}\n")


@case("sweep-bound-gives-a-bad-spec", "sweep.yaml", "search.optim.lr", "2.0")
def _(ws, run):
    return _sweep(ws, "search:\n  optim.lr: {type: float, low: 0.5, high: 2.0}\nbudget: {n_trials: 2}\n")


def assert_refused(exit_code: int, stderr: str, needles: tuple[str, ...]) -> None:
    """Exit 2; one message (`error: ...`, or click's `Error: ...` for a malformed command line)."""
    assert exit_code == 2, stderr
    assert "Traceback" not in stderr
    messages = [line for line in stderr.splitlines() if line.lower().startswith("error:")]
    assert len(messages) == 1, stderr
    for needle in needles:
        assert needle in messages[0], f"{needle!r} not in {messages[0]!r}"


@pytest.mark.parametrize("setup, needles, needs_run", BAD_INPUT)
def test_bad_input_exits_2_and_writes_nothing(setup, needles, needs_run, tmp_path, request, monkeypatch):
    """In-process (typer's CliRunner) for speed; tests/test_cli.py runs the same handler in subprocesses."""
    from cvae.cli import app

    ws = request.getfixturevalue("workspace")
    run = request.getfixturevalue("run_copy") if needs_run else None
    monkeypatch.chdir(ws)  # a default output folder would land in the snapshot
    args = [str(a) for a in setup(ws, run)]
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert_refused(result.exit_code, result.stderr, needles)
    assert snapshot(tmp_path) == before  # nothing written, nothing overwritten


def test_the_bad_input_table_is_large_enough():
    assert len(BAD_INPUT) >= 25 and len({c.id for c in BAD_INPUT}) == len(BAD_INPUT)
