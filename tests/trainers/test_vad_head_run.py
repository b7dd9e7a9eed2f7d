"""The weakly supervised head's stage through run.py: a tiny FG-CLIP phase, then the head phase on its snippet
features (feature_model: previous), scored by the head and by the prompts side by side; the features cached once
(a second run extracts nothing); the leakage check refuses a training video of the test list in this stage too."""

import json
import shutil

import pytest
import yaml

from hf_vtrain import run as run_module
from hf_vtrain.data.common import CorpusError
from tests.trainers.test_vad_run import REPO, tiny_argv

HEAD_DEMO = f"{REPO}/recipes/fgclip_ucf_head_demo.yaml"
HEAD = "{hidden_size: 16, num_heads: 2, local_layers: 1, global_layers: 1, local_window: 4, dropout: 0.0}"


def head_argv(root, out, recipe, **keys):
    argv = tiny_argv(root, out, feature_cache_dir=str(root / "features"), **keys)
    argv[0] = str(recipe)
    return argv


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    data = yaml.safe_load(open(HEAD_DEMO))
    data["phases"][1].update(num_train_epochs=3, head_config_overrides=yaml.safe_load(HEAD), eval_start_epoch=3,
                             eval_every_epochs=1)
    path = tmp_path_factory.mktemp("vad_head") / "head.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_fgclip_then_head_scored_by_both(tmp_path_factory, recipe):
    root = tmp_path_factory.mktemp("vad_head_run")
    out = root / "run"
    metrics = run_module.main(head_argv(root, out, recipe, num_train_epochs=1))
    assert {"eval_auc", "eval_ap", "eval_prompts_auc", "eval_prompts_ap"} <= set(metrics)
    assert [p["name"] for p in json.loads((out / "phases.json").read_text())] == ["fgclip", "head"]
    table = (out / "eval_auc_table.txt").read_text()
    assert "prompts:" in table
    scores = json.loads((out / "anomaly_scores.json").read_text())
    assert set(scores["scores"]) == set(scores["num_frames"])
    history = json.loads((out / "log_history.json").read_text())
    assert any("mil_loss" in e for e in history)
    cache = next((root / "features").iterdir())
    count = len([p for p in cache.iterdir() if p.suffix == ".safetensors"])
    assert count == 8  # 4 training + 4 test videos
    # a head trained on its own (a recipe without phases) on the same FG-CLIP folder: every feature cached
    argv = tiny_argv(root, root / "again", feature_cache_dir=str(root / "features"), stage="head",
                     feature_model=str(out / "phase1-fgclip"), head_config_overrides=HEAD, param_groups="[]",
                     vad_score="head", num_train_epochs=2)
    alone = run_module.main(argv)
    assert "snippet features: 0 of 8 videos computed" in (root / "again" / "train.log").read_text()
    assert "eval_auc" in alone and "eval_prompts_auc" not in alone

    # predict with the run folder alone (its phase folders gone: the FG-CLIP model travels in feature_model/):
    # the head's scores of a test video, as the evaluation scored it
    shutil.rmtree(out / "phase1-fgclip")
    shutil.rmtree(out / "phase2-head")
    assert (out / "feature_model" / "config.json").is_file()
    from hf_vtrain import predict as predict_module

    key = next(iter(scores["scores"]))
    video = next(v for v in (root / "corpus").rglob("*.mp4") if v.stem == key.split("/")[-1])
    assert predict_module.main(["--model", str(out), str(video), "--output", str(root / "pred"),
                                "--no_progress"]) == 0
    predicted = json.loads((root / "pred" / f"{video.stem}.scores.json").read_text())["scores"][video.stem]
    assert predicted == pytest.approx(scores["scores"][key], abs=1e-5)


def test_the_leakage_check_covers_the_head_stage(tmp_path_factory, recipe, tmp_path):
    root = tmp_path_factory.mktemp("vad_head_leak")
    run_module.prepare(tiny_argv(root, tmp_path / "warm"))  # writes the corpus and the tiny CLIP
    bad = tmp_path / "corpus"
    shutil.copytree(root / "corpus", bad)
    test_video = (bad / "Anomaly_Test.txt").read_text().split()[0]
    records = json.loads((bad / "ucf_fgclip_train.json").read_text())
    records.append({**records[0], "video": test_video, "timestamps": None})
    (bad / "ucf_fgclip_train.json").write_text(json.dumps(records))
    argv = tiny_argv(root, tmp_path / "out", data_root=str(bad), synthetic="false", stage="head",
                     feature_model=str(root / "clip"))
    with pytest.raises(CorpusError, match="test list"):
        run_module.prepare(argv)


@pytest.mark.multiprocess  # two torchrun processes (about 30 s)
@pytest.mark.multiprocess
def test_two_processes_split_the_feature_extraction(tmp_path_factory):
    """The head stage under torchrun with 2 processes on a fresh cache: each process computes its half of the 8
    videos, every feature is there afterwards, and the run evaluates."""
    from tests.distributed import torchrun

    root = tmp_path_factory.mktemp("vad_head_mp")
    run_module.main(tiny_argv(root, root / "fgclip", num_train_epochs=1))
    argv = tiny_argv(root, root / "head", feature_cache_dir=str(root / "features"), stage="head",
                     feature_model=str(root / "fgclip"), head_config_overrides=HEAD, param_groups="[]",
                     vad_score="both", num_train_epochs=2, per_device_train_batch_size=1)
    proc = torchrun(root, argv, 2)
    log = proc.stdout + proc.stderr
    assert log.count("snippet features: 4 of 8 videos computed") == 2, log[-3000:]
    cache = next((root / "features").iterdir())
    assert len([p for p in cache.iterdir() if p.suffix == ".safetensors"]) == 8
    assert "eval_prompts_auc" in json.loads((root / "head" / "eval_results.json").read_text())
