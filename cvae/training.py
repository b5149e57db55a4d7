"""``train(spec, ...)``: the training loop of DESIGN.md section 1, validation and checkpoints.

One callable serves every caller (the CLI, the Optuna objective, a W&B agent). It reads the
spec, never globals; it reports only through the Tracker interface and callbacks.

Step on a clip x of T frames (B, T, 3, H, W), as in the lab:
    out = x[0]; for t in 1..T-1: prev = x[t-1] if teacher forcing else out,
    z ~ q(z | x_t or x_{t-1}, pose_t), out = G(Fusion(E(prev), P(pose_t), z)),
    loss += MSE(out, x[t]) + beta * KL(q || N(0, I)).
Frames that do not depend on the model's own outputs (the real frames, every pose) are encoded
in one batched call per clip instead of one call per time step; the arithmetic is the same.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from cvae import checkpoint
from cvae.data import VideoSet, clip_starts, epoch_batches, gather, load_split, scan_split
from cvae.device import (
    autocast,
    compile_model,
    emulated_bf16_warning,
    memory_format,
    resolve_device,
    resolve_spec,
    syncs_are_free,
    tune_cpu_allocator,
)
from cvae.errors import DataError, RunDirError, TrainingDiverged
from cvae.model import CVAE, build_model, kl_divergence, reparameterize
from cvae.rollout import batches_by_length, reference_scores, rollout, score, shift_poses
from cvae.schedules import beta as beta_at
from cvae.schedules import teacher_forcing_ratio
from cvae.spec import ExperimentSpec, dump_yaml
from cvae.tracking import LocalTracker, MultiTracker, Tracker
from cvae.wandb_tracker import redact

VAL_SEED_OFFSET = 7919  # validation z draws: seeded apart from the training noise


class Callback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch's checkpoint; may raise to stop (e.g. optuna.TrialPruned)."""


# --------------------------------------------------------------------------- run folder


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite a run unless asked; resume needs a run with a checkpoint."""
    has_run = (run_dir / "spec.yaml").exists() or (run_dir / "checkpoints").exists()
    if resume:
        if not (run_dir / "spec.yaml").exists():
            raise RunDirError(f"{run_dir}: no run to resume here (spec.yaml missing)")
        return
    if has_run and not overwrite:
        raise RunDirError(
            f"{run_dir}: already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or --run-dir for a new folder"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a folder")
    if has_run and overwrite:
        shutil.rmtree(run_dir)


def ensure_data(spec: ExperimentSpec, console=None) -> Path:
    """The dataset folder; a missing one is generated when the spec names a synthetic preset."""
    from cvae.console import task

    root = Path(spec.data.root)
    if root.exists():
        return root
    if spec.data.preset is None:
        raise DataError(
            f"data.root {str(root)!r}: folder not found, and data.preset is null "
            "(set data.preset to tiny|small|lab4 to generate synthetic data there)"
        )
    from cvae.synth import synthesize

    with task(console, f"synthesizing {spec.data.preset} data -> {root}") as update:
        synthesize(root, spec.data.preset, seed=spec.data.synth_seed, appearance=spec.data.appearance, progress=update)
    return root


def check_clips(spec: ExperimentSpec, lengths: list[int]) -> None:
    """Every epoch gets at least one batch of clips from training videos of these lengths."""
    n_clips = sum(n // spec.data.clip_len for n in lengths)
    if n_clips == 0:
        raise DataError(
            f"{spec.data.root}: no training clip fits: data.clip_len {spec.data.clip_len} exceeds the longest "
            f"video ({max(lengths)} frames)"
        )
    if min(steps_per_epoch(spec, n_clips)) == 0:
        raise DataError(
            f"{spec.data.root}: {n_clips} training clips of data.clip_len {spec.data.clip_len} frames, too few "
            f"for one batch of train.batch_size ({spec.train.batch_size}) at the data fraction used"
        )


def load_data(spec: ExperimentSpec, device: torch.device, console=None) -> tuple[VideoSet, VideoSet]:
    from cvae.console import task

    root = ensure_data(spec, console)
    # The layout of both splits and the clip count first: bad input stops before anything is decoded
    # (or cached).
    check_clips(spec, [len(v.pairs) for v in scan_split(root, "train")])
    scan_split(root, "val")
    sets = []
    for split in ("train", "val"):
        with task(console, f"loading {split} frames") as update:
            sets.append(load_split(root, split, spec.data.frame_size, update).to(device))
    return sets[0], sets[1].truncated(spec.data.val_len)


# --------------------------------------------------------------------------- one step


def train_step(
    model: CVAE, x: torch.Tensor, pose: torch.Tensor, spec: ExperimentSpec, beta: float, tfr: float
) -> dict[str, torch.Tensor]:
    """Forward and backward on one batch of clips x, pose: (B, T, 3, H, W) in [0, 1].

    Returns the summed loss (optimized) and the per-predicted-frame mse and kl (logged), as
    detached tensors (no host sync here).

    What does not depend on the model's own outputs runs in one batched call over all time steps
    (same arithmetic as the lab's per-step calls, in bigger convolutions): the real frames, the
    poses, the posterior when it encodes the target, and with teacher forcing certain (tfr >= 1,
    known on the host: the coins are uniform in [0, 1)) the whole clip.
    """
    B, T = x.shape[:2]
    n = T - 1
    fmt = memory_format(spec.train.channels_last)
    frames = x.flatten(0, 1).contiguous(memory_format=fmt)  # (B*T, 3, H, W)
    # train.activation_checkpointing: encoder, posterior and decoder calls recompute their
    # activations in the backward pass, B images at a time (the PoseEncoder, whose BatchNorm
    # statistics depend on its whole batch, keeps its activations).
    run = checkpointed(B) if spec.train.activation_checkpointing else lambda fn, *args: fn(*args)
    with autocast(x.device, spec.train.precision):
        f_real = run(model.frame_encoder, frames).unflatten(0, (B, T))  # (B, T, F, H, W)
        l_all = model.pose_encoder(pose[:, 1:].flatten(0, 1).contiguous(memory_format=fmt)).unflatten(0, (B, n))
        # Teacher forcing: one coin per clip (lab) or per clip and time step (scheduled sampling).
        coin_shape = (B, 1) if spec.teacher_forcing.mode == "sequence" else (B, n)
        forced = (torch.rand(coin_shape, device=x.device) < tfr).expand(B, n)
        all_forced = tfr >= 1.0
        if spec.model.posterior == "target" or all_forced:  # q(z | x_t or x_{t-1}, p_t): real frames only
            f_post = f_real[:, 1:] if spec.model.posterior == "target" else f_real[:, :-1]
            q = run(model.posterior, f_post.flatten(0, 1), l_all.flatten(0, 1))
            mu, logvar = (m.float().unflatten(0, (B, n)) for m in q)
            z_all = reparameterize(mu, logvar)  # (B, T-1, N, H, W)
            # Per-frame KL summed over the T-1 frames: both reductions are averages over equal frames.
            kl = n * kl_divergence(mu.flatten(0, 1), logvar.flatten(0, 1), spec.loss.kl_reduction)
        else:
            z_all, kl = None, torch.zeros((), device=x.device)
        # model.context_frame: the clip's first (given) frame, fused at every step
        f_ctx = f_real[:, 0] if spec.model.context_frame else None
        if all_forced:  # prev = x[t-1] for every clip and step: no step depends on another
            ctx = None if f_ctx is None else f_ctx[:, None].expand(B, n, *f_ctx.shape[1:]).flatten(0, 1)
            f_prev, l_flat = f_real[:, :-1].flatten(0, 1), l_all.flatten(0, 1)
            out = run(model.decode, f_prev, l_flat, z_all.flatten(0, 1).to(f_real.dtype), ctx)
            mse = n * F.mse_loss(out.float().unflatten(0, (B, n)), x[:, 1:])
        else:
            mse, out = torch.zeros((), device=x.device), x[:, 0]
            for t in range(1, T):
                f_prev = f_real[:, t - 1]
                use_real = forced[:, t - 1]
                # From t = 2 some clips may continue from the model's own output (at t = 1 it is the real
                # x[0]). Skipping the encoder when none does needs the mask on the host: free on the
                # CPU, a stall on CUDA (there: always compute, torch.where picks).
                if t > 1 and (not syncs_are_free(x.device) or not bool(use_real.all())):
                    f_out = run(model.frame_encoder, out.contiguous(memory_format=fmt))
                    f_prev = torch.where(use_real[:, None, None, None], f_prev, f_out)
                if z_all is None:  # posterior `previous`: q(z | prev, p_t) sees the model's output
                    mu, logvar = (m.float() for m in run(model.posterior, f_prev, l_all[:, t - 1]))
                    z = reparameterize(mu, logvar)
                    kl = kl + kl_divergence(mu, logvar, spec.loss.kl_reduction)
                else:
                    z = z_all[:, t - 1]
                out = run(model.decode, f_prev, l_all[:, t - 1], z.to(f_prev.dtype), f_ctx).float()
                mse = mse + F.mse_loss(out, x[:, t])
    loss = mse + beta * kl
    loss.backward()
    return {"loss": loss.detach() / n, "mse": mse.detach() / n, "kl": kl.detach() / n}


def checkpointed(chunk: int):
    """``run(fn, *args)``: fn on slices of ``chunk`` samples (dim 0; None args passed as is), each
    under activation checkpointing (its activations recomputed in the backward pass), outputs
    concatenated. Exact for per-sample modules (no BatchNorm); the noise is drawn outside."""
    from torch.utils.checkpoint import checkpoint

    def run(fn, *args):
        n = next(a for a in args if a is not None).shape[0]
        parts = [
            checkpoint(fn, *(None if a is None else a[i : i + chunk] for a in args), use_reentrant=False)
            for i in range(0, n, chunk)
        ]
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(p) for p in zip(*parts, strict=True))
        return torch.cat(parts)

    return run


# --------------------------------------------------------------------------- validation


@dataclass
class Validation:
    metrics: dict[str, float]
    curve: torch.Tensor  # (T-1,) per-frame PSNR of the first val video
    shifted_curve: torch.Tensor
    pred: torch.Tensor  # (T, 3, H, W) rollout of the first val video
    pred_shifted: torch.Tensor


def reference_metrics(val_set: VideoSet) -> dict[str, float]:
    """Trivial predictors' mean PSNR over the val videos (computed once per dataset)."""
    scores = [reference_scores(val_set.video(v)[0].float() / 255) for v in range(len(val_set.lengths))]
    return {
        "val/psnr_repeat_first": sum(s[0] for s in scores) / len(scores),
        "val/psnr_mean_frame": sum(s[1] for s in scores) / len(scores),
    }


def validate(
    model: CVAE, val_set: VideoSet, spec: ExperimentSpec, seed: int, pose_shift: int | None = None
) -> Validation:
    """Roll every val video out from its first frame, z from the prior; videos of equal length are
    batched. The same rollout with the poses rotated in time (by ``pose_shift`` frames, default a
    quarter of the video; same z draws) shows whether the model uses the pose."""
    kw = {"precision": spec.train.precision, "channels_last": spec.train.channels_last}
    results: dict[int, tuple] = {}
    for vids in batches_by_length(val_set.lengths):
        n = val_set.lengths[vids[0]]
        frames = torch.stack([val_set.video(v)[0][:n] for v in vids]).float() / 255  # (B, T, 3, H, W)
        poses = torch.stack([val_set.video(v)[1][:n] for v in vids])
        pred = rollout(model, frames[:, 0], poses, seed, **kw)
        shift = n // 4 if pose_shift is None else pose_shift
        pred_shift = rollout(model, frames[:, 0], shift_poses(poses, shift), seed, **kw)
        for i, v in enumerate(vids):
            results[v] = (score(pred[i], frames[i]), score(pred_shift[i], frames[i]), pred[i], pred_shift[i])
    vids = sorted(results)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    metrics = {
        "val/psnr": mean([results[v][0].psnr for v in vids]),
        "val/mse": mean([results[v][0].mse for v in vids]),
        "val/psnr_shifted_pose": mean([results[v][1].psnr for v in vids]),
    }
    first = results[vids[0]]
    return Validation(metrics, first[0].curve, first[1].curve, first[2].cpu(), first[3].cpu())


def write_media(run_dir: Path, val: Validation, val_set: VideoSet, refs: dict[str, float], spec, epoch: int):
    """The rollout GIF (ground truth | prediction | pose) and the per-frame PSNR plot."""
    from cvae.media import plot_psnr, side_by_side, write_gif

    n = min(spec.tracking.gif_frames, len(val.pred))
    frames, poses = val_set.video(0)
    gif = run_dir / "media" / f"val_epoch{epoch + 1:03d}.gif"
    with writing(gif):
        write_gif(gif, side_by_side(frames[:n].cpu(), val.pred[:n], poses[:n].cpu()))
    plot = run_dir / "plots" / "val_psnr.png"
    with writing(plot):
        plot_psnr(
            plot,
            {"prediction": val.curve.tolist(), "shifted poses": val.shifted_curve.tolist()},
            {"repeat first frame": refs["val/psnr_repeat_first"], "mean frame": refs["val/psnr_mean_frame"]},
            f"{spec.name}: validation rollout, epoch {epoch + 1}",
        )
    return gif, plot


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


# --------------------------------------------------------------------------- the loop


@dataclass
class State:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    best_psnr: float = -math.inf
    best_epoch: int = -1
    skipped_batches: int = 0  # train.on_nan = skip_batch: batches whose update was dropped
    extra: dict[str, Any] = field(default_factory=dict)


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


def steps_per_epoch(spec: ExperimentSpec, n_clips: int) -> list[int]:
    """Optimizer steps of every epoch (fast train uses a smaller fraction of the clips)."""
    t = spec.train
    partial = [t.fast_partial if t.fast_train and e < t.fast_epochs else spec.data.partial for e in range(t.epochs)]
    return [max(1, int(n_clips * p)) // spec.train.batch_size for p in partial]


def train(
    spec: ExperimentSpec,
    run_dir: str | Path,
    trackers: Sequence[Tracker] = (),
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    console=None,
) -> dict[str, Any]:
    """Train ``spec`` into ``run_dir`` (prepared by ``prepare_run_dir``); returns the summary."""
    run_dir = Path(run_dir)
    device = resolve_device(spec.train.device)
    spec = resolve_spec(spec, device)  # train.precision / channels_last `auto` -> this device's choice
    if console is not None and (warning := emulated_bf16_warning(spec.train.precision, device)):
        console.print(f"warning: {warning}", style="yellow", markup=False)
    if device.type == "cpu":
        tune_cpu_allocator()
    torch.manual_seed(spec.seed)
    # A resumed run's checkpoint first: a damaged one stops the run before anything is read or written.
    ck = read_resume_checkpoint(run_dir, device, console) if resume else None
    train_set, val_set = load_data(spec, device, console)
    model = build_model(spec).to(device, memory_format=memory_format(spec.train.channels_last))
    opt, sched = build_optimizer(spec, model)
    state = State() if ck is None else restore_from(ck, run_dir, model, opt, sched)
    if spec.train.compile:
        compile_model(model)  # the five modules, in place: the step and the rollout both use them
    starts = clip_starts(train_set, spec.data.clip_len).to(device)
    total_steps = sum(steps_per_epoch(spec, len(starts)))  # no epoch has 0 steps (check_clips)
    # Only now, with the data and clips checked: bad input leaves no run folder behind.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.yaml").write_text(dump_yaml(spec))
    tracker = MultiTracker([LocalTracker(), *trackers])
    tracker.start(run_dir, spec.to_dict(), resume)
    refs = reference_metrics(val_set)
    guard = DivergenceGuard(device, spec.train.on_nan, spec.train.max_skipped_batches, state.skipped_batches)
    epoch_row = last_epoch_row(run_dir) if resume else {}
    if resume and state.epoch:
        tracker.summary(_summary(state, epoch_row))  # a kill can land between last.pt and the summary
    try:
        for epoch in range(state.epoch, spec.train.epochs):
            epoch_row = train_epoch(spec, model, opt, train_set, starts, epoch, total_steps, state, guard, tracker)
            sched.step()
            state.epoch = epoch + 1
            if state.epoch % spec.train.val_every == 0 or state.epoch == spec.train.epochs:
                v0 = time.perf_counter()
                val = validate(model, val_set, spec, spec.seed + VAL_SEED_OFFSET)
                epoch_row |= val.metrics | refs
                if val.metrics["val/psnr"] > state.best_psnr:
                    state.best_psnr, state.best_epoch = val.metrics["val/psnr"], epoch
                    save_checkpoint(run_dir / "checkpoints" / "best.pt", spec, model, opt, sched, state)
                log_validation_media(run_dir, val, val_set, refs, spec, epoch, state.step, tracker)
                epoch_row["perf/val_s"] = time.perf_counter() - v0
            # The epoch's row before its checkpoint: a kill in between leaves the row after last.pt's
            # step, which resume drops and writes again (the other order would lose it).
            tracker.log({"epoch": epoch, **epoch_row}, state.step)
            save_checkpoint(run_dir / "checkpoints" / "last.pt", spec, model, opt, sched, state, keep_previous=True)
            tracker.summary(_summary(state, epoch_row))
            for cb in callbacks:
                cb.on_epoch_end(epoch, epoch_row)
    except BaseException as e:
        try:
            tracker.finish("failed", redact(f"{e.__class__.__name__}: {e}"))
        except Exception:  # e.g. the full disk that stopped the run: its error is the one to report
            pass
        raise
    finish_plots(run_dir)
    tracker.finish("finished")
    return _summary(state, epoch_row)


def train_epoch(
    spec: ExperimentSpec,
    model: CVAE,
    opt: torch.optim.Optimizer,
    train_set: VideoSet,
    starts: torch.Tensor,
    epoch: int,
    total_steps: int,
    state: State,
    guard: DivergenceGuard,
    tracker: Tracker,
) -> dict[str, float]:
    """One epoch of optimizer steps (advances ``state.step``); logs a row every
    ``tracking.log_every`` steps and returns the epoch's row: means of the applied steps'
    loss, mse, kl and grad norm, the schedules' last values, the learning rate and the speed."""
    t0, step0, skipped0 = time.perf_counter(), state.step, guard.skipped
    skipping = spec.train.on_nan == "skip_batch"
    lr = opt.param_groups[0]["lr"]  # the scheduler steps after the epoch
    clip = spec.train.grad_clip if spec.train.grad_clip > 0 else math.inf
    batches = epoch_batches(len(starts), spec.train.batch_size, _partial(spec, epoch), spec.seed, epoch)
    tracker.on_epoch_start(epoch, len(batches), state.step)
    sums: dict[str, torch.Tensor] = {}
    for idx in batches.to(starts.device):
        b, tfr = schedule_values(spec, epoch, state.step, total_steps)
        x = gather(train_set.frames, starts[idx], spec.data.clip_len)
        p = gather(train_set.poses, starts[idx], spec.data.clip_len)
        opt.zero_grad(set_to_none=True)
        out = train_step(model, x, p, spec, b, tfr)
        out["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), clip).detach()
        state.step += 1
        applied = guard.step(out, state.step, b, opt)
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
            logged |= {"train/beta": b, "train/tfr": tfr, "train/lr": lr, "epoch": epoch}
            tracker.log(logged, state.step)
    guard.check(state.step)  # before anything is saved
    train_s = time.perf_counter() - t0
    n_steps = state.step - step0
    n_applied = n_steps - (guard.skipped - skipped0)
    row = {f"epoch/{k}": float(sums[k]) / n_applied if n_applied else math.nan for k in out}
    if skipping:
        row["train/skipped_batches"] = guard.skipped
    row |= {"epoch/beta": b, "epoch/tfr": tfr, "epoch/lr": lr}
    row["perf/frames_per_s"] = n_steps * spec.train.batch_size * (spec.data.clip_len - 1) / train_s
    row["perf/epoch_s"] = train_s
    return row


def log_validation_media(run_dir, val: Validation, val_set: VideoSet, refs, spec, epoch: int, step: int, tracker):
    """The rollout GIF and per-frame PSNR plot into the run folder, and to the trackers."""
    gif, _ = write_media(run_dir, val, val_set, refs, spec, epoch)
    tracker.log_media("val/rollout", gif, step)
    curve = val.curve.tolist()
    tracker.log_curve("val/psnr_per_frame", list(range(1, len(curve) + 1)), curve, "frame", "psnr", step)


def schedule_values(spec: ExperimentSpec, epoch: int, step: int, total_steps: int) -> tuple[float, float]:
    """(beta, teacher-forcing ratio) for the step about to run; each schedule counts its own unit."""
    kl, tf = spec.kl_annealing, spec.teacher_forcing
    b = beta_at(kl, step, total_steps) if kl.unit == "step" else beta_at(kl, epoch, spec.train.epochs)
    return b, teacher_forcing_ratio(tf, step if tf.unit == "step" else epoch)


def _partial(spec: ExperimentSpec, epoch: int) -> float:
    t = spec.train
    return t.fast_partial if t.fast_train and epoch < t.fast_epochs else spec.data.partial


def _diverged_message(step: int, out: dict[str, torch.Tensor], beta: float, opt) -> str:
    vals = ", ".join(f"{k} {float(v):.4g}" for k, v in out.items())
    return f"non-finite loss at step {step}: {vals}, beta {beta:.4g}, lr {opt.param_groups[0]['lr']:.4g}"


class DivergenceGuard:
    """Stops the run at the first non-finite loss (``train.on_nan: stop``), or skips that batch's
    update until more than ``train.max_skipped_batches`` were skipped (``skip_batch``).

    Where reading a value is free (CPU) every step is checked before its update is applied. On
    CUDA that read would stall the host every step, so under ``stop`` the first bad step is
    recorded on the device and read at the next sync point (a logged row, every
    ``tracking.log_every`` steps, and the end of the epoch, before any checkpoint): the run stops
    there naming the bad step; the updates applied after it are never saved. ``skip_batch`` must
    decide before each update, so it reads the loss every step on every device.
    """

    def __init__(self, device: torch.device, on_nan: str = "stop", max_skipped: int = 10, skipped: int = 0) -> None:
        self.eager = syncs_are_free(device) or on_nan == "skip_batch"
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet
        self.on_nan, self.max_skipped, self.skipped = on_nan, max_skipped, skipped

    def step(self, out: dict[str, torch.Tensor], step: int, beta: float, opt) -> bool:
        """True: apply this batch's update; False: skip it (``skip_batch``)."""
        if self.eager:
            if torch.isfinite(out["loss"]):
                return True
            message = _diverged_message(step, out, beta, opt)
            if self.on_nan == "stop":
                raise TrainingDiverged(message)
            self.skipped += 1
            if self.skipped > self.max_skipped:
                raise TrainingDiverged(
                    f"{message}; {self.skipped} batches skipped, more than train.max_skipped_batches "
                    f"({self.max_skipped})"
                )
            return False
        bad = ~torch.isfinite(out["loss"]) & (self.first_bad == 0)
        self.first_bad = torch.where(bad, step, self.first_bad)
        return True

    def check(self, step: int) -> None:
        if not self.eager and (bad := int(self.first_bad)):  # the sync point
            raise TrainingDiverged(
                f"non-finite loss at step {bad} (read at step {step}: on CUDA the loss is "
                f"checked every tracking.log_every steps)"
            )


def _summary(state: State, last: dict[str, float]) -> dict[str, Any]:
    out = {"epochs_done": state.epoch, "steps": state.step}
    if state.best_epoch >= 0:
        out |= {"best/val_psnr": state.best_psnr, "best/epoch": state.best_epoch}
    out |= {f"final/{k.split('/', 1)[1]}": v for k, v in last.items() if k.startswith("val/")}
    return out


def finish_plots(run_dir: Path) -> None:
    """Training curves per epoch from history.jsonl -> plots/curves.png."""
    import json

    from cvae.media import plot_history

    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "epoch/loss" in r]
    keys = ["epoch/loss", "epoch/mse", "epoch/kl", "epoch/beta", "epoch/tfr", "val/psnr"]
    with writing(run_dir / "plots" / "curves.png"):
        plot_history(run_dir / "plots" / "curves.png", rows, keys)


def last_epoch_row(run_dir: Path) -> dict[str, Any]:
    """The last epoch row of history.jsonl ({} if none): a resumed run's summary starts from it."""
    import json

    path = run_dir / "history.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return next((r for r in reversed(rows) if "epoch/loss" in r), {})


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, spec, model, opt, sched, state: State, keep_previous: bool = False) -> None:
    checkpoint.save(
        path,
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": checkpoint.rng_state(),
            "epoch": state.epoch,
            "step": state.step,
            "best_psnr": state.best_psnr,
            "best_epoch": state.best_epoch,
            "skipped_batches": state.skipped_batches,
            "spec": redact(spec.to_dict()),  # as spec.yaml: no password of a URL on disk
        },
        keep_previous=keep_previous,
    )


def restore(run_dir: Path, model, opt, sched, device, console=None) -> State:
    """Load last.pt (or prev.pt when last.pt is damaged) and drop history after its step."""
    return restore_from(read_resume_checkpoint(run_dir, device, console), run_dir, model, opt, sched)


def read_resume_checkpoint(run_dir: Path, device, console=None) -> dict[str, Any]:
    """last.pt, or prev.pt (with a warning) when last.pt is missing or damaged; a CheckpointError
    naming both when neither loads."""
    from cvae.errors import CheckpointError

    ckpt_dir = run_dir / "checkpoints"
    try:
        return checkpoint.load(ckpt_dir / "last.pt", device)
    except CheckpointError as e:
        if not (ckpt_dir / "prev.pt").exists():
            raise
        try:
            ck = checkpoint.load(ckpt_dir / "prev.pt", device)
        except CheckpointError as e2:
            raise CheckpointError(f"{e}; the one before is no better: {e2}") from None
        if console is not None:
            console.print(f"warning: {e}; resuming from {ckpt_dir / 'prev.pt'}", style="yellow", markup=False)
        return ck


def restore_from(ck: dict[str, Any], run_dir: Path, model, opt, sched) -> State:
    """Put a checkpoint's state into the model, optimizer, scheduler and RNGs; drop later history."""
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    checkpoint.set_rng_state(ck["rng"])
    truncate_history(run_dir / "history.jsonl", ck["step"], ck["epoch"])
    return State(ck["epoch"], ck["step"], ck["best_psnr"], ck["best_epoch"], ck.get("skipped_batches", 0))


def truncate_history(path: Path, step: int, epochs_done: int) -> None:
    """Drop rows logged after the checkpoint (an epoch that did not finish), so a resumed run's
    history holds every step and epoch exactly once."""
    import json

    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if row["step"] <= step and row.get("epoch", 0) < epochs_done:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)
