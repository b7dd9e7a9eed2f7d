"""Two processes (torchrun, gloo on CPU) on the FG-CLIP video (vad) task, under DDP and DeepSpeed ZeRO-3: half the
per-device batch gives the weights of one process (the contrastive losses gather every rank's features, so the
negatives are the global batch's), and evaluation scores every test video exactly once (VADTrainer refuses a missing
or doubled one) with the same result.

32-frame clips in chunks of 8 frames per CLIP call: the synthetic clips are 30-60 frames long, so processes hold
different numbers of real frames and make different numbers of CLIP calls, and only some batches have boxes and hard
negatives. Under ZeRO-3 that aborted gloo ("Received data size doesn't match") until the model padded every
process's calls (FGCLIPVideoModel under `runs_under_zero3`); tests/models/test_fgclip_video.py checks the calls.
"""

import json
import re

import pytest

from tests.distributed import tensor_diffs, torchrun, weights, zero3_config
from tests.trainers.test_vad_run import tiny_argv

pytestmark = pytest.mark.multiprocess

# 4 training videos: one step per epoch with a global batch of 4 (1 x 4 or 2 x 2); 5 test videos, so the 2-process
# evaluation pads one rank's last batch and gather_for_metrics must drop the duplicate. EMA on: evaluation and
# ema/ hold the averaged weights (under ZeRO-3 each process averages its partition).
COMMON = dict(num_train_epochs=3, eval_start_epoch=3, eval_every_epochs=1, per_device_eval_batch_size=2,
              flip_prob=0.0, synthetic_num_test_anomalous=3, learning_rate=5e-3, ema_decay=0.5, num_frames=32,
              model_config_overrides="{temporal_num_heads: 2, max_frames: 32, score_window_frames: 8, "
                                     "frame_chunk_size: 8}")


def _zero3_config(root) -> str:
    """The shipped ZeRO-3 config with a persistence threshold of 1000 elements, so the tiny CLIP's weight matrices and
    embedding tables are partitioned (the shipped 1e5 would keep every tensor of it whole), and reduce buckets of 3000
    elements, so gradients are reduced in many buckets (a process reducing them in another order would mix them)."""
    return zero3_config(root / "zero3_vad.json", stage3_param_persistence_threshold=1000,
                        reduce_bucket_size=3000)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vad_mp")
    out = {name: root / name for name in ("one", "two", "zero3")}
    torchrun(root, tiny_argv(root, out["one"], per_device_train_batch_size=4, **COMMON), 1)
    torchrun(root, tiny_argv(root, out["two"], per_device_train_batch_size=2, **COMMON), 2)
    log = (out["two"] / "train.log").read_text()
    assert "Instantaneous batch size per device = 2" in log and "accumulation) = 4" in log  # 2 ranks x 2
    return root, out


def _max_diff(a, b):
    found = tensor_diffs(a, b)
    worst = max(found, key=found.get)
    return found, worst


def _assert_same_scores_and_metrics(a, b, bound=1e-4):
    s1 = json.loads((a / "anomaly_scores.json").read_text())
    s2 = json.loads((b / "anomaly_scores.json").read_text())
    assert list(s1["scores"]) == list(s2["scores"])  # every test video, once, in test-list order
    assert len(s1["scores"]) == 5
    for key in s1["scores"]:
        assert len(s1["scores"][key]) == len(s2["scores"][key]) > 0, key
        assert max(abs(x - y) for x, y in zip(s1["scores"][key], s2["scores"][key])) < bound, key
    r1 = json.loads((a / "eval_results.json").read_text())
    r2 = json.loads((b / "eval_results.json").read_text())
    for key in ("eval_auc", "eval_ap"):
        assert r2[key] == pytest.approx(r1[key], abs=1e-3), key


def test_two_processes_match_one(runs):
    _, out = runs
    one_state = json.loads((out["one"] / "trainer_state.json").read_text())
    two_state = json.loads((out["two"] / "trainer_state.json").read_text())
    assert one_state["global_step"] == two_state["global_step"] == 3
    for name in ("model.safetensors", "ema/model.safetensors"):
        diffs, worst = _max_diff(weights(out["one"], name), weights(out["two"], name))
        # fp32 summation order differs (one batched backward vs two + all-reduce); Adam turns rounding noise on
        # near-zero gradients into steps of up to ~lr, so the bound is a few lr-sized Adam steps' worth of noise, far
        # below what a wrong gradient (e.g. local-only negatives, or a missing world-size factor) moves (>1e-2).
        print(f"{name}: max weight difference 1 vs 2 processes: {diffs[worst]:.3g} ({worst})")
        assert diffs[worst] < 1e-4, (name, worst, diffs[worst])
        changed = [k for k in diffs if diffs[k] > 0]
        assert len(changed) < len(diffs), "every tensor differs: the two runs did not train the same model"
    _assert_same_scores_and_metrics(out["one"], out["two"])


def test_zero3_trains_the_vad_task(runs, require_deepspeed):
    """2-process ZeRO-3 (CLIP weights partitioned) against 2-process DDP and 1 process: the same training up to fp32
    rounding, raw and EMA weights, every test video scored once, the same AUC/AP."""
    root, out = runs
    torchrun(root, tiny_argv(root, out["zero3"], per_device_train_batch_size=2, deepspeed=_zero3_config(root), **COMMON),
             2)
    sizes = {k: v.numel() for k, v in weights(out["zero3"]).items()}
    assert sum(n > 1000 for n in sizes.values()) >= 10  # partitioned between forwards, not held whole
    assert json.loads((out["zero3"] / "ema" / "ema_state.json").read_text())["num_updates"] == 3
    for name in ("model.safetensors", "ema/model.safetensors"):
        zero3 = weights(out["zero3"], name)
        # Against DDP: measured bit for bit on one machine, a few 1e-6 on another (AVX-512), there only in tensors
        # whose exact gradient is 0 or starts at 0: a key bias adds a constant to every key of a query, which softmax
        # ignores; the temporal blocks' qkv and fc1 feed out_proj and fc2, which start at zero. Adam turns the
        # rounding noise of another reduction order into lr-sized steps there. They get 1e-4 (the bound against one
        # process), every other tensor 1e-6.
        noise_only = re.compile(r"(k_proj\.bias|temporal\.blocks\.\d+\.(qkv|fc1)\.(weight|bias))$")
        for other, bound in (("two", 1e-6), ("one", 1e-4)):
            diffs, worst = _max_diff(zero3, weights(out[other], name))
            print(f"{name}: ZeRO-3 vs {other}: max {diffs[worst]:.3g} ({worst})")
            others = {k: v for k, v in diffs.items() if not noise_only.search(k)}
            worst_other = max(others, key=others.get)
            assert others[worst_other] < bound, (name, other, worst_other, others[worst_other])
            assert diffs[worst] < 1e-4, (name, other, worst, diffs[worst])
    moved, worst = _max_diff(weights(out["zero3"]), weights(out["zero3"], "ema/model.safetensors"))
    assert moved[worst] > 1e-3  # raw and EMA weights are different things
    _assert_same_scores_and_metrics(out["one"], out["zero3"])
    _assert_same_scores_and_metrics(out["two"], out["zero3"], bound=1e-6)


def test_gradient_caching_on_two_processes_matches_one(runs):
    """2 processes x batch 2 in chunks of 1 clip (gradient caching under DDP: the chunks' backward passes sync once,
    after the last) give the weights of 1 process x batch 4 in one forward, within the DDP bound (fp32 summation
    order), every contrastive term over the global batch of 4."""
    root, out = runs
    cached = root / "two_cached"
    torchrun(root, tiny_argv(root, cached, per_device_train_batch_size=2, contrastive_chunk_size=1, **COMMON), 2)
    for name in ("model.safetensors", "ema/model.safetensors"):
        diffs, worst = _max_diff(weights(out["one"], name), weights(cached, name))
        print(f"{name}: 2 processes with gradient caching vs 1 process: {diffs[worst]:.3g} ({worst})")
        assert diffs[worst] < 1e-4, (name, worst, diffs[worst])
    _assert_same_scores_and_metrics(out["one"], cached)
