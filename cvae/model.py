"""The Lab4 conditional VAE: two blocks and five modules, all at full frame resolution.

Layer stacks follow the published template (docs/model.md); the template's class names are
in each docstring. This file knows nothing about training: the step and the rollout use the
modules through ``CVAE``'s small methods.

Shapes: frames and pose images are (B, 3, H, W) in [0, 1]; features keep H x W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """3x3 conv, LeakyReLU, 3x3 conv, LeakyReLU, plus the input (1x1 conv when widths differ).

    The activations work in place on the convolutions' outputs, which nothing else reads: the same
    function, one stored tensor fewer per activation for the backward pass (less peak memory at
    the template's widths)."""

    def __init__(self, cin: int, cout: int, slope: float = 0.01) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.act = nn.LeakyReLU(slope, inplace=True)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x)))) + self.skip(x)


class DepthConvBlock(nn.Module):
    """DCVC's depthwise block: (1x1 conv, LeakyReLU(0.01), 3x3 depthwise, 1x1 conv) + skip, then a
    gated feed-forward: conv to 4C, halves a, b, out = x + conv(a * LeakyReLU(0.1)(b))."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 1)
        self.act = nn.LeakyReLU(0.01, inplace=True)  # on conv1's output (ResidualBlock's note)
        self.depth = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.conv2 = nn.Conv2d(cin, cout, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.ffn_in = nn.Conv2d(cout, 4 * cout, 1)
        self.ffn_act = nn.LeakyReLU(0.1)
        self.ffn_out = nn.Conv2d(2 * cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.depth(self.act(self.conv1(x)))) + self.skip(x)
        a, b = self.ffn_in(x).chunk(2, dim=1)
        return x + self.ffn_out(a * self.ffn_act(b))


class FrameEncoder(nn.Sequential):
    """RGB_Encoder: RGB frame (B, 3, H, W) -> features (B, F, H, W)."""

    def __init__(self, f: int) -> None:
        super().__init__(
            ResidualBlock(3, f // 8),
            DepthConvBlock(f // 8, f // 8),
            ResidualBlock(f // 8, f // 4),
            DepthConvBlock(f // 4, f // 4),
            ResidualBlock(f // 4, f // 2),
            DepthConvBlock(f // 2, f // 2),
            nn.Conv2d(f // 2, f, 3, padding=1),
        )


class PoseNorm(nn.BatchNorm2d):
    """The PoseEncoder's BatchNorm2d. Training normalizes with the batch's statistics, as BatchNorm2d
    does. Outside training (``eval()``: validation and test rollouts) ``eval_stats`` decides:

    - ``running``: the running averages, as nn.Module.eval makes a BatchNorm do;
    - ``batch``: each image's own mean and variance over H x W. The template never switches its model
      to eval mode (its Trainer and Tester define an ``eval`` method of their own, which shadows
      nn.Module.eval) and rolls out one video at a time, one pose per step, so its BatchNorm
      normalizes each pose image with that image's statistics; batched videos here get exactly that.
      (The template's BatchNorm also updates its running averages during validation; nothing of
      the template ever reads them, so they are left alone here.)
    """

    def __init__(self, channels: int, eval_stats: str = "running") -> None:
        if eval_stats not in ("batch", "running"):
            raise ValueError(f"eval_stats must be batch or running, got {eval_stats!r}")
        super().__init__(channels)
        self.eval_stats = eval_stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.eval_stats == "running":
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


class PoseEncoder(nn.Sequential):
    """Label_Encoder: pose image (B, 3, H, W) -> features (B, L, H, W).

    The template writes ``nn.LeakyReLU(True)``, which sets negative_slope=1.0: an identity.
    Kept as published so template runs reproduce; see docs/model.md.
    """

    def __init__(self, l_dim: int, eval_batchnorm: str = "running") -> None:
        super().__init__(
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, l_dim // 2, 7),
            PoseNorm(l_dim // 2, eval_batchnorm),
            nn.LeakyReLU(1.0),  # template: nn.LeakyReLU(True)
            ResidualBlock(l_dim // 2, l_dim),
        )


class Posterior(nn.Sequential):
    """Gaussian_Predictor: cat(frame features, pose features) -> mu, logvar (B, N, H, W) each."""

    def __init__(self, cin: int, n: int) -> None:
        super().__init__(
            ResidualBlock(cin, n // 4),
            DepthConvBlock(n // 4, n // 4),
            ResidualBlock(n // 4, n // 2),
            DepthConvBlock(n // 2, n // 2),
            ResidualBlock(n // 2, n),
            nn.LeakyReLU(1.0),  # template: nn.LeakyReLU(True), an identity
            nn.Conv2d(n, 2 * n, 1),
        )

    def forward(self, f: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: E741
        mu, logvar = super().forward(torch.cat([f, l], dim=1)).chunk(2, dim=1)
        return mu, logvar


class Fusion(nn.Sequential):
    """Decoder_Fusion: cat(F, L, z) -> (B, D, H, W)."""

    def __init__(self, cin: int, d: int) -> None:
        super().__init__(
            DepthConvBlock(cin, cin),
            ResidualBlock(cin, cin // 4),
            DepthConvBlock(cin // 4, cin // 2),
            ResidualBlock(cin // 2, cin // 2),
            DepthConvBlock(cin // 2, d // 2),
            nn.Conv2d(d // 2, d, 1),
        )


class Generator(nn.Sequential):
    """Generator: (B, D, H, W) -> RGB frame (B, 3, H, W).

    The template returns its last 1x1 convolution's output as it is (``output="linear"``): frames
    are not bounded to [0, 1], the MSE pulls them there. ``"sigmoid"`` (an option beyond the
    template) squashes them into [0, 1].
    """

    def __init__(self, d: int, output: str = "linear") -> None:
        if output not in ("linear", "sigmoid"):
            raise ValueError(f"output must be linear or sigmoid, got {output!r}")
        super().__init__(
            DepthConvBlock(d, d),
            ResidualBlock(d, d // 2),
            DepthConvBlock(d // 2, d // 2),
            ResidualBlock(d // 2, d // 4),
            DepthConvBlock(d // 4, d // 4),
            ResidualBlock(d // 4, d // 8),
            DepthConvBlock(d // 8, d // 8),
            nn.Conv2d(d // 8, 3, 1),
        )
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return torch.sigmoid(out) if self.output == "sigmoid" else out


class CVAE(nn.Module):
    """The five modules. Widths: F (frame), L (pose), N (latent), D (fusion); template 128/32/12/192."""

    def __init__(
        self,
        frame_dim: int = 128,
        pose_dim: int = 32,
        z_dim: int = 12,
        fusion_dim: int = 192,
        context_frame: bool = False,
        output: str = "linear",
        eval_batchnorm: str = "running",
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.context_frame = context_frame
        self.frame_encoder = FrameEncoder(frame_dim)
        self.pose_encoder = PoseEncoder(pose_dim, eval_batchnorm)
        self.posterior = Posterior(frame_dim + pose_dim, z_dim)
        context = frame_dim if context_frame else 0
        self.fusion = Fusion(frame_dim + context + pose_dim + z_dim, fusion_dim)
        self.generator = Generator(fusion_dim, output)

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout the model's convolution weights are in (``build_model(spec, device)`` chooses it,
        ``model.to(memory_format=...)`` changes it). The training step and the rollout give the model
        its inputs in the same layout, so a model runs the same however it was built."""
        w = self.frame_encoder[0].conv1.weight  # (F/8, 3, 3, 3): the two layouts differ
        nhwc = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        return torch.channels_last if nhwc else torch.contiguous_format

    def decode(
        self, f_prev: torch.Tensor, l: torch.Tensor, z: torch.Tensor, f_context: torch.Tensor | None = None
    ) -> torch.Tensor:  # noqa: E741
        """Next frame (B, 3, H, W) from the previous frame's features, the pose's and z.

        With ``context_frame`` (an option beyond the template) the features of the given first
        frame are fused too: a fully convolutional decoder cannot know the background at a
        position the dancer uncovers, but the first frame shows it.
        """
        parts = [f_prev, l, z]
        if self.context_frame:
            if f_context is None:
                raise ValueError("this model fuses the first frame: pass f_context")
            parts.append(f_context)
        return self.generator(self.fusion(torch.cat(parts, dim=1)))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2014)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, reduction: str) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) >= 0 per element, then reduced.

    ``sum``: summed over all latent elements, divided by the batch (the template's scale);
    ``mean``: averaged over all elements (the per-pixel MSE's scale).
    """
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    if reduction == "sum":
        return kl.sum() / mu.shape[0]
    return kl.mean()


def build_model(spec, device: torch.device | None = None) -> CVAE:
    """The CVAE with the widths of ``spec.model`` (an ExperimentSpec). Given a ``device``: on it, in
    the memory format it runs in there (``train.channels_last``, ``auto`` resolved for the device),
    the one place a run's memory format is chosen. Without: on the CPU, contiguous."""
    m = spec.model
    model = CVAE(m.frame_dim, m.pose_dim, m.z_dim, m.fusion_dim, m.context_frame, m.output, m.eval_batchnorm)
    if device is None:
        return model
    from cvae.device import memory_format

    return model.to(device, memory_format=memory_format(spec.train.channels_last, torch.device(device)))
