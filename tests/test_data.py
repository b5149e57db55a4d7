"""cvae.data: the Lab4 layout, pairing, errors that name the file, resizing, the cache, clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_lab4, make_split, solid, write_png

import cvae.data.frames as frames
from cvae.data.clips import clip_starts, epoch_batches, gather
from cvae.data.frames import VideoSet, load_split, load_test, resize
from cvae.data.layout import scan_split
from cvae.errors import DataError

SIZE = (8, 12)  # H, W of the hand-made frames


def load(root: Path, split: str, size: tuple[int, int]) -> VideoSet:
    """A split scanned and decoded (or read from the cache)."""
    return load_split(scan_split(root, split), size)


def red(vs: VideoSet) -> list[int]:
    """The red value of each cached frame (frames are solid colors: value 10 * index)."""
    return vs.frames[:, 0, 0, 0].tolist()


# --------------------------------------------------------------------------- layout


def test_numeric_sort(tmp_path):
    names = [f"frame{i}.png" for i in (10, 2, 1, 0, 11, 3)]
    make_split(tmp_path, "train", {"": names})
    (videos,) = scan_split(tmp_path, "train").videos
    assert [p.name for p, _ in videos.pairs] == ["frame0.png", "frame1.png", "frame2.png", "frame3.png",
                                                 "frame10.png", "frame11.png"]  # fmt: skip
    assert red(load(tmp_path, "train", SIZE)) == [0, 10, 20, 30, 100, 110]


def test_flat_folder_is_one_video(tmp_path):
    make_split(tmp_path, "val", {"": [f"frame{i}.png" for i in range(7)]})
    vs = load(tmp_path, "val", SIZE)
    assert vs.names == [""] and vs.starts == [0] and vs.lengths == [7]
    assert vs.frames.shape == vs.poses.shape == (7, 3, *SIZE)
    # the pose of the same name: green channel carries the same value
    assert vs.poses[:, 1, 0, 0].tolist() == red(vs)


def test_subfolders_are_videos(tmp_path):
    make_split(
        tmp_path,
        "train",
        {"v2": [f"f{i}.png" for i in range(3)], "v10": [f"f{i}.png" for i in range(5)]},
        value=lambda v, i: (100 if v == "v10" else 0) + i,
    )
    vs = load(tmp_path, "train", SIZE)
    assert vs.names == ["v2", "v10"]  # numeric order of folder names too
    assert vs.lengths == [3, 5] and vs.starts == [0, 3]
    assert vs.video(0)[0][:, 0, 0, 0].tolist() == [0, 1, 2]
    assert vs.video(1)[0][:, 0, 0, 0].tolist() == [100, 101, 102, 103, 104]
    assert vs.truncated(2).lengths == [2, 2] and vs.truncated(None).lengths == [3, 5]


def test_png_files_beside_subfolders_is_an_error(tmp_path):
    make_split(tmp_path, "train", {"": ["frame0.png"], "v": ["frame0.png"]})
    with pytest.raises(DataError, match="both PNG files and video subfolders"):
        scan_split(tmp_path, "train")


def test_missing_split_folder_is_an_error(tmp_path):
    with pytest.raises(DataError) as e:
        scan_split(tmp_path, "train")
    assert str(tmp_path / "train" / "train_img") in str(e.value)


def test_missing_pose_file_names_it(tmp_path):
    make_split(tmp_path, "train", {"": [f"frame{i}.png" for i in range(5)]})
    (tmp_path / "train/train_label/frame3.png").unlink()
    with pytest.raises(DataError) as e:
        load(tmp_path, "train", SIZE)
    assert "frame3.png" in str(e.value) and "no pose image" in str(e.value)


def test_extra_pose_file_names_it(tmp_path):
    make_split(tmp_path, "train", {"": [f"frame{i}.png" for i in range(5)]})
    write_png(tmp_path / "train/train_label/frame7.png", solid(0, SIZE))
    with pytest.raises(DataError) as e:
        load(tmp_path, "train", SIZE)
    assert str(tmp_path / "train/train_label/frame7.png") in str(e.value)


def test_missing_pose_folder(tmp_path):
    make_split(tmp_path, "train", {"a": ["frame0.png"]})
    os.rename(tmp_path / "train/train_label/a", tmp_path / "train/train_label/b")
    with pytest.raises(DataError, match="pose folder missing"):
        scan_split(tmp_path, "train")


def test_unreadable_png_names_it(tmp_path):
    make_split(tmp_path, "train", {"": [f"frame{i}.png" for i in range(4)]})
    bad = tmp_path / "train/train_img/frame2.png"
    bad.write_bytes(b"\x89PNG this is not an image at all")
    with pytest.raises(DataError) as e:
        load(tmp_path, "train", SIZE)
    assert str(bad) in str(e.value) and "not a readable PNG" in str(e.value)


def test_mixed_sizes_name_the_odd_file(tmp_path):
    make_split(tmp_path, "train", {"": [f"frame{i}.png" for i in range(4)]})
    odd = tmp_path / "train/train_img/frame3.png"
    write_png(odd, solid(30, (9, 12)))
    with pytest.raises(DataError) as e:
        load(tmp_path, "train", SIZE)
    msg = str(e.value)
    assert msg.startswith(str(odd)) and "12x9" in msg and "differs" in msg


# --------------------------------------------------------------------------- resizing


def test_resize_antialiased_uint8(tmp_path):
    """Every 4th column bright: a 4x shrink must average (255 / 4 ~ 64), not sample (0)."""
    big = np.zeros((128, 256, 3), np.uint8)
    big[:, ::4] = 255
    make_split(tmp_path, "val", {"": ["frame0.png", "frame1.png"]})
    for name in ("frame0.png", "frame1.png"):
        write_png(tmp_path / "val/val_img" / name, big)
        write_png(tmp_path / "val/val_label" / name, big)
    vs = load(tmp_path, "val", (32, 64))
    assert vs.frames.dtype == vs.poses.dtype == torch.uint8
    assert vs.frames.shape == vs.poses.shape == (2, 3, 32, 64)
    interior = vs.frames[:, :, :, 1:-1]
    assert interior.min() == interior.max() == 64  # round(63.75)
    # plain bilinear sampling would hit the dark columns only
    plain = torch.nn.functional.interpolate(
        torch.from_numpy(big).permute(2, 0, 1)[None].float(), size=(32, 64), mode="bilinear", antialias=False
    )
    assert plain.max() == 0


def test_resize_identity_and_upscale():
    x = torch.randint(0, 256, (2, 3, 8, 12), dtype=torch.uint8)
    assert resize(x, (8, 12)) is x
    up = resize(x, (16, 24))
    assert up.dtype == torch.uint8 and up.shape == (2, 3, 16, 24)


# --------------------------------------------------------------------------- cache


def test_cache_is_reused(tmp_path, monkeypatch):
    make_lab4(tmp_path)
    first = load(tmp_path, "train", SIZE)
    assert list((tmp_path / ".cvae-cache").glob("train-8x12.npz"))

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache is fresh")

    monkeypatch.setattr(frames, "decode_png", no_decoding)
    second = load(tmp_path, "train", SIZE)
    assert torch.equal(first.frames, second.frames) and torch.equal(first.poses, second.poses)
    assert (second.names, second.starts, second.lengths) == (first.names, first.starts, first.lengths)


def test_cache_is_rebuilt_when_a_file_changes(tmp_path):
    make_lab4(tmp_path)
    before = load(tmp_path, "val", SIZE)
    frame = tmp_path / "val/val_img/frame5.png"
    write_png(frame, solid(222, SIZE))
    st = frame.stat()
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a distinct mtime on any filesystem
    after = load(tmp_path, "val", SIZE)
    assert before.frames[5, 0, 0, 0] == 50 and after.frames[5, 0, 0, 0] == 222
    assert torch.equal(before.frames[:5], after.frames[:5])


def test_cache_per_size_and_a_corrupt_cache_is_rebuilt(tmp_path):
    make_lab4(tmp_path)
    small = load(tmp_path, "val", (4, 6))
    assert small.frames.shape[-2:] == (4, 6)
    cache = tmp_path / ".cvae-cache" / "val-4x6.npz"
    cache.write_bytes(b"garbage")
    again = load(tmp_path, "val", (4, 6))
    assert torch.equal(small.frames, again.frames)


# --------------------------------------------------------------------------- clips


def test_clip_starts_never_cross_videos():
    vs = VideoSet(torch.zeros(12, 3, 2, 2, dtype=torch.uint8), torch.zeros(12, 3, 2, 2, dtype=torch.uint8),
                  ["a", "b"], [0, 5], [5, 7])  # fmt: skip
    starts = clip_starts(vs.starts, vs.lengths, 3)
    assert starts == [0, 5, 8]  # video a: one clip (frames 0-2); b: two (5-7, 8-10)
    for s in starts:
        (v,) = [i for i, (a, n) in enumerate(zip(vs.starts, vs.lengths, strict=True)) if a <= s < a + n]
        assert s + 3 <= vs.starts[v] + vs.lengths[v]
    with pytest.raises(DataError, match="clip_len 8 exceeds the longest video"):
        clip_starts(vs.starts, vs.lengths, 8)


def test_clip_starts_on_synthetic_data(tiny_data):
    vs = load(tiny_data, "train", (32, 64))
    starts = clip_starts(vs.starts, vs.lengths, 5)
    assert len(starts) == 4 * (24 // 5)
    ends = [s + n for s, n in zip(vs.starts, vs.lengths, strict=True)]
    for s in starts:
        assert any(a <= s and s + 5 <= e for a, e in zip(vs.starts, ends, strict=True))


def test_epoch_batches_deterministic_and_partial():
    a = epoch_batches(20, 3, 1.0, seed=1, epoch=0)
    assert torch.equal(a, epoch_batches(20, 3, 1.0, seed=1, epoch=0))
    assert not torch.equal(a, epoch_batches(20, 3, 1.0, seed=1, epoch=1))
    assert not torch.equal(a, epoch_batches(20, 3, 1.0, seed=2, epoch=0))
    assert a.shape == (6, 3)  # 20 // 3, the incomplete batch dropped
    assert len(set(a.flatten().tolist())) == 18 and a.max() < 20  # no clip twice in an epoch
    half = epoch_batches(20, 3, 0.5, seed=1, epoch=0)
    assert half.shape == (3, 3)  # 10 clips -> 3 batches
    assert len(set(half.flatten().tolist())) == 9
    assert epoch_batches(3, 1, 0.01, seed=0, epoch=0).shape == (1, 1)  # at least one clip


def test_gather_shapes_and_range():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 4, 6).clone() * 25
    clips = gather(images, torch.tensor([0, 5]), 4)
    assert clips.shape == (2, 4, 3, 4, 6) and clips.dtype == torch.float32
    assert clips.min() >= 0 and clips.max() <= 1
    assert (clips[:, :, 0, 0, 0] * 255).round().tolist() == [[0, 25, 50, 75], [125, 150, 175, 200]]


def test_load_test_on_synthetic_split(tiny_data):
    videos = load_test(tiny_data, (32, 64))
    assert [v.name for v in videos] == ["0", "1"]
    for v in videos:
        assert v.first_frame.shape == (3, 32, 64) and v.first_frame.dtype == torch.uint8
        assert v.poses.shape == (40, 3, 32, 64) and v.poses.dtype == torch.uint8
    # the first frame is the decoded test_img/<k>/frame0.png
    from PIL import Image

    ref = np.array(Image.open(tiny_data / "test/test_img/0/frame0.png").convert("RGB"))
    assert torch.equal(videos[0].first_frame, torch.from_numpy(ref).permute(2, 0, 1))


def test_load_test_errors(tmp_path):
    with pytest.raises(DataError, match="folder missing"):
        load_test(tmp_path, SIZE)
    make_lab4(tmp_path)
    for p in (tmp_path / "test/test_label/0").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=str(tmp_path / "test/test_label/0")):
        load_test(tmp_path, SIZE)


def test_synthetic_splits_decode(tiny_data):
    train, val = load(tiny_data, "train", (32, 64)), load(tiny_data, "val", (32, 64))
    assert train.lengths == [24] * 4 and val.lengths == [40]
    assert train.frames.shape == (96, 3, 32, 64)
    assert train.frames.float().std() > 10  # real pictures, not blank


def test_hand_made_dataset_loads(tmp_path):
    """The hand-made helper itself: a valid dataset loads in every split."""
    root = make_lab4(Path(tmp_path))
    assert load(root, "train", SIZE).lengths == [12, 12]
    assert load(root, "val", SIZE).lengths == [12]
    assert len(load_test(root, SIZE)) == 1
