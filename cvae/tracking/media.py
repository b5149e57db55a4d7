"""Media a run writes: the rollout GIF and PNG plots (matplotlib, headless).

Every file is written through a tmp file beside it and renamed: a crash or a full disk never
leaves half a GIF or PNG under its final name.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cvae.atomic import atomic_write, write_bytes

if TYPE_CHECKING:
    import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1] or uint8 -> (T, H, W, 3) uint8."""
    import torch  # here: the plots of `cvae spec show --schedule` need no torch

    if images.dtype != torch.uint8:
        images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def side_by_side(*videos: torch.Tensor, gap: int = 2) -> np.ndarray:
    """Videos of equal length (T, 3, H, W) -> (T, H, sum W + gaps, 3) uint8, white gaps."""
    return side_by_side_arrays([to_uint8(v) for v in videos], gap)


GIF_SCALE = 4  # nearest-neighbour upscale of the 32x64 frames: readable in W&B's UI and a browser
LABEL_HEIGHT = 20  # pixels of the white strip above the panels that names them


def labelled_panels(panels: dict[str, torch.Tensor], scale: int = GIF_SCALE, gap: int = 2) -> np.ndarray:
    """Videos of equal length (T, 3, H, W), side by side, each upscaled ``scale`` times (nearest
    neighbour: the pixels as they are) under its name -> (T, LABEL_HEIGHT + H s, ...) uint8."""
    from PIL import Image, ImageDraw, ImageFont

    big = [np.repeat(np.repeat(to_uint8(v), scale, axis=1), scale, axis=2) for v in panels.values()]
    video = side_by_side_arrays(big, gap * scale)
    T, _, W, _ = video.shape
    header = Image.new("RGB", (W, LABEL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    font = ImageFont.load_default(size=14)
    x = 0
    for name, panel in zip(panels, big, strict=True):
        width = panel.shape[2]
        text_w = draw.textbbox((0, 0), name, font=font)[2]
        draw.text((x + (width - text_w) // 2, 2), name, fill=(0, 0, 0), font=font)
        x += width + gap * scale
    strip = np.broadcast_to(np.asarray(header)[None], (T, LABEL_HEIGHT, W, 3))
    return np.concatenate([strip, video], axis=1)


def side_by_side_arrays(arrays: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """(T, H, W_i, 3) uint8 videos -> (T, H, sum W_i + gaps, 3), white gaps."""
    T, H = arrays[0].shape[:2]
    sep = np.full((T, H, gap, 3), 255, np.uint8)
    parts = [p for a in arrays for p in (a, sep)][:-1]
    return np.concatenate(parts, axis=2)


GIF_PALETTE_SAMPLE = 16  # frames, spread over the video, whose colours make the shared palette


def write_gif(path: Path, frames: np.ndarray, fps: int = 20) -> Path:
    """Write (T, H, W, 3) uint8 as a looping GIF, atomically.

    All frames share one palette, the median cut (255 colours, plus pure white for the gaps
    between videos) of up to 16 frames spread over the video, each frame mapped to it without
    dithering: much faster to encode than a palette per frame (imageio's default) and smaller,
    for a slightly larger colour error (figures in docs/notes/performance-investigations.md).
    Encoded in memory first: a write that fails (a full disk) then fails in our write, not in an
    encoder's finalizer."""
    from PIL import Image

    T, _, W, _ = frames.shape
    sample = frames[np.linspace(0, T - 1, min(T, GIF_PALETTE_SAMPLE)).round().astype(int)]
    palette = Image.fromarray(np.ascontiguousarray(sample).reshape(-1, W, 3)).quantize(255)
    colours = palette.getpalette()[: 3 * 255]
    colours += [0, 0, 0] * (255 - len(colours) // 3) + [255, 255, 255]  # index 255: pure white
    palette.putpalette(colours)
    images = []
    for f in frames:
        index = np.array(Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE))
        index[(f == 255).all(-1)] = 255  # Pillow's lookup is approximate: keep white (the gaps) exact
        image = Image.fromarray(index, "P")
        image.putpalette(colours)
        images.append(image)
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
    return write_bytes(path, buf.getvalue(), suffix=".gif")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writing ``path`` (through a tmp file beside it): an OSError (a full disk) removes the tmp
    file and is raised again naming ``path``; PIL and matplotlib often name no file or the tmp."""
    try:
        yield
    except OSError as e:
        for tmp in path.parent.glob(path.name + ".tmp*"):
            tmp.unlink(missing_ok=True)
        if e.errno is None:
            raise OSError(f"{e} (writing {path})") from None
        raise OSError(e.errno, e.strerror, str(path)) from None


def pyplot():
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colors(n: int) -> list:
    """n distinguishable colours (tab10, tab20 past ten)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def save_figure(fig, path: Path, title: str | None = None) -> Path:
    """Lay out, write atomically, close; ``title`` also in the PNG's Title field (what viewers list)."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        with atomic_write(path, suffix=".png") as tmp:
            fig.savefig(tmp, metadata={"Title": title} if title else None)
    finally:
        plt.close(fig)
    return path


REFERENCE_COLORS = ("tab:red", "tab:gray", "tab:purple", "tab:olive", "tab:brown", "tab:pink")


def plot_psnr(path: Path, curves: dict[str, Sequence[float]], refs: dict[str, float], title: str) -> Path:
    """Per-frame PSNR curves (frames 1..T-1) with the trivial references as dashed lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=110)
    for label, ys in curves.items():
        ax.plot(np.arange(1, len(ys) + 1), ys, lw=1.2, label=f"{label} (mean {np.mean(ys):.2f} dB)")
    for (label, value), color in zip(refs.items(), REFERENCE_COLORS[: len(refs)], strict=True):
        ax.axhline(value, ls="--", lw=1, color=color, label=f"{label} ({value:.2f} dB)")
    ax.set(xlabel="frame", ylabel="PSNR (dB)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path, title)


Series = dict[str, tuple[Sequence[float], Sequence[float]]]  # history key -> (xs, ys)


def plot_panels(
    path: Path,
    runs: dict[str, Series],
    panels: Sequence[tuple[str, str, bool]],
    *,
    stacked: bool = False,
    title: str | None = None,
    xlabel: str = "epoch",
) -> Path:
    """One panel per ``(history key, panel title, log scale when every value is > 0)``, every run
    overlaid in its own colour, one legend for all panels (none for a single unnamed run).
    ``stacked``: panels one above the other sharing the x axis; else side by side."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    n = max(1, len(panels))
    if stacked:
        fig, axes = plt.subplots(n, 1, figsize=(7.5, 2.2 * n + 0.6), dpi=110, sharex=True, squeeze=False)
        axes = axes[:, 0]
    else:
        fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.2), dpi=110, squeeze=False)
        axes = axes[0]
    palette = colors(len(runs))
    for ax, (key, panel_title, log) in zip(axes, panels, strict=False):
        values: list[float] = []
        for (label, series), color in zip(runs.items(), palette, strict=True):
            xs, ys = series.get(key, ((), ()))
            if len(xs):
                ax.plot(xs, ys, color=color, lw=1.3, marker="." if len(xs) < 40 else None, label=label or None)
                values += list(ys)
        if log and values and all(math.isfinite(v) and v > 0 for v in values):
            ax.set_yscale("log")
        if stacked:
            ax.set_ylabel(panel_title)
        else:
            ax.set(title=panel_title, xlabel=xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if stacked:
        axes[-1].set_xlabel(xlabel)
        if title:
            axes[0].set_title(title)
    elif title:
        fig.suptitle(title)
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:  # right of the first (stacked) or last panel; tight_layout makes room
        anchor = axes[0] if stacked else axes[-1]
        anchor.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    return save_figure(fig, path)


def history_series(rows: list[dict], keys: Sequence[str], x: str = "epoch") -> Series:
    """(xs, ys) of each key over the history rows that hold a number for it."""
    out: Series = {}
    for key in keys:
        pts = [(r[x], r[key]) for r in rows if x in r and isinstance(r.get(key), int | float)]
        if pts:
            out[key] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def plot_schedule(path: Path, rows: list[dict], title: str) -> Path:
    """Beta and the teacher-forcing ratio over the epochs (``cvae.training.schedules.run_schedule``'s rows);
    epoch e spans [e - 1, e], and the epochs an epoch coin forces are shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=110)
    for key, label, color in (("beta", "beta (KL weight)", "tab:blue"), ("tfr", "teacher-forcing ratio", "tab:orange")):
        xs, ys = [], []
        for r in rows:  # each epoch from its first step's value to its last step's (equal per epoch)
            xs += [r["epoch"] - 1, r["epoch"]]
            ys += [r[key], r.get(f"{key}_last", r[key])]
        ax.plot(xs, ys, color=color, lw=1.4, label=label)
    forced = [r["epoch"] for r in rows if r.get("teacher_forced")]
    for e in forced:
        ax.axvspan(e - 1, e, color="tab:orange", alpha=0.15, lw=0)
    if forced:
        ax.plot([], [], color="tab:orange", alpha=0.3, lw=6, label="teacher-forced epoch (its coin)")
    top = max([1.0] + [r["beta"] for r in rows])
    ax.set(xlabel="epoch", xlim=(0, rows[-1]["epoch"]), ylim=(-0.05, 1.05 * top), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, path)
