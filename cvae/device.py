"""Device, precision, numerics and memory-format choices, shared by training, rollout and bench.

``train.precision: auto`` and ``train.channels_last: auto`` resolve here, per device, by this rule
(measured with ``cvae bench``; the figures are in docs/performance.md):

- CUDA with bf16 support (compute capability 8.0+: A100, H100, RTX 30xx and later), asked of the
  device the run uses (``cuda:N``), not of whichever device is current:
  bf16 autocast + channels_last (tensor cores need bf16; NHWC is their native conv layout).
- CPU with native bf16 instructions (``avx512_bf16`` or AMX ``amx_bf16`` in /proc/cpuinfo):
  bf16 autocast + channels_last (oneDNN's bf16 convolutions run NHWC; the pair trained faster
  than either alone).
- anything else (MPS, CUDA before Ampere, CPUs without those instructions, which emulate bf16
  many times slower than fp32; there channels_last gained next to nothing in fp32): fp32,
  contiguous.

Numerics (``Numerics``, applied process-wide by ``apply_numerics`` and recorded in every run):
``fp32`` means IEEE fp32 everywhere. torch 2.13 runs cuDNN's fp32 convolutions in TF32 by default on
Ampere and later GPUs, so fp32 sets cuDNN's and cuBLAS's fp32 precision to ``ieee``; ``tf32`` is its
own setting (fp32 tensors, TF32 tensor-core arithmetic in convolutions and matmuls, on CUDA 8.0+
only: elsewhere it runs fp32 and the run records fp32). bf16 autocast leaves the ops it does not
cast in IEEE fp32. On CUDA ``cudnn.benchmark`` picks the fastest convolution algorithms for the
step's fixed shapes, unless ``train.deterministic`` asks for deterministic algorithms (bitwise
repeatable runs and resumes, for checks; slower).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from dataclasses import asdict, dataclass
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


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The compute capability of ``device`` itself (``cuda:N``; plain ``cuda``: the current device)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return tuple(torch.cuda.get_device_capability(index))


def fast_bf16(device: torch.device) -> bool:
    """True where bf16 arithmetic is native (faster than fp32), by the rule in the module doc.
    On CUDA the device passed is asked (``torch.cuda.is_bf16_supported`` asks the current one)."""
    if device.type == "cuda":
        return cuda_capability(device) >= (8, 0)
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def has_tf32(device: torch.device) -> bool:
    """TF32 tensor cores: CUDA compute capability 8.0+ (Ampere and later). No CPU has them here."""
    return device.type == "cuda" and cuda_capability(device) >= (8, 0)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> `bf16` where it is native (``fast_bf16``), else `fp32`; `tf32` -> `fp32` where the
    device has no TF32 (``has_tf32``); other values unchanged."""
    if precision == AUTO:
        return "bf16" if fast_bf16(device) else "fp32"
    if precision == "tf32" and not has_tf32(device):
        return "fp32"
    return precision


def resolve_channels_last(channels_last: bool | str, device: torch.device) -> bool:
    """`auto` -> channels_last together with bf16 (the pair the bench measured fastest)."""
    if channels_last == AUTO:
        return fast_bf16(device)
    return bool(channels_last)


def emulated_bf16_warning(precision: str, device: torch.device) -> str | None:
    """A warning for an explicit ``train.precision: bf16`` where bf16 is not native (``fast_bf16``):
    emulated, it runs many times slower than fp32 (docs/performance.md); and for ``tf32`` where the
    device has none (it runs fp32)."""
    if precision == "tf32" and not has_tf32(device):
        return f"train.precision is tf32 but {device} has no TF32 tensor cores (CUDA 8.0+): it trains in fp32"
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
    """bf16 autocast (CPU and CUDA), or nothing for fp32 and tf32 (`auto` resolved for ``device``)."""
    if precision == AUTO:
        precision = resolve_precision(precision, device)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Numerics:
    """The arithmetic a run's ops use: decided once per run (``numerics``), applied process-wide
    (``apply_numerics``) and recorded (W&B config, summary.json, bench JSON)."""

    precision: str  # fp32 | tf32 | bf16: train.precision resolved for the device
    fp32_precision: str  # ieee | tf32: what cuDNN convolutions and cuBLAS matmuls do with fp32 tensors
    cudnn_benchmark: bool  # cuDNN times its algorithms for each new shape and keeps the fastest
    deterministic: bool  # deterministic algorithms only (bitwise repeatable; slower)
    fused_adam: bool  # Adam/AdamW's fused kernel: one launch per step instead of several per parameter list

    def as_dict(self) -> dict[str, str | bool]:
        return asdict(self)


def numerics(device: torch.device, precision: str, deterministic: bool = False) -> Numerics:
    """The numerics of a run of ``precision`` (``train.precision``) on ``device``.

    Fused Adam on CUDA only: on the CPU it rounds differently from the default (foreach) kernel
    (weights 7e-5 apart after 5 steps of the quick-start model) for no measured gain, and every CPU
    figure in the docs was measured with the default."""
    p = resolve_precision(precision, device)
    cuda = device.type == "cuda"
    return Numerics(
        precision=p,
        fp32_precision="tf32" if p == "tf32" else "ieee",
        cudnn_benchmark=cuda and not deterministic,
        deterministic=deterministic,
        fused_adam=cuda,
    )


DETERMINISTIC_CUBLAS = ":4096:8"  # cuBLAS's workspace setting for deterministic matmuls (CUDA 10.2+)


def apply_numerics(n: Numerics) -> None:
    """Set torch's process-wide flags for ``n``. Only the new-style ``fp32_precision`` flags are set
    (torch refuses a mix with the legacy ``allow_tf32`` ones); the CPU build has them too."""
    b = torch.backends
    b.cuda.matmul.fp32_precision = n.fp32_precision
    b.cudnn.conv.fp32_precision = n.fp32_precision
    b.cudnn.rnn.fp32_precision = n.fp32_precision
    b.cudnn.benchmark = n.cudnn_benchmark
    b.cudnn.deterministic = n.deterministic
    if n.deterministic:  # read when cuBLAS starts: set before the first matmul of the process
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS)
    # warn_only: an op without a deterministic kernel warns (and the exact-resume check would show it)
    torch.use_deterministic_algorithms(n.deterministic, warn_only=True)


def use_device(device: torch.device, n: Numerics) -> None:
    """Everything a command does before it computes on ``device``: make a CUDA device the current one
    (``cuda:N`` otherwise leaves cuda:0 current, where torch.cuda's calls without a device, CUDA graphs
    and new streams would go), keep freed memory on the CPU (``tune_cpu_allocator``), apply ``n``."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif device.type == "cpu":
        tune_cpu_allocator()
    apply_numerics(n)


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
