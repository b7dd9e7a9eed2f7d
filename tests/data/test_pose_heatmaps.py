"""Pose heatmaps: hand-worked values (one joint, two people, a low-score joint, a joint near the border) and a
loop-for-loop reading of MMAction2's GeneratePoseTarget rules on random poses."""

import math

import numpy as np
import pytest
import torch

from hf_vtrain.data.pose_heatmaps import keypoint_heatmaps


def test_one_joint_by_hand():
    # joint at (3.0, 2.0), score 0.5, sigma 1: window x in [int(0.0), int(6.0) + 1) = [0, 7) clipped to W = 6,
    # y in [max(int(-1.0), 0), int(5.0) + 1) = [0, 5) (H = 5)
    maps = keypoint_heatmaps([[[[3.0, 2.0]]]], [[[0.5]]], height=5, width=6, sigma=1.0)
    assert maps.shape == (1, 1, 5, 6)
    assert maps[0, 0, 2, 3].item() == pytest.approx(0.5)
    assert maps[0, 0, 2, 4].item() == pytest.approx(0.5 * math.exp(-0.5))
    assert maps[0, 0, 0, 0].item() == pytest.approx(0.5 * math.exp(-(9 + 4) / 2))
    # sigma 0.7: window x in [int(3 - 2.1), int(3 + 2.1) + 1) = [0, 6): pixel 0 is in, at distance 3
    maps = keypoint_heatmaps([[[[3.0, 2.0]]]], None, height=5, width=8, sigma=0.7)
    assert maps[0, 0, 2, 0].item() == pytest.approx(math.exp(-9 / 2 / 0.49)) and maps[0, 0, 2, 6].item() == 0.0
    assert maps[0, 0, 2, 5].item() == pytest.approx(math.exp(-4 / 2 / 0.49))


def test_two_people_take_the_maximum_and_a_low_score_joint_is_skipped():
    keypoints = [[[[1.0, 1.0]]], [[[2.0, 1.0]]]]  # person 0 at x=1, person 1 at x=2, same frame and joint
    maps = keypoint_heatmaps(keypoints, [[[1.0]], [[0.6]]], height=3, width=4, sigma=1.0)[0, 0]
    assert maps[1, 1].item() == pytest.approx(1.0)                                # person 0's peak
    assert maps[1, 2].item() == pytest.approx(max(math.exp(-0.5), 0.6))            # 0.607 vs 0.6: person 0
    assert maps[1, 3].item() == pytest.approx(max(math.exp(-2), 0.6 * math.exp(-0.5)))
    low = keypoint_heatmaps(keypoints, [[[1.0]], [[5e-5]]], height=3, width=4, sigma=1.0)[0, 0]
    only_first = keypoint_heatmaps([[[[1.0, 1.0]]]], [[[1.0]]], height=3, width=4, sigma=1.0)[0, 0]
    assert torch.equal(low, only_first)  # a score under 1e-4: no Gaussian at all (not a faint one)
    assert keypoint_heatmaps(keypoints, [[[5e-5]], [[5e-5]]], 3, 4, 1.0).abs().sum() == 0


def reference(keypoints, scores, height, width, sigma):
    """MMAction2's GeneratePoseTarget.generate_a_heatmap, frame by frame, joint by joint, person by person."""
    out = np.zeros((keypoints.shape[1], keypoints.shape[2], height, width), np.float32)
    for t in range(keypoints.shape[1]):
        for v in range(keypoints.shape[2]):
            arr = out[t, v]
            for center, value in zip(keypoints[:, t, v].astype(np.float32), scores[:, t, v]):
                if value < 1e-4:
                    continue
                mu_x, mu_y = center[0], center[1]
                st_x, ed_x = max(int(mu_x - 3 * sigma), 0), min(int(mu_x + 3 * sigma) + 1, width)
                st_y, ed_y = max(int(mu_y - 3 * sigma), 0), min(int(mu_y + 3 * sigma) + 1, height)
                x = np.arange(st_x, ed_x, 1, np.float32)
                y = np.arange(st_y, ed_y, 1, np.float32)
                if not (len(x) and len(y)):
                    continue
                y = y[:, None]
                patch = np.exp(-((x - mu_x) ** 2 + (y - mu_y) ** 2) / 2 / sigma ** 2) * value
                arr[st_y:ed_y, st_x:ed_x] = np.maximum(arr[st_y:ed_y, st_x:ed_x], patch)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_random_poses_equal_the_reference(seed):
    rng = np.random.default_rng(seed)
    people, frames, joints, height, width = 2, 5, 17, 14, 18
    keypoints = rng.uniform(-4, 22, (people, frames, joints, 2)).astype(np.float32)  # some outside the map
    scores = rng.uniform(0, 1, (people, frames, joints)).astype(np.float16)
    scores[rng.random(scores.shape) < 0.2] = 0
    sigma = (0.6, 0.7)[seed % 2]
    got = keypoint_heatmaps(keypoints, scores, height, width, sigma, chunk_frames=2).numpy()
    want = reference(keypoints, scores, height, width, sigma)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert ((got > 0) == (want > 0)).all()  # the same windows, pixel for pixel
