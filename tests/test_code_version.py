"""Which code ran: cvae-sweeps' version and the commit of its own checkout, asked of real git."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import git

from cvae.code_version import DISTRIBUTION, describe, git_state

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def make_package(root: Path) -> Path:
    pkg = root / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    return pkg


def commit(repo: Path, *paths: str) -> str:
    git(repo, "add", *paths)
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "c")
    return git(repo, "rev-parse", "HEAD")


def test_a_package_in_its_own_checkout_has_its_commit_clean_or_dirty(tmp_path):
    pkg = make_package(tmp_path / "repo")
    git(tmp_path / "repo", "init", "-q")
    head = commit(tmp_path / "repo", "pkg")
    assert git_state(pkg) == {"commit": head, "dirty": False}
    (tmp_path / "repo" / "notes.txt").write_text("an untracked file changes no code\n")
    assert git_state(pkg) == {"commit": head, "dirty": False}
    (pkg / "__init__.py").write_text("x = 1\n")
    assert git_state(pkg) == {"commit": head, "dirty": True}


def test_a_package_git_does_not_track_has_no_commit(tmp_path):
    """Not a checkout at all; or copied (installed) into a folder of some other repository that does
    not track it, as a virtualenv inside a project: that repository's commit is not the package's."""
    assert git_state(make_package(tmp_path / "plain")) == {}
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README").write_text("theirs\n")
    commit(repo, "README")
    installed = make_package(repo / ".venv" / "site-packages")
    assert git_state(installed) == {}


def test_describe_says_version_commit_and_changes():
    assert describe({"version": "1.2.0", "commit": "0123456789abcdef" * 2, "dirty": True}) == (
        f"{DISTRIBUTION} 1.2.0, commit 0123456789ab (uncommitted changes)"
    )
    assert describe({"version": "1.2.0"}) == f"{DISTRIBUTION} 1.2.0"
    assert describe({}) == f"{DISTRIBUTION} (not installed)"
