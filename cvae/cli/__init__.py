"""The ``cvae`` command: parse, call, print. Logic lives in the modules each command calls.

One module per group of commands: ``train`` (train), ``runs`` (evaluate, predict, score, compare,
report), ``sync``, ``data``, ``spec``, ``sweep``, ``bench`` (bench, doctor); ``common`` holds the
shared options and turns errors into exit codes: 0 done, 1 the run failed (the message says why),
2 bad input (the message names the file, key or value and what is allowed), 130 / 143 stopped by
Ctrl-C / SIGTERM after saving a checkpoint that ``cvae train --resume`` continues. torch and wandb
are imported inside the commands that need them, so ``cvae --help`` answers fast.
"""

from __future__ import annotations

import typer

from cvae.cli import bench, runs, sync, train
from cvae.cli.data import data_app
from cvae.cli.spec import spec_app
from cvae.cli.sweep import sweep_app

app = typer.Typer(
    help="Train, track and search the Lab4 pose-conditioned video CVAE.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train.train)
for command in (runs.evaluate, runs.predict, runs.score, runs.compare, runs.report, bench.bench, bench.doctor):
    app.command()(command)
app.command()(sync.sync)
app.add_typer(data_app, name="data")
app.add_typer(spec_app, name="spec")
app.add_typer(sweep_app, name="sweep")


def main() -> None:
    app()
