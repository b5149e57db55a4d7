"""Synthetic dancer: a procedural, deterministic stand-in for the Lab4 dataset.

The real Lab4 data (one dancer, one camera, ~23k training frames) cannot be redistributed, so this
module writes a dataset in its layout::

    OUT/train/train_img/video000/frame0.png    RGB frame          OUT/train/train_label/...  pose image
    OUT/val/val_img/video000/frame0.png        (same name = same time step in img and label)
    OUT/test/test_img/0/frame0.png             first frame only   OUT/test/test_label/0/frameI.png  all poses
    OUT/test_truth/0/frameI.png                the test videos' real frames (held out: see below)
    OUT/synth.json                             what made the folder (preset, seed, appearance, layout, sizes)

``layout="videos"`` (the default) writes each train and val video in a subfolder of its own, so
clips never cross two dances; ``layout="flat"`` writes each split as one numbered sequence
(``train_img/frame0.png`` ... video after video), the layout of the lab's own data and the only one
the template's ``Dataset_Dance`` reads (it globs ``train_img/*.png``): there a clip may straddle the
end of one dance and the start of the next.

The test split is the lab's: a first frame and the poses per video. The frames the model should
predict are written too, as Kaggle keeps them: outside the lab's folders (``test_truth/``, named in
``synth.json``), so nothing that reads the Lab4 layout sees them; ``cvae evaluate --split test``
scores against them (cvae/data/layout.py).

Each video is its own dance (:func:`dance`): an 18-keypoint OpenPose skeleton driven by sums of
sinusoids (arm swings, elbow bends, knee lifts, squats, torso sway) that travels slowly across the
floor. The label is the OpenPose rendering of the keypoints (:func:`render_pose`); the frame is a
shaded, clothed body drawn from the *same* keypoints on a background (:func:`render_frame`), so the
pose fully explains the body and the only other information is the appearance. With
``appearance="same"`` (the lab's situation) every video shares one dancer and background drawn from
the seed; with ``"varied"`` each video gets its own. Everything derives from
``np.random.SeedSequence(seed, spawn_key=...)``: the same arguments give byte-identical PNGs, and a
video's content does not depend on how many other videos or frames are requested.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cvae.errors import DataError, SpecError


@dataclass(frozen=True)
class Preset:
    train_videos: int
    train_frames: int
    val_videos: int
    val_frames: int
    test_videos: int
    test_frames: int
    height: int
    width: int
    speed: float  # dance tempo multiplier: how far the dancer moves per frame


PRESETS: dict[str, Preset] = {
    "tiny": Preset(4, 24, 1, 40, 2, 40, 32, 64, 1.0),  # tests
    "small": Preset(80, 120, 1, 630, 2, 630, 64, 128, 1.0),  # CPU quick start
    "lab4": Preset(184, 125, 1, 630, 5, 630, 64, 128, 1.0),  # ~23k training frames, like the lab
}
APPEARANCES = ("same", "varied")
LAYOUTS = ("videos", "flat")  # train/val: one subfolder per video, or one numbered sequence per split
TRUTH_DIR = "test_truth"  # OUT/test_truth/<k>/frameI.png: the test videos' real frames, outside the lab's layout
SUPERSAMPLE = 4  # draw at 4x and box-downsample: antialiased edges at a few ms per frame

# OpenPose COCO-18 keypoints (0 nose, 1 neck, 2-4 right shoulder, elbow, wrist, 5-7 left, 8-10 right
# hip, knee, ankle, 11-13 left, 14-17 eyes and ears), its limbs (0-based pairs) and its 18-color
# palette; limb i and joint i use COLORS[i].
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
         (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))  # fmt: skip
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255),
          (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))  # fmt: skip

# Body proportions in units of image height; the standing dancer is ~0.8 of the frame tall.
FLOOR_Y = 0.93  # where the supporting foot touches the floor
THIGH, SHIN, TORSO, NECK = 0.2, 0.19, 0.25, 0.078
UPPER_ARM, FOREARM, SHOULDER_W, HIP_W = 0.14, 0.13, 0.068, 0.042
SKIN = ((241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))
HAIR = ((30, 20, 15), (90, 56, 37), (180, 140, 80), (60, 60, 60), (150, 60, 30))

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Appearance:
    """Colors of the dancer and the room; a frame is a pure function of (keypoints, appearance)."""

    skin: Color
    hair: Color
    shirt: Color
    sleeves: Color
    trousers: Color
    shoes: Color
    wall_top: Color
    wall_bottom: Color
    floor: Color
    horizon: float  # y (fraction of height) where the wall meets the floor
    panels: tuple[tuple[float, float, float, float, Color], ...]  # wall decor: x0, y0, x1, y1, color

    @classmethod
    def random(cls, rng: np.random.Generator) -> Appearance:
        def hsv(h: float, s: float, v: float) -> Color:
            k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6  # HSV -> RGB without colorsys, vectorised
            rgb = v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)
            return tuple(round(float(c) * 255) for c in rgb)

        def cloth() -> Color:
            return hsv(rng.random(), rng.uniform(0.5, 0.95), rng.uniform(0.45, 0.95))

        shirt = cloth()
        sleeves = shirt if rng.random() < 0.5 else cloth()
        hue = rng.random()  # muted room so the dancer stands out
        panels = tuple(
            (x0, rng.uniform(0.08, 0.3), x0 + rng.uniform(0.06, 0.18), rng.uniform(0.4, 0.6),
             hsv(rng.random(), rng.uniform(0.2, 0.5), rng.uniform(0.35, 0.8)))
            for x0 in np.sort(rng.uniform(0.0, 0.85, size=int(rng.integers(1, 4))))
        )  # fmt: skip
        return cls(
            skin=SKIN[rng.integers(len(SKIN))],
            hair=HAIR[rng.integers(len(HAIR))],
            shirt=shirt,
            sleeves=sleeves,
            trousers=cloth(),
            shoes=hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.1, 0.4)),
            wall_top=hsv(hue, rng.uniform(0.1, 0.35), rng.uniform(0.65, 0.95)),
            wall_bottom=hsv(hue + rng.uniform(-0.05, 0.05), rng.uniform(0.15, 0.4), rng.uniform(0.4, 0.7)),
            floor=hsv(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.45)),
            horizon=float(rng.uniform(0.68, 0.78)),
            panels=tuple((float(a), float(b), float(c), float(d), e) for a, b, c, d, e in panels),
        )


def _wave(rng: np.random.Generator, t: np.ndarray, tempo: float, n: int = 3, mults=(0.25, 0.5, 1, 1.5)):
    """A smooth rhythm in (-1, 1): n sinusoids at musical multiples of the tempo, random phases."""
    mult = rng.choice(np.asarray(mults, float), size=n, replace=False)  # distinct: no cancelling
    amp = rng.uniform(0.3, 1.0, size=n) / np.maximum(mult, 1.0)  # fast harmonics stay small (smoothness)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    w = (amp[:, None] * np.sin(2 * np.pi * tempo * mult[:, None] * t[None] + phase[:, None])).sum(0)
    return np.tanh(w / np.sqrt(0.5 * (amp**2).sum()))  # unit RMS, softly saturated: full range used


def dance(n_frames: int, rng: np.random.Generator, speed: float = 1.0, aspect: float = 2.0) -> np.ndarray:
    """One video's dance: (n_frames, 18, 2) OpenPose keypoints (x, y) in [0, 1] image coordinates.

    Forward kinematics in units of image height (x spans ``aspect`` = width/height), then x is divided
    by ``aspect``. All random parameters are drawn before ``n_frames`` is used, so a longer dance
    starts with the same frames as a shorter one from the same rng.
    """
    tempo = rng.uniform(1 / 70, 1 / 42)  # beats per frame at speed 1 (~0.4-0.7 Hz at 30 fps)
    t = np.arange(n_frames) * float(speed)

    def lin(lo, hi, w):  # map a (-1, 1) wave to (lo, hi)
        return lo + (hi - lo) * (0.5 + 0.5 * w)

    mode = rng.integers(3)  # arms: 0 mirrored, 1 opposite, 2 independent
    arm_w, elbow_w = _wave(rng, t, tempo), _wave(rng, t, tempo)
    arm_w2, elbow_w2 = (arm_w, elbow_w) if mode == 0 else (-arm_w, -elbow_w)
    if mode == 2:
        arm_w2, elbow_w2 = _wave(rng, t, tempo), _wave(rng, t, tempo)
    arm_lo, arm_hi = rng.uniform(0.1, 0.5), rng.uniform(1.6, 2.9)  # shoulder angle from hanging down
    bend_hi = rng.uniform(0.6, 2.0)
    step = _wave(rng, t, tempo / 2, n=2)  # alternating knee lifts: one leg up while the other stands
    lift_hi = rng.uniform(0.8, 1.45)
    squat = lin(0, rng.uniform(0.1, 0.7), _wave(rng, t, tempo, n=2))
    spread = lin(0.02, rng.uniform(0.1, 0.45), _wave(rng, t, tempo / 2, n=2))
    sway = rng.uniform(0.05, 0.2) * _wave(rng, t, tempo / 2, n=2)  # torso tilt (rad)
    nod = rng.uniform(0.05, 0.25) * _wave(rng, t, tempo, n=2)
    margin = min(0.4, aspect / 2)
    travel = margin + (aspect - 2 * margin) * (0.5 + 0.5 * _wave(rng, t, rng.uniform(1 / 450, 1 / 300), 2, (1, 1.5)))
    bounce = rng.uniform(0, 0.015) * np.abs(np.sin(np.pi * tempo * t + rng.uniform(0, np.pi)))

    kp = np.zeros((n_frames, 18, 2))

    def down(a):  # (n, 2) unit vectors at angle a (rad) from straight down, y pointing down
        return np.stack([np.sin(a), np.cos(a)], -1)

    for side, (sh, el, wr, hip, kn, an), aw, ew, lift in (
        (-1, (2, 3, 4, 8, 9, 10), arm_w, elbow_w, np.clip(step, 0, 1) ** 1.5 * lift_hi + squat),
        (1, (5, 6, 7, 11, 12, 13), arm_w2, elbow_w2, np.clip(-step, 0, 1) ** 1.5 * lift_hi + squat),
    ):  # side -1 is the dancer's right = image left (dancer faces the camera)
        kp[:, hip] = [side * HIP_W, 0.0]
        thigh = down(side * spread)
        thigh[:, 1] *= np.cos(np.minimum(lift, 1.45))  # knee lifted towards the camera: foreshortened
        kp[:, kn] = kp[:, hip] + THIGH * thigh
        kp[:, an] = kp[:, kn] + SHIN * down(side * (0.3 * spread + 0.25 * lift))
        kp[:, sh] = [side * SHOULDER_W, -TORSO + 0.015]
        a = side * lin(arm_lo, arm_hi, aw)
        kp[:, el] = kp[:, sh] + UPPER_ARM * down(a + sway)
        kp[:, wr] = kp[:, el] + FOREARM * down(a + sway + side * lin(0, bend_hi, ew))
    kp[:, 1] = [0.0, -TORSO]
    head = {0: (0.0, -NECK), 14: (-0.022, -NECK - 0.02), 15: (0.022, -NECK - 0.02),
            16: (-0.045, -NECK - 0.005), 17: (0.045, -NECK - 0.005)}  # fmt: skip
    for j, (dx, dy) in head.items():  # head rigid around the neck, tilted by sway + nod
        c, s = np.cos(sway + nod), np.sin(sway + nod)
        kp[:, j] = kp[:, 1] + np.stack([c * dx - s * dy, s * dx + c * dy], -1)
    upper = [0, 1, 2, 3, 4, 5, 6, 7, 14, 15, 16, 17]  # upper body rotates about the hip centre (sway)
    c, s = np.cos(sway)[:, None], np.sin(sway)[:, None]
    x, y = kp[:, upper, 0].copy(), kp[:, upper, 1].copy()
    kp[:, upper, 0], kp[:, upper, 1] = c * x - s * y, s * x + c * y
    # Ground contact: the lower ankle stands on the floor, so squats and knee lifts move the body.
    kp[..., 1] += (FLOOR_Y - bounce - kp[:, [10, 13], 1].max(1))[:, None]
    kp[..., 0] += travel[:, None]
    kp[..., 0] /= aspect
    return np.clip(kp, 0.0, 1.0)


def render_pose(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenPose-style pose image (height, width, 3) uint8: colored limbs and joint dots on black."""
    return np.asarray(_pose_image(keypoints, height, width))


def _pose_image(keypoints: np.ndarray, height: int, width: int) -> Image.Image:
    ss = SUPERSAMPLE
    img = Image.new("RGB", (width * ss, height * ss))
    d = ImageDraw.Draw(img)
    p = [tuple(xy) for xy in (np.asarray(keypoints, float) * [width * ss, height * ss]).tolist()]
    w = max(2, round(0.035 * height * ss))  # thicker than OpenPose's 4 px at 512 px: visible at 32 px
    for i, (a, b) in enumerate(LIMBS):  # limbs at 60% brightness under full-color joints, as ControlNet draws
        d.line([p[a], p[b]], fill=tuple(int(c * 0.6) for c in COLORS[i]), width=w)
    r = w * 0.6
    for i, (x, y) in enumerate(p):
        d.ellipse([x - r, y - r, x + r, y + r], fill=COLORS[i])
    return img.reduce(ss)


def _background(look: Appearance, height: int, width: int) -> Image.Image:
    """The empty room at SUPERSAMPLE scale: vertical gradient wall, panels, floor band."""
    ss, h, w = SUPERSAMPLE, height * SUPERSAMPLE, width * SUPERSAMPLE
    f = np.linspace(0, 1, h)[:, None]
    wall = (1 - f) * np.array(look.wall_top) + f * np.array(look.wall_bottom)
    rows = np.where(f < look.horizon, wall, np.array(look.floor) * (0.8 + 0.4 * f))  # floor brightens
    img = Image.fromarray(np.broadcast_to(np.clip(rows, 0, 255).astype(np.uint8)[:, None], (h, w, 3)).copy())
    d = ImageDraw.Draw(img)
    for x0, y0, x1, y1, c in look.panels:
        d.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], fill=c, outline=_shade(c, 0.6), width=ss)
    d.line([(0, look.horizon * h), (w, look.horizon * h)], fill=_shade(look.floor, 0.6), width=ss)
    return img


def _shade(c: Color, k: float) -> Color:
    return tuple(min(255, int(v * k)) for v in c)


def render_frame(keypoints: np.ndarray, look: Appearance, height: int, width: int) -> np.ndarray:
    """The RGB frame (height, width, 3) uint8 of the dancer in pose ``keypoints`` wearing ``look``."""
    return np.asarray(_frame_image(keypoints, look, _background(look, height, width), height, width))


def _frame_image(kp: np.ndarray, look: Appearance, bg: Image.Image, height: int, width: int) -> Image.Image:
    ss = SUPERSAMPLE
    u = height * ss  # body unit: one image height in supersampled pixels
    img = bg.copy()
    d = ImageDraw.Draw(img)
    p = np.asarray(kp, float) * [width * ss, height * ss]
    P = [tuple(xy) for xy in p.tolist()]

    def disc(c, r, fill):
        d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)

    def limb(a, b, c, width_u, color):  # two thick segments (upper, lower limb) with round ends
        wpx = round(width_u * u)
        d.line([P[a], P[b], P[c]], fill=color, width=wpx, joint="curve")
        disc(P[a], wpx / 2, color)
        disc(P[c], wpx / 2, color)

    feet = p[[10, 13]]
    cx, spread = feet[:, 0].mean(), abs(feet[1, 0] - feet[0, 0])
    y = FLOOR_Y * u + 0.01 * u
    d.ellipse([cx - spread / 2 - 0.07 * u, y - 0.02 * u, cx + spread / 2 + 0.07 * u, y + 0.02 * u],
              fill=_shade(look.floor, 0.55))  # fmt: skip
    for k, near in ((0.72, False), (1.0, True)):  # dancer's left (image right) is the far side
        arm, leg = ((5, 6, 7), (11, 12, 13)) if not near else ((2, 3, 4), (8, 9, 10))
        limb(*leg, 0.06, _shade(look.trousers, k))
        ank = p[leg[2]]
        toe = ank + [(-1 if near else 1) * 0.035 * u, 0.012 * u]
        d.line([tuple(ank), tuple(toe)], fill=_shade(look.shoes, k), width=round(0.04 * u))
        disc(tuple(toe), 0.02 * u, _shade(look.shoes, k))
        if not near:
            limb(*arm, 0.045, _shade(look.sleeves, k))
            disc(tuple(p[arm[2]] + 0.3 * (p[arm[2]] - p[arm[1]])), 0.025 * u, _shade(look.skin, k))
    hip = (p[8] + p[11]) / 2
    d.polygon([tuple(p[8] + [-0.012 * u, 0]), tuple(p[11] + [0.012 * u, 0]),
               tuple(p[11] + [0.01 * u, -0.06 * u]), tuple(p[8] + [-0.01 * u, -0.06 * u])],
              fill=look.trousers)  # fmt: skip
    neck = p[1]
    d.line([tuple(neck), tuple(neck + 0.6 * (p[0] - neck))], fill=_shade(look.skin, 0.85), width=round(0.04 * u))
    d.polygon([tuple(p[2] + [-0.01 * u, -0.005 * u]), tuple(neck + [0, -0.012 * u]),
               tuple(p[5] + [0.01 * u, -0.005 * u]), tuple(p[11] + [0.008 * u, -0.04 * u]),
               tuple(hip + [0, -0.035 * u]), tuple(p[8] + [-0.008 * u, -0.04 * u])],
              fill=look.shirt)  # fmt: skip
    limb(2, 3, 4, 0.045, look.sleeves)
    disc(tuple(p[4] + 0.3 * (p[4] - p[3])), 0.025 * u, look.skin)
    # Head: hair ellipse behind, face on top, shifted along the head axis (neck -> nose).
    axis = (p[0] - neck) / max(np.linalg.norm(p[0] - neck), 1e-6)
    c = p[0] - 0.005 * u * axis
    rx, ry = 0.052 * u, 0.062 * u
    hc = c + 0.012 * u * axis
    d.ellipse([hc[0] - rx * 1.05, hc[1] - ry * 1.05, hc[0] + rx * 1.05, hc[1] + ry * 1.0], fill=look.hair)
    fc = c - 0.008 * u * axis
    d.ellipse([fc[0] - rx * 0.9, fc[1] - ry * 0.8, fc[0] + rx * 0.9, fc[1] + ry * 0.85], fill=look.skin)
    for e in (14, 15):
        disc(P[e], 0.008 * u, (40, 30, 30))
    return img.reduce(ss)


def _seed_rng(seed: int, *key: int) -> np.random.Generator:
    # Equal to SeedSequence(seed).spawn(...)[...] children: stable per (split, video, purpose) key.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _resolve(preset: str, overrides: dict) -> Preset:
    if preset not in PRESETS:
        raise SpecError(f"preset {preset!r}: unknown; allowed: {', '.join(PRESETS)}")
    names = [f.name for f in fields(Preset)]
    for k, v in overrides.items():
        if k not in names:
            raise SpecError(f"unknown preset field {k!r}; allowed: {', '.join(names)}")
        if k == "speed" and not (isinstance(v, (int, float)) and v > 0):
            raise SpecError(f"speed must be a positive number, got {v!r}")
        lo = 0 if k.endswith("_videos") else 8 if k in ("height", "width") else 1
        if k != "speed" and not (isinstance(v, int) and not isinstance(v, bool) and v >= lo):
            raise SpecError(f"{k} must be an int >= {lo}, got {v!r}")
    return replace(PRESETS[preset], **overrides)


def synthesize(
    out: str | Path,
    preset: str = "small",
    seed: int = 0,
    appearance: str = "same",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    layout: str = "videos",
    **preset_overrides,
) -> dict:
    """Write a synthetic Lab4-layout dataset to ``out`` and return the ``synth.json`` content.

    Writes into a temporary sibling folder and renames it to ``out`` at the end, so a crash never
    leaves a half dataset. ``progress(done, total)`` is called after every written frame (``done``
    and ``total`` count PNG images: frames, poses and the test videos' held-out frames). ``layout``:
    ``videos`` (a subfolder per train and val video) or ``flat`` (one numbered sequence per split).
    """
    p = _resolve(preset, preset_overrides)
    if appearance not in APPEARANCES:
        raise SpecError(f"appearance {appearance!r}: unknown; allowed: {', '.join(APPEARANCES)}")
    if layout not in LAYOUTS:
        raise SpecError(f"layout {layout!r}: unknown; allowed: {', '.join(LAYOUTS)}")
    out = Path(out)
    if out.exists() and (out.is_file() or any(out.iterdir())) and not overwrite:
        raise DataError(f"{out}: folder exists and is not empty; pass --overwrite (overwrite=True) to replace it")
    H, W = p.height, p.width
    splits = (("train", p.train_videos, p.train_frames), ("val", p.val_videos, p.val_frames),
              ("test", p.test_videos, p.test_frames))  # fmt: skip
    # Every train/val frame writes an image and a pose; a test video its first image, all poses and, held
    # out, all its frames.
    total = sum(n_v * (n_f + (1 + n_f if split == "test" else n_f)) for split, n_v, n_f in splits)
    shared = Appearance.random(_seed_rng(seed, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private (0700); out should be an ordinary folder
    done = 0
    try:
        for s, (split, n_videos, n_frames) in enumerate(splits, start=1):
            for v in range(n_videos):
                test = split == "test"
                flat = layout == "flat" and not test  # the lab's test split is one folder per video
                name = "" if flat else str(v) if test else f"video{v:03d}"
                first = v * n_frames if flat else 0  # a flat split numbers its frames on, video after video
                img_dir, lab_dir = tmp / split / f"{split}_img" / name, tmp / split / f"{split}_label" / name
                truth_dir = tmp / TRUTH_DIR / name
                for d in (img_dir, lab_dir, *([truth_dir] if test else [])):
                    d.mkdir(parents=True, exist_ok=flat)
                look = shared if appearance == "same" else Appearance.random(_seed_rng(seed, s, v, 1))
                bg = _background(look, H, W)
                kps = dance(n_frames, _seed_rng(seed, s, v, 0), p.speed, W / H)
                for i, kp in enumerate(kps):
                    file = f"frame{first + i}.png"
                    _pose_image(kp, H, W).save(lab_dir / file, compress_level=1)
                    done += 1
                    frame = _frame_image(kp, look, bg, H, W)
                    if not test or i == 0:  # the test split keeps only the first frame, like the lab
                        frame.save(img_dir / file, compress_level=1)
                        done += 1
                    if test:  # ... and its frames are held out, as Kaggle holds the lab's
                        frame.save(truth_dir / file, compress_level=1)
                        done += 1
                    if progress is not None:
                        progress(done, total)
            for kind in ("img", "label"):  # splits with 0 videos still get their (empty) folders
                (tmp / split / f"{split}_{kind}").mkdir(parents=True, exist_ok=True)
        meta = {
            "generator": "cvae.synth",
            "preset": preset,
            "seed": seed,
            "appearance": appearance,
            "layout": layout,
            "overrides": dict(preset_overrides),
            **asdict(p),
            "images": total,
            # The test videos' real frames (frame 0 is the given one), outside the Lab4 layout: what scores
            # a held-out prediction (cvae/data/layout.py).
            "test_truth": TRUTH_DIR,
        }
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():  # overwrite: move the old one aside first so out is never half-written
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "data")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
