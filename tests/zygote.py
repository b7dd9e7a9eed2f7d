"""A pre-imported launcher for the multi-process tests: `torchrun`'s job (N ranks of a script with the rendezvous
variables torchrun sets), without each rank spending ~4 s of CPU importing torch, transformers, accelerate, datasets
and deepspeed. Most of a tiny test run is that import (cProfile of a tiny AdaTAD run: 8 of its 10 s), so a suite of
2-process launches on 2 cores is mostly imports.

The zygote is one process per test worker and import-time environment, started with that environment (the
launches', `launch_env()`; the Hub clients', `hub_fixtures.hub_python`) so everything read at import time
(OMP_NUM_THREADS, PYTHONPATH, TORCH_EXTENSIONS_DIR, HF_ENDPOINT, HF_HOME) is what a fresh process would read. It imports
the heavy modules once, then serves one launch at a time over a Unix socket: it forks a launcher (own session,
the request's cwd and environment, stdout/stderr to files), which forks the ranks; each rank runs the script as
`__main__` (runpy), as `python script args` would, then the atexit handlers, as a normal exit does. The launcher stops
the other ranks when one fails (as torchrun does) and exits with the first failure's status; a rank killed by a signal
counts as failed.

What it does not do, so the tests that check these use the real `torchrun` (`launcher="torchrun"`): torchrun's own
summary and `[rankN]:` output prefixes, its elastic agent's store, and a different environment at import time (the
client refuses a launch whose import-time variables, HF_*, OMP_*, TORCH_*, ..., differ from the zygote's). The
launchers users type (torchrun, deepspeed, accelerate launch) each keep tests of their own.

nproc 0 is one plain process, `python script args` (script "-m module": `python -m module args`; script "-c" with the
code as its first arg: `python -c code args`).

Protocol: one JSON line {script, args, nproc, cwd, env, stdout, stderr, port} -> one JSON line {"pid": launcher pid},
then, when the launch ended, {"returncode": N}.
"""

from __future__ import annotations

import json
import os
import random
import runpy
import signal
import socket
import sys
import traceback

PRELOAD = ("torch", "torch.distributed", "numpy", "datasets", "accelerate", "transformers", "transformers.trainer",
           "safetensors.torch", "matplotlib", "matplotlib.pyplot", "hf_vtrain.run", "hf_vtrain.predict",
           "hf_vtrain.tasks.tad", "hf_vtrain.tasks.vad", "hf_vtrain.tasks.har", "hf_vtrain.tasks.det", "deepspeed")


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # deepspeed not installed: the ranks that need it fail as they would anyway
            pass
    import numpy as np

    from hf_vtrain.models.adatad.postprocessing_adatad import soft_nms

    # numba loads the compiled soft-NMS from its cache on the first call (~0.5 s a process)
    soft_nms(np.array([[0.0, 1.0], [0.5, 1.5]]), np.array([0.9, 0.8]), np.array([0, 0]))


def _run_rank(script: str, args: list[str]) -> int:
    """`python script args` (or `python -m module args` for a script "-m module", `python -c code args` for a script
    "-c" whose first arg is the code) in this process."""
    random.seed()  # a fresh process seeds from the OS; a fork would share the zygote's state
    try:
        import numpy as np

        np.random.seed()
    except ImportError:
        pass
    module = script[3:] if script.startswith("-m ") else None
    code = args.pop(0) if script == "-c" else None
    sys.argv = [module or script, *args]
    sys.orig_argv = [sys.executable, *(["-m", module] if module else ["-c", code] if code is not None else [script]),
                     *args]
    sys.path[0] = "" if code is not None else os.getcwd() if module else os.path.dirname(os.path.abspath(script))
    try:
        if code is not None:
            exec(compile(code, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif module:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = stop.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - what the interpreter prints for an uncaught exception
        traceback.print_exc()
        return 1
    return 0


def _exit_code(script: str, args: list[str]) -> int:
    """The script's run, then what the interpreter does at exit: the atexit handlers (logging's flush and close,
    those torch, deepspeed and the run registered), as a process that ends normally runs them."""
    import atexit

    code = _run_rank(script, args)
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - the interpreter prints a failing handler and exits as it would
        traceback.print_exc()
    return code


def _launch(request: dict, started_fd: int) -> None:
    """The launcher child: never returns."""
    code = 1
    try:
        os.setsid()
        os.write(started_fd, b"1")
        os.close(started_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        nproc = int(request["nproc"])
        if nproc == 0:  # one plain process (no rendezvous variables): `python script args`
            code = _exit_code(request["script"], request["args"])
            return
        ranks = {}
        for rank in range(nproc):
            pid = os.fork()
            if pid == 0:
                os.environ.update({
                    "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                    "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1",
                    "ROLE_RANK": str(rank), "ROLE_WORLD_SIZE": str(nproc), "ROLE_NAME": "default",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(request["port"]),
                    "TORCHELASTIC_RUN_ID": "zygote", "TORCHELASTIC_RESTART_COUNT": "0",
                    "TORCHELASTIC_MAX_RESTARTS": "0",
                })
                rc = _exit_code(request["script"], request["args"])
                sys.stdout.flush(), sys.stderr.flush()
                os._exit(rc)
            ranks[pid] = rank
        code = 0
        while ranks:
            pid, status = os.wait()
            ranks.pop(pid, None)
            rc = os.waitstatus_to_exitcode(status)
            if rc != 0 and code == 0:
                code = rc if rc > 0 else 128 - rc
                print(f"zygote launcher: rank exited with {rc}; stopping the others", file=sys.stderr)
                for other in ranks:
                    try:
                        os.kill(other, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush(), sys.stderr.flush()
        finally:
            os._exit(code)


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the test worker that started it ends, however it ends (Linux's PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:  # the parent ended before the call
        os._exit(1)


def _send(conn: socket.socket, message: dict) -> bool:
    try:
        conn.sendall((json.dumps(message) + "\n").encode())
        return True
    except OSError:  # the client is gone (its test failed or timed out)
        return False


def serve(path: str, ready_fd: int) -> None:
    """Accepts launches and reports their ends; several may run at once. A client that disconnects before its
    launch ended takes the launch with it (its process group is killed): nothing outlives the test that started it."""
    import select

    _die_with_parent(int(os.environ["HFV_ZYGOTE_PARENT"]))
    _preload()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    os.write(ready_fd, b"ready\n")  # a pipe of its own: deepspeed's import prints to stdout
    os.close(ready_fd)
    running: dict[int, socket.socket] = {}  # launcher pid -> its client's connection
    while True:
        ready, _, _ = select.select([server, *running.values()], [], [], 0.05)
        for conn in ready:
            if conn is server:
                client, _ = server.accept()
                line = client.makefile("r").readline()
                if not line:
                    client.close()
                    continue
                request = json.loads(line)
                if request.get("stop"):
                    return
                started_r, started_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    server.close()
                    for other in (client, *running.values()):
                        other.close()
                    os.close(started_r)
                    _launch(request, started_w)
                os.close(started_w)
                os.read(started_r, 1)  # its own session exists: the client may signal the group from now on
                os.close(started_r)
                if _send(client, {"pid": pid}):
                    running[pid] = client
                else:
                    os.killpg(pid, signal.SIGKILL)
                    client.close()
            else:  # a client sends nothing after its request: readable means it disconnected
                pid = next(p for p, c in running.items() if c is conn)
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        while True:  # reap the launches that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = running.pop(pid, None)
            if conn is not None:
                _send(conn, {"returncode": os.waitstatus_to_exitcode(status)})
                conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
