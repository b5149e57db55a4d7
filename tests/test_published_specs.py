"""The published settings stay faithful: every option beyond the template is off in them."""

from pathlib import Path

import pytest
import torch

from cvae.model import CVAE, build_model
from cvae.rollout import rollout
from cvae.spec import load_spec

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
PUBLISHED = ["lab4_template.yaml", *sorted(p.name for p in EXPERIMENTS.glob("report_*.yaml"))]

# Options that go beyond the published template, with the value that turns each off.
OFF = {
    "model.context_frame": False,
    "loss.kl_reduction": "sum",
    "kl_annealing.max_beta": 1.0,
    "kl_annealing.unit": "epoch",
    "teacher_forcing.unit": "epoch",
    "teacher_forcing.mode": "epoch",
    "model.output": "linear",
    "data.shuffle": False,
    "teacher_forcing.floor": 0.0,
    "data.appearance": "same",
    "data.val_len": None,
    "train.precision": "fp32",
    "train.channels_last": False,
    "train.compile": False,
    "train.activation_checkpointing": False,
}


def _get(spec, dotted):
    node = spec
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def test_published_specs_are_all_there():
    assert len(PUBLISHED) == 8  # the template, 3 teacher-forcing, 3 KL-annealing settings, the PSNR run


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_spec_has_every_new_option_off(name):
    spec = load_spec(EXPERIMENTS / name)
    on = {k: _get(spec, k) for k, off in OFF.items() if _get(spec, k) != off}
    assert not on, f"{name} turns on options beyond the template: {on}"
    assert (spec.model.frame_dim, spec.model.pose_dim, spec.model.z_dim, spec.model.fusion_dim) == (128, 32, 12, 192)


def test_quickstart_uses_the_measured_options():
    spec = load_spec(EXPERIMENTS / "quickstart.yaml")
    assert spec.loss.kl_reduction == "mean" and spec.teacher_forcing.unit == "step"
    assert (spec.model.output, spec.data.shuffle, spec.teacher_forcing.mode) == ("sigmoid", True, "sequence")


def test_context_frame_adds_only_fusion_inputs():
    plain, ctx = CVAE(16, 8, 4, 16), CVAE(16, 8, 4, 16, context_frame=True)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(ctx) > n(plain)
    for name in ("frame_encoder", "pose_encoder", "posterior", "generator"):
        assert n(getattr(ctx, name)) == n(getattr(plain, name))
    f, l, z = torch.rand(2, 16, 8, 16), torch.rand(2, 8, 8, 16), torch.rand(2, 4, 8, 16)
    assert ctx.decode(f, l, z, f).shape == (2, 3, 8, 16)
    with pytest.raises(ValueError, match="f_context"):
        ctx.decode(f, l, z)


def test_context_frame_rollout_depends_on_the_first_frame_only_through_the_model():
    spec = load_spec(
        None,
        ["model.frame_dim=16", "model.pose_dim=8", "model.z_dim=4", "model.fusion_dim=16", "model.context_frame=true"],
    )
    torch.manual_seed(0)
    model = build_model(spec).eval()
    first, poses = torch.rand(2, 3, 8, 16), torch.rand(2, 5, 3, 8, 16)
    a = rollout(model, first, poses, seed=3)
    b = rollout(model, first, poses, seed=3)
    assert a.shape == (2, 5, 3, 8, 16) and torch.equal(a, b) and torch.equal(a[:, 0], first)
