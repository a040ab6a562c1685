"""Checkpoints to the Hub, exact resume from the Hub, graceful stop, Jobs until done — against the Hub double."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load, load_file

from lorallama import cli
from lorallama import hub as hub_mod
from lorallama.errors import TrainError
from lorallama.publishing.cards import adapter_card
from lorallama.recipe import load_recipe
from lorallama.training import jobs
from lorallama.training.resume import last_checkpoint
from lorallama.training.run import train
from support.recipes import Crash, crash_at, write_recipe

REPO = "tester/tiny-run"


def hub_recipe(tmp_path: Path, base: Path, **trainer):
    path = write_recipe(tmp_path, base, **trainer)
    raw = yaml.safe_load(path.read_text())
    raw["hub"] = {"model_repo": REPO}
    path.write_text(yaml.safe_dump(raw))
    return path


def checkpoint_steps(hub_double) -> list[int]:
    """Steps of the checkpoint pushes, oldest first (Trainer's commit messages name them)."""
    steps = []
    if not hub_double.repo_exists(REPO):
        return steps
    for commit in reversed(hub_double.commits(REPO)):
        title = commit.title if hasattr(commit, "title") else commit.message
        if title.startswith("Training in progress, step ") and title.endswith("checkpoint"):
            steps.append(int(title.split("step ")[1].split(",")[0]))
    return steps


def wait_for_checkpoints(hub_double, steps: list[int], timeout: float = 30) -> None:
    """Checkpoint pushes run in the background; a crash in this process leaves them to finish."""
    deadline = time.time() + timeout
    while checkpoint_steps(hub_double) != steps and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint_steps(hub_double) == steps


def adapter_on_hub(hub_double) -> dict:
    return load(hub_double.files(REPO)["adapter_model.safetensors"])


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(hub_mod, "RETRY_DELAY", 0.05)


def test_every_checkpoint_is_pushed_with_its_full_state(hub, tmp_path, tiny_chatml):
    recipe = load_recipe(str(hub_recipe(tmp_path, tiny_chatml, save_steps=2)))
    result = train(recipe, tmp_path / "out", max_steps=8, card=adapter_card)
    assert result.finished
    assert checkpoint_steps(hub) == [2, 4, 6, 8]  # none skipped
    files = hub.files(REPO)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "adapter_model.safetensors"):
        assert f"last-checkpoint/{name}" in files, name
    assert json.loads(files["last-checkpoint/trainer_state.json"])["global_step"] == 8
    run = json.loads(files["run.json"])
    assert run["finished"] is True and run["global_step"] == 8
    assert yaml.safe_load(files["recipe.yaml"])["hub"]["model_repo"] == REPO
    assert files["loss.png"][:4] == b"\x89PNG"
    card = files["README.md"].decode()
    assert "library_name: peft" in card and "base_model:" not in card  # a local base has no Hub id
    rerun = next(line for line in card.splitlines() if line.startswith("hf jobs uv run"))
    assert f"{REPO}/resolve/main/train.py --repo {REPO}" in rerun and "--secrets HF_TOKEN" in rerun
    assert "job/lorallama-" in rerun and hub.token not in card
    assert max_diff(adapter_on_hub(hub), load_file(result.adapter_dir / "adapter_model.safetensors")) == 0
    assert hub_mod.remote_run(REPO).finished


def test_resume_from_the_hub_on_a_fresh_machine_equals_uninterrupted(hub, tmp_path, tiny_chatml):
    recipe = load_recipe(str(hub_recipe(tmp_path, tiny_chatml)))
    straight = train(recipe, tmp_path / "straight", max_steps=8, push=False)

    with pytest.raises(Crash):
        train(recipe, tmp_path / "machine-1", max_steps=8, callbacks=[crash_at(5)])
    wait_for_checkpoints(hub, [3])
    state = hub_mod.remote_run(REPO)
    assert (state.checkpoint_step, state.finished) == (3, False)

    resumed = train(recipe, tmp_path / "machine-2", max_steps=8)  # nothing local: only the Hub
    assert "checkpoint" in resumed.resumed_from and resumed.finished
    assert max_diff(load_file(straight.adapter_dir / "adapter_model.safetensors"), adapter_on_hub(hub)) <= 1e-5
    losses = [(h["step"], round(h["loss"], 6)) for h in resumed.loss_history if "loss" in h]
    assert losses == [(h["step"], round(h["loss"], 6)) for h in straight.loss_history if "loss" in h]
    assert checkpoint_steps(hub) == [3, 6, 8]  # Trainer also saves the final step


def test_unsafe_recipe_change_is_refused_naming_the_keys(hub, tmp_path, tiny_chatml):
    path = hub_recipe(tmp_path, tiny_chatml)
    with pytest.raises(Crash):
        train(load_recipe(str(path)), tmp_path / "a", max_steps=8, callbacks=[crash_at(4)])
    wait_for_checkpoints(hub, [3])
    changed = load_recipe(str(path), ["lora.r=8", "trainer.learning_rate=1e-3", "trainer.logging_steps=2"])
    with pytest.raises(TrainError) as info:
        train(changed, tmp_path / "b", max_steps=8)
    message = str(info.value)
    assert "lora.r (4 → 8)" in message and "trainer.learning_rate" in message and "--restart" in message
    assert "logging_steps" not in message  # harmless to change
    result = train(changed, tmp_path / "b", max_steps=2, resume="never")
    assert result.resumed_from is None and result.global_step == 2


def test_hub_errors_during_pushes_do_not_stop_training_and_the_final_state_is_complete(
    hub, tmp_path, tiny_chatml, quick_retries
):
    recipe = load_recipe(str(hub_recipe(tmp_path, tiny_chatml, save_steps=2)))
    failing = hub.fail_next(3, 503, path=r"/commit/")
    slow = hub.add_latency(0.3, path=r"/preupload/", n=6)
    result = train(recipe, tmp_path / "out", max_steps=10)
    assert result.finished and result.global_step == 10
    assert failing.hits == 3 and slow.hits >= 1
    files = hub.files(REPO)
    local = last_checkpoint(tmp_path / "out" / "checkpoints")
    for f in local.iterdir():
        if f.is_file():
            assert files[f"last-checkpoint/{f.name}"] == f.read_bytes(), f.name  # every file, same bytes
    assert json.loads(files["run.json"])["finished"] is True


def test_a_final_push_that_cannot_complete_keeps_the_local_copy_and_says_where(
    hub, tmp_path, tiny_chatml, quick_retries
):
    recipe = load_recipe(str(hub_recipe(tmp_path, tiny_chatml, save_steps=100)))
    hub.fail_next(1000, 500, path=r"/commit/")
    with pytest.raises(TrainError) as info:
        train(recipe, tmp_path / "out", max_steps=3)
    message = str(info.value)
    adapter = tmp_path / "out" / "adapter"
    assert f"the adapter is in {adapter}" in message and "Run the same command again" in message
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "run.json").read_text())["finished"] is True
    hub.clear_faults()
    result = train(recipe, tmp_path / "out", max_steps=3)  # the retry pushes without training again
    assert result.global_step == 3 and result.resumed_from.endswith("checkpoint-3")
    assert [p.name for p in (tmp_path / "out" / "checkpoints").glob("checkpoint-*")] == ["checkpoint-3"]
    assert json.loads(hub.files(REPO)["run.json"])["finished"] is True


def test_sigterm_saves_pushes_and_reports_the_step(hub, tmp_path, tiny_chatml):
    recipe = hub_recipe(tmp_path, tiny_chatml, save_steps=5, logging_steps=5)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lorallama.cli",
            "train",
            str(recipe),
            "--max-steps",
            "100000",
            "--output",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not checkpoint_steps(hub) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert checkpoint_steps(hub), "no checkpoint was pushed"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    step = int(out.split("interrupted at step ")[1].split(":")[0])
    files = hub.files(REPO)
    assert json.loads(files["last-checkpoint/trainer_state.json"])["global_step"] == step
    assert json.loads(files["run.json"])["finished"] is False
    assert hub.token not in out


def test_time_budget_stops_cleanly_and_pushes(hub, tmp_path, tiny_chatml):
    recipe = load_recipe(str(hub_recipe(tmp_path, tiny_chatml, save_steps=1000)))
    result = train(recipe, tmp_path / "out", max_steps=1000, time_budget=0)
    assert result.global_step == 1 and not result.finished
    assert json.loads(hub.files(REPO)["last-checkpoint/trainer_state.json"])["global_step"] == 1


def test_job_until_done_survives_a_killed_job_and_matches_an_uninterrupted_run(hub, tmp_path, tiny_chatml, monkeypatch):
    """The flagship: a job is killed mid-run, the watcher relaunches, the run resumes from the Hub and finishes."""
    recipe_path = hub_recipe(tmp_path, tiny_chatml, save_steps=10, logging_steps=10, max_steps=160)
    recipe = load_recipe(str(recipe_path))
    straight = train(recipe, tmp_path / "straight", push=False)

    launched: list[str] = []
    killed: dict = {}

    def killer():
        while not launched:
            time.sleep(0.05)
        first = launched[0]
        while not checkpoint_steps(hub):
            time.sleep(0.05)
        hub.kill_job(first)
        killed["steps"] = checkpoint_steps(hub)

    threading.Thread(target=killer, daemon=True).start()
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    original_launch = jobs.launch

    def tracking_launch(*args, **kwargs):
        job_id = original_launch(*args, **kwargs)
        launched.append(job_id)
        return job_id

    monkeypatch.setattr(jobs, "launch", tracking_launch)
    code = cli.main(
        ["jobs", "run", str(recipe_path), "--until-done", "--timeout", "10m", "--backoff", "0.1", "--max-attempts", "3"]
    )
    monkeypatch.undo()
    assert code == 0, out.getvalue()[-3000:]
    assert len(launched) == 2
    assert [hub.job(j).stage for j in launched] == ["ERROR", "COMPLETED"]

    # The second job resumed from the newest checkpoint the first one pushed before it died.
    last_pushed = killed["steps"][-1]
    second_logs = "\n".join(hub.job_logs(launched[1]))
    assert f"(step {last_pushed})" in second_logs, second_logs[-3000:]
    # So no step after that checkpoint was trained twice by the run that finished, and the result is exact.
    assert max_diff(load_file(straight.adapter_dir / "adapter_model.safetensors"), adapter_on_hub(hub)) <= 1e-5
    final = json.loads(hub.files(REPO)["loss.json"])
    steps = [h["step"] for h in final if "loss" in h]
    assert steps == sorted(set(steps)) and steps[-1] == 160
    assert [round(h["loss"], 6) for h in final if "loss" in h] == [
        round(h["loss"], 6) for h in straight.loss_history if "loss" in h
    ]
    # The repo carries everything a re-run from the Hub needs.
    files = hub.files(REPO)
    assert "train.py" in files and "job/recipe.yaml" in files and any(p.endswith(".whl") for p in files)


def test_the_token_never_shows_in_logs_outputs_or_repo_files(hub, tmp_path, tiny_chatml, caplog):
    """A recognisable token, used for a whole run and a job: zero occurrences anywhere we write."""
    caplog.set_level(logging.DEBUG)
    recipe_path = hub_recipe(tmp_path, tiny_chatml, save_steps=2, max_steps=4)
    recipe = load_recipe(str(recipe_path))
    train(recipe, tmp_path / "out")
    job_id = jobs.launch(recipe, "cpu-basic", "10m", restart=True)
    job = hub.wait_job(job_id, timeout=180)
    assert job.stage == "COMPLETED", hub.job_logs(job_id)[-20:]

    token = hub.token
    assert token not in caplog.text
    assert all(token not in line for line in hub.job_logs(job_id))
    for path, data in hub.files(REPO).items():
        assert token.encode() not in data, path
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f
    info = hub_inspect(job_id)
    assert token not in json.dumps(info, default=str)


def hub_inspect(job_id: str) -> dict:
    from huggingface_hub import HfApi

    info = HfApi().inspect_job(job_id=job_id)
    return {"command": info.command, "arguments": info.arguments, "env": info.environment, "secrets": info.secrets}
