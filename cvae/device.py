"""Device, precision and memory-format choices, shared by training, rollout and bench.

``train.precision: auto`` and ``train.channels_last: auto`` resolve here, per device, by this rule
(measured with ``cvae bench``; the figures are in docs/performance.md):

- CUDA with bf16 support (compute capability 8.0+: A100, H100, RTX 30xx and later):
  bf16 autocast + channels_last (tensor cores need bf16; NHWC is their native conv layout).
- CPU with native bf16 instructions (``avx512_bf16`` or AMX ``amx_bf16`` in /proc/cpuinfo):
  bf16 autocast + channels_last (oneDNN's bf16 convolutions run NHWC; the pair trained faster
  than either alone).
- anything else (MPS, CUDA before Ampere, CPUs without those instructions, which emulate bf16
  many times slower than fp32; there channels_last gained next to nothing in fp32): fp32,
  contiguous.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from pathlib import Path

import torch

from cvae.errors import UserError

AUTO = "auto"


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """`auto` -> CUDA when available, else CPU. A device this machine lacks, or a name torch does
    not know, is bad input (``UserError``, exit code 2) naming ``key``, the spec key or flag."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"{key} {name!r}: not a device; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key} is {name!r} but CUDA is not available on this machine; allowed here: auto, cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"{key} is {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{key} is {name!r} but MPS is not available on this machine; allowed here: auto, cpu")
    return dev


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_bf16(device: torch.device) -> bool:
    """True where bf16 arithmetic is native (faster than fp32), by the rule in the module doc."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> `bf16` where it is native (``fast_bf16``), else `fp32`; other values unchanged."""
    if precision == AUTO:
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def resolve_channels_last(channels_last: bool | str, device: torch.device) -> bool:
    """`auto` -> channels_last together with bf16 (the pair the bench measured fastest)."""
    if channels_last == AUTO:
        return fast_bf16(device)
    return bool(channels_last)


def emulated_bf16_warning(precision: str, device: torch.device) -> str | None:
    """A warning for an explicit ``train.precision: bf16`` where bf16 is not native (``fast_bf16``):
    emulated, it runs many times slower than fp32 (docs/performance.md)."""
    if precision != "bf16" or fast_bf16(device):
        return None
    what = "CPU has no avx512_bf16 or AMX" if device.type == "cpu" else f"{device.type} device has no native bf16"
    return (
        f"train.precision is bf16 but this {what}: bf16 is emulated and runs many times slower than fp32 "
        "(train.precision: auto picks fp32 here)"
    )


def resolve_spec(spec, device: torch.device):
    """The ExperimentSpec with ``train.precision`` and ``train.channels_last`` made concrete for
    ``device`` (the run folder's spec.yaml records what actually ran)."""
    t = spec.train
    update = {
        "precision": resolve_precision(t.precision, device),
        "channels_last": resolve_channels_last(t.channels_last, device),
    }
    if update == {"precision": t.precision, "channels_last": t.channels_last}:
        return spec
    return spec.model_copy(update={"train": t.model_copy(update=update)})


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast (CPU and CUDA), or nothing for fp32 (`auto` resolved for ``device``)."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(channels_last: bool | str, device: torch.device | None = None) -> torch.memory_format:
    """`auto` needs the device it resolves for (CPU when not given)."""
    if channels_last == AUTO:
        channels_last = resolve_channels_last(AUTO, device or torch.device("cpu"))
    return torch.channels_last if channels_last else torch.contiguous_format


MALLOC_ENV = "CVAE_MALLOC_TUNING"  # 0: leave glibc's allocator as it is


@functools.cache
def tune_cpu_allocator() -> bool:
    """Keep freed memory for the next training step instead of handing it back to the OS (glibc).

    glibc serves every allocation over 32 MB (and smaller ones, below an adaptive threshold) with
    its own mmap and unmaps it on free, so each step's large activations come back as fresh
    pages the kernel must fault in and zero: at the template's widths a tenth of the step
    (docs/notes/performance-investigations.md). Here the allocator takes everything from its heap
    (``M_MMAP_MAX`` 0), keeps up to 2 GB of free heap top (``M_TRIM_THRESHOLD``), and gives threads
    created later the main heap too (``M_ARENA_MAX`` 1; a thread's own heap would still map
    anything over 64 MB). Freed memory stays resident for later steps; the price is heap
    fragmentation (a freed block split by a small allocation no longer fits the next large one),
    which raises the peak RSS somewhat. A no-op (False) without glibc, or with the environment
    variable CVAE_MALLOC_TUNING=0. Process-wide; training and the bench call it on the CPU before
    their first large allocation.
    """
    if os.environ.get(MALLOC_ENV, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # malloc.h
    return all(
        mallopt(option, value) == 1
        for option, value in ((m_mmap_max, 0), (m_trim_threshold, 2**31 - 1), (m_arena_max, 1))
    )


def syncs_are_free(device: torch.device) -> bool:
    """On the CPU every op has finished when it returns, so reading a value (``float(loss)``,
    ``bool(mask.all())``) costs nothing; on CUDA it stalls the host until the queue drains."""
    return device.type == "cpu"


COMPILED_PARTS = ("frame_encoder", "pose_encoder", "posterior", "fusion", "generator")


def compile_model(model: torch.nn.Module, mode: str | None = None) -> torch.nn.Module:
    """torch.compile the CVAE's five modules in place (``nn.Module.compile``), so the step and the
    rollout, which call the modules rather than ``model(...)``, run compiled code, and the
    state_dict keys (checkpoints) stay those of the plain model. Returns ``model``.

    Dynamo keeps its compiled variants per code object, and every module's ``_call_impl`` is the
    same code: five modules x (train, eval) x batch shapes, times the models a bench compiles,
    pass the default limit of 8 variants, after which it silently runs eager code. Hence the
    higher limit."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 1024)
    for name in COMPILED_PARTS:
        getattr(model, name).compile(mode=mode)
    return model


@contextlib.contextmanager
def frozen_weights():
    """Compile with inductor's freezing inside this block: a graph compiled here (on its first call)
    takes the model's weights as constants, which inductor's freezing passes may fold and prepack
    (oneDNN on the CPU). For inference with weights that no longer change (a frozen graph keeps
    computing with the weights it was compiled with, tested); the bench's ``frozen`` rollout
    settings. ``torch.compile(options=...)`` does not apply freezing
    (measured), hence the config patch. Wrap every call: a recompilation outside the block would
    compile without freezing."""
    import torch._inductor.config

    with torch._inductor.config.patch(freezing=True):
        yield
