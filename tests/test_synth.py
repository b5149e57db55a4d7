"""Tests for the synthetic dancer dataset (cvae.synth), all on the tiny preset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from cvae.data.synth import PRESETS, Appearance, dance, render_frame, render_pose, synthesize
from cvae.errors import DataError, SpecError

TINY = PRESETS["tiny"]


def frame_names(folder: Path) -> list[str]:
    return sorted((p.name for p in folder.iterdir()), key=lambda n: int(re.fullmatch(r"frame(\d+)\.png", n)[1]))


def read(path: Path) -> np.ndarray:
    return iio.imread(path)


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synthesize(out, preset="tiny", seed=0)
    return out


def test_layout_and_counts(tiny):
    for split, n_videos, n_frames in (("train", TINY.train_videos, TINY.train_frames),
                                      ("val", TINY.val_videos, TINY.val_frames)):  # fmt: skip
        imgs, labels = tiny / split / f"{split}_img", tiny / split / f"{split}_label"
        videos = [f"video{v:03d}" for v in range(n_videos)]
        assert sorted(p.name for p in imgs.iterdir()) == videos
        assert sorted(p.name for p in labels.iterdir()) == videos
        for v in videos:
            names = frame_names(imgs / v)
            assert names == [f"frame{i}.png" for i in range(n_frames)]
            assert frame_names(labels / v) == names  # every frame has the pose of the same name
    tests = [str(k) for k in range(TINY.test_videos)]
    assert sorted(p.name for p in (tiny / "test/test_img").iterdir()) == tests
    assert sorted(p.name for p in (tiny / "test/test_label").iterdir()) == tests
    for k in tests:
        assert frame_names(tiny / "test/test_img" / k) == ["frame0.png"]
        assert frame_names(tiny / "test/test_label" / k) == [f"frame{i}.png" for i in range(TINY.test_frames)]
    # the test videos' true frames: held out beside the lab's folders, not in them
    assert sorted(p.name for p in tiny.iterdir()) == ["synth.json", "test", "test_truth", "train", "val"]
    assert sorted(p.name for p in (tiny / "test_truth").iterdir()) == tests
    for k in tests:
        assert frame_names(tiny / "test_truth" / k) == [f"frame{i}.png" for i in range(TINY.test_frames)]
    assert not [p for p in tiny.parent.iterdir() if p.name != "data"]  # no temp folders left behind


def test_images_decode_and_pose_looks_like_openpose(tiny):
    for p in [*tiny.rglob("frame0.png"), tiny / "val/val_img/video000/frame39.png"]:
        a = read(p)
        assert a.shape == (TINY.height, TINY.width, 3) and a.dtype == np.uint8
    pose = read(tiny / "train/train_label/video000/frame5.png").astype(int)
    lit = pose.max(-1) > 40
    assert 0.02 < lit.mean() < 0.35  # mostly black ...
    colors = pose[lit]
    assert (colors.max(-1) - colors.min(-1)).mean() > 60  # ... with saturated, colored limbs
    assert len({tuple(c // 64) for c in colors}) >= 5  # several limb colors
    frame = read(tiny / "train/train_img/video000/frame5.png")
    assert frame.reshape(-1, 3).std(0).mean() > 10 and (frame.max(-1) > 40).mean() > 0.9  # a lit scene


def test_synth_json(tiny):
    meta = json.loads((tiny / "synth.json").read_text())
    assert meta["preset"] == "tiny" and meta["seed"] == 0 and meta["appearance"] == "same"
    assert meta["layout"] == "videos" and meta["test_truth"] == "test_truth"
    assert (meta["height"], meta["width"]) == (32, 64)
    assert meta["train_videos"] == 4 and meta["train_frames"] == 24
    assert (meta["val_videos"], meta["val_frames"], meta["test_videos"], meta["test_frames"]) == (
        1,
        40,
        2,
        40,
    )
    assert meta["images"] == len(list(tiny.rglob("*.png")))


def test_deterministic(tiny, tmp_path):
    again = synthesize(tmp_path / "a", preset="tiny", seed=0)
    assert again == json.loads((tiny / "synth.json").read_text())
    assert all_bytes(tmp_path / "a") == all_bytes(tiny)
    synthesize(tmp_path / "b", preset="tiny", seed=1)
    a, b = all_bytes(tiny), all_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a if k.endswith(".png")) > 0.9 * len(a)


def test_videos_independent_of_counts(tiny, tmp_path):
    synthesize(tmp_path / "o", preset="tiny", seed=0, train_videos=2, train_frames=10)
    for rel in ("train/train_img/video001/frame9.png", "val/val_img/video000/frame30.png",
                "test/test_label/1/frame20.png"):  # fmt: skip
        assert (tmp_path / "o" / rel).read_bytes() == (tiny / rel).read_bytes()
    assert not (tmp_path / "o/train/train_img/video002").exists()


def corner(path: Path) -> np.ndarray:
    return read(path)[:3, :3].astype(float)  # top-left wall corner: never reached by the dancer


def test_appearance_same_and_varied(tiny, tmp_path):
    same = [corner(tiny / f"train/train_img/video{v:03d}/frame0.png") for v in range(4)]
    assert all(np.array_equal(same[0], c) for c in same)
    synthesize(tmp_path / "v", preset="tiny", seed=0, appearance="varied")
    varied = [corner(tmp_path / f"v/train/train_img/video{v:03d}/frame0.png") for v in range(4)]
    diffs = [np.abs(varied[i] - varied[j]).mean() for i in range(4) for j in range(i + 1, 4)]
    assert min(diffs) > 3
    assert json.loads((tmp_path / "v/synth.json").read_text())["appearance"] == "varied"
    # "varied" keeps the dance: the poses do not depend on the appearance.
    pose = "train/train_label/video002/frame7.png"
    assert (tmp_path / "v" / pose).read_bytes() == (tiny / pose).read_bytes()


def test_dancer_moves(tiny):
    video = tiny / "val/val_img/video000"
    frames = [read(video / f"frame{i}.png").astype(float) for i in range(TINY.val_frames)]
    consecutive = np.mean([np.abs(frames[i + 1] - frames[i]).mean() for i in range(len(frames) - 1)])
    far = np.mean([np.abs(frames[i + 20] - frames[i]).mean() for i in range(len(frames) - 20)])
    assert np.abs(frames[-1] - frames[0]).mean() > 1.0
    assert 0 < consecutive < far
    poses = [read(tiny / "val/val_label/video000" / f"frame{i}.png") for i in (0, 39)]
    assert not np.array_equal(*poses)


def test_dance_and_renderers():
    kp = dance(630, np.random.default_rng(0), speed=1.0)
    assert kp.shape == (630, 18, 2) and kp.min() >= 0 and kp.max() <= 1
    step = np.abs(np.diff(kp, axis=0)).max(axis=(1, 2))
    assert np.median(step) < 0.03  # smooth: a joint moves a few pixels per frame
    assert np.ptp(kp[:, 1, 0]) > 0.2  # but the dancer travels across the floor
    height = kp[:, :, 1].max(1) - kp[:, :, 1].min(1)
    assert 0.55 < np.median(height) < 0.9  # and fills most of the frame height
    np.testing.assert_array_equal(dance(50, np.random.default_rng(0)), kp[:50])  # prefix-stable
    np.testing.assert_allclose(dance(100, np.random.default_rng(0), speed=2.0)[50], kp[100], atol=1e-12)
    look = Appearance.random(np.random.default_rng(1))
    f, p = render_frame(kp[0], look, 48, 80), render_pose(kp[0], 48, 80)
    assert f.shape == p.shape == (48, 80, 3) and f.dtype == p.dtype == np.uint8
    assert np.array_equal(render_frame(kp[0], look, 48, 80), f)


def test_progress_and_atomic_failure(tmp_path):
    calls = []
    meta = synthesize(tmp_path / "p", preset="tiny", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (meta["images"], meta["images"])
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    def boom(done, total):
        if done > 50:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        synthesize(tmp_path / "crash", preset="tiny", progress=boom)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # neither OUT nor a temp folder


def test_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    synthesize(out, preset="tiny", train_videos=1)  # an existing empty folder is fine
    with pytest.raises(DataError, match=str(out)):
        synthesize(out, preset="tiny")
    (out / "stale.txt").write_text("x")
    synthesize(out, preset="tiny", seed=2, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "synth.json").read_text())["seed"] == 2
    assert len(list((out / "train/train_img").iterdir())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_errors(tmp_path):
    with pytest.raises(SpecError, match=r"'huge'.*tiny.*small.*lab4"):
        synthesize(tmp_path / "x", preset="huge")
    with pytest.raises(SpecError, match=r"'weird'.*same.*varied"):
        synthesize(tmp_path / "x", preset="tiny", appearance="weird")
    with pytest.raises(SpecError, match=r"'n_videos'.*train_videos.*speed"):
        synthesize(tmp_path / "x", preset="tiny", n_videos=3)
    with pytest.raises(SpecError, match="train_frames"):
        synthesize(tmp_path / "x", preset="tiny", train_frames=0)
    with pytest.raises(SpecError, match="speed"):
        synthesize(tmp_path / "x", preset="tiny", speed=-1.0)
    with pytest.raises(SpecError, match=r"layout 'subfolders'.*videos.*flat"):
        synthesize(tmp_path / "x", preset="tiny", layout="subfolders")
    assert not list(tmp_path.iterdir())
