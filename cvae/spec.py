"""The experiment spec: every setting, its type, bounds, default and one-line doc.

A spec is a YAML file (``experiments/*.yaml``), optionally extending another one
(``extends: lab4_template.yaml``), plus dotted overrides (``--set train.epochs=3`` or
``--train.epochs=3``, the form a W&B sweep agent passes). ``load_spec`` merges them in that
order, checks every key (unknown keys are errors with a did-you-mean), validates types and
bounds with pydantic and returns a frozen ``ExperimentSpec``.

Defaults are the published Lab4 template's unless a field says otherwise; options that go
beyond the template default to off (docs/model.md lists both).
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cvae.errors import SpecError
from cvae.redact import redact


class _Section(BaseModel):
    # No NaN or infinity in any number: `optim.weight_decay=.inf` would pass every bound.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataSpec(_Section):
    root: str = Field("data/small", description="Dataset folder in the Lab4 layout (train/, val/, test/).")
    preset: Literal["tiny", "small", "lab4"] | None = Field(
        None, description="Synthetic preset to generate at `root` if the folder does not exist; null: never."
    )
    appearance: Literal["same", "varied"] = Field(
        "same", description="Synthetic data only: one dancer look for all videos (lab) or one per video."
    )
    synth_seed: int = Field(0, ge=0, description="Synthetic data only: seed of the generated dataset.")
    frame_size: tuple[int, int] = Field((32, 64), description="Frames are resized to (H, W) with antialiasing.")
    clip_len: int = Field(16, ge=2, description="Frames per training clip (the first one is given).")
    partial: float = Field(1.0, gt=0, le=1, description="Fraction of the training clips used each epoch.")
    shuffle: bool = Field(
        False,
        description="A new seeded order of the clips every epoch; false: the clips in order, the first `partial` "
        "of them (the template's unshuffled loader).",
    )
    val_len: int | None = Field(
        None, ge=2, description="Roll out only the first N frames of each val video; null: all (lab: 630)."
    )

    @field_validator("frame_size")
    @classmethod
    def _positive_size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 4 or v[1] < 4:
            raise ValueError(f"frame_size must be at least (4, 4), got {list(v)}")
        return v


class ModelSpec(_Section):
    frame_dim: int = Field(128, ge=8, description="FrameEncoder output channels F (template RGB_Encoder F_dim).")
    pose_dim: int = Field(32, ge=2, description="PoseEncoder output channels L (template L_dim).")
    z_dim: int = Field(12, ge=4, description="Latent channels N per pixel (template N_dim).")
    fusion_dim: int = Field(192, ge=16, description="Fusion output channels D (template D_out_dim).")
    posterior: Literal["target", "previous"] = Field(
        "target", description="Frame the posterior encodes: the target x_t (CVAE) or x_{t-1} (seed report)."
    )
    context_frame: bool = Field(
        False, description="Beyond the template: also fuse the given first frame's features at every step."
    )
    output: Literal["linear", "sigmoid"] = Field(
        "linear",
        description="The Generator's last layer as it is (`linear`, the template) or squashed into [0, 1] (`sigmoid`).",
    )
    eval_batchnorm: Literal["batch", "running"] = Field(
        "running",
        description="PoseEncoder BatchNorm in validation and test rollouts: each frame's own statistics (`batch`, the "
        "template: it never calls nn.Module.eval) or the running averages (`running`, nn.Module.eval's).",
    )

    @model_validator(mode="after")
    def _divisible(self) -> ModelSpec:
        for name, div in (("frame_dim", 8), ("pose_dim", 2), ("z_dim", 4), ("fusion_dim", 8)):
            if getattr(self, name) % div:
                raise ValueError(f"model.{name} must be a multiple of {div}, got {getattr(self, name)}")
        return self


class LossSpec(_Section):
    kl_reduction: Literal["sum", "mean"] = Field(
        "sum",
        description="KL over latent elements: `sum` / batch (template, 1,200-5,600x the MSE at the first step) or "
        "`mean` (MSE's scale).",
    )


class TrainSpec(_Section):
    epochs: int = Field(70, ge=1, description="Training epochs.")
    batch_size: int = Field(2, ge=1, description="Clips per optimizer step.")
    device: str = Field("auto", description="`auto` (CUDA if available, else CPU), `cpu`, `cuda`, `cuda:N`.")
    precision: Literal["fp32", "tf32", "bf16", "auto"] = Field(
        "fp32",
        description="`fp32` (IEEE, also on GPUs whose cuDNN would use TF32), `tf32` (TF32 tensor cores, CUDA 8.0+; "
        "fp32 elsewhere), `bf16` autocast; `auto`: bf16 where native, else fp32 (cvae/device.py's rule).",
    )
    channels_last: bool | Literal["auto"] = Field(
        False, description="Run convolutions in channels-last memory format; `auto`: with bf16 (cvae/device.py)."
    )
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = Field(
        False,
        description="torch.compile the training step whole (and the rollout's modules): a mode, or true for "
        "`default`; `reduce-overhead` replays CUDA graphs on a GPU.",
    )
    deterministic: bool = Field(
        False,
        description="Deterministic algorithms only (no cudnn.benchmark): bitwise repeatable runs and resumes on a "
        "GPU, slower; for checks (cvae doctor).",
    )
    init_from: str | None = Field(
        None,
        description="Start from these weights: a cvae checkpoint or one saved by the template's Trainer (its "
        "module names); the run still begins at epoch 1 with fresh optimizer and schedules.",
    )
    activation_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them (B images at a time): "
        "same arithmetic, much less peak memory for more time (docs/performance.md).",
    )
    grad_clip: float = Field(1.0, ge=0, description="Max global grad norm; 0 disables clipping.")
    detach_feedback: bool = Field(
        False,
        description="Cut the gradient where the model's own output is fed back as the next step's previous frame; "
        "false: it flows through (our choice: the template leaves its training step to the student).",
    )
    fast_train: bool = Field(False, description="Train on `fast_partial` of the data for the first epochs.")
    fast_partial: float = Field(0.4, gt=0, le=1, description="Fraction of clips used while fast training.")
    fast_epochs: int = Field(
        7,
        ge=0,
        description="Epochs of fast training when `fast_train` is on (the template's --fast_train_epoch 5 gives 7).",
    )
    val_every: int = Field(1, ge=1, description="Validate (rollout + checkpoint best) every N epochs.")
    on_nan: Literal["stop", "skip_batch"] = Field(
        "stop",
        description="A NaN/inf loss: `stop` the run at once, or `skip_batch` (drop that update; stop past the limit).",
    )
    max_skipped_batches: int = Field(
        10, ge=0, description="skip_batch: stop once more than this many batches were skipped over the run."
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v


class OptimSpec(_Section):
    name: Literal["adam", "adamw"] = Field("adam", description="Optimizer.")
    lr: float = Field(1e-3, gt=0, le=1, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (decoupled for adamw).")
    schedule: Literal["multistep", "cosine", "none"] = Field("multistep", description="LR schedule, per epoch.")
    milestones: tuple[int, ...] = Field((2, 5), description="multistep: epochs at which the LR is multiplied.")
    gamma: float = Field(0.1, gt=0, le=1, description="multistep: LR factor at each milestone.")


class KLAnnealingSpec(_Section):
    type: Literal["cyclical", "monotonic", "none"] = Field(
        "cyclical", description="Beta schedule (Fu et al. 2019); `none`: beta = max_beta always."
    )
    cycles: int = Field(10, ge=1, description="Cycles M over the run (cyclical only).")
    ratio: float = Field(1.0, gt=0, le=1, description="Fraction R of each cycle spent increasing beta.")
    unit: Literal["epoch", "step"] = Field("epoch", description="Schedule position counted in epochs or steps.")
    max_beta: float = Field(1.0, gt=0, description="Beta at the top of the schedule (scales the KL term).")


class TeacherForcingSpec(_Section):
    ratio: float = Field(1.0, ge=0, le=1, description="Initial teacher-forcing ratio.")
    decay_start: int = Field(10, ge=0, description="Units (epochs/steps) trained before the ratio first drops.")
    decay_step: float = Field(0.1, ge=0, le=1, description="Drop of the ratio per unit after decay_start.")
    floor: float = Field(0.0, ge=0, le=1, description="The ratio never goes below this.")
    mode: Literal["epoch", "sequence", "frame"] = Field(
        "epoch",
        description="Teacher-forcing coin: one per epoch (the lab: a whole epoch is forced or none of it), "
        "one per clip, or one per clip and time step (scheduled sampling).",
    )
    unit: Literal["epoch", "step"] = Field("epoch", description="Decay counted in epochs (lab) or steps.")

    @model_validator(mode="after")
    def _floor_below_ratio(self) -> TeacherForcingSpec:
        if self.floor > self.ratio:
            raise ValueError(f"teacher_forcing.floor ({self.floor}) must not exceed ratio ({self.ratio})")
        return self


class WandbSpec(_Section):
    mode: Literal["offline", "online", "disabled"] | None = Field(
        None, description="W&B mode; null: $WANDB_MODE, else offline."
    )
    project: str | None = Field(None, description="W&B project; null: $WANDB_PROJECT, else cvae-sweeps.")
    entity: str | None = Field(None, description="W&B entity; null: $WANDB_ENTITY.")
    group: str | None = Field(None, description="W&B run group.")
    job_type: str | None = Field(None, description="W&B job type; null: train (sweeps set trial, confirm, reproduce).")
    tags: tuple[str, ...] = Field((), description="W&B tags.")
    name: str | None = Field(None, description="W&B run name; null: the spec name.")
    notes: str | None = Field(None, description="W&B run notes.")
    config: dict[str, Any] = Field(
        {}, description="Extra values for the W&B run's config, at its top level (a confirm run: its trial's params)."
    )
    log_model: Literal["best", "all", "none"] = Field(
        "best",
        description="The best checkpoint as a W&B `model` artifact: `best` once when the run ends, `all` at every "
        "improvement, `none` never.",
    )


class TrackingSpec(_Section):
    log_every: int = Field(1, ge=1, description="Log train metrics every N optimizer steps.")
    sync_every: int | None = Field(
        None,
        ge=1,
        description="Read the logged values back from the device every N steps, all rows since the last read in "
        "one transfer (and at each epoch's end); null: at every logged row on the CPU (free there), every 50 "
        "steps on a GPU (each read stalls the host until the GPU's queue drains).",
    )
    gif_frames: int = Field(120, ge=2, description="Frames of the validation rollout put in the GIF.")
    media: Literal["every", "end"] = Field(
        "every",
        description="The validation GIF and plot: at `every` validation, or once at the `end`, of the best epoch "
        "(sweep trials and confirm runs: nothing reads them meanwhile).",
    )
    test_at_end: bool = Field(
        True,
        description="When the run ends, score its best checkpoint on the held-out test videos where the dataset has "
        "their true frames (the synthetic dancer; the lab's are Kaggle's): `test/*` in summary.json and W&B.",
    )
    wandb: WandbSpec = WandbSpec()


class ExperimentSpec(_Section):
    name: str = Field("experiment", min_length=1, description="Run name (default run folder runs/<name>).")
    seed: int = Field(0, ge=0, description="Seed of weights, shuffling, noise and teacher-forcing coins.")
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    loss: LossSpec = LossSpec()
    train: TrainSpec = TrainSpec()
    optim: OptimSpec = OptimSpec()
    kl_annealing: KLAnnealingSpec = KLAnnealingSpec()
    teacher_forcing: TeacherForcingSpec = TeacherForcingSpec()
    tracking: TrackingSpec = TrackingSpec()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"name must be letters, digits, '.', '_' or '-', got {v!r}")
        return v

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples) for YAML, checkpoints and trackers."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- loading


def all_keys(model: type[BaseModel] = ExperimentSpec, prefix: str = "") -> dict[str, Any]:
    """Every dotted leaf key of the spec, mapped to its pydantic FieldInfo."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(all_keys(ann, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested spec dict -> dotted keys, the override names (``{"optim": {"lr": 1}}`` ->
    ``{"optim.lr": 1}``); also the names a W&B sweep's parameters have. Empty dicts stay ``{}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _section_keys(model: type[BaseModel] = ExperimentSpec, prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.add(f"{prefix}{name}")
            out |= _section_keys(ann, f"{prefix}{name}.")
    return out


def did_you_mean(key: str, candidates: list[str]) -> str:
    """`` (did you mean `x`?)`` for the closest candidate, or "" when none is close."""
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:  # a misspelt last part: match on it alone
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.7)]
    return f" (did you mean `{close[0]}`?)" if close else ""


def _check_keys(data: dict[str, Any], source: str, prefix: str = "") -> None:
    """Unknown keys anywhere in a (partial) spec dict are errors with a did-you-mean."""
    leaves, sections = all_keys(), _section_keys()
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if dotted in sections:
            if not isinstance(value, dict):
                raise SpecError(f"{source}: `{dotted}` is a section and needs a mapping, got {value!r}")
            _check_keys(value, source, f"{dotted}.")
        elif dotted not in leaves:
            hint = did_you_mean(dotted, sorted(set(leaves) | sections))
            raise SpecError(f"{source}: unknown key `{dotted}`{hint}")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


Layer = tuple[str, dict[str, Any]]  # (where the values come from: a file or an override set, its values)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        data = yaml.safe_load(path.read_text())  # safe: a !!python tag is refused
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a mapping of keys, got {type(data).__name__}")
    return data


def file_layers(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[Layer]:
    """A spec file and the files it `extends` (relative to it), keys checked, as layers: the file
    furthest up the `extends` chain first, ``path`` itself last."""
    path = Path(path)
    if path.resolve() in _seen:
        raise SpecError(f"{path}: `extends` loops back to itself")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    _check_keys(data, str(path))
    if parent is None:
        return [(str(path), data)]
    if not isinstance(parent, str):
        raise SpecError(f"{path}: `extends` must be a file name, got {parent!r}")
    return [*file_layers(path.parent / parent, (*_seen, path.resolve())), (str(path), data)]


def load_spec_dict(path: str | Path) -> dict[str, Any]:
    """Read a spec file and the files it `extends`, merged, keys checked."""
    merged: dict[str, Any] = {}
    for _, data in file_layers(path):
        merged = _deep_merge(merged, data)
    return merged


def origins(layers: Sequence[Layer]) -> dict[str, str]:
    """Which layer set each dotted key last (keys no layer sets are absent): nested file layers and
    dotted override layers alike."""
    out: dict[str, str] = {}
    for source, values in layers:
        for key in flatten(values):
            out[key] = source
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value parsed as a YAML scalar or flow list)."""
    if "=" not in item:
        raise SpecError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the text, the field's type decides
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict; unknown keys are errors with a did-you-mean."""
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    leaves = all_keys()
    out = copy.deepcopy(data)  # never change the caller's nested dicts
    for key, value in items:
        if key not in leaves:
            hint = did_you_mean(key, sorted(leaves))
            raise SpecError(f"override `{key}`: unknown key{hint}")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def format_validation(e: ValidationError, source: str, data: dict[str, Any]) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "(spec)"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        if isinstance(got, dict):
            got = None
        lines.append(f"{source}: `{loc}`: {msg}" + (f" (got {got!r})" if got is not None else ""))
    return "\n".join(lines)


def validate_spec(data: dict[str, Any], source: str = "spec") -> ExperimentSpec:
    """A spec dict, keys checked and values validated, as a frozen ExperimentSpec (SpecError naming
    ``source`` and the key otherwise)."""
    _check_keys(data, source)
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_validation(e, source, data)) from None


def load_spec(
    path: str | Path | None, overrides: list[str] | dict[str, Any] = (), layers: Sequence[Layer] = ()
) -> ExperimentSpec:
    """File (with `extends`), then ``overrides``, then each of ``layers`` in order (later wins),
    validated and frozen."""
    return load_spec_origins(path, overrides, layers)[0]


def load_spec_origins(
    path: str | Path | None, overrides: list[str] | dict[str, Any] = (), layers: Sequence[Layer] = ()
) -> tuple[ExperimentSpec, dict[str, str]]:
    """``load_spec``, and which file or override layer set each key (``origins``): a missing
    ``data.root`` is generated only where the user asked for it (cvae/data/root.py)."""
    files = file_layers(path) if path is not None else []
    data: dict[str, Any] = {}
    for _, values in files:
        data = _deep_merge(data, values)
    if overrides:  # one more layer, of dotted keys like the others
        items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
        layers = [("overrides", dict(items)), *layers]
    for _, values in layers:
        data = apply_overrides(data, values)  # unknown keys: errors with a did-you-mean
    return validate_spec(data, str(path) if path is not None else "spec"), origins([*files, *layers])


def dump_yaml(spec: ExperimentSpec) -> str:
    """The spec as YAML, passwords in URLs masked (``postgresql://u:***@host/db``): what a run
    folder keeps and ``cvae spec show`` prints (docs/reliability.md, secrets)."""
    return yaml.safe_dump(redact(spec.to_dict()), sort_keys=False)
