"""Where our files meet the published template's, they are exact: its Kaggle submission.csv, its
checkpoints (read by its module names, refused with a clear message when they do not fit), its
BatchNorm behaviour in rollouts, and the report's own settings read literally."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import EXPERIMENTS, REPO, assert_bad_input, assert_ok, cvae, snapshot

from cvae.model import CVAE, PoseNorm
from cvae.runs.submission import frame_values, write_submission
from cvae.training.weights import from_template_name, to_template_name

# --------------------------------------------------------------------------- submission.csv


def test_submission_is_the_templates_format_byte_for_byte(tmp_path):
    """Two videos of 2 and 1 frames of 1x2 pixels: the template's header, ids counting rows across
    videos, frame values x 255 rounded, C, H, W order, clamped to 0..255, lines ending in \\n."""
    px = 1 / 255

    def frame(r, g, b):  # (3, 1, 2): each channel's two pixels
        return torch.tensor([[r], [g], [b]], dtype=torch.float32)

    a = torch.stack([frame((0.0, 1.0), (10.25 * px, 10.75 * px), (-0.3, 1.4)),
                     frame((128.2 * px, 127.8 * px), (1 * px, 254 * px), (0.5, 2 * px))])  # fmt: skip
    b = torch.stack([frame((255 * px, 3.4 * px), (0.0, 0.0), (7.6 * px, 200 * px))])
    write_submission(tmp_path / "submission.csv", [frame_values(a), frame_values(b)])
    expected = "id,0,1,2,3,4,5\n0,0,255,10,11,0,255\n1,128,128,1,254,128,2\n2,255,3,0,0,8,200\n"
    assert (tmp_path / "submission.csv").read_bytes() == expected.encode()
    values = frame_values(a)
    assert np.array_equal(
        values, np.clip(np.rint(a.flatten(1).numpy() * 255), 0, 255).astype(int)
    )  # the template's rint


def test_val_as_test_predict_and_score_read_the_submission_back(tmp_path, trained_run, tiny_data):
    """The val video as test videos (its own poses, and shifted), predicted into the template's format
    with the template's GIF names, then scored against the real frames."""
    valtest, out = tmp_path / "valtest", tmp_path / "pred"
    assert_ok(cvae("data", "val-as-test", tiny_data, valtest))
    assert_ok(cvae("predict", trained_run, "--data", valtest, "--out", out, "--gif-names", "lab", "--device", "cpu"))
    assert sorted(p.name for p in out.iterdir()) == ["pred_seq0.gif", "pred_seq1.gif", "submission.csv"]
    lines = (out / "submission.csv").read_text().split("\n")
    assert lines[0] == "id," + ",".join(map(str, range(3 * 32 * 64))) and lines[-1] == ""
    assert [line.split(",", 1)[0] for line in lines[1:-1]] == [str(k) for k in range(2 * 40)]
    r = cvae("score", out / "submission.csv", "--data", tiny_data)
    assert_ok(r)
    scores = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("│ 0")}
    assert set(scores) == {"0", "0_shifted"}
    metrics = json.loads((trained_run / "summary.json").read_text())
    # the 40-frame rollout of video 0 with its own poses, through 8-bit values: near the validation's
    # 12-frame score only in kind; exact agreement is checked against cvae evaluate below
    assert all(float(scores[k].split("│")[2]) > 5 for k in scores) and "best/val_psnr" in metrics


# --------------------------------------------------------------------------- the template's checkpoints


def template_keys() -> dict[str, str]:
    lines = (REPO / "tests" / "data" / "lab4_template_state_dict.txt").read_text().splitlines()
    return {line.split()[0]: line.split(None, 1)[1] for line in lines if line and not line.startswith("#")}


def test_our_model_has_the_templates_state_dict_under_its_names():
    """The template's own key list (its modules at the default widths): our model's keys, mapped to
    the template's names, are exactly those, with the same shapes and dtypes; the mapping inverts."""
    ours = CVAE().state_dict()
    mapped = {to_template_name(k): f"{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for k, v in ours.items()}
    assert mapped == template_keys()
    assert all(from_template_name(to_template_name(k)) == k for k in ours)
    assert from_template_name("Decoder_Fusion.2.block.0.adaptor.weight") == "fusion.2.skip.weight"
    assert from_template_name("Generator.1.skip.bias") == "generator.1.skip.bias"  # a residual block's own skip


def save_as_template(run: Path, path: Path) -> dict[str, torch.Tensor]:
    """The run's best weights in a file as the template's save() writes one."""
    state = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)["model"]
    theirs = {to_template_name(k): v for k, v in state.items()}
    torch.save({"state_dict": theirs, "optimizer": theirs, "lr": 1e-5, "tfr": 0.3, "last_epoch": 1}, path)
    return state


def test_a_template_checkpoint_predicts_and_evaluates_as_its_run(tmp_path, trained_run, tiny_data):
    ckpt = tmp_path / "epoch=1.ckpt"
    save_as_template(trained_run, ckpt)
    spec = trained_run / "spec.yaml"
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert_ok(cvae("predict", trained_run, "--data", tiny_data, "--out", ours, "--device", "cpu"))
    r = cvae("predict", ckpt, "--spec", spec, "--data", tiny_data, "--out", theirs, "--device", "cpu")
    assert_ok(r)
    assert "'optimizer' entry holds the model's weights again" in r.stdout and "not applied" in r.stdout
    assert (theirs / "submission.csv").read_bytes() == (ours / "submission.csv").read_bytes()
    assert_ok(cvae("evaluate", ckpt, "--spec", spec, "--device", "cpu", "-q"))
    mine = json.loads((tmp_path / "epoch=1-eval" / "metrics.json").read_text())
    assert mine["val/psnr"] == pytest.approx(json.loads((trained_run / "summary.json").read_text())["best/val_psnr"])


def test_a_checkpoint_of_other_widths_is_refused_naming_the_key_and_shapes(tmp_path, trained_run, tiny_data):
    ckpt = tmp_path / "tiny.ckpt"
    save_as_template(trained_run, ckpt)
    before = snapshot(tmp_path)
    r = cvae("predict", ckpt, "--data", tiny_data, "--out", tmp_path / "out")  # the template's widths: 128/32/12/192
    assert_bad_input(r, str(ckpt), "`frame_transformation.0.conv1.weight`", "(2, 3, 3, 3)", "(16, 3, 3, 3)",
                     "model.frame_dim")  # fmt: skip
    assert snapshot(tmp_path) == before
    torch.save({"weights": {}}, tmp_path / "other.ckpt")
    r = cvae("evaluate", tmp_path / "other.ckpt")
    assert_bad_input(r, "neither a cvae checkpoint nor one saved by the Lab4 template's Trainer", "state_dict")


def test_init_from_a_template_checkpoint(tmp_path, trained_run, tiny_data):
    """--init-from takes the weights only: the run starts at epoch 1 (here with a learning rate too small
    to move them) and says what of the file it does not apply."""
    ckpt = tmp_path / "epoch=1.ckpt"
    state = save_as_template(trained_run, ckpt)
    run = tmp_path / "run"
    r = cvae("train", trained_run / "spec.yaml", "--init-from", ckpt, "--run-dir", run, "--set", "train.epochs=1",
             "--set", "optim.lr=1e-12", "--set", "name=init")  # fmt: skip
    assert_ok(r)
    assert "lr 1e-05, tfr 0.3, last_epoch 1: not applied" in r.stdout
    after = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert after["epoch"] == 1
    for key, value in state.items():  # the weights (BatchNorm's running averages move with every batch)
        if "running_" not in key and "num_batches" not in key:
            assert torch.allclose(after["model"][key], value, atol=1e-6), key
    assert "init_from" in (run / "spec.yaml").read_text()
    missing = cvae(
        "train", trained_run / "spec.yaml", "--init-from", tmp_path / "nope.ckpt", "--run-dir", tmp_path / "r2"
    )
    assert_bad_input(missing, "train.init_from", "nope.ckpt", "no such checkpoint file")
    assert not (tmp_path / "r2").exists()


# --------------------------------------------------------------------------- BatchNorm in rollouts


def test_batch_mode_normalizes_each_frame_by_itself_as_the_templates_batchnorm_does():
    """The template never calls nn.Module.eval and rolls out one video at a time: its BatchNorm, in
    training mode, normalizes each pose image with that image's statistics. PoseNorm(batch) in eval
    gives exactly that for a batch of videos; PoseNorm(running) is nn.BatchNorm2d's eval mode."""
    torch.manual_seed(0)
    x = torch.rand(4, 6, 8, 16) * 3 + 1
    template = torch.nn.BatchNorm2d(6).train()
    batch, running = PoseNorm(6, "batch"), PoseNorm(6, "running")
    for m in (batch, running):
        m.load_state_dict(template.state_dict())
        m.running_mean.fill_(0.5)
        m.running_var.fill_(2.0)
        m.eval()
    with torch.no_grad():
        per_frame = torch.cat([template(x[i : i + 1]) for i in range(4)])
        assert torch.allclose(batch(x), per_frame, atol=1e-5)
        assert torch.allclose(running(x), (x - 0.5) / torch.sqrt(torch.tensor(2.0) + 1e-5), atol=1e-5)
        assert not torch.allclose(batch(x), running(x), atol=1e-2)
    batch.train()
    assert torch.allclose(batch(x), torch.nn.functional.batch_norm(x, None, None, training=True), atol=1e-5)


def test_the_template_and_report_specs_use_batch_statistics():
    from cvae.spec import load_spec

    for path in [EXPERIMENTS / "lab4_template.yaml", *EXPERIMENTS.glob("report_*.yaml")]:
        assert load_spec(path).model.eval_batchnorm == "batch", path.name
    assert load_spec(None).model.eval_batchnorm == "running"  # runs made before the setting existed


# --------------------------------------------------------------------------- the report's own settings


def schedule(name: str) -> list[dict]:
    r = cvae("spec", "show", EXPERIMENTS / name, "--schedule", "--json")
    assert_ok(r)
    return json.loads(r.stdout)


def test_the_reports_settings_read_literally():
    """report_psnr ran beta 0.001 throughout (its type `none` is neither Cyclical, Monotonic nor
    Without); the three KL runs name no teacher forcing, so the parser's defaults: 0 throughout."""
    psnr = schedule("report_psnr.yaml")
    assert len(psnr) == 70 and {row["beta"] for row in psnr} == {0.001}
    assert {row["beta"] for row in schedule("report_kl_none.yaml")} == {1.0}
    for name in ("report_kl_monotonic.yaml", "report_kl_cyclical.yaml", "report_kl_none.yaml"):
        rows = schedule(name)
        assert {row["tfr"] for row in rows} == {0.0} and not any(row["teacher_forced"] for row in rows), name
