#!/usr/bin/env bash
# Sets up .venv and runs the default test suite (not slow, not gpu). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh tests
exec .venv/bin/python -m pytest "$@"
