"""Property tests (hypothesis): overrides round-trip through `cvae spec show`, invalid ones exit 2,
and the schedules stay in their ranges. docs/reliability.md, promise 8.

Values are drawn per spec key from its type and bounds (the pydantic field), so a key added to the
spec is covered without editing this file; `test_every_key_has_a_strategy` fails if one is not.
"""

from __future__ import annotations

import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types as at
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cvae.cli import app
from cvae.errors import SpecError
from cvae.redact import redact
from cvae.spec import KLAnnealingSpec, TeacherForcingSpec, all_keys, load_spec
from cvae.training.schedules import kl_beta, teacher_forcing_ratio

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = all_keys()
WIDTH_MULTIPLE = {"model.frame_dim": 8, "model.pose_dim": 2, "model.z_dim": 4, "model.fusion_dim": 8}
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)


def _bounds(field) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low excluded, high excluded) from the field's annotated_types metadata."""
    low = high = None
    low_open = high_open = False
    for m in field.metadata:
        if isinstance(m, at.Ge):
            low = m.ge
        elif isinstance(m, at.Gt):
            low, low_open = m.gt, True
        elif isinstance(m, at.Le):
            high = m.le
        elif isinstance(m, at.Lt):
            high, high_open = m.lt, True
    return low, high, low_open, high_open


def _for_type(tp: Any, key: str, field) -> st.SearchStrategy | None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        parts = [_for_type(a, key, field) for a in args]
        return None if None in parts else st.one_of(parts)
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        low, high, lo_open, _ = _bounds(field)
        low = 0 if low is None else int(low) + lo_open
        ints = st.integers(low, int(high) if high is not None else low + 10_000)
        if key in WIDTH_MULTIPLE:  # the model's widths must divide evenly (ModelSpec._divisible)
            m = WIDTH_MULTIPLE[key]
            ints = st.integers(max(1, math.ceil(low / m)), 64).map(lambda k: k * m)
        return ints
    if tp is float:
        low, high, lo_open, hi_open = _bounds(field)
        return st.floats(
            0.0 if low is None else low,
            1e6 if high is None else high,
            exclude_min=lo_open,
            exclude_max=hi_open,
            allow_nan=False,
            allow_infinity=False,
        )
    if tp is str:
        if key == "name":
            return st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
        if key == "train.device":
            return st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:3", "mps"])
        return TEXT
    if origin is dict:  # tracking.wandb.config: extra W&B config values, a flat mapping here
        return st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True), st.integers(0, 100), max_size=3)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = st.integers(0, 100) if args[0] is int else TEXT
            return st.lists(item, max_size=4).map(tuple)
        if key == "data.frame_size":
            return st.tuples(st.integers(4, 512), st.integers(4, 512))
        return st.tuples(*(_for_type(a, key, field) for a in args))
    return None


def strategy(key: str) -> st.SearchStrategy | None:
    field = KEYS[key]
    return _for_type(field.annotation, key, field)


def yaml_scalar(value: Any) -> str:
    """A value as the text after `key=` (parsed back by yaml.safe_load, as overrides are)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").removesuffix("...")


@st.composite
def valid_overrides(draw) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(KEYS)), min_size=1, max_size=4, unique=True))
    out = {k: draw(strategy(k)) for k in keys}
    # The one cross-field rule: teacher_forcing.floor <= ratio (defaults: floor 0, ratio 1).
    assume(out.get("teacher_forcing.floor", 0.0) <= out.get("teacher_forcing.ratio", 1.0))
    return out


def as_plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


@pytest.fixture(scope="module")
def empty_spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "empty.yaml"
    path.write_text("# every key at its default\n")
    return path


def test_every_key_has_a_strategy():
    missing = [k for k in KEYS if strategy(k) is None]
    assert not missing, f"no value strategy for {missing}: teach tests/test_properties.py their type"


@SETTINGS
@given(overrides=valid_overrides())
def test_valid_overrides_round_trip_through_spec_show(empty_spec, overrides):
    args = ["spec", "show", str(empty_spec)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={yaml_scalar(value)}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown == redact(load_spec(empty_spec, overrides).to_dict())  # the CLI shows what load_spec builds
    for key, value in overrides.items():
        assert get(shown, key) == redact(as_plain(value)), key
    # What `spec show` prints is itself a spec that loads to the same thing.
    again = empty_spec.with_name("shown.yaml")
    again.write_text(result.stdout)
    assert load_spec(again).to_dict() == shown


def _invalid_value(key: str) -> st.SearchStrategy | None:
    """Values a key must refuse: out of its bounds, not one of its choices, or of the wrong type."""
    field = KEYS[key]
    tp = field.annotation
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    words = st.from_regex(r"[a-z]{6,12}", fullmatch=True).filter(lambda w: w not in ("offline", "online"))
    if origin is Literal:
        return words.filter(lambda w: w not in args)
    if tp is int or tp is float:
        low, high, lo_open, hi_open = _bounds(field)
        bad = [words, st.sampled_from([math.nan, math.inf, -math.inf])]
        if low is not None:
            bad.append(
                st.floats(low - 1e6, low, exclude_max=not lo_open, allow_nan=False)
                if tp is float
                else st.integers(int(low) - 10_000, int(low) - 1 + lo_open)
            )
        if high is not None:
            bad.append(
                st.floats(high, high + 1e6, exclude_min=not hi_open, allow_nan=False)
                if tp is float
                else st.integers(int(high) + 1 - hi_open, int(high) + 10_000)
            )
        return st.one_of(bad)
    if tp is bool:
        return words
    return None


INVALID_KEYS = sorted(k for k in KEYS if _invalid_value(k) is not None)
UNKNOWN_KEYS = st.from_regex(r"[a-z_]{1,10}(\.[a-z_]{1,10}){0,2}", fullmatch=True).filter(lambda k: k not in KEYS)


@SETTINGS
@given(data=st.data())
def test_invalid_overrides_exit_2_naming_the_key(empty_spec, data):
    if data.draw(st.booleans(), label="unknown key"):
        key, value = data.draw(UNKNOWN_KEYS, label="key"), 1
    else:
        key = data.draw(st.sampled_from(INVALID_KEYS), label="key")
        value = data.draw(_invalid_value(key), label="value")
    item = f"{key}={yaml_scalar(value)}"
    with pytest.raises(SpecError) as e:
        load_spec(empty_spec, [item])
    assert key in str(e.value)
    result = CliRunner().invoke(app, ["spec", "show", str(empty_spec), "--set", item])
    assert result.exit_code == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0], result.stderr


# --------------------------------------------------------------------------- schedules

KL_SPECS = st.builds(
    KLAnnealingSpec,
    type=st.sampled_from(["cyclical", "monotonic", "none"]),
    cycles=st.integers(1, 50),
    ratio=st.floats(0, 1, exclude_min=True),
    unit=st.sampled_from(["epoch", "step"]),
    max_beta=st.floats(0, 1e3, exclude_min=True),
)


@st.composite
def tf_specs(draw) -> TeacherForcingSpec:
    ratio = draw(st.floats(0, 1))
    return TeacherForcingSpec(
        ratio=ratio,
        floor=draw(st.floats(0, ratio)),
        decay_start=draw(st.integers(0, 100)),
        decay_step=draw(st.floats(0, 1)),
        mode=draw(st.sampled_from(["sequence", "frame"])),
        unit=draw(st.sampled_from(["epoch", "step"])),
    )


@SETTINGS
@given(kl=KL_SPECS, total=st.integers(1, 10_000), data=st.data())
def test_beta_stays_in_zero_to_max_beta(kl, total, data):
    positions = data.draw(st.lists(st.integers(0, total - 1), min_size=1, max_size=20))
    for p in positions:
        b = kl_beta(kl, p, total)
        assert 0 <= b <= kl.max_beta
    if kl.type == "none":
        assert {kl_beta(kl, p, total) for p in positions} == {kl.max_beta}
    if kl.type == "monotonic":  # one cycle: never decreases
        values = [kl_beta(kl, p, total) for p in sorted(positions)]
        assert values == sorted(values)


@SETTINGS
@given(tf=tf_specs(), positions=st.lists(st.integers(0, 10_000), min_size=1, max_size=30))
def test_teacher_forcing_ratio_decays_within_floor_and_ratio(tf, positions):
    values = [teacher_forcing_ratio(tf, p) for p in sorted(positions)]
    assert all(tf.floor <= v <= tf.ratio for v in values)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone non-increasing
    assert teacher_forcing_ratio(tf, 0) == tf.ratio  # the first unit always uses the ratio itself


def test_yaml_scalar_round_trips():
    for value in ("true", "1e3", "a: b", "", " x ", "null", "~", "-1", "[1]", "é", 1.5e-7, [1, 2], (4, 8)):
        assert yaml.safe_load(yaml_scalar(value)) == as_plain(value), value
    assert re.fullmatch(r"\[4, 8\]", yaml_scalar((4, 8)))
