"""cvae.rollout: PSNR (and its documented 100 dB cap), trivial references, pose shifting, rollouts."""

from __future__ import annotations

import math

import pytest
import torch

from cvae.model import CVAE
from cvae.training.rollout import (
    MAX_VIDEOS,
    PSNR_CAP_DB,
    batches_by_length,
    psnr,
    reference_scores,
    rollout,
    shift_poses,
)
from cvae.training.validation import frame_scores


def full(value: float, *shape: int) -> torch.Tensor:
    return torch.full(shape, value)


# --------------------------------------------------------------------------- PSNR


def test_identical_frames_are_capped_at_100_db():
    """10 log10(1 / 0) would be infinite; the module caps it at 100 dB (MSE floored at 1e-10)."""
    x = torch.rand(5, 3, 8, 8)
    assert PSNR_CAP_DB == 100.0
    assert torch.equal(psnr(x, x), torch.full((5,), 100.0))
    # a tiny non-zero error stays below the cap, and nothing goes above it
    y = x.clone()
    y[0, 0, 0, 0] += 1e-3
    assert psnr(y, x)[0] < 100 and psnr(y, x).max() <= 100


def test_psnr_of_known_mse():
    # 0.25 difference everywhere: MSE 1/16 (exact in float) -> 10 log10(16) dB
    assert psnr(full(0.25, 3, 4, 4), full(0.0, 3, 4, 4)).item() == pytest.approx(10 * math.log10(16), abs=1e-6)
    # MSE 0.01 -> 20 dB
    assert psnr(full(0.1, 3, 4, 4), full(0.0, 3, 4, 4)).item() == pytest.approx(20.0, abs=1e-5)
    # MSE 1 (black vs white) -> 0 dB
    assert psnr(full(1.0, 3, 4, 4), full(0.0, 3, 4, 4)).item() == 0.0


def test_psnr_is_per_frame_over_the_last_three_dims():
    pred = torch.zeros(2, 3, 3, 4, 4)
    target = torch.zeros(2, 3, 3, 4, 4)
    target[1, 2] = 0.1  # one frame off by 0.1
    got = psnr(pred, target)
    assert got.shape == (2, 3)
    assert got[1, 2].item() == pytest.approx(20.0, abs=1e-5)
    assert (got.flatten()[:-1] == 100).all()
    # uint8-range inputs are cast to float, not wrapped
    assert psnr(pred.double(), target.double()).dtype == torch.float32


# --------------------------------------------------------------------------- references


def test_reference_scores_by_hand():
    """A 3-frame video of flat grey frames 0, 0.25, 0.75:
    repeat-first: frame 1 vs 0 -> MSE 1/16, frame 2 vs 0 -> MSE 9/16;
    mean frame 1/3: frame 1 -> MSE (1/12)^2, frame 2 -> MSE (5/12)^2."""
    video = torch.stack([full(v, 3, 2, 2) for v in (0.0, 0.25, 0.75)])

    def db(mse: float) -> float:
        return 10 * math.log10(1 / mse)

    repeat, mean = reference_scores(video)
    assert repeat == pytest.approx((db(1 / 16) + db(9 / 16)) / 2, abs=1e-4)
    assert mean == pytest.approx((db((1 / 12) ** 2) + db((5 / 12) ** 2)) / 2, abs=1e-4)
    # numbers: 12.041 + 2.499 over 2, and 21.584 + 7.604 over 2
    assert repeat == pytest.approx(7.2700, abs=1e-3) and mean == pytest.approx(14.5939, abs=1e-3)


def test_score_compares_predicted_frames_only():
    video = torch.stack([full(v, 3, 2, 2) for v in (0.0, 0.25, 0.75)])
    pred = video.clone()
    pred[0] = 0.9  # frame 0 is given, never scored
    pred[2] = 0.65  # off by 0.1 -> 20 dB
    curve, mse = frame_scores(pred, video)
    assert curve.shape == (2,)
    assert curve.tolist() == pytest.approx([100.0, 20.0], abs=1e-4)
    assert curve.mean().item() == pytest.approx(60.0, abs=1e-4)
    assert mse == pytest.approx(0.01 / 2, abs=1e-7)  # mean over frames 1..T-1


# --------------------------------------------------------------------------- pose shifting


def test_shift_poses_rotates_in_time():
    T = 5
    poses = torch.arange(2 * T).view(2, T, 1, 1, 1).expand(2, T, 3, 2, 2)
    for k in (0, 1, 2, 7, -1):
        shifted = shift_poses(poses, k)
        assert shifted.shape == poses.shape
        for b in range(2):
            for t in range(T):
                assert torch.equal(shifted[b, t], poses[b, (t + k) % T])


# --------------------------------------------------------------------------- rollout


@pytest.fixture(scope="module")
def tiny_model() -> CVAE:
    torch.manual_seed(0)
    return CVAE(16, 8, 4, 16).eval()


def test_rollout_shape_first_frame_and_seed(tiny_model):
    B, T, H, W = 2, 6, 16, 24
    g = torch.Generator().manual_seed(1)
    first = torch.rand(B, 3, H, W, generator=g)
    poses = torch.randint(0, 256, (B, T, 3, H, W), dtype=torch.uint8, generator=g)
    out = rollout(tiny_model, first, poses, seed=3)
    assert out.shape == (B, T, 3, H, W)
    assert torch.equal(out[:, 0], first)
    assert torch.isfinite(out).all()
    assert torch.equal(out, rollout(tiny_model, first, poses, seed=3))
    assert not torch.equal(out[:, 1:], rollout(tiny_model, first, poses, seed=4)[:, 1:])
    # uint8 poses are scaled to [0, 1]: the same poses given as floats roll out the same
    assert torch.allclose(out, rollout(tiny_model, first, poses.float() / 255, seed=3))


def test_a_video_rolls_out_the_same_alone_or_batched(tiny_model):
    """Every video of a batch gets the same z draws: validation and ``cvae predict`` batch videos
    without changing any video's frames."""
    B, T, H, W = 3, 6, 16, 24
    g = torch.Generator().manual_seed(2)
    first = torch.rand(B, 3, H, W, generator=g)
    poses = torch.randint(0, 256, (B, T, 3, H, W), dtype=torch.uint8, generator=g)
    batched = rollout(tiny_model, first, poses, seed=5)
    for b in range(B):
        alone = rollout(tiny_model, first[b : b + 1], poses[b : b + 1], seed=5)
        assert torch.allclose(batched[b : b + 1], alone, atol=1e-5)


def test_batches_by_length_groups_equal_lengths_and_bounds_the_batch():
    assert batches_by_length([5, 7, 5, 5, 7], max_videos=2) == [[0, 2], [3], [1, 4]]
    assert batches_by_length([]) == []
    assert sorted(v for b in batches_by_length([3] * 40) for v in b) == list(range(40))
    assert max(len(b) for b in batches_by_length([3] * 40)) == MAX_VIDEOS


def test_rollout_feeds_back_its_own_frames(tiny_model):
    """Frame t depends on the poses up to t only (causal), and changing pose 2 changes frames >= 2."""
    B, T, H, W = 1, 5, 8, 12
    first = torch.rand(B, 3, H, W)
    poses = torch.rand(B, T, 3, H, W)
    base = rollout(tiny_model, first, poses, seed=0)
    other = poses.clone()
    other[:, 2] = torch.rand(3, H, W)
    changed = rollout(tiny_model, first, other, seed=0)
    assert torch.equal(base[:, :2], changed[:, :2])
    assert not torch.equal(base[:, 2], changed[:, 2])
    assert not torch.equal(base[:, 4], changed[:, 4])  # carried forward through the fed-back frames


def test_rollout_restores_training_mode_and_global_rng(tiny_model):
    tiny_model.train()
    first, poses = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 3, 8, 8)
    state = torch.get_rng_state()
    rollout(tiny_model, first, poses, seed=0)
    assert tiny_model.training
    assert torch.equal(torch.get_rng_state(), state)  # z comes from its own generator
    tiny_model.eval()
