"""Whole `det` runs (RT-DETR) through run.py on a tiny synthetic FRED-format corpus: a saved random RT-DETR loaded
through the path a published checkpoint takes, the frozen phase leaving the backbone's weights and BatchNorm
statistics bit for bit, the unfrozen phase moving them, evaluation and checkpoints on the run's epoch schedule across
both phases, the loss parts in the logs, the metric outputs (scored again by the CLI), early fusion widening the
first convolution, the best checkpoint over both phases, and the recipe checks."""

import json
import os

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_vtrain import run as run_module

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "recipes", "fred_rgb_demo.yaml")
TINY = {"encoder_hidden_dim": 32, "encoder_ffn_dim": 64, "encoder_attention_heads": 2, "d_model": 32,
        "decoder_in_channels": [32, 32, 32], "decoder_ffn_dim": 64, "decoder_layers": 1, "decoder_attention_heads": 2,
        "num_queries": 10, "num_denoising": 4}
TINY_BACKBONE = {"embedding_size": 8, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1],
                 "layer_type": "bottleneck"}


def tiny_argv(root, output_dir, recipe=DEMO, **overrides):
    keys = {"output_dir": str(output_dir), "data_root": str(root / "corpus"), "synthetic_sequences": 4,
            "synthetic_seconds": 0.6, "image_size": 64, "model_config_overrides": json.dumps(TINY),
            "backbone_config_overrides": json.dumps(TINY_BACKBONE), "per_device_eval_batch_size": 8,
            "logging_steps": 1, "report_to": "none", "max_detections": 20}
    keys.update(overrides)
    argv = [str(recipe)]
    for key, value in keys.items():
        argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("det_run")


def _saved_random_model(root, channels=3):
    """A random tiny RT-DETR saved as a published checkpoint would be (80 COCO classes), loaded by model_name_or_path."""
    from transformers import RTDetrConfig, RTDetrResNetConfig

    from hf_vtrain.models.rt_detr import RTDetrDetector

    path = root / f"random_rtdetr_{channels}"
    if not path.exists():
        torch.manual_seed(0)
        backbone = RTDetrResNetConfig(**TINY_BACKBONE, num_channels=channels,
                                      out_features=["stage2", "stage3", "stage4"])
        config = RTDetrConfig(**TINY, backbone_config=backbone, encoder_in_channels=[32, 64, 128], num_labels=80)
        RTDetrDetector(config).save_pretrained(path)
    return path


def test_frozen_then_unfrozen_phases_on_the_run_schedule(root, tmp_path):
    start = _saved_random_model(root)
    recipe = yaml.safe_load(open(DEMO))
    recipe["phases"][0].update(num_train_epochs=2, per_device_train_batch_size=8)
    recipe["phases"][1].update(num_train_epochs=4, per_device_train_batch_size=8)
    path = tmp_path / "two_phases.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    metrics = run_module.main(tiny_argv(root, out, recipe=path, model_name_or_path=start, eval_start_epoch=3,
                                        eval_every_epochs=3, save_every_epochs=3, save_total_limit=5))
    assert {"eval_map_50", "eval_map"} <= set(metrics)

    def backbone(state):
        return {k: v for k, v in state.items() if k.startswith("model.backbone.") and "num_batches" not in k}

    initial = backbone(load_file(start / "model.safetensors"))
    frozen = backbone(load_file(out / "phase1-frozen" / "model.safetensors"))
    final = backbone(load_file(out / "model.safetensors"))
    assert initial.keys() == frozen.keys() and any("running_mean" in k for k in initial)
    for key in initial:  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(initial[key], frozen[key]), key
    moved = [k for k in initial if not torch.equal(frozen[k], final[k])]
    assert any("running_mean" in k for k in moved) and any(k.endswith("convolution.weight") for k in moved)
    # the rest trained in phase 1
    head = "model.enc_score_head.weight"
    assert not torch.equal(load_file(start / "model.safetensors")[head],
                           load_file(out / "phase1-frozen" / "model.safetensors")[head])

    # evaluation and checkpoints every 3 epochs of the whole run (2 + 4 epochs): at run epochs 3 and 6, both in
    # phase 2 (its epochs 1 and 4)
    history = json.loads((out / "log_history.json").read_text())
    assert sorted({round(e["epoch"]) for e in history if "eval_map_50" in e}) == [3, 6]
    assert any("vfl_loss" in e and "giou_loss" in e and "bbox_loss" in e for e in history)
    steps_per_epoch = json.loads((out / "phase2-unfrozen" / "trainer_state.json").read_text())["global_step"] // 4
    checkpoints = sorted(int(n.split("-")[1]) for n in os.listdir(out / "phase2-unfrozen")
                         if n.startswith("checkpoint-"))
    assert checkpoints == [steps_per_epoch, 4 * steps_per_epoch]
    # phase 1 (run epochs 1-2) has none on the schedule, only the one every phase saves at its end (for resuming)
    phase1_steps = json.loads((out / "phase1-frozen" / "trainer_state.json").read_text())["global_step"]
    assert [n for n in os.listdir(out / "phase1-frozen") if n.startswith("checkpoint-")] == \
        [f"checkpoint-{phase1_steps}"]

    # the best checkpoint by mAP@0.5 over both phases (the demo recipe's metric_for_best_model), with where it came from
    best = json.loads((out / "best" / "best.json").read_text())
    evals = {round(e["epoch"]): e["eval_map_50"] for e in history if "eval_map_50" in e}
    assert best["metric"] == "eval_map_50" and best["value"] == max(evals.values()) and best["phase"] == "unfrozen"
    assert evals[best["epoch"]] == best["value"] and (out / "best" / "model.safetensors").is_file()
    assert best["source"] == f"phase2-unfrozen/checkpoint-{best['step']}"

    # the outputs: detections and ground truth the CLI scores to the run's figure, the curve, drawn frames
    from hf_vtrain.metrics import det

    for name in ("detections.json", "ground_truth.json", "precision_recall.png", "eval_detection_table.txt",
                 "preprocessing_config.json"):
        assert (out / name).is_file(), name
    assert len(os.listdir(out / "frames")) == 8
    again = det.evaluate_detections(json.loads((out / "ground_truth.json").read_text()),
                                    det.read_detections(str(out / "detections.json")), max_detections=20)
    assert again.map_50 == pytest.approx(metrics["eval_map_50"])
    gt = json.loads((out / "ground_truth.json").read_text())
    assert any(not [a for a in gt["annotations"] if a["image_id"] == im["id"]] for im in gt["images"])  # empty frames


def test_predict_on_a_frame_folder_gives_the_evaluation_detections_and_reads_a_video(root, tmp_path):
    """The phased run's model on one held-out sequence's RGB folder: the boxes evaluation scored for those frames
    (same resize, same post-processing); a video input works too (an MP4 of the frames); a missing path is one error."""
    from hf_vtrain import predict as predict_module
    from hf_vtrain.data.fred import read_split_list

    out = tmp_path / "run"
    recipe = yaml.safe_load(open(DEMO))
    recipe.pop("phases")
    path = tmp_path / "single.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_module.main(tiny_argv(root, out, recipe=path, num_train_epochs=1, per_device_train_batch_size=8,
                              max_detections=20))
    seq = read_split_list(str(root / "corpus" / "dataset_splits" / "canonical" / "test_split.txt"))[0]
    frames = root / "corpus" / seq / "RGB"
    pred = tmp_path / "pred"
    assert predict_module.main(["--model", str(out), str(frames), "--output", str(pred), "--no_progress",
                                "--min_score", "0"]) == 0
    got = json.loads((pred / "RGB.detections.json").read_text())
    ours = {im["id"]: im["file_name"] for im in got["images"]}
    gt = json.loads((out / "ground_truth.json").read_text())
    eval_id = {os.path.basename(im["file_name"]): im["id"] for im in gt["images"]}
    evaluated = {}
    for d in json.loads((out / "detections.json").read_text()):
        evaluated.setdefault(d["image_id"], []).append(d)
    compared = 0
    for image_id, name in ours.items():
        mine = sorted((d for d in got["detections"] if d["image_id"] == image_id), key=lambda d: -d["score"])
        theirs = sorted(evaluated[eval_id[name]], key=lambda d: -d["score"])
        assert len(mine) == len(theirs) == 10  # min(max_detections 20, 10 queries x 1 class)
        for a, b in zip(mine, theirs):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
            assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-2)
        compared += 1
    assert compared == len(list(frames.iterdir())) and (pred / "RGB.boxes.mp4").stat().st_size > 0

    import numpy as np
    from PIL import Image

    from hf_vtrain.data.synthetic import write_mp4

    images = [np.asarray(Image.open(p)) for p in sorted(frames.iterdir())[:10]]
    write_mp4(str(tmp_path / "clip.mp4"), lambda lo, hi: images[lo:hi], len(images), 108, 192, 30)
    assert predict_module.main(["--model", str(out), str(tmp_path / "clip.mp4"), "--output", str(pred),
                                "--no_progress", "--no_video"]) == 0
    clip = json.loads((pred / "clip.detections.json").read_text())
    assert len(clip["images"]) == 10 and not (pred / "clip.boxes.mp4").exists()
    from hf_vtrain.parser import RecipeError

    with pytest.raises(RecipeError, match="nothing: no such file or folder"):
        predict_module.main(["--model", str(out), str(tmp_path / "nothing"), "--output", str(pred)])


def test_early_fusion_widens_the_first_convolution_keeping_the_rgb_filters(root, tmp_path):
    start = _saved_random_model(root)
    argv = tiny_argv(root, tmp_path / "fused", modality="rgb_event", model_name_or_path=start)
    recipe = yaml.safe_load(open(DEMO))
    recipe.pop("phases")
    path = tmp_path / "single.yaml"
    path.write_text(yaml.safe_dump(recipe))
    argv[0] = str(path)
    prepared = run_module.prepare(argv + ["--num_train_epochs", "1", "--per_device_train_batch_size", "8"])
    from hf_vtrain.models.rt_detr.modeling_rt_detr import first_convolution

    conv = first_convolution(prepared.trainer.model)[2]
    saved = load_file(start / "model.safetensors")["model.backbone.model.embedder.embedder.0.convolution.weight"]
    assert conv.in_channels == 6 and torch.equal(conv.weight[:, :3], saved)
    assert torch.equal(conv.weight[:, 3:], torch.zeros_like(conv.weight[:, 3:]))
    run_module.execute(prepared)
    from hf_vtrain.models.rt_detr import RTDetrDetector

    again = RTDetrDetector.from_pretrained(tmp_path / "fused")  # a widened model loads back as one
    assert first_convolution(again)[2].in_channels == 6

    # predict pairs each RGB frame with its event frame as the loader did: the evaluation's boxes
    from hf_vtrain import predict as predict_module
    from hf_vtrain.data.fred import read_split_list

    seq = read_split_list(str(root / "corpus" / "dataset_splits" / "canonical" / "test_split.txt"))[0]
    assert predict_module.main(["--model", str(tmp_path / "fused"), str(root / "corpus" / seq / "RGB"), "--output",
                                str(tmp_path / "pred"), "--no_progress", "--no_video", "--min_score", "0"]) == 0
    got = json.loads((tmp_path / "pred" / "RGB.detections.json").read_text())
    gt = json.loads((tmp_path / "fused" / "ground_truth.json").read_text())
    first = next(im["id"] for im in gt["images"] if os.path.basename(im["file_name"]) == got["images"][0]["file_name"])
    evaluated = sorted((d["score"] for d in json.loads((tmp_path / "fused" / "detections.json").read_text())
                        if d["image_id"] == first), reverse=True)
    predicted = sorted((d["score"] for d in got["detections"] if d["image_id"] == 1), reverse=True)
    assert predicted == pytest.approx(evaluated, abs=1e-4)


def test_recipe_mistakes_end_before_training(root, tmp_path):
    from hf_vtrain.parser import RecipeError

    with pytest.raises(RecipeError, match="modality must be one of"):
        run_module.prepare(tiny_argv(root, tmp_path / "a", modality="thermal"))
    with pytest.raises(RecipeError, match="'encoder_hiden_dim' is not a RTDetrConfig field"):
        run_module.main(tiny_argv(root, tmp_path / "b", model_config_overrides="{encoder_hiden_dim: 8}"))
    # a frame too small for the queries: named before training, not a torch.topk failure in the first step
    with pytest.raises(RecipeError, match=r"image_size 32: .* 21 encoder positions \(4x4 \+ 2x2 \+ 1x1 .* "
                                          r"num_queries 30; use image_size >= 64"):
        run_module.prepare(tiny_argv(root, tmp_path / "c", image_size=32,
                                     model_config_overrides=json.dumps({**TINY, "num_queries": 30})))


def test_map_during_training_false_skips_it_until_the_final_evaluation(root, tmp_path):
    from hf_vtrain.parser import RecipeError

    recipe = yaml.safe_load(open(DEMO))
    recipe.pop("phases")
    path = tmp_path / "single.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="metric_for_best_model eval_map_50 needs the metric during training"):
        run_module.main(tiny_argv(root, tmp_path / "a", recipe=path, map_during_training="false"))
    out = tmp_path / "b"
    metrics = run_module.main(tiny_argv(root, out, recipe=path, map_during_training="false",
                                        metric_for_best_model="eval_loss", num_train_epochs=2,
                                        per_device_train_batch_size=8, eval_start_epoch=1, eval_every_epochs=1))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    during = [e for e in history if "eval_loss" in e]
    assert len(during) == 2 and not any("eval_map_50" in e for e in during)
    assert "eval_map_50" in metrics  # the final evaluation
