#!/usr/bin/env bash
# Sets up .venv and runs the default test suite (not slow, not gpu): the suite CI runs (.ci/run calls this).
# DeepSpeed comes with the venv (the `deepspeed` extra); git-lfs (the Hub-push tests check what the server stored with
# real git + git-lfs) is installed from Debian's packages when this runs as root and it is missing. Whatever still
# cannot run is listed, with the command that enables it, in the last lines. The tests run in one worker per core
# (pytest-xdist; `-n 0` runs them in this process) and the slowest 25 are listed at the end. Extra arguments go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v git-lfs >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing git-lfs (apt-get) for the Hub-push tests ..."
  (apt-get update -qq && apt-get install -y -qq git-lfs) >/dev/null 2>&1 || echo "warning: git-lfs could not be installed"
fi
bash scripts/setup_env.sh tests,deepspeed
# DeepSpeed JIT-builds its CPU communication op (~50 s on 2 cores) in the first process that starts it on CPU: built
# here once per checkout, into the cache the tests use (tests/distributed.py), so the suite's time is its tests'.
.venv/bin/python -m tests.distributed build-deepspeed-ops ||
  echo "warning: DeepSpeed's CPU comm op did not build (above); the DeepSpeed tests will fail on the same error"
exec .venv/bin/python -m pytest -n auto --dist worksteal --durations=25 "$@"
