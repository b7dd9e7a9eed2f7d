"""The loopback Hub server against the real clients (huggingface_hub 2.4, transformers' push_to_hub and Trainer), and
what it stores checked with real git and git-lfs.

Clients run in subprocesses so that HF_ENDPOINT and HF_HUB_DISABLE_XET are set before huggingface_hub is imported.
"""

import hashlib
import http.client
import json
import os
import subprocess
import textwrap
import urllib.error
import urllib.request

import pytest

from tests.hub_fixtures import HUB_TOKEN, fresh_hub_client_env, run_hub_client, verify_stored_repo  # fixtures: conftest

AUTH = {"Authorization": f"Bearer {HUB_TOKEN}"}


def _http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def _result(proc):
    """The JSON a client script printed on its last `RESULT ` line."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT ") :])


def test_protocol_auth_lfs_verification_and_injection(hub_server, hub_env):
    url = hub_server.url
    assert _http("POST", f"{url}/api/repos/create", {"name": "raw", "private": True})[0] == 401  # no token
    status, _, body = _http("POST", f"{url}/api/repos/create", {"name": "raw", "visibility": "private"}, AUTH)
    assert status == 200 and json.loads(body)["url"] == f"{url}/tester/raw"
    status, _, body = _http("POST", f"{url}/api/repos/create", {"name": "raw"}, AUTH)
    assert status == 409 and json.loads(body)["url"] == f"{url}/tester/raw"

    # private repo: anonymous reads refused, authenticated ones answered with the headers hf_hub_download needs
    assert _http("GET", f"{url}/tester/raw/resolve/main/.gitattributes")[0] == 401
    status, headers, body = _http("HEAD", f"{url}/tester/raw/resolve/main/.gitattributes", headers=AUTH)
    assert status == 200 and len(headers["X-Repo-Commit"]) == 40 and headers["ETag"]
    assert int(headers["Content-Length"]) > 0 and body == b""
    status, headers, _ = _http("GET", f"{url}/tester/raw/resolve/main/missing.txt", headers=AUTH)
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"

    # Xet is refused with a message that says what to do
    status, _, body = _http("GET", f"{url}/api/models/tester/raw/xet-write-token/main", headers=AUTH)
    assert status == 501 and "HF_HUB_DISABLE_XET=1" in json.loads(body)["error"]

    # LFS: the object must hash to its oid and have its declared size
    data = os.urandom(2048)
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    status, _, body = _http("POST", f"{url}/tester/raw.git/info/lfs/objects/batch", batch, AUTH)
    actions = json.loads(body)["objects"][0]["actions"]
    upload, verify = actions["upload"]["href"], actions["verify"]["href"]
    status, _, body = _http("PUT", upload, data[:-1] + bytes([data[-1] ^ 0xFF]))  # last byte always differs
    assert status == 400 and "sha256" in json.loads(body)["error"]
    assert _http("PUT", upload.split("&sig=")[0] + "&sig=0", data)[0] == 403
    commit = b"\n".join(
        json.dumps(line).encode()
        for line in (
            {"key": "header", "value": {"summary": "add weights"}},
            {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}},
        )
    )
    assert _http("POST", f"{url}/api/models/tester/raw/commit/main", commit, AUTH)[0] == 422  # not uploaded yet
    assert _http("POST", verify, {"oid": oid, "size": len(data)}, AUTH)[0] == 404
    assert _http("PUT", upload, data)[0] == 200
    assert _http("POST", verify, {"oid": oid, "size": len(data)}, AUTH)[0] == 200
    assert hub_server.lfs_object_path("tester/raw", oid).read_bytes() == data
    status, _, body = _http("POST", f"{url}/api/models/tester/raw/commit/main", commit, AUTH)
    assert status == 200 and len(json.loads(body)["commitOid"]) == 40
    status, headers, body = _http("GET", f"{url}/tester/raw/resolve/main/w.bin", headers=AUTH)
    assert body == data and headers["X-Linked-Etag"] == f'"{oid}"' and headers["X-Linked-Size"] == str(len(data))
    status, headers, body = _http("GET", f"{url}/tester/raw/resolve/main/w.bin", headers={**AUTH, "Range": "bytes=10-"})
    assert status == 206 and body == data[10:]

    # injection: N failures then it clears by itself; "drop" closes the connection unanswered
    hub_server.inject("whoami", status=503, count=2)
    assert [_http("GET", f"{url}/api/whoami-v2", headers=AUTH)[0] for _ in range(3)] == [503, 503, 200]
    hub_server.inject("any", status="drop", times=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        _http("GET", f"{url}/api/whoami-v2", headers=AUTH)
    hub_server.reachable = False
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        _http("GET", f"{url}/api/whoami-v2", headers=AUTH)
    hub_server.reachable = True
    assert hub_server.pending_injections == 0
    assert hub_server.requests[-2:] == [("GET", "/api/whoami-v2", 200), ("GET", "/api/whoami-v2", 0)]  # 0: dropped
    assert hub_server.tokens.count(HUB_TOKEN) >= 10 and hub_server.unhandled == []


UPLOAD_SCRIPT = textwrap.dedent(
    """
    import json, os
    from pathlib import Path
    import numpy as np
    from safetensors.numpy import save_file
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    src = Path(os.environ["T_SRC"])
    (src / "sub").mkdir(parents=True)
    (src / "README.txt").write_text("a small text file\\n")
    (src / "notes").mkdir()
    (src / "notes" / "big log.txt").write_text("line of a long log\\n" * 300)  # over the lowered LFS threshold
    save_file({"w": np.arange(600, dtype=np.float32).reshape(20, 30)}, str(src / "sub" / "model.safetensors"))

    api = HfApi()
    repo_id = api.create_repo("roundtrip", private=True).repo_id
    api.upload_folder(repo_id=repo_id, folder_path=str(src), commit_message="first upload")
    files = api.list_repo_files(repo_id)
    tree = [(e.path, getattr(e, "lfs", None) is not None) for e in api.list_repo_tree(repo_id, recursive=True)]
    same = all(
        Path(hf_hub_download(repo_id, f)).read_bytes() == (src / f).read_bytes()
        for f in ("README.txt", "notes/big log.txt", "sub/model.safetensors")
    )
    try:
        hf_hub_download(repo_id, "README.txt", token=False, cache_dir=str(src.parent / "anon_cache"))
        anonymous = "allowed"
    except RepositoryNotFoundError:
        anonymous = "refused"
    snapshot = Path(snapshot_download(repo_id, cache_dir=str(src.parent / "snapshot_cache")))
    same = same and all((snapshot / f).read_bytes() == (src / f).read_bytes()
                        for f in ("README.txt", "notes/big log.txt", "sub/model.safetensors"))
    unchanged = api.upload_folder(repo_id=repo_id, folder_path=str(src), commit_message="same files again")
    api.delete_file("README.txt", repo_id, commit_message="delete the text file")
    api.create_branch(repo_id, branch="dev")
    commits = [c.title for c in api.list_repo_commits(repo_id)]
    print("RESULT " + json.dumps({
        "repo_id": repo_id, "files": files, "tree": tree, "same": same, "anonymous": anonymous,
        "files_after": api.list_repo_files(repo_id), "commits": commits, "head_after_noop": unchanged.oid,
        "branches": sorted(b.name for b in api.list_repo_refs(repo_id).branches),
        "private": api.model_info(repo_id).private,
    }))
    """
)


def test_upload_folder_download_delete_and_git_lfs_storage(hub_server, hub_env, tmp_path):
    hub_server.lfs_threshold = 4096  # so a text file goes to LFS by size, as a 10 MB one would on the Hub
    hub_server.page_size = 2  # the tree listing must follow the Link header across pages
    result = _result(run_hub_client(UPLOAD_SCRIPT, {**hub_env, "T_SRC": str(tmp_path / "src")}))
    assert result["repo_id"] == "tester/roundtrip" and result["private"] is True
    assert sorted(result["files"]) == [".gitattributes", "README.txt", "notes/big log.txt", "sub/model.safetensors"]
    lfs = {path: is_lfs for path, is_lfs in result["tree"]}
    assert lfs == {".gitattributes": False, "README.txt": False, "notes": False, "notes/big log.txt": True,
                   "sub": False, "sub/model.safetensors": True}  # fmt: skip
    assert result["same"] and result["anonymous"] == "refused"
    assert sorted(result["files_after"]) == [".gitattributes", "notes/big log.txt", "sub/model.safetensors"]
    assert result["commits"] == ["delete the text file", "first upload", "initial commit"]  # no-op push skipped
    assert result["branches"] == ["dev", "main"]
    assert any("cursor=" in r["query"] for r in hub_server.request_log if r["endpoint"] == "tree")
    # every call but the presigned-style LFS PUTs and the anonymous download carried the token
    anonymous = [r for r in hub_server.request_log if r["token"] is None]
    assert {r["endpoint"] for r in anonymous} <= {"lfs_upload", "resolve", "agent_harnesses"}
    assert [r["status"] for r in anonymous if r["endpoint"] == "resolve"] == [401]

    clone = verify_stored_repo(hub_server.repo_dir("tester/roundtrip"), tmp_path / "clone")
    src = tmp_path / "src"
    for path in ("notes/big log.txt", "sub/model.safetensors"):
        assert (clone / path).read_bytes() == (src / path).read_bytes()
    assert not (clone / "README.txt").exists()
    assert "/notes/big" not in (clone / ".gitattributes").read_text()  # nested path written without leading slash
    assert "notes/big[[:space:]]log.txt filter=lfs" in (clone / ".gitattributes").read_text()
    first = verify_stored_repo(hub_server.repo_dir("tester/roundtrip"), tmp_path / "clone_dev", rev="dev")
    assert (first / "notes/big log.txt").read_bytes() == (src / "notes/big log.txt").read_bytes()


PUSH_SCRIPT = textwrap.dedent(
    """
    import json, torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = BertModel(config)
    model.push_to_hub("tester/tiny-bert", private=True)
    loaded = BertModel.from_pretrained("tester/tiny-bert")
    a, b = model.state_dict(), loaded.state_dict()
    print("RESULT " + json.dumps({"same_keys": a.keys() == b.keys(),
                                  "same_values": all(torch.equal(a[k], b[k]) for k in a)}))
    """
)


def test_transformers_push_to_hub_then_from_pretrained(hub_server, hub_env, tmp_path):
    result = _result(run_hub_client(PUSH_SCRIPT, hub_env))
    assert result == {"same_keys": True, "same_values": True}
    assert not [r for r in hub_server.request_log if r["status"] >= 500]
    clone = verify_stored_repo(hub_server.repo_dir("tester/tiny-bert"), tmp_path / "clone")
    assert (clone / "model.safetensors").stat().st_size > 1000 and (clone / "config.json").is_file()


TRAINER_SCRIPT = textwrap.dedent(
    """
    import json, os, urllib.request, torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    class WaitForPush(TrainerCallback):
        # Makes every checkpoint push finish before training goes on: deterministic commits, and no race with the
        # next save overwriting output_dir files that a background upload is still reading (see the race scenario).
        def __init__(self, trainer_ref):
            self.trainer_ref = trainer_ref

        def on_save(self, args, state, control, **kwargs):
            trainer = self.trainer_ref[0]
            if trainer.push_in_progress is not None:
                trainer.push_in_progress.wait_until_done()

    def hub_control(route, payload):
        request = urllib.request.Request(os.environ["HF_ENDPOINT"] + route, data=json.dumps(payload).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).read()

    def run(out, repo, always_push):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=32, num_labels=2)
        data = [{"input_ids": torch.randint(0, 64, (8,)), "labels": torch.tensor(i % 2)} for i in range(16)]
        args = TrainingArguments(
            output_dir=out, max_steps=4, save_strategy="steps", save_steps=2, per_device_train_batch_size=4,
            use_cpu=True, report_to=[], disable_tqdm=True, logging_steps=10,
            push_to_hub=True, hub_model_id=repo, hub_strategy="checkpoint", hub_always_push=always_push,
        )
        trainer_ref = []
        callbacks = [] if always_push else [WaitForPush(trainer_ref)]
        trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=data,
                          callbacks=callbacks)
        trainer_ref.append(trainer)
        steps = trainer.train().global_step
        jobs = trainer.push_in_progress.jobs if trainer.push_in_progress is not None else []
        background = [repr(job.exception()) if job.exception() else None for job in jobs]
        try:
            trainer.push_to_hub()
            final = None
        except Exception as err:
            final = type(err).__name__ + ": " + str(err).splitlines()[0]
        return {"steps": steps, "background_errors": background, "final_error": final}

    results = {}
    for scenario in json.loads(os.environ["T_SCENARIOS"]):
        for injection in scenario["inject"]:
            hub_control("/_hub/inject", injection)
        results[scenario["name"]] = run(scenario["out"], scenario["repo"], scenario["always_push"])
        hub_control("/_hub/clear", {})
    print("RESULT " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def trainer_runs(hub_server, hub_home, tmp_path_factory):
    """One subprocess (one transformers import) runs the three Trainer scenarios; returns results and request logs."""
    tmp = tmp_path_factory.mktemp("trainer_runs")
    scenarios = [
        {"name": "ok", "repo": "tester/trainer-ckpt", "always_push": False, "inject": []},
        # every commit fails: the checkpoint pushes of steps 2 and 4, then the final push
        {"name": "fail", "repo": "tester/trainer-fail", "always_push": False,
         "inject": [{"fail": "commit", "status": 500, "count": 100}]},
        # a slow LFS batch answer keeps the step-2 push waiting while training reaches step 4; with hub_always_push
        # the Trainer copies the step-4 weights over output_dir/model.safetensors before that upload reads it
        {"name": "race", "repo": "tester/trainer-race", "always_push": True,
         "inject": [{"fail": "lfs_batch", "status": None, "count": 1, "delay": 5}]},
    ]  # fmt: skip
    for scenario in scenarios:
        scenario["out"] = str(tmp / scenario["name"])
    hub_server.reset()
    env = {**fresh_hub_client_env(hub_server, hub_home), "T_SCENARIOS": json.dumps(scenarios)}
    results = _result(run_hub_client(TRAINER_SCRIPT, env))
    log = list(hub_server.request_log)
    hub_server.reset()
    return {s["name"]: {**results[s["name"]], "out": tmp / s["name"],
                        "log": [r for r in log if s["repo"] + "/" in r["path"] or s["repo"] + ".git" in r["path"]]}
            for s in scenarios}  # fmt: skip


def test_trainer_checkpoint_pushes(hub_server, trainer_runs, tmp_path):
    run = trainer_runs["ok"]
    assert (run["steps"], run["background_errors"], run["final_error"]) == (4, [None, None], None)
    clone = verify_stored_repo(hub_server.repo_dir("tester/trainer-ckpt"), tmp_path / "clone")
    log = [line.split(" ", 1) for line in _git_log(clone)]
    assert [title for _, title in log] == [
        "End of training", "Training in progress, step 4, checkpoint", "Training in progress, step 4",
        "Training in progress, step 2, checkpoint", "Training in progress, step 2", "initial commit",
    ]  # fmt: skip
    state = json.loads((clone / "last-checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    local = run["out"] / "checkpoint-4"
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        assert (clone / "last-checkpoint" / name).read_bytes() == (local / name).read_bytes(), name
    assert (clone / "model.safetensors").read_bytes() == (local / "model.safetensors").read_bytes()
    assert (clone / "README.md").read_text().startswith("---")
    # each pushed revision is a complete, consistent snapshot
    step2 = next(sha for sha, title in log if title == "Training in progress, step 2, checkpoint")
    clone2 = verify_stored_repo(hub_server.repo_dir("tester/trainer-ckpt"), tmp_path / "clone2", rev=step2)
    assert json.loads((clone2 / "last-checkpoint" / "trainer_state.json").read_text())["global_step"] == 2
    assert (clone2 / "last-checkpoint" / "model.safetensors").read_bytes() == (
        run["out"] / "checkpoint-2" / "model.safetensors"
    ).read_bytes()
    # the public repo's objects also come through the server's LFS download API, as git-lfs gets them from the Hub
    hub_server.reset()
    lfs_url = f"{hub_server.url}/tester/trainer-ckpt.git/info/lfs"
    clone3 = verify_stored_repo(hub_server.repo_dir("tester/trainer-ckpt"), tmp_path / "clone3", lfs_url=lfs_url)
    assert (clone3 / "model.safetensors").read_bytes() == (local / "model.safetensors").read_bytes()
    downloads = [r for r in hub_server.request_log if r["endpoint"] == "lfs_download" and r["status"] == 200]
    head_oids = {line.split()[0] for line in _git_out(clone3, "lfs", "ls-files", "--long").splitlines()}
    assert len(head_oids) > 3 and {r["path"].rsplit("/", 1)[1] for r in downloads} == head_oids


def test_trainer_background_push_failures_are_silent(hub_server, trainer_runs, tmp_path):
    run = trainer_runs["fail"]
    # training finishes; the last checkpoint push's futures hold the errors, nothing is logged; the final push raises
    assert run["steps"] == 4
    assert len(run["background_errors"]) == 2 and all("500" in e for e in run["background_errors"])
    assert run["final_error"].startswith("HfHubHTTPError") and "500" in run["final_error"]
    assert [r["status"] for r in run["log"] if r["endpoint"] == "commit"] == [500] * 5
    clone = verify_stored_repo(hub_server.repo_dir("tester/trainer-fail"), tmp_path / "clone")
    assert [line.split(" ", 1)[1] for line in _git_log(clone)] == ["initial commit"]


@pytest.mark.slow  # reproduces a timing race (hub_always_push overwriting files mid-upload): not deterministic
def test_trainer_always_push_race_is_caught_by_lfs_verification(hub_server, trainer_runs, tmp_path):
    # the bytes sent for the step-2 model no longer hash to the oid announced: the server refuses them (400) and
    # that background push fails silently; the later pushes and the final one succeed
    run = trainer_runs["race"]
    assert run["steps"] == 4 and run["final_error"] is None
    assert "Error while uploading 'model.safetensors'" in (run["background_errors"][0] or "")
    rejected = [r for r in run["log"] if r["status"] >= 400]
    assert [(r["endpoint"], r["status"]) for r in rejected] == [("lfs_upload", 400)]
    assert "sha256" in rejected[0]["error"]
    store = hub_server.repo_dir("tester/trainer-race") / "lfs" / "objects"
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in store.rglob("*") if p.is_file())
    clone = verify_stored_repo(hub_server.repo_dir("tester/trainer-race"), tmp_path / "clone")
    assert (clone / "model.safetensors").read_bytes() == (run["out"] / "checkpoint-4/model.safetensors").read_bytes()


FAULT_SCRIPT = textwrap.dedent(
    """
    import json, os
    from huggingface_hub import HfApi
    api = HfApi()
    api.create_repo("faults", exist_ok=True)
    try:
        info = api.upload_file(path_or_fileobj=os.urandom(1000), path_in_repo=os.environ["T_PATH"],
                               repo_id="tester/faults", commit_message=os.environ["T_PATH"])
        outcome = "ok " + info.oid
    except Exception as err:
        outcome = "raised " + type(err).__name__ + ": " + str(err).splitlines()[0]
    print("RESULT " + json.dumps(outcome))
    """
)


@pytest.mark.parametrize(
    ("fail", "status", "count", "expect"),
    [
        ("commit", 500, 1, "raised HfHubHTTPError"),  # commits are not retried by the client
        ("commit", "drop", 1, "raised RemoteProtocolError"),
        ("preupload", 503, 1, "ok"),  # retried after Retry-After
        ("lfs_upload", "drop", 1, "ok"),  # the object PUT is retried
        ("lfs_batch", 500, 6, "raised HfHubHTTPError"),  # 1 try + 5 retries, then the client gives up
    ],
)
def test_injected_failures_reach_the_client(hub_server, hub_env, fail, status, count, expect):
    hub_server.inject(fail, status=status, count=count, retry_after=0)
    path = f"{fail}-{status}-{count}.bin"
    outcome = _result(run_hub_client(FAULT_SCRIPT, {**hub_env, "T_PATH": path}))
    assert outcome.startswith(expect), outcome
    assert hub_server.pending_injections == 0
    injected = [r for r in hub_server.request_log if r["injected"]]
    assert len(injected) == count and {r["endpoint"] for r in injected} == {fail}
    files = json.loads(_http("GET", f"{hub_server.url}/api/models/tester/faults", headers=AUTH)[2])["siblings"]
    assert (path in [f["rfilename"] for f in files]) == (expect == "ok")


CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import json, os
    from concurrent.futures import ThreadPoolExecutor
    from huggingface_hub import HfApi
    api = HfApi()
    repo_id = api.create_repo("concurrent").repo_id

    def push(i):
        payload = os.urandom(700) if i % 2 else f"text {i}\\n".encode()
        return api.upload_file(path_or_fileobj=payload, path_in_repo=f"f{i}.bin" if i % 2 else f"f{i}.txt",
                               repo_id=repo_id, commit_message=f"push {i}").oid

    with ThreadPoolExecutor(8) as pool:
        oids = list(pool.map(push, range(8)))
    print("RESULT " + json.dumps({"oids": oids, "files": api.list_repo_files(repo_id)}))
    """
)


def test_concurrent_commits_serialise_into_one_linear_history(hub_server, hub_env, tmp_path):
    result = _result(run_hub_client(CONCURRENT_SCRIPT, hub_env))
    assert len(set(result["oids"])) == 8
    expected = [".gitattributes"] + [f"f{i}.bin" if i % 2 else f"f{i}.txt" for i in range(8)]
    assert sorted(result["files"]) == sorted(expected)
    clone = verify_stored_repo(hub_server.repo_dir("tester/concurrent"), tmp_path / "clone")
    parents = _git_out(clone, "log", "--format=%P").split("\n")
    assert all(len(p.split()) <= 1 for p in parents) and len(_git_log(clone)) == 9  # initial commit + 8, no merges
    assert set(result["oids"]) <= {line.split()[0] for line in _git_log(clone)}


def test_unreachable_server_makes_the_client_raise(hub_server, hub_env):
    hub_server.reachable = False
    code = "from huggingface_hub import HfApi; HfApi().create_repo('never')"
    proc = run_hub_client(code, hub_env, check=False)
    assert proc.returncode != 0 and ("RemoteProtocolError" in proc.stderr or "ReadError" in proc.stderr)
    hub_server.reachable = True
    assert not hub_server.repo_dir("tester/never").exists()


def _git_out(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _git_log(clone):
    return _git_out(clone, "log", "--format=%H %s").splitlines()
