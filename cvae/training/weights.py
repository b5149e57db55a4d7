"""Weights from a file, for ``cvae train --init-from``, ``cvae evaluate FILE`` and ``cvae predict FILE``:
a cvae checkpoint, or one saved by the published template's Trainer.

The template's ``save()`` writes ``{"state_dict", "optimizer", "lr", "tfr", "last_epoch"}`` with its
own module names: ``frame_transformation``, ``label_transformation``, ``Gaussian_Predictor``,
``Decoder_Fusion`` and ``Generator``, each an ``nn.Sequential`` of the same layers as ours. Inside
a depthwise block its layers sit in ``block.0`` (``conv1.0``, ``depth_conv``, ``conv2``,
``adaptor``) and ``block.1`` (``conv``, ``conv_out``), where ours are named ``conv1``, ``depth``,
``conv2``, ``skip``, ``ffn_in`` and ``ffn_out``; every other name is the same. Its ``optimizer``
entry holds the model's weights a second time, not the optimizer's state (a bug of the
template's ``save()``): it is never read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cvae.errors import CheckpointError
from cvae.training.checkpoint import FORMAT, load_file

TEMPLATE_KEYS = ("state_dict", "optimizer", "lr", "tfr", "last_epoch")
MODULES = {  # the template's module names -> ours
    "frame_transformation": "frame_encoder",
    "label_transformation": "pose_encoder",
    "Gaussian_Predictor": "posterior",
    "Decoder_Fusion": "fusion",
    "Generator": "generator",
}
BLOCK_LAYERS = {  # inside a depthwise block: the template's layer names -> ours
    "block.0.conv1.0": "conv1",
    "block.0.depth_conv": "depth",
    "block.0.conv2": "conv2",
    "block.0.adaptor": "skip",
    "block.1.conv": "ffn_in",
    "block.1.conv_out": "ffn_out",
}
WIDTH_OF = {  # which spec key sets the widths of each module's layers
    "frame_encoder": "model.frame_dim",
    "pose_encoder": "model.pose_dim",
    "posterior": "model.z_dim (and frame_dim, pose_dim: its input)",
    "fusion": "model.fusion_dim (and frame_dim, pose_dim, z_dim, context_frame: its input)",
    "generator": "model.fusion_dim",
}


def from_template_name(key: str) -> str:
    """``Decoder_Fusion.0.block.0.conv1.0.weight`` -> ``fusion.0.conv1.weight``; unknown names unchanged."""
    module, _, rest = key.partition(".")
    if module not in MODULES:
        return key
    for theirs, ours in BLOCK_LAYERS.items():
        layer, sep, tail = rest.partition(f".{theirs}.")
        if sep:
            return f"{MODULES[module]}.{layer}.{ours}.{tail}"
    return f"{MODULES[module]}.{rest}"


def to_template_name(key: str) -> str:
    """The inverse of ``from_template_name`` (our name -> the template's)."""
    module, _, rest = key.partition(".")
    theirs = {v: k for k, v in MODULES.items()}
    if module not in theirs:
        return key
    layer, _, tail = rest.partition(".")
    sub, _, leaf = tail.partition(".")
    if module != "pose_encoder" and sub in BLOCK_LAYERS.values() and leaf and _is_block_layer(module, layer, sub):
        sub = {v: k for k, v in BLOCK_LAYERS.items()}[sub]
    return ".".join(p for p in (theirs[module], layer, sub, leaf) if p)


def _is_block_layer(module: str, layer: str, sub: str) -> bool:
    """conv1/conv2/skip name layers of residual blocks too: a depthwise block is told by its other layers."""
    return sub in ("depth", "ffn_in", "ffn_out") or (module, layer) in _DEPTHWISE


# (module, index) of the depthwise blocks in each module's stack (cvae/model.py; the template's the same)
_DEPTHWISE = {("frame_encoder", str(i)) for i in (1, 3, 5)} | {("posterior", str(i)) for i in (1, 3)}
_DEPTHWISE |= {("fusion", str(i)) for i in (0, 2, 4)} | {("generator", str(i)) for i in (0, 2, 4, 6)}


@dataclass
class Weights:
    """A model's weights in our names, and what else the file said."""

    state: dict[str, torch.Tensor]
    source: str  # "cvae" or "template"
    spec: dict[str, Any] | None = None  # a cvae checkpoint's spec
    epoch: int | None = None  # epochs done (a cvae checkpoint)
    notes: list[str] = field(default_factory=list)


def read_weights(path: Path) -> Weights:
    """The weights (on the CPU) in a cvae checkpoint or a template checkpoint; anything else is a
    CheckpointError."""
    path = Path(path)
    data = load_file(path)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return Weights(data["model"], "cvae", data.get("spec"), data.get("epoch"))
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        keys = sorted(map(str, data))[:6] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path}: neither a cvae checkpoint nor one saved by the Lab4 template's Trainer "
            f"(expected the keys {', '.join(TEMPLATE_KEYS)}; found {keys})"
        )
    state = {from_template_name(k): v for k, v in data["state_dict"].items()}
    notes = []
    if "optimizer" in data:
        notes.append(
            "its 'optimizer' entry holds the model's weights again, not the optimizer's state (a bug of the "
            "template's save()): not read"
        )
    told = {k: data[k] for k in ("lr", "tfr", "last_epoch") if isinstance(data.get(k), int | float)}
    if told:
        notes.append(
            "it also records " + ", ".join(f"{k} {v:g}" for k, v in told.items()) + ": not applied (a run started "
            "from it begins at epoch 1 with its spec's learning rate and schedules)"
        )
    return Weights(state, "template", notes=notes)


def load_weights(model: torch.nn.Module, weights: Weights, path: Path, spec_source: str) -> None:
    """Put ``weights`` into ``model``, every key and shape checked first: a checkpoint of other widths
    or of another model is a CheckpointError naming the key, both shapes and the spec key to change."""

    def named(key: str) -> str:
        return to_template_name(key) if weights.source == "template" else key

    ours = model.state_dict()
    missing = [k for k in ours if k not in weights.state]
    extra = [k for k in weights.state if k not in ours]
    where = f"the model of {spec_source}"
    for key, value in weights.state.items():
        if key in ours and tuple(value.shape) != tuple(ours[key].shape):
            hint = WIDTH_OF.get(key.split(".", 1)[0], "the model's widths")
            raise CheckpointError(
                f"{path}: `{named(key)}` has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(ours[key].shape)} in {where}: its widths differ (set {hint} to the checkpoint's)"
            )
    if missing or extra:
        what = [f"`{named(extra[0])}` is in the checkpoint but not in {where}"] if extra else []
        what += [f"{where} needs `{named(missing[0])}`, which the checkpoint lacks"] if missing else []
        raise CheckpointError(
            f"{path}: not this model's weights: {'; '.join(what)} ({len(extra)} extra, {len(missing)} missing)"
        )
    model.load_state_dict(weights.state)
