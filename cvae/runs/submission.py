"""``submission.csv``, the Lab4 Kaggle file, exactly as the template's Tester writes it, and read back
to score it (``cvae score``).

The template's format: a header ``id,0,1,...,6143`` (for 32x64 frames: 3 x 32 x 64 values), then one
row per frame, video after video in the numeric order of their folder names, each video's frames in
order with frame 0 (the given first frame) first; ``id`` counts the rows from 0 across all videos;
each value is a pixel x 255 rounded half to even (``np.rint``), in C, H, W order; lines end in
``\\n``. One difference, on purpose: values are clamped to 0..255. The template's Generator has no
sigmoid, so an unclamped frame can hold -1 or 256, which no 8-bit image can.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from cvae.atomic import atomic_write
from cvae.errors import DataError

_TEXT = [str(v) for v in range(256)]  # the 256 values as the file writes them


def frame_values(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float frames -> (T, 3*H*W) integers 0..255: x 255, rounded half to even (as
    ``np.rint``), C, H, W order."""
    return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).flatten(1).numpy()


def write_submission(path: Path, videos: list[np.ndarray]) -> Path:
    """``videos``: each (T, 3*H*W) of ``frame_values``, in the test split's order. Written through a
    tmp file: a kill or a full disk never leaves half a submission under its name."""
    width = videos[0].shape[1]
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        f.write("id," + ",".join(map(str, range(width))) + "\n")
        row = 0
        for values in videos:
            for frame in values:
                f.write(f"{row}," + ",".join(_TEXT[v] for v in frame.tolist()) + "\n")
                row += 1
    return path


def read_submission(path: Path, size: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    """A submission's ids and its frames, (rows, 3, H, W) uint8; a file of another shape is a DataError
    naming it. Reads the template's integer ids and the ``<video>_<frame>`` ids cvae wrote before."""
    if not path.is_file():
        raise DataError(f"{path}: submission file not found")
    width = 3 * size[0] * size[1]
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or header[0] != "id" or len(header) != width + 1:
            got = "an empty file" if header is None else f"{len(header) - 1} value columns"
            raise DataError(
                f"{path}: expected a header id,0,...,{width - 1} ({width} values of {size[0]}x{size[1]} frames); "
                f"got {got}"
            )
        ids, rows = [], []
        for row in reader:
            ids.append(row[0])
            rows.append(np.asarray(row[1:], dtype=np.int64))
    values = np.stack(rows) if rows else np.zeros((0, width), np.int64)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError(f"{path}: values outside 0..255")
    return ids, values.astype(np.uint8).reshape(len(rows), 3, *size)


def split_videos(
    path: Path, ids: list[str], frames: np.ndarray, videos: list[tuple[str, int]]
) -> dict[str, np.ndarray]:
    """The rows of each video: ``videos`` lists (name, frames) in the file's order. Template ids
    (0, 1, ...) are cut in that order; ``<video>_<frame>`` ids are grouped by name."""
    if ids and not ids[0].isdigit():
        names = [i.rsplit("_", 1)[0] for i in ids]
        return {name: frames[[k for k, n in enumerate(names) if n == name]] for name, _ in videos if name in names}
    expected = sum(n for _, n in videos)
    if len(ids) != expected or ids != [str(k) for k in range(len(ids))]:
        raise DataError(
            f"{path}: {len(ids)} rows with ids {ids[0] if ids else '-'}..{ids[-1] if ids else '-'}; expected ids 0.."
            f"{expected - 1}, one row per frame of " + ", ".join(f"{name} ({n})" for name, n in videos)
        )
    out, start = {}, 0
    for name, n in videos:
        out[name], start = frames[start : start + n], start + n
    return out
