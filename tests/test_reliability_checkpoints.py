"""docs/reliability.md, promise 2: a damaged checkpoint is an error naming it; `cvae train
--resume` falls back to the checkpoint before (prev.pt). Runs use cvae.synth's tiny preset and
tiny widths (helpers.tiny_overrides).
"""

from __future__ import annotations

import shutil

import pytest
from helpers import assert_same_training_state, cvae, flip_a_weight_byte, history, leftovers, without_perf

from cvae.errors import CheckpointError
from cvae.training import checkpoint


def test_a_flipped_weight_byte_is_an_error(tmp_path, trained_run):
    """torch.load alone would load the wrong weight; the CRC check refuses the file."""
    path = tmp_path / "last.pt"
    shutil.copy(trained_run / "checkpoints/last.pt", path)
    flip_a_weight_byte(path)
    with pytest.raises(CheckpointError, match="checksum mismatch") as e:
        checkpoint.load(path)
    assert str(path) in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "flipped-byte"])
def test_cli_resume_falls_back_to_prev(request, trained_run, damage):
    """last.pt damaged: `cvae train --resume` warns, resumes from prev.pt (epoch 1), and ends where the
    undamaged run ended."""
    run = request.getfixturevalue("run_copy")
    last = run / "checkpoints/last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    else:
        flip_a_weight_byte(last)
    r = cvae("train", "--resume", run, cwd=run.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join((r.stdout + r.stderr).split())  # rich may wrap the warning
    assert f"warning: {last}" in out and f"resuming from {run / 'checkpoints/prev.pt'}" in out
    assert_same_training_state(last, trained_run / "checkpoints/last.pt")
    assert without_perf(history(run)) == without_perf(history(trained_run))
    assert leftovers(run) == []


# (The bad-input table, test_reliability_input.py, also covers: evaluate on a truncated last.pt, a
# flipped byte in best.pt, an empty best.pt, and resume with both last.pt and prev.pt damaged: exit 2,
# nothing written.)
