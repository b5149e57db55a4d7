"""``cvae data check`` and ``cvae data val-as-test``: a dataset folder's counts and problems, and its
val videos written in the test layout (to check ``cvae predict`` against real frames)."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from cvae.data.frames import decode_many, load_test
from cvae.data.layout import SPLITS, scan_split, scan_truth, truth_folder
from cvae.errors import DataError, RunDirError
from cvae.terminal import task

LAB_FRAME_SIZE = (32, 64)  # (H, W) the lab resizes frames to; `data check` decodes the test split at it


def check_dataset(root: Path, console) -> list[str]:
    """Print counts per split; return the problems found (layout, pairing, unreadable or odd-size files)."""
    from cvae.terminal import Col, table

    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    rows: list[list[str]] = []
    problems = []
    for split in SPLITS:
        try:
            files = scan_split(root, split)
            paths = [p for pair in files.pairs for p in pair]
            with Image.open(paths[0]) as im:
                w, h = im.size
            with task(console, f"decoding {split}", total=len(paths)) as update:
                decode_many(paths, (h, w), update)
            rows.append([split, str(len(files.videos)), str(len(paths) // 2), f"{h}x{w}"])
        except DataError as e:
            problems.append(str(e))
            rows.append([split, "-", "-", "problem"])
    try:
        tests = load_test(root, LAB_FRAME_SIZE)
        rows.append(["test", str(len(tests)), f"{sum(len(t.poses) for t in tests)} poses", ""])
    except DataError as e:
        problems.append(str(e))
        rows.append(["test", "-", "-", "problem"])
    try:  # the test videos' true frames, outside the lab's layout (the synthetic dancer's; Kaggle's for the lab)
        if truth_folder(root) is not None:
            truth = scan_truth(root)
            rows.append(["test truth (held out)", str(len(truth)), str(sum(len(t[3]) for t in truth)), ""])
    except DataError as e:
        problems.append(str(e))
        rows.append(["test truth (held out)", "-", "-", "problem"])
    columns = ["split", Col("videos", numeric=True), Col("frames", numeric=True), "image size"]
    console.print(table(f"dataset {root}", columns, rows))
    return problems


def val_as_test(root: Path, out: Path, pose_shift: int | None = None) -> list[str]:
    """Write the val videos in the test layout, to check ``cvae predict`` against real frames.

    For val video i: ``test_img/i/`` holds its first frame and ``test_label/i/`` its poses;
    ``i_shifted`` has the same first frame and the poses rotated by ``pose_shift`` frames
    (default a quarter of the video). Files are copied byte for byte.
    """
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"{out}: folder exists and is not empty")
    names = []
    for i, video in enumerate(scan_split(root, "val").videos):
        n = len(video.pairs)
        shift = n // 4 if pose_shift is None else pose_shift
        for name, k in zip(val_as_test_names(i), (0, shift), strict=True):
            img_dir, label_dir = out / "test" / "test_img" / name, out / "test" / "test_label" / name
            img_dir.mkdir(parents=True)
            label_dir.mkdir(parents=True)
            shutil.copyfile(video.pairs[0][0], img_dir / "frame0.png")
            for t in range(n):
                shutil.copyfile(video.pairs[(t + k) % n][1], label_dir / f"frame{t}.png")
            names.append(name)
    return names


def val_as_test_names(i: int) -> tuple[str, str]:
    """The two test videos ``val_as_test`` makes of val video i, in the order a test split sorts them
    (by the number in the name): its own poses, then the shifted ones."""
    return str(i), f"{i}_shifted"
