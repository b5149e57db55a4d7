"""What a trained model is used for: ``cvae evaluate``, ``cvae predict`` and ``cvae score``.

The model comes from a run folder (its ``best`` or ``last`` checkpoint, its own spec.yaml) or from a
checkpoint file: a cvae checkpoint (its spec inside) or one saved by the template's Trainer (with
``experiments/lab4_template.yaml`` unless ``--spec`` names another), cvae/training/weights.py.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cvae import run_folder
from cvae.data.frames import load_split, load_test
from cvae.device import numerics, resolve_device, use_device
from cvae.errors import RunDirError, UserError
from cvae.history import REFERENCE_NAMES, TRIVIAL_REFERENCES
from cvae.model import CVAE, build_model
from cvae.spec import ExperimentSpec, apply_overrides, load_spec, validate_spec
from cvae.training.rollout import batches_by_length, reference_scores, rollout
from cvae.training.validation import (
    VAL_SEED_OFFSET,
    heldout_references,
    reference_metrics,
    score_heldout,
    validate_model,
    write_media,
)
from cvae.training.weights import load_weights, read_weights

TEMPLATE_SPEC = Path(__file__).resolve().parents[2] / "experiments" / "lab4_template.yaml"
GIF_NAMES = ("name", "lab")  # <video>.gif, or the template's pred_seq<k>.gif


@dataclass
class Trained:
    """A model ready to roll out, and where it came from."""

    spec: ExperimentSpec
    model: CVAE
    checkpoint: Path  # the file the weights came from
    run_dir: Path | None  # the run folder, when the model came from one
    epoch: int | None  # epochs done when it was saved (None: the template's checkpoint does not say)
    notes: list[str] = field(default_factory=list)  # what reading a template checkpoint found

    @property
    def label(self) -> str:
        return f"{self.checkpoint.name}" + (f", epoch {self.epoch}" if self.epoch is not None else "")


def load_trained(
    source: Path,
    ckpt: str = "best",
    device: str | None = None,
    spec_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    eval_batchnorm: str | None = None,
) -> Trained:
    """The model of a run folder (checkpoint ``ckpt``: best or last) or of a checkpoint file, on
    ``device`` (``auto``, ``cpu``, ``cuda``...; None: the spec's ``train.device``). A file's spec is
    ``spec_file`` (with ``overrides``), else the one a cvae checkpoint holds, else the template's.
    ``eval_batchnorm`` (batch, running) overrides ``model.eval_batchnorm`` for this use."""
    source = Path(source)
    if ckpt not in ("best", "last"):
        raise UserError(f"--ckpt {ckpt!r}: allowed: best, last")
    if source.is_dir():
        if spec_file is not None or overrides:
            raise UserError(
                f"{source}: a run folder uses its own spec.yaml; --spec and --set go with a checkpoint file"
            )
        if not run_folder.is_run(source):
            raise RunDirError(f"{source}: not a run folder ({run_folder.SPEC_FILE} missing)")
        spec, where, run_dir = load_spec(source / run_folder.SPEC_FILE), str(source / run_folder.SPEC_FILE), source
        path = run_folder.checkpoint_path(source, f"{ckpt}.pt")
        weights = read_weights(path)
    elif source.is_file():
        if ckpt != "best":
            raise UserError(f"--ckpt {ckpt}: goes with a run folder; {source} is a checkpoint file")
        path, run_dir, weights = source, None, read_weights(source)
        if spec_file is None and weights.spec is not None:
            spec, where = (
                validate_spec(apply_overrides(weights.spec, list(overrides)), f"the spec in {path}"),
                str(path),
            )
        else:
            spec_file = spec_file or TEMPLATE_SPEC
            spec, where = load_spec(spec_file, list(overrides)), str(spec_file)
    else:
        raise RunDirError(f"{source}: no such run folder or checkpoint file")
    if eval_batchnorm is not None:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"eval_batchnorm": eval_batchnorm})})
    key = f"train.device of {where} (override: --device)"
    dev = resolve_device(spec.train.device, key) if device is None else resolve_device(device, "--device")
    # The run's numerics (fp32 is IEEE on a GPU too); on the CPU the tuned allocator, with which batched
    # rollouts run faster (docs/performance.md).
    use_device(dev, numerics(dev, spec.train.precision, spec.train.deterministic))
    model = build_model(spec, dev)  # in the memory format it trained in; the rollout follows the model
    load_weights(model, weights, path, where)
    model.eval()
    return Trained(spec, model, path, run_dir, weights.epoch, weights.notes)


SPLITS = ("val", "test")  # what `cvae evaluate --split` scores: the val videos, or the held-out test videos


@dataclass
class Evaluation:
    """What ``cvae evaluate`` measured, and where it wrote it."""

    metrics: dict[str, float]
    pose_shift: int
    out_dir: Path
    split: str = "val"
    notes: list[str] = field(default_factory=list)  # printed under the table

    def table(self):
        from cvae.terminal import Col, table

        m, p = self.metrics, f"{self.split}/"
        rows = [
            ["model (z from the prior)", f"{m[p + 'psnr']:.2f}"],
            [
                f"{REFERENCE_NAMES['val/psnr_shifted_pose']} (poses shifted by {self.pose_shift} frames)",
                f"{m[p + 'psnr_shifted_pose']:.2f}",
            ],
            *(
                [name, f"{m[p + key.split('/', 1)[1]]:.2f}"]
                for key, name in REFERENCE_NAMES.items()
                if key in TRIVIAL_REFERENCES and p + key.split("/", 1)[1] in m
            ),
        ]
        if self.split == "test":
            title = (
                f"held-out test videos ({m['test/videos']} videos; PSNR over all their predicted frames, as the "
                f"leaderboard scores them, dB) -> {self.out_dir}"
            )
        else:
            title = f"validation rollout (PSNR over frames 1..T-1, dB) -> {self.out_dir}"
        return table(title, ["predictor", Col("mean PSNR (dB)", numeric=True)], rows, self.notes)


def evaluate_run(
    source: Path,
    ckpt: str = "best",
    pose_shift: int | None = None,
    console=None,
    device: str | None = None,
    out: Path | None = None,
    spec_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    eval_batchnorm: str | None = None,
    split: str = "val",
    z_seed: int | None = None,
) -> Evaluation:
    """The rollouts of a trained model (``load_trained``'s arguments) on the val videos, or with ``split``
    ``test`` on the held-out test videos where the data has their true frames (else a DataError saying
    why). ``out`` (default RUN/eval or RUN/eval-test, or ``<file>-eval[-test]`` beside a checkpoint file;
    ``-z<seed>`` added for other z draws than training's) gets metrics.json, the per-frame CSV and PNG,
    the GIF. ``z_seed``: the seed of the z draws (default: the spec's seed + 7919, what the run's
    validations drew)."""
    from cvae.data.frames import load_truth
    from cvae.data.layout import no_truth, truth_folder
    from cvae.data.root import RunData, ensure_data, scan_dataset
    from cvae.errors import DataError
    from cvae.terminal import task

    if split not in SPLITS:
        raise UserError(f"--split {split!r}: allowed: {', '.join(SPLITS)}")
    trained = load_trained(source, ckpt, device, spec_file, overrides, eval_batchnorm)
    spec, model = trained.spec, trained.model
    say_notes(trained, console)
    if trained.run_dir is None:
        require_data(spec, spec_file or trained.checkpoint)
    recorded = RunData(trained.run_dir, strict=False) if trained.run_dir is not None else None
    seed = spec.seed + VAL_SEED_OFFSET if z_seed is None else z_seed
    t, dev, notes = spec.train, next(model.parameters()).device, []
    if split == "test":
        root = ensure_data(spec, console, recorded)
        if truth_folder(root) is None:
            raise DataError(
                f"--split test: no test truth here: {no_truth(root)}; `cvae evaluate` scores the val videos"
            )
        with task(console, "loading the test videos' true frames") as update:
            videos = load_truth(root, spec.data.frame_size, update).to(dev)
        with task(console, "rolling out test videos"):
            result = score_heldout(model, videos, seed, t.precision, pose_shift)
        refs = heldout_references(videos)
    else:
        _, val_files = scan_dataset(spec, console, recorded)  # a warning when the data changed since training
        with task(console, "loading val frames") as update:
            videos = load_split(val_files, spec.data.frame_size, update).truncated(spec.data.val_len).to(dev)
        with task(console, "rolling out val videos"):
            result = validate_model(model, videos, seed, t.precision, pose_shift)
        refs = reference_metrics(videos)
        root = val_files.root
        notes.append(
            f"{root} holds the test videos' true frames: `cvae evaluate {source} --split test` scores them (held out)"
            if truth_folder(root) is not None
            else f"no test truth here: {no_truth(root)}"
        )
    metrics = result.metrics | refs | {"epoch": trained.epoch, "pose_shift": result.pose_shift, "z_seed": seed}
    metrics |= {"checkpoint": str(trained.checkpoint), "eval_batchnorm": spec.model.eval_batchnorm, "split": split}
    if out is None:  # RUN/eval is the checkpoint's validation as trained (cvae compare reads it): other draws go beside
        suffix = ("eval" if split == "val" else "eval-test") + (
            "" if seed == spec.seed + VAL_SEED_OFFSET else f"-z{seed}"
        )
        out = (
            trained.run_dir / suffix
            if trained.run_dir is not None
            else trained.checkpoint.with_name(f"{trained.checkpoint.stem}-{suffix}")
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / "psnr_per_frame.csv", "w", newline="") as f:  # val: the first video's; test: every video's
        w = csv.writer(f)
        w.writerow(["video"] * (split == "test") + ["frame", "psnr", "psnr_shifted_pose"])
        for name, r in zip(videos.names, result.videos[: None if split == "test" else 1], strict=False):
            for i, (a, b) in enumerate(zip(r.curve.tolist(), r.shifted_curve.tolist(), strict=True), start=1):
                w.writerow([name] * (split == "test") + [i, f"{a:.4f}", f"{b:.4f}"])
    what = "test video " + videos.names[0] if split == "test" else "the first val video"
    title = f"{spec.name} ({trained.label}): per-frame PSNR, {what}"
    shown = {k.replace("test/", "val/"): v for k, v in refs.items()}  # the legend's names
    if split == "test" and len(videos.lengths) > 1:
        first = reference_scores(videos.video(0)[0].float() / 255)  # the plot is the first video's alone
        shown = {"val/psnr_repeat_first": first[0], "val/psnr_mean_frame": first[1]}
    write_media(out / "rollout.gif", out / "psnr_per_frame.png", result, videos, shown, title, len(result.pred))
    return Evaluation(metrics, result.pose_shift, out, split, notes)


def say_notes(trained: Trained, console) -> None:
    if console is not None:
        for note in trained.notes:
            console.print(f"note: {trained.checkpoint}: {note}", markup=False)


def require_data(spec: ExperimentSpec, spec_source: Path) -> None:
    """A checkpoint file is evaluated on the data its spec names, never on data generated for it."""
    from cvae.data.root import check_root, near_misses
    from cvae.errors import DataError

    root = Path(spec.data.root)
    if not root.exists():
        raise DataError(
            f"data.root {str(root)!r} (of {spec_source}): folder not found{near_misses(root)}; point it at the "
            "dataset the checkpoint's model was trained on: --set data.root=PATH"
        )
    check_root(root)


def predict_run(
    source: Path,
    data: Path,
    out: Path,
    ckpt: str = "best",
    overwrite: bool = False,
    console=None,
    device: str | None = None,
    spec_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    eval_batchnorm: str | None = None,
    gif_names: str = "name",
) -> tuple[list[Path], dict[str, float] | None]:
    """Roll out each test video from its first frame and poses: a GIF each (prediction | pose),
    ``<video>.gif`` or with ``gif_names`` ``lab`` the template's ``pred_seq<k>.gif`` (k from 0 in the
    test split's order), and ``submission.csv`` in the template's Kaggle format (cvae/runs/submission.py).
    The model: ``load_trained``'s arguments. Where ``data`` holds the test videos' true frames, the
    submission's frames are scored against them as the leaderboard scores it (``submission_scores``),
    written to ``test_scores.json`` and returned beside the GIFs (else None)."""
    from cvae.runs.submission import frame_values, write_submission
    from cvae.terminal import task
    from cvae.tracking.media import labelled_panels, write_gif

    if gif_names not in GIF_NAMES:
        raise UserError(f"--gif-names {gif_names!r}: allowed: {', '.join(GIF_NAMES)}")
    if (out / "submission.csv").exists() and not overwrite:
        raise RunDirError(f"{out / 'submission.csv'}: exists; pass --overwrite to replace it")
    trained = load_trained(source, ckpt, device, spec_file, overrides, eval_batchnorm)
    spec, model = trained.spec, trained.model
    say_notes(trained, console)
    dev = next(model.parameters()).device
    videos = load_test(data, spec.data.frame_size)
    out.mkdir(parents=True, exist_ok=True)
    preds: dict[int, torch.Tensor] = {}
    with task(console, "rolling out test videos", total=len(videos)) as update:
        for vids in batches_by_length([len(v.poses) for v in videos]):  # a video rolls out the same in any batch
            pred = rollout(
                model,
                torch.stack([videos[i].first_frame for i in vids]).to(dev).float() / 255,
                torch.stack([videos[i].poses for i in vids]).to(dev),
                spec.seed + VAL_SEED_OFFSET,
                spec.train.precision,
            )
            preds |= dict(zip(vids, pred.cpu(), strict=True))
            update(len(preds))
    written = []
    with task(console, "writing GIFs", total=len(videos)) as update:
        for k, v in enumerate(videos):
            name = f"pred_seq{k}.gif" if gif_names == "lab" else f"{v.name}.gif"
            written.append(write_gif(out / name, labelled_panels({"prediction": preds[k], "pose": v.poses})))
            update(k + 1)
    values = [frame_values(preds[k]) for k in range(len(videos))]
    write_submission(out / "submission.csv", values)
    scores = submission_scores(data, spec.data.frame_size, values)
    if scores is not None:
        (out / "test_scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    return written, scores


def submission_scores(root: Path, size: tuple[int, int], values: list) -> dict[str, float] | None:
    """A submission's frames (per test video, ``frame_values``: 8-bit, as the file holds them) against the
    test videos' true frames under ``root``, as the leaderboard scores them: ``test/psnr``, the mean PSNR
    over every predicted frame (1..T-1) of every video, beside the trivial references; None where
    ``root`` has no test truth."""
    from cvae.data.frames import load_truth
    from cvae.data.layout import truth_folder
    from cvae.training.rollout import psnr
    from cvae.training.validation import pooled

    if truth_folder(root) is None:
        return None
    truth = load_truth(root, size)
    means = []
    for v, frames in enumerate(values):
        real = truth.video(v)[0].float() / 255
        pred = torch.from_numpy(frames).float().unflatten(1, real.shape[1:]) / 255
        means.append(psnr(pred[1:], real[1:]).mean().item())
    return {"test/psnr": pooled(means, truth.lengths), **heldout_references(truth), "test/videos": len(values)}


def score_submission(submission: Path, root: Path, size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """Score a submission.csv made from ``cvae data val-as-test`` output against the real val frames.

    Returns {video name: {"psnr", "repeat_first", "mean_frame"}} (mean over frames 1..T-1).
    """
    from cvae.data.layout import scan_split
    from cvae.data.tools import val_as_test_names
    from cvae.errors import DataError
    from cvae.runs.submission import read_submission, split_videos
    from cvae.training.rollout import psnr, reference_scores

    ids, frames = read_submission(submission, size)
    val_set = load_split(scan_split(root, "val"), size)
    expected = [(name, n) for i, n in enumerate(val_set.lengths) for name in val_as_test_names(i)]
    scores = {}
    for name, pred in split_videos(submission, ids, frames, expected).items():
        index = int(name.removesuffix("_shifted"))
        truth = val_set.video(index)[0].float() / 255
        if len(pred) != len(truth):
            raise DataError(f"{submission}: video {name!r} has {len(pred)} frames, the val video {len(truth)}")
        pred = torch.from_numpy(pred).float() / 255
        repeat, mean = reference_scores(truth)
        scores[name] = {"psnr": psnr(pred[1:], truth[1:]).mean().item(), "repeat_first": repeat, "mean_frame": mean}
    return scores


def score_table(scores: dict[str, dict[str, float]], submission: Path, root: Path):
    """The table of ``cvae score``."""
    from cvae.terminal import Col, table

    title = f"{submission} against the val frames of {root} (mean PSNR over frames 1..T-1, dB)"
    columns = [Col("video"), *(Col(c, numeric=True) for c in ("prediction", "repeat first frame", "mean frame"))]
    rows = [
        [name, f"{s['psnr']:.2f}", f"{s['repeat_first']:.2f}", f"{s['mean_frame']:.2f}"] for name, s in scores.items()
    ]
    return table(title, columns, rows)
