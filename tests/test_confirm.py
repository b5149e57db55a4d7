"""`cvae sweep confirm`, what mattered (`cvae sweep status`'s importances), enqueued points and the
objective's name: statistics against hand-computed values, a confirm stopped with Ctrl-C and run
again, the real CLI on tiny sweeps."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import pytest
import yaml
from helpers import assert_ok, cvae, subprocess_env, trials_of, write_sweep

from cvae.errors import SpecError
from cvae.sweep import stats
from cvae.sweep.confirm_report import confirm_table
from cvae.sweep.file import load_sweep
from cvae.sweep.stats import mean_interval, summarize, t_quantile, verdict
from cvae.terminal import render

# --------------------------------------------------------------------------- statistics by hand


def test_t_quantiles_are_students():
    # two-sided 95%: the tables' 12.706 (1 df), 2.776 (4), 2.262 (9); the normal's 1.960 far out
    assert [round(t_quantile(0.975, df), 3) for df in (1, 4, 9, 10_000)] == [12.706, 2.776, 2.262, 1.960]


def test_mean_interval_by_hand():
    # 27, 28, 29, 30, 31: mean 29, sd sqrt(10 / 4) = 1.5811, half width 2.776 * 1.5811 / sqrt(5) = 1.9632
    mean, sd, (low, high) = mean_interval([27.0, 28.0, 29.0, 30.0, 31.0])
    assert (mean, sd) == (29.0, pytest.approx(1.58114, abs=1e-5))
    assert (low, high) == (pytest.approx(29 - 1.96318, abs=1e-4), pytest.approx(29 + 1.96318, abs=1e-4))
    one = mean_interval([3.0])
    assert one[0] == 3.0 and math.isnan(one[1]) and math.isnan(one[2][0])


def test_summarize_pairs_seeds_and_decides_by_the_interval():
    base = {1: 27.0, 2: 28.0, 3: 29.0, 4: 30.0, 5: 31.0}
    values = {
        "base": base,
        # +1.0, +1.2, +0.8, +1.1, +0.9 over the base seed by seed: mean 1.0, sd sqrt(0.1 / 4) = 0.15811,
        # half width 2.776 * 0.15811 / sqrt(5) = 0.19632: [0.804, 1.196] above 0
        "up": {1: 28.0, 2: 29.2, 3: 29.8, 4: 31.1, 5: 31.9},
        # the same as "up" but lower: [-1.196, -0.804]
        "down": {1: 26.0, 2: 26.8, 3: 28.2, 4: 28.9, 5: 30.1},
        # +2, -2, +2, -2, +1: mean 0.2, the interval holds 0: no evidence, though its mean is higher
        "noisy": {1: 29.0, 2: 26.0, 3: 31.0, 4: 28.0, 5: 32.0},
    }
    rows = {r["name"]: r for r in summarize(values, "maximize")}
    assert rows["base"]["values"] == [27.0, 28.0, 29.0, 30.0, 31.0] and "vs_base" not in rows["base"]
    assert rows["base"]["ci95"] == pytest.approx([29 - 1.96318, 29 + 1.96318], abs=1e-4)
    up, down, noisy = rows["up"]["vs_base"], rows["down"]["vs_base"], rows["noisy"]["vs_base"]
    assert up["mean"] == pytest.approx(1.0) and up["ci95"] == pytest.approx([0.80368, 1.19632], abs=1e-4)
    assert up["verdict"] == "better" and up["paired"] == 5
    assert down["ci95"] == pytest.approx([-1.19632, -0.80368], abs=1e-4) and down["verdict"] == "worse"
    assert noisy["mean"] == pytest.approx(0.2) and noisy["verdict"] == "no evidence"
    assert rows["noisy"]["mean"] > rows["base"]["mean"]  # a higher mean alone decides nothing
    # an objective to minimize reads the same intervals the other way
    flipped = {r["name"]: r["vs_base"]["verdict"] for r in summarize(values, "minimize") if "vs_base" in r}
    assert flipped == {"up": "worse", "down": "better", "noisy": "no evidence"}
    assert verdict((float("nan"), float("nan")), "maximize") == "no evidence"


# --------------------------------------------------------------------------- the race


def test_the_race_spends_alpha_over_its_looks():
    # 3 to 5 seeds: 10% of 0.05 over the two interim looks, 90% at the last; one look: all of it
    assert [stats.look_alpha(n, 3, 5) for n in (3, 4, 5)] == pytest.approx([0.0025, 0.0025, 0.045])
    assert stats.look_alpha(5, 5, 5) == 0.05 and stats.look_alpha(2, 2, 3) == pytest.approx(0.005)
    assert sum(stats.look_alpha(n, 3, 8) for n in range(3, 9)) == pytest.approx(0.05)
    # [1, 2, 3]: mean 2, sd 1; at 5%, t(0.975, 2) = 4.3027: half width 4.3027 / sqrt(3) = 2.4841
    mean, sd, (low, high) = stats.interval([1.0, 2.0, 3.0], 0.05)
    assert (mean, sd, low, high) == (2.0, 1.0, pytest.approx(-0.4841, abs=1e-4), pytest.approx(4.4841, abs=1e-4))


def test_the_chance_of_a_final_verdict_by_hand():
    from scipy.stats import norm, t

    # diffs 0, 1, 2 (mean 1, sd 1) with 2 seeds to go of 5: final mean (3 + S) / 5, S ~ N(2, 2);
    # a verdict when |final mean| > c / sqrt(5), c = t(1 - 0.045 / 2, 4)
    c = t.ppf(1 - 0.045 / 2, 4)
    by_hand = norm.cdf((5 - c * 5**0.5) / 2**0.5) + norm.cdf((-5 - c * 5**0.5) / 2**0.5)
    assert stats.final_chance([0.0, 1.0, 2.0], 5, 0.045) == pytest.approx(by_hand, rel=1e-9)
    assert stats.final_chance([1.0, 1.0, 1.0], 5, 0.045) == 1.0 and stats.final_chance([0.0] * 3, 5, 0.045) == 0.0


def test_the_race_on_a_measured_confirmation():
    """The quick sweep's confirmation of 2026-12-01 (val PSNR, seeds 1-5), raced: trials 5 and 14 stop
    after 3 seeds (their final 95% verdicts were `no evidence` too), trial 7 is `better` after 5, as it
    was; a setting that cannot learn is `worse` after 3."""
    base = [27.91, 28.09, 27.47, 27.37, 27.27]
    measured = {
        "trial-5": [28.46, 28.90, 27.37, 27.65, 27.62],
        "trial-14": [28.35, 28.34, 27.31, 27.65, 27.64],
        "trial-7": [28.53, 28.60, 27.58, 27.86, 27.61],
        "summed KL": [18.1, 17.9, 18.0, 18.2, 17.8],
    }
    decided = {}
    for name, values in measured.items():
        d = stats.race([v - b for v, b in zip(values, base, strict=True)], 3, 5, "maximize")
        decided[name] = (d.verdict, d.settled, d.n)
    assert decided == {
        "trial-5": ("no evidence", "futility", 3),
        "trial-14": ("no evidence", "futility", 3),
        "trial-7": ("better", "verdict", 5),
        "summed KL": ("worse", "verdict", 3),
    }
    # trial 7 at its last look: mean 0.414, sd 0.1974, t(1 - 0.045 / 2, 4) = 2.8780: [0.1600, 0.6680]
    last = stats.race([v - b for v, b in zip(measured["trial-7"], base, strict=True)], 3, 5, "maximize")
    assert last.ci == pytest.approx((0.1602, 0.6678), abs=2e-4) and last.alpha == pytest.approx(0.045)


def test_wrong_verdicts_at_no_true_difference_stay_under_five_percent():
    """20,000 simulated races of 3 to 5 seeds with no true difference (normal noise): the share of
    `better` or `worse` verdicts stays at or under 5%, and the races spend fewer seeds than 5 each."""
    import numpy as np

    rng = np.random.default_rng(0)
    wrong, seeds = 0, 0
    for _ in range(20_000):
        d = stats.race(list(rng.normal(0.0, 0.3, 5)), 3, 5, "maximize")
        wrong += d.verdict != "no evidence"
        seeds += d.n
    assert wrong / 20_000 <= 0.05
    assert seeds / 20_000 < 4


def fake_confirm(tmp_path, tiny_data, monkeypatch, values: dict[str, list[float]], test=None, **kw):
    """run_confirm over scripted values (setting -> val PSNR per seed 1..5, and ``test``: held-out PSNR per
    seed in the runs' summary.json): the rounds, which runs each asks for, and the result; nothing is
    trained (the real path is tested through the CLI below)."""
    from cvae.runs import queue
    from cvae.sweep import confirm

    sweep = load_sweep(
        write_sweep(tmp_path, tiny_data, {"search": SEARCH, "budget": {"n_trials": 2}}), None, tmp_path / "out"
    )
    settings = [confirm.Setting("base", {})] + [confirm.Setting(n, {}, 1) for n in values if n != "base"]
    monkeypatch.setattr(confirm, "pick_settings", lambda study, sweep, top: settings)
    asked: list[list[str]] = []

    def train_all(specs, runs_dir, workers, console=None, gpus=()):
        asked.append(sorted(specs))
        assert list(gpus) == list(kw.get("gpus", []))  # each run at a time on its own GPU
        for name in specs:
            run = runs_dir / name
            if not (run / "history.jsonl").exists():
                setting, seed = name.split("/seed")
                run.mkdir(parents=True)
                row = {"step": 1, "epoch": 1, "epoch/loss": 0.1, "val/psnr": values[setting][int(seed) - 1]}
                (run / "history.jsonl").write_text(json.dumps(row) + "\n")
                if test is not None:
                    held = {"test/psnr": test[setting][int(seed) - 1], "test/psnr_mean_frame": 24.0}
                    (run / "summary.json").write_text(json.dumps(held))
        return [runs_dir / n for n in specs], []

    monkeypatch.setattr(queue, "train_all", train_all)
    return confirm.run_confirm(sweep, None, 3, 5, 2, None, **kw), asked


def test_a_race_gives_seeds_to_open_settings_only(tmp_path, tiny_data, monkeypatch):
    values = {
        "base": [27.91, 28.09, 27.47, 27.37, 27.27],
        "steady": [28.53, 28.60, 27.58, 27.86, 27.61],
        "noise": [28.35, 28.34, 27.31, 27.65, 27.64],
    }
    result, asked = fake_confirm(tmp_path, tiny_data, monkeypatch, values)
    assert asked == [
        sorted(f"{s}/seed{k}" for s in values for k in (1, 2, 3)),  # the first 3 seeds of all
        ["base/seed4", "steady/seed4"],  # noise stopped for futility
        ["base/seed5", "steady/seed5"],
    ]
    rows = {r["name"]: r for r in result["settings"]}
    assert rows["noise"]["values"] == values["noise"][:3] and rows["noise"]["vs_base"]["settled"] == "futility"
    assert (rows["steady"]["vs_base"]["verdict"], rows["steady"]["vs_base"]["settled_at"]) == ("better", 5)
    assert rows["steady"]["vs_base"]["level"] == pytest.approx(0.955)
    assert (result["runs"], result["runs_saved"], result["race"]) == (13, 2, True)
    again, asked_again = fake_confirm(tmp_path, tiny_data, monkeypatch, values)  # resumed: nothing new to train
    assert again["settings"] == result["settings"]
    assert all(name in asked[0] + asked[1] + asked[2] for names in asked_again for name in names)


def test_confirm_gives_its_runs_the_gpus_it_was_given(tmp_path, tiny_data, monkeypatch):
    values = {"base": [27.0, 28.0, 29.0, 30.0, 31.0], "up": [28.0, 29.2, 29.8, 31.1, 31.9]}
    result, asked = fake_confirm(tmp_path, tiny_data, monkeypatch, values, race=False, gpus=["2", "3"])
    assert result["runs"] == 10  # the fake's assertion held for every call


def test_held_out_verdicts_sit_beside_the_race_on_its_seeds_and_decide_nothing(tmp_path, tiny_data, monkeypatch):
    """Each setting's held-out scores, paired with the base's on the seeds the race trained it on, at the level
    of its validation look: computed by hand here. The race asks for the same runs as without them."""
    values = {
        "base": [27.91, 28.09, 27.47, 27.37, 27.27],
        "steady": [28.53, 28.60, 27.58, 27.86, 27.61],
        "noise": [28.35, 28.34, 27.31, 27.65, 27.64],
    }
    test = {
        "base": [26.0, 26.5, 25.8, 26.1, 26.3],
        "steady": [26.2, 26.4, 26.1, 25.9, 26.6],  # better on validation, not steadily on the held-out videos
        "noise": [26.9, 27.4, 26.6, 99.0, 99.0],  # seeds 4 and 5 are never trained (futility after 3)
    }
    (tmp_path / "a").mkdir()
    plain, asked_plain = fake_confirm(tmp_path / "a", tiny_data, monkeypatch, values)
    (tmp_path / "b").mkdir()
    result, asked = fake_confirm(tmp_path / "b", tiny_data, monkeypatch, values, test=test)
    assert asked == asked_plain  # the held-out scores change no decision
    assert [r["vs_base"] for r in result["settings"][1:]] == [r["vs_base"] for r in plain["settings"][1:]]
    assert result["heldout"] and not plain["heldout"] and result["test_mean_frame"] == 24.0
    rows = {r["name"]: r for r in result["settings"]}
    for name, seeds in (("steady", 5), ("noise", 3)):
        diffs = [a - b for a, b in zip(test[name][:seeds], test["base"][:seeds], strict=True)]
        level = rows[name]["vs_base"]["level"]
        mean, _, ci = stats.interval(diffs, 1 - level)
        held = rows[name]["test_vs_base"]
        assert (held["paired"], held["level"]) == (seeds, level) and held["mean"] == pytest.approx(mean)
        assert held["ci"] == pytest.approx(list(ci)) and held["verdict"] == verdict(ci, "maximize")
        assert rows[name]["test"]["values"] == test[name][:seeds]
    assert rows["base"]["test"]["values"] == test["base"] and "test_vs_base" not in rows["base"]
    assert (rows["steady"]["vs_base"]["verdict"], rows["steady"]["test_vs_base"]["verdict"]) == (
        "better",
        "no evidence",
    )
    assert rows["noise"]["test_vs_base"]["verdict"] == "better"  # clearly so, even at the 99.75% look
    text = render(confirm_table(result), 250)
    for needle in ("test verdict", "val verdict", "test mean", "26.14", "never chosen on"):
        assert needle in text, text
    assert "test verdict" not in render(confirm_table(plain), 250)
    with_test = iio.imread(tmp_path / "b" / "out" / "confirm.png")  # validation | held-out, side by side
    assert with_test.shape[1] > 1.8 * iio.imread(tmp_path / "a" / "out" / "confirm.png").shape[1]


def test_no_race_trains_every_seed_and_decides_once_at_95_percent(tmp_path, tiny_data, monkeypatch):
    values = {"base": [27.0, 28.0, 29.0, 30.0, 31.0], "up": [28.0, 29.2, 29.8, 31.1, 31.9]}
    result, asked = fake_confirm(tmp_path, tiny_data, monkeypatch, values, race=False)
    assert asked == [sorted(f"{s}/seed{k}" for s in values for k in range(1, 6))]
    up = {r["name"]: r for r in result["settings"]}["up"]["vs_base"]
    assert up["ci95"] == pytest.approx([0.80368, 1.19632], abs=1e-4) and up["verdict"] == "better"
    assert (result["runs"], result["runs_saved"]) == (10, 0)


SEARCH = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}


# --------------------------------------------------------------------------- the sweep file


def test_enqueued_points_are_checked(tmp_path, tiny_data):
    search = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    cases = [
        ([{"name": "x", "params": {}}], "missing ['optim.lr']"),
        ([{"name": "x", "params": {"optim.lr": 0.1}}], "outside its search range"),
        ([{"name": "x", "params": {"optim.lr": 1e-3, "seed": 3}}], "not searched ['seed']"),
    ]
    for enqueue, needle in cases:
        path = write_sweep(tmp_path, tiny_data, {"search": search, "enqueue": enqueue, "budget": {"n_trials": 2}})
        with pytest.raises(SpecError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            load_sweep(path)


def test_the_shipped_quick_sweep_enqueues_the_base_and_the_template():
    sweep = load_sweep(Path(__file__).parent.parent / "sweeps" / "quick.yaml")
    names = [p.name for p in sweep.spec.enqueue]
    assert names == ["base", "template, summed KL", "template schedules"]
    base = sweep.base_spec()
    point = sweep.spec.enqueue[0].params
    assert (point["teacher_forcing.decay_step"], point["kl_annealing.type"]) == (
        base.teacher_forcing.decay_step,
        base.kl_annealing.type,
    )  # the base point is the base spec
    assert (base.train.batch_size, base.train.epochs, base.train.val_every) == (2, 4, 2)
    # the pruner's first report (epoch 2) comes after every searched decay has started
    steps_to_first_report = 2 * int(1200 * base.data.partial) // base.train.batch_size
    assert sweep.spec.search["teacher_forcing.decay_start"].high < steps_to_first_report
    assert sweep.spec.pruner.n_warmup_steps == 1


# --------------------------------------------------------------------------- the CLI on a tiny sweep


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, tiny_data):
    """4 trials of a 2-epoch tiny spec (random search, no pruning), one enqueued."""
    folder = tmp_path_factory.mktemp("confirm")
    sweep = {
        "search": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "enqueue": [{"name": "the base's lr", "params": {"optim.lr": 0.001}}],
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 4},
    }
    path = write_sweep(folder, tiny_data, sweep)
    assert_ok(cvae("sweep", "run", path, "--dir", folder / "out"))
    return path, folder / "out"


@pytest.mark.slow
def test_status_names_the_objective_shows_importance_and_says_when_trials_are_few(tiny_sweep):
    path, out = tiny_sweep
    r = cvae("sweep", "status", path, "--dir", out, "--json")
    assert_ok(r)
    st = json.loads(r.stdout)
    assert set(st["importance"]) == {"optim.lr"} and st["importance"]["optim.lr"] == pytest.approx(1.0)
    assert "4 complete trials for 1 parameters: the importances are rough" in st["importance_note"]
    assert [t["label"] for t in st["trials"]][0] == "the base's lr"
    assert all(isinstance(t["vs_mean_frame"], float) for t in st["trials"])
    table = cvae("sweep", "status", path, "--dir", out).stdout
    assert "what mattered" in table and "vs the mean frame" in table
    from cvae.sweep.study import load_study

    assert load_study(str(out / "optuna.journal"), "sweep").metric_names == ["val/psnr"]


def test_importance_with_too_few_trials_says_so(tmp_path):
    import optuna

    from cvae.sweep.status import importances

    study = optuna.create_study(direction="maximize")
    for v in (1.0, 2.0):
        study.add_trial(
            optuna.trial.create_trial(
                params={"a": v, "b": v},
                distributions={"a": optuna.distributions.FloatDistribution(0, 3)} | {
                    "b": optuna.distributions.FloatDistribution(0, 3)},
                value=v,
            )
        )  # fmt: skip
    values, note = importances(study, study.trials)
    assert values == {} and "too few" in note
    for v in (0.5, 1.5, 2.5):
        study.add_trial(
            optuna.trial.create_trial(
                params={"a": v, "b": 3 - v},
                distributions={"a": optuna.distributions.FloatDistribution(0, 3)} | {
                    "b": optuna.distributions.FloatDistribution(0, 3)},
                value=v,
            )
        )  # fmt: skip
    values, note = importances(study, study.trials)
    assert set(values) == {"a", "b"} and "rough" in note  # 5 trials for 2 parameters


@pytest.mark.slow
def test_confirm_stopped_with_ctrl_c_resumes_without_retraining_finished_seeds(tiny_sweep, tmp_path):
    """Confirm the best trial and the base over 2 fresh seeds, one run at a time; Ctrl-C once the
    first run has finished; the second call trains only what is left, then writes confirm.json (each
    setting with its values, mean, interval and, beside the base, its paired difference and verdict)
    and the plot. The runs are ordinary run folders, in W&B's confirm group with the trial's values."""
    path, out = tiny_sweep
    confirm_dir = out / "confirm"
    env = subprocess_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvae.cli", "sweep", "confirm", str(path), "--dir", str(out), "--top", "1",
         "--seeds", "2", "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a terminal's disposition
    )  # fmt: skip
    first = confirm_dir / "base" / "seed1" / "summary.json"
    deadline = time.monotonic() + 240
    while not (first.is_file() and json.loads(first.read_text()).get("status") == "finished"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    finished_before = first.read_bytes()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    stopped = [p for p in confirm_dir.glob("*/seed*/summary.json") if json.loads(p.read_text())["status"] != "finished"]
    assert all(json.loads(p.read_text())["status"] == "stopped" for p in stopped)

    r = cvae("sweep", "confirm", path, "--dir", out, "--top", "1", "--seeds", "2", "--workers", "1", "--json")
    assert_ok(r)
    assert first.read_bytes() == finished_before  # not trained again
    result = json.loads(r.stdout)
    assert result == json.loads((out / "confirm.json").read_text())
    settings = result["settings"]
    complete = [t for t in trials_of(str(out / "optuna.journal"), "sweep") if t.state.name == "COMPLETE"]
    # the best trial whose spec is not the base's (the enqueued point has the base's lr)
    best = max((t for t in complete if t.params["optim.lr"] != 0.001), key=lambda t: t.value)
    assert [s["name"] for s in settings] == ["base", f"trial-{best.number}"]
    for s in settings:
        assert len(s["values"]) == 2 and len(s["ci95"]) == 2 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
        runs = [confirm_dir / s["name"] / f"seed{k}" for k in result["seeds"]]
        psnrs = [json.loads((r / "summary.json").read_text())["best/val_psnr"] for r in runs]
        assert s["values"] == pytest.approx(psnrs)
    # the best trial against the base, seed by seed
    vs = settings[1]["vs_base"]
    diffs = [a - b for a, b in zip(settings[1]["values"], settings[0]["values"], strict=True)]
    assert vs["mean"] == pytest.approx(sum(diffs) / 2) and vs["verdict"] in ("better", "no evidence", "worse")
    spec = yaml.safe_load((confirm_dir / settings[1]["name"] / "seed1" / "spec.yaml").read_text())
    assert spec["optim"]["lr"] == pytest.approx(best.params["optim.lr"]) and spec["seed"] == 1
    assert spec["tracking"]["wandb"]["group"] == "sweep-confirm" and spec["tracking"]["wandb"]["tags"] == [
        "confirm",
        "sweep",
    ]
    assert spec["tracking"]["wandb"]["config"]["trial"]["params"] == best.params
    assert iio.imread(out / "confirm.png").ndim == 3
    # The tiny dancer has test truth: every confirm run scored its best checkpoint on the held-out test videos
    # (the sweep's trials did not), and confirm puts them and their verdict beside validation's.
    assert spec["tracking"]["test_at_end"] and result["heldout"]
    for s in settings:
        runs = [confirm_dir / s["name"] / f"seed{k}" for k in result["seeds"]]
        held = [json.loads((r / "summary.json").read_text())["test/psnr"] for r in runs]
        assert s["test"]["values"] == pytest.approx(held)
    held_vs = settings[1]["test_vs_base"]
    held_diffs = [a - b for a, b in zip(settings[1]["test"]["values"], settings[0]["test"]["values"], strict=True)]
    assert held_vs["mean"] == pytest.approx(sum(held_diffs) / 2) and held_vs["paired"] == 2
    trial_summary = json.loads((out / "trials" / str(best.number) / "summary.json").read_text())
    assert "best/val_psnr" in trial_summary and "test/psnr" not in trial_summary
    table = cvae("sweep", "confirm", path, "--dir", out, "--top", "1", "--seeds", "2", "--workers", "1")
    assert_ok(table)  # nothing left to train: the table, validation and held-out verdicts side by side
    text = " ".join(table.stdout.split())
    assert "val verdict" in text and "test verdict" in text and f"{settings[1]['test']['mean']:.2f}" in text
    assert f"{held_vs['mean']:+.2f}" in text and held_vs["verdict"] in text
    assert os.environ.get("CVAE_DEBUG") is None
