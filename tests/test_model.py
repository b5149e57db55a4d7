"""cvae.model: template size, shapes, value range, KL, reparameterization, the template's quirks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cvae.model import (
    CVAE,
    DepthConvBlock,
    FrameEncoder,
    Fusion,
    Generator,
    PoseEncoder,
    Posterior,
    ResidualBlock,
    build_model,
    kl_divergence,
    reparameterize,
)
from cvae.spec import load_spec


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_template_widths_have_about_1_59m_parameters():
    m = CVAE()  # F128 / L32 / N12 / D192
    assert abs(n_params(m) - 1.59e6) / 1.59e6 < 0.01
    assert n_params(build_model(load_spec(None))) == n_params(m)


def test_build_model_uses_the_spec_widths():
    m = build_model(load_spec(None, ["model.frame_dim=16", "model.pose_dim=8", "model.z_dim=4", "model.fusion_dim=16"]))
    assert m.z_dim == 4
    assert m.frame_encoder[-1].out_channels == 16
    assert m.posterior[-1].out_channels == 2 * 4
    assert m.generator[-1].out_channels == 3
    assert n_params(m) < n_params(CVAE())


@pytest.mark.parametrize("H, W", [(32, 64), (12, 20)])
def test_module_chain_shapes_and_range(H, W):
    torch.manual_seed(0)
    F_, L, N, D, B = 16, 8, 4, 16, 3
    m = CVAE(F_, L, N, D).eval()
    frame, pose = torch.rand(B, 3, H, W), torch.rand(B, 3, H, W)
    with torch.no_grad():
        f = m.frame_encoder(frame)
        l = m.pose_encoder(pose)  # noqa: E741
        mu, logvar = m.posterior(f, l)
        z = reparameterize(mu, logvar)
        fused = m.fusion(torch.cat([f, l, z], dim=1))
        out = m.generator(fused)
        decoded = m.decode(f, l, z)
    assert f.shape == (B, F_, H, W)
    assert l.shape == (B, L, H, W)
    assert mu.shape == logvar.shape == z.shape == (B, N, H, W)
    assert fused.shape == (B, D, H, W)
    assert out.shape == (B, 3, H, W)
    assert torch.equal(out, decoded)
    # the template's output is the last convolution as it is; the sigmoid option bounds it to [0, 1]
    m.generator.output = "sigmoid"
    with torch.no_grad():
        squashed = m.generator(fused)
    assert torch.allclose(squashed, torch.sigmoid(out))
    assert squashed.min() >= 0 and squashed.max() <= 1


def test_blocks_keep_resolution_and_skip():
    x = torch.randn(2, 6, 5, 7)
    assert ResidualBlock(6, 10)(x).shape == (2, 10, 5, 7)
    assert isinstance(ResidualBlock(6, 6).skip, nn.Identity)
    assert DepthConvBlock(6, 12)(x).shape == (2, 12, 5, 7)
    assert isinstance(DepthConvBlock(6, 6).skip, nn.Identity)
    assert DepthConvBlock(6, 6).depth.groups == 6  # depthwise 3x3


def test_published_layer_stacks():
    """Widest-first stacks of the published template (docs/model.md), with the template widths."""
    fe = FrameEncoder(128)
    assert [type(b).__name__ for b in fe] == ["ResidualBlock", "DepthConvBlock"] * 3 + ["Conv2d"]
    assert (fe[0].conv1.out_channels, fe[2].conv1.out_channels, fe[4].conv1.out_channels) == (16, 32, 64)
    post = Posterior(128 + 32, 12)
    assert post[0].conv1.in_channels == 160 and post[-1].out_channels == 24
    fu = Fusion(128 + 32 + 12, 192)
    assert fu[0].conv1.in_channels == 172 and fu[-1].out_channels == 192
    g = Generator(192)
    assert g[-1].in_channels == 24 and g[-1].out_channels == 3


def test_leaky_relu_one_is_the_templates_identity():
    """The template writes nn.LeakyReLU(True): True is the negative_slope, i.e. 1.0, an identity.
    Kept on purpose so template runs reproduce; this pins it so nobody "fixes" it silently."""
    pe, post = PoseEncoder(32), Posterior(160, 12)
    for seq in (pe, post):
        acts = [m for m in seq if isinstance(m, nn.LeakyReLU)]
        assert len(acts) == 1 and acts[0].negative_slope == 1.0
        x = torch.randn(100)
        assert torch.equal(acts[0](x), x)
    assert nn.LeakyReLU(True).negative_slope == 1.0  # what the template's spelling means


# --------------------------------------------------------------------------- KL


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_kl_non_negative_and_zero_at_the_prior(reduction):
    torch.manual_seed(0)
    for _ in range(20):
        mu, logvar = 3 * torch.randn(4, 3, 5, 6), 3 * torch.randn(4, 3, 5, 6)
        assert kl_divergence(mu, logvar, reduction) >= 0
    zeros = torch.zeros(4, 3, 5, 6)
    assert kl_divergence(zeros, zeros, reduction) == 0


def test_kl_reductions_and_closed_form():
    torch.manual_seed(1)
    B = 4
    mu, logvar = torch.randn(B, 3, 5, 6), torch.randn(B, 3, 5, 6)
    elem = 0.5 * (mu**2 + logvar.exp() - 1 - logvar)
    assert torch.allclose(kl_divergence(mu, logvar, "sum"), elem.sum() / B)
    assert torch.allclose(kl_divergence(mu, logvar, "mean"), elem.mean())
    # sum/B = mean times the latent elements per sample (the template's ~1000x scale)
    ratio = kl_divergence(mu, logvar, "sum") / kl_divergence(mu, logvar, "mean")
    assert ratio.item() == pytest.approx(3 * 5 * 6, rel=1e-5)
    # one element by hand: mu = 1, sigma^2 = e -> 0.5 * (1 + e - 1 - 1) = (e - 1) / 2
    one = torch.ones(1, 1, 1, 1)
    assert kl_divergence(one, one, "sum").item() == pytest.approx((math.e - 1) / 2)


def test_reparameterize_statistics():
    torch.manual_seed(2)
    n = 200_000
    mu = torch.full((n,), 2.0)
    logvar = torch.full((n,), math.log(0.25))  # sigma = 0.5
    z = reparameterize(mu, logvar)
    # standard errors: 0.5 / sqrt(n) ~ 0.0011 for the mean, ~0.0008 for the std
    assert z.mean().item() == pytest.approx(2.0, abs=0.006)
    assert z.std().item() == pytest.approx(0.5, abs=0.005)
    assert reparameterize(torch.zeros(3), torch.full((3,), -100.0)).abs().max() < 1e-10  # sigma -> 0: z = mu


def test_reparameterize_is_differentiable_in_mu_and_logvar():
    mu = torch.zeros(10, requires_grad=True)
    logvar = torch.zeros(10, requires_grad=True)
    reparameterize(mu, logvar).sum().backward()
    assert torch.equal(mu.grad, torch.ones(10))
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0
