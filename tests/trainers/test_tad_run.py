"""Whole AdaTAD runs through run.py on a tiny synthetic THUMOS-format corpus: outputs, freezing, exact resume, errors."""

import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from hf_vtrain import run as run_module
from hf_vtrain.tasks.common import ensure_random_checkpoint
from hf_vtrain.data.common import CorpusError
from hf_vtrain.parser import RecipeError
from tests.callbacks import StopAt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "recipes", "adatad_thumos14_demo.yaml")


TINY_MODEL = ("{chunk_size: 4, adapter_dim: 8, detector_dim: 32, num_attention_heads: 2, num_pyramid_levels: 3, "
              "regression_ranges: [[0, 8], [8, 12], [12, 10000]], pre_nms_topk: 100, max_segments: 100, dropout: 0.1}")


def tiny_argv(root, output_dir, **overrides):
    """The demo recipe shrunk: 4 + 2 videos of 8-10 s at 10 fps, 32 px, 32-frame windows, 2-block 32-d VideoMAE."""
    keys = {
        "output_dir": str(output_dir),
        "data_root": str(root / "corpus"),
        "synthetic_num_train_videos": 4, "synthetic_num_test_videos": 2, "synthetic_height": 32,
        "synthetic_width": 64, "synthetic_fps": 10, "synthetic_min_duration": 8, "synthetic_max_duration": 10,
        "sample_stride": 2, "window_size": 32, "eval_window_stride": 16, "resize_short_side": 36, "crop_size": 32,
        "eval_resize": 32, "flip_prob": 0.5,
        "backbone_name_or_path": str(root / "backbone"),
        "backbone_config_overrides": "{hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
                                     "intermediate_size: 64, patch_size: 16, tubelet_size: 2, num_frames: 4, "
                                     "image_size: 32}",
        "model_config_overrides": TINY_MODEL,
        "num_train_epochs": 2, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
        "logging_steps": 1, "eval_start_epoch": 1, "eval_every_epochs": 1, "save_every_epochs": 1,
        "dataloader_num_workers": 0, "report_to": "none", "plot_eval_videos": 1,
    }
    keys.update(overrides)
    argv = [DEMO]
    for key, value in keys.items():
        argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tad_run")


def tiny_backbone(root):
    """The random VideoMAE of `tiny_argv` at root / "backbone", written as a run writes it (whichever test is first:
    under pytest -n the tests of this module run in several processes, each with its own `root`)."""
    from transformers import VideoMAEConfig, VideoMAEModel

    argv = tiny_argv(root, root)
    overrides = yaml.safe_load(dict(zip(argv[1::2], argv[2::2]))["--backbone_config_overrides"])
    path = str(root / "backbone")
    ensure_random_checkpoint(path, overrides, lambda tmp: VideoMAEModel(VideoMAEConfig(**overrides)).save_pretrained(tmp),
                             "VideoMAE")
    return root / "backbone"


def test_whole_run_writes_everything(root):
    out = root / "run"
    prepared = run_module.prepare(tiny_argv(root, out))
    model = prepared.trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("videomae.") for n in frozen)
    assert all(not n.startswith("videomae.") for n, p in model.named_parameters() if p.requires_grad)
    results = run_module.execute(prepared)

    # every trainable tensor changed, every frozen one did not
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == (name not in frozen), name

    for key in ("eval_mAP@0.3", "eval_mAP@0.7", "eval_average_mAP", "train_loss"):
        assert key in results
    for name in ("predictions.json", "training_curves.png", "eval_map_table.txt", "recipe_resolved.yaml",
                 "run_info.json", "README.md", "model.safetensors", "ema/model.safetensors", "train.log"):
        assert (out / name).is_file(), name
    assert len(list((out / "timelines").glob("*.png"))) == 1
    predictions = json.loads((out / "predictions.json").read_text())
    assert set(predictions["results"]) == {"video_test_0000001", "video_test_0000002"}
    entry = predictions["results"]["video_test_0000001"][0]
    assert set(entry) == {"segment", "label", "score"}
    resolved = yaml.safe_load((out / "recipe_resolved.yaml").read_text())
    assert resolved["task"] == "tad" and resolved["window_size"] == 32
    info = json.loads((out / "run_info.json").read_text())
    assert info["hf_vtrain_version"] and "git_commit" in info
    # the log holds the named loss parts and per-group learning rates
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [e for e in state["log_history"] if "cls_loss" in e]
    assert logged and all("reg_loss" in e and "lr/adapters" in e for e in logged)
    card = (out / "README.md").read_text()
    assert "eval_average_mAP" in card and "python -m hf_vtrain.run" in card
    assert info["command"].startswith("python -m hf_vtrain.run ")


def _state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


# LoRA (all six Linear layers of each tiny VideoMAE block) trained by the recipe: its group before the frozen backbone.
LORA_GROUPS = ("[{name: lora, patterns: ['lora_'], lr: 1.0e-2}, {name: backbone, patterns: ['^videomae\\.'], lr: 0}, "
               "{name: adapters, patterns: ['^adapters\\.'], lr: 1.0e-2}]")
LORA = dict(lora_r=4, lora_alpha=8, lora_dropout=0.1, lora_target_modules="[all-linear]", param_groups=LORA_GROUPS)


@pytest.mark.parametrize("extra", [{}, LORA], ids=["plain", "lora"])
def test_resume_equals_uninterrupted(root, extra):
    """Weights (incl. VideoMAE q/v biases and LoRA), EMA, optimizer and scheduler of a resumed run equal an
    uninterrupted one."""
    tag = "lora" if extra else "plain"
    common = dict(num_train_epochs=3, save_every_epochs=0, save_strategy="steps", save_steps=3,
                  eval_every_epochs=0, eval_strategy="no", ema_decay=0.9, flip_prob=0.5, **extra)
    full = run_module.prepare(tiny_argv(root, root / f"full_{tag}", **common))
    full.trainer.train()

    part = run_module.prepare(tiny_argv(root, root / f"part_{tag}", **common))
    part.trainer.add_callback(StopAt(3))
    part.trainer.train()
    assert part.trainer.state.global_step == 3 and (root / f"part_{tag}" / "checkpoint-3").is_dir()

    resumed = run_module.prepare(tiny_argv(root, root / f"part_{tag}", **common))
    assert resumed.resume == str(root / f"part_{tag}" / "checkpoint-3")  # found by last-checkpoint detection
    if extra:
        assert any(".lora_B." in k for k in _state(resumed.trainer))
        assert any(".lora_" in k for k in resumed.trainer.ema.shadow)
    # the fresh model's attention biases differ from the checkpoint's before resuming: the load must restore them
    resumed.trainer.train(resume_from_checkpoint=resumed.resume)
    assert resumed.trainer.state.global_step == full.trainer.state.global_step

    a, b = _state(full.trainer), _state(resumed.trainer)
    assert any("query.bias" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key in full.trainer.ema.shadow:
        assert torch.equal(full.trainer.ema.shadow[key], resumed.trainer.ema.shadow[key]), key
    sa, sb = full.trainer.optimizer.state_dict(), resumed.trainer.optimizer.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        for name, value in sa["state"][k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][k][name])), (k, name)
    assert full.trainer.lr_scheduler.state_dict() == resumed.trainer.lr_scheduler.state_dict()


def test_stock_resume_would_lose_attention_biases(root):
    """The upstream bug this toolkit works around: a raw load_state_dict of a VideoMAE file misses q/v biases."""
    from safetensors.torch import load_file
    from transformers import VideoMAEModel

    ckpt = tiny_backbone(root)
    model = VideoMAEModel.from_pretrained(ckpt)
    result = model.load_state_dict(load_file(ckpt / "model.safetensors"), strict=False)
    assert any("q_bias" in k for k in result.unexpected_keys)


def test_bad_corpus_stops_before_training(root, tmp_path):
    import shutil

    src = root / "corpus"
    if not src.exists():
        run_module.prepare(tiny_argv(root, tmp_path / "warm"))
    bad = tmp_path / "corpus"
    shutil.copytree(src, bad)
    video = sorted((bad / "raw_data" / "video").glob("*.mp4"))[0]
    video.unlink()
    anno = bad / "annotations" / "thumos_14_anno.json"
    data = json.loads(anno.read_text())
    vid = sorted(data["database"])[-1]
    data["database"][vid]["annotations"].append({"label": "NotAClass", "segment": [1.0, 2.0]})
    anno.write_text(json.dumps(data))
    argv = tiny_argv(root, tmp_path / "out", data_root=str(bad), synthetic="false")
    with pytest.raises(CorpusError) as err:
        run_module.prepare(argv)
    message = str(err.value)
    assert video.stem in message and "NotAClass" in message and vid in message
    assert not (tmp_path / "out" / "checkpoint-1").exists()


def test_cli_errors_are_one_clear_line(root, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: tad\nlearning_rat: 0.1\n")
    from tests.distributed import launch_env, run_python

    proc = run_python([sys.executable, os.path.join(REPO, "hf_vtrain", "run.py"), str(bad)], launch_env(),
                      cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown key 'learning_rat'; did you mean 'learning_rate'" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(RecipeError, match="expects an integer"):
        run_module.main(tiny_argv(root, tmp_path / "o", window_size="big"))


@pytest.mark.parametrize("key, value, message", [
    ("model_config_overrides", "{detector_dims: 64}", "'detector_dims' is not a AdaTADConfig field; did you mean detector_dim"),
    ("model_config_overrides", "{chunk_size:4}", "'chunk_size:4' is not a AdaTADConfig field (YAML needs a space"),
    ("backbone_config_overrides", "{hiden_size: 32}", "'hiden_size' is not a VideoMAEConfig field; did you mean hidden_size"),
    ("model_config_overrides", TINY_MODEL.replace("[[0, 8], [8, 12], [12, 10000]]", "[[0, 8], [8, 10000]]"),
     "regression_ranges has 2 entries for 3 levels"),
])
def test_bad_config_overrides_stop_with_one_message(root, tmp_path, key, value, message):
    """A PretrainedConfig keeps any keyword, so an unknown override key would be ignored silently; and a config's own
    validation used to surface as a huggingface_hub traceback. Both are one RecipeError naming the recipe entry."""
    argv = tiny_argv(root, tmp_path / "o")
    argv[argv.index(f"--{key}") + 1] = value
    with pytest.raises(RecipeError) as err:
        run_module.prepare(argv)
    assert message in str(err.value) and key.split("_")[0] in str(err.value)
    assert not (tmp_path / "o" / "checkpoint-1").exists()


def test_persistent_workers_see_each_epoch(root, tmp_path):
    """The epoch of the seeded windows/augmentation lives in shared memory, so persistent DataLoader workers (no
    ~6 s restart per epoch on the H200 recipe run) draw each epoch's samples: the same losses step by step as workers
    started again every epoch. With a plain attribute they kept epoch 0's windows, and the losses differed. Dropout
    is off: starting workers draws their base seed from the main process's RNG, which dropout also uses."""
    no_dropout = TINY_MODEL.replace("dropout: 0.1", "dropout: 0.0, drop_path_rate: 0.0, detector_drop_path_rate: 0.0")
    losses = {}
    for persistent in (False, True):
        out = tmp_path / f"persistent_{persistent}"
        prepared = run_module.prepare(tiny_argv(
            root, out, num_train_epochs=3, eval_start_epoch=100, save_every_epochs=0, save_strategy="no",
            dataloader_num_workers=2, dataloader_persistent_workers=str(persistent).lower(), plot_eval_videos=0,
            model_config_overrides=no_dropout))
        run_module.execute(prepared)
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        losses[persistent] = [e["loss"] for e in history if "loss" in e]
        # the run stopped its persistent workers itself (left to the garbage collector, the next run in this
        # process stalled ~20 s joining them)
        loaders = list(prepared.trainer.accelerator._dataloaders) + list(
            getattr(prepared.trainer, "_eval_dataloaders", {}).values())
        assert loaders and all(getattr(loader, "_iterator", None) is None for loader in loaders)
    assert len(losses[True]) == 6 and losses[True] == losses[False]


def test_validate_data_only(root, tmp_path):
    """A synthetic recipe before any run: validation writes the corpus the run would train on, as the run does, then
    checks it (it reported "not found" on a fresh clone)."""
    argv = tiny_argv(root, tmp_path / "v", data_root=tmp_path / "corpus") + ["--validate_data_only", "true"]
    result = run_module.main(argv)
    assert result == {"ok": True}
    assert (tmp_path / "corpus" / "annotations" / "thumos_14_anno.json").is_file()
    assert not (tmp_path / "v").exists()  # nothing trained, nothing written


# ------------------------------------------------------------------------------------------------------------------
# LoRA run: what is trained, the exports, and post-processing from the saved raw detections


@pytest.fixture(scope="module")
def lora_run(root):
    out = root / "lora_run"
    prepared = run_module.prepare(tiny_argv(
        root, out, num_train_epochs=6, learning_rate=1e-2, eval_start_epoch=6, save_every_epochs=0,
        save_strategy="no", ema_decay=0.9, **LORA))
    model = prepared.trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    results = run_module.execute(prepared)
    return SimpleNamespace(out=out, prepared=prepared, before=before, results=results)


def test_lora_run_trains_lora_and_detector_only(lora_run):
    from hf_vtrain.models.adatad.lora_adatad import lora_formula

    model = lora_run.prepared.trainer.model
    for name, param in model.named_parameters():
        backbone_base = name.startswith("videomae.") and ".lora_" not in name
        assert param.requires_grad == (not backbone_base), name
        assert torch.equal(lora_run.before[name], param.detach()) == backbone_base, name
    groups = {e["name"]: e for e in lora_run.prepared.trainer.group_table}
    counted = sum(p.numel() for _, p in groups["lora"]["params"] if p.requires_grad)
    # tiny VideoMAE: hidden 32, MLP 64, 2 blocks, r 4, all six Linear: 2 x 4 x (4 x 64 + 2 x 96) = 3,584
    assert counted == lora_formula(model.config.backbone_config, ["all-linear"], 4)["total"] == 3584
    log = (lora_run.out / "train.log").read_text()
    assert "3,584 parameters; formula r*(in+out) summed: 3,584" in log and "trainable        3,584" in log
    assert yaml.safe_load((lora_run.out / "config.json").read_text())["lora_r"] == 4


def _eval_batch(prepared):
    from hf_vtrain.data.thumos14 import collate_tad

    dataset = prepared.task.eval_dataset
    batch = collate_tad([dataset[i] for i in range(min(3, len(dataset)))])
    return {k: batch[k] for k in ("pixel_values", "pixel_mask")}


def test_lora_exports_match_the_evaluated_model(lora_run):
    """merged_model/ (merge_and_unload) and lora_adapter/ (peft) reproduce the EMA LoRA model the run evaluated."""
    from hf_vtrain.models.adatad import AdaTADForActionDetection

    out = lora_run.out
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in (out / "lora_adapter").iterdir()}
    adapter_config = json.loads((out / "lora_adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8 and adapter_config["peft_type"] == "LORA"
    evaluated = AdaTADForActionDetection.from_pretrained(out / "ema").eval()  # LoRA, EMA weights
    merged = AdaTADForActionDetection.from_pretrained(out / "merged_model").eval()
    assert merged.config.lora_r == 0
    reloaded = AdaTADForActionDetection.from_lora_adapter(str(out / "lora_adapter"))
    batch = _eval_batch(lora_run.prepared)
    with torch.no_grad():
        expected = evaluated(**batch).class_logits
        merged_diff = (merged(**batch).class_logits - expected).abs().max().item()
        adapter_diff = (reloaded(**batch).class_logits - expected).abs().max().item()
    assert merged_diff < 1e-5 and adapter_diff < 1e-5
    # LoRA really moved the backbone: the merged VideoMAE weights differ from the frozen ones
    lora_sd, merged_sd = evaluated.state_dict(), merged.state_dict()
    key = "videomae.encoder.layer.0.attention.attention.query.weight"
    assert not torch.equal(merged_sd[key], lora_sd[key.replace(".weight", ".base_layer.weight")])


def test_retuning_and_self_ensemble_reproduce_the_evaluation_exactly(lora_run, capsys):
    import importlib.util

    def script(name):
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    out, results = lora_run.out, lora_run.results
    raw = out / "raw_detections.npz"
    assert raw.is_file() and list(out.glob("raw_detections_step*.npz"))
    assert results["eval_average_mAP"] > 0  # a non-trivial number to reproduce
    metric_keys = [k for k in results if k.startswith("eval_mAP@") or k == "eval_average_mAP"]
    for ground_truth in (None, str(out / "ground_truth.json")):
        row = script("tune_postprocess").tune(str(raw), ground_truth, [{}])[0]
        for key in metric_keys:
            assert row[key.removeprefix("eval_")] == results[key], (ground_truth, key)
    ensemble = script("ensemble_detections").main([str(raw), str(raw), "--out", str(out / "self_ensemble.json")])
    for key in metric_keys:
        assert ensemble[key.removeprefix("eval_")] == results[key], key
    assert json.loads((out / "self_ensemble.json").read_text()) == json.loads((out / "predictions.json").read_text())


def test_drop_path_rate_reachable_from_recipe(root):
    overrides = TINY_MODEL[:-1] + ", drop_path_rate: 0.3}"
    prepared = run_module.prepare(tiny_argv(root, root / "drop_path", model_config_overrides=overrides))
    model = prepared.trainer.model
    assert model.config.drop_path_rate == 0.3 and model.drop_path_rates == [0.0, 0.3]


def test_evaluation_refuses_dropped_or_doubled_windows(root, tmp_path):
    from transformers import EvalPrediction

    trainer = run_module.prepare(tiny_argv(root, tmp_path / "o")).trainer
    windows = trainer._eval_windows
    meta = np.array(windows, dtype=np.int64)
    detections = np.full((len(windows), 4, 4), -1.0, dtype=np.float32)
    doubled = np.concatenate([meta[:1], meta[1:]])
    doubled[-1] = doubled[0]  # one window counted twice, another dropped
    with pytest.raises(RuntimeError, match="dropped or counted twice"):
        trainer._compute_tad_metrics(EvalPrediction(predictions=detections, label_ids=doubled))
    with pytest.raises(RuntimeError, match="dropped or counted twice"):
        trainer._compute_tad_metrics(EvalPrediction(predictions=detections[1:], label_ids=meta[1:]))


def _cli(argv, capsys):
    """run.py's command line (`cli()`, what `python -m hf_vtrain.run` runs) in this process: its status, stdout and
    stderr. test_cli_errors_are_one_clear_line runs the real command in a process of its own."""
    saved, sys.argv = sys.argv, ["hf_vtrain/run.py", *map(str, argv)]
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_module.cli()
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return SimpleNamespace(returncode=exit_info.value.code, stdout=out.out, stderr=out.err)


def _one_error_line(proc, status=2):
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_resume_values_are_checked_before_anything_loads(root, tmp_path, capsys):
    # a path that does not exist: one message, status 2 (was a FileNotFoundError traceback, status 1)
    line = _one_error_line(_cli(tiny_argv(root, tmp_path / "o", resume_from_checkpoint=tmp_path / "nope" /
                                          "checkpoint-5"), capsys))
    assert "resume_from_checkpoint" in line and "does not exist" in line
    # a finished run's top folder: trainer_state.json and weights, no optimizer state -> refused, naming the newest
    # checkpoint inside (a "resume" from it trained nothing and wrote train_loss 0.0 over the run's results)
    run = tmp_path / "finished"
    for folder in (run, run / "checkpoint-4", run / "checkpoint-12"):
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text('{"global_step": 4}')  # the least a whole state holds
    for folder in (run / "checkpoint-4", run / "checkpoint-12"):
        (folder / "optimizer.pt").write_bytes(b"")
    with pytest.raises(RecipeError, match=r"is a run folder, not a checkpoint .* newest checkpoint is .*checkpoint-12"):
        run_module.prepare(tiny_argv(root, tmp_path / "o", resume_from_checkpoint=run))
    assert run_module.check_resume_folder(str(run / "checkpoint-12")) == str(run / "checkpoint-12")
    with pytest.raises(RecipeError, match="a file"):
        run_module.check_resume_folder(str(run / "trainer_state.json"))
    with pytest.raises(RecipeError, match="no complete checkpoint"):
        run_module.prepare(tiny_argv(root, tmp_path / "empty", resume_from_checkpoint="latest"))
    empty = tmp_path / "weights_only"
    empty.mkdir()
    with pytest.raises(RecipeError, match="not a checkpoint .*model_name_or_path"):
        run_module.check_resume_folder(str(empty))


def test_a_checkpoint_with_other_parameter_groups_is_refused_in_one_line(root, tmp_path, capsys):
    """Restarted in its output_dir with another param_groups (or after the decay rules changed), a run resumes a
    checkpoint whose optimizer state has other groups: one message naming the checkpoint and the groups, status 2,
    nothing trained (was torch's ValueError traceback, status 1)."""
    out = tmp_path / "run"
    argv = tiny_argv(root, out, num_train_epochs=1, eval_start_epoch=2, plot_eval_videos=0)
    run_module.execute(run_module.prepare(argv))
    checkpoints = sorted(out.glob("checkpoint-*"))
    weights = (out / "model.safetensors").read_bytes()
    groups = ("[{name: backbone, patterns: ['^videomae\\.'], lr: 0}, {name: adapters, patterns: ['^adapters\\.'], "
              "lr: 2.0e-3}, {name: head, patterns: ['^head\\.'], lr: 1.0e-3}]")
    line = _one_error_line(_cli(argv + ["--param_groups", groups, "--num_train_epochs", "2"], capsys))
    assert str(checkpoints[-1]) in line and "optimizer state does not fit this run" in line
    assert "head (" in line and "new output_dir" in line
    assert sorted(out.glob("checkpoint-*")) == checkpoints and (out / "model.safetensors").read_bytes() == weights


def test_evaluate_only_reproduces_the_run_and_its_checkpoints(root, tmp_path, capsys):
    """do_train false: the run folder's EMA weights give the run's final metrics and predictions exactly; a checkpoint
    folder gives the evaluation logged at its step; raw weights are a key away; bad sources are one message."""
    out = tmp_path / "run"
    argv = tiny_argv(root, out, num_train_epochs=2, eval_start_epoch=1, plot_eval_videos=1, ema_decay=0.9)
    run_module.execute(run_module.prepare(argv + ["--hub_token", "hf_SECRET_123"]))
    final = json.loads((out / "eval_results.json").read_text())
    for name in ("recipe_resolved.yaml", "run_info.json", "README.md"):  # the run's files go to the store
        assert "hf_SECRET_123" not in (out / name).read_text(), name

    metrics = run_module.execute(run_module.prepare(argv + ["--do_train", "false", "--model_name_or_path", str(out)]))
    folder = out / "eval-run-ema"
    evaluated = json.loads((folder / "eval_results.json").read_text())
    for key in [k for k in final if "mAP" in k] + ["eval_loss"]:
        assert evaluated[key] == final[key] == metrics[key], key
    assert (folder / "predictions.json").read_bytes() == (out / "predictions.json").read_bytes()
    assert (folder / "eval_map_table.txt").is_file() and list((folder / "timelines").glob("*.png"))
    assert not list(folder.glob("checkpoint-*")) and not (folder / "model.safetensors").exists()

    checkpoint = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[0]
    step = int(checkpoint.name.split("-")[1])
    logged = [e for e in json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
              if e.get("step") == step and "eval_average_mAP" in e][0]
    metrics = run_module.execute(run_module.prepare(argv + ["--do_train", "false", "--model_name_or_path",
                                                            str(checkpoint)]))
    assert metrics["eval_average_mAP"] == logged["eval_average_mAP"] and metrics["eval_loss"] == logged["eval_loss"]

    raw = run_module.execute(run_module.prepare(argv + ["--do_train", "false", "--model_name_or_path", str(out),
                                                        "--eval_weights", "raw", "--report_to", "tensorboard"]))
    assert list((out / "eval-run-raw" / "runs").glob("*/events.out.tfevents.*"))  # not ./runs/ (transformers)
    assert (out / "eval-run-raw" / "eval_results.json").is_file() and raw["eval_loss"] != final["eval_loss"]

    # the run's recipe_resolved.yaml is a recipe: the model card's evaluate command
    again = run_module.execute(run_module.prepare([str(out / "recipe_resolved.yaml"), "--do_train", "false",
                                                   "--model_name_or_path", str(out)]))
    assert again["eval_average_mAP"] == final["eval_average_mAP"]
    # no recipe at all: a checkpoint's run folder's recipe_resolved.yaml, the evaluation in that run folder
    (out / f"eval-{checkpoint.name}-ema").rename(tmp_path / "first")
    again = run_module.main(["--do_train", "false", "--model_name_or_path", str(checkpoint)])
    assert again["eval_average_mAP"] == logged["eval_average_mAP"]
    assert (out / f"eval-{checkpoint.name}-ema" / "predictions.json").read_bytes() == \
        (tmp_path / "first" / "predictions.json").read_bytes()

    line = _one_error_line(_cli(argv + ["--do_train", "false"], capsys))
    assert "set model_name_or_path" in line
    line = _one_error_line(_cli(argv + ["--do_train", "false", "--model_name_or_path", tmp_path / "nope"], capsys))
    assert "does not exist" in line
    line = _one_error_line(_cli(argv + ["--do_train", "false", "--model_name_or_path", tmp_path], capsys))
    assert "holds no model" in line


def test_a_finished_run_started_again_keeps_its_results(root, tmp_path):
    """The same command after a run has finished resumes from its last checkpoint, at the last step: nothing is
    trained, and train_results.json keeps the figures of the run that trained (not train_loss 0.0)."""
    out = tmp_path / "run"
    argv = tiny_argv(root, out, num_train_epochs=1, eval_start_epoch=1, plot_eval_videos=0)
    run_module.execute(run_module.prepare(argv))
    before = json.loads((out / "train_results.json").read_text())
    weights = (out / "model.safetensors").read_bytes()
    assert before["train_loss"] > 0
    again = run_module.prepare(argv)
    assert again.resume == str(out / "checkpoint-2")
    results = run_module.execute(again)
    assert again.trainer.steps_trained == 0 and "train_loss" not in results
    assert json.loads((out / "train_results.json").read_text()) == before
    assert (out / "model.safetensors").read_bytes() == weights


def test_status_codes_of_the_command_line(root, tmp_path, capsys, monkeypatch):
    run_module.prepare(tiny_argv(root, tmp_path / "warm"))  # the corpus and backbone exist
    # --validate_data_only with problems: 2, the same status as a run that finds them (was 1)
    proc = _cli(tiny_argv(root, tmp_path / "v", data_root=str(tmp_path / "no_corpus"), synthetic="false")
                + ["--validate_data_only", "true"], capsys)
    assert proc.returncode == 2 and "not found" in proc.stdout, proc.stdout + proc.stderr
    # bf16 on a machine without a GPU: one line naming the keys that change it
    import torch

    if not torch.cuda.is_available():
        line = _one_error_line(_cli(tiny_argv(root, tmp_path / "b", use_cpu="false", bf16="true"), capsys))
        assert "bf16: true needs a GPU" in line and "--bf16 false" in line and "--use_cpu true" in line
    # a Hub id with HF_HUB_OFFLINE=1: one line at once, naming the key and how to point it at a local copy
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    proc = _cli(tiny_argv(root, tmp_path / "h", backbone_name_or_path="MCG-NJU/videomae-small-finetuned-kinetics",
                          create_random_backbone="false"), capsys)
    line = _one_error_line(proc)
    assert "backbone_name_or_path: MCG-NJU/videomae-small-finetuned-kinetics is not a local folder" in line
    assert "HF_HUB_OFFLINE" in line and "hf download" in line
    # a local folder that is not there
    line = _one_error_line(_cli(tiny_argv(root, tmp_path / "m", backbone_name_or_path=str(tmp_path / "nowhere"),
                                          create_random_backbone="false"), capsys))
    assert "backbone_name_or_path: folder" in line and "not found" in line
    # an unknown task
    line = _one_error_line(_cli(tiny_argv(root, tmp_path / "t", task="segmentation"), capsys))
    assert "unknown task 'segmentation'" in line


def test_help_lists_tasks_and_every_key_of_a_task(capsys):
    proc = _cli(["--help"], capsys)
    assert proc.returncode == 0 and "tad " in proc.stdout and "vad " in proc.stdout and not proc.stderr.strip()
    for argv in ([DEMO, "--help"], ["--task", "tad", "--help"]):
        proc = _cli(argv, capsys)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout
        for group in ("TADModelArguments", "TADDataArguments", "VTrainingArguments"):
            assert f"{group} (" in text, group
        from hf_vtrain.tasks import get_task
        import dataclasses

        spec = get_task("tad")
        for cls in (spec.model_args, spec.data_args, spec.training_args):
            for f in dataclasses.fields(cls):
                if f.init:
                    assert f"  --{f.name} (" in text, f.name
        assert "--window_size (int, default 768)" in text and "Sampled frames per window" in text
