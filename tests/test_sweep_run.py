"""Running a sweep (docs/reliability.md, promise 4): worker processes on a real PostgreSQL (a
throwaway cluster; skipped without the server binaries), 4 workers sharing 40 trials on a journal
file and on PostgreSQL with no lost update, GPUs handed to the workers round robin, and a pruner
that never prunes after the last epoch. Trials are tiny (seconds each); the workers are real
processes.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from helpers import (
    SEARCH,
    assert_bad_input,
    assert_clean_sweep,
    assert_ok,
    cvae,
    free_port,
    subprocess_env,
    tpe_sweep,
    trials_of,
    write_sweep,
)

from cvae.sweep.file import load_sweep

# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port (initdb + pg_ctl in a tmp dir;
    as root, run as the `postgres` user, since PostgreSQL refuses to run as root)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[dev]')")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install -y postgresql; .ci/run does)")
    # Not under pytest's tmp folder: it is private to this user, and the server runs as another.
    root = Path(tempfile.mkdtemp(prefix="cvae-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        for p in (root, sock):
            os.chown(p, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *a: subprocess.run([*prefix, *map(str, a)], capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run(bin_dir / "initdb", "-D", data, "-U", "cvae", "--auth=trust", "-E", "UTF8")
    assert r.returncode == 0, r.stderr
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    r = run(bin_dir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log.txt", "-w", "start")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        r = run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "cvae", "optuna")
        assert r.returncode == 0, r.stderr
        yield f"postgresql://cvae@127.0.0.1:{port}/optuna"
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_postgresql(tmp_path, tiny_data, postgres_url):
    path = write_sweep(
        tmp_path,
        tiny_data,
        tpe_sweep(4),
    )
    r = cvae("sweep", "run", path, "--workers", "2", "--storage", postgres_url, "--dir", tmp_path / "out")
    assert_ok(r)
    trials = trials_of(postgres_url, "sweep")
    assert_clean_sweep(trials, 4)
    assert len({t.user_attrs["worker"] for t in trials}) == 2


# --------------------------------------------------------------------------- 4 workers x 10 trials


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_four_workers_forty_trials(tmp_path, tiny_data, backend, request):
    """docs/reliability.md promise 4: 4 worker processes share 40 trials (10 each on average) of a
    TPE + median-pruning study on one storage. Every trial finishes, numbers are unique, no
    worker reports a locked database, and no update is lost: every trial holds its parameters,
    an intermediate value per epoch it trained and its attributes, all matching its run folder."""
    storage = [] if backend == "journal" else ["--storage", request.getfixturevalue("postgres_url")]
    study = f"four_workers_{backend}"
    sweep = tpe_sweep(40, study, n_startup_trials=4)
    # One epoch of three steps: the workers spend their time on the storage, not on training.
    path = write_sweep(tmp_path, tiny_data, sweep, **{"train.epochs": 1, "data.val_len": 4})
    t0 = time.monotonic()
    r = cvae("sweep", "run", path, "--workers", "4", *storage, "--dir", tmp_path / "out", timeout=900)
    assert_ok(r)
    print(f"4-worker {backend} sweep of 40 trials: {time.monotonic() - t0:.1f} s")
    assert "locked" not in (r.stdout + r.stderr).lower()
    url = storage[1] if storage else str(tmp_path / "out" / "optuna.journal")
    trials = trials_of(url, study)
    assert_clean_sweep(trials, 40, n_epochs=1, study=study)
    per_worker: dict[str, int] = {}
    for t in trials:
        per_worker[t.user_attrs["worker"]] = per_worker.get(t.user_attrs["worker"], 0) + 1
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs_done"] + 1))
        assert f"trial {t.number}:" in r.stdout
    assert len(per_worker) == 4 and sum(per_worker.values()) == 40, per_worker


# --------------------------------------------------------------------------- GPUs per worker


@pytest.mark.slow
def test_gpus_go_round_robin_to_the_workers_through_their_environment(tmp_path, tiny_data, monkeypatch):
    """Worker i gets the i-th GPU of --gpus (default: every visible one) as its CUDA_VISIBLE_DEVICES,
    and each trial records the one it ran with. Two GPUs are simulated: the worker processes are
    real, and on this CPU they train on the CPU whatever the variable says."""
    from cvae import placement
    from cvae.errors import UserError
    from cvae.sweep import workers
    from cvae.terminal import make_console

    monkeypatch.setattr(placement, "visible_gpus", lambda: ["0", "1"])
    assert placement.assign_gpus(3, None) == ["0", "1", "0"]
    assert placement.assign_gpus(4, "1") == ["1"] * 4  # workers sharing one GPU
    with pytest.raises(UserError, match="no GPU 7 here; visible: 0, 1"):
        placement.assign_gpus(2, "0,7")
    sweep = {"overrides": {"train.epochs": 1}, "search": {"optim.lr": SEARCH["optim.lr"]}, "budget": {"n_trials": 4}}
    path = write_sweep(tmp_path, tiny_data, sweep)
    loaded = load_sweep(path, "gpus", tmp_path / "out")
    opts = workers.RunOptions(str(tmp_path / "out" / "optuna.journal"), 4, None)
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    assert workers.run_workers(loaded, opts, 2, make_console(quiet=True), placement.assign_gpus(2, None)) == 0
    seen: dict[str, set[str]] = {}
    for t in trials_of(opts.url, "gpus"):
        seen.setdefault(t.user_attrs["worker"], set()).add(t.user_attrs["cuda_visible_devices"])
    assert sorted(v for gpus in seen.values() for v in gpus) == ["0", "1"] and all(len(g) == 1 for g in seen.values())


def test_gpus_on_a_machine_without_cuda_are_refused(tmp_path, tiny_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    sweep = {"search": {"optim.lr": SEARCH["optim.lr"]}, "budget": {"n_trials": 1}}
    path = write_sweep(tmp_path, tiny_data, sweep)
    assert_bad_input(cvae("sweep", "run", path, "--dir", tmp_path / "out", "--gpus", "0"), "--gpus 0", "no CUDA device")
    assert not (tmp_path / "out" / "trials").exists()


# --------------------------------------------------------------------------- pruning


def test_the_pruner_never_prunes_after_the_last_epoch(tmp_path):
    """Pruning after the last epoch saves no training and would only hide the trial's score."""
    import optuna

    from cvae.errors import Pruned
    from cvae.sweep.trial import PruningCallback

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    callback = PruningCallback(trial, "val/psnr", tmp_path, epochs=4)
    with pytest.raises(Pruned, match="after epoch 2"):
        callback.on_epoch_end(2, {"val/psnr": 20.0})
    callback.on_epoch_end(4, {"val/psnr": 21.0})  # the last epoch: reported, never pruned
    (frozen,) = study.trials
    assert frozen.intermediate_values == {2: 20.0, 4: 21.0}
    assert frozen.user_attrs["pruned_at_epoch"] == 2
