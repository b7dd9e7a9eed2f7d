"""Test session settings: no Hub traffic, quiet tokenizers, deterministic single-threaded decode."""

import os

# Read by huggingface_hub at import time: servers other than the Hub need Xet disabled (huggingface_hub 2.4 asks every
# server for a Xet write token first).
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N (scripts/test.sh): the cores shared out, no oversubscription
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

from tests.hub_fixtures import hub_env, hub_home, hub_server  # noqa: E402,F401  (loopback Hub-API server, session-scoped)


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def require_deepspeed():
    """Skips (saying why) where deepspeed cannot be imported; CI installs it (.ci/run), so its tests run there."""
    from tests.distributed import skip_without_deepspeed

    skip_without_deepspeed()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Skipped tests, grouped by reason with the command that enables them, in the run's last lines: the README's
    test command must say loudly when it did not run the suite CI runs."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    groups: dict[str, int] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        groups[reason] = groups.get(reason, 0) + 1
    terminalreporter.write_sep("!", f"{len(skipped)} TESTS SKIPPED: this is not the suite CI runs", red=True, bold=True)
    for reason, count in sorted(groups.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"  {count:>3} skipped: {reason}", red=True)
