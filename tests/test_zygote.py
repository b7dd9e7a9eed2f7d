"""The tests' pre-imported launcher (tests/zygote.py) does what the tests rely on from torchrun and Popen: torchrun's
rank variables, captured output, the first failing rank's status with the others stopped, a process group that
SIGKILL ends, and a refusal where the launch's import-time environment is not the zygote's."""

import os
import signal
import sys
import time

import pytest

from tests.distributed import Launched, _zygote_launch, launch_env, popen_python, run_python

SCRIPT = """
import os, sys, time
print("rank", os.environ["RANK"], "of", os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"],
      os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], sys.argv[1:], os.environ.get("HFV_EXTRA"), flush=True)
if os.environ["RANK"] == "1" and sys.argv[1] == "fail":
    sys.exit(3)
if sys.argv[1] == "fail":
    time.sleep(60)  # stopped by the launcher once rank 1 failed
"""


def test_ranks_get_torchruns_variables_and_the_first_failure_stops_the_others(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    done = _zygote_launch(tmp_path, str(script), ["ok"], 2, launch_env(HFV_EXTRA="x"))
    assert done.returncode == 0, done.stderr
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("rank"))
    assert len(lines) == 2 and lines[0].startswith("rank 0 of 2 0 127.0.0.1") and lines[1].startswith("rank 1 of 2 1")
    assert all(line.endswith("['ok'] x") for line in lines)
    started = time.time()
    failed = _zygote_launch(tmp_path, str(script), ["fail"], 2, launch_env())
    assert failed.returncode == 3 and time.time() - started < 30  # rank 0 did not sleep its 60 s out
    assert "rank exited with 3; stopping the others" in failed.stderr


def test_one_plain_process_as_popen_and_run(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text("import os, sys, time\nprint('RANK' in os.environ, os.getcwd(), sys.argv[1:])\n"
                      "sys.exit(int(sys.argv[1])) if sys.argv[1] != 'sleep' else time.sleep(60)\n")
    done = run_python([sys.executable, str(script), "5"], launch_env(), cwd=tmp_path)
    assert done.returncode == 5 and done.stdout.strip() == f"False {tmp_path} ['5']"
    proc = popen_python([sys.executable, str(script), "sleep"], launch_env(), cwd=tmp_path)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)  # its own session, as Popen(start_new_session=True)
    assert proc.wait(30) == -signal.SIGKILL


def test_an_import_time_variable_the_zygote_did_not_see_is_refused(tmp_path):
    with pytest.raises(AssertionError, match=r"\['HF_ENDPOINT'\] differ from the zygote's environment"):
        Launched(tmp_path, str(tmp_path / "any.py"), [], 0, launch_env(HF_ENDPOINT="http://127.0.0.1:1"))


def test_a_client_that_goes_away_takes_its_launch_with_it(tmp_path):
    """A test that fails while its launch runs leaves nothing running, and the zygote goes on serving the others."""
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(60)\n")
    proc = popen_python([sys.executable, str(script)], launch_env(), cwd=tmp_path)
    proc._stream.close(), proc._conn.close()  # as when the test holding it ends
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the launch outlived its client")
    quick = tmp_path / "quick.py"
    quick.write_text("print('served')\n")
    done = run_python([sys.executable, str(quick)], launch_env(), cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == "served\n"
