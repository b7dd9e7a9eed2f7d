"""Pytest fixtures for the loopback Hub server (tests/hub_server.py), the environment its clients need, and a check of
what it stored that uses only real git and git-lfs.

Register them in tests/conftest.py with `from tests.hub_fixtures import hub_env, hub_home, hub_server  # noqa: F401`.
Clients run in their own processes (`run_hub_client`, `hub_python`: forked from a zygote started with the client
environment) because huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_DISABLE_XET at import time; an in-process
client needs them set before huggingface_hub (or transformers) is first imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_server import HubServer, parse_lfs_pointer

HUB_TOKEN = "hf_vtrain_test_token"
REPO_ROOT = Path(__file__).resolve().parent.parent
GIT_LFS_MISSING = "git-lfs is not installed (Debian: apt-get install -y git-lfs)"


def hub_client_env(server: HubServer, hf_home: str | os.PathLike, token: str | None = HUB_TOKEN) -> dict[str, str]:
    """The environment of a subprocess that talks to `server` with huggingface_hub / transformers."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.pop("HF_TOKEN", None)
    env.update(
        HF_ENDPOINT=server.url,
        HF_HUB_DISABLE_XET="1",  # read at import time; otherwise the client asks for a Xet token first
        HF_HOME=str(hf_home),  # fresh cache and token store: downloads really hit the server
        HF_HUB_OFFLINE="0",
        TRANSFORMERS_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_hub_client(code: str, env: dict, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `python -c code` with `env`, forked from a zygote started with env's import-time variables (`hub_python`);
    on a non-zero exit (when `check`) fails the test with its output."""
    proc = hub_python([sys.executable, "-c", code], env, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"hub client exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def hub_python(cmd: list[str], env: dict, cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, env=env, capture_output=True, text=True) for a Hub client (`python script|-m module|-c
    code ...`), forked from this worker's zygote for env's HF_* variables (tests/distributed.run_python): torch and
    transformers imported once per worker instead of once per client (~6 s of CPU each)."""
    from tests.distributed import run_python

    return run_python(cmd, env, cwd=cwd, timeout=timeout, own_zygote=True)


def _git(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None) -> str:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    base_env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env={**base_env, **(env or {})}, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def verify_stored_repo(
    repo_dir: str | os.PathLike, clone_dir: str | os.PathLike, rev: str = "main", lfs_url: str | None = None
) -> Path:
    """Checks a stored repo with real git and git-lfs only, independent of the server's reading code.

    `git fsck --full` on the bare repo; `git clone file://...` (pointers only), `git lfs pull` (git-lfs fetches the
    objects from the bare repo's lfs/objects with its standalone file transfer), `git lfs fsck` (objects match their
    pointers); then every path that git's own attribute matching gives `filter=lfs` must hold a valid pointer
    (`git lfs pointer --check`). Returns the clone, whose working tree holds the real file contents.
    With `lfs_url` (`<server.url>/<repo_id>.git/info/lfs`, public repos only) git-lfs fetches the objects through the
    server's LFS batch API instead, as it would from the Hub.
    """
    if shutil.which("git-lfs") is None:
        pytest.skip(GIT_LFS_MISSING)
    repo_dir, clone_dir = Path(repo_dir), Path(clone_dir)
    _git("--git-dir", str(repo_dir), "fsck", "--full", "--strict")
    _git("clone", "--quiet", f"file://{repo_dir}", str(clone_dir), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    _git("checkout", "--quiet", rev, cwd=clone_dir)  # a branch, tag or commit sha
    _git("lfs", "install", "--local", cwd=clone_dir)  # without the filter config `lfs pull` skips the checkout
    if lfs_url is not None:
        _git("config", "lfs.url", lfs_url, cwd=clone_dir)
    _git("lfs", "pull", cwd=clone_dir)
    fsck = _git("lfs", "fsck", cwd=clone_dir)
    assert "Git LFS fsck OK" in fsck, fsck
    files = _git("ls-files", "-z", cwd=clone_dir).split("\0")
    attrs = _git("check-attr", "-z", "filter", "--", *[f for f in files if f], cwd=clone_dir).split("\0")
    tracked = [attrs[i] for i in range(0, len(attrs) - 2, 3) if attrs[i + 2] == "lfs"]
    for path in tracked:
        blob = subprocess.run(
            ["git", "cat-file", "blob", f"HEAD:{path}"], cwd=clone_dir, capture_output=True, check=True
        ).stdout
        check = subprocess.run(["git", "lfs", "pointer", "--check", "--stdin"], cwd=clone_dir, input=blob)
        assert check.returncode == 0 and parse_lfs_pointer(blob), f"{path} is tracked by LFS but is no pointer"
    return clone_dir


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """A loopback Hub server for the whole test session (repos persist; use a unique repo name per test)."""
    with HubServer(tmp_path_factory.mktemp("hub_root")) as server:
        yield server


@pytest.fixture(scope="session")
def hub_home(tmp_path_factory):
    """The HF_HOME of `hub_env`: one path for the session (so its clients can fork from one pre-imported zygote,
    huggingface_hub reading HF_HOME at import time), emptied for each test."""
    return tmp_path_factory.mktemp("hf_home")


def fresh_hub_client_env(server: HubServer, hub_home: Path) -> dict[str, str]:
    """`hub_client_env` on `hub_home` emptied first: a fresh cache and token store, on the one HF_HOME path whose
    clients share a zygote."""
    shutil.rmtree(hub_home)
    hub_home.mkdir()
    return hub_client_env(server, hub_home)


@pytest.fixture
def hub_env(hub_server, hub_home):
    """Subprocess environment for clients of `hub_server`, with the server's injections and logs reset around, and
    a fresh cache and token store (`fresh_hub_client_env`)."""
    hub_server.reset()
    yield fresh_hub_client_env(hub_server, hub_home)
    hub_server.reset()
