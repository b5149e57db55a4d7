"""The ``cvae`` command: parse, call, print. Logic lives in the modules each command calls.

One module per group of commands: ``train`` (train), ``runs`` (evaluate, predict, score, compare,
report), ``sync``, ``data``, ``spec``, ``sweep``, ``bench`` (bench, doctor); ``common`` holds the
shared options and turns errors into exit codes: 0 done, 1 the run failed (the message says why),
2 bad input (the message names the file, key or value and what is allowed), 130 / 143 stopped by
Ctrl-C / SIGTERM after saving a checkpoint that ``cvae train --resume`` continues. torch and wandb
are imported inside the commands that need them, so ``cvae --help`` and ``cvae --version`` answer
fast. Shell completion is typer's: ``cvae --install-completion`` (bash, zsh, fish, PowerShell) or
``--show-completion``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cvae.cli import bench, runs, sync, train
from cvae.cli.common import RootGroup
from cvae.cli.data import data_app
from cvae.cli.spec import spec_app
from cvae.cli.sweep import sweep_app

PROG = "cvae"  # the name in usage lines and completion scripts, also when run as `python -m cvae.cli`

app = typer.Typer(
    cls=RootGroup,
    help="Train, track and search the Lab4 pose-conditioned video CVAE.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def version_line() -> str:
    """``cvae-sweeps 0.1.0 (python 3.11.7, torch 2.13.0, wandb 0.31.0, optuna 5.0.0)``: from the installed
    packages' metadata, importing none of them."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    deps = ", ".join(f"{name} {of(name)}" for name in ("torch", "wandb", "optuna"))
    return f"cvae-sweeps {of('cvae-sweeps')} (python {platform.python_version()}, {deps})"


def show_version(value: bool) -> None:
    if value:
        print(version_line())
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Train, track and search the Lab4 pose-conditioned video CVAE."""


app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train.train)
for command in (runs.evaluate, runs.predict, runs.score, runs.compare, runs.report, bench.bench, bench.doctor):
    app.command()(command)
app.command()(sync.sync)
app.add_typer(data_app, name="data")
app.add_typer(spec_app, name="spec")
app.add_typer(sweep_app, name="sweep")


def main() -> None:
    app(prog_name=PROG)
