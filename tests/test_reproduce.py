"""`cvae report --reproduce`: the report's seven specs at a scale (epochs, data, widths only), trained
and resumed as ordinary run folders."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from helpers import tiny_overrides

from cvae.runs.queue import train_all
from cvae.runs.reproduce import REPORT_SPECS, SCALES, Scale, scaled, scaled_specs
from cvae.spec import load_spec, validate_spec
from cvae.training.schedules import kl_beta, teacher_forcing_ratio


def test_the_cpu_scale_scales_every_setting_counted_in_epochs():
    specs = scaled_specs("cpu", {})
    assert list(specs) == list(REPORT_SPECS)
    for s in specs.values():
        assert s["train"]["epochs"] == 14  # 70 / 5
        assert s["optim"]["milestones"] == [1, 1]  # epochs 2 and 5 of 70, kept at epoch 1 or later
        assert (s["model"]["frame_dim"], s["model"]["fusion_dim"]) == (32, 48)
        assert s["data"]["root"] == "data/small" and s["data"]["partial"] == pytest.approx(0.05)
        assert s["train"]["fast_partial"] == pytest.approx(0.02)
        # nothing but epochs, data and widths changes: the settings the report varies are kept
        assert s["teacher_forcing"]["mode"] == "epoch" and s["model"]["posterior"] == "previous"
    tf = {n: specs[n]["teacher_forcing"] for n in specs}
    assert (tf["report_tf_0.5"]["decay_start"], tf["report_tf_0.5"]["decay_step"]) == (1, 0.5)  # 5, 0.1
    assert tf["report_tf_0.5"]["ratio"] == 0.5
    assert (tf["report_kl_cyclical"]["ratio"], tf["report_kl_cyclical"]["decay_step"]) == (0.0, 0.0)  # none to scale
    assert specs["report_psnr"]["train"]["fast_epochs"] == 4  # 22 / 5


def test_a_scaled_schedule_keeps_its_shape():
    """The template's teacher forcing (1.0, from epoch 10, -0.1 an epoch) reaches 0 at epoch 20 of 70,
    the scaled one at epoch 4 of 14: the same fraction of the run. KL cycles count over the run."""
    spec = load_spec(None, {"kl_annealing.type": "monotonic", "kl_annealing.ratio": 1 / 7})
    small = validate_spec(scaled(spec.to_dict(), Scale(Fraction(1, 5), 1.0)))
    full_tf = [teacher_forcing_ratio(spec.teacher_forcing, e) for e in range(70)]
    small_tf = [teacher_forcing_ratio(small.teacher_forcing, e) for e in range(14)]
    # epoch e (from 1) is the first at ratio 0: 20 of 70, 4 of 14
    assert (full_tf.index(0.0) + 1) / 70 == (small_tf.index(0.0) + 1) / 14 == pytest.approx(20 / 70)
    assert [kl_beta(small.kl_annealing, e, 14) for e in range(14)] == pytest.approx([0, 0.5] + [1] * 12)


def test_unknown_scale_and_bad_override_are_bad_input():
    from cvae.errors import SpecError, UserError

    with pytest.raises(UserError, match="'huge'.*cpu"):
        scaled_specs("huge", {})
    with pytest.raises(SpecError, match="train.epochz"):
        scaled_specs("cpu", {"train.epochz": 3})
    assert set(SCALES) == {"cpu", "full"}


@pytest.mark.slow
def test_train_all_skips_finished_runs_and_trains_the_rest(tmp_path, tiny_data):
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 1})).to_dict()
    specs = {"a": spec, "b": spec | {"seed": 1}}
    lines: list[str] = []

    class Console:
        def print(self, line, **kw):
            lines.append(line)

    runs, failed = train_all(specs, tmp_path / "runs", workers=2, console=Console())
    assert failed == []
    assert [r.name for r in runs] == ["a", "b"]
    for r in runs:
        assert json.loads((r / "summary.json").read_text())["status"] == "finished"
    first = (runs[0] / "summary.json").read_text()
    lines.clear()
    train_all(specs, tmp_path / "runs", workers=2, console=Console())
    assert lines == ["a: finished before, skipped", "b: finished before, skipped"]
    assert (runs[0] / "summary.json").read_text() == first
