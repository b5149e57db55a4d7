"""The one atomic writer (cvae/atomic.py): a file is either as it was or complete, never half written."""

from __future__ import annotations

import errno

import pytest

from cvae import atomic


def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path):
    path = tmp_path / "summary.json"
    atomic.write_text(path, "old\n")
    with pytest.raises(OSError) as info:
        with atomic.atomic_write(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("torch's writer") from OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_the_previous_file_is_kept_and_the_suffix_ends_the_temporary_name(tmp_path):
    path, previous = tmp_path / "last.pt", tmp_path / "prev.pt"
    atomic.write_bytes(path, b"one")
    with atomic.atomic_write(path, suffix=".png", previous=previous) as tmp:
        assert tmp.name == "last.pt.tmp.png"
        tmp.write_bytes(b"two")
    assert (path.read_bytes(), previous.read_bytes()) == (b"two", b"one")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "prev.pt"]


def test_a_library_error_without_errno_names_the_path(tmp_path):
    path = tmp_path / "val.gif"
    with pytest.raises(OSError, match=r"cannot write mode .* \(writing .*val\.gif\)"):
        with atomic.atomic_write(path, suffix=".gif"):
            raise OSError("cannot write mode RGBA as GIF")
    assert list(tmp_path.iterdir()) == []
