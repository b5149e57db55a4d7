"""The published Lab4 training loop, step by step: what ``cvae bench`` compares ours with, and what
the tests check our step's arithmetic against.

- ``reference_step``: a training step as the published report's code writes it (the template leaves
  ``training_one_step`` as an exercise): fp32, per time step one FrameEncoder call for the previous
  frame, one for the target and one PoseEncoder call;
- ``load_clips_from_png``: the template's loader, every clip decoded from its PNG files.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cvae.data.frames import decode_png, resize
from cvae.model import CVAE, kl_divergence, reparameterize
from cvae.spec import ExperimentSpec


def load_clips_from_png(pairs: list, starts: list[int], clip_len: int, size, device) -> tuple[torch.Tensor, ...]:
    """The template's loader: every clip's frames and poses decoded from PNG, resized, to float.
    -> x, pose (B, T, 3, H, W) float in [0, 1]."""
    out = []
    for which in (0, 1):
        clips = []
        for s in starts:
            imgs = [decode_png(pair[which]) for pair in pairs[s : s + clip_len]]
            clips.append(torch.stack([resize(torch.from_numpy(a).permute(2, 0, 1)[None], size)[0] for a in imgs]))
        out.append((torch.stack(clips).float() / 255).to(device))
    return tuple(out)


def reference_step(
    model: CVAE, opt, x: torch.Tensor, pose: torch.Tensor, spec: ExperimentSpec, beta: float, tfr: float
):
    """A training step as the report's code writes it, fp32: per time step one FrameEncoder call
    for the previous frame (real or the model's own), one for the target (posterior `target`)
    and one PoseEncoder call. x, pose: (B, T, 3, H, W) in [0, 1]. Returns the loss per frame.

    The lab's trainer tosses one teacher-forcing coin per epoch and hands the step its outcome;
    here ``tfr`` is that outcome's probability, and the coin is drawn with the shape our step
    draws, so the two draw the same random numbers in the same order (their losses agree up to
    rounding); the first decides the whole batch. With ``model.context_frame`` (beyond the template) the
    given first frame is encoded once per clip, as our step and the rollout do."""
    B, T = x.shape[:2]
    coin_shape = (B, T - 1) if spec.teacher_forcing.mode == "frame" else (B, 1)
    forced = bool(torch.rand(coin_shape, device=x.device)[0, 0] < tfr)
    mse = kl = 0.0
    out = x[:, 0]
    f_ctx = model.frame_encoder(x[:, 0]) if model.context_frame else None
    for t in range(1, T):
        prev = x[:, t - 1] if forced else out
        f_prev = model.frame_encoder(prev)
        l = model.pose_encoder(pose[:, t])  # noqa: E741
        f_post = model.frame_encoder(x[:, t]) if spec.model.posterior == "target" else f_prev
        mu, logvar = model.posterior(f_post, l)
        z = reparameterize(mu, logvar)
        out = model.decode(f_prev, l, z, f_ctx)
        mse = mse + F.mse_loss(out, x[:, t])
        kl = kl + kl_divergence(mu, logvar, spec.loss.kl_reduction)
    loss = mse + beta * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), spec.train.grad_clip if spec.train.grad_clip > 0 else math.inf)
    opt.step()
    return loss.detach() / (T - 1)
