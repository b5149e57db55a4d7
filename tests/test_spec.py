"""cvae.spec: defaults, `extends`, key checking, bounds, safe YAML, overrides, freezing, round trip."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml
from helpers import EXPERIMENTS, TEMPLATE

from cvae.cli.train import split_cli_overrides
from cvae.errors import SpecError
from cvae.spec import (
    ExperimentSpec,
    all_keys,
    apply_overrides,
    dump_yaml,
    load_spec,
    load_spec_dict,
    parse_override,
    validate_spec,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- defaults


def test_defaults_are_the_published_template():
    s = ExperimentSpec()
    assert s.train.batch_size == 2
    assert s.optim.name == "adam" and s.optim.lr == 1e-3
    assert s.train.epochs == 70
    assert s.optim.schedule == "multistep" and s.optim.milestones == (2, 5) and s.optim.gamma == 0.1
    assert s.train.grad_clip == 1.0
    assert s.data.clip_len == 16
    assert s.data.frame_size == (32, 64)
    assert (s.model.frame_dim, s.model.pose_dim, s.model.z_dim, s.model.fusion_dim) == (128, 32, 12, 192)
    tf = s.teacher_forcing
    # the lab's trainer tosses one teacher-forcing coin per epoch, before its batch loop
    assert (tf.ratio, tf.decay_start, tf.decay_step, tf.floor, tf.mode) == (1.0, 10, 0.1, 0.0, "epoch")
    kl = s.kl_annealing
    assert (kl.type, kl.cycles, kl.ratio, kl.unit, kl.max_beta) == ("cyclical", 10, 1.0, "epoch", 1.0)
    assert s.loss.kl_reduction == "sum"  # the template's summed KL
    # lab: 40% of the data with --fast_train_epoch 5, which its trainer turns off after 7 epochs' loaders
    assert (s.train.fast_partial, s.train.fast_epochs) == (0.4, 7)
    assert s.data.shuffle is False  # the template's train loader: shuffle=False
    assert s.model.output == "linear"  # the template's Generator: no sigmoid


def test_template_file_equals_the_defaults():
    """experiments/lab4_template.yaml writes every default out; only its name, seed and data place differ,
    and its rollouts' BatchNorm: the template's per-frame statistics, where the default is what runs made
    before that setting existed did (the running averages)."""
    from_file = load_spec(TEMPLATE).to_dict()
    defaults = ExperimentSpec().to_dict()
    assert from_file["name"] == "lab4_template"
    assert (from_file["data"]["root"], from_file["data"]["preset"]) == ("data/lab4", "lab4")
    assert (from_file["model"]["eval_batchnorm"], defaults["model"]["eval_batchnorm"]) == ("batch", "running")
    for d in (from_file, defaults):
        d.pop("name"), d.pop("seed"), d["data"].pop("root"), d["data"].pop("preset"), d["model"].pop("eval_batchnorm")
    assert from_file == defaults


# --------------------------------------------------------------------------- extends


def test_report_psnr_extends_the_template():
    s = load_spec(EXPERIMENTS / "report_psnr.yaml")
    assert s.name == "report_psnr"
    assert (s.kl_annealing.type, s.kl_annealing.cycles, s.kl_annealing.ratio) == ("none", 30, 1.0)
    tf = s.teacher_forcing
    assert (tf.ratio, tf.decay_start, tf.decay_step) == (0.0, 5, 0.0)
    assert s.train.grad_clip == 0.75
    assert s.train.fast_train is True and s.train.fast_epochs == 22  # --fast_train_epoch 20
    assert s.model.posterior == "previous"  # the report's code encodes the previous frame
    # untouched keys come from the template
    assert s.train.epochs == 70 and s.optim.milestones == (2, 5) and s.data.preset == "lab4"


def test_report_tf_half_differs_from_the_template_in_teacher_forcing_and_the_reports_code_only():
    s = load_spec(EXPERIMENTS / "report_tf_0.5.yaml").to_dict()
    t = load_spec(TEMPLATE).to_dict()
    tf = s.pop("teacher_forcing")
    assert (tf["ratio"], tf["decay_start"], tf["decay_step"], tf["mode"]) == (0.5, 5, 0.1, "epoch")
    assert tf | {"ratio": 1.0, "decay_start": 10} == t.pop("teacher_forcing")
    assert s.pop("name") == "report_tf_0.5" and t.pop("name") == "lab4_template"
    # the report's code feeds the previous frame's features to the posterior, and computes its
    # cyclical beta as (epoch mod 10) / 10: 7 cycles over 70 epochs where the template has 10
    assert (s["model"].pop("posterior"), t["model"].pop("posterior")) == ("previous", "target")
    assert (s["kl_annealing"].pop("cycles"), t["kl_annealing"].pop("cycles")) == (7, 10)
    assert s == t
    assert (
        load_spec(EXPERIMENTS / "report_kl_cyclical.yaml").kl_annealing
        == load_spec(EXPERIMENTS / "report_tf_0.5.yaml").kl_annealing
    )  # the teacher-forcing runs anneal as the report's cyclical run does


@pytest.mark.parametrize("name", [p.stem for p in sorted(EXPERIMENTS.glob("report_*.yaml"))])
def test_every_report_spec_keeps_the_templates_coin_and_the_reports_posterior(name):
    s = load_spec(EXPERIMENTS / f"{name}.yaml")
    assert s.teacher_forcing.mode == "epoch" and s.model.posterior == "previous"
    assert (s.model.output, s.data.shuffle) == ("linear", False)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_loads(path):
    assert load_spec(path).name == path.stem


def test_extends_is_relative_to_the_file_and_deep_merges(tmp_path):
    write(tmp_path / "base.yaml", "name: base\ntrain:\n  epochs: 9\n  batch_size: 4\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\ntrain:\n  epochs: 3\n")
    s = load_spec(child)
    assert (s.name, s.train.epochs, s.train.batch_size) == ("base", 3, 4)


def test_extends_loop_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(SpecError, match="loops"):
        load_spec(tmp_path / "a.yaml")


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    "text, key, hint",
    [
        ("train:\n  epoch: 3\n", "train.epoch", "train.epochs"),
        ("kl_anealing:\n  cycles: 3\n", "kl_anealing", "kl_annealing"),
        ("optim:\n  learning_rate: 0.1\n", "optim.learning_rate", None),
        ("sed: 1\n", "sed", "seed"),
    ],
)
def test_unknown_key_in_file(tmp_path, text, key, hint):
    path = write(tmp_path / "spec.yaml", text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert str(path) in msg and f"unknown key `{key}`" in msg
    if hint:
        assert f"did you mean `{hint}`" in msg


@pytest.mark.parametrize(
    "override, hint",
    [("train.epoch=3", "train.epochs"), ("kl_anealing.cycles=3", "kl_annealing.cycles"), ("optim.lrr=0.1", "optim.lr")],
)
def test_unknown_key_in_override(override, hint):
    with pytest.raises(SpecError) as e:
        load_spec(None, [override])
    key = override.split("=")[0]
    assert f"`{key}`" in str(e.value) and f"did you mean `{hint}`" in str(e.value)


def test_override_cannot_replace_a_section():
    with pytest.raises(SpecError, match="unknown key"):
        load_spec(None, ["train=3"])


def test_section_given_a_scalar_in_file(tmp_path):
    with pytest.raises(SpecError, match="`train` is a section"):
        load_spec(write(tmp_path / "s.yaml", "train: 3\n"))


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lr=-0.001", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("teacher_forcing.ratio=1.5", "teacher_forcing.ratio"),
        ("data.clip_len=1", "data.clip_len"),
        ("train.epochs=0", "train.epochs"),
        ("kl_annealing.ratio=0", "kl_annealing.ratio"),
        ("data.partial=1.2", "data.partial"),
        ("model.z_dim=6", "model.z_dim"),  # not a multiple of 4
        ("train.device=gpu", "train.device"),
        ("kl_annealing.type=linear", "kl_annealing.type"),
        ("train.epochs=three", "train.epochs"),
    ],
)
def test_out_of_range_names_the_key(override, key):
    with pytest.raises(SpecError) as e:
        load_spec(None, [override])
    assert key in str(e.value)


def test_floor_above_ratio_is_refused():
    with pytest.raises(SpecError) as e:
        load_spec(None, ["teacher_forcing.ratio=0.2", "teacher_forcing.floor=0.5"])
    assert "teacher_forcing.floor" in str(e.value)
    # equal is allowed
    assert load_spec(None, ["teacher_forcing.ratio=0.5", "teacher_forcing.floor=0.5"]).teacher_forcing.floor == 0.5


def test_out_of_range_in_file_names_file_and_key(tmp_path):
    path = write(tmp_path / "s.yaml", "optim:\n  lr: -1\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value) and "optim.lr" in str(e.value)


# --------------------------------------------------------------------------- YAML


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path / "broken.yaml", "train:\n  epochs: [1, 2\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value) and "YAML" in str(e.value)
    assert "\n" not in str(e.value)  # one message


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    assert load_spec(write(tmp_path / "empty.yaml", "")) == ExperimentSpec()


def test_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "evil.yaml", f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value)
    assert not marker.exists()


# --------------------------------------------------------------------------- overrides


def test_overrides_are_yaml_scalars():
    assert parse_override("train.epochs=3") == ("train.epochs", 3)
    assert parse_override("optim.lr=0.5") == ("optim.lr", 0.5)
    assert parse_override("optim.milestones=[1,2]") == ("optim.milestones", [1, 2])
    assert parse_override("tracking.wandb.tags=[a,b]") == ("tracking.wandb.tags", ["a", "b"])
    assert parse_override("train.fast_train=true") == ("train.fast_train", True)
    assert parse_override("data.preset=null") == ("data.preset", None)
    assert parse_override("name=a=b") == ("name", "a=b")  # split at the first '='
    s = load_spec(None, ["train.epochs=3", "optim.milestones=[1,2]", "tracking.wandb.tags=[a,b]", "optim.lr=1e-4"])
    assert s.train.epochs == 3 and isinstance(s.train.epochs, int)
    assert s.optim.milestones == (1, 2)
    assert s.tracking.wandb.tags == ("a", "b")
    assert s.optim.lr == 1e-4


def test_override_without_equals():
    with pytest.raises(SpecError, match="key=value"):
        parse_override("train.epochs")


def test_overrides_apply_after_the_file(tmp_path):
    path = write(tmp_path / "s.yaml", "extends: " + str(TEMPLATE) + "\ntrain:\n  epochs: 9\n")
    s = load_spec(path, ["train.epochs=4", "data.clip_len=8"])
    assert (s.train.epochs, s.data.clip_len, s.train.batch_size) == (4, 8, 2)
    # a dict of overrides works the same and leaves the input dict untouched
    data = load_spec_dict(path)
    out = apply_overrides(data, {"train.epochs": 5})
    assert out["train"]["epochs"] == 5 and data["train"]["epochs"] == 9


def test_split_cli_overrides_wandb_agent_form():
    args = ["--train.epochs=3", "--optim.lr=0.01", "--tracking.wandb.tags=[a,b]"]
    assert split_cli_overrides(args) == ["train.epochs=3", "optim.lr=0.01", "tracking.wandb.tags=[a,b]"]
    s = load_spec(None, split_cli_overrides(args))
    assert (s.train.epochs, s.optim.lr, s.tracking.wandb.tags) == (3, 0.01, ("a", "b"))
    for bad in (["train.epochs=3"], ["--train.epochs"], ["-x=1"]):
        with pytest.raises(SpecError):
            split_cli_overrides(bad)


# --------------------------------------------------------------------------- frozen, round trip


def test_spec_is_frozen():
    s = ExperimentSpec()
    with pytest.raises(pydantic.ValidationError):
        s.train.epochs = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        s.name = "other"  # type: ignore[misc]
    assert s.train.epochs == 70 and s.name == "experiment"


def test_round_trip_through_yaml(tmp_path):
    s = load_spec(EXPERIMENTS / "report_psnr.yaml", ["tracking.wandb.tags=[a,b]", "data.frame_size=[16,32]"])
    text = dump_yaml(s)
    assert yaml.safe_load(text) == s.to_dict()
    assert validate_spec(yaml.safe_load(text)) == s
    assert load_spec(write(tmp_path / "resolved.yaml", text)) == s
    d = s.to_dict()
    assert d["data"]["frame_size"] == [16, 32] and d["optim"]["milestones"] == [2, 5]  # lists, not tuples


def test_every_leaf_key_has_a_doc():
    keys = all_keys()
    for required in ("data.root", "data.frame_size", "data.clip_len", "data.partial", "model.posterior",
                     "loss.kl_reduction", "train.epochs", "train.batch_size", "train.device", "train.precision",
                     "train.grad_clip", "optim.name", "optim.lr", "kl_annealing.type", "kl_annealing.cycles",
                     "kl_annealing.ratio", "teacher_forcing.ratio", "teacher_forcing.decay_start",
                     "teacher_forcing.decay_step", "teacher_forcing.mode", "tracking.wandb.mode",
                     "tracking.wandb.project"):  # fmt: skip
        assert required in keys
    assert all(f.description for f in keys.values())
