"""Two processes (torchrun, gloo on CPU) on the FG-CLIP video (vad) task: half the per-device batch gives the weights
of one process (the contrastive losses gather every rank's features, so the negatives are the global batch's), and
evaluation scores every test video exactly once (VADTrainer refuses a missing or doubled one) with the same result."""

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.trainers.test_vad_run import REPO, tiny_argv

pytestmark = pytest.mark.multiprocess


def _torchrun(argv, nproc, cwd):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.join(REPO, "hf_vtrain", "run.py"), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_two_processes_match_one(tmp_path):
    # 4 training videos: one step per epoch with a global batch of 4 (1 x 4 or 2 x 2); 5 test videos, so the
    # 2-process evaluation pads one rank's last batch and gather_for_metrics must drop the duplicate.
    common = dict(num_train_epochs=3, eval_start_epoch=3, eval_every_epochs=1, per_device_eval_batch_size=2,
                  flip_prob=0.0, synthetic_num_test_anomalous=3, learning_rate=5e-3)
    _torchrun(tiny_argv(tmp_path, tmp_path / "one", per_device_train_batch_size=4, **common), 1, tmp_path)
    log = _torchrun(tiny_argv(tmp_path, tmp_path / "two", per_device_train_batch_size=2, **common), 2, tmp_path)
    assert "Instantaneous batch size per device = 2" in log and "accumulation) = 4" in log  # 2 ranks x 2

    one_state = json.loads((tmp_path / "one" / "trainer_state.json").read_text())
    two_state = json.loads((tmp_path / "two" / "trainer_state.json").read_text())
    assert one_state["global_step"] == two_state["global_step"] == 3

    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys()
    diffs = {k: (w1[k].float() - w2[k].float()).abs().max().item() for k in w1}
    worst = max(diffs, key=diffs.get)
    # fp32 summation order differs (one batched backward vs two + all-reduce); Adam turns rounding noise on
    # near-zero gradients into steps of up to ~lr, so the bound is a few lr-sized Adam steps' worth of noise, far
    # below what a wrong gradient (e.g. local-only negatives, or a missing world-size factor) moves (>1e-2).
    print(f"max weight difference 1 vs 2 processes: {diffs[worst]:.3g} ({worst})")
    assert diffs[worst] < 1e-4, (worst, diffs[worst])
    changed = [k for k in w1 if diffs[k] > 0]
    assert len(changed) < len(w1), "every tensor differs: the two runs did not train the same model"

    s1 = json.loads((tmp_path / "one" / "anomaly_scores.json").read_text())
    s2 = json.loads((tmp_path / "two" / "anomaly_scores.json").read_text())
    assert list(s1["scores"]) == list(s2["scores"])  # every test video, once, in test-list order
    assert len(s1["scores"]) == 5
    for key in s1["scores"]:
        assert len(s1["scores"][key]) == len(s2["scores"][key]) > 0, key
        assert max(abs(a - b) for a, b in zip(s1["scores"][key], s2["scores"][key])) < 1e-4, key
    r1 = json.loads((tmp_path / "one" / "eval_results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "eval_results.json").read_text())
    for key in ("eval_auc", "eval_ap"):
        assert r2[key] == pytest.approx(r1[key], abs=1e-3), key
