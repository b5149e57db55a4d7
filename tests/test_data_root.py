"""Never train on data the user did not ask for, and say which data a run used.

A missing data.root is generated only at a published spec's own root or where data.preset is set
together with it; any other missing root, or a folder that is not a Lab4 dataset, is bad input
(exit 2, the path and key named, the likely fix, nothing created). Every run records its data: the
synthetic dancer (preset, seed) or a user's folder, the frames used, the splits' fingerprints.
Through the CLI as a subprocess, as a user meets it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from helpers import (
    EXPERIMENTS,
    TEMPLATE,
    assert_bad_input,
    assert_ok,
    cvae,
    make_lab4,
    snapshot,
    tiny_overrides,
    write_spec,
)

from cvae.data.root import check_request, synthesis_requested
from cvae.errors import DataError
from cvae.spec import load_spec_origins

QUICKSTART = EXPERIMENTS / "quickstart.yaml"


def refused_fast(tmp_path: Path, *args, needles: tuple[str, ...], cwd: Path | None = None) -> str:
    """The command exits 2 within seconds with one message holding every needle, and writes nothing
    under tmp_path (no data generated, no run folder, no sweep folder)."""
    cwd = cwd or tmp_path
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    r = cvae(*args, cwd=cwd, timeout=60)
    assert_bad_input(r, *needles)
    assert time.monotonic() - t0 < 30
    assert snapshot(tmp_path) == before
    return r.stderr


def test_a_mistyped_root_on_the_template_is_refused_with_the_near_miss(tmp_path):
    real = make_lab4(tmp_path / "LAB4_Dataset")
    typo = tmp_path / "LAB4_Datset"
    needles = (str(typo), "data.root", "folder not found", f"did you mean {real}", "cvae data synth", "--preset lab4")
    err = refused_fast(tmp_path, "train", TEMPLATE, "--set", f"data.root={typo}", needles=needles)
    assert "--set" in err  # where the root came from


def test_a_mistyped_root_on_the_quick_start_is_refused(tmp_path):
    make_lab4(tmp_path / "mydata")
    typo = tmp_path / "mydta"
    refused_fast(
        tmp_path, "train", QUICKSTART, "--set", f"data.root={typo}",
        needles=(str(typo), "data.root", f"did you mean {tmp_path / 'mydata'}", "--preset small"),
    )  # fmt: skip


def test_a_sweep_whose_base_root_is_missing_fails_before_the_first_trial(tmp_path):
    sweep = tmp_path / "typo.yaml"
    sweep.write_text(
        f"base: {QUICKSTART}\noverrides: {{data.root: {tmp_path / 'nowhere'}}}\n"
        "search:\n  optim.lr: {type: float, low: 0.0005, high: 0.002}\nbudget: {n_trials: 2}\n"
    )
    refused_fast(
        tmp_path, "sweep", "run", sweep, "--dir", tmp_path / "sweep-out",
        needles=(str(tmp_path / "nowhere"), "data.root", "folder not found", "overrides"),
    )  # fmt: skip
    assert not (tmp_path / "sweep-out").exists()


def test_a_folder_above_the_dataset_names_the_dataset(tmp_path):
    real = make_lab4(tmp_path / "downloads" / "LAB4_Dataset")
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tmp_path / "downloads", **{"data.frame_size": [8, 12]}))
    refused_fast(
        tmp_path, "train", spec, "--run-dir", tmp_path / "run",
        needles=("not a Lab4 dataset", "train/train_img", "found LAB4_Dataset/", f"did you mean {real}"),
    )  # fmt: skip


def test_a_split_folder_given_as_the_root_names_the_dataset(tmp_path):
    real = make_lab4(tmp_path / "LAB4_Dataset")
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(real / "train", **{"data.frame_size": [8, 12]}))
    refused_fast(tmp_path, "train", spec, needles=("not a Lab4 dataset", f"did you mean {real}"))


def test_a_folder_without_pngs_says_what_it_found(tmp_path):
    empty = tmp_path / "notes"
    empty.mkdir()
    (empty / "readme.txt").write_text("hello")
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(empty))
    refused_fast(tmp_path, "train", spec, needles=(str(empty), "not a Lab4 dataset", "found readme.txt"))


def test_what_counts_as_asking_for_synthetic_data(tmp_path):
    """The published specs' own roots; a preset set with the root in one file or one override set;
    never a root from one place and the preset from another."""

    def allowed(path, layers=()):
        spec, origins = load_spec_origins(path, layers=layers)
        return synthesis_requested(spec, origins)

    assert allowed(TEMPLATE) and allowed(QUICKSTART)  # data/lab4, data/small: README command 1
    assert not allowed(TEMPLATE, [("--set", {"data.root": "/x/LAB4_Datset"})])
    assert allowed(TEMPLATE, [("--set", {"data.root": "/x/new", "data.preset": "tiny"})])
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {TEMPLATE}\ndata:\n  root: /x/real\n")
    assert not allowed(child)  # root here, preset in the file it extends
    both = tmp_path / "both.yaml"
    both.write_text(f"extends: {TEMPLATE}\ndata:\n  root: /x/mine\n  preset: small\n")
    assert allowed(both)
    spec, origins = load_spec_origins(child)
    with pytest.raises(DataError, match="/x/real.*set in .*child.yaml"):
        check_request(spec, origins)


def test_an_explicit_preset_with_a_new_root_generates_there_and_the_run_records_it(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tmp_path / "unused", **{"train.epochs": 1}))
    new = tmp_path / "fresh" / "dancer"
    r = cvae(
        "train", spec, "--set", f"data.root={new}", "--set", "data.preset=tiny", "--set", "data.synth_seed=3",
        "--run-dir", tmp_path / "run", cwd=tmp_path,
    )  # fmt: skip
    assert_ok(r)
    assert json.loads((new / "synth.json").read_text())["preset"] == "tiny"
    line = next(li for li in r.stdout.splitlines() if li.startswith("data: "))
    assert "synthetic dancer (preset tiny, seed 3" in line and "96 train / 12 val frames" in line
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    data = summary["data_identity"]
    assert (data["source"], data["preset"], data["seed"]) == ("synthetic", "tiny", 3)
    assert (data["train_frames"], data["val_frames"]) == (96, 12)  # 4 x 24 train frames, val cut to 12
    assert len(data["train_fingerprint"]) == 8 and data["root"] == str(new.resolve())
    assert (tmp_path / "run" / "spec.yaml").read_text().startswith("# data: synthetic dancer (preset tiny, seed 3")
    assert yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())["data"]["root"] == str(new)


def test_a_users_folder_is_recorded_as_such_and_compare_warns_about_different_data(tmp_path, tiny_data):
    """Two runs on copies of one dataset agree; a third on another dataset is flagged by compare, in
    its table and as a warning naming the split."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    (copy / "synth.json").unlink()  # now it is a user's folder of the same frames
    other = make_lab4(tmp_path / "other", n_frames=24, size=(32, 64))
    for name, root in (("a", tiny_data), ("b", copy), ("c", other)):
        spec = write_spec(tmp_path / f"{name}.yaml", tiny_overrides(root, **{"train.epochs": 1, "name": name}))
        assert_ok(cvae("train", spec, "--run-dir", tmp_path / "runs" / name, cwd=tmp_path))
    ids = {n: json.loads((tmp_path / "runs" / n / "summary.json").read_text())["data_identity"] for n in "abc"}
    assert ids["a"]["source"] == "synthetic" and ids["b"]["source"] == "folder"
    assert ids["a"]["train_fingerprint"] == ids["b"]["train_fingerprint"]  # a copy: the same data
    assert ids["c"]["train_fingerprint"] != ids["a"]["train_fingerprint"]
    same = cvae("compare", tmp_path / "runs" / "a", tmp_path / "runs" / "b", "--out", tmp_path / "cmp1", cwd=tmp_path)
    assert_ok(same)
    assert "warning" not in same.stdout
    mixed = cvae("compare", tmp_path / "runs", "--out", tmp_path / "cmp2", cwd=tmp_path)
    assert_ok(mixed)
    warnings = [li for li in mixed.stdout.splitlines() if li.startswith("warning:")]
    assert any("trained on different data" in w and "c" in w for w in warnings), mixed.stdout
    assert any("validated on different data" in w for w in warnings), mixed.stdout
    rows = (tmp_path / "cmp2" / "compare.csv").read_text()
    assert ids["c"]["train_fingerprint"] in rows and "synthetic tiny/0" in rows


# --------------------------------------------------------------------------- one scan per split


@pytest.fixture
def scan_counter(monkeypatch):
    """Counts every file stat'ed while scanning a split and every fingerprint pass over a scan."""
    from functools import cached_property

    from cvae.data import layout

    counts = {"stats": 0, "fingerprints": []}
    real_stat, real_digests = layout._stat, layout.SplitFiles._digests.func

    def stat(path):
        counts["stats"] += 1
        return real_stat(path)

    def digests(self):
        counts["fingerprints"].append(self.split)
        return real_digests(self)

    prop = cached_property(digests)
    prop.__set_name__(layout.SplitFiles, "_digests")
    monkeypatch.setattr(layout, "_stat", stat)
    monkeypatch.setattr(layout.SplitFiles, "_digests", prop)
    return counts


def test_each_split_is_scanned_and_fingerprinted_once_per_run(tmp_path, tiny_data, scan_counter):
    """A new run, its resume and an evaluation each stat every file of both splits once and
    fingerprint each split once (the data identity and the frame cache's key come from that pass)."""
    from cvae.launch import launch
    from cvae.runs.evaluate import evaluate_run
    from cvae.spec import load_spec

    files = 2 * (4 * 24 + 40)  # frames and poses: train 4 videos x 24, val 1 x 40 (tiny preset)
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 1}))
    run = tmp_path / "run"
    launch(spec, run)
    assert scan_counter["stats"] == files and sorted(scan_counter["fingerprints"]) == ["train", "val"]

    scan_counter["stats"], scan_counter["fingerprints"] = 0, []
    launch(load_spec(run / "spec.yaml"), run, resume=True)  # checked against the recorded data, then loaded
    assert scan_counter["stats"] == files and sorted(scan_counter["fingerprints"]) == ["train", "val"]

    scan_counter["stats"], scan_counter["fingerprints"] = 0, []
    evaluate_run(run, "best", None)
    assert scan_counter["stats"] == files and sorted(scan_counter["fingerprints"]) == ["train", "val"]
