"""``cvae compare`` and ``cvae report``: run folders in, table and figures out.

Hand-written run folders check how runs are found, told apart and summed up; a few tiny real
runs (2 epochs each) check the figures and the per-frame PSNR of the best checkpoints.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import yaml
from helpers import REPO, nested, subprocess_env, tiny_overrides
from rich.console import Console

from cvae.errors import RunDirError, UserError
from cvae.runs.compare import compare_runs, differing_settings, load_runs, resolve_runs, table_rows
from cvae.runs.report import ablation, kl_label, make_report, psnr_run, tf_label

# --------------------------------------------------------------------------- hand-written runs

BASE = {
    "name": "r",
    "seed": 1,
    "optim.lr": 0.001,
    "data.frame_size": [32, 64],
    "kl_annealing.type": "cyclical",
    "kl_annealing.cycles": 10,
    "kl_annealing.ratio": 1.0,
    "teacher_forcing.ratio": 1.0,
    "teacher_forcing.decay_start": 10,
    "teacher_forcing.decay_step": 0.1,
    "tracking.wandb.mode": "offline",
}


def fake_run(folder: Path, psnrs: list[float], status: str = "finished", spec: dict | None = None, **settings) -> Path:
    """A run folder as the trainer leaves it: spec.yaml, history.jsonl (2 steps per epoch)."""
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec or nested(BASE | settings)))
    rows = []
    for epoch, psnr in enumerate(psnrs, start=1):  # epochs count from 1
        step = 2 * epoch
        rows.append({"step": step - 1, "epoch": epoch, "train/loss": 1.0 / epoch})
        rows.append(
            {
                "step": step,
                "epoch": epoch,
                "epoch/loss": 1.0 / epoch,
                "epoch/kl": 2.0,
                "epoch/beta": 0.5,
                "epoch/tfr": 1.0,
                "perf/epoch_s": 30.0,
                "perf/val_s": 5.0,
                "val/psnr": psnr,
            }
        )
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    best = max(range(len(psnrs)), key=psnrs.__getitem__)
    summary = {"status": status, "epochs_done": len(psnrs), "best/val_psnr": psnrs[best], "best/epoch": best + 1}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_resolve_folders_globs_and_sweeps(tmp_path):
    a = fake_run(tmp_path / "runs" / "a", [10.0])
    b = fake_run(tmp_path / "runs" / "b", [11.0])
    sweep = tmp_path / "sweep"
    trials = [fake_run(sweep / "trials" / str(n), [float(n)]) for n in (0, 2, 10)]
    (sweep / "study.db").write_text("")
    assert resolve_runs([a, b]) == [a, b]
    assert resolve_runs([str(tmp_path / "runs" / "*")]) == [a, b]
    assert resolve_runs([tmp_path / "runs"]) == [a, b]  # a folder of runs
    assert resolve_runs([sweep]) == trials  # trials/2 before trials/10
    assert resolve_runs([a, str(tmp_path / "runs" / "?")]) == [a, b]  # each run once
    with pytest.raises(RunDirError, match="matches nothing"):
        resolve_runs([tmp_path / "missing"])
    with pytest.raises(RunDirError, match="holds no run"):
        resolve_runs([sweep / "trials" / "0" / "history.jsonl"])
    labels = [r.label for r in load_runs([sweep, a])]
    assert labels == ["trials/0", "trials/2", "trials/10", "a"]  # a number gets its parent


def test_table_lists_what_differs(tmp_path):
    fake_run(tmp_path / "low", [10.0, 12.0, 11.0], **{"optim.lr": 0.01})
    fake_run(tmp_path / "high", [14.0, 13.0], status="failed", **{"kl_annealing.type": "none", "name": "other"})
    runs = load_runs([tmp_path / "low", tmp_path / "high"])
    keys = differing_settings(runs)
    assert keys == ["kl_annealing.type", "optim.lr"]  # not the name, nor the identical keys
    header, rows = table_rows(runs, keys)
    assert header[:3] == ["run", "kl_annealing.type", "optim.lr"]
    # best run first: best PSNR, its epoch (from 1), final PSNR, epochs, train time, status, data
    # labelled by the names of their W&B runs: their folders' names (not the specs' names), told apart
    assert rows[0] == ["high", "none", "0.001", "14.00", "1", "13.00", "2", "1m10s", "failed", "-"]
    assert rows[1] == ["low", "cyclical", "0.01", "12.00", "2", "11.00", "3", "1m45s", "finished", "-"]


def test_runs_are_labelled_as_their_wandb_runs_are_named(tmp_path):
    """A run's label is its W&B run's name: tracking.wandb.name where the spec sets it (a sweep's
    trials), else its folder's name; three runs of one spec told apart by their folders."""
    from cvae.run_folder import run_name

    for folder in ("lr-1e-3", "lr-3e-3", "seed-2"):
        fake_run(tmp_path / "runs" / folder, [10.0])
    fake_run(tmp_path / "sweep" / "trials" / "7", [11.0], **{"tracking.wandb.name": "quick-t7"})
    runs = load_runs([tmp_path / "runs", tmp_path / "sweep"])
    assert [r.label for r in runs] == ["lr-1e-3", "lr-3e-3", "seed-2", "quick-t7"]
    assert [run_name(r.settings.get("tracking.wandb.name"), r.path) for r in runs] == [r.label for r in runs]


def test_report_tells_runs_apart_by_their_specs(tmp_path):
    specs = {
        "kl_cyclical": {},
        "kl_monotonic": {"kl_annealing.type": "monotonic", "kl_annealing.ratio": 1 / 7},
        "kl_none": {"kl_annealing.type": "none"},
        "tf_0.5": {"teacher_forcing.ratio": 0.5, "teacher_forcing.decay_start": 5},
        "tf_0": {"teacher_forcing.ratio": 0.0, "teacher_forcing.decay_step": 0.0},
        # the report's best recipe: KL none and no teacher forcing (and other changes)
        "psnr": {"kl_annealing.type": "none", "teacher_forcing.ratio": 0.0, "optim.lr": 0.002},
        "psnr_worse": {"kl_annealing.type": "none", "teacher_forcing.ratio": 0.0, "seed": 2},
        "other": {"optim.lr": 0.01, "kl_annealing.type": "monotonic"},
    }
    for i, (name, settings) in enumerate(specs.items()):
        fake_run(tmp_path / name, [10.0 + i], **settings)
    runs = {r.label: r for r in load_runs([tmp_path / name for name in specs])}
    rs = list(runs.values())
    assert {r.label for r in ablation(rs, "teacher_forcing.")} == {"kl_cyclical", "tf_0.5", "tf_0"}
    assert {r.label for r in ablation(rs, "kl_annealing.")} == {"kl_cyclical", "kl_monotonic", "kl_none"}
    assert psnr_run(rs).label == "psnr_worse"  # the better (later, higher PSNR) of the two recipe runs
    assert psnr_run([runs["kl_none"], runs["tf_0"]]).label == "tf_0"  # no recipe run: the best run
    assert ablation([runs["kl_none"], runs["other"]], "kl_annealing.") == []
    assert tf_label(runs["tf_0.5"]) == "TF 0.5, -0.1/epoch from epoch 5"
    assert tf_label(runs["tf_0"]) == "TF 0.0"
    assert kl_label(runs["kl_cyclical"]) == "cyclical (10 cycles, ratio 1.0)"
    assert kl_label(runs["kl_monotonic"]) == "monotonic (ratio 0.143)"  # the report's 1/7, readable
    with pytest.raises(UserError, match="no report figure"):
        make_report([tmp_path / "other"], tmp_path / "out")  # one run, no checkpoint


def test_report_finds_the_report_experiments(tmp_path):
    """Runs of experiments/report_*.yaml, as `cvae report --reproduce cpu` trains them (the same
    scale for all), land in the figures they were written for."""
    from cvae.runs.reproduce import scaled_specs

    specs = scaled_specs("cpu", {})
    assert len(specs) == len(list((REPO / "experiments").glob("report_*.yaml"))) == 7
    for i, (name, spec) in enumerate(sorted(specs.items())):
        fake_run(tmp_path / "runs" / name, [10.0 + i, 11.0 + i], spec=spec)
    runs = load_runs([str(tmp_path / "runs" / "report_*")])
    # labelled by their W&B names; report_kl_cyclical's teacher forcing (0, no decay) is report_tf_0's
    tf = ablation(runs, "teacher_forcing.")
    assert sorted(r.settings["teacher_forcing.ratio"] for r in tf) == [0.0, 0.1, 0.5]  # one run per setting
    assert {r.label for r in tf} >= {"report_tf_0.1-cpu", "report_tf_0.5-cpu"}
    kl = sorted(ablation(runs, "kl_annealing."), key=lambda r: r.label)
    assert [r.label for r in kl] == ["report_kl_cyclical-cpu", "report_kl_monotonic-cpu", "report_kl_none-cpu"]
    assert psnr_run(runs).label == "report_psnr-cpu"


# --------------------------------------------------------------------------- tiny real runs


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, trained_run, tiny_data) -> dict[str, Path]:
    """The shared 2-epoch tiny run (KL monotonic, TF 0.5 per frame) and variants of it."""
    from cvae.spec import load_spec
    from cvae.training.loop import train

    root = tmp_path_factory.mktemp("compare")
    runs = {"mono": root / "mono"}
    shutil.copytree(trained_run, runs["mono"])  # compare writes eval/ into a run: not the shared one
    variants = {
        "cyclical": {"kl_annealing.type": "cyclical", "kl_annealing.cycles": 2},
        "tf0": {"teacher_forcing.ratio": 0.0, "teacher_forcing.decay_step": 0.0},
        "psnr": {"kl_annealing.type": "none", "teacher_forcing.ratio": 0.0, "train.grad_clip": 0.75},
    }
    for name, extra in variants.items():
        runs[name] = root / name
        train(load_spec(None, tiny_overrides(tiny_data, **extra)), runs[name])
    return runs


@pytest.mark.slow
def test_compare_two_tiny_runs(tmp_path, tiny_runs):
    out = tmp_path / "cmp"
    env = subprocess_env()
    done = subprocess.run(
        [sys.executable, "-m", "cvae.cli", "compare", tiny_runs["mono"], tiny_runs["cyclical"], "--out", out],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "kl_annealing." in done.stdout and "cycles" in done.stdout and "cyclical" in done.stdout

    result = compare_runs([tiny_runs["mono"], tiny_runs["cyclical"]], out)  # eval/ is there now: read back
    assert result.keys == ["kl_annealing.cycles", "kl_annealing.type"]
    text = io.StringIO()
    Console(file=text, width=250).print(result.table())
    assert "monotonic" in text.getvalue() and "cyclical" in text.getvalue()
    with open(out / "compare.csv", newline="") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert len(rows) == 2
    for run in result.runs:
        row = rows[run.label]
        summary = json.loads((run.path / "summary.json").read_text())
        assert row["best val PSNR"] == f"{summary['best/val_psnr']:.2f}"
        assert row["epochs"] == "2" and row["status"] == "finished"
        # the per-frame curve is the best checkpoint's
        metrics = json.loads((run.path / "eval" / "metrics.json").read_text())
        assert metrics["epoch"] == summary["best/epoch"]
        assert metrics["val/psnr"] == pytest.approx(summary["best/val_psnr"], abs=1e-4)
    for name in ("curves.png", "psnr_per_frame.png"):
        image = iio.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0


@pytest.mark.slow
def test_report_from_tiny_runs(tmp_path, tiny_runs, monkeypatch):
    import cvae.tracking.media

    drawn = {}  # figure name -> the series each run's panels got
    real = cvae.tracking.media.plot_panels

    def spy(path, runs, panels, **kw):
        drawn[path.name] = (runs, [key for key, _, _ in panels])
        return real(path, runs, panels, **kw)

    monkeypatch.setattr(cvae.tracking.media, "plot_panels", spy)
    out = tmp_path / "report"
    report = make_report([str(tiny_runs["mono"].parent / "*")], out)
    assert report.skipped == []
    figures = {f.what: f for f in report.figures}
    assert {r.path.name for _, r in figures["teacher forcing"].runs} == {"mono", "tf0"}
    assert [r.path.name for _, r in figures["KL annealing"].runs] == ["mono", "cyclical"]  # monotonic first
    assert [r.path.name for _, r in figures["per-frame PSNR"].runs] == ["psnr"]
    for name in ("teacher_forcing.png", "kl_annealing.png", "psnr_per_frame.png"):
        image = iio.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 300 and image.std() > 0
    assert (tiny_runs["psnr"] / "eval" / "psnr_per_frame.csv").is_file()
    # the training and the validation curves of every setting, as the report compares them
    for name, schedule in (("teacher_forcing.png", "epoch/tfr"), ("kl_annealing.png", "epoch/beta")):
        runs, keys = drawn[name]
        assert {"epoch/loss", "val/psnr", "val/mse", schedule} <= set(keys)
        for series in runs.values():
            for key in ("epoch/loss", "val/psnr", "val/mse", schedule):
                xs, ys = series[key]
                assert list(xs) == [1, 2] and all(math.isfinite(y) for y in ys), (name, key)
