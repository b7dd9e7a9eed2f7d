"""Helpers for the multi-process tests: launching run.py under torchrun (gloo on CPU), reading why a launch failed,
spawning 2 gloo ranks in-process, DeepSpeed availability and ZeRO-3 config variants, comparing saved weights."""

import functools
import json
import os
import re
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(REPO, "hf_vtrain", "run.py")
ZERO2 = os.path.join(REPO, "recipes", "deepspeed", "zero2.json")
ZERO3 = os.path.join(REPO, "recipes", "deepspeed", "zero3.json")
# DeepSpeed JIT-compiles its CPU communication op on first use (minutes on 2 cores): cache it under .cache/.
EXTENSIONS = os.environ.get("TORCH_EXTENSIONS_DIR", os.path.join(REPO, ".cache", "torch_extensions"))


def launch_env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "TORCH_EXTENSIONS_DIR": EXTENSIONS, **extra}


def failure_text(proc) -> str:
    """The end of a failed multi-process run's output, plus every stderr line that says why a process died (a gloo
    abort's `what()` comes long before torchrun's summary, which fills the end of stderr)."""
    causes = [line for line in proc.stderr.splitlines()
              if re.search(r"what\(\)|Error|error:|Traceback|Signal|exitcode", line) and "Warning" not in line]
    return proc.stdout[-3000:] + "\n--- stderr, why ---\n" + "\n".join(causes[-40:]) + "\n--- stderr, end ---\n" + (
        proc.stderr[-2000:])


def torchrun(cwd, argv, nproc, script=None, expect_ok=True, **env):
    """`torchrun --standalone --nproc_per_node=nproc script argv` (script: run.py); asserts success unless told not."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(script or RUN_PY), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd, env=launch_env(**env))
    if expect_ok:
        assert proc.returncode == 0, failure_text(proc)
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_two_ranks(worker, tmp_path, *extra):
    """Runs worker(rank, 2, init_file, result_file, *extra) on 2 gloo ranks; each must write "ok" to
    result_file.<rank>."""
    import torch.multiprocessing as mp

    result = tmp_path / "result"
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(result), *extra), nprocs=2, join=True)
    for rank in range(2):
        assert (tmp_path / f"result.{rank}").read_text() == "ok"


@functools.cache
def deepspeed_import_error() -> str | None:
    proc = subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True, text=True, timeout=300)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["import failed"])[-1]


def skip_without_deepspeed() -> None:
    error = deepspeed_import_error()
    if error:
        pytest.skip(f"deepspeed is not importable ({error}); pip install -e .[deepspeed]")


def zero3_config(path, **zero_optimization) -> str:
    """The shipped ZeRO-3 config with `zero_optimization` keys replaced, written to `path`."""
    config = json.loads(open(ZERO3).read())
    config["zero_optimization"].update(zero_optimization)
    with open(path, "w") as handle:
        json.dump(config, handle)
    return str(path)


def weights(folder, name="model.safetensors"):
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, name))


def tensor_diffs(a, b) -> dict[str, float]:
    """Largest absolute difference per tensor of two state dicts with the same keys."""
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return {k: (a[k].double() - b[k].double()).abs().max().item() for k in a}


def run_until_file_then_sigkill(cmd, marker, env, timeout: float = 600, poll: float = 0.02) -> None:
    """Starts `cmd` in its own session and SIGKILLs its whole process group as soon as `marker` (a file the run writes,
    e.g. a checkpoint's trainer_state.json) exists: a hard interruption at a known point."""
    import signal
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + timeout
    while not os.path.isfile(marker):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, f"{marker} did not appear within {timeout} s"
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
