"""``train(spec, run_dir, ...)``: the training loop, its epochs, validation and checkpoints.

One callable serves every caller (``cvae.launch`` starts it for the CLI, the Optuna objective and
a W&B agent). It reads the spec, never globals; it reports only through the Tracker interface and
callbacks. The step itself (forward, loss, backward) is step.py; the epoch's clips come from
cvae/data/clips.py; validation is validation.py; non-finite losses are guard.py's.

Epochs are counted from 1 in everything a user reads (console, history, summary, plots, W&B);
``State.epoch`` is the number of epochs done, so the epoch being trained is ``State.epoch + 1``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from cvae import history, run_folder
from cvae.data.clips import TrainingClips
from cvae.data.frames import VideoSet
from cvae.data.root import RunData, load_data
from cvae.device import (
    compile_model,
    emulated_bf16_warning,
    memory_format,
    resolve_device,
    resolve_spec,
    tune_cpu_allocator,
)
from cvae.errors import Pruned, Stopped, sigterm_stops
from cvae.model import CVAE, build_model
from cvae.redact import redact
from cvae.spec import ExperimentSpec, dump_yaml
from cvae.tracking.tracker import LocalTracker, MultiTracker, Tracker
from cvae.training.checkpoint import restore_training, resume_checkpoint, save_checkpoint
from cvae.training.guard import DivergenceGuard
from cvae.training.heldout import best_weights, check_truth, score_best
from cvae.training.schedules import schedule_values, step_tfr
from cvae.training.step import forward_backward
from cvae.training.validation import VAL_SEED_OFFSET, Validation, reference_metrics, validate_model, write_media


class Callback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after epoch ``epoch`` (from 1) is checkpointed; may raise to end the run (``Pruned``)."""


@dataclass
class State:
    epoch: int = 0  # epochs done
    step: int = 0  # optimizer steps done
    best_psnr: float = -math.inf
    best_epoch: int = 0  # the epoch (from 1) of best_psnr; 0: none yet
    skipped_batches: int = 0  # train.on_nan = skip_batch: batches whose update was dropped
    best_val: Validation | None = None  # tracking.media end: the best validation's rollouts (not checkpointed)

    def counters(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best_psnr": self.best_psnr,
            "best_epoch": self.best_epoch,
            "skipped_batches": self.skipped_batches,
        }

    @classmethod
    def from_checkpoint(cls, ck: dict[str, Any]) -> State:
        return cls(ck["epoch"], ck["step"], ck["best_psnr"], ck["best_epoch"], ck.get("skipped_batches", 0))


def build_optimizer(spec: ExperimentSpec, model: CVAE):
    o = spec.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    opt = cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    if o.schedule == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(o.milestones), gamma=o.gamma)
    elif o.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.train.epochs)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


# --------------------------------------------------------------------------- the loop


def train(
    spec: ExperimentSpec,
    run_dir: str | Path,
    trackers: Sequence[Tracker] = (),
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    console=None,
) -> dict[str, Any]:
    """Train ``spec`` into ``run_dir`` (prepared by ``run_folder.prepare``); returns the summary."""
    run_dir = Path(run_dir)
    device = resolve_device(spec.train.device)
    spec = resolve_spec(spec, device)  # train.precision / channels_last `auto` -> this device's choice
    if console is not None and (warning := emulated_bf16_warning(spec.train.precision, device)):
        console.print(f"warning: {warning}", style="yellow", markup=False)
    if device.type == "cpu":
        tune_cpu_allocator()
    torch.manual_seed(spec.seed)
    # A resumed run's checkpoint, then its data: a damaged checkpoint or changed data stops the run
    # before anything is written.
    ck = resume_checkpoint(run_dir, device, console) if resume else None
    recorded = RunData(run_dir, strict=True) if resume else None
    train_set, val_set, data_id = load_data(spec, device, console, recorded)
    check_truth(spec)  # the held-out test videos scored at the end, checked now
    if resume and ck is None:  # stopped before its first epoch ended: nothing to resume, it starts over
        resume = False
        history.truncate(run_dir / history.FILE, 0, 0)
    model = build_model(spec).to(device, memory_format=memory_format(spec.train.channels_last))
    if ck is None and spec.train.init_from is not None:  # a resumed run has its own weights
        init_weights(model, spec, console)
    opt, sched = build_optimizer(spec, model)
    state = State() if ck is None else resume_from(ck, run_dir, model, opt, sched)
    if spec.train.compile:
        compile_model(model)  # the five modules, in place: the step and the rollout both use them
    clips = TrainingClips(spec, train_set)
    # Only now, with the data and clips checked: bad input leaves no run folder behind.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / run_folder.SPEC_FILE).write_text(f"# data: {run_folder.describe_data(data_id)}\n" + dump_yaml(spec))
    refs = reference_metrics(val_set)
    guard = DivergenceGuard(device, spec.train.on_nan, spec.train.max_skipped_batches, state.skipped_batches)
    epoch_row = history.last_epoch_row(run_dir / history.FILE) if resume else {}
    tracker = MultiTracker([LocalTracker(), *trackers])
    config = spec.to_dict() | {run_folder.DATA_KEY: data_id, "device": str(device)}
    if device.type == "cpu":
        config["threads"] = torch.get_num_threads()
    with sigterm_stops():
        try:
            tracker.start(run_dir, config, resume)
            if resume and state.epoch:
                tracker.summary(summary(state, epoch_row))  # a kill can land between last.pt and the summary
            while state.epoch < spec.train.epochs:
                epoch = state.epoch + 1
                epoch_row = train_epoch(spec, model, opt, clips, state, guard, tracker)
                sched.step()
                state.epoch = epoch
                if epoch % spec.train.val_every == 0 or epoch == spec.train.epochs:
                    epoch_row |= validate_epoch(run_dir, spec, model, opt, sched, val_set, refs, state, tracker)
                    if state.best_epoch == epoch:  # best.pt was just written
                        tracker.log_model(*best_model(run_dir, spec, state, data_id), final=False)
                # The epoch's row before its checkpoint: a kill in between leaves the row after last.pt's
                # step, which resume drops and writes again (the other order would lose it).
                tracker.log({"epoch": epoch, **epoch_row}, state.step)
                save_checkpoint(run_dir, run_folder.LAST, spec, model, opt, sched, state.counters(), keep_previous=True)
                tracker.summary(summary(state, epoch_row))
                for cb in callbacks:
                    cb.on_epoch_end(epoch, epoch_row)
            held_out = finish_run(run_dir, spec, val_set, refs, state, tracker, data_id)
            tracker.finish(run_folder.FINISHED)
        except BaseException as e:
            if isinstance(e, Pruned):  # a normal end for a trial: its media, curves and model as a finished run's
                with contextlib.suppress(Exception):
                    finish_run(run_dir, spec, val_set, refs, state, tracker, data_id)
            end_early(tracker, run_dir, e)
            if isinstance(e, KeyboardInterrupt) and not isinstance(e, Stopped):
                raise Stopped("Ctrl-C") from None  # one kind of stop for every caller
            raise
        return summary(state, epoch_row) | held_out


def finish_run(run_dir: Path, spec, val_set: VideoSet, refs, state: State, tracker, data_id) -> dict[str, Any]:
    """What a run that ended normally (or was pruned) writes last: with ``tracking.media: end`` the best
    epoch's GIF and plot, the training curves, the best checkpoint as a model (``log_model``) and, with
    ``tracking.test_at_end`` on data with test truth, its scores on the held-out test videos (returned)."""
    if spec.tracking.media == "end" and state.best_epoch:
        val = state.best_val or revalidate(run_dir, spec, val_set)  # resumed after its best: roll out best.pt
        log_validation_media(run_dir, val, val_set, refs, spec, state.best_epoch, state.step, tracker)
    plot_curves(run_dir)
    held_out: dict[str, Any] = {}
    if state.best_epoch:
        tracker.log_model(*best_model(run_dir, spec, state, data_id), final=True)
        if spec.tracking.test_at_end:
            held_out = score_best(run_dir, spec, val_set.frames.device, state.best_epoch)
            tracker.summary(held_out)
    return held_out


def revalidate(run_dir: Path, spec, val_set: VideoSet) -> Validation:
    """The validation of best.pt's weights (the same rollouts, seed and settings as when it was saved)."""
    model = best_weights(run_dir, spec, val_set.frames.device)
    t = spec.train
    return validate_model(model, val_set, spec.seed + VAL_SEED_OFFSET, t.precision, t.channels_last)


def best_model(run_dir: Path, spec: ExperimentSpec, state: State, data_id: dict[str, Any]) -> tuple[Path, dict]:
    """best.pt and what a model registry keeps beside it: its epoch and score, the spec, the data."""
    meta = {"epoch": state.best_epoch, "val/psnr": state.best_psnr, "spec": spec.name, run_folder.DATA_KEY: data_id}
    return run_folder.checkpoint_path(run_dir, run_folder.BEST), meta


def end_early(tracker: Tracker, run_dir: Path, e: BaseException) -> None:
    """Close the trackers of a run that ended early, in the state the exception says: ``pruned``
    (a sweep's pruner), ``stopped`` (SIGTERM or Ctrl-C: resumable) or ``failed``."""
    if isinstance(e, Pruned):
        status, reason = run_folder.PRUNED, str(e)
    elif isinstance(e, KeyboardInterrupt):
        status, reason = run_folder.STOPPED, f"{e.how if isinstance(e, Stopped) else 'Ctrl-C'}; resumes with --resume"
    else:
        status, reason = run_folder.FAILED, redact(f"{e.__class__.__name__}: {e}")
    try:
        tracker.finish(status, reason)
    except Exception:  # e.g. the full disk that stopped the run: its error is the one to report
        pass


def train_epoch(
    spec: ExperimentSpec,
    model: CVAE,
    opt: torch.optim.Optimizer,
    clips: TrainingClips,
    state: State,
    guard: DivergenceGuard,
    tracker: Tracker,
) -> dict[str, float]:
    """Epoch ``state.epoch + 1``: its optimizer steps (advancing ``state.step``), a logged row every
    ``tracking.log_every`` steps; returns the epoch's row: means of the applied steps' loss, mse,
    kl and grad norm, the schedules' last values, the learning rate and the speed."""
    index = state.epoch  # the epoch's position (from 0) for the schedules and the shuffle
    t0, step0, skipped0 = time.perf_counter(), state.step, guard.skipped
    skipping = spec.train.on_nan == "skip_batch"
    lr = opt.param_groups[0]["lr"]  # the scheduler steps after the epoch
    tracker.on_epoch_start(index + 1, clips.steps[index], state.step)
    sums: dict[str, torch.Tensor] = {}
    for frames, poses in clips.batches(index):
        beta, tfr = schedule_values(spec, index, state.step, clips.total_steps)
        out = forward_backward(model, opt, frames, poses, spec, beta, step_tfr(spec, index, tfr))
        state.step += 1
        applied = guard.step(out, state.step, beta, opt)
        if applied:
            opt.step()
            for k, v in out.items():
                sums[k] = sums.get(k, 0) + v  # detached tensors: no host sync
        else:  # train.on_nan = skip_batch: this batch changes no weight and no optimizer state
            opt.zero_grad(set_to_none=True)
            state.skipped_batches = guard.skipped
        if state.step % spec.tracking.log_every == 0:
            guard.check(state.step)
            logged = {f"train/{k}": float(v) for k, v in out.items()} if applied else {}
            if skipping:
                logged["train/skipped_batches"] = guard.skipped
            logged |= {"train/beta": beta, "train/tfr": tfr, "train/lr": lr, "epoch": index + 1}
            tracker.log(logged, state.step)
    guard.check(state.step)  # before anything is saved
    train_s = time.perf_counter() - t0
    n_steps = state.step - step0
    n_applied = n_steps - (guard.skipped - skipped0)
    row = {f"epoch/{k}": float(sums[k]) / n_applied if n_applied else math.nan for k in out}
    if skipping:
        row["train/skipped_batches"] = guard.skipped
    row |= {"epoch/beta": beta, "epoch/tfr": tfr, "epoch/lr": lr}
    row["perf/frames_per_s"] = n_steps * spec.train.batch_size * (spec.data.clip_len - 1) / train_s
    row["perf/epoch_s"] = train_s
    return row


# --------------------------------------------------------------------------- validation, checkpoints


def validate_epoch(run_dir: Path, spec, model, opt, sched, val_set: VideoSet, refs, state: State, tracker):
    """Validate after epoch ``state.epoch``: score the rollouts, save best.pt when they improve,
    write and log the media. Returns the metrics for the epoch's row."""
    v0 = time.perf_counter()
    t = spec.train
    val = validate_model(model, val_set, spec.seed + VAL_SEED_OFFSET, t.precision, t.channels_last)
    if val.metrics["val/psnr"] > state.best_psnr:
        state.best_psnr, state.best_epoch = val.metrics["val/psnr"], state.epoch
        save_checkpoint(run_dir, run_folder.BEST, spec, model, opt, sched, state.counters())
        state.best_val = val if spec.tracking.media == "end" else None
    if spec.tracking.media == "every":
        log_validation_media(run_dir, val, val_set, refs, spec, state.epoch, state.step, tracker)
    return val.metrics | refs | {"perf/val_s": time.perf_counter() - v0}


def log_validation_media(run_dir: Path, val: Validation, val_set: VideoSet, refs, spec, epoch: int, step, tracker):
    """The rollout GIF and per-frame PSNR plot into the run folder, and to the trackers."""
    gif, plot = write_media(
        run_dir / "media" / f"val_epoch{epoch:03d}.gif",
        run_dir / "plots" / "val_psnr.png",
        val,
        val_set,
        refs,
        f"{spec.name}: validation rollout, epoch {epoch}",
        spec.tracking.gif_frames,
    )
    tracker.log_media("val/rollout", gif, step)
    tracker.log_media("val/psnr_plot", plot, step)  # the per-frame PSNR with its references, as drawn here
    curve = val.curve.tolist()
    tracker.log_curve("val/psnr_per_frame", list(range(1, len(curve) + 1)), curve, "frame", "psnr", step)


def resume_from(ck: dict[str, Any], run_dir: Path, model, opt, sched) -> State:
    """Restore a checkpoint's state and drop the history logged after it (an epoch that did not
    finish), so a resumed run's history holds every step and epoch exactly once."""
    restore_training(ck, model, opt, sched)
    history.truncate(run_dir / history.FILE, ck["step"], ck["epoch"])
    return State.from_checkpoint(ck)


def init_weights(model: CVAE, spec: ExperimentSpec, console=None) -> None:
    """``train.init_from``'s weights into the new model (a cvae or a template checkpoint), with what
    the file said that is not applied."""
    from cvae.training.weights import load_weights, read_weights

    path = Path(spec.train.init_from)
    weights = read_weights(path)
    load_weights(model, weights, path, "this spec (train.init_from)")
    if console is not None:
        console.print(
            f"weights from {path} ({'the template' if weights.source == 'template' else 'cvae'})", markup=False
        )
        for note in weights.notes:
            console.print(f"note: {path}: {note}", markup=False)


def summary(state: State, last: dict[str, float]) -> dict[str, Any]:
    """summary.json's values: epochs and steps done, the best validation and the last one."""
    out: dict[str, Any] = {"epochs_done": state.epoch, "steps": state.step}
    if state.best_epoch > 0:
        out |= {"best/val_psnr": state.best_psnr, "best/epoch": state.best_epoch}
    out |= {f"final/{k.split('/', 1)[1]}": v for k, v in last.items() if k.startswith("val/")}
    return out


CURVE_KEYS = ("epoch/loss", "epoch/mse", "epoch/kl", "epoch/beta", "epoch/tfr", "val/psnr")


def plot_curves(run_dir: Path) -> None:
    """Training curves per epoch from history.jsonl -> plots/curves.png."""
    from cvae.tracking.media import history_series, plot_panels, writing

    rows = history.epoch_rows(history.read(run_dir / history.FILE))
    series = history_series(rows, CURVE_KEYS)
    path = run_dir / "plots" / "curves.png"
    with writing(path):
        plot_panels(path, {"": series}, [(k, k, False) for k in CURVE_KEYS if k in series])
