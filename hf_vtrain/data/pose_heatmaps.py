"""Pose heatmap volumes from 2D keypoints (PoseC3D / RGBPoseConv3D / EPAM input), in torch, all joints, people and
frames at once.

The rules are MMAction2's `GeneratePoseTarget` (keypoint heatmaps): for each person's joint with score >= 1e-4, a
Gaussian exp(-((x - mu_x)^2 + (y - mu_y)^2) / 2 / sigma^2) times the score (or 1 without scores), on the pixels
x in [max(int(mu_x - 3 sigma), 0), min(int(mu_x + 3 sigma) + 1, W)) and likewise y (`int` truncating toward 0, as
Python's); people combined by the pixel-wise maximum, 0 elsewhere. Keypoints are in heatmap pixels (the caller scales
image coordinates, e.g. by 0.25 for 56x56 maps of 224x224 frames). float32 throughout, as the reference.
"""

from __future__ import annotations

import torch

SCORE_EPS = 1e-4  # joints scoring below this get no Gaussian


def keypoint_heatmaps(keypoints, scores, height: int, width: int, sigma: float, use_score: bool = True,
                      chunk_frames: int = 16) -> torch.Tensor:
    """(T, V, height, width) float32 heatmaps of keypoints (M, T, V, 2) [x, y] with scores (M, T, V) (None: 1).

    Runs `chunk_frames` frames at a time, so memory is M x chunk x V x H x W floats whatever the clip length."""
    keypoints = torch.as_tensor(keypoints, dtype=torch.float32)
    if keypoints.ndim != 4 or keypoints.shape[-1] < 2:
        raise ValueError(f"keypoints must be (people, frames, joints, 2+), got {tuple(keypoints.shape)}")
    people, frames, joints = keypoints.shape[:3]
    if scores is None or not use_score:  # as the reference: every joint at value 1
        values = torch.ones((people, frames, joints), dtype=torch.float32)
        valid = torch.ones((people, frames, joints), dtype=torch.bool)
    else:
        raw = torch.as_tensor(scores)
        if raw.shape != (people, frames, joints):
            raise ValueError(f"scores must be {(people, frames, joints)}, got {tuple(raw.shape)}")
        if not raw.is_floating_point():
            raw = raw.to(torch.float32)
        valid = raw >= torch.tensor(SCORE_EPS, dtype=raw.dtype)  # compared in the scores' own dtype (float16 in PYSKL)
        values = raw.to(torch.float32)
    out = torch.zeros((frames, joints, height, width), dtype=torch.float32)
    if people == 0 or frames == 0:
        return out
    xs = torch.arange(width, dtype=torch.float32)
    ys = torch.arange(height, dtype=torch.float32)
    reach = torch.tensor(3 * sigma, dtype=torch.float32)  # the reference: mu - 3 * sigma, the product in float64
    variance = torch.tensor(sigma * sigma, dtype=torch.float32)  # the reference divides by sigma ** 2 (a Python float)
    for lo in range(0, frames, chunk_frames):
        kp = keypoints[:, lo: lo + chunk_frames, :, :2]
        val = values[:, lo: lo + chunk_frames]
        ok = valid[:, lo: lo + chunk_frames]
        mu_x, mu_y = kp[..., 0], kp[..., 1]  # (M, t, V)
        st_x = torch.clamp(torch.trunc(mu_x - reach), min=0)
        ed_x = torch.clamp(torch.trunc(mu_x + reach) + 1, max=width)
        st_y = torch.clamp(torch.trunc(mu_y - reach), min=0)
        ed_y = torch.clamp(torch.trunc(mu_y + reach) + 1, max=height)
        in_x = (xs >= st_x[..., None]) & (xs < ed_x[..., None])  # (M, t, V, W)
        in_y = (ys >= st_y[..., None]) & (ys < ed_y[..., None])  # (M, t, V, H)
        dx = (xs - mu_x[..., None]) ** 2
        dy = (ys - mu_y[..., None]) ** 2
        d2 = dy[..., :, None] + dx[..., None, :]  # (M, t, V, H, W)
        patch = torch.exp(-d2 / 2 / variance) * val[..., None, None]
        keep = in_y[..., :, None] & in_x[..., None, :] & ok[..., None, None]
        patch = torch.where(keep, patch, torch.zeros((), dtype=torch.float32))
        out[lo: lo + chunk_frames] = patch.amax(dim=0)
    return out
