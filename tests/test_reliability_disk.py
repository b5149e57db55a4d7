"""docs/reliability.md, promise 5: a full disk (a 4 MiB tmpfs; skipped where it cannot be
mounted) is an error naming the file, leaves no half-written checkpoint, GIF or plot, and a resume
finishes once there is room. Runs use cvae.synth's tiny preset and tiny widths
(helpers.tiny_overrides).
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from helpers import (
    KILL,
    assert_same_training_state,
    cvae,
    history,
    leftovers,
    summary,
    tiny_overrides,
    without_perf,
    write_spec,
)

from cvae.spec import load_spec
from cvae.training import checkpoint
from cvae.training.loop import train


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk (needs root; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk until about ``leave`` bytes are free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    path = disk / "filler"
    with open(path, "ab") as f:
        f.write(b"\0" * max(0, free - leave))
    return path


@pytest.mark.slow
def test_disk_full_at_the_first_checkpoint(tmp_path, tiny_data, trained_run, small_disk):
    size = (trained_run / "checkpoints/last.pt").stat().st_size
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data))
    fill(small_disk, size // 2)
    run = small_disk / "run"
    r = cvae("train", spec, "--run-dir", run, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    failed = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "Traceback" not in r.stderr
    assert f"OSError: [Errno {errno.ENOSPC}] No space left on device" in failed[0]
    assert str(run / "checkpoints/best.pt") in failed[0]
    assert not (run / "checkpoints/last.pt").exists() and not (run / "checkpoints/best.pt").exists()
    assert leftovers(run) == []


@pytest.mark.slow
def test_disk_full_later_keeps_the_old_checkpoint_and_resume_finishes(tmp_path, tiny_data, trained_run, small_disk):
    """Epoch 1 fits, epoch 2's checkpoint does not: last.pt stays epoch 1's; free space, resume, and
    the run ends bit-identical to one that never hit the full disk."""
    size = (trained_run / "checkpoints/last.pt").stat().st_size
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data))
    filler = fill(small_disk, 5 * size // 2)  # two checkpoints and the media of epoch 1, not a third
    run = small_disk / "run"
    r = cvae("train", spec, "--run-dir", run, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "No space left on device" in r.stderr and str(run / "checkpoints") in r.stderr
    assert checkpoint.load(run / "checkpoints/last.pt")["epoch"] == 1
    assert leftovers(run) == []
    filler.unlink()
    r = cvae("train", "--resume", run, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_training_state(run / "checkpoints/last.pt", trained_run / "checkpoints/last.pt")
    assert without_perf(history(run)) == without_perf(history(trained_run))
    assert summary(run)["status"] == "finished"


# imageio's GIF writer, left open by the failed write, tries to flush again when collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_disk_full_while_writing_media(tmp_path, tiny_data, small_disk, monkeypatch):
    import cvae.tracking.media

    real = cvae.tracking.media.write_gif

    def write_gif_on_a_full_disk(path, frames, *args, **kwargs):
        fill(small_disk, 0)
        return real(path, frames, *args, **kwargs)

    monkeypatch.setattr(cvae.tracking.media, "write_gif", write_gif_on_a_full_disk)
    run = small_disk / "run"
    with pytest.raises(OSError) as e:
        train(load_spec(None, tiny_overrides(tiny_data, **KILL)), run)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(run / "media/val_epoch001.gif")
    assert leftovers(run) == [] and not (run / "checkpoints/last.pt").exists()
    assert checkpoint.load(run / "checkpoints/best.pt")["epoch"] == 1  # written before the media: complete
