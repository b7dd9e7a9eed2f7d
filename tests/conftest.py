"""Test session settings: no Hub traffic, quiet tokenizers, deterministic single-threaded decode."""

import os

# Read by huggingface_hub at import time: servers other than the Hub need Xet disabled (FIELD_NOTES).
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from tests.hub_fixtures import hub_env, hub_server  # noqa: E402,F401  (loopback Hub-API server, session-scoped)


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def require_deepspeed():
    """Skips (saying why) where deepspeed cannot be imported; CI installs it (.ci/run), so its tests run there."""
    from tests.distributed import skip_without_deepspeed

    skip_without_deepspeed()
