"""Held-out truth: the synthetic dancer's test videos with their real frames, kept outside the Lab4 layout,
and what scores against them: a run's end (summary.json, W&B), `cvae evaluate --split test`, `cvae
predict`; the lab's own data, which has no test truth, says so."""

from __future__ import annotations

import csv
import json
import re
from glob import glob
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_bad_input, assert_ok, cvae, make_lab4, snapshot, solid, tiny_overrides, write_png

from cvae.data.frames import load_split, load_test, load_truth
from cvae.data.layout import scan_split, scan_test, scan_truth, truth_folder
from cvae.data.synth import PRESETS
from cvae.errors import DataError
from cvae.spec import load_spec
from cvae.training.loop import train
from cvae.training.rollout import psnr, reference_scores

TINY = PRESETS["tiny"]


def template_frames(root: Path, split: str) -> list[str]:
    """What the template's Dataset_Dance finds: ``glob(ROOT/<split>/<split>_img/*.png)`` sorted by the
    number in the name."""
    return sorted(glob(str(root / split / f"{split}_img" / "*.png")), key=number)


def number(path: str | Path) -> int:
    """The number in a file's name, as the template's ``get_key`` reads it (``frame12.png`` -> 12)."""
    return int(re.sub(r"\D", "", Path(path).name))


# --------------------------------------------------------------------------- the truth on disk


def test_the_test_truth_is_written_outside_the_labs_layout(tiny_data):
    meta = json.loads((tiny_data / "synth.json").read_text())
    folder = truth_folder(tiny_data)
    assert folder == tiny_data / meta["test_truth"] and folder.parent == tiny_data  # beside train/val/test, not in
    assert not any("truth" in str(p) for p in tiny_data.joinpath("test").rglob("*"))
    for name, first, poses in scan_test(tiny_data):  # the lab's test split: still a first frame and the poses
        assert [p.name for p in first.parent.iterdir()] == ["frame0.png"] and len(poses) == TINY.test_frames
        truth = sorted((folder / name).iterdir(), key=number)
        assert [p.name for p in truth] == [p.name for p in poses]  # one true frame per pose, the same names
        assert truth[0].read_bytes() == first.read_bytes()  # frame 0 is the given frame
    # nothing that reads the lab's layout sees it: our scan, the template's glob
    seen = {p for split in ("train", "val") for pair in scan_split(tiny_data, split).pairs for p in pair}
    assert not [p for p in seen if folder in p.parents] and not template_frames(tiny_data, "test")


def test_the_true_frames_are_the_dancer_the_poses_draw(tiny_data):
    """The truth moves with its poses as the val video does: each frame differs from the first, and frames
    and poses load side by side as a val split does."""
    size = (32, 64)
    videos = load_truth(tiny_data, size)
    assert videos.names == [t.name for t in load_test(tiny_data, size)] and videos.lengths == [TINY.test_frames] * 2
    for v, test in enumerate(load_test(tiny_data, size)):
        frames, poses = videos.video(v)
        assert torch.equal(poses, test.poses) and torch.equal(frames[0], test.first_frame)
        assert (frames[1:].float() - frames[:1].float()).abs().mean((1, 2, 3)).min() > 0  # the dancer moves


def test_truth_that_does_not_match_the_test_split_is_named(tmp_path, tiny_data):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(tiny_data, root, ignore=shutil.ignore_patterns(".cvae-cache"))
    (root / "test_truth" / "1" / "frame39.png").unlink()
    with pytest.raises(DataError, match=r"test_truth/1: 39 true frames for the 40 poses"):
        scan_truth(root)
    with pytest.raises(DataError, match=r"39 true frames"):  # a run that would score it stops before it trains
        train(load_spec(None, tiny_overrides(root, **{"tracking.test_at_end": True})), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    shutil.rmtree(root / "test_truth")
    with pytest.raises(DataError, match="missing, though .*synth.json names it"):
        truth_folder(root)
    (root / "synth.json").unlink()
    assert truth_folder(root) is None  # the lab's data: no manifest, no truth


# --------------------------------------------------------------------------- scored at a run's end


def test_a_run_scores_its_best_checkpoint_on_the_held_out_videos_when_it_ends(trained_run, tiny_spec, tiny_data):
    """summary.json's test/* is the best checkpoint's score over every predicted frame of every test video
    (pooled, as the leaderboard), beside the trivial predictors on the same videos."""
    s = json.loads((trained_run / "summary.json").read_text())
    assert s["test/epoch"] == s["best/epoch"] and s["test/videos"] == 2
    assert s["test/frames"] == 2 * (TINY.test_frames - 1)
    truth = load_truth(tiny_data, tiny_spec.data.frame_size)
    refs = [reference_scores(truth.video(v)[0].float() / 255) for v in range(2)]
    assert s["test/psnr_repeat_first"] == pytest.approx(np.mean([r[0] for r in refs]), abs=1e-5)
    assert s["test/psnr_mean_frame"] == pytest.approx(np.mean([r[1] for r in refs]), abs=1e-5)
    assert s["perf/test_s"] > 0 and np.isfinite(s["test/psnr"]) and np.isfinite(s["test/psnr_shifted_pose"])
    history = (trained_run / "history.jsonl").read_text()
    assert "test/" not in history  # nothing logged along the way: nothing chooses on it


def test_no_test_truth_no_test_scores_and_the_switch_turns_it_off(tmp_path, tiny_data, workspace):
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 1, "tracking.test_at_end": False}))
    assert not [k for k in train(spec, tmp_path / "off") if k.startswith("test/")]
    spec = load_spec(workspace / "spec.yaml", {"train.epochs": 1, "tracking.test_at_end": True})  # the lab's: no truth
    summary = train(spec, tmp_path / "lab")
    assert "best/val_psnr" in summary and not [k for k in summary if k.startswith("test/")]


# --------------------------------------------------------------------------- cvae evaluate / predict


def test_evaluate_split_test_scores_every_test_video_as_the_leaderboard(trained_run, tmp_path):
    out = tmp_path / "eval-test"
    r = cvae("evaluate", trained_run, "--split", "test", "--out", out)
    assert_ok(r)
    assert "held-out test videos (2 videos" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    summary = json.loads((trained_run / "summary.json").read_text())
    assert m["split"] == "test" and m["test/psnr"] == pytest.approx(summary["test/psnr"], abs=1e-4)  # same rollout
    with open(out / "psnr_per_frame.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["video"] for r in rows} == {"0", "1"} and len(rows) == 2 * (TINY.test_frames - 1)
    assert np.mean([float(r["psnr"]) for r in rows]) == pytest.approx(m["test/psnr"], abs=1e-3)  # every frame
    assert np.mean([float(r["psnr_shifted_pose"]) for r in rows]) == pytest.approx(
        m["test/psnr_shifted_pose"], abs=1e-3
    )
    assert {"rollout.gif", "psnr_per_frame.png"} <= {p.name for p in out.iterdir()}


def test_predict_scores_its_submission_where_the_truth_is(trained_run, tiny_data, tmp_path):
    r = cvae("predict", trained_run, "--data", tiny_data, "--out", tmp_path / "pred")
    assert_ok(r)
    scores = json.loads((tmp_path / "pred" / "test_scores.json").read_text())
    assert "holds the test videos' true frames: the submission scores" in r.stdout
    # the submission's own 8-bit frames against the truth, by hand
    rows = np.loadtxt(tmp_path / "pred" / "submission.csv", delimiter=",", skiprows=1)[:, 1:]
    truth = load_truth(tiny_data, (32, 64))
    frames = torch.from_numpy(rows).float().reshape(-1, 3, 32, 64) / 255
    per_frame = [psnr(frames[s + 1 : s + n], truth.frames[s + 1 : s + n].float() / 255)
                 for s, n in zip(truth.starts, truth.lengths, strict=True)]  # fmt: skip
    assert scores["test/psnr"] == pytest.approx(torch.cat(per_frame).mean().item(), abs=1e-4)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert scores["test/psnr"] == pytest.approx(summary["test/psnr"], abs=0.05)  # the same rollout, in 8 bits


@pytest.mark.slow
def test_the_labs_data_has_no_test_truth_evaluate_says_so(trained_run, tmp_path):
    """A lab-layout folder (first frames and poses only): evaluate's validation says "no test truth here" and
    exits 0; --split test exits 2 saying why, and writes nothing; predict writes the submission and no score."""
    lab = make_lab4(tmp_path / "lab4")
    ckpt = trained_run / "checkpoints" / "best.pt"
    r = cvae("evaluate", ckpt, "--set", f"data.root={lab}", "--out", tmp_path / "val")
    assert_ok(r)
    assert "no test truth here" in " ".join(r.stdout.split())
    before = snapshot(tmp_path)
    r = cvae("evaluate", ckpt, "--set", f"data.root={lab}", "--split", "test", "--out", tmp_path / "test")
    assert_bad_input(r, "--split test", "no test truth here", str(lab), "Kaggle")
    assert snapshot(tmp_path) == before
    r = cvae("predict", ckpt, "--set", f"data.root={lab}", "--data", lab, "--out", tmp_path / "pred")
    assert_ok(r)
    assert not (tmp_path / "pred" / "test_scores.json").exists() and "true frames" not in r.stdout
    # A lab user who holds frames back names them in synth.json: then they are scored the same way.
    for i, pose in enumerate(sorted((lab / "test/test_label/0").iterdir(), key=number)):
        write_png(lab / "held_out/0" / pose.name, solid(10 * i))  # frame 0 is the given one (black), as the test's
    (lab / "synth.json").write_text(json.dumps({"test_truth": "held_out"}))
    r = cvae("evaluate", ckpt, "--set", f"data.root={lab}", "--split", "test", "--out", tmp_path / "held")
    assert_ok(r)
    held = json.loads((tmp_path / "held" / "metrics.json").read_text())
    assert held["test/videos"] == 1 and held["test/frames"] == 11


@pytest.mark.slow
def test_the_z_seed_of_a_rollout_is_a_choice_and_its_default_is_trainings(run_copy, tiny_spec):
    base, same = run_copy / "eval", run_copy / "same"
    assert_ok(cvae("evaluate", run_copy))
    assert_ok(cvae("evaluate", run_copy, "--out", same, "--z-seed", str(tiny_spec.seed + 7919)))
    before = (base / "metrics.json").read_bytes()
    assert_ok(cvae("evaluate", run_copy, "--z-seed", "3"))  # other draws: beside RUN/eval, never over it
    other = run_copy / "eval-z3"
    a, b, c = (json.loads((d / "metrics.json").read_text()) for d in (base, same, other))
    assert a["z_seed"] == b["z_seed"] == tiny_spec.seed + 7919 and c["z_seed"] == 3
    assert a["val/psnr"] == b["val/psnr"] and c["val/psnr"] != a["val/psnr"]
    assert (base / "psnr_per_frame.csv").read_bytes() == (same / "psnr_per_frame.csv").read_bytes()
    assert (base / "metrics.json").read_bytes() == before


# --------------------------------------------------------------------------- the lab's own layout


def test_the_flat_layout_reads_with_a_loader_written_as_the_templates(tmp_path, tiny_data):
    """`cvae data synth --layout flat`: the template's glob finds every frame, in order, each with its pose of
    the same name beside it; the frames are the video layout's, video after video, so a clip of the
    template's loader can straddle two dances. The default layout's subfolders are invisible to it."""
    flat = tmp_path / "flat"
    r = cvae("data", "synth", flat, "--preset", "tiny", "--layout", "flat", "--quiet")
    assert_ok(r)
    assert json.loads((flat / "synth.json").read_text())["layout"] == "flat"
    assert template_frames(tiny_data, "train") == []  # the default: video subfolders, which the template misses
    for split, n_videos, n_frames in (("train", TINY.train_videos, TINY.train_frames),
                                      ("val", TINY.val_videos, TINY.val_frames)):  # fmt: skip
        found = template_frames(flat, split)
        assert [Path(p).name for p in found] == [f"frame{i}.png" for i in range(n_videos * n_frames)]
        labels = [p.replace(f"{split}_img", f"{split}_label") for p in found]  # the template's label path
        assert all(Path(p).is_file() for p in labels)
        videos = [f for v in scan_split(tiny_data, split).videos for f in v.pairs]  # the default's, in order
        for path, label, (frame, pose) in zip(found, labels, videos, strict=True):
            assert Path(path).read_bytes() == frame.read_bytes() and Path(label).read_bytes() == pose.read_bytes()
    # The template's Dataset_Dance: clip k is frames k*video_len ... of the flat list.
    video_len = 16
    clips = [template_frames(flat, "train")[k * video_len : (k + 1) * video_len] for k in range(96 // video_len)]
    crossing = [c for c in clips if number(c[0]) // 24 != number(c[-1]) // 24]  # videos of 24 frames
    assert [number(c[0]) for c in crossing] == [16, 64]  # frames 16-31 and 64-79 join two dances
    # ours reads the flat split as the lab's: one sequence; the test split and its truth are as in the default
    assert scan_split(flat, "train").lengths == [96]
    assert torch.equal(load_truth(flat, (32, 64)).frames, load_truth(tiny_data, (32, 64)).frames)
    assert load_split(scan_split(flat, "val"), (32, 64)).lengths == [TINY.val_frames]
