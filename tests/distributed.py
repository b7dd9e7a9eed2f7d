"""Helpers for the multi-process tests: launching run.py under torchrun (gloo on CPU), reading why a launch failed,
spawning 2 gloo ranks in-process, DeepSpeed availability and ZeRO-3 config variants, comparing saved weights."""

import functools
import json
import os
import re
import socket
import subprocess
import sys
import time

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


def torchrun(cwd, argv, nproc, script=None, expect_ok=True, launcher="zygote", **env):
    """`torchrun --standalone --nproc_per_node=nproc script argv` (script: run.py); asserts success unless told not.
    launcher "zygote" (the default): the same ranks and rendezvous variables, forked from this worker's pre-imported
    launcher (tests/zygote.py) instead of each rank importing torch and transformers anew; "torchrun": the real one,
    for tests of what torchrun itself prints or does."""
    if launcher == "zygote":
        proc = _zygote_launch(cwd, str(script or RUN_PY), [str(a) for a in argv], nproc, launch_env(**env))
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(script or RUN_PY), *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd, env=launch_env(**env))
    if expect_ok:
        assert proc.returncode == 0, failure_text(proc)
    return proc


ZYGOTE_PY = os.path.join(REPO, "tests", "zygote.py")
# this worker's zygotes, by the import-time part of their environment: the launches' (launch_env()) and the Hub
# clients' (tests/hub_fixtures.hub_env); each holds torch, transformers and deepspeed imported (~0.5 GB)
_ZYGOTES: dict[tuple, dict] = {}
_MAX_ZYGOTES = 3

# read when a module is imported (or when torch's thread pools start), so a launch cannot change them in the zygote
IMPORT_TIME_ENV = re.compile(r"^(HF_|HUGGINGFACE_|TRANSFORMERS_|OMP_|MKL_|PYTHON|TORCH_|CUDA_|DS_|MPLBACKEND)")


def _import_time(env: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in env.items() if IMPORT_TIME_ENV.match(k)))


def _zygote(env: dict) -> dict:
    """This worker's zygote for `env`'s import-time variables (started on first use, with `env`): {proc, path, env}."""
    import atexit
    import shutil
    import tempfile

    key = _import_time(env)
    zygote = _ZYGOTES.pop(key, None)
    if zygote is not None and zygote["proc"].poll() is None:
        _ZYGOTES[key] = zygote  # most recently used last
        return zygote
    while len(_ZYGOTES) >= _MAX_ZYGOTES:  # the least recently used goes
        _ZYGOTES.pop(next(iter(_ZYGOTES)))["proc"].kill()
    folder = tempfile.mkdtemp(prefix="hfv-zygote-")  # short: a Unix socket path has at most 107 bytes
    path = os.path.join(folder, "sock")
    log = open(os.path.join(folder, "log"), "wb")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, ZYGOTE_PY, path, str(write_end)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env={**env, "HFV_ZYGOTE_PARENT": str(os.getpid())},
                            cwd=REPO, pass_fds=(write_end,))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # runs after the kill below (atexit is LIFO)
    atexit.register(proc.kill)  # it also dies with this process (PR_SET_PDEATHSIG)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as ready:
        line = ready.readline()
    assert line.strip() == b"ready", (f"the test launcher {ZYGOTE_PY} did not start:\n"
                                      + open(os.path.join(folder, "log"), errors="replace").read()[-3000:])
    _ZYGOTES[key] = {"proc": proc, "path": path, "env": dict(env)}
    return _ZYGOTES[key]


class Launched:
    """A launch through the zygote, as subprocess.Popen: pid (its own session: os.killpg(pid) stops all of it),
    poll(), wait(); after the end, returncode and the captured stdout / stderr."""

    def __init__(self, cwd, script: str, args: list[str], nproc: int, env: dict, own_zygote: bool = False):
        import tempfile

        zygote = _zygote(env if own_zygote else launch_env())
        base = zygote["env"]
        changed = sorted(k for k in set(env) | set(base) if IMPORT_TIME_ENV.match(k) and env.get(k) != base.get(k))
        assert not changed, (f"{changed} differ from the zygote's environment and are read at import time: launch "
                             f"this with launcher='torchrun' (or a plain subprocess)")
        self._logs = tempfile.TemporaryDirectory(prefix="hfv-launch-")
        self.args = [script, *args]
        request = {"script": script, "args": args, "nproc": nproc, "cwd": str(cwd), "env": env,
                   "stdout": os.path.join(self._logs.name, "stdout"),
                   "stderr": os.path.join(self._logs.name, "stderr"), "port": free_port()}
        self._request = request
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(zygote["path"])
        self._stream = self._conn.makefile("rw")
        self._stream.write(json.dumps(request) + "\n")
        self._stream.flush()
        self.pid = json.loads(self._stream.readline())["pid"]
        self.returncode = self.stdout = self.stderr = None

    def _finish(self, line: str) -> int:
        self.returncode = json.loads(line)["returncode"]
        self.stdout, self.stderr = (  # none: killed before it opened them
            open(self._request[name], encoding="utf-8", errors="replace").read()
            if os.path.exists(self._request[name]) else "" for name in ("stdout", "stderr"))
        self._stream.close(), self._conn.close(), self._logs.cleanup()
        return self.returncode

    def poll(self):
        import select

        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self._finish(self._stream.readline())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import signal

        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                line = self._stream.readline()
            except socket.timeout:
                os.killpg(self.pid, signal.SIGKILL)
                self._conn.settimeout(None)
                self._finish(self._stream.readline())
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            self._finish(line)
        return self.returncode


def _zygote_launch(cwd, script: str, args: list[str], nproc: int, env: dict, timeout: float = 900,
                   own_zygote: bool = False):
    launched = Launched(cwd, script, args, nproc, env, own_zygote)
    launched.wait(timeout)
    return subprocess.CompletedProcess(launched.args, launched.returncode, launched.stdout, launched.stderr)


def _python_target(cmd: list[str]) -> tuple[str, list[str]]:
    """(script, args) of `[python, script, *args]`, ("-m module", args) of `[python, "-m", module, *args]`, or
    ("-c", [code, *args]) of `[python, "-c", code, *args]`."""
    assert cmd[0] == sys.executable, cmd
    if cmd[1] == "-c":
        return "-c", [str(a) for a in cmd[2:]]
    script, args = (f"-m {cmd[2]}", cmd[3:]) if cmd[1] == "-m" else (cmd[1], cmd[2:])
    return script, [str(a) for a in args]


def run_python(cmd: list[str], env: dict, cwd=None, timeout: float = 900, own_zygote: bool = False):
    """subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd), forked from the zygote (one plain
    process, no rendezvous variables). `own_zygote`: from a zygote started with `env` itself (the Hub clients', whose
    HF_* variables differ from the launches'), instead of the launches' zygote."""
    return _zygote_launch(cwd or os.getcwd(), *_python_target(cmd), 0, {k: str(v) for k, v in env.items()}, timeout,
                          own_zygote)


def popen_python(cmd: list[str], env: dict, cwd=None) -> Launched:
    """subprocess.Popen(cmd, env=env, start_new_session=True), forked from the zygote."""
    return Launched(cwd or os.getcwd(), *_python_target(cmd), 0, {k: str(v) for k, v in env.items()})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_two_ranks(worker, tmp_path, *extra):
    """Runs worker(rank, 2, init_file, result_file, *extra) (a module-level function of a test module; string
    extras) on 2 gloo ranks forked from the zygote; each must write "ok" to result_file.<rank>."""
    result = tmp_path / "result"
    proc = _zygote_launch(REPO, "-m tests.ranked_call", [worker.__module__, worker.__qualname__,
                                                         str(tmp_path / "init"), str(result), *map(str, extra)],
                          2, launch_env())
    assert proc.returncode == 0, failure_text(proc)
    for rank in range(2):
        assert (tmp_path / f"result.{rank}").read_text() == "ok"


@functools.cache
def deepspeed_import_error() -> str | None:
    proc = subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True, text=True, timeout=300)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["import failed"])[-1]


def build_deepspeed_cpu_comm() -> str:
    """Builds DeepSpeed's shared-memory communication op into EXTENSIONS (torch's JIT loader: again only when its
    sources, flags or include paths changed, e.g. a new .venv); what was done, in words.

    DeepSpeed JIT-compiles that op (two C++ files against torch's headers: ~50 s on 2 cores) the first time a process
    initialises its CPU backend; the tests share one build per checkout through EXTENSIONS, and scripts/test.sh calls
    this before pytest, so that a fresh checkout's suite does not spend its first DeepSpeed test building it."""
    os.environ["TORCH_EXTENSIONS_DIR"] = EXTENSIONS
    try:
        import deepspeed.ops
        from deepspeed.accelerator import get_accelerator
    except Exception as err:  # not installed, or failing at import: its tests skip saying so
        return f"DeepSpeed's CPU comm op: not built, deepspeed is not importable ({type(err).__name__}: {err})"
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):  # as deepspeed.comm decides
        return f"DeepSpeed's CPU comm op: not used here ({get_accelerator().device_name()} accelerator)"
    started = time.perf_counter()
    builder.load(verbose=False)
    return f"DeepSpeed's CPU comm op: ready in {EXTENSIONS} ({time.perf_counter() - started:.1f} s)"


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


def marker_complete(marker) -> bool:
    """The marker file exists and, for JSON (a checkpoint's trainer_state.json, written last but not atomically),
    holds its whole content: the checkpoint is complete."""
    if not os.path.isfile(marker):
        return False
    if not str(marker).endswith(".json"):
        return True
    try:
        with open(marker, encoding="utf-8") as handle:
            json.load(handle)
        return True
    except ValueError:
        return False


def run_until_file_then_sigkill(cmd, marker, env, timeout: float = 600, poll: float = 0.02) -> None:
    """Starts `cmd` in its own session and SIGKILLs its whole process group as soon as `marker` (a file the run writes,
    e.g. a checkpoint's trainer_state.json) is complete: a hard interruption at a known point."""
    import signal

    proc = popen_python(cmd, env)  # its own session, as Popen(start_new_session=True), forked from the zygote
    deadline = time.time() + timeout
    while not marker_complete(marker):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, f"{marker} did not appear within {timeout} s"
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


if __name__ == "__main__":  # python -m tests.distributed build-deepspeed-ops (scripts/test.sh)
    if sys.argv[1:] != ["build-deepspeed-ops"]:
        sys.exit("usage: python -m tests.distributed build-deepspeed-ops")
    print(build_deepspeed_cpu_comm(), flush=True)
