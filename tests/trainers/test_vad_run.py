"""Whole FG-CLIP video (vad) runs through run.py on a tiny synthetic UCF-Crime corpus and a tiny random CLIP: outputs,
learning rates per tower, freezing, exact resume, checkpoint rotation by step, the leakage check, the debug launcher."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from hf_vtrain import run as run_module
from hf_vtrain.data.common import CorpusError
from hf_vtrain.parser import RecipeError
from hf_vtrain.tasks.common import ensure_random_checkpoint
from hf_vtrain.tasks.vad import _build_random_clip
from tests.callbacks import StopAt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "recipes", "fgclip_ucf_demo.yaml")
FULL = os.path.join(REPO, "recipes", "fgclip_ucf.yaml")

TINY_CLIP = {"projection_dim": 16,
             "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 2},
             "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 2, "image_size": 32, "patch_size": 8}}
TINY_MODEL = "{temporal_num_heads: 2, max_frames: 8, score_window_frames: 8}"
CORPUS = {"synthetic_num_train_normal": 2, "synthetic_num_train_anomalous": 2, "synthetic_num_test_normal": 2,
          "synthetic_num_test_anomalous": 2, "synthetic_height": 32, "synthetic_width": 64, "synthetic_fps": 10,
          "synthetic_min_duration": 4, "synthetic_max_duration": 6, "synthetic_num_region_negatives": 2}


def tiny_argv(root, output_dir, **overrides):
    """The demo recipe shrunk: 4 + 4 videos of 4-6 s at 10 fps, 32 px, 4-frame clips, 2-layer 32-d CLIP."""
    keys = {
        "output_dir": str(output_dir),
        "data_root": str(root / "corpus"),
        **CORPUS,
        "num_frames": 4, "image_size": 32,
        "clip_name_or_path": str(root / "clip"),
        "clip_config_overrides": json.dumps(TINY_CLIP),
        "model_config_overrides": TINY_MODEL,
        "num_train_epochs": 2, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
        "warmup_epochs": 0, "logging_steps": 1, "eval_strategy": "epoch", "eval_start_epoch": 1,
        "eval_every_epochs": 1, "save_strategy": "no", "dataloader_num_workers": 0, "report_to": "none",
        "plot_eval_videos": 3,
    }
    keys.update(overrides)
    argv = [DEMO]
    for key, value in keys.items():
        argv += [f"--{key}", str(value)]
    return argv


def recipe_groups(path):
    with open(path) as handle:
        recipe = yaml.safe_load(handle)
    return recipe["param_groups"], recipe["learning_rate"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("vad_run")


def test_whole_run_writes_everything(root):
    out = root / "run"
    groups, _ = recipe_groups(DEMO)
    frozen_group = {"name": "frozen", "patterns": [r"^clip\.vision_model\.embeddings\.patch_embedding"], "lr": 0}
    prepared = run_module.prepare(tiny_argv(root, out, param_groups=json.dumps([frozen_group, *groups])))
    assert (root / "clip" / "tokenizer.json").is_file()  # create_random_clip wrote a checkpoint and the tokenizer
    model = prepared.trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"clip.vision_model.embeddings.patch_embedding.weight"}
    results = run_module.execute(prepared)

    # every trainable tensor changed, every frozen one did not
    unchanged = [n for n, p in model.named_parameters() if n not in frozen and torch.equal(before[n], p.detach())]
    assert not unchanged
    for name in frozen:
        assert torch.equal(before[name], dict(model.named_parameters())[name].detach())

    for key in ("eval_auc", "eval_ap", "eval_auc_anomalous_only", "train_loss"):
        assert key in results and np.isfinite(results[key]), key
    assert 0.0 <= results["eval_auc"] <= 100.0
    for name in ("anomaly_scores.json", "eval_auc_table.txt", "training_curves.png", "recipe_resolved.yaml",
                 "run_info.json", "README.md", "model.safetensors", "tokenizer.json", "train.log"):
        assert (out / name).is_file(), name
    assert len(list(out.glob("scores_step*.json"))) == 2  # one per evaluation during training
    scores = json.loads((out / "anomaly_scores.json").read_text())
    corpus = prepared.task.corpus
    assert list(scores["scores"]) == [v["key"] for v in corpus.test_videos]  # test-list order
    for video in corpus.test_videos:
        snippet_scores = scores["scores"][video["key"]]
        assert len(snippet_scores) == video["num_frames"] // 16
        assert all(0.0 <= s <= 1.0 for s in snippet_scores)
        assert scores["num_frames"][video["key"]] == video["num_frames"]
    # the scores file is the metric CLI's input and gives the logged numbers again
    from hf_vtrain.metrics.vad import evaluate_frame_auc

    again = evaluate_frame_auc(corpus.annotations, list(scores["scores"]), str(out / "anomaly_scores.json"))
    assert again.as_dict()["auc"] == pytest.approx(results["eval_auc"])
    plots = sorted(p.stem for p in (out / "score_plots").glob("*.png"))
    assert len(plots) == 3
    kinds = {bool(corpus.annotations[key]) for key in plots}
    assert kinds == {True, False}  # anomalous and normal videos
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [e for e in state["log_history"] if "global_loss" in e]
    assert logged and all("region_loss" in e and "hard_negative_loss" in e and "lr/text" in e for e in logged)
    assert sum("eval_auc" in e for e in state["log_history"]) == 2  # epochs 1 and 2
    card = (out / "README.md").read_text()
    assert "eval_auc" in card and "python -m hf_vtrain.run" in card

    # the saved run loads back as a model (with its tokenizer) and scores the same
    reloaded = run_module.prepare(tiny_argv(root, root / "reloaded", model_name_or_path=str(out),
                                            clip_name_or_path="unused"))
    metrics = reloaded.trainer.evaluate()
    assert metrics["eval_auc"] == pytest.approx(results["eval_auc"], abs=1e-6)


def test_optimizer_groups_carry_the_full_recipes_tower_lrs(root):
    """The full recipe's param_groups on the tiny model: every text tensor at 5e-6, every vision tensor at 1e-5."""
    groups, lr = recipe_groups(FULL)
    prepared = run_module.prepare(tiny_argv(root, root / "groups", param_groups=json.dumps(groups),
                                            learning_rate=lr))
    trainer = prepared.trainer
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        base = group["name"].split("/")[0]
        expected = {"text": 5.0e-6, "vision": 1.0e-5, "default": 1.0e-5}[base]
        assert group["lr"] == expected, group["name"]
        for param in group["params"]:
            name = names[id(param)]
            seen.add(name)
            is_text = name.startswith(("clip.text_model.", "clip.text_projection", "long_text_projection"))
            is_vision = name.startswith(("clip.vision_model.", "clip.visual_projection"))
            assert base == ("text" if is_text else "vision" if is_vision else "default"), name
    assert seen == set(names.values())  # nothing left out
    assert {g["name"].split("/")[0] for g in optimizer.param_groups} == {"text", "vision", "default"}


def _checkpoints(path):
    return sorted(int(p.name.split("-")[1]) for p in path.glob("checkpoint-*"))


def test_resume_equals_uninterrupted_and_rotation_keeps_newest_steps(root):
    """Stopped at step 6 (mid-epoch) and resumed from its checkpoint, a run ends identical to an uninterrupted one
    (weights, optimizer, scheduler). With save_total_limit 3 the newest three by step are kept: 6, 9, 12 (name order
    would keep 3, 6, 9)."""
    common = dict(max_steps=12, num_train_epochs=100, save_strategy="steps", save_steps=3, save_total_limit=3,
                  eval_strategy="no", eval_every_epochs=0, lr_scheduler_type="cosine", warmup_epochs=0.5,
                  flip_prob=0.5, per_device_train_batch_size=1)
    full = run_module.prepare(tiny_argv(root, root / "full", **common))
    assert len(full.trainer.get_train_dataloader()) not in (1, 2, 3, 6)  # step 6 falls inside an epoch
    full.trainer.train()
    assert _checkpoints(root / "full") == [6, 9, 12]

    part = run_module.prepare(tiny_argv(root, root / "part", **common))
    part.trainer.add_callback(StopAt(6))
    part.trainer.train()
    assert part.trainer.state.global_step == 6 and _checkpoints(root / "part") == [3, 6]

    resumed = run_module.prepare(tiny_argv(root, root / "part", **common))
    assert resumed.resume == str(root / "part" / "checkpoint-6")  # found by last-checkpoint detection
    resumed.trainer.train(resume_from_checkpoint=resumed.resume)
    assert resumed.trainer.state.global_step == full.trainer.state.global_step == 12
    assert _checkpoints(root / "part") == [6, 9, 12]

    a = full.trainer.model.state_dict()
    b = resumed.trainer.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa, sb = full.trainer.optimizer.state_dict(), resumed.trainer.optimizer.state_dict()
    assert sa["state"].keys() == sb["state"].keys() and sa["state"]
    for k in sa["state"]:
        for name, value in sa["state"][k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][k][name])), (k, name)
    assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]]
    assert full.trainer.lr_scheduler.state_dict() == resumed.trainer.lr_scheduler.state_dict()


@pytest.mark.parametrize("key, value, message", [
    ("clip_config_overrides", json.dumps({**TINY_CLIP, "vision_config": {**TINY_CLIP["vision_config"], "patch": 8}}),
     "clip_config_overrides.vision_config: 'patch' is not a CLIPVisionConfig field; did you mean patch_size"),
    ("model_config_overrides", "{temporal_num_head: 2}",
     "model_config_overrides: 'temporal_num_head' is not a FGCLIPVideoConfig field; did you mean temporal_num_heads"),
])
def test_unknown_config_override_keys_are_refused(root, tmp_path, key, value, message):
    with pytest.raises(RecipeError) as err:
        run_module.prepare(tiny_argv(root, tmp_path / "o", clip_name_or_path=str(tmp_path / "clip"), **{key: value}))
    assert message in str(err.value)
    assert not (tmp_path / "clip").exists()  # refused before the random CLIP is written


def test_leakage_check_names_the_test_video(root, tmp_path):
    src = root / "corpus"
    if not (src / "synthetic_params.json").exists():
        run_module.prepare(tiny_argv(root, tmp_path / "warm"))
    bad = tmp_path / "corpus"
    shutil.copytree(src, bad)
    test_video = (bad / "Anomaly_Test.txt").read_text().split()[0]
    records = json.loads((bad / "ucf_fgclip_train.json").read_text())
    records.append({**records[0], "video": test_video, "timestamps": None})
    (bad / "ucf_fgclip_train.json").write_text(json.dumps(records))
    argv = tiny_argv(root, tmp_path / "out", data_root=str(bad), synthetic="false")
    with pytest.raises(CorpusError) as err:
        run_module.prepare(argv)
    message = str(err.value)
    assert test_video in message and "test list" in message and f"entry {len(records) - 1}" in message
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_debug_launcher_runs_end_to_end_on_the_synthetic_corpus(root, tmp_path):
    """`bash scripts/train_ucf_debug.sh` (accelerate launch, one process) pointed at the synthetic corpus and a tiny
    CLIP by overrides: trains with activation checkpointing, rotates checkpoints, evaluates and writes the plots."""
    clip = tmp_path / "clip"
    ensure_random_checkpoint(str(clip), TINY_CLIP, _build_random_clip(TINY_CLIP), "CLIP")
    out = tmp_path / "debug"
    overrides = {"data_root": str(root / "corpus"), "synthetic": "true", **CORPUS, "clip_name_or_path": str(clip),
                 "image_size": 32, "use_cpu": "true", "bf16": "false", "output_dir": str(out), "report_to": "none",
                 "dataloader_num_workers": 0, "save_steps": 1, "log_level": "info",
                 "model_config_overrides": TINY_MODEL.replace(
                     "max_frames: 8", "max_frames: 64")}
    argv = [a for key, value in overrides.items() for a in (f"--{key}", str(value))]
    # CI=true makes transformers propagate its records to the root logger; each line must still appear once
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""), "CI": "true"}
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "train_ucf_debug.sh"), *argv], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert log.count("***** Running training *****") == 1  # one process, one log line (log_level info: on the console)
    assert (out / "train.log").read_text().count("***** Running training *****") == 1
    resolved = yaml.safe_load((out / "recipe_resolved.yaml").read_text())
    assert resolved["num_frames"] == 64 and resolved["per_device_train_batch_size"] == 4
    assert resolved["contrastive_chunk_size"] == 1
    assert resolved["activation_checkpointing"] is True and resolved["max_train_videos"] == 10
    state = json.loads((out / "trainer_state.json").read_text())
    assert len(_checkpoints(out)) == min(3, state["global_step"]) and max(_checkpoints(out)) == state["global_step"]
    assert (out / "anomaly_scores.json").is_file() and len(list((out / "score_plots").glob("*.png"))) == 4
    assert "eval_auc" in json.loads((out / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def vad_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vad_gradcache")
    run_module.prepare(tiny_argv(root, root / "warm"))  # the corpus and the CLIP exist
    return root


def _train_weights(root, out, **keys):
    prepared = run_module.prepare(tiny_argv(root, out, num_train_epochs=1, eval_strategy="no", eval_every_epochs=0,
                                            save_strategy="no", flip_prob=0.0, **keys))
    prepared.trainer.train()
    return {k: v.detach().clone() for k, v in prepared.trainer.model.state_dict().items()}, prepared.trainer


def test_gradient_caching_equals_one_forward_of_the_whole_batch(vad_root, monkeypatch):
    """contrastive_chunk_size 2 with batch 4: the same weights as batch 4 in one forward (every contrastive term over
    the 4 clips), while each forward holds 2 clips. Gradient accumulation 2 x 2 instead contrasts 2 clips per
    micro-batch (its logits are 2 x 2) and moves the weights elsewhere."""
    from hf_vtrain.models.fgclip_video import losses_fgclip_video as losses

    seen = []
    original = losses.clip_contrastive_loss

    def recording(a, b, logit_scale, gather=True):
        seen.append(tuple(a.shape))
        return original(a, b, logit_scale, gather)

    monkeypatch.setattr(losses, "clip_contrastive_loss", recording)
    whole, _ = _train_weights(vad_root, vad_root / "whole", per_device_train_batch_size=4)
    seen_whole, seen[:] = list(seen), []
    cached, trainer = _train_weights(vad_root, vad_root / "cached", per_device_train_batch_size=4,
                                     contrastive_chunk_size=2)
    seen_cached, seen[:] = list(seen), []
    accumulated, _ = _train_weights(vad_root, vad_root / "accumulated", per_device_train_batch_size=2,
                                    gradient_accumulation_steps=2)
    seen_accumulated = list(seen)
    # the global terms' logits: rows = clips contrasted together
    assert {s[0] for s in seen_whole[::3]} == {4} and {s[0] for s in seen_cached[::3]} == {4}
    assert {s[0] for s in seen_accumulated[::3]} == {2}
    diffs = {k: (whole[k].double() - cached[k].double()).abs().max().item() for k in whole}
    worst = max(diffs, key=diffs.get)
    # A key bias adds a constant to every key of a query, which softmax ignores: its exact gradient is 0 and Adam turns
    # the rounding noise of two summation orders into lr-sized steps (as between 1 and 2 processes). Every other
    # tensor is held to fp32 rounding.
    others = {k: v for k, v in diffs.items() if not k.endswith("k_proj.bias")}
    worst_other = max(others, key=others.get)
    print(f"gradient caching vs one forward: max weight difference {diffs[worst]:.2e} ({worst}); other tensors "
          f"{others[worst_other]:.2e} ({worst_other})")
    assert others[worst_other] < 1e-5, (worst_other, others[worst_other])
    assert diffs[worst] < 1e-4, (worst, diffs[worst])
    moved = max((whole[k].double() - accumulated[k].double()).abs().max().item() for k in whole)
    assert moved > 10 * diffs[worst]  # the accumulation baseline (2 clips per contrast) trains something else
    logged = [e for e in trainer.state.log_history if "global_loss" in e]
    assert logged and all(e["short_global_loss"] > 0 and e["region_loss"] > 0 and e["hard_negative_loss"] > 0
                          for e in logged)


def test_a_weighted_loss_term_without_data_is_refused(vad_root, tmp_path):
    """The hard-negative term (weight 0.5) on records without region_negatives would be 0 on every step: refused,
    naming the term, the field and the tool; with the weight 0 it trains."""
    corpus = tmp_path / "corpus"
    shutil.copytree(vad_root / "corpus", corpus)
    records = json.loads((corpus / "ucf_fgclip_train.json").read_text())
    for record in records:
        record.pop("region_negatives", None)
    (corpus / "ucf_fgclip_train.json").write_text(json.dumps(records))
    argv = tiny_argv(vad_root, tmp_path / "out", data_root=str(corpus), synthetic="false")
    with pytest.raises(RecipeError, match=r"hard_negative_loss_weight is 0.5 but no training record has hard "
                                          r"negatives \(region_negatives\).*scripts/make_hard_negatives.py"):
        run_module.prepare(argv)
    model = TINY_MODEL.replace("}", ", hard_negative_loss_weight: 0}")
    argv[argv.index("--model_config_overrides") + 1] = model
    run_module.prepare(argv)


def test_gradient_caching_gives_the_gradients_of_the_whole_batch(vad_root):
    """One batch of 4 through training_step: chunks of 1 (gradient caching) give the loss and every parameter's
    gradient of one forward of the 4 clips, to fp32 rounding (before any optimizer step)."""
    grads = {}
    for chunk in (0, 1):
        prepared = run_module.prepare(tiny_argv(vad_root, vad_root / f"grad{chunk}", per_device_train_batch_size=4,
                                                flip_prob=0.0, contrastive_chunk_size=chunk))
        trainer = prepared.trainer
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by train(); here one step is taken by hand
        batch = next(iter(trainer.get_train_dataloader()))
        loss = trainer.training_step(trainer.model, batch)
        grads[chunk] = (loss.item(), {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()
                                      if p.grad is not None})
    (loss0, g0), (loss1, g1) = grads[0], grads[1]
    assert loss1 == pytest.approx(loss0, rel=1e-6) and g0.keys() == g1.keys() and len(g0) > 50
    scale = max(v.abs().max().item() for v in g0.values())
    worst = max(g0, key=lambda k: (g0[k] - g1[k]).abs().max().item())
    assert (g0[worst] - g1[worst]).abs().max().item() < 1e-5 * scale, worst
