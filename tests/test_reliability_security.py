"""docs/reliability.md, promise 7: passwords in URLs and the W&B API key never reach a file or
the console, and checkpoints are loaded with ``weights_only=True`` (they cannot run code). Runs
use cvae.synth's tiny preset and tiny widths (helpers.tiny_overrides).
"""

from __future__ import annotations

import pytest
import torch
import yaml
from helpers import cvae, tiny_overrides, write_spec

from cvae.spec import load_spec
from cvae.training import checkpoint

API_KEY = "local-" + "5ec7e7" * 6 + "abcd"  # a fake W&B key (46 characters, as W&B's local keys)
DB_PASSWORD = "Pw-0f-Alice-77"


@pytest.mark.slow
def test_secrets_stay_out_of_every_file_and_the_console(tmp_path, tiny_data, wandb_env):
    url = f"postgresql://alice:{DB_PASSWORD}@db.example.org:5432/optuna"
    secret_in = tmp_path / "secret-in"  # the only place the secrets may be written (by this test)
    spec = write_spec(
        secret_in / "spec.yaml",
        tiny_overrides(
            tiny_data,
            **{
                "train.epochs": 1,
                "data.partial": 0.5,
                "tracking.wandb.mode": "offline",
                "tracking.wandb.notes": f"study in {url}",
                "tracking.wandb.tags": [url],
            },
        ),
    )
    run = tmp_path / "run"
    env = {**wandb_env, "WANDB_API_KEY": API_KEY}
    r = cvae("train", spec, "--run-dir", run, "--set", f"tracking.wandb.group={url}", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    shown = cvae("spec", "show", spec, env=env)
    bad = cvae("spec", "show", spec, "--set", f"tracking.wandb.mode={url}", env=env)
    assert bad.returncode == 2 and "alice:***@db.example.org" in bad.stderr

    for text in (r.stdout, r.stderr, shown.stdout, shown.stderr, bad.stdout, bad.stderr):
        assert DB_PASSWORD not in text and API_KEY not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file() and secret_in not in p.parents]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "last.pt" for p in files)
    for p in files:  # spec.yaml, history, summary, checkpoints, W&B's logs and records, everything
        data = p.read_bytes()
        assert DB_PASSWORD.encode() not in data and API_KEY.encode() not in data, p
    saved = load_spec(run / "spec.yaml")
    assert saved.tracking.wandb.notes == "study in postgresql://alice:***@db.example.org:5432/optuna"
    assert yaml.safe_load(shown.stdout)["tracking"]["wandb"]["tags"] == [
        "postgresql://alice:***@db.example.org:5432/optuna"
    ]

    from wandb_offline import read_offline_run

    config = read_offline_run(run)["config"]
    assert config["tracking.wandb.group"] == "postgresql://alice:***@db.example.org:5432/optuna"


def test_checkpoints_load_weights_only(trained_run, monkeypatch):
    """Every checkpoint load goes through torch.load(weights_only=True) (the crafted-pickle refusal
    itself: tests/test_cli.py::test_evaluate_crafted_pickle_does_not_run)."""
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    from cvae.runs.evaluate import load_trained

    load_trained(trained_run, "best")
    checkpoint.load(trained_run / "checkpoints/last.pt")
    assert calls == [True, True]
