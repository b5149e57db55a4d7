"""``cvae bench`` (the published Lab4 loop against ours: cvae/bench/run.py) and ``cvae doctor`` (what
the machine offers, and a short end-to-end check on a device: cvae/doctor.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cvae.cli.common import SetOpt, ThreadsOpt, apply_threads, handle_errors
from cvae.terminal import err_console, make_console


@handle_errors
def bench(
    spec: Annotated[Path, typer.Argument(help="Experiment spec YAML (widths, batch, clip).")] = Path(
        "experiments/quickstart.yaml"
    ),
    set_: SetOpt = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    quick: Annotated[bool, typer.Option(help="Few repeats, no compilation: a smoke run.")] = False,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            help="Time the bf16 settings. Default: where bf16 is native (avx512_bf16 or AMX; CUDA 8.0+); "
            "emulated bf16 runs many times slower than fp32.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Time the published loop against ours: train step, rollout, loader, FLOPs (docs/performance.md)."""
    import json

    from cvae.bench.run import run
    from cvae.bench.settings import FULL, QUICK
    from cvae.bench.tables import tables
    from cvae.device import resolve_device
    from cvae.spec import load_spec

    spec_obj = load_spec(spec, list(set_ or []))
    result = run(spec_obj, resolve_device(device, "--device"), QUICK if quick else FULL, err_console, bf16)
    if json_:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    console = make_console(False)
    rendered, notes = tables(result)
    for table in rendered:
        console.print(table)
    for note in notes:
        console.print(note, markup=False)


@handle_errors
def doctor(
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N: the device to check.")] = "auto",
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Run the checks (a few minutes; --no-check: the machine only).")
    ] = True,
    threads: ThreadsOpt = None,
) -> None:
    """What this machine offers (devices, bf16, TF32, threads), then checks on --device at template widths:
    numerics, training in each native precision, teacher forcing, the compiled step, bench --quick, rollout
    memory (CUDA), an exact resume: one line per check, exit code 1 if one fails."""
    apply_threads(threads, quiet=False)  # as cvae train chooses them: a contended thread stalls every op
    from cvae.doctor import machine_lines, run_checks

    console = make_console(False)
    for line in machine_lines():
        console.print(line, markup=False)
    if not check:
        return
    checks = run_checks(device, report=lambda c: console.print(c.line(), markup=False))
    if any(c.ok is False for c in checks):
        raise typer.Exit(1)
