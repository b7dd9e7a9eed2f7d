"""What every task's wiring shares: the spec a task registers in the task table, what its `setup` returns, the checks of
`*_config_overrides` recipe entries, the random demo checkpoints the demo recipes write on first use, and what a task's
predictor gets from `python -m hf_vtrain.predict` (PredictRuntime, VideoPlan) and the SubRip writer."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..data.common import write_json_atomic
from ..parser import RecipeError

logger = logging.getLogger(__name__)


@dataclass
class TaskRun:
    """What a task's `setup` hands to run.py: the pieces of one Trainer."""

    model: Any
    train_dataset: Any
    eval_dataset: Any
    data_collator: Any
    trainer_kwargs: dict
    epoch_hooks: list
    corpus: Any
    trainer_cls: type | None = None  # a stage of a task that trains another model with its own Trainer (vad's head)


@dataclass(frozen=True)
class TaskSpec:
    """One entry of the task table (hf_vtrain.tasks.TASKS)."""

    description: str
    model_args: type
    data_args: type
    training_args: type
    trainer_cls: type
    setup: Callable[..., TaskRun]      # (model_args, data_args, training_args) -> TaskRun
    validate: Callable[..., Any]       # (data_args) -> report with .ok and .format()
    predictor: type | None = None      # a TaskPredictor subclass (`python -m hf_vtrain.predict`); None: no predict
    # (model_args, data_args) -> None, raising RecipeError: what can be checked without the corpus (the model config
    # the keys make); phases run it for every phase before the first one trains. None: nothing beyond the dataclasses
    check_recipe: Callable[..., None] | None = None
    # model-argument keys naming a saved model folder that, in a phase, may be 'previous' or an earlier phase's name
    # (as init_from may): vad's head stage reads the features of the FG-CLIP phase before it
    phase_folder_keys: tuple[str, ...] = ()
    # (data_args) -> datasets.DatasetDict: the corpus as typed datasets (`hf_vtrain.load_corpus(recipe)`)
    load_corpus: Callable[..., Any] | None = None


class TaskPredictor:
    """What `python -m hf_vtrain.predict` asks of a task. A subclass sets the class attributes and implements:

    - `__init__(folder, preprocessing, options, runtime)`: load the model (and tokenizer, ...) from `folder`, with its
      `preprocessing_config.json` as `preprocessing`, the parsed command line as `options`, a PredictRuntime;
    - `describe()`: one line of the settings in use;
    - `plan(path, video_id) -> VideoPlan`: probe the file (raise VideoDecodeError naming it) and count the units;
    - `run(plan, advance) -> result`: the model over the video, calling `advance(n)` as units are done;
    - `write(plan, result, out_dir) -> (files, summary line)`: the video's files, the result file first;
    - `read(out_dir, video_id) -> result`: a result written before (--skip_existing);
    - `write_combined(results, out_dir) -> files`: every video's results in one file.
    """

    unit = "unit"              # what the progress bar counts (window, snippet, frame)
    default_batch_size = 1     # units per forward when --batch_size is not given
    result_suffix = ".json"    # `<video_id><result_suffix>`: the file that marks a video done
    default_threshold = 0.5    # --threshold when not given

    @staticmethod
    def add_arguments(group) -> None:
        """The task's own command-line options (an argparse argument group); none by default."""


@dataclass(frozen=True)
class PredictRuntime:
    """Where and how `python -m hf_vtrain.predict` runs a model: device, autocast dtype (None: float32), batch size
    (task units per forward), decode threads, and the task's display threshold (None: the task's default)."""

    device: Any
    dtype: Any
    batch_size: int
    decode_threads: int
    threshold: float | None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.dtype)


@dataclass
class VideoPlan:
    """One input video as a predictor planned it: its id, file, what the decoder reports, and the units of work
    (windows, snippets) the progress bar counts; `extra` is the predictor's own (e.g. window starts)."""

    video_id: str
    path: str
    num_frames: int
    fps: float
    height: int
    width: int
    units: int
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def prefetched(items: list, load):
    """`load(item)` of each item in order, the next one decoded in a thread while the caller runs the model on this
    one (decord and torch's resize release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    if not items:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, items[0])
        for nxt in items[1:]:
            ready = pending.result()
            pending = pool.submit(load, nxt)
            yield ready
        yield pending.result()


def srt_time(seconds: float) -> str:
    millis = int(round(max(seconds, 0.0) * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def format_srt(cues: list[tuple[float, float, str]]) -> str:
    """SubRip text of (start s, end s, text) cues, numbered from 1 in the order given."""
    blocks = [f"{i}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n" for i, (start, end, text) in enumerate(cues, 1)]
    return "\n".join(blocks)


def check_config_overrides(
    recipe_key: str, overrides: Any, config_cls, nested: dict | None = None, extra: tuple[str, ...] = ()
) -> None:
    """Refuses keys of a `*_config_overrides` recipe entry that `config_cls` does not have, naming the entry and the
    closest field names. A PretrainedConfig keeps any keyword as an attribute, so a typo would be ignored without a
    word (and YAML reads `{chunk_size:4}`, no space after the colon, as the key 'chunk_size:4'). `nested` maps a key
    (e.g. CLIP's text_config) to the config class its mapping is checked against; `extra` names keys the caller
    handles itself."""
    if not isinstance(overrides, dict):
        raise RecipeError(f"{recipe_key} must be a mapping of {config_cls.__name__} fields, got {overrides!r}")
    known = {f.name for f in dataclasses.fields(config_cls)} | set(extra)
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            colon = " (YAML needs a space after ':' in {key: value})" if ":" in str(key) else ""
            raise RecipeError(f"{recipe_key}: {key!r} is not a {config_cls.__name__} field{colon}{hint}")
        if nested and key in nested and isinstance(value, dict):
            check_config_overrides(f"{recipe_key}.{key}", value, nested[key])


def check_loss_terms_have_data(terms: list[tuple[str, float, int, str]]) -> None:
    """Every task's rule: a loss term with weight > 0 that no training data feeds would be 0 on every step, in
    silence. `terms`: (the weight's recipe key, its weight, how many training samples feed the term, what feeds it
    and how to get it). Raises one RecipeError naming every such term."""
    empty = [f"{key} is {weight:g} but {feeds}" for key, weight, count, feeds in terms if weight > 0 and count == 0]
    if empty:
        raise RecipeError("a loss term would be 0 on every step for lack of data: " + "; ".join(empty))


@contextlib.contextmanager
def config_errors(recipe_key: str):
    """A config that fails its own validation (huggingface_hub's @strict checks) ends the run with one message naming
    the recipe entry, instead of a traceback from inside huggingface_hub."""
    from huggingface_hub.errors import StrictDataclassError

    try:
        yield
    except StrictDataclassError as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        raise RecipeError(f"{recipe_key}: {cause}") from err


RANDOM_INIT_FILE = "random_init.json"


def ensure_random_checkpoint(path: str, overrides: dict, build, what: str) -> None:
    """Demo/tests: makes sure `path` holds a randomly initialised checkpoint built with `overrides`.

    Missing: `build(tmp_dir)` writes it under its own seed (so the global RNG, and so the init of everything built
    after it, is the same whether or not this run had to write it) and it appears under `path` only when complete,
    with the overrides recorded in random_init.json. Present and written here with other overrides: an error - a
    stale demo checkpoint would otherwise be used silently. Present without that file: a real checkpoint, used as is.
    """
    record = {"overrides": json.loads(json.dumps(overrides, sort_keys=True)), "seed": 0}
    marker = os.path.join(path, RANDOM_INIT_FILE)
    if os.path.exists(path):
        if os.path.isfile(marker):
            with open(marker) as handle:
                stored = json.load(handle)
            if stored != record:
                keys = sorted(k for k in set(stored["overrides"]) | set(record["overrides"])
                              if stored["overrides"].get(k) != record["overrides"].get(k))
                raise ValueError(f"{path} holds a random {what} written with other settings (differing: {keys}); "
                                 f"delete it or point the recipe to another folder")
        return
    logger.warning("writing a RANDOMLY INITIALISED %s to %s (demo/tests switch)", what, path)
    tmp = path.rstrip("/") + f".tmp{os.getpid()}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(record["seed"])
        build(tmp)
    write_json_atomic(os.path.join(tmp, RANDOM_INIT_FILE), record)
    os.replace(tmp, path)
