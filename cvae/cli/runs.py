"""``cvae evaluate``, ``predict``, ``score``, ``compare`` and ``report``: what is done with trained runs
(the logic is cvae/runs/)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cvae.cli.common import DeviceOpt, GpusOpt, QuietOpt, SetOpt, ThreadsOpt, apply_threads, handle_errors
from cvae.errors import UserError
from cvae.terminal import make_console

SourceArg = Annotated[
    Path,
    typer.Argument(
        help="A run folder made by cvae train, or a checkpoint file: a cvae one, or one saved by the Lab4 "
        "template's Trainer (its module names)."
    ),
]
CkptOpt = Annotated[str, typer.Option(help="A run folder's checkpoint: best or last.")]
SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        help="With a checkpoint file: the spec of its model and data (default: the one a cvae checkpoint holds, "
        "else experiments/lab4_template.yaml).",
    ),
]
BatchNormOpt = Annotated[
    str | None,
    typer.Option(
        help="PoseEncoder BatchNorm in the rollouts: batch (each frame's statistics, the template) or running "
        "(the running averages); default: the spec's model.eval_batchnorm.",
    ),
]


def _batchnorm(value: str | None) -> str | None:
    if value not in (None, "batch", "running"):
        raise UserError(f"--eval-batchnorm {value!r}: allowed: batch, running")
    return value


@handle_errors
def evaluate(
    source: SourceArg,
    ckpt: CkptOpt = "best",
    pose_shift: Annotated[int | None, typer.Option(help="Rotate the poses by K frames (default: a quarter).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default RUN/eval, or <file>-eval beside a checkpoint file).")
    ] = None,
    spec: SpecOpt = None,
    set_: SetOpt = None,
    eval_batchnorm: BatchNormOpt = None,
    split: Annotated[
        str,
        typer.Option(
            help="val: the val videos (what training validated on); test: the held-out test videos, scored against "
            "their true frames where the dataset has them (the synthetic dancer), as the leaderboard scores them."
        ),
    ] = "val",
    z_seed: Annotated[
        int | None,
        typer.Option(help="Seed of the rollout's z draws (default: the spec's seed + 7919, what training drew)."),
    ] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Roll out every val video (or, with --split test, every held-out test video); write per-frame PSNR
    (CSV, PNG) and the GIF; print the references."""
    apply_threads(threads, quiet)
    from cvae.runs.evaluate import evaluate_run

    console = make_console(quiet)
    report = evaluate_run(
        source, ckpt, pose_shift, console, device, out, spec, set_ or [], _batchnorm(eval_batchnorm), split, z_seed
    )
    console.print(report.table())


@handle_errors
def predict(
    source: SourceArg,
    data: Annotated[Path, typer.Option(help="Dataset root holding test/test_img and test/test_label.")],
    out: Annotated[Path, typer.Option(help="Output folder for GIFs and submission.csv.")],
    ckpt: CkptOpt = "best",
    gif_names: Annotated[
        str, typer.Option(help="name: <video>.gif; lab: the template's pred_seq<k>.gif (k from 0 in test order).")
    ] = "name",
    overwrite: Annotated[bool, typer.Option(help="Replace files already in --out.")] = False,
    spec: SpecOpt = None,
    set_: SetOpt = None,
    eval_batchnorm: BatchNormOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Roll out every test video from its first frame and poses: a GIF each and submission.csv (the
    template's Kaggle format)."""
    apply_threads(threads, quiet)
    from cvae.runs.evaluate import predict_run

    console = make_console(quiet)
    written, scores = predict_run(
        source, data, out, ckpt, overwrite, console, device, spec, set_ or [], _batchnorm(eval_batchnorm), gif_names
    )
    console.print(f"wrote {len(written)} GIFs and {out / 'submission.csv'}")
    if scores is not None:
        console.print(
            f"{data} holds the test videos' true frames: the submission scores {scores['test/psnr']:.2f} dB over all "
            f"predicted frames of its {scores['test/videos']} videos, as the leaderboard scores it (repeat-first "
            f"{scores['test/psnr_repeat_first']:.2f}, mean-frame {scores['test/psnr_mean_frame']:.2f}); "
            f"{out / 'test_scores.json'}",
            markup=False,
        )


@handle_errors
def score(
    submission: Annotated[Path, typer.Argument(help="submission.csv written by cvae predict.")],
    data: Annotated[Path, typer.Option(help="Dataset root whose val videos are the truth.")],
    frame_size: Annotated[str, typer.Option(help="Frame size HxW of the submission.")] = "32x64",
) -> None:
    """Score predictions of `cvae data val-as-test` videos against the real val frames."""
    from cvae.runs.evaluate import score_submission, score_table

    parts = frame_size.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--frame-size {frame_size!r}: expected HxW, two positive whole numbers, e.g. 32x64")
    size = (int(parts[0]), int(parts[1]))
    make_console(False).print(score_table(score_submission(submission, data, size), submission, data))


RunsArg = Annotated[
    list[str], typer.Argument(help="Run folders, globs (runs/report_*) or sweep folders (their trials/*).")
]


@handle_errors
def compare(
    runs: RunsArg,
    out: Annotated[Path, typer.Option(help="Folder for compare.csv and the PNG figures.")] = Path("compare"),
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown",
            help="Print only a markdown table: each run's last validation beside the references (writes nothing).",
        ),
    ] = False,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Table of the settings that differ and the val PSNR of each run; curves and per-frame PSNR as PNG."""
    apply_threads(threads, quiet)
    from cvae.runs.compare import compare_runs, load_runs, markdown_table

    if markdown:
        sys.stdout.write(markdown_table(load_runs(runs)))
        return
    console = make_console(quiet)
    result = compare_runs(runs, out, console)
    console.print(result.table())
    for warning in result.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print("wrote " + ", ".join(str(p) for p in [out / "compare.csv", *result.figures]))


@handle_errors
def report(
    runs: Annotated[
        list[str] | None,
        typer.Argument(help="Run folders, globs (runs/report_*) or sweep folders; none with --reproduce."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNG figures.")] = Path("report"),
    reproduce: Annotated[
        str | None,
        typer.Option(help="Train the report's seven settings at this scale first: cpu (minutes) or full (a GPU job)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="--reproduce: runs trained at a time.")] = 2,
    gpus: GpusOpt = None,
    set_: SetOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """The published analysis' figures (teacher forcing, KL annealing, per-frame PSNR) from report runs."""
    from cvae.runs.report import make_report

    console = make_console(quiet)
    if reproduce is not None:
        from cvae.runs.queue import train_all
        from cvae.runs.reproduce import scaled_specs
        from cvae.spec import parse_override

        if runs:
            raise UserError("--reproduce trains the report's runs itself; give no RUNS with it")
        from cvae.placement import assign_gpus

        specs = scaled_specs(reproduce, dict(parse_override(o) for o in set_ or []))
        # Each run gets cores / workers threads (its own process) and a GPU of its own.
        assigned = assign_gpus(workers, gpus)
        run_dirs, failed = train_all(specs, Path("runs") / f"report-{reproduce}", workers, console, assigned)
        for line in failed:  # a setting that diverges is a finding: the figures show it up to its end
            console.print(f"warning: run failed: {line}", style="yellow", markup=False)
        runs = [str(p) for p in run_dirs]
    elif not runs:
        raise UserError("give the report's run folders (RUNS), or --reproduce cpu|full to train them")
    elif set_ or gpus is not None:
        raise UserError("--set and --gpus go with --reproduce")
    apply_threads(threads, quiet)  # after --reproduce's runs, which choose their own
    result = make_report(runs, out, console)
    console.print(result.table())
    for line in result.skipped:
        console.print(f"skipped: {line}")
