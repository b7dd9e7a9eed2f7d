"""Two processes (torchrun, gloo on CPU): evaluation gathers every window exactly once and agrees with one process."""

import json

import pytest

from tests.distributed import failure_text, torchrun
from tests.trainers.test_tad_run import tiny_argv, TINY_MODEL as MODEL

pytestmark = pytest.mark.multiprocess


def test_two_processes_match_one(tmp_path):
    common = dict(num_train_epochs=2, eval_start_epoch=2, save_every_epochs=0, save_strategy="no",
                  flip_prob=0.0, per_device_eval_batch_size=4,
                  model_config_overrides=MODEL.replace("dropout: 0.1", "dropout: 0.0, drop_path_rate: 0.0, detector_drop_path_rate: 0.0"))  # 6 windows over 2 x 4: padded
    torchrun(tmp_path, tiny_argv(tmp_path, tmp_path / "one", per_device_train_batch_size=2, **common), 1)
    torchrun(tmp_path, tiny_argv(tmp_path, tmp_path / "two", per_device_train_batch_size=1, **common), 2)
    one = json.loads((tmp_path / "one" / "eval_results.json").read_text())
    two = json.loads((tmp_path / "two" / "eval_results.json").read_text())
    # same global batch: the same optimisation up to float reduction order
    for key in ("eval_mAP@0.3", "eval_mAP@0.5", "eval_average_mAP"):
        assert two[key] == pytest.approx(one[key], abs=0.5), key
    from safetensors.torch import load_file

    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys()
    diffs = {k: (w1[k].float() - w2[k].float()).abs().max().item() for k in w1}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < 1e-5, (worst, diffs[worst])
    p1 = json.loads((tmp_path / "one" / "predictions.json").read_text())["results"]
    p2 = json.loads((tmp_path / "two" / "predictions.json").read_text())["results"]
    assert p1.keys() == p2.keys()
    # evaluate-only under torchrun, 2 processes: the 1-process run's own final metrics and predictions
    torchrun(tmp_path, tiny_argv(tmp_path, tmp_path / "one", per_device_train_batch_size=2, **common)
             + ["--do_train", "false", "--model_name_or_path", str(tmp_path / "one")], 2)
    again = tmp_path / "one" / "eval-one-ema"
    evaluated = json.loads((again / "eval_results.json").read_text())
    assert {k: v for k, v in evaluated.items() if "mAP" in k} == {k: v for k, v in one.items() if "mAP" in k}
    assert json.loads((again / "predictions.json").read_text())["results"] == p1


# run.py's main, then process 1 aborts as a process that fails in its teardown does (seen once on CPU under ZeRO-3:
# "terminate called without an active exception" at exit).
ABORT_AFTER_RUN = """
import os
from hf_vtrain import run

run.main()
if os.environ["RANK"] == "1":
    os.abort()
"""


def test_a_process_failing_at_exit_does_not_cost_the_main_process_its_outputs(tmp_path):
    """torchrun stops every process once one fails. Process 1 dies right after its run returns; the main process has
    still written every output (curves, timelines, model card), because the processes leave the run together."""
    script = tmp_path / "abort_after_run.py"
    script.write_text(ABORT_AFTER_RUN)
    out = tmp_path / "two"
    argv = tiny_argv(tmp_path, out, per_device_train_batch_size=1, num_train_epochs=2, eval_start_epoch=2,
                     save_every_epochs=0, save_strategy="no")
    proc = torchrun(tmp_path, argv, 2, script=script, expect_ok=False, launcher="torchrun")  # its summary names the signal
    assert proc.returncode != 0 and "SIGABRT" in proc.stderr, failure_text(proc)
    for name in ("model.safetensors", "eval_results.json", "predictions.json", "eval_map_table.txt",
                 "training_curves.png", "README.md"):
        assert (out / name).is_file(), name
    assert list((out / "timelines").glob("*.png"))
