"""The Hub double, driven by the real huggingface_hub client: repos, commits, downloads, auth, faults and jobs."""

import json
import sys
import time
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    JobNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.sha import git_hash

from support.hub_double import map_job_command


def read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def status_of(error: pytest.ExceptionInfo) -> int:
    return error.value.response.status_code


# ------------------------------------------------------------------------------------------------- repos & files


def test_upload_then_download_round_trip(hub, hub_api, tmp_path):
    repo = hub_api.create_repo("tester/tiny")
    assert (repo.repo_id, repo.repo_type, str(repo)) == ("tester/tiny", "model", f"{hub.url}/tester/tiny")

    hub_api.upload_file(path_or_fileobj=b"weights-v1", path_in_repo="adapter/model.bin", repo_id="tester/tiny")
    folder = write_tree(tmp_path / "out", {"config.json": b'{"r": 8}', "sub/notes.txt": "é\n".encode()})
    hub_api.upload_folder(folder_path=folder, repo_id="tester/tiny", commit_message="Add config")

    stored = hub.files("tester/tiny")
    assert sorted(stored) == [".gitattributes", "adapter/model.bin", "config.json", "sub/notes.txt"]
    assert hub_api.list_repo_files("tester/tiny") == sorted(stored)
    assert read(hf_hub_download("tester/tiny", "adapter/model.bin")) == b"weights-v1"
    snap = Path(snapshot_download("tester/tiny"))
    assert {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*") if p.is_file()} == stored

    info = hub_api.model_info("tester/tiny", files_metadata=True)
    commits = hub_api.list_repo_commits("tester/tiny")
    assert info.sha == commits[0].commit_id == hub.commits("tester/tiny")[0].id
    assert [c.title for c in commits] == [
        "Add config",
        "Upload adapter/model.bin with huggingface_hub",
        "initial commit",
    ]
    assert {s.rfilename: (s.size, s.blob_id) for s in info.siblings} == {
        path: (len(data), git_hash(data)) for path, data in stored.items()
    }


def test_unchanged_upload_makes_no_commit(hub, hub_api):
    sha = hub.seed_repo("tester/same", {"a.txt": b"same"})
    info = hub_api.upload_file(path_or_fileobj=b"same", path_in_repo="a.txt", repo_id="tester/same")
    assert info.oid == sha  # preupload's oid let the client skip the file
    assert [c.id for c in hub.commits("tester/same")][0] == sha
    assert hub.count("POST", r"/commit/") == 0


def test_create_conflict_exist_ok_and_delete(hub, hub_api):
    hub_api.create_repo("tester/dup")
    with pytest.raises(HfHubHTTPError) as error:
        hub_api.create_repo("tester/dup")
    assert status_of(error) == 409
    assert hub_api.create_repo("tester/dup", exist_ok=True).repo_id == "tester/dup"

    hub_api.delete_repo("tester/dup")
    assert not hub_api.repo_exists("tester/dup") and not hub.repo_exists("tester/dup")
    with pytest.raises(RepositoryNotFoundError):
        hub_api.delete_repo("tester/dup")
    hub_api.delete_repo("tester/dup", missing_ok=True)


def test_tree_pagination_and_paths_info(hub, hub_api):
    files = {"a.txt": b"a", "d/b.txt": b"bb", "d/e/c.txt": b"ccc"}
    hub.seed_repo("tester/tree", files)
    hub.page_size = 2  # six entries: the client must follow two `Link: rel="next"` pages

    tree = list(hub_api.list_repo_tree("tester/tree", recursive=True))
    assert [(type(e).__name__, e.path) for e in tree] == [
        ("RepoFile", ".gitattributes"), ("RepoFile", "a.txt"), ("RepoFolder", "d"),
        ("RepoFile", "d/b.txt"), ("RepoFolder", "d/e"), ("RepoFile", "d/e/c.txt"),
    ]  # fmt: skip
    assert {e.path: (e.size, e.blob_id) for e in tree if isinstance(e, RepoFile) and e.path in files} == {
        path: (len(data), git_hash(data)) for path, data in files.items()
    }
    assert hub.count("GET", r"/tree/") == 3
    assert [e.path for e in hub_api.list_repo_tree("tester/tree", path_in_repo="d")] == ["d/b.txt", "d/e"]

    infos = hub_api.get_paths_info("tester/tree", ["d/b.txt", "d", "missing.txt"], expand=True)
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "d/b.txt"), ("RepoFolder", "d")]
    assert infos[0].last_commit.title == "Seed files"


def test_deletes_keep_history(hub, hub_api):
    first = hub.seed_repo("tester/hist", {"keep.txt": b"k", "old.txt": b"o", "logs/1.txt": b"1", "logs/2.txt": b"2"})
    hub_api.delete_file("old.txt", "tester/hist")
    hub_api.delete_folder("logs", "tester/hist")

    assert hub_api.list_repo_files("tester/hist") == [".gitattributes", "keep.txt"]
    commits = hub_api.list_repo_commits("tester/hist")
    assert [c.title for c in commits][:2] == [
        "Delete folder logs with huggingface_hub",
        "Delete old.txt with huggingface_hub",
    ]
    assert commits[2].commit_id == first
    assert read(hf_hub_download("tester/hist", "old.txt", revision=first)) == b"o"
    assert (
        hub_api.file_exists("tester/hist", "old.txt"),
        hub_api.file_exists("tester/hist", "old.txt", revision=first),
    ) == (False, True)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("tester/hist", "old.txt")
    with pytest.raises(EntryNotFoundError):
        hub_api.delete_file("old.txt", "tester/hist")


def test_branches_tags_and_revisions(hub, hub_api):
    hub.seed_repo("tester/br", {"v.txt": b"main-1"})
    hub_api.create_branch("tester/br", branch="exp")
    hub_api.upload_file(path_or_fileobj=b"exp-1", path_in_repo="v.txt", repo_id="tester/br", revision="exp")

    assert read(hf_hub_download("tester/br", "v.txt", revision="exp")) == b"exp-1"
    assert read(hf_hub_download("tester/br", "v.txt")) == b"main-1"
    refs = hub_api.list_repo_refs("tester/br")
    assert {b.name: b.target_commit for b in refs.branches} == hub.branches("tester/br")
    assert sorted(hub.branches("tester/br")) == ["exp", "main"]

    hub_api.create_tag("tester/br", tag="v1", revision="exp")
    assert [(t.name, t.target_commit) for t in hub_api.list_repo_refs("tester/br").tags] == [
        ("v1", hub.branches("tester/br")["exp"])
    ]
    assert read(Path(snapshot_download("tester/br", revision="v1")) / "v.txt") == b"exp-1"

    with pytest.raises(HfHubHTTPError) as error:
        hub_api.create_branch("tester/br", branch="exp")
    assert status_of(error) == 409
    hub_api.create_branch("tester/br", branch="exp", exist_ok=True)
    hub_api.delete_branch("tester/br", branch="exp")
    assert sorted(hub.branches("tester/br")) == ["main"]
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("tester/br", "v.txt", revision="exp")
    with pytest.raises(RevisionNotFoundError):  # commits go to existing branches only
        hub_api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="tester/br", revision="nope")

    pr = hub_api.upload_file(path_or_fileobj=b"pr-1", path_in_repo="v.txt", repo_id="tester/br", create_pr=True)
    assert (pr.pr_num, pr.pr_revision) == (1, "refs/pr/1")
    assert read(hf_hub_download("tester/br", "v.txt", revision="refs/pr/1")) == b"pr-1"
    assert hub.files("tester/br")["v.txt"] == b"main-1"
    assert [p.target_commit for p in hub_api.list_repo_refs("tester/br", include_pull_requests=True).pull_requests] == [
        pr.oid
    ]


def test_parent_commit_guards_against_lost_updates(hub, hub_api):
    sha = hub.seed_repo("tester/pc", {"a": b"1"})
    hub_api.upload_file(path_or_fileobj=b"2", path_in_repo="a", repo_id="tester/pc", parent_commit=sha)
    with pytest.raises(HfHubHTTPError) as error:
        hub_api.upload_file(path_or_fileobj=b"3", path_in_repo="a", repo_id="tester/pc", parent_commit=sha)
    assert status_of(error) == 412
    assert hub.files("tester/pc")["a"] == b"2"


def test_card_data_and_yaml_validation(hub, hub_api):
    hub_api.create_repo("tester/card")
    readme = "---\nlicense: mit\nlibrary_name: peft\ntags:\n- lora\n- llama\n---\n# Tiny\n"
    hub_api.upload_file(path_or_fileobj=readme.encode(), path_in_repo="README.md", repo_id="tester/card")
    info = hub_api.model_info("tester/card")
    assert (info.card_data.license, info.library_name, info.tags) == ("mit", "peft", ["lora", "llama"])

    with pytest.raises(ValueError, match="Invalid metadata"):
        hub_api.upload_file(
            path_or_fileobj=b"---\nlicense: [mit\n---\n", path_in_repo="README.md", repo_id="tester/card"
        )
    assert hub.files("tester/card")["README.md"] == readme.encode()


def test_space_sdk_runtime_variables_and_duplicate(hub, hub_api):
    url = hub_api.create_repo(
        "tester/chat", repo_type="space", space_sdk="gradio", space_variables=[{"key": "MODEL_ID", "value": "a/b"}]
    )
    assert (url.repo_type, url.repo_id) == ("space", "tester/chat")
    files = hub.files("tester/chat", "space")
    assert sorted(files) == [".gitattributes", "README.md"] and b"sdk: gradio" in files["README.md"]
    info = hub_api.space_info("tester/chat")
    assert (info.sdk, info.runtime.stage, info.card_data.sdk) == ("gradio", "NO_APP_FILE", "gradio")

    hub_api.upload_file(
        path_or_fileobj=b"import gradio", path_in_repo="app.py", repo_id="tester/chat", repo_type="space"
    )
    assert hub_api.get_space_runtime("tester/chat").stage == "RUNNING"
    hub_api.add_space_variable("tester/chat", "TEMPERATURE", "0.7")
    hub_api.add_space_secret("tester/chat", "HF_TOKEN", "secret-value")
    assert {k: v.value for k, v in hub_api.get_space_variables("tester/chat").items()} == {
        "MODEL_ID": "a/b", "TEMPERATURE": "0.7"
    }  # fmt: skip

    bad = b"---\ntitle: x\nsdk: flask\n---\n"
    with pytest.raises(ValueError, match="sdk"):
        hub_api.upload_file(path_or_fileobj=bad, path_in_repo="README.md", repo_id="tester/chat", repo_type="space")

    fork = hub_api.duplicate_repo("tester/chat", to_id="test-org/chat-fork", repo_type="space")
    assert fork.repo_id == "test-org/chat-fork"
    assert hub.files("test-org/chat-fork", "space") == hub.files("tester/chat", "space")
    assert hub_api.get_space_variables("test-org/chat-fork")["MODEL_ID"].value == "a/b"


def test_private_dataset_and_listing(hub, hub_api):
    hub_api.create_repo("tester/chats", repo_type="dataset", private=True)
    rows = b'{"conversations": [{"from": "human", "value": "hi"}]}\n'
    hub_api.upload_file(path_or_fileobj=rows, path_in_repo="train.jsonl", repo_id="tester/chats", repo_type="dataset")
    hub.seed_repo("someone/public-data", {"data.jsonl": b"{}\n"}, repo_type="dataset")
    hub.seed_repo("tester/llama-lora")
    hub.seed_repo("tester/other-model")

    info = hub_api.dataset_info("tester/chats")
    assert (info.private, [s.rfilename for s in info.siblings]) == (True, [".gitattributes", "train.jsonl"])
    assert read(hf_hub_download("tester/chats", "train.jsonl", repo_type="dataset")) == rows
    assert [d.id for d in hub_api.list_datasets(author="tester")] == ["tester/chats"]
    assert [m.id for m in hub_api.list_models(search="lora")] == ["tester/llama-lora"]

    anonymous = HfApi(endpoint=hub.url, token=False)
    assert [d.id for d in anonymous.list_datasets()] == ["someone/public-data"]
    with pytest.raises(RepositoryNotFoundError):
        anonymous.dataset_info("tester/chats")


def test_whoami_and_permissions(hub, hub_api):
    assert hub_api.whoami()["name"] == hub.user == "tester"
    with pytest.raises(HfHubHTTPError) as error:
        HfApi(endpoint=hub.url, token="hf_not_a_token").whoami()
    assert status_of(error) == 401

    with pytest.raises(HfHubHTTPError) as error:
        HfApi(endpoint=hub.url, token=False).create_repo("tester/anon")
    assert status_of(error) == 401
    assert not hub.repo_exists("tester/anon")

    hub.seed_repo("tester/ro", {"a": b"1"})
    reader = HfApi(endpoint=hub.url, token=hub.read_token)
    assert reader.list_repo_files("tester/ro") == [".gitattributes", "a"]
    with pytest.raises(HfHubHTTPError) as error:
        reader.upload_file(path_or_fileobj=b"2", path_in_repo="a", repo_id="tester/ro")
    assert status_of(error) == 403
    with pytest.raises(HfHubHTTPError) as error:
        hub_api.create_repo("someone-else/model")
    assert status_of(error) == 403
    assert hub.files("tester/ro")["a"] == b"1"


def test_trainer_pushes_checkpoints_to_the_double(hub, tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    config = LlamaConfig(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=16,
    )  # fmt: skip
    rows = [{"input_ids": torch.arange(8) % 32, "labels": torch.arange(8) % 32} for _ in range(8)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=4, save_steps=2, per_device_train_batch_size=2, use_cpu=True,
        push_to_hub=True, hub_model_id="tester/ckpt", hub_strategy="checkpoint", hub_always_push=True, report_to=[],
    )  # fmt: skip
    trainer = Trainer(model=LlamaForCausalLM(config), args=args, train_dataset=rows)
    trainer.train()
    trainer.push_to_hub()

    files = hub.files("tester/ckpt")
    assert json.loads(files["last-checkpoint/trainer_state.json"])["global_step"] == 4
    assert {"model.safetensors", "last-checkpoint/model.safetensors", "last-checkpoint/optimizer.pt"} <= set(files)
    assert [c.title for c in hub.commits("tester/ckpt")][:3] == [
        "End of training", "Training in progress, step 4, checkpoint", "Training in progress, step 4"
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------------- faults


def test_5xx_on_commit_fails_the_upload_and_nothing_lands(hub, hub_api):
    hub.seed_repo("tester/f", {"a": b"1"})
    fault = hub.fail_next(1, 503, path=r"/commit/")
    with pytest.raises(HfHubHTTPError) as error:  # upload_file posts the commit once, without retry
        hub_api.upload_file(path_or_fileobj=b"2", path_in_repo="a", repo_id="tester/f")
    assert (status_of(error), fault.hits) == (503, 1)
    assert hub.files("tester/f")["a"] == b"1"

    hub_api.upload_file(path_or_fileobj=b"2", path_in_repo="a", repo_id="tester/f")
    assert hub.files("tester/f")["a"] == b"2"


def test_client_retries_5xx_on_preupload_and_download_metadata(hub, hub_api):
    hub.seed_repo("tester/r", {"w.bin": b"w"})
    hub.fail_next(1, 502, path=r"/preupload/")
    hub_api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="tester/r")
    assert hub.files("tester/r")["x.txt"] == b"x"
    assert [r.status for r in hub.requests if "/preupload/" in r.path] == [502, 200]

    hub.fail_next(1, 500, path=r"/resolve/", method="HEAD")
    assert read(hf_hub_download("tester/r", "w.bin")) == b"w"
    assert [r.status for r in hub.requests if r.method == "HEAD"] == [500, 200]


def test_latency_and_etag_timeout_falls_back_to_cache(hub, hub_api):
    hub.seed_repo("tester/slow", {"w.bin": b"w"})
    cached = hf_hub_download("tester/slow", "w.bin")

    hub.add_latency(0.3, path=r"^/api/models/", n=1)
    start = time.monotonic()
    assert hub_api.model_info("tester/slow").id == "tester/slow"
    assert time.monotonic() - start >= 0.3

    slow = hub.add_latency(6.0, path=r"/resolve/", method="HEAD")
    start = time.monotonic()
    assert hf_hub_download("tester/slow", "w.bin", etag_timeout=0.5) == cached  # HEAD timed out: cached copy
    assert time.monotonic() - start < 4.0 and slow.hits == 1  # well before the 6 s answer


def test_dropped_connections(hub, hub_api):
    data = bytes(range(256)) * 400
    hub.seed_repo("tester/drop", {"w.bin": data})
    drop = hub.drop_next(1, path=r"/resolve/", method="GET")
    assert read(hf_hub_download("tester/drop", "w.bin")) == data  # the client retries the GET
    assert (drop.hits, [r.fault for r in hub.requests if r.method == "GET"]) == (1, ["drop", None])

    hub.drop_next(1, path=r"/commit/")
    with pytest.raises(httpx.RemoteProtocolError):
        hub_api.upload_file(path_or_fileobj=b"new", path_in_repo="n.txt", repo_id="tester/drop")
    assert "n.txt" not in hub.files("tester/drop")

    hub.drop_next(1, path=r"/commit/", after_processing=True)  # the commit lands, its response is lost
    with pytest.raises(httpx.RemoteProtocolError):
        hub_api.upload_file(path_or_fileobj=b"new", path_in_repo="n.txt", repo_id="tester/drop")
    assert hub.files("tester/drop")["n.txt"] == b"new"


# ------------------------------------------------------------------------------------------------- jobs


def python_job(hub_api, code: str, **kwargs):
    return hub_api.run_job(image="python:3.12", command=["python", "-c", code], **kwargs)


def wait(hub_api, job_id: str):
    return hub_api.wait_for_job(job_id, timeout=30, poll_interval=0.05)


def test_job_runs_with_env_and_secrets_and_logs(hub, hub_api):
    code = (
        "import os, sys\n"
        "print('greeting=' + os.environ['GREETING'])\n"
        "print('secret set:', 'MY_SECRET' in os.environ, len(os.environ['MY_SECRET']))\n"
        "print('ambient token:', 'HF_TOKEN' in os.environ)\n"
        "print('endpoint is the double:', os.environ['HF_ENDPOINT'] == os.environ['DOUBLE'])\n"
        "print('to stderr', file=sys.stderr)\n"
    )
    job = python_job(
        hub_api, code, env={"GREETING": "hello", "DOUBLE": hub.url}, secrets={"MY_SECRET": "s3cr3t"}, labels={"k": "v"}
    )
    assert job.status.stage in ("SCHEDULING", "RUNNING") and job.owner.name == "tester"
    final = wait(hub_api, job.id)
    logs = list(hub_api.fetch_job_logs(job_id=job.id))
    assert final.status.stage == "COMPLETED", logs
    assert logs == [
        "greeting=hello", "secret set: True 6", "ambient token: False", "endpoint is the double: True", "to stderr"
    ]  # fmt: skip
    assert "s3cr3t" not in json.dumps(final.secrets) + "".join(logs)
    assert final.environment == {"GREETING": "hello", "DOUBLE": hub.url}
    assert [j.id for j in hub_api.list_jobs(labels={"k": "v"})] == [job.id]
    assert [j.id for j in hub_api.list_jobs(status="RUNNING")] == []
    with pytest.raises(JobNotFoundError):
        hub_api.inspect_job(job_id="0" * 24)


def test_job_logs_follow_a_running_job(hub, hub_api):
    job = python_job(hub_api, "import time\nfor i in range(3):\n    print(f'step {i}')\n    time.sleep(0.2)")
    assert list(hub_api.fetch_job_logs(job_id=job.id, follow=True)) == ["step 0", "step 1", "step 2"]
    assert hub_api.inspect_job(job_id=job.id).status.stage == "COMPLETED"


def test_failing_job_ends_in_error_with_exit_code(hub, hub_api):
    job = python_job(hub_api, "import sys; print('boom'); sys.exit(3)")
    final = wait(hub_api, job.id)
    assert (final.status.stage, final.status.message) == ("ERROR", "Job failed with exit code: 3")
    assert list(hub_api.fetch_job_logs(job_id=job.id)) == ["boom"]


def test_cancel_sends_sigterm_and_ends_canceled(hub, hub_api):
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('got SIGTERM, saving'), sys.exit(0)))\n"
        "print('ready')\n"
        "time.sleep(60)\n"
    )
    job = python_job(hub_api, code)
    hub.wait_job_output(job.id, "ready")
    hub_api.cancel_job(job_id=job.id)
    final = wait(hub_api, job.id)
    assert final.status.stage == "CANCELED"
    assert list(hub_api.fetch_job_logs(job_id=job.id)) == ["ready", "got SIGTERM, saving"]


def test_timeout_ends_in_error(hub, hub_api):
    job = python_job(hub_api, "import time; print('start'); time.sleep(60)", timeout=1)
    final = wait(hub_api, job.id)
    assert final.status.stage == "ERROR" and "timeout" in final.status.message
    assert list(hub_api.fetch_job_logs(job_id=job.id)) == ["start"]


def test_killed_job_ends_in_error_even_if_it_ignores_sigterm(hub, hub_api):
    job = python_job(
        hub_api, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(60)"
    )
    hub.wait_job_output(job.id, "ready")
    hub.kill_job(job.id)
    final = wait(hub_api, job.id)
    assert final.status.stage == "ERROR" and "SIGKILL" in final.status.message


def test_uv_job_runs_a_script_from_the_hub_and_pushes_to_it(hub, hub_api):
    script = (
        "# /// script\n# dependencies = ['huggingface_hub']\n# ///\n"
        "import sys\nfrom huggingface_hub import HfApi\n"
        "api = HfApi()\n"
        "who = api.whoami()['name']\n"
        "api.upload_file(path_or_fileobj=f'trained by {who}'.encode(), path_in_repo='result.txt', repo_id=sys.argv[1])\n"
        "print('pushed to', sys.argv[1])\n"
    )
    hub.seed_repo("tester/trainer", {"train.py": script})
    hub_api.create_repo("tester/out")
    url = hf_hub_url("tester/trainer", "train.py")
    job = hub_api.run_uv_job(url, script_args=["tester/out"], dependencies=["trl"], secrets={"HF_TOKEN": hub.token})

    assert job.command == ["uv", "run", "--with", "trl", url, "tester/out"]
    final = wait(hub_api, job.id)
    logs = list(hub_api.fetch_job_logs(job_id=job.id))
    assert final.status.stage == "COMPLETED", logs
    assert logs == ["pushed to tester/out"]
    assert hub.files("tester/out")["result.txt"] == b"trained by tester"
    assert hub.job(job.id).argv[:2] == [sys.executable, str(hub.job(job.id).workdir / "train.py")]


def test_job_command_mapping(tmp_path):
    def fetch(url, workdir):
        return workdir / "fetched.py"

    (tmp_path / "local.py").write_text("")
    py = sys.executable
    assert map_job_command(["python3", "-c", "x"], tmp_path, fetch) == [py, "-c", "x"]
    assert map_job_command(["uv", "run", "--with", "a", "-q", "python", "-m", "m"], tmp_path, fetch) == [py, "-m", "m"]
    assert map_job_command(["uv", "run", "https://h/x.py", "--lr", "1"], tmp_path, fetch) == [
        py, str(tmp_path / "fetched.py"), "--lr", "1"
    ]  # fmt: skip
    assert map_job_command(["uv", "run", "local.py"], tmp_path, fetch) == [py, str(tmp_path / "local.py")]
    assert map_job_command(["bash", "-c", "true"], tmp_path, fetch) == ["bash", "-c", "true"]


def test_job_that_cannot_start_ends_in_error(hub, hub_api):
    job = hub_api.run_uv_job("https://example.com/train.py")  # no network: the fetch fails
    final = wait(hub_api, job.id)
    assert final.status.stage == "ERROR" and "no network" in final.status.message
