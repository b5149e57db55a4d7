"""cvae.bench and the speed settings: the reference loop is the same arithmetic as ours, bf16 /
channels_last / compiled steps agree with fp32, `auto` resolves by the documented rule, the
CUDA-style step never reads a value on the host, and `cvae bench --quick --json` prints one JSON
object with the groups docs/performance.md describes.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import REPO, cli_in_process, poison_generator, subprocess_env, tiny_overrides, write_spec

from cvae import device
from cvae.bench import run as bench
from cvae.bench import settings
from cvae.bench import tables as bench_tables
from cvae.data.clips import clip_starts, gather
from cvae.data.frames import load_split
from cvae.data.layout import scan_split
from cvae.errors import TrainingDiverged
from cvae.model import build_model
from cvae.spec import load_spec
from cvae.training.guard import DivergenceGuard
from cvae.training.loop import build_optimizer, train
from cvae.training.rollout import rollout
from cvae.training.step import loss_and_gradients

SLIM = {"model.frame_dim": 32, "model.pose_dim": 16, "model.z_dim": 8, "model.fusion_dim": 48}


@pytest.fixture(scope="module")
def batch(tiny_data):
    """Two real 4-frame clips of the synthetic dancer: x, pose (2, 4, 3, 32, 64) in [0, 1]."""
    train_set = load_split(scan_split(tiny_data, "train"), (32, 64))
    starts = torch.tensor(clip_starts(train_set.starts, train_set.lengths, 4))[[0, 7]]
    return gather(train_set.frames, starts, 4), gather(train_set.poses, starts, 4)


def step_loss(spec, batch, precision="fp32", channels_last=False, compile_mode=None) -> float:
    """First-step loss from the spec's seeded weights with the bench's fixed noise (``compile_mode``:
    the whole step compiled, as the bench's compile settings and ``train.compile`` do)."""
    s = settings.with_settings(spec, precision, channels_last, compile_mode)
    model = settings.fresh_model(s, torch.device("cpu"), channels_last, None)
    opt = build_optimizer(s, model)[0]
    step = settings.OurStep(s, torch.device("cpu"))
    return settings.first_loss(lambda: step(model, opt, *batch, s, 1.0, 0.0))


# --------------------------------------------------------------------------- numerical agreement


@pytest.mark.parametrize("context_frame", [False, True])
@pytest.mark.parametrize("tfr", [0.0, 1.0])
def test_reference_loop_is_the_same_arithmetic_as_ours(tiny_data, batch, context_frame, tfr):
    """The lab's loop (one encoder call per frame and role) and ours (real frames batched; the whole
    clip at once with teacher forcing 1) give the same loss on the same weights, batch and noise:
    the bench compares like with like."""
    spec = load_spec(None, tiny_overrides(tiny_data, **SLIM, **{"model.context_frame": context_frame}))

    def loss(step):
        model = settings.fresh_model(spec, torch.device("cpu"), False, None)
        opt = build_optimizer(spec, model)[0]
        return settings.first_loss(lambda: step(model, opt, *batch, spec, 1.0, tfr))

    assert loss(bench.reference_step) == pytest.approx(loss(settings.our_step), rel=1e-4)


def grads_of_step(spec, batch, tfr: float, saved: list | None = None):
    """Loss and gradients of one step (``loss_and_gradients``) from the spec's seeded weights and fixed noise;
    ``saved`` collects the bytes of every tensor autograd keeps for the backward pass."""
    model = settings.fresh_model(spec, torch.device("cpu"), False, None)

    def pack(t):
        if saved is not None:
            saved.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(settings.SEED)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = loss_and_gradients(model, *batch, spec, 1.0, tfr)
    return float(out["loss"]), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("tfr", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("posterior,context_frame", [("target", False), ("previous", False), ("target", True)])
def test_activation_checkpointing_is_the_same_arithmetic(tiny_data, batch, tfr, posterior, context_frame):
    """train.activation_checkpointing recomputes activations in the backward pass: same loss, same
    gradients (up to summation order), far fewer bytes kept between forward and backward."""
    over = tiny_overrides(tiny_data, **SLIM, **{"model.posterior": posterior, "model.context_frame": context_frame})
    plain = load_spec(None, over)
    ckpt = load_spec(None, over | {"train.activation_checkpointing": True})
    saved_plain, saved_ckpt = [], []
    loss_plain, grads_plain = grads_of_step(plain, batch, tfr, saved_plain)
    loss_ckpt, grads_ckpt = grads_of_step(ckpt, batch, tfr, saved_ckpt)
    assert loss_ckpt == pytest.approx(loss_plain, rel=1e-6)
    for k, g in grads_plain.items():  # summation order: differences scale with the gradient's size
        torch.testing.assert_close(grads_ckpt[k], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=k)
    assert sum(saved_ckpt) < sum(saved_plain) / 3, (sum(saved_ckpt), sum(saved_plain))


@pytest.mark.parametrize("precision,channels_last", [("bf16", False), ("fp32", True), ("bf16", True)])
def test_bf16_and_channels_last_agree_with_fp32(tiny_data, batch, precision, channels_last):
    spec = load_spec(None, tiny_overrides(tiny_data, **SLIM))
    fp32 = step_loss(spec, batch)
    other = step_loss(spec, batch, precision, channels_last)
    assert math.isfinite(other)
    assert abs(other - fp32) / fp32 < 0.02


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler")
def test_compiled_step_agrees_with_fp32(tiny_data, batch):
    spec = load_spec(None, tiny_overrides(tiny_data, **SLIM))
    fp32 = step_loss(spec, batch)
    compiled = step_loss(spec, batch, compile_mode="default")  # minutes on 2 cores: one compiled setting
    assert abs(compiled - fp32) / fp32 < 0.02


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler")
def test_frozen_rollout_agrees_with_eager_and_keeps_its_weights(tiny_data, batch):
    """The bench's ``frozen`` rollout: the same frames as the eager rollout (fp32), from graphs that
    hold the weights they were compiled with (why it is for inference only)."""
    spec = load_spec(None, tiny_overrides(tiny_data, **SLIM))
    cpu = torch.device("cpu")
    eager = settings.fresh_model(spec, cpu, True, None)
    frozen = settings.fresh_model(spec, cpu, True, settings.FROZEN)
    x, pose = batch
    with device.frozen_weights():
        out = rollout(frozen, x[:, 0], pose, 0, "fp32")
    assert torch.allclose(out, rollout(eager, x[:, 0], pose, 0, "fp32"), atol=1e-4)
    with torch.no_grad():
        for m in (eager, frozen):
            m.generator[-1].bias.add_(1.0)
    with device.frozen_weights():
        stale = rollout(frozen, x[:, 0], pose, 0, "fp32")
    moved = rollout(eager, x[:, 0], pose, 0, "fp32")
    assert not torch.allclose(moved, out, atol=1e-2)  # the new bias changes the eager frames...
    assert torch.allclose(stale, out, atol=1e-4)  # ...not the frozen ones


def test_compile_model_keeps_checkpoint_keys(tiny_spec):
    model = build_model(tiny_spec)
    keys = list(model.state_dict())
    device.compile_model(model)  # lazy: nothing is compiled until a module is called
    assert list(model.state_dict()) == keys


# --------------------------------------------------------------------------- auto settings


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({"avx512_bf16"}, ("bf16", True)),
        ({"amx_bf16", "avx512f"}, ("bf16", True)),
        ({"avx512f"}, ("fp32", False)),
        ({"avx2", "fma"}, ("fp32", False)),  # e.g. AMD EPYC Zen 3: bf16 emulated, slower than fp32
    ],
)
def test_auto_precision_rule_on_cpu(monkeypatch, tiny_spec, flags, expected):
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset(flags))
    spec = load_spec(None, tiny_overrides("unused", **{"train.precision": "auto", "train.channels_last": "auto"}))
    resolved = device.resolve_spec(spec, torch.device("cpu"))
    assert (resolved.train.precision, resolved.train.channels_last) == expected
    # Explicit values are never changed; the template default stays fp32 / contiguous.
    assert device.resolve_spec(tiny_spec, torch.device("cpu")) is tiny_spec
    assert load_spec(REPO / "experiments" / "lab4_template.yaml").train.precision == "fp32"
    # The quick start is auto: bf16 + channels_last (its measured recipe) where bf16 is native.
    q = load_spec(REPO / "experiments" / "quickstart.yaml")
    assert (q.train.precision, q.train.channels_last) == ("auto", "auto")
    q = device.resolve_spec(q, torch.device("cpu")).train
    assert (q.precision, q.channels_last) == expected


def test_explicit_bf16_without_native_bf16_is_warned(monkeypatch):
    """bf16 asked for by name where the CPU would emulate it gets a warning naming the key and the
    fix; where it is native, and for fp32, nothing is said."""
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    text = device.emulated_bf16_warning("bf16", torch.device("cpu"))
    assert "train.precision is bf16" in text and "avx512_bf16" in text and "auto picks fp32" in text
    assert device.emulated_bf16_warning("fp32", torch.device("cpu")) is None
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert device.emulated_bf16_warning("bf16", torch.device("cpu")) is None


def test_train_records_the_resolved_settings(tmp_path, tiny_data):
    auto = {"train.precision": "auto", "train.channels_last": "auto"}
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 1, "data.partial": 0.2, **auto}))
    train(spec, tmp_path / "run")
    saved = load_spec(tmp_path / "run" / "spec.yaml").train
    assert (saved.precision, saved.channels_last) == (
        device.resolve_precision("auto", torch.device("cpu")),
        device.resolve_channels_last("auto", torch.device("cpu")),
    )


# --------------------------------------------------------------------------- the CUDA path, checked on the CPU


class HostRead(AssertionError):
    pass


@pytest.fixture
def cuda_style(monkeypatch):
    """Run the trainer's CUDA branches on the CPU: reading a value is treated as a costly sync."""
    import cvae.training.guard
    import cvae.training.loop
    import cvae.training.step

    # the step, the divergence guard and the loop's reads of the logged rows
    for module in (cvae.training.step, cvae.training.guard, cvae.training.loop):
        monkeypatch.setattr(module, "syncs_are_free", lambda dev: False)


def test_step_reads_nothing_on_the_host(monkeypatch, cuda_style, tiny_spec, batch):
    """No bool()/item()/float() on a tensor in the step, the grad clip and the divergence guard:
    on CUDA each would stall the host until the GPU's queue drains."""
    model = build_model(tiny_spec)
    guard = DivergenceGuard(torch.device("cpu"))
    torch.manual_seed(0)

    def refuse(*args, **kwargs):
        raise HostRead("host read of a tensor inside the step")

    for name in ("__bool__", "item", "__float__", "__int__", "tolist", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    out = loss_and_gradients(model, *batch, tiny_spec, beta=1.0, tfr=0.5)
    out["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).detach()
    guard.step(out, 1, 1.0, None)
    monkeypatch.undo()
    assert math.isfinite(float(out["loss"]))


def test_cuda_style_run_matches_the_cpu_run(tmp_path, tiny_data, cuda_style, monkeypatch):
    """Always encoding the model's own output (torch.where instead of the host-side skip) changes no
    number: the same weights and history as the CPU path, teacher forcing included."""
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 1, "data.partial": 0.5}))
    train(spec, tmp_path / "cuda_style")
    monkeypatch.undo()
    train(spec, tmp_path / "cpu")
    a = torch.load(tmp_path / "cuda_style/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cpu/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [(tmp_path / r / "history.jsonl").read_text().splitlines() for r in ("cuda_style", "cpu")]
    strip = [[{k: v for k, v in json.loads(x).items() if not k.startswith("perf/")} for x in r] for r in rows]
    assert strip[0] == strip[1]


def test_cuda_style_nan_is_caught_at_the_next_log_point(tmp_path, tiny_data, cuda_style, monkeypatch):
    """On CUDA the non-finite loss of step 3 is read at the next sync point (step 4 with sync_every 2):
    the run stops naming step 3, logs the rows before it and nothing from step 3 on, and saves no
    checkpoint."""
    over = {"train.epochs": 1, "tracking.log_every": 2, "tracking.sync_every": 2}
    spec = load_spec(None, tiny_overrides(tiny_data, **over))
    poison_generator(monkeypatch, from_step=3, frames_per_step=3)
    with pytest.raises(TrainingDiverged, match="step 3 .*read at step 4"):
        train(spec, tmp_path / "nan")
    rows = [json.loads(x) for x in (tmp_path / "nan/history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [2]
    assert not (tmp_path / "nan/checkpoints/last.pt").exists()


# --------------------------------------------------------------------------- the command


def test_bench_quick_json(tmp_path, tiny_data):
    spec = write_spec(tmp_path / "tiny.yaml", tiny_overrides(tiny_data, **SLIM))
    r = subprocess.run(
        [sys.executable, "-m", "cvae.cli", "bench", str(spec), "--quick", "--json", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)  # exactly one JSON object on stdout
    assert isinstance(result["device"], str) and result["device"].startswith("cpu")
    for group in ("train", "rollout", "loader"):
        assert "reference" in result[group], group
        assert len(result[group]) >= 2  # ours beside the reference
        assert all(isinstance(v, float) and v > 0 and math.isfinite(v) for v in result[group].values())
    # bf16 is timed where it is native; elsewhere it is listed as skipped (the test below forces that case).
    native = device.fast_bf16(torch.device("cpu"))
    assert result["supports"]["bf16_timed"] is native
    assert {"fp32", "channels_last"} | ({"bf16", "bf16+channels_last"} if native else set()) <= set(result["train"])
    assert native or "--bf16" in result["skipped"]["train/bf16+channels_last"]
    assert "train/compile" in result["skipped"]  # --quick does not compile
    agree = result["agreement"]["rel_loss_diff_vs_fp32"]
    assert agree["reference"] < 1e-4 and (not native or agree["bf16+channels_last"] < 0.02)
    roll_diff = result["agreement"]["rollout_mean_abs_diff_vs_reference"]
    assert roll_diff["batched_fp32"] < 1e-5  # batching changes no video's frames
    assert roll_diff["batched_fp32+channels_last"] < 1e-4
    assert result["flops"]["per_trained_frame"] > 0 and result["matmul_flops_per_s"]["fp32"] > 0
    # What each setting ran in: fp32 is IEEE fp32; no TF32 setting is timed on a CPU.
    numerics = result["numerics"]["train"]
    assert numerics["reference"]["fp32_precision"] == numerics["fp32"]["fp32_precision"] == "ieee"
    assert "tf32+channels_last" not in result["train"] and "no TF32" in result["skipped"]["train/tf32+channels_last"]


@pytest.mark.parametrize(
    "name", ["quickstart-cpu.json", "lab4_template-cpu.json", "quickstart-cpu-avx2.json", "lab4_template-cpu-avx2.json"]
)
def test_bench_tables_fit_a_narrow_terminal_without_cutting_names(name):
    """The recorded bench outputs, printed as `cvae bench` prints them: on an 80-column terminal
    long setting names wrap (nothing is cut off with an ellipsis), on a wide one every name and
    figure is on its row."""
    from rich.console import Console

    result = json.loads((REPO / "docs" / "bench" / name).read_text())
    tables, notes = bench_tables.tables(result)
    narrow = Console(width=80, record=True, file=io.StringIO())
    for t in tables:
        narrow.print(t)
    text = narrow.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "% peak: achieved FLOP/s as a share of the measured matmul rate" in " ".join(text.split())
    wide = Console(width=200, record=True, file=io.StringIO())
    for t in tables:
        wide.print(t)
    text = wide.export_text()
    for group in ("train", "rollout", "loader"):
        for setting, value in result[group].items():
            assert any(f" {setting} " in line and f"{value:.1f}" in line for line in text.splitlines()), setting
    assert any("matmul rate" in n for n in notes)


def test_bench_missing_data_uses_synthetic(tmp_path, monkeypatch):
    """A spec whose data folder is missing is benched on a generated tiny set (nothing written
    outside a temporary folder). On a CPU without native bf16 (simulated here, so the test means the
    same on every machine) the default leaves every bf16 setting out, listed as skipped with the
    flag that times it, and the fp32 ones still run."""
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    spec = load_spec(None, tiny_overrides(tmp_path / "nowhere", **SLIM))
    result = bench.run(spec, torch.device("cpu"), settings.QUICK)
    assert result["data"]["root"].startswith("synthetic")
    assert not (tmp_path / "nowhere").exists()
    assert set(result["loader"]) == {"reference", "in_memory"}
    assert result["supports"]["bf16_timed"] is False and result["matmul_flops_per_s"]["bf16"] is None
    assert set(result["train"]) == {"reference", "reference_in_memory", "fp32", "channels_last"}
    assert set(result["rollout"]) == {"reference", "batched_fp32", "batched_fp32+channels_last"}
    assert set(result["train_teacher_forced"]) == {"reference", "fp32"}
    for name in ("train/bf16", "train/bf16+channels_last", "rollout/batched_bf16+channels_last"):
        assert "not native" in result["skipped"][name] and "--bf16" in result["skipped"][name]
    assert "--quick" in result["skipped"]["train/compile+bf16+channels_last"]  # the first reason wins
    assert result["speedup"]["train_best"] in ("fp32", "channels_last")


@pytest.mark.parametrize("flags", [{"avx2"}, {"avx512_bf16"}])
def test_not_timed_says_why(monkeypatch, flags):
    """A bf16 setting left out says whether the device lacks native bf16 or the flag asked for it."""
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset(flags))
    cpu = torch.device("cpu")
    reason = bench.not_timed("bf16", None, settings.FULL, cpu, bf16=False)
    if "avx512_bf16" in flags:
        assert reason == "left out by --no-bf16"
    else:
        assert "not native" in reason and "--bf16" in reason
    assert bench.not_timed("bf16", None, settings.FULL, cpu, bf16=True) is None
    assert bench.not_timed("fp32", None, settings.FULL, cpu, bf16=False) is None
    assert "--quick" in bench.not_timed("fp32", "default", settings.QUICK, cpu, bf16=True)


def test_bench_help_and_spec_show_do_not_import_torch():
    r = cli_in_process(["bench", "--help"], ["spec", "show", str(REPO / "experiments/quickstart.yaml")])
    assert "HEAVY []" in r.stdout and "--quick" in r.stdout and "--no-bf16" in r.stdout
    assert "precision: auto" in r.stdout


# --------------------------------------------------------------------------- the CPU allocator

KEPT = """
import torch
from cvae.device import tune_cpu_allocator
tuned = tune_cpu_allocator()
def resident_pages():
    return int(open("/proc/self/statm").read().split()[1])
t = torch.empty(16 * 2**20, dtype=torch.float32).fill_(1.0)  # 64 MB: glibc maps it itself by default
before = resident_pages()
del t
print(tuned, before - resident_pages())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc/self/statm")
def test_tuned_allocator_keeps_freed_memory():
    """Freeing a 64 MB tensor hands its 16,384 pages back to the OS with glibc's defaults (so the
    next step faults them in again) and keeps them resident once ``tune_cpu_allocator`` ran
    (CVAE_MALLOC_TUNING=0: off)."""

    def run(**env):
        r = subprocess.run(
            [sys.executable, "-c", KEPT], capture_output=True, text=True, env=subprocess_env() | env, timeout=120
        )
        assert r.returncode == 0, r.stderr
        tuned, released = r.stdout.split()
        return tuned == "True", int(released)

    tuned, released = run()
    if not tuned:
        pytest.skip("not glibc: nothing to tune")
    assert released < 1000
    untuned, released_default = run(CVAE_MALLOC_TUNING="0")
    assert not untuned and released_default >= 16_000


def test_op_times_split_convolutions_by_direction_and_kind():
    """OpTimes (``python -m cvae.bench.step_time --ops``, ``cvae.bench.rollout_time --ops``) names every
    convolution it saw by direction and kind, and its times are the ops' own: positive, and
    together no more than the wall time around them."""
    import time

    from cvae.bench import timing as op_times

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
        torch.nn.Conv2d(8, 4, 1),
        torch.nn.Conv2d(4, 4, 7, padding=3),
    )
    x = torch.rand(2, 3, 16, 16)
    t0 = time.perf_counter()
    with op_times.OpTimes() as ops:
        net(x).square().mean().backward()
    wall = time.perf_counter() - t0
    convs = {k for k in ops.seconds if k.startswith("convolution ")}
    kinds = ("3x3", "depthwise", "1x1", "7x7")
    assert convs == {f"convolution {d} {k}" for d in ("forward", "backward") for k in kinds}
    assert all(v > 0 for v in ops.seconds.values())
    assert ops.convolutions() == pytest.approx(sum(ops.seconds[k] for k in convs))
    assert ops.convolutions() < sum(ops.seconds.values()) <= wall
    assert {"pow", "mean"} <= set(ops.seconds)  # the rest, by op name
    assert op_times.conv_kind((8, 1, 3, 3), groups=1) == "3x3"  # one input channel, not grouped
    assert op_times.conv_kind((8, 1, 3, 3)) == "depthwise"  # shapes only (torch.profiler's): this model's case


def test_tracking_cost_asks_the_data_for_its_sizes_and_leaves_sys_path_alone(tiny_data):
    """The tracking-cost script counts an epoch's steps as the trainer does (from the clips the dataset
    holds), and importing it changes nothing."""
    import sys

    from cvae.data.clips import TrainingClips
    from cvae.data.frames import load_split
    from cvae.data.layout import scan_split

    before = list(sys.path)
    from cvae.bench import tracking_cost

    assert sys.path == before
    spec = load_spec(None, tiny_overrides(tiny_data, **{"tracking.log_every": 2}))
    sizes = tracking_cost.sizes_of(spec)
    clips = TrainingClips(spec, load_split(scan_split(tiny_data, "train"), spec.data.frame_size))
    assert sizes["steps_per_epoch"] == clips.steps[-1] > 0
    assert sizes["step_rows_per_epoch"] == sizes["steps_per_epoch"] // 2
