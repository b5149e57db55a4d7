"""Every table and line the commands print, rendered at 80, 100 and 160 columns (a narrow terminal, or
`cvae ... > file`, and wider ones): nothing is cut, no line is wider than the terminal, every word and
number of the data appears whole, and a wide terminal is used."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from helpers import BOX, REPO

from cvae.terminal import Col, Fields, FoldingTable, render, table

WIDTHS = (80, 100, 160)


def data_words(renderable) -> set[str]:
    """Every word (and number) of what a table or a line of fields shows: title, notes, headers, cells."""
    if isinstance(renderable, FoldingTable):
        t = renderable
        texts = [t.title, *t.notes, *(c.header for c in t.columns), *(cell for row in t.rows for cell in row)]
    else:  # Fields: the separators between fields may give way to a line break
        texts = list(renderable.fields)
    return {w for text in texts for w in text.split()}


def assert_whole(renderable, widths=WIDTHS) -> dict[int, str]:
    """Rendered at each width: no line wider, nothing cut (rich's …), every word of the data whole."""
    out = {}
    for width in widths:
        text = render(renderable, width)
        assert "…" not in text, text
        assert max(len(line) for line in text.splitlines()) <= width, text
        shown = set(BOX.sub(" ", text).split())
        missing = data_words(renderable) - shown
        assert not missing, f"split or missing at {width} columns: {sorted(missing)}\n{text}"
        out[width] = text
    return out


def assert_fits(renderable, numbers: list[str], width: int = 80) -> str:
    text = assert_whole(renderable, (width,))[width]
    words = set(BOX.sub(" ", text).split())
    for number in numbers:
        assert number in words, f"{number!r} is not whole in\n{text}"
    return text


def test_a_table_too_wide_folds_into_blocks_and_cuts_nothing():
    cols = [Col("trial", numeric=True), *(Col(f"metric {i}", numeric=True) for i in range(9)), Col("notes")]
    rows = [[str(n), *(f"{1000 * n + i:.2f}" for i in range(9)), "a note that wraps " * 4] for n in range(3)]
    numbers = [cell for row in rows for cell in row[:-1]]
    text = assert_fits(table("wide", cols, rows), numbers)
    assert "metric 8" in text and text.count("trial") == 3  # one block per row, every column named
    wide = render(table("wide", cols, rows), 240)
    assert wide.count("trial") == 1  # as a table where it fits


def test_cells_are_text_not_markup():
    text = render(table("t", ["a"], [["[bold]x[/bold] [0.2, 0.6]"]]), 80)
    assert "[bold]x[/bold] [0.2, 0.6]" in text


# The quick sweep's parameters (sweeps/quick.yaml), with the values that once read wrong: at 80 columns
# `teacher_forcing.decay_step=0.006` on one line and `667` on the next.
QUICK_PARAMS = {
    "kl_annealing.type": "monotonic",
    "kl_annealing.cycles": 10,
    "kl_annealing.ratio": 0.915,
    "loss.kl_reduction": "mean",
    "teacher_forcing.ratio": 1.0,
    "teacher_forcing.decay_start": 29,
    "teacher_forcing.decay_step": 0.0066667,
}


def status_of(n_trials: int) -> dict:
    trials = [
        {
            "number": n,
            "label": "template, summed KL" if n == 1 else None,
            "state": "complete" if n % 4 else "pruned",
            "value": 27.0 + n / 7 if n % 4 else None,
            "vs_mean_frame": 3.0 + n / 9 if n % 4 else None,
            "epochs_done": 64 if n % 4 else 8,
            "params": QUICK_PARAMS
            | {"kl_annealing.ratio": 0.915 - n / 100, "teacher_forcing.decay_start": n, "kl_annealing.cycles": n + 1},
        }
        for n in range(n_trials)
    ]
    return {
        "study": "quickstart_recipe",
        "metric": "val/psnr",
        "direction": "maximize",
        "n_trials": n_trials,
        "states": {"COMPLETE": n_trials - n_trials // 4, "PRUNED": n_trials // 4},
        "replaced": [],
        "best": {
            "number": 13,
            "value": 28.5,
            "params": trials[13]["params"],
            "run_dir": "/home/someone/cvae-sweeps/runs/sweeps/quickstart_recipe/trials/13",
        },
        "epochs_spent": 900,
        "running": [
            {
                "number": 16,
                "params": trials[3]["params"],
                "epoch": 3,
                "epochs": 8,
                "run_dir": "r",
                "worker": "a1b2c3d4e5f6:123456:98765432",
            }
        ],  # fmt: skip
        "failed": [{"number": 17, "reason": "TrainingDiverged: non-finite loss at step 1234 (beta 0.5)"}],
        "trials": trials,
        "importance": {"kl_annealing.ratio": 0.61, "teacher_forcing.decay_start": 0.39},
        "importance_ped_anova": {"kl_annealing.ratio": 0.27, "teacher_forcing.decay_start": 0.73},
        "importance_note": "16 complete trials for 7 parameters: the importances are rough",
    }


def test_sweep_status_tables():
    from cvae.sweep.status import status_tables, trials_table

    st = status_of(16)
    numbers = [f"{t['value']:.2f}" for t in st["trials"] if t["value"] is not None]
    numbers += [f"{t['vs_mean_frame']:+.2f}" for t in st["trials"] if t["vs_mean_frame"] is not None]
    numbers += ["teacher_forcing.decay_step=0.006667"]
    for item in status_tables(st):
        assert_whole(item)
    shown = set(BOX.sub(" ", " ".join(render(item, 80) for item in status_tables(st))).split())
    assert {"28.50", "dB", "teacher_forcing.decay_step=0.006667", "TrainingDiverged:"} <= shown  # the best, failed
    trials = assert_fits(trials_table(st), numbers)
    assert "vs mf: vs the mean frame, in dB." in " ".join(trials.split())
    # where every number was measured: the validation videos the sweep chooses on
    assert "(val/psnr on the validation videos)" in " ".join(trials.split())
    best = next(render(i, 160) for i in status_tables(st) if render(i, 160).startswith("best:"))
    assert best.startswith("best: trial 13  val/psnr 28.50 dB  on the validation videos"), best


@pytest.mark.parametrize("width, most", [(120, 3), (160, 2)])
def test_sweep_status_uses_a_wide_terminal(width, most):
    """Seven parameters: at 120 columns at most three lines a trial, at 160 two (one a parameter: seven)."""
    from cvae.sweep.status import trials_table

    st = status_of(16)
    text = render(trials_table(st), width)
    body = [line for line in text.splitlines() if line.startswith("│")]  # the rows' lines, not the header's
    rows = [line for line in body if re.match(r"│\s+\d+ ", line)]
    assert len(rows) == 16 and len(body) <= most * 16 + 1, text  # +1: the label's line


def test_fields_wrap_between_fields():
    fields = ["epoch 3/10", "loss 0.0376", "mse 0.0376", "kl 0.0125", "beta 1", "tfr 0.5", "43 frames/s",
              "val PSNR 24.10 dB (repeat-first 17.90, mean-frame 20.60, shifted-pose 16.80)"]  # fmt: skip
    line = Fields(fields)
    texts = assert_whole(line, (30, *WIDTHS))
    assert texts[160].count("\n") == 1  # one line where it fits
    lines = texts[80].splitlines()
    assert lines[0] == "epoch 3/10  loss 0.0376  mse 0.0376  kl 0.0125  beta 1  tfr 0.5  43 frames/s"
    assert lines[1] == "  val PSNR 24.10 dB (repeat-first 17.90, mean-frame 20.60, shifted-pose 16.80)"
    # a field goes to the next line whole while it fits a line
    assert all(any(f in line for line in texts[100].splitlines()) for f in fields)


def test_report_table_says_which_split_each_number_comes_from(tmp_path):
    from cvae.run_folder import RunRecord
    from cvae.runs.report import Figure, ReportFigures

    def run(name: str, summary: dict) -> RunRecord:
        return RunRecord(tmp_path / name, name, {}, [], {"best/val_psnr": 25.5, "best/epoch": 2, **summary})

    figures = ReportFigures([Figure(tmp_path / "kl_annealing.png", "KL", [("none", run("a", {"test/psnr": 24.75})),
                                                                          ("cyclical", run("b", {}))])])  # fmt: skip
    text = " ".join(assert_fits(figures.table(), ["25.50", "24.75"]).split())
    assert "best val PSNR: best val PSNR (the validation video)" in text
    assert "test PSNR: its PSNR on the held-out test videos" in text
    plain = ReportFigures([Figure(tmp_path / "kl.png", "KL", [("cyclical", run("b", {}))])])
    assert "test PSNR" not in render(plain.table(), 200)  # no run has held-out scores: no column


def test_confirm_table():
    from cvae.sweep.confirm_report import confirm_table

    settings = [{"name": "base", "values": [27.91, 28.09, 27.47, 27.37, 27.27], "mean": 27.62, "sd": 0.35,
                 "ci95": [27.19, 28.06], "params": {}}]  # fmt: skip
    for n in (7, 5, 14):
        settings.append(
            {
                "name": f"trial-{n}",
                "sweep_value": 27.69,
                "values": [28.3, 28.4, 27.9, 27.8, 27.7],
                "mean": 28.03,
                "sd": 0.31,
                "ci95": [27.64, 28.41],
                "params": status_of(16)["trials"][n]["params"],
                "vs_base": {"mean": 0.41, "ci95": [0.17, 0.66], "verdict": "better", "paired": 5},
            }
        )
    result = {"study": "quick", "metric": "val/psnr", "seeds": [1, 2, 3, 4, 5], "settings": settings}
    assert_fits(confirm_table(result), ["27.91", "28.09", "27.62", "0.35", "+0.41", "28.03", "better"])
    assert_whole(confirm_table(result))


@pytest.mark.parametrize("spec", sorted(p.name for p in (REPO / "experiments").glob("*.yaml")))
def test_spec_show_schedule_tables(spec):
    from cvae.cli.spec import schedule_table
    from cvae.data.clips import steps_per_epoch_of
    from cvae.spec import load_spec
    from cvae.training.schedules import run_schedule

    spec_obj = load_spec(REPO / "experiments" / spec, ["data.root=/nonexistent/data"])
    steps, where = steps_per_epoch_of(spec_obj)
    rows = run_schedule(spec_obj, steps)
    assert_fits(schedule_table(spec_obj, rows, where), [f"{r['beta']:.4g}" for r in rows])
    assert_whole(schedule_table(spec_obj, rows, where))


def test_compare_table(tmp_path):
    """`kl_annealing.type=monotonic` stays one word (it broke as `kl_annealing.type=m` / `onotonic`)."""
    from cvae.runs.compare import terminal_table

    header = ["run", "kl_annealing.type", "teacher_forcing.decay_step", "optim.lr", "best val PSNR", "best epoch",
              "final val PSNR", "epochs", "train time", "status", "data"]  # fmt: skip
    rows = [
        [
            f"quick/trials/{n}",
            "monotonic",
            "0.0052632",
            "0.001",
            f"{27 + n / 10:.2f}",
            "64",
            f"{26 + n / 10:.2f}",
            "64",
            "4m17s",
            "finished",
            f"synthetic small/0, 9600+120 frames, 1a2b3c4d/5e6f7a8{n % 2}",
        ]  # fmt: skip
        for n in range(12)
    ]
    keys = header[1:4]
    t = terminal_table(header, rows, keys, "12 runs")
    assert_fits(t, [r[4] for r in rows] + [r[6] for r in rows])
    texts = assert_whole(t)
    assert "kl_annealing.type=monotonic" in texts[80]
    same = terminal_table(header, [r[:-1] + [rows[0][-1]] for r in rows], keys, "12 runs")
    texts = assert_whole(same)  # one dataset for every run: said once, under the table
    assert texts[100].count("1a2b3c4d/5e6f7a80") == 1 and "data (every run)" in " ".join(texts[100].split())


def test_evaluate_score_and_report_tables(tmp_path, monkeypatch):
    from cvae.run_folder import RunRecord
    from cvae.runs.evaluate import Evaluation, score_table
    from cvae.runs.report import Figure, ReportFigures

    m = {"val/psnr": 27.42, "val/psnr_shifted_pose": 20.6, "val/psnr_repeat_first": 21.85, "val/psnr_mean_frame": 24.35}
    # Folders as a user names them, relative: a word longer than the terminal is wide (the test's own
    # tmp path, 80 characters and more) is the one thing that must fold.
    monkeypatch.chdir(tmp_path)
    tmp_path = Path(".")
    assert_fits(Evaluation(m, 157, tmp_path / "runs" / "quickstart" / "eval").table(), ["27.42", "20.60", "24.35"])
    assert_whole(Evaluation(m, 157, tmp_path / "runs" / "quickstart" / "eval").table())
    scores = {name: {"psnr": 25.123, "repeat_first": 21.5, "mean_frame": 24.0} for name in ("0", "0_shifted")}
    scored = score_table(scores, tmp_path / "predict" / "submission.csv", tmp_path / "data")
    assert_fits(scored, ["25.12", "21.50"])
    assert_whole(scored)
    runs = [RunRecord(tmp_path / f"report_{k}", f"report_{k}", {}, [], {"best/val_psnr": 20 + i}) for i, k in
            enumerate(("tf_0.5", "tf_0.1", "tf_0"))]  # fmt: skip
    fig = Figure(tmp_path / "teacher_forcing.png", "teacher forcing", [(f"TF {r.label}, -0.1/epoch", r) for r in runs])
    assert_fits(ReportFigures([fig]).table(), ["20.00", "21.00", "22.00"])
    assert_whole(ReportFigures([fig]).table())


def test_bench_and_data_check_tables(tmp_path, tiny_data):
    import json

    from rich.console import Console

    from cvae.bench.tables import tables
    from cvae.data.tools import check_dataset

    result = json.loads((REPO / "docs" / "bench" / "quickstart-cpu.json").read_text())
    for t in tables(result)[0]:
        assert_whole(t)
    import io

    console = Console(file=io.StringIO(), width=80)
    assert check_dataset(Path(tiny_data), console) == []
    text = console.file.getvalue()
    assert "…" not in text and "96" in text and math.isfinite(len(text))
