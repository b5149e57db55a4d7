"""One training step of the Lab4 CVAE: forward over a batch of clips, the loss, backward.

On a clip x of T frames (B, T, 3, H, W), as in the lab:

    out = x[0]; for t in 1..T-1: prev = x[t-1] if teacher forcing else out,
    z ~ q(z | x_t or x_{t-1}, pose_t), out = G(Fusion(E(prev), P(pose_t), z)),
    loss += MSE(out, x[t]) + beta * KL(q || N(0, I)).

Frames that do not depend on the model's own outputs (the real frames, every pose) are encoded
in one batched call per clip instead of one call per time step; the arithmetic is the same.

The forward (``loss_terms``) reads nothing back to the host and has no data-dependent Python
branch, so ``torch.compile`` captures it whole (``fullgraph``: zero graph breaks, tested) and, with
``train.compile: reduce-overhead``, CUDA graphs replay it. beta and the teacher-forcing ratio are
0-dim tensors of the device (``StepGradients`` refills them each step), so the schedules change without
recompiling; the one host-known branch is teacher forcing 1 (every clip forced, the whole clip in
one batched call), a second graph compiled once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cvae.device import autocast, syncs_are_free
from cvae.model import CVAE, kl_divergence, reparameterize
from cvae.spec import ExperimentSpec

FLOAT32_MAX = torch.finfo(torch.float32).max
Terms = Callable[..., dict[str, torch.Tensor]]  # (model, x, pose, beta, tfr, all_forced) -> loss_terms' dict


@dataclass(frozen=True)
class StepSettings:
    """What the step reads of the spec, as plain constants (a compiled step guards on them)."""

    posterior: str  # model.posterior: target | previous
    tf_mode: str  # teacher_forcing.mode: epoch | sequence | frame
    kl_reduction: str  # loss.kl_reduction: sum | mean
    precision: str  # train.precision (resolved): fp32 | tf32 | bf16
    activation_checkpointing: bool
    detach_feedback: bool  # train.detach_feedback: no gradient through a fed-back frame

    @classmethod
    def of(cls, spec: ExperimentSpec) -> StepSettings:
        return cls(
            spec.model.posterior,
            spec.teacher_forcing.mode,
            spec.loss.kl_reduction,
            spec.train.precision,
            spec.train.activation_checkpointing,
            spec.train.detach_feedback,
        )


def spec_terms(spec: ExperimentSpec) -> Terms:
    """``loss_terms`` with the spec's settings bound: what the step runs, or compiles."""
    settings = StepSettings.of(spec)

    def terms(model, x, pose, beta, tfr, all_forced):
        return loss_terms(model, x, pose, settings, beta, tfr, all_forced)

    return terms


def compile_mode(setting: bool | str) -> str | None:
    """``train.compile`` as a torch.compile mode: None (off), or default, reduce-overhead, max-autotune."""
    if setting is True:
        return "default"
    return setting or None


class StepGradients:
    """The loop's step: gradients of one batch, clipped to ``train.grad_clip`` (the caller applies them
    with ``opt.step()``), compiled whole when ``train.compile`` asks. Keeps beta and the
    teacher-forcing ratio in 0-dim tensors of the device, refilled each step by a kernel (no host
    sync, no recompilation)."""

    def __init__(self, spec: ExperimentSpec, device: torch.device) -> None:
        self.spec, self.device = spec, device
        self.beta = torch.zeros((), device=device)
        self.tfr = torch.zeros((), device=device)
        self.mode = compile_mode(spec.train.compile)
        self.cuda_graphs = self.mode == "reduce-overhead" and device.type == "cuda"
        terms = spec_terms(spec)
        self.terms: Terms = terms if self.mode is None else torch.compile(terms, mode=self.mode, fullgraph=True)

    def __call__(self, model: CVAE, opt, x: torch.Tensor, pose: torch.Tensor, beta: float, tfr: float):
        """``loss_and_gradients``'s values plus ``grad_norm`` (before clipping), detached, on the device.
        ``tfr``: the ratio, or in ``teacher_forcing.mode: epoch`` the epoch's coin (0 or 1)."""
        if self.cuda_graphs:  # a new step begins: the previous replay's outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        # As a Python number would be in float32 arithmetic: a beta beyond float32's range is inf.
        self.beta.fill_(beta if abs(beta) <= FLOAT32_MAX else math.copysign(math.inf, beta))
        self.tfr.fill_(tfr)
        return clipped_gradients(
            model, opt, x, pose, self.spec, self.beta, self.tfr, all_forced=tfr >= 1.0, terms=self.terms
        )


def clipped_gradients(
    model: CVAE,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    pose: torch.Tensor,
    spec: ExperimentSpec,
    beta,
    tfr,
    *,
    all_forced: bool | None = None,
    terms: Terms | None = None,
) -> dict[str, torch.Tensor]:
    """Gradients of one batch, clipped to ``train.grad_clip``: ``loss_and_gradients``'s values plus
    ``grad_norm`` (before clipping). The caller decides whether to apply them (``opt.step()``)."""
    opt.zero_grad(set_to_none=True)
    out = loss_and_gradients(model, x, pose, spec, beta, tfr, all_forced=all_forced, terms=terms)
    clip = spec.train.grad_clip if spec.train.grad_clip > 0 else math.inf
    out["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), clip).detach()
    return out


def loss_and_gradients(
    model: CVAE,
    x: torch.Tensor,
    pose: torch.Tensor,
    spec: ExperimentSpec,
    beta: float | torch.Tensor,
    tfr: float | torch.Tensor,
    *,
    all_forced: bool | None = None,
    terms: Terms | None = None,
) -> dict[str, torch.Tensor]:
    """Forward and backward on one batch of clips x, pose: (B, T, 3, H, W) in [0, 1].

    ``tfr`` is the probability that a clip (``teacher_forcing.mode: sequence``) or a clip's time
    step (``frame``) feeds the real previous frame; in ``mode: epoch`` the trainer passes the
    epoch's coin, 1 (forced) or 0. ``beta`` and ``tfr`` are numbers or 0-dim tensors of the device;
    ``all_forced`` (default: ``tfr >= 1`` read from a number) says on the host that every clip is
    forced. ``terms``: the forward to run (``loss_terms`` with the spec's settings, or its compiled
    form). Returns the per-predicted-frame loss, mse and kl, and ``teacher_forced``, the share of
    teacher-forced frames (logged), as detached tensors (no host sync here).
    """
    if all_forced is None:
        all_forced = float(tfr) >= 1.0
    terms = terms or spec_terms(spec)
    out = terms(model, x, pose, beta, tfr, all_forced)
    out.pop("objective").backward()
    return out


def loss_terms(
    model: CVAE,
    x: torch.Tensor,
    pose: torch.Tensor,
    s: StepSettings,
    beta: float | torch.Tensor,
    tfr: float | torch.Tensor,
    all_forced: bool,
) -> dict[str, torch.Tensor]:
    """The forward of one batch: ``objective`` (the summed loss, to differentiate) and, detached, the
    per-predicted-frame ``loss``, ``mse``, ``kl`` and the ``teacher_forced`` share.

    What does not depend on the model's own outputs runs in one batched call over all time steps
    (same arithmetic as the lab's per-step calls, in bigger convolutions): the real frames, the
    poses, the posterior when it encodes the target, and with teacher forcing certain
    (``all_forced``: the coins are uniform in [0, 1), so a ratio of 1 forces every clip) the whole clip.
    """
    B, T = x.shape[:2]
    n = T - 1
    fmt = model.memory_format  # inputs in the model's layout
    frames = x.flatten(0, 1).contiguous(memory_format=fmt)  # (B*T, 3, H, W)
    # train.activation_checkpointing: encoder, posterior and decoder calls recompute their
    # activations in the backward pass, B images at a time (the PoseEncoder, whose BatchNorm
    # statistics depend on its whole batch, keeps its activations).
    run = checkpointed(B) if s.activation_checkpointing else lambda fn, *args: fn(*args)
    with autocast(x.device, s.precision):
        f_real = run(model.frame_encoder, frames).unflatten(0, (B, T))  # (B, T, F, H, W)
        l_all = model.pose_encoder(pose[:, 1:].flatten(0, 1).contiguous(memory_format=fmt)).unflatten(0, (B, n))
        # Teacher forcing: one coin per clip, or per clip and time step (scheduled sampling); in
        # `epoch` mode the epoch's coin came as tfr 0 or 1 (the clip coins then decide nothing).
        coin_shape = (B, n) if s.tf_mode == "frame" else (B, 1)
        forced = (torch.rand(coin_shape, device=x.device) < tfr).expand(B, n)
        if s.posterior == "target" or all_forced:  # q(z | x_t or x_{t-1}, p_t): real frames only
            f_post = f_real[:, 1:] if s.posterior == "target" else f_real[:, :-1]
            q = run(model.posterior, f_post.flatten(0, 1), l_all.flatten(0, 1))
            mu, logvar = (m.float().unflatten(0, (B, n)) for m in q)
            z_all = reparameterize(mu, logvar)  # (B, T-1, N, H, W)
            # Per-frame KL summed over the T-1 frames: both reductions are averages over equal frames.
            kl = n * kl_divergence(mu.flatten(0, 1), logvar.flatten(0, 1), s.kl_reduction)
        else:
            z_all, kl = None, torch.zeros((), device=x.device)
        # model.context_frame: the clip's first (given) frame, fused at every step
        f_ctx = f_real[:, 0] if model.context_frame else None
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
                # CPU in eager mode, a stall on CUDA and a graph break when compiled (there: always
                # compute, torch.where picks).
                if t > 1 and (host_reads_cost(x.device) or not bool(use_real.all())):
                    f_out = run(model.frame_encoder, out.contiguous(memory_format=fmt))
                    f_prev = torch.where(use_real[:, None, None, None], f_prev, f_out)
                if z_all is None:  # posterior `previous`: q(z | prev, p_t) sees the model's output
                    mu, logvar = (m.float() for m in run(model.posterior, f_prev, l_all[:, t - 1]))
                    z = reparameterize(mu, logvar)
                    kl = kl + kl_divergence(mu, logvar, s.kl_reduction)
                else:
                    z = z_all[:, t - 1]
                out = run(model.decode, f_prev, l_all[:, t - 1], z.to(f_prev.dtype), f_ctx).float()
                mse = mse + F.mse_loss(out, x[:, t])
                if s.detach_feedback:  # the next step sees this frame, but sends no gradient back into it
                    out = out.detach()
    loss = mse + beta * kl
    share = forced.float().mean()
    return {
        "objective": loss,
        "loss": loss.detach() / n,
        "mse": mse.detach() / n,
        "kl": kl.detach() / n,
        "teacher_forced": share,
    }


def host_reads_cost(device: torch.device) -> bool:
    """Whether the step must not read a value back to decide a branch: on CUDA it would stall the host
    until the GPU's queue drains; under torch.compile it would break the graph."""
    return not syncs_are_free(device) or torch.compiler.is_compiling()


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
