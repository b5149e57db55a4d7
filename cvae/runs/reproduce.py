"""``cvae report --reproduce SCALE``: train the published report's seven settings at a scale, then
draw its figures from them (``cvae report``).

A scale changes the number of epochs, the data and the widths, nothing else: every setting counted
in epochs is scaled with the epochs (teacher-forcing decay start and step, LR milestones, fast-train
epochs), so each schedule keeps its shape over the shorter run; KL annealing's cycles are already
counted over the run. ``full`` trains the report's specs as published (a GPU job); ``cpu`` fits a
2-core CPU (docs/tracking.md says what each trains and what it shows).

The runs are ordinary run folders (``runs/report-<scale>/<name>``): a second call resumes the
unfinished ones and skips the finished.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from cvae.errors import UserError
from cvae.spec import apply_overrides, file_layers, load_spec_dict, origins, validate_spec

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
REPORT_SPECS = (
    "report_tf_0.5",
    "report_tf_0.1",
    "report_tf_0",
    "report_kl_monotonic",
    "report_kl_cyclical",
    "report_kl_none",
    "report_psnr",
)


@dataclass(frozen=True)
class Scale:
    epochs: Fraction  # the report's epochs times this
    clips: float  # the fraction of the training clips kept (data.partial and train.fast_partial alike)
    overrides: dict[str, Any] = field(default_factory=dict)  # the data and the widths
    about: str = ""


SLIM = {"model.frame_dim": 32, "model.pose_dim": 16, "model.z_dim": 8, "model.fusion_dim": 48}
SCALES = {
    "full": Scale(Fraction(1), 1.0, {}, "the report's specs as published: 70 epochs at template widths"),
    "cpu": Scale(
        Fraction(1, 5),
        0.05,
        {
            "data.root": "data/small",
            "data.preset": "small",
            "data.val_len": 120,
            **SLIM,
            "train.precision": "auto",
            "train.channels_last": "auto",
        },
        "14 epochs of 5% of the clips of the synthetic small dancer, quick-start widths, 120-frame validation",
    ),
}


def scaled(spec: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """A spec dict (resolved, every section present) at ``scale``; epochs round to whole ones, and an
    LR milestone stays at epoch 1 or later (at 0 it would never fire)."""
    out = copy.deepcopy(spec)
    f = scale.epochs
    train, tf, optim = out["train"], out["teacher_forcing"], out["optim"]
    train["epochs"] = max(1, round(train["epochs"] * f))
    train["fast_epochs"] = round(train["fast_epochs"] * f)
    if tf["unit"] == "epoch":
        tf["decay_start"] = round(tf["decay_start"] * f)
        tf["decay_step"] = min(1.0, float(tf["decay_step"] / f))
    optim["milestones"] = [max(1, round(m * f)) for m in optim["milestones"]]
    out["data"]["partial"] = round(out["data"]["partial"] * scale.clips, 9)
    train["fast_partial"] = round(train["fast_partial"] * scale.clips, 9)
    return apply_overrides(out, scale.overrides)


def reproduce_tracking(name: str, scale_name: str) -> dict[str, Any]:
    """A reproduction run's W&B name (``report_psnr-cpu``), group, job type and tags."""
    return {
        "tracking.wandb.name": f"{name}-{scale_name}",
        "tracking.wandb.group": f"report-{scale_name}",
        "tracking.wandb.job_type": "reproduce",
        "tracking.wandb.tags": ["reproduce", scale_name],
    }


def scaled_specs(scale_name: str, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The seven report specs at the scale, ``overrides`` (``--set``) on top, each validated."""
    if scale_name not in SCALES:
        raise UserError(f"--reproduce {scale_name!r}: unknown scale; allowed: {', '.join(SCALES)}")
    from cvae.data.root import check_request

    out = {}
    for name in REPORT_SPECS:
        path = EXPERIMENTS / f"{name}.yaml"
        spec = validate_spec(load_spec_dict(path), str(path)).to_dict()
        data = apply_overrides(scaled(spec, SCALES[scale_name]), overrides)
        data = apply_overrides(data, reproduce_tracking(name, scale_name))
        checked = validate_spec(data, f"{path} at scale {scale_name}")
        # data.root is generated only where its preset was set with it: the scale's own, or yours
        layers = [*file_layers(path), (f"the {scale_name} scale", SCALES[scale_name].overrides), ("--set", overrides)]
        check_request(checked, origins(layers))
        out[name] = checked.to_dict()
    return out
