"""Every recipe parses with its task's dataclasses; every path and command the README and recipes name exists."""

import glob
import importlib
import os
import re
import shlex

import pytest
import yaml

from hf_vtrain.parser import parse_args, peek_key
from hf_vtrain.run import RUN_KEYS
from hf_vtrain.tasks import TASKS, get_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(REPO, "recipes", "*.yaml")))


def test_there_are_recipes():
    assert len(RECIPES) >= 2


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_parses(recipe):
    task = peek_key([recipe], "task")
    assert task in TASKS
    spec = get_task(task)
    import torch

    # bf16/fp16 recipes are checked against the hardware by TrainingArguments: on a CPU-only machine parse as CPU
    cpu = [] if torch.cuda.is_available() else ["--use_cpu", "true"]
    model_args, data_args, training_args, keys = parse_args(
        [recipe, "--output_dir", "/tmp/unused", *cpu], (spec.model_args, spec.data_args, spec.training_args),
        extra_keys=RUN_KEYS,
    )
    from hf_vtrain.phases import has_phases, plan_phases

    if has_phases([recipe]):  # every phase parses too
        plan = plan_phases([recipe, "--output_dir", "/tmp/unused", *cpu], spec, RUN_KEYS)
        assert len(plan) >= 2 and all(p.folder.startswith("/tmp/unused/phase") for p in plan)
    with open(recipe) as handle:
        first = handle.readline()
    assert first.startswith("#"), "a recipe starts with a comment: what it reproduces, the reference, the launch line"
    text = open(recipe).read()
    assert "Launch" in text or "launch" in text


@pytest.mark.parametrize("config", sorted(glob.glob(os.path.join(REPO, "recipes", "accelerate_configs", "*.yaml"))),
                         ids=os.path.basename)
def test_accelerate_configs_parse(config):
    data = yaml.safe_load(open(config))
    assert data["distributed_type"] in ("NO", "MULTI_GPU", "DEEPSPEED", "FSDP", "MULTI_CPU")
    ds = data.get("deepspeed_config", {}).get("deepspeed_config_file")
    if ds:
        assert os.path.isfile(os.path.join(REPO, ds)), ds


def _readme_commands():
    text = open(os.path.join(REPO, "README.md")).read()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_has_the_two_commands():
    commands = _readme_commands()
    assert "bash scripts/demo.sh" in commands and "bash scripts/test.sh" in commands
    ci = open(os.path.join(REPO, ".ci", "run")).read()
    assert "scripts/test.sh" in ci


@pytest.mark.parametrize("command", _readme_commands())
def test_readme_paths_exist(command):
    words = shlex.split(command)
    for word in words:
        if re.match(r"^(recipes|scripts|hf_vtrain)/[\w./-]+$", word):
            assert os.path.exists(os.path.join(REPO, word)), word
    if "-m" in words:
        module = words[words.index("-m") + 1]
        if module.startswith("hf_vtrain"):
            importlib.import_module(module)


@pytest.mark.parametrize("script", sorted(glob.glob(os.path.join(REPO, "scripts", "*.sh"))), ids=os.path.basename)
def test_launchers_name_existing_files(script):
    text = open(script).read()
    assert text.startswith("#!/usr/bin/env bash")
    for path in re.findall(r"(?:recipes|scripts|hf_vtrain)/[\w./-]+\.(?:yaml|py|sh|json)", text):
        assert os.path.exists(os.path.join(REPO, path)), path


def _readme_python_blocks():
    text = open(os.path.join(REPO, "README.md")).read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("block", _readme_python_blocks(), ids=lambda b: b.splitlines()[1][:40])
def test_readme_python_runs_as_written(block, tmp_path, monkeypatch, capsys):
    """The README's Python examples run as a newcomer runs them: from a clone's root (recipes/ there), with no
    corpus yet (the synthetic one is written, under the working directory as the recipe says), offline."""
    os.symlink(os.path.join(REPO, "recipes"), tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exec(compile(block, "README.md", "exec"), {})
    if "load_corpus" in block:
        printed = capsys.readouterr().out
        assert "ClassLabel(names=" in printed and "'segments': [[" in printed  # features, then one example
