"""Where the processes a command starts run: a GPU each and a share of the cores.

Sweep workers (``cvae sweep run --workers K``), confirmation runs (``cvae sweep confirm``) and the
report's runs (``cvae report --reproduce``) start K processes on this machine. Each gets the i-th GPU
of ``--gpus`` (default: every visible GPU), round-robin, as its ``CUDA_VISIBLE_DEVICES``, so K runs
spread over the GPUs instead of all landing on cuda:0, and cores / K threads (``cvae.threads``). A
run records the GPU it was given (``CUDA_VISIBLE_DEVICES``) in its config and summary.
"""

from __future__ import annotations

import os

from cvae.errors import UserError
from cvae.threads import per_worker

GPU_ENV = "CUDA_VISIBLE_DEVICES"
GPU_KEY = "cuda_visible_devices"  # where a run's config and summary record the GPU it was given


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (their ids on the
    machine when it is set), or [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    ids = [d.strip() for d in os.environ.get(GPU_ENV, "").split(",") if d.strip()]
    return ids[: torch.cuda.device_count()] if ids else [str(i) for i in range(torch.cuda.device_count())]


def assign_gpus(workers: int, gpus: str | None) -> list[str]:
    """The GPU of each of ``workers`` processes (``--gpus``: ids round-robin; default every visible GPU),
    or [] to leave their CUDA_VISIBLE_DEVICES alone (no CUDA, no ``--gpus``)."""
    visible = visible_gpus()
    if gpus is None:
        wanted = visible
    else:
        wanted = [g.strip() for g in gpus.split(",") if g.strip()]
        if not wanted:
            raise UserError(f"--gpus {gpus!r}: expected GPU ids, e.g. 0,1,2,3")
        if not visible:
            raise UserError(f"--gpus {gpus}: this machine has no CUDA device; run without --gpus")
        unknown = [g for g in wanted if g not in visible]
        if unknown:
            raise UserError(f"--gpus {gpus}: no GPU {', '.join(unknown)} here; visible: {', '.join(visible)}")
    return [wanted[i % len(wanted)] for i in range(workers)] if wanted else []


def child_env(workers: int, gpu: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one of ``workers`` processes sharing this machine: a share of the cores
    (unless OMP_NUM_THREADS is set) and its GPU (None: the variable left as it is)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("OMP_NUM_THREADS", str(per_worker(workers)))
    if gpu is not None:
        env[GPU_ENV] = gpu
    return env


def given_gpu() -> str | None:
    """The GPU this process was given (its CUDA_VISIBLE_DEVICES), recorded with its run; None if unset."""
    return os.environ.get(GPU_ENV)
