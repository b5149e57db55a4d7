"""The `cvae` command, run for real in a subprocess (`python -m cvae.cli`).

Bad input must give exit code 2, one `error:` message naming the key or file, and write nothing.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from helpers import (
    REPO,
    TEMPLATE,
    assert_bad_input,
    assert_ok,
    cli_in_process,
    cvae,
    make_lab4,
    python,
    snapshot,
    solid,
    subprocess_env,
    tiny_overrides,
    write_png,
    write_spec,
)

from cvae.data.frames import load_test
from cvae.runs.evaluate import load_trained
from cvae.spec import load_spec
from cvae.terminal import fmt
from cvae.tracking.media import LABEL_HEIGHT
from cvae.training.rollout import rollout
from cvae.training.validation import VAL_SEED_OFFSET

# --------------------------------------------------------------------------- help without torch


def test_help_does_not_import_torch_or_wandb():
    r = cli_in_process(
        ["--help"],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["spec", "show", "--help"],
        ["data", "synth", "--help"],
        ["sync", "--help"],
    )
    assert "HEAVY []" in r.stdout
    assert "train" in r.stdout and "evaluate" in r.stdout  # the help was printed


def test_help_import_trace_has_no_torch():
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cvae.cli", "--help"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert r.returncode == 0
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    assert "typer" in imported  # the trace is really there
    assert not [m for m in imported if m.split(".")[0] in ("torch", "wandb")]
    assert "Usage" in r.stdout


# --------------------------------------------------------------------------- the CLI's manners


def test_version_from_the_package_metadata_without_torch_or_wandb():
    from importlib.metadata import version

    r = cvae("--version")
    assert_ok(r)
    assert r.stdout.startswith(f"cvae-sweeps {version('cvae-sweeps')} (python ")
    assert f"torch {version('torch')}" in r.stdout and f"wandb {version('wandb')}" in r.stdout
    assert "HEAVY []" in cli_in_process(["--version"]).stdout


def command_paths() -> list[list[str]]:
    """Every command and group of `cvae`, as the words that name it (the root: [])."""
    import typer.main

    from cvae.cli import app

    def walk(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_every_help_is_rich_with_real_metavars_and_whole_help_texts():
    """Typer's rich help for every command: its parameters' value names (KEY=VALUE, N, DIR, ...), never a
    Python type (`<list[str]>`, `<int range>`, `<bool>`), each option's help text shown in full (rich
    markup would eat `[...]`), and no torch or wandb imported for any of it."""
    import typer.main

    from cvae.cli import app
    from cvae.cli.common import unwrap

    paths = command_paths()
    assert ["sweep", "run"] in paths and len(paths) > 15
    code = (
        "import sys\n"
        "from cvae.cli import app\n"
        f"for path in {paths!r}:\n"
        "    print('=== ' + ' '.join(path), flush=True)\n"
        "    try:\n"
        "        app([*path, '--help'], prog_name='cvae')\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (path, e.code)\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'wandb', 'optuna')))\n"
    )
    r = python("-c", code, env=subprocess_env(COLUMNS="100"))
    assert_ok(r)
    assert "HEAVY []" in r.stdout
    pages = {}
    for chunk in r.stdout.split("=== ")[1:]:
        name, _, page = chunk.partition("\n")
        pages[name.strip()] = page
    root = typer.main.get_command(app)
    root.dress()
    for path in paths:
        page = pages[" ".join(path)]
        assert "╭─ Options" in page and "Usage: cvae" in page, page  # typer's rich help
        assert not re.search(r"<(list|int|float|str|bool|path)\b", page), page
        words = set(re.sub("[\u2500-\u257f]", " ", page).split())
        command = root
        for name in path:
            command = command.commands[name]
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            if param.help:
                missing = set(unwrap(param.help).split()) - words
                assert not missing, (path, param.name, missing, page)
            if param.metavar:  # the value's name, where the option takes one
                assert param.metavar in words or f"{{{param.metavar}}}" in words, (path, param.name, page)
    train = pages["train"]
    for shown in ("KEY=VALUE", "N", "DIR", "RUN_DIR", "CHECKPOINT"):
        assert shown in set(train.split()), train
    assert "URL" in pages["sweep run"] and "SECONDS" in pages["sweep run"]


def _cvae_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has a `cvae` that runs this checkout (what `pip install` puts there)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "cvae"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cvae.cli "$@"\n')
    shim.chmod(0o755)
    env = subprocess_env(HOME=str(tmp_path / "home"), SHELL="/bin/bash")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _complete_in_bash(env: dict[str, str], setup: str, words: str) -> list[str]:
    """What bash's completion function offers for ``words`` (the last one being completed)."""
    n = len(words.split()) - (0 if words.endswith(" ") else 1)
    empty = "''" if words.endswith(" ") else ""  # completing a new word
    script = (
        f"{setup}\n"
        f"COMP_WORDS=({words}{empty}); COMP_CWORD={n}\n"
        "_cvae_completion cvae\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    r = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_shell_completion_as_typer_offers_it_in_a_real_bash(tmp_path):
    """`cvae --show-completion` prints typer's bash script (the shell found by typer from its parent
    process); sourced into bash, it completes commands and options through typer's own completion;
    `--install-completion` writes it where bash finds it."""
    env = _cvae_on_path(tmp_path)
    # `; exit $?`: bash runs cvae as its child (a lone command it would exec in its own place, and typer
    # would then find no shell above cvae where pytest was started outside one).
    shown = subprocess.run(["bash", "--norc", "-c", "cvae --show-completion; exit $?"], capture_output=True,
                           text=True, env=env, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "_CVAE_COMPLETE=complete_bash" in shown.stdout and "complete " in shown.stdout
    setup = "source <(cvae --show-completion)"
    assert "sweep" in _complete_in_bash(env, setup, "cvae sw")
    assert {"run", "status", "confirm"} <= set(_complete_in_bash(env, setup, "cvae sweep "))
    assert "--threads" in _complete_in_bash(env, setup, "cvae train --thr")

    installed = subprocess.run(["bash", "--norc", "-c", "cvae --install-completion; exit $?"], capture_output=True,
                               text=True, env=env, timeout=120)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    bashrc = (tmp_path / "home" / ".bashrc").read_text()
    script = tmp_path / "home" / ".bash_completions" / "cvae.sh"
    assert script.is_file() and str(script.relative_to(tmp_path / "home")) in bashrc
    assert "evaluate" in _complete_in_bash(env, "source ~/.bashrc", "cvae ev")


# --------------------------------------------------------------------------- spec show / schema


def test_spec_show_applies_overrides():
    r = cvae("spec", "show", TEMPLATE, "--set", "train.epochs=3", "--set", "optim.milestones=[1,2]")
    assert_ok(r)
    shown = yaml.safe_load(r.stdout)
    assert shown == load_spec(TEMPLATE, ["train.epochs=3", "optim.milestones=[1,2]"]).to_dict()
    assert shown["train"]["epochs"] == 3 and shown["optim"]["milestones"] == [1, 2]
    assert shown["name"] == "lab4_template"


def test_spec_show_bad_override():
    assert_bad_input(cvae("spec", "show", TEMPLATE, "--set", "train.epoch=3"), "train.epoch", "train.epochs")


def test_spec_schema_is_json():
    r = cvae("spec", "schema")
    assert_ok(r)
    schema = json.loads(r.stdout)
    assert {"data", "model", "train", "optim", "kl_annealing", "teacher_forcing", "tracking"} <= set(
        schema["properties"]
    )


# --------------------------------------------------------------------------- bad input: exit 2, nothing written


def run_bad(ws: Path, *args, needles: tuple[str, ...]) -> None:
    before = snapshot(ws)
    r = cvae("train", *args, "--run-dir", ws / "run", cwd=ws)
    assert_bad_input(r, *needles)
    assert not (ws / "run").exists()
    assert snapshot(ws) == before  # nothing written anywhere


def test_unknown_key_in_file(workspace):
    spec = workspace / "spec.yaml"
    d = yaml.safe_load(spec.read_text())
    d["train"]["epoch"] = 3
    spec.write_text(yaml.safe_dump(d))
    run_bad(workspace, spec, needles=(str(spec), "train.epoch", "did you mean `train.epochs`"))


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--set", "train.epoch=3"], ("train.epoch", "did you mean `train.epochs`")),
        (["--kl_anealing.cycles=3"], ("kl_anealing.cycles", "did you mean `kl_annealing.cycles`")),
        (["--set", "optim.lr=-0.001"], ("optim.lr", "greater than 0")),
        (["--set", "teacher_forcing.ratio=1.5"], ("teacher_forcing.ratio", "1.5")),
        (["--teacher_forcing.ratio=1.5"], ("teacher_forcing.ratio",)),
        (["--set", "data.clip_len=1"], ("data.clip_len",)),
        (["--set", "teacher_forcing.floor=0.9"], ("teacher_forcing.floor",)),
    ],
    ids=["mistyped-set", "mistyped-agent-form", "negative-lr", "ratio-above-1", "ratio-agent-form", "clip-len-1",
         "floor-above-ratio"],
)  # fmt: skip
def test_bad_override(workspace, args, needles):
    run_bad(workspace, workspace / "spec.yaml", *args, needles=needles)


def test_yaml_syntax_error(workspace):
    spec = workspace / "spec.yaml"
    spec.write_text(spec.read_text() + "train: [1, 2\n")
    run_bad(workspace, spec, needles=(str(spec), "not valid YAML"))


def test_missing_spec_file(workspace):
    run_bad(workspace, workspace / "nope.yaml", needles=(str(workspace / "nope.yaml"), "not found"))


def test_missing_data_folder_without_preset(workspace):
    shutil.rmtree(workspace / "data")
    run_bad(workspace, workspace / "spec.yaml", needles=("data.root", "data.preset is null"))


def test_image_pose_count_mismatch(workspace):
    (workspace / "data/train/train_label/a/frame4.png").unlink()
    run_bad(workspace, workspace / "spec.yaml", needles=(str(workspace / "data/train/train_img/a/frame4.png"),))


def test_extra_pose_image(workspace):
    write_png(workspace / "data/train/train_label/b/frame99.png", solid(0))
    run_bad(workspace, workspace / "spec.yaml", needles=(str(workspace / "data/train/train_label/b/frame99.png"),))


def test_unreadable_png(workspace):
    bad = workspace / "data/train/train_img/b/frame7.png"
    bad.write_bytes(b"definitely not a png")
    run_bad(workspace, workspace / "spec.yaml", needles=(str(bad), "not a readable PNG"))


def test_mixed_sizes(workspace):
    odd = workspace / "data/train/train_img/a/frame2.png"
    write_png(odd, solid(20, (16, 24)))
    run_bad(workspace, workspace / "spec.yaml", needles=(str(odd), "24x16"))


def test_run_dir_that_holds_a_run_is_refused(workspace):
    run = workspace / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "spec.yaml").write_text("name: earlier\n")
    (run / "history.jsonl").write_text('{"step": 1}\n')
    (run / "checkpoints/last.pt").write_bytes(os.urandom(256))
    before = snapshot(workspace)
    r = cvae("train", workspace / "spec.yaml", "--run-dir", run, cwd=workspace)
    assert_bad_input(r, str(run), "already holds a run", "--resume", "--overwrite")
    assert snapshot(workspace) == before  # the earlier run is byte-identical


def test_resume_and_spec_together_is_refused(workspace):
    before = snapshot(workspace)
    r = cvae("train", workspace / "spec.yaml", "--resume", workspace / "run", cwd=workspace)
    assert_bad_input(r, "--resume")
    assert snapshot(workspace) == before


# --------------------------------------------------------------------------- bad checkpoints


def evaluate_bad(run: Path, *needles: str) -> None:
    before = snapshot(run)
    r = cvae("evaluate", run, cwd=run.parent)
    assert_bad_input(r, str(run / "checkpoints" / "best.pt"), *needles)
    assert not (run / "eval").exists()
    assert snapshot(run) == before


def test_evaluate_truncated_checkpoint(run_copy):
    best = run_copy / "checkpoints/best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    evaluate_bad(run_copy, "not a readable cvae checkpoint")


def test_evaluate_foreign_checkpoint(run_copy):
    torch.save({"a": 1}, run_copy / "checkpoints/best.pt")
    evaluate_bad(run_copy, "neither a cvae checkpoint nor one saved by the Lab4 template's Trainer")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_evaluate_crafted_pickle_does_not_run(run_copy, tmp_path, writer):
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"
    best = run_copy / "checkpoints/best.pt"
    with open(best, "wb") as f:
        if writer == "pickle":
            pickle.dump(_RunsCode(marker), f)
        else:
            torch.save({"format": "cvae-checkpoint/1", "model": _RunsCode(marker)}, f)
    assert not marker.exists()
    evaluate_bad(run_copy, "not a readable cvae checkpoint")
    assert not marker.exists()


def test_evaluate_not_a_run_folder(tmp_path):
    assert_bad_input(cvae("evaluate", tmp_path), str(tmp_path), "spec.yaml")


def test_sync_of_what_holds_no_offline_run_is_bad_input(tmp_path, run_copy):
    """A missing path, a file, and a run that kept no W&B files (W&B disabled): each named, exit 2,
    nothing touched (and nothing asked of wandb)."""
    before = snapshot(run_copy)
    assert_bad_input(cvae("sync", tmp_path / "nope", "--dry-run"), str(tmp_path / "nope"), "no such folder")
    assert_bad_input(cvae("sync", run_copy / "spec.yaml"), str(run_copy / "spec.yaml"), "not a folder")
    assert_bad_input(cvae("sync", run_copy), str(run_copy), "no offline W&B run", "offline-run-*")
    assert snapshot(run_copy) == before


# --------------------------------------------------------------------------- data synth / check


def test_data_synth_then_check(tmp_path):
    out = tmp_path / "synth"
    assert_ok(cvae("data", "synth", out, "--preset", "tiny", "--quiet"))
    assert (out / "synth.json").is_file()
    r = cvae("data", "check", out)
    assert_ok(r)
    cells = [[c.strip() for c in line.split("\u2502")[1:-1]] for line in r.stdout.splitlines() if "\u2502" in line]
    rows = {c[0]: c[1:] for c in cells}  # split -> videos, frames, image size
    assert rows["train"] == ["4", "96", "32x64"]
    assert rows["val"] == ["1", "40", "32x64"]
    assert rows["test"][:2] == ["2", "80 poses"]
    # synth refuses a non-empty folder without --overwrite, and writes nothing
    before = snapshot(out)
    assert_bad_input(cvae("data", "synth", out, "--preset", "tiny"), str(out), "--overwrite")
    assert snapshot(out) == before


def test_data_check_reports_a_bad_file(tmp_path):
    root = make_lab4(tmp_path / "data")
    bad = root / "val/val_img/frame3.png"
    bad.write_bytes(b"garbage")
    r = cvae("data", "check", root)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "1 problem(s) found" in r.stderr and str(bad) in r.stderr
    assert "problem" in r.stdout  # the table marks the split


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_evaluate_predict_resume(tmp_path, tiny_data):
    spec = write_spec(tmp_path / "tiny.yaml", tiny_overrides(tiny_data))
    run = tmp_path / "runs" / "e2e"
    r = cvae("train", spec, "--run-dir", run, "--set", "train.epochs=1", "--tracking.gif_frames=8", "-q", cwd=tmp_path)
    assert_ok(r)
    saved = load_spec(run / "spec.yaml")
    assert saved.train.epochs == 1 and saved.tracking.gif_frames == 8  # both override forms applied
    # truth | prediction | pose, 4x, under their names
    assert iio.imread(run / "media/val_epoch001.gif").shape[:3] == (8, LABEL_HEIGHT + 4 * 32, 4 * (3 * 64 + 4))
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    trained_psnr = [row["val/psnr"] for row in history if "val/psnr" in row]

    # evaluate: the best checkpoint's validation rollout, same seed -> the PSNR training logged
    assert_ok(cvae("evaluate", run, cwd=tmp_path))
    metrics = json.loads((run / "eval/metrics.json").read_text())
    for key in ("val/psnr", "val/psnr_shifted_pose", "val/psnr_repeat_first", "val/psnr_mean_frame"):
        assert key in metrics
    assert metrics["val/psnr"] == pytest.approx(trained_psnr[-1], abs=1e-4)
    with open(run / "eval/psnr_per_frame.csv") as f:
        rows = list(csv.reader(f))
    T = saved.data.val_len
    assert rows[0] == ["frame", "psnr", "psnr_shifted_pose"]
    assert [int(row[0]) for row in rows[1:]] == list(range(1, T))  # T-1 predicted frames
    assert np.mean([float(row[1]) for row in rows[1:]]) == pytest.approx(metrics["val/psnr"], abs=1e-3)
    assert iio.imread(run / "eval/psnr_per_frame.png").ndim == 3
    assert iio.imread(run / "eval/rollout.gif").shape[:3] == (T, LABEL_HEIGHT + 4 * 32, 4 * (3 * 64 + 4))

    # predict: a GIF per test video and submission.csv (40 frames per video, 3*32*64 values a row)
    out = tmp_path / "pred"
    assert_ok(cvae("predict", run, "--data", tiny_data, "--out", out, "--device", "cpu", "-q", cwd=tmp_path))
    # ... and, the tiny dancer holding its test videos' true frames, the submission's score against them
    assert sorted(p.name for p in out.iterdir()) == ["0.gif", "1.gif", "submission.csv", "test_scores.json"]
    for k in ("0", "1"):
        assert iio.imread(out / f"{k}.gif").shape[:3] == (
            40,
            LABEL_HEIGHT + 4 * 32,
            4 * (2 * 64 + 2),
        )  # prediction | pose
    with open(out / "submission.csv") as f:
        sub = list(csv.reader(f))
    assert sub[0] == ["id", *map(str, range(3 * 32 * 64))]
    assert [row[0] for row in sub[1:]] == [str(i) for i in range(2 * 40)]  # the template's ids: rows, from 0
    values = np.array([row[1:] for row in sub[1:]], dtype=np.int64)
    assert values.shape == (80, 6144) and values.min() >= 0 and values.max() <= 255
    first = np.asarray(iio.imread(tiny_data / "test/test_img/1/frame0.png"))[..., :3]
    assert np.array_equal(values[40], first.transpose(2, 0, 1).reshape(-1))  # frame 0: the given first frame
    # the two test videos were rolled out as one batch; each is what it would be alone
    model = load_trained(run, "best").model
    for k, video in enumerate(load_test(tiny_data, (32, 64))):
        alone = rollout(model, video.first_frame[None].float() / 255, video.poses[None], saved.seed + VAL_SEED_OFFSET)
        expected = (alone[0].clamp(0, 1) * 255).round().flatten(1).numpy()
        assert np.abs(values[40 * k : 40 * (k + 1)] - expected).max() <= 1  # float rounding at a .5 boundary
    before = (out / "submission.csv").read_bytes()
    assert_bad_input(cvae("predict", run, "--data", tiny_data, "--out", out, cwd=tmp_path), "--overwrite")
    assert (out / "submission.csv").read_bytes() == before

    # resuming a finished run is a no-op
    keep = {p: (run / p).read_bytes() for p in ("history.jsonl", "checkpoints/last.pt", "checkpoints/best.pt")}
    assert_ok(cvae("train", "--resume", run, "-q", cwd=tmp_path))
    assert {p: (run / p).read_bytes() for p in keep} == keep
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_train_epoch_lines_fit_80_columns_with_every_number_whole(tmp_path, tiny_data):
    """Output to a pipe on an 80-column terminal: each epoch's line wraps between its fields (it was one
    160-character line that a terminal broke mid-word), every figure of the epoch whole."""
    spec = write_spec(tmp_path / "tiny.yaml", tiny_overrides(tiny_data, **{"data.partial": 0.5}))
    run = tmp_path / "run"
    r = cvae("train", spec, "--run-dir", run, env=subprocess_env(COLUMNS="80"), cwd=tmp_path)
    assert_ok(r)
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, r.stdout
    words = set(r.stdout.split())
    epochs = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    epochs = [row for row in epochs if "epoch/loss" in row]
    assert len(epochs) == 2
    for row in epochs:
        assert f"{row['epoch']}/2" in words
        for key in ("loss", "mse", "kl", "beta", "tfr"):
            assert fmt(row[f"epoch/{key}"], 3) in words, (key, r.stdout)
        for key in ("val/psnr", "val/psnr_repeat_first", "val/psnr_mean_frame"):
            assert f"{row[key]:.2f}" in words or f"{row[key]:.2f}," in words, (key, r.stdout)
    starts = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert len(starts) == 2 and all(lines[i + 1].startswith("  val PSNR ") for i in starts)  # continued, indented


# --------------------------------------------------------------------------- spec show --schedule


def test_spec_show_schedule_prints_the_reports_beta_and_the_labs_coins(tmp_path):
    """The report's cyclical beta (epoch mod 10) / 10 and its teacher forcing 0.5 (from epoch 5,
    -0.1 an epoch), one object per epoch, with each epoch's coin; no training, no data loading:
    torch is not even imported."""
    from cvae.training.schedules import epoch_coin

    plot = tmp_path / "schedule.png"
    spec = REPO / "experiments" / "report_tf_0.5.yaml"
    r = cli_in_process(["spec", "show", str(spec), "--schedule", "--json", "--plot", str(plot)])
    rows = json.loads(r.stdout.splitlines()[0])
    assert [row["epoch"] for row in rows] == list(range(1, 71))
    assert [row["beta"] for row in rows] == pytest.approx([(e % 10) / 10 for e in range(70)])
    tfr = [0.5] * 5 + [round(0.4 - 0.1 * k, 10) for k in range(4)] + [0.0] * 61
    assert [row["tfr"] for row in rows] == pytest.approx(tfr)
    seed = load_spec(spec).seed
    assert [row["teacher_forced"] for row in rows] == [epoch_coin(seed, e) < t for e, t in enumerate(tfr)]
    assert any(row["teacher_forced"] for row in rows[:5]) and not any(row["teacher_forced"] for row in rows[9:])
    assert "HEAVY []" in r.stdout  # nothing of torch, wandb or optuna
    image = iio.imread(plot)
    assert image.ndim == 3 and image.shape[1] > 500 and image.std() > 0
    # the table: one line per epoch, the coin's outcome spelled out
    table = cli_in_process(["spec", "show", str(spec), "--schedule"]).stdout
    assert "coin per epoch" in table
    cells = next(c for li in table.splitlines() if (c := [x.strip() for x in li.strip("│").split("│")])[0] == "6")
    assert (cells[2], cells[3]) == ("0.5", "0.4")  # epoch 6: mid-cycle, the first drop of the ratio


def test_spec_show_schedule_counts_steps_for_a_step_schedule(lab4_factory, tmp_path):
    """Teacher forcing per step: the ratio at each epoch's first and last step, from the clips of the
    dataset's file index (a hand-made 2 x 12-frame train split, clips of 4: 6 clips, 3 steps)."""
    root = lab4_factory(tmp_path / "data")
    over = ["--set", f"data.root={root}", "--set", "data.clip_len=4", "--set", "train.epochs=2"]
    over += ["--set", "teacher_forcing.unit=step", "--set", "teacher_forcing.decay_start=0"]
    over += ["--set", "teacher_forcing.decay_step=0.2", "--set", "teacher_forcing.mode=sequence"]
    r = cli_in_process(["spec", "show", str(REPO / "experiments/lab4_template.yaml"), "--schedule", "--json", *over])
    rows = json.loads(r.stdout.splitlines()[0])
    got = [(row["steps"], row["tfr"], row["tfr_last"]) for row in rows]
    assert got == [(3, 1.0, pytest.approx(0.6)), (3, pytest.approx(0.4), 0.0)]
    assert "coin" not in rows[0]  # coins per clip are tossed in the step, not before


# --------------------------------------------------------------------------- cvae doctor


@pytest.mark.slow
def test_doctor_checks_the_cpu_one_line_per_check():
    r = cvae("doctor", "--device", "cpu", timeout=600)
    assert_ok(r)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("torch ") and any(line.startswith("cpu: ") for line in lines)
    checks = [line for line in lines if line[:4] in ("ok  ", "FAIL", "skip")]
    names = [line[6:].split(":", 1)[0] for line in checks]
    assert names[0] == "data" and "train fp32" in names and names[-1] == "exact resume"
    assert all(not line.startswith("FAIL") for line in checks), r.stdout
    assert "weights equal the uninterrupted run's (off by 0)" in checks[-1]


def test_doctor_on_a_device_this_machine_lacks_is_bad_input():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_bad_input(cvae("doctor", "--device", "cuda"), "--device", "CUDA is not available")
