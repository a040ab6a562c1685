"""Checkpoint pushes against the Hub double: retried, verified, superseded, reported once; rotation keeps what the
Hub lacks; a run that cannot push stops before training; `jobs status` and `jobs run` with HF_NAMESPACE."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import yaml

from lorallama import cli
from lorallama import hub as hub_mod
from lorallama.errors import HubError, TrainError
from lorallama.recipe import load_recipe
from lorallama.training import jobs
from lorallama.training.checkpoint_push import CheckpointPusher
from lorallama.training.run import train
from support.recipes import write_recipe

REPO = "tester/pushed"


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(hub_mod, "RETRY_DELAY", 0.02)


def fake_checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint folder as Trainer leaves it: weights, optimizer, and trainer_state.json last."""
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"weights %d" % step)
    (ckpt / "optimizer.pt").write_bytes(b"optimizer %d" % step)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


def pusher_for(tmp_path: Path, **kwargs) -> CheckpointPusher:
    hub_mod.ensure_repo(REPO)
    run_files = {"recipe.yaml": b"slug: tiny\n", "run.json": b'{"finished": false}'}
    return CheckpointPusher(REPO, tmp_path / "checkpoints", run_files, **kwargs)


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def hub_step(hub) -> int:
    return json.loads(hub.files(REPO)["last-checkpoint/trainer_state.json"])["global_step"]


def test_a_failed_push_is_retried_until_the_hub_holds_the_step(hub, tmp_path, quick_retries):
    pusher = pusher_for(tmp_path)
    failing = hub.fail_next(2, 503, path=r"/commit/")
    pusher.submit(fake_checkpoint(tmp_path / "checkpoints", 3))
    report = pusher.close()
    assert failing.hits == 2
    assert (report.step, report.pushes, report.retries, report.failed) == (3, 1, 2, 0)
    files = hub.files(REPO)
    assert hub_step(hub) == 3 and files["last-checkpoint/optimizer.pt"] == b"optimizer 3"
    assert files["recipe.yaml"] == b"slug: tiny\n" and json.loads(files["run.json"])["finished"] is False
    assert hub.commits(REPO)[0].title == "Training in progress, step 3, checkpoint"


def test_a_lost_answer_counts_as_pushed_once_the_hub_holds_the_step(hub, tmp_path, quick_retries):
    pusher = pusher_for(tmp_path)
    commits_before = len(hub.commits(REPO))
    hub.drop_next(1, path=r"/commit/", after_processing=True)
    pusher.submit(fake_checkpoint(tmp_path / "checkpoints", 4))
    report = pusher.close()
    assert (report.step, report.pushes, report.retries) == (4, 1, 0)
    assert len(hub.commits(REPO)) == commits_before + 1  # verified, not pushed twice


def test_a_lost_hub_is_said_once_the_newest_checkpoint_supersedes_and_its_return_is_said(
    hub, tmp_path, quick_retries, caplog
):
    caplog.set_level(logging.DEBUG, logger="lorallama")
    pusher = pusher_for(tmp_path)
    down = hub.fail_next(10_000, 500, path=r"/commit/")
    for step in (3, 6, 9):
        pusher.submit(fake_checkpoint(tmp_path / "checkpoints", step))
    wait_until(lambda: pusher.report.failed + pusher.report.superseded >= 3)
    assert pusher.safe_step is None and down.hits >= 2
    hub.clear_faults()
    pusher.submit(fake_checkpoint(tmp_path / "checkpoints", 12))
    report = pusher.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lost = [w for w in warnings if "did not reach" in w]
    assert len(lost) == 1, warnings
    assert "step 3" in lost[0] and "HTTP 500" in lost[0] and "Training goes on" in lost[0]
    assert [w for w in warnings if "the Hub is back" in w] == ["the Hub is back: checkpoint step 12 is on " + REPO]
    assert report.step == 12 and hub_step(hub) == 12
    # 3 was given up (for 6, or after its attempts); what the Hub never got counts as superseded or failed.
    assert report.superseded + report.failed == 3 and report.pushes == 1


def test_rotation_never_deletes_a_checkpoint_the_hub_lacks(hub, tmp_path, quick_retries):
    folder = tmp_path / "checkpoints"
    pusher = pusher_for(tmp_path, save_total_limit=1)
    hub.fail_next(10_000, 503, path=r"/commit/")
    for step in (1, 2, 3):
        pusher.submit(fake_checkpoint(folder, step))
    wait_until(lambda: pusher.report.failed + pusher.report.superseded >= 3)
    pusher.rotate()
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    hub.clear_faults()
    pusher.submit(fake_checkpoint(folder, 4))
    pusher.close()
    assert [p.name for p in folder.iterdir()] == ["checkpoint-4"]  # the Hub holds 4: the older ones may go
    assert hub_step(hub) == 4


def hub_recipe(tmp_path: Path, base: Path, repo: str = REPO, **trainer):
    path = write_recipe(tmp_path, base, **trainer)
    raw = yaml.safe_load(path.read_text())
    raw["hub"] = {"model_repo": repo}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("token", "repo", "expected"),
    [
        ("hf_not_a_token", REPO, "rejected the token"),
        ("hf_double_read_token", REPO, "cannot write to model repo"),
        (None, "someone-else/model", "cannot write to model repo someone-else/model"),
    ],
    ids=["bad-token", "read-only-token", "namespace-not-yours"],
)
def test_a_run_that_cannot_push_stops_before_training_naming_the_repo_and_the_fix(
    hub, tmp_path, tiny_chatml, monkeypatch, quick_retries, token, repo, expected
):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    hub.seed_repo(REPO)
    recipe = load_recipe(str(hub_recipe(tmp_path, tiny_chatml, repo=repo)))
    with pytest.raises(HubError) as info:
        train(recipe, tmp_path / "out", max_steps=4)
    message = str(info.value)
    assert expected in message and repo in message and ("HF_TOKEN" in message or "HF_NAMESPACE" in message)
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing trained


def test_a_run_without_a_token_is_told_to_set_one_or_train_locally(hub, tmp_path, tiny_chatml, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    recipe = load_recipe(str(hub_recipe(tmp_path, tiny_chatml)))
    with pytest.raises(TrainError, match=r"needs a write token: set HF_TOKEN.*--no-push"):
        train(recipe, tmp_path / "out", max_steps=4)


def test_a_run_that_loses_the_hub_keeps_training_says_so_once_and_keeps_everything(
    hub, tmp_path, tiny_chatml, quick_retries, caplog
):
    caplog.set_level(logging.INFO, logger="lorallama")
    recipe = load_recipe(str(hub_recipe(tmp_path, tiny_chatml, save_steps=2, save_total_limit=1)))
    hub.fail_next(10_000, 502, path=r"/commit/")  # access checks pass; every commit fails
    with pytest.raises(TrainError) as info:
        train(recipe, tmp_path / "out", max_steps=8)
    assert "newest checkpoint on the Hub: none" in str(info.value)
    lost = [r.getMessage() for r in caplog.records if "did not reach" in r.getMessage()]
    assert len(lost) == 1 and "step 2" in lost[0], lost
    meta = json.loads((tmp_path / "out" / "adapter" / "run.json").read_text())
    assert meta["global_step"] == 8  # trained to the end
    assert meta["hub_checkpoint"]["step"] is None and meta["hub_checkpoint"]["pushes"] == 0
    # None of the four checkpoints reached the Hub, so save_total_limit=1 rotated none away.
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
        "checkpoint-8",
    ]


def test_a_finished_run_records_the_newest_step_on_the_hub(hub, tmp_path, tiny_chatml, capsys):
    path = hub_recipe(tmp_path, tiny_chatml, save_steps=2, save_total_limit=1)
    code = cli.main(["train", str(path), "--max-steps", "4", "--output", str(tmp_path / "out")])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith("; last checkpoint on the Hub: step 4"), last
    meta = json.loads(hub.files(REPO)["run.json"])
    assert meta["hub_checkpoint"]["step"] == 4 and meta["hub_checkpoint"]["pushes"] == 2
    assert [p.name for p in (tmp_path / "out" / "checkpoints").glob("checkpoint-*")] == ["checkpoint-4"]


def test_jobs_status_shows_the_newest_checkpoint_on_the_hub_and_its_age(hub, hub_api, capsys):
    hub.seed_repo(REPO, {"last-checkpoint/trainer_state.json": json.dumps({"global_step": 150})})
    job = hub_api.run_job(image="python:3.12", command=["python", "-c", "pass", "--repo", REPO])
    hub.wait_job(job.id)
    assert cli.main(["jobs", "status", job.id]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{job.id}: COMPLETED; last checkpoint on the Hub: step 150, ")
    seconds = int(line.split("step 150, ")[1].split(" s ago")[0])
    assert 0 <= seconds < 60 and line.endswith(f"s ago ({REPO})")
    status = jobs.status(job.id)
    assert (status.repo, status.checkpoint_step) == (REPO, 150)


def test_jobs_run_honours_hf_namespace(hub, tmp_path, tiny_chatml, monkeypatch, capsys):
    monkeypatch.setenv("HF_NAMESPACE", hub.org)
    path = hub_recipe(tmp_path, tiny_chatml, max_steps=2)
    raw = yaml.safe_load(path.read_text())
    raw["job"] = {"checkpoint_volume": "hf://buckets/lorallama/checkpoints"}
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["jobs", "run", str(path), "--flavor", "cpu-basic", "--timeout", "10m"]) == 0
    job_id = capsys.readouterr().out.split("job ")[1].split()[0]
    forked = f"{hub.org}/pushed"
    assert "job/recipe.yaml" in hub.files(forked) and not hub.repo_exists(REPO)
    assert yaml.safe_load(hub.files(forked)["job/recipe.yaml"])["hub"]["model_repo"] == forked
    spec = hub.job(job_id).spec
    argv = [*spec["command"], *spec.get("arguments", [])]
    assert argv[argv.index("--repo") + 1] == forked
    assert spec["volumes"] == [{"type": "bucket", "source": f"{hub.org}/checkpoints", "mountPath": "/checkpoints"}]
    assert argv[argv.index("--output") + 1] == "/checkpoints/tiny"
    hub.kill_job(job_id)
