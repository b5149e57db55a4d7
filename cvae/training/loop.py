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
    numerics,
    resolve_device,
    resolve_spec,
    syncs_are_free,
    use_device,
)
from cvae.errors import Pruned, Stopped, TrainingDiverged, sigterm_stops
from cvae.model import CVAE, build_model
from cvae.placement import GPU_KEY, given_gpu
from cvae.redact import redact
from cvae.spec import ExperimentSpec, dump_yaml
from cvae.tracking.tracker import LocalTracker, MultiTracker, Tracker
from cvae.training.checkpoint import restore_training, resume_checkpoint, save_checkpoint
from cvae.training.guard import DivergenceGuard
from cvae.training.schedules import schedule_values, step_tfr
from cvae.training.step import StepGradients
from cvae.training.validation import (
    VAL_SEED_OFFSET,
    Validation,
    best_weights,
    check_truth,
    reference_metrics,
    score_best,
    validate_model,
    write_media,
)


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


def build_optimizer(spec: ExperimentSpec, model: CVAE, fused: bool = False):
    """Adam or AdamW and the LR schedule of ``spec``; ``fused``: Adam's fused kernel (``Numerics.fused_adam``:
    on CUDA, one launch per step instead of several per parameter list)."""
    o = spec.optim
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    opt = cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=fused or None)
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
    nums = numerics(device, spec.train.precision, spec.train.deterministic)
    use_device(device, nums)
    torch.manual_seed(spec.seed)
    # A resumed run's checkpoint, then its data: a damaged checkpoint or changed data stops the run
    # before anything is written.
    ck = resume_checkpoint(run_dir, console) if resume else None
    recorded = RunData(run_dir, strict=True) if resume else None
    train_set, val_set, data_id = load_data(spec, device, console, recorded)
    check_truth(spec)  # the held-out test videos scored at the end, checked now
    if resume and ck is None:  # stopped before its first epoch ended: nothing to resume, it starts over
        resume = False
        history.truncate(run_dir / history.FILE, 0, 0)
    model = build_model(spec, device)  # in the memory format it trains in
    if ck is None and spec.train.init_from is not None:  # a resumed run has its own weights
        init_weights(model, spec, console)
    opt, sched = build_optimizer(spec, model, fused=nums.fused_adam)
    state = State() if ck is None else resume_from(ck, run_dir, model, opt, sched)
    step = StepGradients(spec, device)  # compiled whole with train.compile
    if spec.train.compile:
        compile_model(model)  # the five modules, in place, for the validation rollouts
    clips = TrainingClips(spec, train_set)
    # Only now, with the data and clips checked: bad input leaves no run folder behind.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / run_folder.SPEC_FILE).write_text(f"# data: {run_folder.describe_data(data_id)}\n" + dump_yaml(spec))
    refs = reference_metrics(val_set)
    guard = DivergenceGuard(device, spec.train.on_nan, spec.train.max_skipped_batches, state.skipped_batches)
    epoch_row = history.last_epoch_row(run_dir / history.FILE) if resume else {}
    tracker = MultiTracker([LocalTracker(), *trackers])
    config = spec.to_dict() | {run_folder.DATA_KEY: data_id, "device": str(device), "numerics": nums.as_dict()}
    if device.type == "cpu":
        config["threads"] = torch.get_num_threads()
    if (gpu := given_gpu()) is not None:  # the GPU a sweep, confirm or report gave this run (--gpus)
        config[GPU_KEY] = gpu
    with sigterm_stops():
        try:
            tracker.start(run_dir, config, resume)
            if resume and state.epoch:
                tracker.summary(summary(state, epoch_row))  # a kill can land between last.pt and the summary
            while state.epoch < spec.train.epochs:
                epoch = state.epoch + 1
                epoch_row = train_epoch(spec, model, opt, step, clips, state, guard, tracker)
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
    plot_curves(run_dir, spec.loss.kl_reduction)
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
    return validate_model(model, val_set, spec.seed + VAL_SEED_OFFSET, spec.train.precision)


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
    step: StepGradients,
    clips: TrainingClips,
    state: State,
    guard: DivergenceGuard,
    tracker: Tracker,
) -> dict[str, float]:
    """Epoch ``state.epoch + 1``: its optimizer steps (advancing ``state.step``), a logged row every
    ``tracking.log_every`` steps, read back from the device every ``tracking.sync_every`` (``StepRows``);
    returns the epoch's row: means of the applied steps' loss, mse, kl and grad norm, the
    schedules' last values, the learning rate and the speed."""
    index = state.epoch  # the epoch's position (from 0) for the schedules and the shuffle
    t0, step0, skipped0 = time.perf_counter(), state.step, guard.skipped
    skipping = spec.train.on_nan == "skip_batch"
    lr = opt.param_groups[0]["lr"]  # the scheduler steps after the epoch
    tracker.on_epoch_start(index + 1, clips.steps[index], state.step)
    rows = StepRows(guard, tracker, sync_every(spec, step.device))
    sums: dict[str, torch.Tensor] = {}
    try:
        for frames, poses in clips.batches(index):
            beta, tfr = schedule_values(spec, index, state.step, clips.total_steps)
            out = step(model, opt, frames, poses, beta, step_tfr(spec, index, tfr))
            state.step += 1
            applied = guard.step(out, state.step, beta, opt)
            if applied:
                opt.step()
                for k, v in out.items():
                    sums[k] = sums.get(k, 0) + v  # on the device: no host sync
            else:  # train.on_nan = skip_batch: this batch changes no weight and no optimizer state
                opt.zero_grad(set_to_none=True)
                state.skipped_batches = guard.skipped
            if state.step % spec.tracking.log_every == 0:
                host = {"train/skipped_batches": guard.skipped} if skipping else {}
                host |= {"train/beta": beta, "train/tfr": tfr, "train/lr": lr, "epoch": index + 1}
                rows.add(state.step, out if applied else None, host)
            if state.step % rows.every == 0:
                rows.sync(state.step)
        rows.sync(state.step)  # before anything is saved
    except TrainingDiverged:  # detected on the host (the CPU, skip_batch): the rows before it still count
        rows.sync(state.step, diverged=True)
        raise
    train_s = time.perf_counter() - t0
    n_steps = state.step - step0
    n_applied = n_steps - (guard.skipped - skipped0)
    means = dict(zip(sums, torch.stack(list(sums.values())).tolist(), strict=True)) if n_applied else {}  # one read
    row = {f"epoch/{k}": means[k] / n_applied if n_applied else math.nan for k in out}
    if skipping:
        row["train/skipped_batches"] = guard.skipped
    row |= {"epoch/beta": beta, "epoch/tfr": tfr, "epoch/lr": lr}
    row["perf/frames_per_s"] = n_steps * spec.train.batch_size * (spec.data.clip_len - 1) / train_s
    row["perf/epoch_s"] = train_s
    return row


GPU_SYNC_EVERY = 50  # tracking.sync_every null on a GPU: one read of the device per this many steps


def sync_every(spec: ExperimentSpec, device: torch.device) -> int:
    """Steps between reads of the logged values (``tracking.sync_every``; null: every logged row where a
    read is free, else every ``GPU_SYNC_EVERY`` steps, a multiple of ``tracking.log_every``)."""
    every, log = spec.tracking.sync_every, spec.tracking.log_every
    if every is None:
        every = log if syncs_are_free(device) else max(log, GPU_SYNC_EVERY // log * log)
    return every


class StepRows:
    """The logged rows of an epoch's steps, kept on the device until ``sync`` reads them all in one
    transfer (with the divergence guard's state) and hands them to the trackers in step order: the
    same rows and values as reading each when it is logged, without a host sync per row."""

    def __init__(self, guard: DivergenceGuard, tracker: Tracker, every: int) -> None:
        self.guard, self.tracker, self.every = guard, tracker, every
        self.pending: list[tuple[int, list[str], torch.Tensor | None, dict[str, Any]]] = []
        self.synced_at: int | None = None  # the step of the last read

    def add(self, step: int, out: dict[str, torch.Tensor] | None, host: dict[str, Any]) -> None:
        """Step ``step``'s row: the step's values (None: a skipped batch logs none) and the host's."""
        # A copy: a CUDA-graph replay may overwrite the step's outputs before they are read.
        values = None if out is None else torch.stack([v.detach().float() for v in out.values()])
        self.pending.append((step, list(out or {}), values, host))

    def sync(self, step: int, diverged: bool = False) -> None:
        """Read and log the pending rows. A non-finite loss the guard recorded on the device (read in the
        same transfer) ends the run after logging the rows before it; ``diverged``: the host already
        found one (nothing more to read of the guard)."""
        if step == self.synced_at:  # read already, nothing since (the epoch ended on a sync point)
            return
        self.synced_at = step
        check = self.guard.deferred and not diverged
        parts = [v for _, _, v, _ in self.pending if v is not None]
        if check:
            parts.append(self.guard.first_bad.reshape(1))
        if not parts and not self.pending:
            return
        # One read of the device: float64 holds every float32 value and step number exactly.
        flat = torch.cat(parts).double().tolist() if parts else []
        bad = int(flat.pop()) if check else 0
        at = 0
        for row_step, keys, v, host in self.pending:
            if bad and row_step >= bad:
                break
            logged = {}
            if v is not None:
                logged = {f"train/{k}": x for k, x in zip(keys, flat[at : at + len(keys)], strict=True)}
                at += len(keys)
            self.tracker.log(logged | host, row_step)
        self.pending.clear()
        if bad:
            self.guard.raise_diverged(bad, step)


# --------------------------------------------------------------------------- validation, checkpoints


def validate_epoch(run_dir: Path, spec, model, opt, sched, val_set: VideoSet, refs, state: State, tracker):
    """Validate after epoch ``state.epoch``: score the rollouts, save best.pt when they improve,
    write and log the media. Returns the metrics for the epoch's row."""
    v0 = time.perf_counter()
    val = validate_model(model, val_set, spec.seed + VAL_SEED_OFFSET, spec.train.precision)
    if val.metrics["val/psnr"] > state.best_psnr:
        state.best_psnr, state.best_epoch = val.metrics["val/psnr"], state.epoch
        save_checkpoint(run_dir, run_folder.BEST, spec, model, opt, sched, state.counters())
        state.best_val = val if spec.tracking.media == "end" else None
    if spec.tracking.media == "every":  # the per-frame curve only when best: W&B's chart shows the last one logged
        best = state.best_epoch == state.epoch
        log_validation_media(run_dir, val, val_set, refs, spec, state.epoch, state.step, tracker, curve=best)
    return val.metrics | refs | {"perf/val_s": time.perf_counter() - v0}


def log_validation_media(
    run_dir: Path, val: Validation, val_set: VideoSet, refs, spec, epoch: int, step, tracker, curve: bool = True
):
    """The rollout GIF and per-frame PSNR plot into the run folder, and to the trackers; with ``curve``
    the per-frame PSNR as a curve too (a tracker's chart of it shows the last one logged: the best's)."""
    gif, plot = write_media(
        run_dir / "media" / f"val_epoch{epoch:03d}.gif",
        run_dir / "plots" / "val_psnr.png",
        val,
        val_set,
        refs,
        f"{run_folder.run_name(spec.tracking.wandb.name, run_dir)}: validation rollout, epoch {epoch}",
        spec.tracking.gif_frames,
    )
    tracker.log_media("val/rollout", gif, step)
    tracker.log_media("val/psnr_plot", plot, step)  # the per-frame PSNR with its references, as drawn here
    if curve:
        ys = val.curve.tolist()
        tracker.log_curve("val/psnr_per_frame", list(range(1, len(ys) + 1)), ys, "frame", "psnr", step)


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


def plot_curves(run_dir: Path, kl_reduction: str | None = None) -> None:
    """Training curves per epoch from history.jsonl -> plots/curves.png, each panel titled with what
    it shows and its unit (``kl_reduction``: how the KL was reduced, its unit)."""
    from cvae.tracking.media import history_series, plot_panels, writing

    rows = history.epoch_rows(history.read(run_dir / history.FILE))
    series = history_series(rows, CURVE_KEYS)
    path = run_dir / "plots" / "curves.png"
    with writing(path):
        panels = [(k, history.title(k, kl_reduction), False) for k in CURVE_KEYS if k in series]
        plot_panels(path, {"": series}, panels)
