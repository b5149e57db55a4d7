"""Held-out truth: the real frames of a dataset's test videos, where the dataset has them.

The lab's test split is a first frame and the poses per video; the frames to predict are Kaggle's,
never in the dataset folder, so a lab user scores a test prediction only by uploading it. The
synthetic dancer writes them too (cvae/data/synth.py), as Kaggle keeps them: outside the Lab4
layout's folders (``ROOT/test_truth/<k>/frameI.png``, the folder named by ``test_truth`` in
``ROOT/synth.json``), so nothing that reads the lab's layout sees them. Here they are read back
beside the test split's poses, to score every test video as the leaderboard does
(cvae/training/validation.py, ``test_model``).
"""

from __future__ import annotations

import json
from pathlib import Path

from cvae.data.layout import number_key, pngs, scan_test
from cvae.errors import DataError

MANIFEST = "synth.json"


def truth_folder(root: Path) -> Path | None:
    """The folder of the test videos' real frames that ``ROOT/synth.json`` names, or None where the
    dataset has none (the lab's own data, or a synthetic folder made before they were written)."""
    meta_file = Path(root) / MANIFEST
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError:
        return None
    name = meta.get("test_truth") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        return None
    folder = Path(root) / name
    if not folder.is_dir():
        raise DataError(f"{folder}: missing, though {meta_file} names it as the test videos' true frames")
    return folder


def no_truth(root: Path) -> str:
    """Why ``root`` has no test truth, in one clause a message can end with."""
    meta = Path(root) / MANIFEST
    if meta.is_file():
        return (
            f"{meta} names no folder of the test videos' true frames (made before they were written: "
            f"`cvae data synth {root} --overwrite` with its preset and seed writes them)"
        )
    return (
        f"{root} holds the test videos' first frames and poses only, as the lab's data does; their true frames "
        "are Kaggle's (the synthetic dancer writes its own: cvae data synth)"
    )


def scan_truth(root: Path) -> list[tuple[str, Path, list[Path], list[Path]]]:
    """Per test video (the test split's order): its name, its given first frame, its pose files and its
    true frames, one per pose; a missing video or a frame count that differs from the poses' is a
    DataError."""
    folder = truth_folder(root)
    if folder is None:
        raise DataError(f"no test truth here: {no_truth(root)}")
    out = []
    for name, first, poses in scan_test(Path(root)):
        frames = pngs(folder / name) if (folder / name).is_dir() else []
        if len(frames) != len(poses):
            raise DataError(
                f"{folder / name}: {len(frames)} true frames for the {len(poses)} poses of test video {name!r}"
            )
        for frame, pose in zip(frames, poses, strict=True):
            if number_key(frame) != number_key(pose):
                raise DataError(f"{frame}: no pose of the same name in {pose.parent} (found {pose.name})")
        out.append((name, first, poses, frames))
    return out
