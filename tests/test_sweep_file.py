"""The sweep file: the shipped sweeps load; a bad one (a typo, a bound that gives an invalid spec, a
missing file, a grid without steps, three mistakes at once) exits 2 with one message naming every
mistake, and nothing is created. (More bad sweep files: the bad-input table of
test_reliability_input.py.)
"""

from __future__ import annotations

import pytest
from helpers import SEARCH, SWEEPS, assert_bad_input, cvae, write_sweep

from cvae.errors import SpecError
from cvae.sweep.file import load_sweep


def test_shipped_sweeps_load():
    for path in SWEEPS.glob("*.yaml"):
        sweep = load_sweep(path)
        assert sweep.study == path.stem
        assert sweep.spec.search
    quick = load_sweep(SWEEPS / "quick.yaml")
    assert quick.epochs() <= 4  # CPU-sized


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ({"sampler": {"typ": "tpe"}}, ("unknown key `sampler.typ`", "did you mean `sampler.type`")),
        ({"serach": {}}, ("unknown key `serach`", "did you mean `search`")),
        (
            {"search": {"kl_annealing.ratoi": {"type": "float", "low": 0.1, "high": 1}}},
            ("`kl_annealing.ratoi` is not a key of the spec", "kl_annealing.ratio"),
        ),
        (
            {"search": {"kl_annealing.ratio": {"type": "float", "low": 0.1, "high": 1.5}}},
            ("search.kl_annealing.ratio", "1.5", "invalid spec"),
        ),
        (
            {"search": {"kl_annealing.ratio": {"type": "float", "lo": 0.1, "high": 1}}},
            ("unknown key `lo`", "did you mean `low`"),
        ),
        ({"search": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.001}}}, ("must be below high",)),
        ({"search": {"kl_annealing.cycles": {"type": "float", "low": 1, "high": 4}}}, ("use type: int",)),
        (
            {"search": {"kl_annealing.type": {"type": "categorical", "choices": ["cyclic", "none"]}}},
            ("search.kl_annealing.type", "'cyclic'"),
        ),
        ({"budget": {}}, ("budget needs n_trials",)),
        ({"objective": {"metric": "val/pnsr"}}, ("val/pnsr", "did you mean `val/psnr`")),
        ({"overrides": {"train.epoch": 3}}, ("overrides", "train.epoch", "train.epochs")),
    ],
)
def test_bad_sweep_file_exits_2(tmp_path, change, needles):
    sweep = {"search": {"optim.lr": SEARCH["optim.lr"]}, "budget": {"n_trials": 2}} | change
    path = write_sweep(tmp_path, tmp_path / "data", sweep)
    r = cvae("sweep", "run", path, "--dir", tmp_path / "out")
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(path) in errors[0]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not (tmp_path / "out").exists()  # nothing created


def test_sweep_file_not_found_exits_2(tmp_path):
    r = cvae("sweep", "export-wandb", tmp_path / "nope.yaml")
    assert r.returncode == 2 and "nope.yaml" in r.stderr


def test_grid_needs_steps(tmp_path):
    path = write_sweep(tmp_path, tmp_path, {"search": {"optim.lr": SEARCH["optim.lr"]}, "sampler": {"type": "grid"}})
    with pytest.raises(SpecError, match="grid sampler needs a step"):
        load_sweep(path)


def test_a_sweep_file_with_three_mistakes_names_all_three(tmp_path, tiny_data):
    sweep = {
        "search": {
            "optim.lrr": {"type": "float", "low": 1e-4, "high": 1e-2},
            "kl_annealing.ratio": {"type": "float", "low": 0.1, "high": 1.5},
        },
        "budget": {"n_trials": 2},
        "objectiv": {"metric": "val/psnr"},
    }
    r = cvae("sweep", "run", write_sweep(tmp_path, tiny_data, sweep), "--dir", tmp_path / "out")
    assert_bad_input(r, "3 problems")
    for needle in ("unknown key `objectiv` (did you mean `objective`?)", "`optim.lrr` is not a key of the spec",
                   "search.kl_annealing.ratio: the value 1.5 gives an invalid spec"):  # fmt: skip
        assert needle in r.stderr, r.stderr
