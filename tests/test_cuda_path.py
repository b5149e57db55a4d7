"""The CUDA path, checked on the CPU through what it decides and calls: where a resume loads its
checkpoint and which generators it restores, the numerics flags each precision sets, which GPU is
asked about bf16 and made current, the GPU each parallel run is given, the ops and host reads of a
step with the CUDA branch forced, and a training step that torch.compile captures whole.

torch.cuda's calls are stood in where the code would call them on a GPU; "meta" tensors stand for
a GPU's (they have a device and a shape, no data).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_overrides

import cvae.training.loop as loop
from cvae import device, placement
from cvae.errors import Stopped
from cvae.model import build_model
from cvae.spec import load_spec
from cvae.training import checkpoint
from cvae.training.loop import build_optimizer, train
from cvae.training.step import StepGradients, spec_terms


@pytest.fixture
def restore_flags():
    """The process-wide numerics flags as they were before the test."""
    b = torch.backends
    saved = (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision)
    saved_bench, saved_det = b.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()
    yield
    b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision = saved
    b.cudnn.benchmark = saved_bench
    torch.use_deterministic_algorithms(saved_det)


def fake_gpus(monkeypatch, capabilities: dict[int, tuple[int, int]], current: int = 0) -> list:
    """Stand-ins for torch.cuda's queries about GPUs with these compute capabilities; returns the list
    that records the calls which change the CUDA state (set_device, set_rng_state)."""
    calls: list = []
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(cuda, "current_device", lambda: current)
    monkeypatch.setattr(cuda, "get_device_capability", lambda i=None: capabilities[current if i is None else i])
    monkeypatch.setattr(cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    return calls


# --------------------------------------------------------------------------- resume


class Reached(Exception):
    """The resumed run got past restoring its state."""


def stop_after_first_epoch(spec, run: Path) -> None:
    class Stop:
        def on_epoch_end(self, epoch, metrics):
            raise Stopped("SIGTERM")

    with pytest.raises(Stopped):
        train(spec, run, callbacks=[Stop()])


def test_a_resume_on_a_gpu_reads_its_checkpoint_to_the_cpu(tmp_path, tiny_data, monkeypatch):
    """Every resume on CUDA crashed: the checkpoint was loaded to the training device, so its RNG
    states (CPU ByteTensors) went to the GPU, where torch.set_rng_state refuses them, and Adam's step
    counters went there too (read back per parameter, every step). Here "meta" is the GPU: a run
    stopped on the CPU resumes with the training device "meta"; its state must be restored, Adam's
    counters on the CPU, until validation (which a meta tensor cannot compute) stops the test."""
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 2, "data.partial": 0.25}))
    run = tmp_path / "run"
    stop_after_first_epoch(spec, run)
    restored = {}
    real_restore = loop.restore_training

    def restore(ck, model, opt, sched):
        real_restore(ck, model, opt, sched)
        restored.update(model=model, opt=opt)

    def stop_here(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(loop, "resolve_device", lambda name, key="train.device": torch.device("meta"))
    monkeypatch.setattr(loop, "restore_training", restore)
    monkeypatch.setattr(loop, "reference_metrics", stop_here)
    with pytest.warns(UserWarning, match="meta parameter"), pytest.raises(Reached):
        train(spec, run, resume=True)
    assert next(restored["model"].parameters()).device.type == "meta"
    steps = [s["step"] for s in restored["opt"].state.values()]
    assert steps and all(t.device.type == "cpu" for t in steps)  # Adam's own kernel reads them on the host


def test_checkpoints_always_load_to_the_cpu(trained_run):
    ck = checkpoint.load(trained_run / "checkpoints/last.pt")

    def tensors(x):
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from tensors(v)
        elif isinstance(x, list | tuple):
            for v in x:
                yield from tensors(v)

    assert {t.device.type for t in tensors(ck)} == {"cpu"}


def test_cuda_rng_is_saved_and_restored_for_the_training_device_alone(monkeypatch):
    """One CUDA generator is saved (the training device's) and restored into the device the resumed run
    trains on: a --gpus worker sees one GPU where the saving run may have seen four (restoring a state
    per GPU by index then failed with an IndexError)."""
    calls = []
    states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(4)}

    def refuse(*args, **kwargs):
        raise AssertionError("every GPU's generator touched")

    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: calls.append(("get", d)) or states[d.index])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: calls.append(("set", d, int(s[0]))))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    saved = checkpoint.rng_state(torch.device("cuda:3"))
    assert calls == [("get", torch.device("cuda:3"))] and int(saved["cuda"][0]) == 3
    calls.clear()
    checkpoint.set_rng_state(saved, torch.device("cuda:0"))  # the worker's only GPU
    assert calls == [("set", torch.device("cuda:0"), 3)]
    calls.clear()
    checkpoint.set_rng_state(saved, torch.device("cpu"))  # a GPU run resumed on the CPU: its CPU states only
    assert calls == []
    calls.clear()
    checkpoint.set_rng_state(saved | {"cuda": [states[2], states[1]]}, torch.device("cuda:0"))  # an older file
    assert calls == [("set", torch.device("cuda:0"), 2)]
    assert "cuda" not in checkpoint.rng_state(torch.device("cpu"))


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize(
    "precision,capability,expected",
    [
        ("fp32", (8, 0), ("fp32", "ieee")),  # fp32 is IEEE even where cuDNN would use TF32
        ("tf32", (8, 0), ("tf32", "tf32")),
        ("tf32", (7, 5), ("fp32", "ieee")),  # no TF32 before Ampere: it runs (and is recorded as) fp32
        ("bf16", (8, 0), ("bf16", "ieee")),  # what autocast leaves in fp32 stays IEEE
    ],
)
def test_each_precision_sets_its_flags(monkeypatch, restore_flags, precision, capability, expected):
    fake_gpus(monkeypatch, {0: capability})
    n = device.numerics(torch.device("cuda:0"), precision)
    assert (n.precision, n.fp32_precision) == expected
    assert n.cudnn_benchmark and n.fused_adam and not n.deterministic
    device.apply_numerics(n)
    b = torch.backends
    assert b.cudnn.conv.fp32_precision == b.cuda.matmul.fp32_precision == b.cudnn.rnn.fp32_precision == expected[1]
    assert b.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


def test_deterministic_numerics(monkeypatch, restore_flags):
    fake_gpus(monkeypatch, {0: (9, 0)})
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    n = device.numerics(torch.device("cuda"), "fp32", deterministic=True)
    assert not n.cudnn_benchmark  # benchmark picks algorithms by timing: not repeatable
    device.apply_numerics(n)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == device.DETERMINISTIC_CUBLAS


def test_a_run_applies_and_records_its_numerics(tmp_path, tiny_data, restore_flags):
    """A run in fp32 sets IEEE fp32 (torch's own default runs cuDNN's fp32 convolutions in TF32) and
    records what it ran with in summary.json."""
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cudnn.rnn.fp32_precision = "tf32"
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 1, "data.partial": 0.25}))
    train(spec, tmp_path / "run")
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["numerics"] == device.numerics(torch.device("cpu"), "fp32").as_dict()
    assert summary["numerics"]["fp32_precision"] == "ieee"


def test_bf16_is_asked_of_the_device_passed_and_it_is_made_current(monkeypatch):
    """torch.cuda.is_bf16_supported asks the current device, and cuda:N never became current."""
    calls = fake_gpus(monkeypatch, {0: (7, 5), 1: (8, 0)}, current=0)
    assert device.fast_bf16(torch.device("cuda:1")) and not device.fast_bf16(torch.device("cuda:0"))
    assert not device.fast_bf16(torch.device("cuda"))  # plain "cuda": the current one
    assert device.resolve_precision("auto", torch.device("cuda:1")) == "bf16"
    monkeypatch.setattr(device, "apply_numerics", lambda n: calls.append(("numerics", n.precision)))
    device.use_device(torch.device("cuda:1"), device.numerics(torch.device("cuda:1"), "auto"))
    assert calls == [("set_device", torch.device("cuda:1")), ("numerics", "bf16")]


def test_doctor_describes_each_gpu_by_asking_it(monkeypatch):
    """Per device: bf16 and TF32 from its own capability, no claim it was not asked about (fp16)."""
    from cvae.doctor import machine_lines

    fake_gpus(monkeypatch, {0: (7, 5), 1: (8, 0)})
    names = {0: "T4", 1: "A100"}
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda i: SimpleNamespace(name=names[i], total_memory=16 * 2**30, major=(7, 8)[i], minor=(5, 0)[i]),
    )
    lines = [line for line in machine_lines() if line.startswith("cuda:")]
    assert lines == [
        "cuda:0: T4, 16.0 GiB, compute capability 7.5; bf16 not native, TF32 no",
        "cuda:1: A100, 16.0 GiB, compute capability 8.0; bf16 native, TF32 yes",
    ]


def test_evaluate_builds_the_model_in_the_format_it_rolls_out_in(tmp_path, tiny_data):
    """A channels_last run's model is evaluated channels_last (built contiguous, every bf16 rollout
    step converted every weight)."""
    from cvae.runs.evaluate import load_trained

    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 1, "train.channels_last": True}))
    train(spec, tmp_path / "run")
    model = load_trained(tmp_path / "run").model
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_the_step_and_the_rollout_run_in_the_models_memory_format(tiny_spec):
    """The memory format is the model's: ``build_model(spec, device)`` chooses it from
    ``train.channels_last``, and the step and the rollout feed the model in whatever format it is in,
    whatever the spec says (a model converted after it was built runs as it is)."""
    from cvae.training.rollout import rollout
    from cvae.training.step import loss_and_gradients

    cpu = torch.device("cpu")
    on = tiny_spec.model_copy(update={"train": tiny_spec.train.model_copy(update={"channels_last": True})})
    assert build_model(on, cpu).memory_format == torch.channels_last
    assert build_model(tiny_spec, cpu).memory_format == torch.contiguous_format == build_model(on).memory_format
    x, pose = torch.rand(2, 3, 3, 16, 16), torch.rand(2, 3, 3, 16, 16)
    for spec, fmt in ((tiny_spec, torch.channels_last), (on, torch.contiguous_format)):
        model = build_model(spec).to(memory_format=fmt)  # against the spec's choice
        seen: list[bool] = []
        model.frame_encoder.register_forward_pre_hook(
            lambda m, args, seen=seen, fmt=fmt: seen.append(args[0].is_contiguous(memory_format=fmt))
        )
        loss_and_gradients(model, x, pose, spec, 1.0, 0.5)
        rollout(model, x[:, 0], pose, 0)
        assert seen and all(seen), (fmt, seen)


# --------------------------------------------------------------------------- parallel runs, a GPU each


class FakeProcess:
    """Popen's stand-in: records the environment a run was started with and ends at once."""

    started: list[dict] = []

    def __init__(self, cmd, env=None, **kwargs):
        FakeProcess.started.append(env)
        self.returncode = 0

    def poll(self):
        return 0


def test_parallel_runs_each_get_a_gpu(tmp_path, tiny_data, monkeypatch):
    """confirm and report --reproduce start their runs through one queue: the i-th run at a time gets the
    i-th GPU of --gpus (every visible one by default) as its CUDA_VISIBLE_DEVICES, a freed GPU goes to
    the next run, and no run lands on a GPU another one holds."""
    from cvae.runs import queue

    monkeypatch.setattr(placement, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(queue.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(queue.time, "sleep", lambda s: None)
    FakeProcess.started = []
    spec = load_spec(None, tiny_overrides(tiny_data)).to_dict()
    specs = {f"run{i}": spec for i in range(3)}
    queue.train_all(specs, tmp_path / "runs", 2, None, placement.assign_gpus(2, None))
    assert [env["CUDA_VISIBLE_DEVICES"] for env in FakeProcess.started] == ["0", "1", "0"]
    FakeProcess.started = []
    queue.train_all(specs, tmp_path / "runs2", 2, None, placement.assign_gpus(2, "1"))
    assert [env["CUDA_VISIBLE_DEVICES"] for env in FakeProcess.started] == ["1", "1", "1"]
    FakeProcess.started = []
    monkeypatch.setattr(placement, "visible_gpus", lambda: [])  # no CUDA: the variable left alone
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    queue.train_all(specs, tmp_path / "runs3", 2, None, placement.assign_gpus(2, None))
    assert [env["CUDA_VISIBLE_DEVICES"] for env in FakeProcess.started] == ["7", "7", "7"]


def test_confirm_and_reproduce_pass_their_gpus_to_the_queue(tmp_path, monkeypatch):
    """`cvae sweep confirm --gpus` and `cvae report --reproduce --gpus` hand the queue one GPU per run at
    a time (placement.assign_gpus), as `cvae sweep run --gpus` does for its workers."""
    from typer.testing import CliRunner

    from cvae.cli import app
    from cvae.runs import queue

    seen = []

    def fake_train_all(specs, runs_dir, workers, console=None, gpus=()):
        seen.append(list(gpus))
        raise SystemExit(0)

    monkeypatch.setattr(placement, "visible_gpus", lambda: ["0", "1", "2", "3"])
    monkeypatch.setattr(queue, "train_all", fake_train_all)
    monkeypatch.chdir(tmp_path)
    CliRunner().invoke(app, ["report", "--reproduce", "cpu", "--workers", "3", "--gpus", "2,3"])
    assert seen == [["2", "3", "2"]]


def test_a_run_records_the_gpu_it_was_given(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 1, "data.partial": 0.25}))
    train(spec, tmp_path / "run")
    assert json.loads((tmp_path / "run/summary.json").read_text())["cuda_visible_devices"] == "3"


# --------------------------------------------------------------------------- host reads and ops per step


def test_a_step_on_cuda_reads_nothing_between_sync_points(tmp_path):
    """With the CUDA branch forced, an epoch of 12 steps logging every step reads the device once per
    tracking.sync_every steps and once more for the epoch's means (the template's log_every 1 read
    6 values every step); fused Adam launches 2 ops a step."""
    from cvae.bench import step_ops

    spec = step_ops.DEFAULT_SPEC
    counter, steps = step_ops.count_epoch(spec, ["tracking.sync_every=4"], 11, 0.0, cuda_style=True)
    # 12 steps: syncs after steps 4, 8, 12, the epoch's end (nothing left), the epoch's means; from step 2 on.
    assert sum(counter.reads.values()) == 4, counter.reads
    assert counter.ops[step_ops.PHASES[2]] == 2 * steps  # _foreach_add_ (step counters), _fused_adam_
    assert counter.ops[step_ops.PHASES[0]] / steps > 1000  # the forward and backward are counted
    counter, steps = step_ops.count_epoch(spec, [], 11, 0.0, cuda_style=True)  # sync_every null: every 50 on CUDA
    assert sum(counter.reads.values()) == 2, counter.reads


def test_rows_read_in_batches_are_the_rows_read_one_by_one(tmp_path, tiny_data):
    """tracking.sync_every changes when the device is read, not what is logged."""
    rows = {}
    for every in (1, 5):
        over = tiny_overrides(tiny_data, **{"train.epochs": 1, "data.partial": 0.5, "tracking.sync_every": every})
        train(load_spec(None, over), tmp_path / f"every{every}")
        lines = (tmp_path / f"every{every}/history.jsonl").read_text().splitlines()
        rows[every] = [{k: v for k, v in json.loads(x).items() if not k.startswith("perf/")} for x in lines]
    assert rows[1] == rows[5] and len(rows[1]) > 5


# --------------------------------------------------------------------------- the compiled step


def small_spec(**extra):
    over = {"data.root": "unused", "data.clip_len": 4, "model.frame_dim": 16, "model.pose_dim": 4}
    return load_spec(None, over | {"model.z_dim": 4, "model.fusion_dim": 16, **extra})


CONFIGS = [
    {},
    {"model.posterior": "previous"},
    {"teacher_forcing.mode": "frame", "model.context_frame": True},
    {"train.activation_checkpointing": True},
    {"train.precision": "bf16", "train.channels_last": True},
]


@pytest.mark.parametrize("extra", CONFIGS, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()) or "default")
def test_the_step_compiles_whole_and_once(extra):
    """torch.compile captures the step in one graph (no graph break: CUDA graphs can replay it), and
    beta and the teacher-forcing ratio, 0-dim tensors, change without recompiling."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    spec = small_spec(**extra)
    torch.manual_seed(0)
    model = build_model(spec, torch.device("cpu"))  # in the spec's memory format
    x, pose = torch.rand(2, 4, 3, 8, 16), torch.rand(2, 4, 3, 8, 16)
    terms = spec_terms(spec)

    beta, tfr = torch.tensor(0.5), torch.tensor(0.5)
    for all_forced in (False, True):
        explained = torch._dynamo.explain(terms)(model, x, pose, beta, tfr, all_forced)
        assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(terms, backend=counter, fullgraph=True)
    for b, t in ((0.1, 0.2), (0.7, 0.9), (1.0, 0.0)):
        beta.fill_(b)
        tfr.fill_(t)
        compiled(model, x, pose, beta, tfr, False)["objective"].backward()
    assert counter.frame_count == 1


@pytest.mark.slow
def test_the_compiled_step_computes_what_the_eager_step_computes():
    """The step captured and differentiated by torch.compile (dynamo and AOT autograd; inductor's code
    generation is left out: minutes of C++ builds on a small CPU) gives the eager step's loss and
    gradients, with the same random draws (coins, z)."""
    spec = small_spec(**{"train.compile": True, "teacher_forcing.mode": "frame"})
    torch.manual_seed(0)
    model = build_model(spec, torch.device("cpu"))  # in the spec's memory format
    x, pose = torch.rand(2, 4, 3, 8, 16), torch.rand(2, 4, 3, 8, 16)
    compiled = StepGradients(spec, torch.device("cpu"))
    terms = spec_terms(spec)

    compiled.terms = torch.compile(terms, backend="aot_eager", fullgraph=True)
    eager = StepGradients(spec.model_copy(update={"train": spec.train.model_copy(update={"compile": False})}), x.device)
    opt = build_optimizer(spec, model)[0]
    for tfr in (0.5, 1.0):
        results = []
        for step in (compiled, eager):  # gradients clipped alike
            torch.manual_seed(3)
            out = step(model, opt, x, pose, 0.3, tfr)
            results.append((out["loss"], {k: p.grad.clone() for k, p in model.named_parameters()}))
        (lc, gc), (le, ge) = results
        torch.testing.assert_close(lc, le, rtol=1e-5, atol=0)
        for k, g in ge.items():
            torch.testing.assert_close(gc[k], g, rtol=1e-4, atol=1e-6 * float(g.abs().max()), msg=k)


def test_bench_step_ops_script_prints_its_table():
    from helpers import python

    r = python("-m", "cvae.bench.step_ops", "--steps", "3", "--tfr", "1")
    assert r.returncode == 0, r.stderr
    assert "CUDA branch forced, fused Adam: per step" in r.stdout and "the whole step" in r.stdout


def test_explicit_tf32_without_tensor_cores_is_warned():
    assert "no TF32 tensor cores" in device.emulated_bf16_warning("tf32", torch.device("cpu"))
