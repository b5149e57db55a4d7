"""Every table the commands print, rendered at 80 columns (a narrow terminal, or `cvae ... > file`):
nothing is cut, no line is wider than the terminal, and every number appears whole."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import REPO

from cvae.terminal import Col, render, table


def assert_fits(renderable, numbers: list[str], width: int = 80) -> str:
    text = render(renderable, width)
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= width, text
    words = set(text.replace("│", " ").replace("┃", " ").split())
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


def status_of(n_trials: int) -> dict:
    trials = [
        {
            "number": n,
            "label": "template scaled" if n == 1 else None,
            "state": "complete" if n % 4 else "pruned",
            "value": 27.0 + n / 7 if n % 4 else None,
            "vs_mean_frame": 3.0 + n / 9 if n % 4 else None,
            "epochs_done": 64 if n % 4 else 8,
            "params": {
                "kl_annealing.type": "monotonic",
                "kl_annealing.ratio": 0.915 - n / 100,
                "teacher_forcing.decay_start": n,
                "teacher_forcing.decay_step": 0.05,
            },
        }
        for n in range(n_trials)
    ]
    return {
        "study": "quick",
        "metric": "val/psnr",
        "direction": "maximize",
        "n_trials": n_trials,
        "states": {"COMPLETE": n_trials - n_trials // 4, "PRUNED": n_trials // 4},
        "replaced": [],
        "best": {"number": 13, "value": 28.5, "params": trials[13]["params"], "run_dir": "/runs/sweeps/quick/13"},
        "epochs_spent": 900,
        "running": [
            {"number": 16, "params": trials[3]["params"], "epoch": 3, "epochs": 8, "run_dir": "r", "worker": "h:1:2"}
        ],
        "failed": [],
        "trials": trials,
        "importance": {"kl_annealing.ratio": 0.61, "teacher_forcing.decay_start": 0.39},
        "importance_note": None,
    }


def test_sweep_status_tables():
    from cvae.sweep.study import status_tables

    st = status_of(16)
    numbers = [f"{t['value']:.2f}" for t in st["trials"] if t["value"] is not None]
    numbers += [f"{t['vs_mean_frame']:+.2f}" for t in st["trials"] if t["vs_mean_frame"] is not None]
    for item in status_tables(st):
        if not isinstance(item, str):
            assert_fits(item, [n for n in numbers if n in render(item, 300)])
    trials = assert_fits(status_tables(st)[-2 if st["importance_note"] is None else -3], numbers)
    assert "vs mf: vs the mean frame." in " ".join(trials.split())
    # where every number was measured: the validation videos the sweep chooses on
    assert "(val/psnr on the validation videos)" in " ".join(trials.split())
    best = next(i for i in status_tables(st) if isinstance(i, str) and i.startswith("best:"))
    assert best.startswith("best: trial 13, val/psnr = 28.5 on the validation videos")


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
    from cvae.sweep.confirm import confirm_table

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


def test_compare_table(tmp_path):
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
            "synthetic small/0, 9600+120 frames, 1a2b3c4d/5e6f7a8b",
        ]  # fmt: skip
        for n in range(12)
    ]
    keys = header[1:4]
    assert_fits(terminal_table(header, rows, keys, "12 runs"), [r[4] for r in rows] + [r[6] for r in rows])


def test_evaluate_score_and_report_tables(tmp_path):
    from cvae.run_folder import RunRecord
    from cvae.runs.evaluate import Evaluation, score_table
    from cvae.runs.report import Figure, ReportFigures

    m = {"val/psnr": 27.42, "val/psnr_shifted_pose": 20.6, "val/psnr_repeat_first": 21.85, "val/psnr_mean_frame": 24.35}
    assert_fits(Evaluation(m, 157, tmp_path / "runs" / "quickstart" / "eval").table(), ["27.42", "20.60", "24.35"])
    scores = {name: {"psnr": 25.123, "repeat_first": 21.5, "mean_frame": 24.0} for name in ("0", "0_shifted")}
    assert_fits(score_table(scores, tmp_path / "predict" / "submission.csv", tmp_path / "data"), ["25.12", "21.50"])
    runs = [RunRecord(tmp_path / f"report_{k}", f"report_{k}", {}, [], {"best/val_psnr": 20 + i}) for i, k in
            enumerate(("tf_0.5", "tf_0.1", "tf_0"))]  # fmt: skip
    fig = Figure(tmp_path / "teacher_forcing.png", "teacher forcing", [(f"TF {r.label}, -0.1/epoch", r) for r in runs])
    assert_fits(ReportFigures([fig]).table(), ["20.00", "21.00", "22.00"])


def test_bench_and_data_check_tables(tmp_path, tiny_data):
    import json

    from rich.console import Console

    from cvae.bench.tables import tables
    from cvae.data.tools import check_dataset

    result = json.loads((REPO / "docs" / "bench" / "quickstart-cpu.json").read_text())
    for t in tables(result)[0]:
        assert_fits(t, [])
    import io

    console = Console(file=io.StringIO(), width=80)
    assert check_dataset(Path(tiny_data), console) == []
    text = console.file.getvalue()
    assert "…" not in text and "96" in text and math.isfinite(len(text))
