"""A fixed tiny run, recorded: what ``test_golden_run.py`` holds every later version of the code to.

The run goes through the command line (``cvae train``), the interface that stays when modules move:
the synthetic tiny dancer (seed 0), tiny widths with the first frame fused, a shuffled loader,
teacher forcing per frame from 0.5, monotonic KL, two epochs, a validation after each. The record
keeps every history row but its timings (``perf/*``) and, per tensor of the final and best
checkpoints' weights, its sum and L2 norm in float64.

Regenerate (only when a change of behaviour is meant, and say why in its commit):

    python tests/golden_run.py tests/data/golden_tiny_run.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_tiny_run.json"


def golden_spec(root: Path) -> dict[str, Any]:
    return {
        "name": "golden",
        "seed": 3,
        "data": {"root": str(root), "preset": None, "clip_len": 4, "val_len": 12, "shuffle": True},
        "model": {
            "frame_dim": 16,
            "pose_dim": 8,
            "z_dim": 4,
            "fusion_dim": 16,
            "output": "sigmoid",
            "context_frame": True,
        },
        "train": {"epochs": 2, "batch_size": 2, "device": "cpu", "precision": "fp32", "channels_last": False},
        "kl_annealing": {"type": "monotonic"},
        "teacher_forcing": {"ratio": 0.5, "decay_start": 1, "decay_step": 0.2, "mode": "frame"},
        "tracking": {"wandb": {"mode": "disabled"}, "gif_frames": 10, "log_every": 3},
    }


def weights_record(path: Path) -> dict[str, list[float]]:
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return {k: [float(v.double().sum()), float(v.double().norm())] for k, v in state.items() if v.is_floating_point()}


def record(run_dir: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    return {
        "history": [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows],
        "last": weights_record(run_dir / "checkpoints" / "last.pt"),
        "best": weights_record(run_dir / "checkpoints" / "best.pt"),
    }


def run_golden(work: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Generate the tiny dancer in ``work``, train the golden spec there with ``cvae train``, record it."""
    from cvae.data.synth import synthesize

    root = work / "data"
    synthesize(root, preset="tiny", seed=0)
    spec = work / "golden.yaml"
    spec.write_text(yaml.safe_dump(golden_spec(root), sort_keys=False))
    cmd = [sys.executable, "-m", "cvae.cli", "train", str(spec), "--run-dir", str(work / "run"), "--quiet"]
    subprocess.run(cmd, check=True, env=env, timeout=600)
    return record(work / "run")


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN
    with tempfile.TemporaryDirectory() as tmp:
        result = run_golden(Path(tmp))
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}: {len(result['history'])} history rows, {len(result['last'])} tensors")
