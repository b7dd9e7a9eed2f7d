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

from hf_vtrain import __version__  # noqa: E402
from hf_vtrain.parser import RecipeError, parse_args, peek_key  # noqa: E402
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


def find_last_checkpoint(output_dir: str) -> str | None:
    """Newest complete checkpoint by step number (not name order); a folder without trainer_state.json, which the
    Trainer writes last, is an interrupted save and is skipped."""
    if not os.path.isdir(output_dir):
        return None
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, "trainer_state.json")):
            found.append((int(match.group(1)), path))
        elif match:
            logger.warning("skipping incomplete checkpoint %s (no trainer_state.json)", path)
    return max(found)[1] if found else None


def download_hub_checkpoint(training_args) -> str:
    """`--resume_from_checkpoint hub`: the store's `last-checkpoint/` (hub_strategy checkpoint) when the local
    output folder is gone."""
    from huggingface_hub import snapshot_download

    repo = training_args.hub_model_id
    if not repo:
        raise ValueError("resume_from_checkpoint: hub needs hub_model_id (the repository the run pushed to)")
    target = os.path.join(training_args.output_dir, "hub-last-checkpoint")
    snapshot_download(repo_id=repo, allow_patterns=["last-checkpoint/*"], local_dir=target,
                      token=training_args.hub_token, revision=training_args.hub_revision)
    path = os.path.join(target, "last-checkpoint")
    if not os.path.isfile(os.path.join(path, "trainer_state.json")):
        raise FileNotFoundError(f"{repo}: no complete last-checkpoint/ on the store (was the run pushed with "
                                f"hub_strategy: checkpoint?)")
    logger.info("resuming from %s's last-checkpoint (downloaded to %s)", repo, path)
    return path


def _jsonable(value):
    """Plain JSON/YAML types only (enums become their values, unknown objects their str)."""
    from enum import Enum

    if isinstance(value, Enum):
        return value.value
    return json.loads(json.dumps(value, default=lambda v: v.value if isinstance(v, Enum) else str(v)))


def resolved_recipe(task: str, *arg_objects) -> dict:
    out = {"task": task}
    for obj in arg_objects:
        for f in dataclasses.fields(obj):
            if f.init:
                out[f.name] = _jsonable(getattr(obj, f.name))
    return out


def write_run_info(output_dir: str, task: str, argv: list[str], set_keys: dict, arg_objects) -> dict:
    os.makedirs(output_dir, exist_ok=True)
    info = {
        "hf_vtrain_version": __version__,
        "git_commit": git_commit(),
        "command": " ".join(shlex.quote(a) for a in ["hf_vtrain/run.py", *argv]),
        "recipe_keys_set": {k: _jsonable(v) for k, v in set_keys.items()},
    }
    with open(os.path.join(output_dir, "run_info.json"), "w") as handle:
        json.dump(info, handle, indent=2)
    with open(os.path.join(output_dir, "recipe_resolved.yaml"), "w") as handle:
        handle.write(f"# resolved by hf_vtrain {__version__} at commit {info['git_commit']}\n")
        yaml.safe_dump(resolved_recipe(task, *arg_objects), handle, sort_keys=True)
    return info


def setup_logging(training_args) -> None:
    import datasets
    import transformers

    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)], level=level, force=True)
    # One path for every message: transformers' own stderr handler off, its records propagated to the root handlers
    # (stdout and train.log). transformers turns propagation on by itself when CI=true, which with its handler on
    # printed every message twice.
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    datasets.utils.logging.set_verbosity(logging.WARNING)
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(training_args.output_dir, "train.log"))
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


def prepare(argv: list[str]) -> PreparedRun:
    """Everything before `train()`: parse, seed, logging, run info, checkpoint detection, data, model, trainer."""
    task_name = peek_key(argv, "task")
    spec = get_task(task_name)
    model_args, data_args, training_args, set_keys = parse_args(
        argv, (spec.model_args, spec.data_args, spec.training_args), extra_keys=RUN_KEYS
    )
    from hf_vtrain.trainers.base import outside_zero_init

    setup_logging(training_args)
    from transformers import enable_full_determinism, set_seed

    if training_args.full_determinism:
        enable_full_determinism(training_args.seed)
    else:
        set_seed(training_args.seed)

    output_dir = training_args.output_dir
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "latest", "last"):
        resume = find_last_checkpoint(output_dir)
        if resume is None:
            raise FileNotFoundError(f"resume_from_checkpoint={training_args.resume_from_checkpoint}: no complete "
                                    f"checkpoint in {output_dir}")
    elif isinstance(resume, str) and resume.lower() == "hub":
        with training_args.main_process_first(desc="download last-checkpoint"):
            resume = download_hub_checkpoint(training_args)
    elif resume is None:
        resume = find_last_checkpoint(output_dir)
        if resume:
            logger.info("found checkpoint %s in output_dir: resuming from it", resume)
    elif not os.path.isdir(resume):
        raise FileNotFoundError(f"resume_from_checkpoint: {resume} is not a folder")

    run_info = {}
    if training_args.should_save:
        run_info = write_run_info(output_dir, task_name, argv, set_keys, (model_args, data_args, training_args))

    with outside_zero_init():  # the DeepSpeed engine partitions the model when training starts (ZeRO-3)
        task = spec.setup(model_args, data_args, training_args)
    trainer = spec.trainer_cls(
        model=task.model,
        args=training_args,
        train_dataset=task.train_dataset,
        eval_dataset=task.eval_dataset,
        data_collator=task.data_collator,
        epoch_hooks=task.epoch_hooks,
        **task.trainer_kwargs,
    )
    trainer.run_info = {**run_info, "task": task_name, "description": spec.description}
    return PreparedRun(task_name, model_args, data_args, training_args, trainer, task, resume)


def execute(run: PreparedRun) -> dict:
    """train/resume -> save, metrics, curves -> final evaluation -> model card -> optional push."""
    from hf_vtrain.plotting import plot_training_curves

    trainer, output_dir = run.trainer, run.training_args.output_dir
    title = f"{run.task_name}: {os.path.basename(os.path.abspath(output_dir))}"
    results: dict = {}
    train_result = trainer.train(resume_from_checkpoint=run.resume)
    trainer.save_model(_internal_call=True)  # the push comes at the end, retried and reported (push_final)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    results.update(train_result.metrics)

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
    # Each process leaves its process group here, after its last collective, rather than at interpreter exit
    # (PyTorch asks for it: pending NCCL work is otherwise not waited for).
    trainer.accelerator.end_training()
    return results


class PushError(RuntimeError):
    """The final state of the run never reached the store; local files are intact."""


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


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if peek_key(argv, "validate_data_only"):
        spec = get_task(peek_key(argv, "task"))
        _, data_args, _, _ = parse_args(argv, (spec.model_args, spec.data_args, spec.training_args),
                                        extra_keys=RUN_KEYS)
        report = spec.validate(data_args)
        print(report.format())
        return {"ok": report.ok}
    return execute(prepare(argv))


def cli() -> None:
    """Errors in the user's input (recipe, corpus, task name) end the run with one message, no traceback."""
    from hf_vtrain.data.common import CorpusError

    from hf_vtrain.trainers.base import CheckpointSaveError, NonFiniteLossError

    try:
        result = main()
    except (RecipeError, CorpusError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)
    except PushError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(4)
    except CheckpointSaveError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(5)
    except KeyError as err:
        if "task" not in str(err):
            raise
        print(f"error: {err.args[0]}", file=sys.stderr)
        sys.exit(2)
    if result.get("ok") is False:
        sys.exit(1)


if __name__ == "__main__":
    cli()
