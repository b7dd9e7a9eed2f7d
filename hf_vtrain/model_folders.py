"""What a saved hf_vtrain model folder holds besides weights and config, and how a folder is found from what a user
names (a run folder, a `checkpoint-N` folder, a store repo id). Shared by the trainers (which write the preprocessing
config into every save), evaluate-only (`run.py --do_train false`) and `python -m hf_vtrain.predict`.

`preprocessing_config.json` holds what the data side of evaluation needs and the model config does not: the task id
and how frames are sampled, windowed, resized and cropped (TAD: sample stride, window, evaluation stride, resize;
VAD: image size, resize mode, snippet cap). What the model applies itself stays in `config.json`, its one home
(normalisation, class names, prompts, snippet length, post-processing): a copy here could disagree with it.
"""

from __future__ import annotations

import json
import os

from .parser import RecipeError

EMA_DIR = "ema"
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS_PREFIX, PICKLED_WEIGHTS_SUFFIXES = "pytorch_model", (".bin", ".bin.index.json")
PREPROCESSING_CONFIG_NAME = "preprocessing_config.json"
PREPROCESSING_FORMAT = 1


def write_preprocessing_config(folder: str, config: dict) -> str:
    from .data.common import write_json_atomic

    return write_json_atomic(os.path.join(folder, PREPROCESSING_CONFIG_NAME),
                             {"format": PREPROCESSING_FORMAT, **config}, indent=2)


def read_preprocessing_config(folder: str, source: str | None = None) -> dict:
    """The folder's preprocessing config; a missing or unreadable one is one RecipeError naming the folder."""
    path = os.path.join(folder, PREPROCESSING_CONFIG_NAME)
    shown = source or folder
    if not os.path.isfile(path):
        raise RecipeError(f"{shown} holds no {PREPROCESSING_CONFIG_NAME}: it was saved before hf_vtrain wrote one "
                          f"(issue 16) or by another tool, so how its frames are sampled is unknown; evaluate it with its "
                          f"recipe (python -m hf_vtrain.run RECIPE --do_train false --model_name_or_path {shown})")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise RecipeError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise RecipeError(f"{path}: expected an object with a 'task' entry")
    if config.get("format", 0) > PREPROCESSING_FORMAT:
        raise RecipeError(f"{path}: format {config.get('format')} is newer than this hf_vtrain reads "
                          f"({PREPROCESSING_FORMAT}); update hf_vtrain")
    return config


def check_weights_without_pickles(folder: str, source: str, flag: str) -> None:
    """Loading a model reads safetensors and JSON only: a model folder (and each model folder inside it, e.g. a VAD
    head's feature_model/) whose weights are only pickled (`pytorch_model*.bin`) is refused, naming the file and
    `flag`, the switch that accepts it. Nothing is opened here; loading such a file would unpickle it, which can run
    any code the file's author put in it (transformers' weights-only unpickler narrows that, but is not a sandbox)."""
    folders = [folder] + sorted(
        os.path.join(folder, name) for name in os.listdir(folder)
        if os.path.isfile(os.path.join(folder, name, "config.json")) and not name.startswith(("checkpoint-", "phase"))
    )
    for model_folder in folders:
        names = os.listdir(model_folder)
        if any(name in SAFE_WEIGHTS for name in names):
            continue
        pickled = sorted(n for n in names if n.startswith(PICKLED_WEIGHTS_PREFIX) and n.endswith(PICKLED_WEIGHTS_SUFFIXES))
        if pickled:
            raise RecipeError(f"{os.path.join(model_folder, pickled[0])}: pickled weights are not loaded (unpickling "
                              f"can run code from the file); convert them to safetensors, or pass {flag} if you "
                              f"trust {source}")


def resolve_model_folder(source, weights: str = "ema", key: str = "model_name_or_path", token: str | None = None,
                         revision: str | None = None, pickle_flag: str | None = None) -> tuple[str, str, str]:
    """(folder holding the weights to use, "ema" or "raw", a short name of the source).

    `source`: a run folder or `checkpoint-N` folder (its `ema/` is used when `weights` is "ema" and it has one, else
    its own weights, with a warning), or a store repo id `owner/name` (downloaded from HF_ENDPOINT, without its
    checkpoints). Every problem is one RecipeError naming `key` and the source. With `pickle_flag` (the switch not
    given), a folder whose weights are only pickled is refused (`check_weights_without_pickles`)."""
    import logging

    if not source:
        raise RecipeError(f"set {key} (a run folder, a checkpoint-N folder or a store repo id)")
    if weights not in ("ema", "raw"):
        raise RecipeError(f"weights must be ema or raw, got {weights!r}")
    source = str(source)
    folder = locate_model(source, key, token, revision)
    ema = os.path.join(folder, EMA_DIR)
    if weights == "ema" and os.path.isfile(os.path.join(ema, "config.json")):
        chosen, kind = ema, "ema"
    else:
        if weights == "ema":
            logging.getLogger("hf_vtrain").warning("%s holds no %s/ weights: using its raw weights", source, EMA_DIR)
        chosen, kind = folder, "raw"
    if not os.path.isfile(os.path.join(chosen, "config.json")):
        raise RecipeError(f"{key}: {source} holds no model (no config.json): pass a run folder, a checkpoint-N "
                          f"folder or a store repo id")
    if pickle_flag:
        check_weights_without_pickles(chosen, source, pickle_flag)
    return chosen, kind, os.path.basename(os.path.normpath(source)) or "model"


def locate_model(source: str, key: str = "model_name_or_path", token: str | None = None,
                 revision: str | None = None) -> str:
    """The local folder of `source`: itself when it is a folder, else the download of the store repo `owner/name`
    (a mistyped local path `parent/nam` gets the close names of parent/ in its message)."""
    if os.path.isdir(source):
        return source
    if os.path.exists(source):
        raise RecipeError(f"{key}: {source} is a file; pass the folder that holds it")
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise RecipeError(f"{key}: {source} does not exist (neither a folder nor a store repo id 'owner/name')")
    try:
        return download_model_repo(source, key, token, revision)
    except RecipeError as err:
        local = _local_typo(source)
        if local:  # `outputs/run_nam`: most likely a mistyped folder, not a repo id
            reason = str(err).removeprefix(f"{key}: {source} ")
            raise RecipeError(f"{key}: {source} is no folder ({local}), and as a store repo id it {reason}") from None
        raise


def _local_typo(source: str) -> str | None:
    """For `parent/name` whose parent is a local folder: what that folder holds that looks like `name`."""
    import difflib

    parent, name = os.path.split(source)
    if not parent or not os.path.isdir(parent):
        return None
    close = difflib.get_close_matches(name, sorted(os.listdir(parent)), n=3)
    return (f"did you mean {', '.join(os.path.join(parent, c) for c in close)}?" if close
            else f"{parent}/ holds no such entry")


def download_model_repo(repo: str, key: str = "model_name_or_path", token: str | None = None,
                        revision: str | None = None) -> str:
    """A store repo's final model (its top folder: weights, ema/, config, tokenizer, preprocessing config; not its
    checkpoints), from HF_ENDPOINT or the Hub, into the local cache; a failure is one RecipeError naming the repo and
    the store."""
    from huggingface_hub import constants, snapshot_download

    try:
        return snapshot_download(repo_id=repo, token=token, revision=revision,
                                 ignore_patterns=["checkpoint-*", "checkpoint-*/**", "last-checkpoint/**",
                                                  "phase*/**", "runs/**"])
    except Exception as err:  # noqa: BLE001 - every download failure is the same message to the user
        first = str(err).splitlines()[0] if str(err) else ""
        raise RecipeError(f"{key}: {repo} could not be downloaded from {constants.ENDPOINT} ({type(err).__name__}: "
                          f"{first}); check the repo id, HF_ENDPOINT and HF_TOKEN, or pass a local folder") from None
