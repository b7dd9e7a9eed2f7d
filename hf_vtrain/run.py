"""The one entry point: `accelerate launch hf_vtrain/run.py recipes/<recipe>.yaml [--key value ...]`.

parse -> seed/logging -> checkpoint detection -> data (validated) -> model -> trainer -> train/resume -> save, metrics,
curves -> final evaluation -> model card -> optional push. Also `python -m hf_vtrain.run`, `torchrun`, `deepspeed`.
`--validate_data_only true` checks the corpus named by the recipe and exits without training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time

if __package__ in (None, ""):  # `python hf_vtrain/run.py`: make the package importable, not the folder itself
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _here:
        sys.path.pop(0)
    sys.path.insert(0, os.path.dirname(_here))
    __package__ = "hf_vtrain"

import yaml  # noqa: E402
from accelerate import PartialState  # noqa: E402

from hf_vtrain import __version__  # noqa: E402
from hf_vtrain.parser import RecipeError, parse_args, peek_key, read_layers  # noqa: E402
from hf_vtrain.tasks import get_task  # noqa: E402

logger = logging.getLogger("hf_vtrain")
RUN_KEYS = ("task", "validate_data_only")


def git_commit() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def trainer_state_problem(path: str) -> str | None:
    """Why `path` holds no complete trainer_state.json (None when it does). The Trainer writes that file last, but
    not atomically: a kill during the write leaves it empty or cut short, which must not pass for a checkpoint."""
    state = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state):
        return "no trainer_state.json"
    try:
        with open(state, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        return f"trainer_state.json is cut short or unreadable ({type(err).__name__}: {err})"
    if not isinstance(data, dict) or "global_step" not in data:
        return "trainer_state.json holds no global_step"
    return None


def find_last_checkpoint(output_dir: str) -> str | None:
    """Newest complete checkpoint by step number (not name order); a folder without a complete trainer_state.json,
    which the Trainer writes last, is an interrupted save and is skipped."""
    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        if not match:
            continue
        path = os.path.join(output_dir, name)
        problem = trainer_state_problem(path)
        if problem is None:
            found.append((int(match.group(1)), path))
        else:
            logger.warning("skipping incomplete checkpoint %s (%s)", path, problem)
    return max(found)[1] if found else None


def holds_training_state(path: str) -> bool:
    """A checkpoint a run can resume from: the Trainer's state and an optimizer state (optimizer.pt, or DeepSpeed's
    global_step*/ shards). A finished run's top folder has trainer_state.json and the weights but no optimizer: a
    "resume" from it trains nothing."""
    if trainer_state_problem(path) is not None:
        return False
    if os.path.isfile(os.path.join(path, "optimizer.pt")) or os.path.isfile(os.path.join(path, "latest")):
        return True
    return any(name.startswith("global_step") and os.path.isdir(os.path.join(path, name)) for name in os.listdir(path))


def check_resume_folder(path: str, key: str = "resume_from_checkpoint") -> str:
    """`path` if it is a checkpoint to resume from, else a RecipeError saying what it is and what to pass instead."""
    if not os.path.exists(path):
        raise RecipeError(f"{key}: {path} does not exist")
    if not os.path.isdir(path):
        raise RecipeError(f"{key}: {path} is a file; pass a checkpoint folder (checkpoint-N)")
    if holds_training_state(path):
        return path
    newest = find_last_checkpoint(path)
    if newest is not None:
        raise RecipeError(f"{key}: {path} is a run folder, not a checkpoint (it holds no optimizer state, so a resume "
                          f"would train nothing); its newest checkpoint is {newest}: pass that")
    problem = trainer_state_problem(path)
    what = "a finished run's folder without checkpoints" if problem is None else f"not a checkpoint ({problem})"
    raise RecipeError(f"{key}: {path} is {what}; to start from its weights use model_name_or_path instead")


def resolve_resume(training_args) -> str | None:
    """The checkpoint this run resumes from: `resume_from_checkpoint` checked (a path, true/latest, hub), or the newest
    complete checkpoint in output_dir when the key is unset."""
    output_dir = training_args.output_dir
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "latest", "last"):
        found = find_last_checkpoint(output_dir)
        if found is None:
            raise RecipeError(f"resume_from_checkpoint: {resume}: no complete checkpoint in {output_dir}")
        return check_resume_folder(found)
    if isinstance(resume, str) and resume.lower() == "hub":
        with training_args.main_process_first(desc="download last-checkpoint"):
            return check_resume_folder(download_hub_checkpoint(training_args))
    if resume is None:
        found = find_last_checkpoint(output_dir)
        if found:
            logger.warning("found checkpoint %s in output_dir: resuming from it", found)
            return check_resume_folder(found)
        return None
    return check_resume_folder(resume)


def evaluation_source(model_args, training_args) -> tuple[str, str]:
    """Evaluate-only (`do_train: false`): the folder whose weights are evaluated (a run folder's or checkpoint's
    `ema/` by default where it has one, else the folder itself; a store repo id is downloaded first) and the name of
    the output folder, `eval-<name>-<ema|raw>`."""
    from hf_vtrain.model_folders import resolve_model_folder

    with training_args.main_process_first(desc="download the model"):
        weights, kind, name = resolve_model_folder(
            getattr(model_args, "model_name_or_path", None), training_args.eval_weights, token=training_args.hub_token,
            revision=training_args.hub_revision,
            pickle_flag=None if training_args.allow_pickled_weights else "--allow_pickled_weights true")
    return weights, f"eval-{name}-{kind}"


def download_hub_checkpoint(training_args) -> str:
    """`--resume_from_checkpoint hub`: the store's `last-checkpoint/` (hub_strategy checkpoint) when the local
    output folder is gone."""
    from huggingface_hub import snapshot_download

    repo = training_args.hub_model_id
    if not repo:
        raise RecipeError("resume_from_checkpoint: hub needs hub_model_id (the repository the run pushed to)")
    target = os.path.join(training_args.output_dir, "hub-last-checkpoint")
    snapshot_download(repo_id=repo, allow_patterns=["last-checkpoint/*"], local_dir=target,
                      token=training_args.hub_token, revision=training_args.hub_revision)
    path = os.path.join(target, "last-checkpoint")
    if trainer_state_problem(path) is not None:
        raise RecipeError(f"resume_from_checkpoint: hub: {repo} has no complete last-checkpoint/ (was the run pushed "
                          f"with hub_strategy: checkpoint?)")
    logger.warning("resuming from %s's last-checkpoint (downloaded to %s)", repo, path)
    return path


def _jsonable(value):
    """Plain JSON/YAML types only (enums become their values, dataclasses such as AcceleratorConfig their fields,
    unknown objects their str)."""
    from enum import Enum

    def plain(v):
        if isinstance(v, Enum):
            return v.value
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return dataclasses.asdict(v)
        return str(v)

    if isinstance(value, Enum):
        return value.value
    return json.loads(json.dumps(value, default=plain))


SECRET_KEYS = ("hub_token",)  # never written to run files, which are pushed to the store


def resolved_recipe(task: str, *arg_objects) -> dict:
    """Every key of the run with its value: a recipe that reruns it (`recipe_resolved.yaml`), secrets left out."""
    out = {"task": task}
    for obj in arg_objects:
        for f in dataclasses.fields(obj):
            if f.init and f.name not in SECRET_KEYS:
                out[f.name] = _jsonable(getattr(obj, f.name))
    return out


_LAUNCHERS = ("accelerate", "torchrun", "deepspeed")


def _short_argv(words: list[str]) -> list[str]:
    """An argv without the interpreter in front of a launcher script (`.../python .../bin/accelerate launch ...`
    -> `accelerate launch ...`), the launcher named without its folder."""
    words = list(words)
    if len(words) > 1 and os.path.basename(words[0]).startswith("python") and \
            os.path.basename(words[1]) in _LAUNCHERS:
        words = words[1:]
    if words and os.path.basename(words[0]) in _LAUNCHERS:
        words[0] = os.path.basename(words[0])
    return words


def _redacted(words: list[str]) -> list[str]:
    """A command line with the values of SECRET_KEYS (`--hub_token X`, `--hub_token=X`) replaced by ***."""
    out, hide = [], False
    for word in words:
        flag = word.split("=", 1)[0]
        if hide:
            out.append("***")
        elif flag.lstrip("-") in SECRET_KEYS and "=" in word:
            out.append(f"{flag}=***")
        else:
            out.append(word)
        hide = not hide and word.lstrip("-") in SECRET_KEYS and word.startswith("--")
    return out


def invocation(argv: list[str]) -> dict:
    out = _invocation(argv)
    return {key: shlex.join(_redacted(shlex.split(command))) for key, command in out.items()}


def _invocation(argv: list[str]) -> dict:
    """How this run was started, as the user typed it: the launcher's command line (accelerate launch, torchrun,
    deepspeed: read from the parent process on Linux) and this process's own (`python -m hf_vtrain.run ...` or
    `python hf_vtrain/run.py ...`). A run started from Python (`run.main(argv)`) is recorded as the equivalent
    `python -m hf_vtrain.run` command."""
    if list(sys.argv[1:]) != list(argv):
        command = shlex.join(["python", "-m", "hf_vtrain.run", *argv])
        return {"process_command": command, "command": command}
    own = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    out = {"process_command": shlex.join(own)}
    launched = any(k in os.environ for k in ("TORCHELASTIC_RUN_ID", "ACCELERATE_MIXED_PRECISION", "LOCAL_RANK"))
    parent = None
    if launched:
        try:
            with open(f"/proc/{os.getppid()}/cmdline", "rb") as handle:
                words = [w.decode(errors="replace") for w in handle.read().split(b"\0") if w]
            # torchrun under accelerate: the launcher that matters is the outermost one, but one level is enough to
            # name it; a plain python parent is a test harness or a shell, not a launcher
            if any(os.path.basename(w) in _LAUNCHERS or w.endswith(("torch.distributed.run", "accelerate.commands"
                                                                    ".launch")) for w in words[:3]):
                parent = _short_argv(words)
        except OSError:
            parent = None
    out["command"] = shlex.join(parent) if parent else shlex.join(_short_argv(own))
    return out


def write_run_info(output_dir: str, task: str, argv: list[str], set_keys: dict, arg_objects) -> dict:
    os.makedirs(output_dir, exist_ok=True)
    info = {
        "hf_vtrain_version": __version__,
        "git_commit": git_commit(),
        **invocation(argv),
        "recipe_keys_set": {k: _jsonable(v) for k, v in set_keys.items() if k not in SECRET_KEYS},
    }
    with open(os.path.join(output_dir, "run_info.json"), "w") as handle:
        json.dump(info, handle, indent=2)
    with open(os.path.join(output_dir, "recipe_resolved.yaml"), "w") as handle:
        handle.write(f"# resolved by hf_vtrain {__version__} at commit {info['git_commit']}\n")
        yaml.safe_dump(resolved_recipe(task, *arg_objects), handle, sort_keys=True)
    return info


_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
               "critical": logging.CRITICAL}


class _ConsoleHandler(logging.StreamHandler):
    """The console: sys.stdout as it is when a record is written, not as it was when logging was set up (a run
    started from Python, then its stdout redirected or closed, must not turn later records into logging errors)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(training_args) -> None:
    """The console is quiet by default: warnings, the Trainer's progress bar or loss lines, and the metric tables
    (printed). `log_level: info` (or debug) shows everything there; train.log always gets INFO and above, config dumps
    included. Processes other than the main one print warnings only."""
    import datasets
    import transformers

    console = logging.WARNING
    if training_args.should_log and training_args.log_level in _LOG_LEVELS:
        console = _LOG_LEVELS[training_args.log_level]
    record = min(console, logging.INFO)
    stream = _ConsoleHandler()
    stream.setLevel(console)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[stream], level=record, force=True)
    # One path for every message: transformers' own stderr handler off, its records propagated to the root handlers
    # (stdout and train.log). transformers turns propagation on by itself when CI=true, which with its handler on
    # printed every message twice.
    transformers.utils.logging.set_verbosity(record)
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    datasets.utils.logging.set_verbosity(logging.WARNING)
    if console > logging.INFO:  # "Writing model shards" / "Loading weights" bars at every save and load
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(training_args.output_dir, "train.log"))
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)


@dataclasses.dataclass
class PreparedRun:
    task_name: str
    model_args: object
    data_args: object
    training_args: object
    trainer: object
    task: object
    resume: str | None


def prepare(argv: list[str], phase=None) -> PreparedRun:
    """Everything before `train()`: parse, seed, logging, run info, checkpoint detection, data, model, trainer. A
    `phase` (hf_vtrain.phases.Phase, already parsed) is one phase of a phased recipe."""
    task_name = peek_key(argv, "task")
    spec = get_task(task_name)
    if phase is None:
        model_args, data_args, training_args, set_keys = parse_args(
            argv, (spec.model_args, spec.data_args, spec.training_args), extra_keys=RUN_KEYS
        )
    else:
        model_args, data_args, training_args, set_keys = (phase.model_args, phase.data_args, phase.training_args,
                                                          phase.set_keys)
    from hf_vtrain.trainers.distributed import outside_zero_init

    evaluate_only = not training_args.do_train
    if evaluate_only:  # before logging: the run's files go to the evaluation's own folder
        model_args.model_name_or_path, label = evaluation_source(model_args, training_args)
        training_args.output_dir = os.path.join(training_args.output_dir, label)
        training_args.ema_decay, training_args.ema_half_life_epochs = 0.0, None  # the weights are evaluated as loaded
        training_args.push_to_hub = False
    setup_logging(training_args)
    from transformers import enable_full_determinism, set_seed

    if training_args.full_determinism:
        enable_full_determinism(training_args.seed)
    else:
        set_seed(training_args.seed)

    output_dir = training_args.output_dir
    resume = None if evaluate_only else resolve_resume(training_args)
    if evaluate_only:
        logger.warning("evaluate-only: %s -> %s", model_args.model_name_or_path, output_dir)

    run_info = {}
    if training_args.should_save:
        run_info = write_run_info(output_dir, task_name, argv, set_keys, (model_args, data_args, training_args))
        if phase is not None:
            run_info["phase"] = {"index": phase.index, "name": phase.name, "epoch_offset": phase.epoch_offset}

    with outside_zero_init():  # the DeepSpeed engine partitions the model when training starts (ZeRO-3)
        task = spec.setup(model_args, data_args, training_args)
        if training_args.init_from and resume is None and not evaluate_only:  # a resume takes the checkpoint's
            from hf_vtrain.phases import init_weights_from

            init_from = phase.init_from if phase is not None else training_args.init_from
            init_weights_from(task.model, init_from, training_args.init_from_ema,
                              training_args.init_from_allow_unexpected)
    trainer = (task.trainer_cls or spec.trainer_cls)(
        model=task.model,
        args=training_args,
        train_dataset=task.train_dataset,
        eval_dataset=task.eval_dataset,
        data_collator=task.data_collator,
        epoch_hooks=task.epoch_hooks,
        epoch_offset=phase.epoch_offset if phase is not None else 0,
        schedule_epochs=phase.total_epochs if phase is not None else None,
        **task.trainer_kwargs,
    )
    trainer.run_info = {**run_info, "task": task_name, "description": spec.description}
    return PreparedRun(task_name, model_args, data_args, training_args, trainer, task, resume)


def execute(run: PreparedRun, leave: bool = True) -> dict:
    """train/resume -> save, metrics, curves -> final evaluation -> model card -> optional push. `leave`: end the
    process group afterwards (a phase leaves it to the phased run, which goes on with the next phase)."""
    from hf_vtrain.plotting.curves import plot_training_curves

    trainer, output_dir = run.trainer, run.training_args.output_dir
    title = f"{run.task_name}: {os.path.basename(os.path.abspath(output_dir))}"
    results: dict = {}
    if not run.training_args.do_train:
        return evaluate_only(run, leave)
    train_result = trainer.train(resume_from_checkpoint=run.resume)
    trainer.save_model(_internal_call=True)  # the push comes at the end, retried and reported (push_final)
    if trainer.steps_trained == 0 and run.resume is not None:
        # Resumed at the run's last step: the Trainer reports train_loss 0.0 for the zero steps it ran, which must not
        # replace the figures of the run that trained these weights.
        logger.warning("%s is at step %d, the run's last: nothing left to train; train_results.json is left as the "
                       "training run wrote it", run.resume, trainer.state.global_step)
    else:
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        results.update(train_result.metrics)
    trainer.save_state()

    if run.task.eval_dataset is not None:
        last = getattr(trainer, "last_eval", None)
        if last is not None and last[0] == trainer.state.global_step:
            metrics = last[1]  # the schedule already evaluated these final weights in this process
        else:
            metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
        if trainer.is_world_process_zero():
            trainer.write_final_outputs(output_dir)

    if trainer.is_world_process_zero():
        curves = plot_training_curves(trainer.state.log_history, os.path.join(output_dir, "training_curves.png"),
                                      title=title)
        logger.info("training curves: %s", curves)
        trainer.create_model_card()
    # The other processes wait until the main one has written the run's outputs: a process that ends early and fails
    # in its teardown makes the launcher stop the main one (seen once on CPU: plots and model card went unwritten).
    trainer.accelerator.wait_for_everyone()
    if run.training_args.push_to_hub:
        push_final(trainer, run.task_name)
    trainer.release_dataloader_workers()
    # Each process leaves its process group here, after its last collective, rather than at interpreter exit
    # (PyTorch asks for it: pending NCCL work is otherwise not waited for).
    if leave:
        trainer.accelerator.end_training()
    return results


def evaluate_only(run: PreparedRun, leave: bool = True) -> dict:
    """`do_train: false`: the recipe's evaluation of the loaded weights and the files a training run writes for it
    (eval_results.json, the metric tables, predictions, plots), in the evaluation's own folder."""
    trainer, output_dir = run.trainer, run.training_args.output_dir
    if run.task.eval_dataset is None:
        raise RecipeError("do_train: false: this recipe has no evaluation set to evaluate on")
    from transformers.integrations import TensorBoardCallback
    from transformers.integrations.integration_utils import default_logdir

    for callback in trainer.callback_handler.callbacks:  # transformers opens ./runs/ when logging without training
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = os.path.join(output_dir, default_logdir())
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        trainer.write_final_outputs(output_dir)
        print(f"evaluation of {run.model_args.model_name_or_path}: {output_dir}")
    trainer.accelerator.wait_for_everyone()
    trainer.release_dataloader_workers()
    if leave:
        trainer.accelerator.end_training()
    return dict(metrics)


class PushError(RuntimeError):
    """The final state of the run never reached the store; local files are intact."""


def push_folder(training_args, folder: str, task_name: str, attempts: int = 3, wait: float = 2.0) -> None:
    """The top folder of a phased run (final model, card, curves; not the phases' checkpoints) to hub_model_id,
    retried; raises PushError if it never reached the store."""
    from huggingface_hub import HfApi

    repo = training_args.hub_model_id
    api = HfApi(token=training_args.hub_token)
    error = None
    for attempt in range(1, attempts + 1):
        try:
            api.create_repo(repo, private=training_args.hub_private_repo, exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=folder, commit_message=f"hf_vtrain {task_name}: end of training",
                              ignore_patterns=["phase*/**", "checkpoint-*/**", "runs/**", "*.tmp*"])
            logger.warning("final model pushed to %s", repo)
            return
        except Exception as err:  # any transport or server error: retried, then reported
            error = err
            logger.warning("push of %s to %s failed (attempt %d/%d): %s: %s", folder, repo, attempt, attempts,
                           type(err).__name__, err)
            if attempt < attempts:
                time.sleep(wait * 2 ** (attempt - 1))
    raise PushError(f"the final push to {repo} failed after {attempts} attempts ({type(error).__name__}: {error}). "
                    f"Everything is intact in {folder}; push it again with `hf upload {repo} {folder}`.")


def push_final(trainer, task_name: str, attempts: int = 3, wait: float = 2.0) -> None:
    """The end-of-run push, retried; background push failures are listed; raises PushError if the store never got
    the final state (the exit status is then non-zero)."""
    repo = trainer.hub_model_id or trainer.args.hub_model_id
    error = None
    for attempt in range(1, attempts + 1):
        try:
            trainer.push_to_hub(commit_message=f"hf_vtrain {task_name}: end of training")
            error = None
            break
        except Exception as err:  # any transport or server error: retried, then reported
            error = err
            logger.warning("final push to %s failed (attempt %d/%d): %s: %s", repo, attempt, attempts,
                           type(err).__name__, err)
            if attempt < attempts:
                time.sleep(wait * 2 ** (attempt - 1))
    failures = trainer.push_failures()
    if failures:
        lines = "\n".join(f"  step {f['step']}: {f['error']}" for f in failures)
        logger.warning("%d background checkpoint push(es) failed during the run:\n%s", len(failures), lines)
    if error is not None:
        raise PushError(f"the final push to {repo} failed after {attempts} attempts "
                        f"({type(error).__name__}: {error}); {len(failures)} background push(es) failed before. "
                        f"Everything is intact in {trainer.args.output_dir}; push it again with "
                        f"`hf upload {repo} {trainer.args.output_dir}`.")
    logger.info("final state pushed to %s", repo)


def run_phases(argv: list[str]) -> dict:
    """A recipe with `phases:`: every phase checked first, then each one trained as its own run (finished ones
    skipped while unchanged), then the top folder assembled and, if asked, pushed."""
    from hf_vtrain import phases as phasing

    spec = get_task(peek_key(argv, "task"))
    plan = phasing.plan_phases(argv, spec, RUN_KEYS)
    push = plan[-1].training_args.push_to_hub
    for phase in plan:  # the phases' own pushes are off: the top folder, with the final model, is pushed at the end
        phase.training_args.push_to_hub = False
    results: dict = {}
    last_trainer = None
    for phase in plan:
        resolved = resolved_recipe(peek_key(argv, "task"), phase.model_args, phase.data_args, phase.training_args)
        if phasing.finished(phase, resolved):
            logger.warning("%s finished before with these settings: skipped", phase.label)
            continue
        logger.warning("%s: %d epochs (epochs %d-%d of %d) in %s", phase.label, phase.epochs, phase.epoch_offset + 1,
                       phase.epoch_offset + phase.epochs, phase.total_epochs, phase.folder)
        run = prepare(argv, phase)
        results = execute(run, leave=False)
        last_trainer = run.trainer
        if run.trainer.is_world_process_zero():
            phasing.mark_finished(phase, resolved, run.trainer)
        run.trainer.accelerator.wait_for_everyone()
    output_dir = os.path.dirname(plan[-1].folder)
    state = PartialState()
    if state.is_main_process:
        title = f"{peek_key(argv, 'task')}: {os.path.basename(os.path.abspath(output_dir))} ({len(plan)} phases)"
        info = {"hf_vtrain_version": __version__, "git_commit": git_commit(), **invocation(argv)}
        phasing.assemble_top_folder(plan, output_dir, title, info,
                                    repo=plan[-1].training_args.hub_model_id if push else None)
        print(f"phases: {', '.join(p.name for p in plan)} -> final model and curves in {output_dir}")
        if push:
            push_folder(plan[-1].training_args, output_dir, peek_key(argv, "task"))
    state.wait_for_everyone()
    if last_trainer is not None:
        last_trainer.accelerator.end_training()
    return results


def with_model_recipe(argv: list[str]) -> list[str]:
    """Evaluate-only without a recipe (`--do_train false --model_name_or_path X` and overrides): X's own
    `recipe_resolved.yaml` (in a run folder; a checkpoint's or ema/'s run folder; a store repo's top folder) is the
    recipe. The evaluation goes to that run folder's eval-* folder, or for a repo id to ./eval-* (unless output_dir
    is given). Any other argv is returned as it is."""
    from hf_vtrain.model_folders import locate_model
    from hf_vtrain.parser import split_argv

    recipe, overrides = split_argv(argv)
    source = overrides.get("model_name_or_path")
    if recipe is not None or not source or peek_key(argv, "do_train", True) is not False:
        return argv
    source = str(source)
    local = os.path.isdir(source)
    folder = locate_model(source, token=os.environ.get("HF_TOKEN"))
    folders = [folder, os.path.dirname(os.path.abspath(folder))] if local else [folder]  # a checkpoint's run folder
    found = next((f for f in folders if os.path.isfile(os.path.join(f, "recipe_resolved.yaml"))), None)
    if found is None:
        raise RecipeError(f"--do_train false without a recipe evaluates with the model's own recipe_resolved.yaml, "
                          f"and {source} has none: give the recipe (python -m hf_vtrain.run RECIPE --do_train false "
                          f"--model_name_or_path {source})")
    output = [] if "output_dir" in overrides else ["--output_dir", found if local else os.getcwd()]
    logger.warning("evaluate-only with %s's own recipe %s", source, os.path.join(found, "recipe_resolved.yaml"))
    return [os.path.join(found, "recipe_resolved.yaml"), *argv, *output]


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        return print_help([a for a in argv if a not in ("--help", "-h")])
    argv = with_model_recipe(argv)
    from hf_vtrain.phases import has_phases

    if peek_key(argv, "validate_data_only"):
        spec = get_task(peek_key(argv, "task"))
        # Training arguments are only named here, not built: a data check needs no GPU for a bf16 recipe.
        training_keys = tuple(f.name for f in dataclasses.fields(spec.training_args) if f.init)
        phases = read_layers(argv).phases
        checked, ok = [], True
        for k in range(len(phases)) if phases else [None]:  # each distinct corpus of the phases once
            _, data_args, _ = parse_args(argv, (spec.model_args, spec.data_args), extra_keys=RUN_KEYS + training_keys,
                                         phase=k)
            if data_args in checked:
                continue
            checked.append(data_args)
            report = spec.validate(data_args)
            print(report.format())
            ok = ok and report.ok
        return {"ok": ok}
    if has_phases(argv):
        if peek_key(argv, "do_train", True) in (False, "false", "False"):
            # evaluate-only of a phased run: the last phase's settings, in that phase's folder
            from hf_vtrain import phases as phasing

            plan = phasing.plan_phases(argv, get_task(peek_key(argv, "task")), RUN_KEYS)
            return execute(prepare(argv, plan[-1]))
        return run_phases(argv)
    return execute(prepare(argv))


def print_help(argv: list[str]) -> dict:
    """`--help`: the tasks; with a recipe or `--task T`: every key that task accepts, grouped by dataclass."""
    from hf_vtrain.parser import format_help
    from hf_vtrain.tasks import TASKS

    task = peek_key(argv, "task") if argv else None
    if task is None:
        lines = ["usage: python -m hf_vtrain.run RECIPE.yaml [--key value ...]   (or accelerate launch / torchrun "
                 "hf_vtrain/run.py ...)", "", "tasks (the recipe's 'task' key):"]
        for name in TASKS:
            lines.append(f"  {name:<5} {get_task(name).description}")
        lines += ["", "python -m hf_vtrain.run RECIPE.yaml --help (or --task T --help) lists every key of a task.",
                  "Run keys: --validate_data_only true checks the recipe's corpus and exits."]
        print("\n".join(lines))
        return {"help": True}
    spec = get_task(task)
    print(format_help((spec.model_args, spec.data_args, spec.training_args),
                      f"task {task}: {spec.description}; keys (YAML recipe keys and --key command-line flags):"))
    return {"help": True}


def _leave(status: int) -> None:
    """Ends a process of a multi-process run once its work is done: flushes and exits without the interpreter's
    teardown. Twice in about 250 two-process ZeRO-3 runs on CPU a process aborted in that teardown ("terminate called
    without an active exception": a C++ thread object destroyed while running, after the last collective), turning a
    finished run into a failed one. By then every output is written and every process has passed the last barrier,
    so nothing of the run is lost by skipping the teardown. A run that failed leaves the same way with its status
    (the abort was seen in a failing ZeRO-3 run too); an unexpected error still ends in its traceback and status 1."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def cli() -> None:
    """Errors in the user's input (recipe, corpus, weights, task name) end the run with one message and the status of
    hf_vtrain.exit_codes, no traceback."""
    from hf_vtrain import exit_codes
    from hf_vtrain.data.common import CorpusError
    from hf_vtrain.trainers.base import CheckpointSaveError, NonFiniteLossError, ResumeError

    expected = ((RecipeError, exit_codes.BAD_INPUT), (CorpusError, exit_codes.BAD_INPUT),
                (ResumeError, exit_codes.BAD_INPUT),
                (NonFiniteLossError, exit_codes.NONFINITE_LOSS), (PushError, exit_codes.PUSH_FAILED),
                (CheckpointSaveError, exit_codes.CHECKPOINT_WRITE_FAILED))
    try:
        result = main()
        status = exit_codes.BAD_INPUT if result.get("ok") is False else exit_codes.OK
    except tuple(cls for cls, _ in expected) as err:
        status = next(code for cls, code in expected if isinstance(err, cls))
        print(f"error: {err}", file=sys.stderr)
    except BrokenPipeError:  # `--help | head`: the reader left; Python's own advice for this case
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(exit_codes.OK)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _leave(status)  # the same status, without the teardown that once aborted a finished process
    sys.exit(status)


if __name__ == "__main__":
    cli()
