"""What the ``cvae`` commands share: their common options, the threads rule, and errors turned into exit codes.

Exit codes (``handle_errors``): 0 done, 1 the run failed (the message says why), 2 bad input
(``UserError``: the message names the file, key or value and what is allowed), 130 / 143 stopped by
Ctrl-C / SIGTERM after saving a checkpoint that ``cvae train --resume`` continues.
"""

from __future__ import annotations

import functools
import os
from typing import Annotated

import typer

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
