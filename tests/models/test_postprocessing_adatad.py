"""Decoding, soft-NMS and window merging against hand-worked examples."""

import math

import numpy as np
import pytest
import torch
from transformers import VideoMAEConfig

from hf_vtrain.models.adatad import AdaTADConfig, AdaTADDetectionOutput
from hf_vtrain.models.adatad.postprocessing_adatad import decode_window_detections, merge_video_detections, soft_nms, to_opentad_results


def _gaussian_decay(score, inter, len_a, len_b, sigma=0.7):
    # OpenTAD's softnms_1d_cpu adds 1e-6 to every length.
    iou = inter / ((len_a + 1e-6) + (len_b + 1e-6) - inter)
    return score * math.exp(-(iou**2) / sigma)


def test_soft_nms_hand_worked():
    # A [0,10] 0.9 is kept first; B [5,15] overlaps it (IoU 1/3) and decays to 0.8 exp(-(1/9)/0.7) = 0.6826,
    # which is below C [20,30] 0.7 (no overlap): the output order is A, C, B.
    segments, scores, labels = soft_nms([[0, 10], [5, 15], [20, 30]], [0.9, 0.8, 0.7], [0, 0, 0], sigma=0.7)
    np.testing.assert_allclose(segments, [[0, 10], [20, 30], [5, 15]])
    np.testing.assert_allclose(scores, [0.9, 0.7, _gaussian_decay(0.8, 5, 10, 10)], rtol=1e-12)
    assert scores[2] == pytest.approx(0.8 * math.exp(-(1 / 3) ** 2 / 0.7), rel=1e-6)
    np.testing.assert_array_equal(labels, [0, 0, 0])


def test_soft_nms_decays_repeatedly():
    # After A [0,10]: B [4,14] (IoU 6/14) drops to 0.589, C [8,18] (IoU 2/18) only to 0.780, so C is taken second
    # and B decays again by C (IoU 6/14).
    segments, scores, _ = soft_nms([[0, 10], [4, 14], [8, 18]], [0.9, 0.85, 0.8], [3, 3, 3], sigma=0.5)
    b = _gaussian_decay(0.85, 6, 10, 10, 0.5)
    c = _gaussian_decay(0.8, 2, 10, 10, 0.5)
    assert c > b
    np.testing.assert_allclose(scores, [0.9, c, _gaussian_decay(b, 6, 10, 10, 0.5)], rtol=1e-12)
    np.testing.assert_allclose(segments, [[0, 10], [8, 18], [4, 14]])


def test_soft_nms_classes_are_independent():
    segments, scores, labels = soft_nms([[0, 10], [5, 15], [20, 30]], [0.9, 0.8, 0.7], [0, 1, 0])
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7])
    np.testing.assert_array_equal(labels, [0, 1, 0])
    # Class-agnostic mode decays across classes.
    _, scores, labels = soft_nms([[0, 10], [5, 15], [20, 30]], [0.9, 0.8, 0.7], [0, 1, 0], class_agnostic=True)
    np.testing.assert_allclose(scores, [0.9, 0.7, _gaussian_decay(0.8, 5, 10, 10)], rtol=1e-12)
    np.testing.assert_array_equal(labels, [0, 0, 1])


def test_soft_nms_max_segments_and_min_score():
    starts = np.arange(6) * 20.0
    segments = np.stack([starts, starts + 10], axis=1)
    scores = np.array([0.1, 0.6, 0.3, 0.9, 0.5, 0.2])
    labels = np.array([0, 1, 0, 1, 0, 1])
    kept, kept_scores, kept_labels = soft_nms(segments, scores, labels, max_segments=3)
    np.testing.assert_allclose(kept_scores, [0.9, 0.6, 0.5])
    np.testing.assert_allclose(kept[:, 0], [60, 20, 80])
    np.testing.assert_array_equal(kept_labels, [1, 1, 0])
    # A segment whose decayed score drops under min_score is discarded.
    _, kept_scores, _ = soft_nms([[0, 10], [0, 10]], [0.9, 0.8], [0, 0], min_score=0.5)
    assert kept_scores.tolist() == pytest.approx([0.9])
    assert len(soft_nms(np.zeros((0, 2)), [], [])[0]) == 0


def test_soft_nms_class_agnostic_voting():
    # A [0,10] 0.9 and B [1,11] 0.6 have IoU 9/11 >= 0.7: A becomes (0.9 A + 0.6 B) / 1.5 = [0.4, 10.4].
    segments, scores, _ = soft_nms(
        [[0, 10], [1, 11], [30, 40]], [0.9, 0.6, 0.5], [0, 1, 2], class_agnostic=True, voting_threshold=0.7
    )
    np.testing.assert_allclose(segments[0], [0.4, 10.4])
    np.testing.assert_allclose(segments[1], [30, 40])
    assert scores[0] == 0.9


def _candidates(rng, num, num_classes, duration, ties):
    """Segments clustered around a few instances plus short and long background ones, as a detector proposes."""
    instances = rng.uniform(0, duration, 6)
    instances = np.stack([instances, instances + rng.uniform(1, duration / 10, 6)], axis=1)
    near = instances[rng.integers(0, 6, num // 2)] + rng.normal(0, 1.0, (num // 2, 2))
    start = rng.uniform(0, duration, num - num // 2)
    background = np.stack([start, start + rng.exponential(duration / 40, len(start))], axis=1)
    segments = np.sort(np.concatenate([near, background]), axis=1)
    scores = rng.uniform(0.001, 1.0, num)
    if ties:  # OpenTAD rounds scores to 1e-4 and seconds to 0.01: equal scores and duplicate segments
        scores, segments = np.round(scores, 2), np.round(segments, 0)
    return segments, scores, rng.integers(0, num_classes, num)


@pytest.mark.parametrize("seed", range(6))
def test_soft_nms_compiled_equals_reference_bit_for_bit(seed):
    # The compiled loop (soft_nms_kernels) against the numpy definition (`reference=True`), on random candidates:
    # the same kept segments in the same order, with the same scores to the last bit.
    rng = np.random.default_rng(seed)
    settings = [
        dict(),
        dict(sigma=0.3, max_segments=50),
        dict(min_score=0.2),
        dict(class_agnostic=True, voting_threshold=0.7),
        dict(class_agnostic=True, max_segments=0),
    ]
    for ties in (False, True):
        segments, scores, labels = _candidates(rng, int(rng.integers(1, 700)), 5, 100.0, ties)
        for kwargs in settings:
            expected = soft_nms(segments, scores, labels, reference=True, **kwargs)
            got = soft_nms(segments, scores, labels, **kwargs)
            for a, b in zip(expected, got):
                assert a.dtype == b.dtype and a.shape == b.shape, kwargs
                np.testing.assert_array_equal(a, b, err_msg=f"{kwargs} ties={ties}")


def test_soft_nms_compiled_equals_reference_on_degenerate_segments():
    # Zero-length segments (kept with OpenTAD's rounding), reversed ones (end < start) and identical ones: the
    # compiled loop then examines every pair, as the reference does (a union of zero gives NaN, as there).
    segments = np.array([[5, 5], [5, 5], [0, 10], [12, 3], [4, 4 - 2e-6], [2, 8], [2, 8], [7, 7]], dtype=np.float64)
    scores = np.array([0.5, 0.5, 0.9, 0.4, 0.3, 0.8, 0.8, 0.2])
    for kwargs in (dict(), dict(class_agnostic=True), dict(min_score=0.35)):
        expected = soft_nms(segments, scores, np.zeros(8, dtype=int), reference=True, **kwargs)
        got = soft_nms(segments, scores, np.zeros(8, dtype=int), **kwargs)
        for a, b in zip(expected, got):
            np.testing.assert_array_equal(a, b)


def test_soft_nms_refuses_non_finite_scores():
    with pytest.raises(ValueError, match="1 scores are not finite"):
        soft_nms([[0, 1], [2, 3]], [0.5, float("nan")], [0, 0])


def _tiny_config(**kwargs):
    backbone = VideoMAEConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        patch_size=16, tubelet_size=2, image_size=32, num_frames=4,
    )
    defaults = dict(
        backbone_config=backbone, chunk_size=4, window_size=8, num_pyramid_levels=2,
        regression_ranges=[(0, 4), (4, 10000)], num_labels=2, pre_nms_topk=4,
    )
    defaults.update(kwargs)
    return AdaTADConfig(**defaults)


def test_decode_keeps_top_k_and_pads():
    config = _tiny_config()  # points: level 0 at frames 0..7 (P 0..7), level 1 at frames 0,2,4,6 (P 8..11)
    logits = torch.full((1, 12, 2), -10.0)  # sigmoid(-10) = 4.5e-5 < score_threshold
    offsets = torch.zeros(1, 12, 2)
    mask = torch.ones(1, 12, dtype=torch.bool)
    logits[0, 3, 1] = 2.0
    offsets[0, 3] = torch.tensor([1.0, 2.0])  # frame 3 -> [2, 5]
    logits[0, 9, 0] = 1.0
    offsets[0, 9] = torch.tensor([2.0, 4.0])  # frame 2 -> [0, 6]
    logits[0, 5, 0] = 3.0  # highest score, but on a padded point
    mask[0, 5] = False
    detections = decode_window_detections((logits, offsets, mask), config)
    assert detections.shape == (1, 4, 4)
    expected = torch.tensor(
        [
            [2.0, 5.0, torch.sigmoid(torch.tensor(2.0)).item(), 1.0],
            [0.0, 6.0, torch.sigmoid(torch.tensor(1.0)).item(), 0.0],
            [0.0, 0.0, -1.0, -1.0],
            [0.0, 0.0, -1.0, -1.0],
        ]
    )
    torch.testing.assert_close(detections[0], expected)
    # Same result from a ModelOutput; pre_nms_topk = 1 keeps the best pair only.
    output = AdaTADDetectionOutput(class_logits=logits, segment_offsets=offsets, point_mask=mask)
    torch.testing.assert_close(decode_window_detections(output, config), detections)
    top1 = decode_window_detections(output, _tiny_config(pre_nms_topk=1))
    torch.testing.assert_close(top1[0], expected[:1])
    # More slots than (point, class) pairs: still the fixed shape, padded.
    assert decode_window_detections(output, _tiny_config(pre_nms_topk=30)).shape == (1, 30, 4)


def test_merge_converts_units_clips_and_drops_padding():
    config = _tiny_config(max_segments=10, opentad_rounding=False)
    fps, stride, duration = 30.0, 4, 20.0
    windows = [
        (np.array([[15, 45, 0.9, 1], [-3, 30, 0.5, 0], [0, 0, -1, -1]]), 0),
        # Window starting at sampled frame 120 (16 s): [16+4, 16+8] s = [20, 24] is past the end -> zero length.
        (torch.tensor([[30.0, 60.0, 0.8, 1.0], [0.0, 15.0, 0.7, 0.0], [0.0, 0.0, -1.0, -1.0]]), 120),
    ]
    merged = merge_video_detections(windows, fps=fps, sample_stride=stride, duration=duration, config=config)
    # (window_start + x) * stride / fps
    np.testing.assert_allclose(merged["segments"], [[2.0, 6.0], [16.0, 18.0], [0.0, 4.0]])
    np.testing.assert_allclose(merged["scores"], [0.9, 0.7, 0.5])
    np.testing.assert_array_equal(merged["labels"], [1, 0, 0])

    results = to_opentad_results({"video_test_0000004": merged}, {0: "BaseballPitch", 1: "BasketballDunk"})
    first = results["results"]["video_test_0000004"][0]
    assert first == {"segment": [2.0, 6.0], "label": "BasketballDunk", "score": 0.9}
    assert len(results["results"]["video_test_0000004"]) == 3


def test_opentad_rounding_and_zero_length_segments():
    """OpenTAD's post-processing: each window's seconds rounded to 0.01 and scores to 1e-4 (Python's round) before
    the video's soft-NMS and again after it; a zero-length segment (clipped at the video's end) is kept."""
    config = _tiny_config(max_segments=10)
    assert config.opentad_rounding
    fps, stride, duration = 30.0, 4, 20.0
    windows = [
        (np.array([[1.0, 10.0, 0.912345, 1], [0.0, 0.0, -1, -1]]), 0),  # [0.1333.., 1.3333..] s
        (torch.tensor([[30.0, 60.0, 0.8, 1.0], [0.0, 15.0, 0.70004, 0.0]]), 120),  # the first: [20, 20] s
    ]
    merged = merge_video_detections(windows, fps=fps, sample_stride=stride, duration=duration, config=config)
    by_score = {round(float(s), 4): seg.tolist() for s, seg in zip(merged["scores"], merged["segments"])}
    assert by_score[0.9123] == [0.13, 1.33]  # 0.1333 -> 0.13, 1.3333 -> 1.33, 0.912345 -> 0.9123
    assert by_score[0.8] == [20.0, 20.0]  # zero length, kept
    assert by_score[0.7] == [16.0, 18.0]  # 0.70004 -> 0.7
    assert all(float(s) == round(float(s), 4) for s in merged["scores"])
    assert all(float(x) == round(float(x), 2) for x in merged["segments"].reshape(-1))


def test_rounding_equals_pythons_round():
    # OpenTAD rounds with Python's round (exact decimal value, halves to even); the vectorised `_rounded` must give
    # the same doubles, including values at or within an ulp of a half (0.125, 2.675, k/200) and tiny or huge ones.
    from hf_vtrain.models.adatad.postprocessing_adatad import _rounded

    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.uniform(-500, 500, 20000), rng.uniform(0, 1, 20000), np.round(rng.uniform(0, 100, 5000), 3) + 0.005,
        np.arange(-2000, 2000) / 200.0, np.arange(0, 20000) / 2e4,
        [0.125, 2.675, 1.005, -0.0, 0.0, 1e300, -1e-300, 5e-5, 0.00015, float("inf")],
    ])
    for digits in (2, 4):
        expected = np.array([round(float(x), digits) for x in values])
        got = _rounded(values.reshape(-1, 2), digits).reshape(-1)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
