"""What the ``cvae`` commands share: their common options, the threads rule, errors turned into exit
codes, and the root group (typer's rich help with real metavars, click's one-line errors).

Exit codes (``handle_errors``): 0 done, 1 the run failed (the message says why), 2 bad input
(``UserError``: the message names the file, key or value and what is allowed; a malformed command
line: click's ``Error: ...``), 130 / 143 stopped by Ctrl-C / SIGTERM after saving a checkpoint that
``cvae train --resume`` continues.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Annotated

import typer
from typer.core import TyperArgument, TyperGroup

from cvae.errors import Stopped, UserError
from cvae.redact import redact
from cvae.terminal import err_console

SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a spec key: --set train.epochs=3 (repeatable).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="torch threads (default: the CPUs this process may use minus those other work keeps busy; "
        "OMP_NUM_THREADS if set).",
    ),
]
GpusOpt = Annotated[
    str | None,
    typer.Option(
        help="GPUs of the processes this starts, round-robin (the i-th at a time gets the i-th as its "
        "CUDA_VISIBLE_DEVICES): 0,1,2,3; one id for processes that share it. Default: every visible GPU.",
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="auto | cpu | cuda | cuda:N (default: the run's train.device, as trained).")
]


def handle_errors(fn):
    """UserError -> one message, exit 2; Ctrl-C -> exit 130; any other exception -> message,
    exit 1 (``CVAE_DEBUG=1`` shows the traceback instead). URL passwords are masked."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err_console.print(f"error: {redact(str(e))}", markup=False)
            raise typer.Exit(2) from None
        except Stopped as e:
            err_console.print(f"stopped ({e.how}); a run resumes with cvae train --resume RUN_DIR", markup=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False)
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as e:  # the run failed: say why, exit 1
            if os.environ.get("CVAE_DEBUG"):
                raise
            err_console.print(f"failed: {e.__class__.__name__}: {redact(str(e))}", markup=False)
            raise typer.Exit(1) from None

    return wrapper


def apply_threads(requested: int | None, quiet: bool) -> int:
    """Choose the command's torch threads (cvae/threads.py); say so when other work takes CPUs."""
    from cvae.threads import usable_cpus, use_threads

    n, why = use_threads(requested)
    if n < usable_cpus() and why != "--threads" and not quiet:
        err_console.print(f"threads: {n} ({why}; --threads N to choose)", markup=False)
    return n


# --------------------------------------------------------------------------- the root group


# The value each option takes, as every command's help shows it (one name for one thing across the
# commands). An option not named here shows N for a whole number, X for a real one, else its own name
# in capitals (--host HOST); an argument its name in capitals (SPEC); a flag nothing.
METAVARS = {
    "--set": "KEY=VALUE",
    "--threads": "N",
    "--device": "DEVICE",
    "--storage": "URL",
    "--study": "NAME",
    "--dir": "DIR",
    "--out": "DIR",
    "--run-dir": "DIR",
    "--resume": "RUN_DIR",
    "--init-from": "CHECKPOINT",
    "--artifacts": "DIR",
    "--output": "FILE",
    "--plot": "PNG",
    "--spec": "SPEC",
    "--data": "ROOT",
    "--timeout": "SECONDS",
    "--gpus": "IDS",
    "--port": "PORT",
    "--ckpt": "best|last",
    "--eval-batchnorm": "batch|running",
    "--gif-names": "name|lab",
    "--frame-size": "HxW",
    "--reproduce": "cpu|full",
    "--preset": "tiny|small|lab4",
    "--appearance": "same|varied",
    "--pose-shift": "K",
}


def real_metavar(param) -> None:
    """Give ``param`` the metavar its help shows, where typer would show a Python type (``<list[str]>``,
    ``<int range>``, ``<bool>``)."""
    if isinstance(param, TyperArgument):
        if param.metavar is None:
            param.metavar = param.name.upper()
        # typer prints an argument's Python type beside its name: the name says what it is
        param.display_type_rich = lambda ctx: None
        return
    if param.metavar is not None:
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = ""  # a flag takes no value
        return
    long = max(param.opts, key=len)
    annotation = str(getattr(getattr(param, "type_descriptor", None), "annotation", ""))
    if long in METAVARS:
        param.metavar = METAVARS[long]
    elif "int" in annotation:
        param.metavar = "N"
    elif "float" in annotation:
        param.metavar = "X"
    else:
        param.metavar = long.lstrip("-").replace("-", "_").upper()


def walk(command):
    """``command`` and every command under it."""
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from walk(sub)


def unwrap(text: str | None) -> str | None:
    """A docstring's paragraphs each on one line (rich help keeps a docstring's line breaks as they are
    in the source; it wraps them to the terminal itself)."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


class RootGroup(TyperGroup):
    """The ``cvae`` group: typer's rich help, every parameter with a real metavar, docstrings reflowed to
    the terminal, and a malformed command line answered as the commands answer bad input, on one line
    (click's ``Error: ...``, exit 2) rather than in a panel."""

    _dressed = False

    def dress(self) -> None:
        """Metavars and help texts of every command, typer's own options (completion, --help) included."""
        if self._dressed:
            return
        self._dressed = True
        for command in walk(self):
            command.help = unwrap(command.help)
            help_option = command.get_help_option(typer.Context(command))
            for param in [*command.params, *([help_option] if help_option is not None else [])]:
                real_metavar(param)

    def main(self, *args, **kwargs):
        self.dress()
        # typer draws errors in a panel when the group's markup mode is set; help reads it in
        # format_help below (and each command its own), so errors alone go plain.
        mode, self.rich_markup_mode = self.rich_markup_mode, None
        try:
            return super().main(*args, **kwargs)
        finally:
            self.rich_markup_mode = mode

    def format_help(self, ctx, formatter) -> None:
        from typer import rich_utils

        return rich_utils.rich_format_help(obj=self, ctx=ctx, markup_mode=self.rich_markup_mode or "rich")
