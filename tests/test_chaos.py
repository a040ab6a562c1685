"""The flagship: a run as Jobs, preempted 20 times at random moments under random Hub faults, ends exactly as an
uninterrupted run, and no preemption costs more than save_steps of work (bench/chaos.py runs 100)."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load, load_file

from lorallama import hub as hub_mod
from lorallama.recipe import load_recipe
from lorallama.training import jobs
from lorallama.training.run import train
from support.chaos import BUCKET, PRELOAD, REPO, chaos_recipe, run_chaos

KILLS = 20
SAVE_STEPS = 3


@pytest.fixture
def cached_wheel(monkeypatch, tmp_path_factory):
    """Build the job's wheel once: every relaunch uploads the same bundle."""
    built = jobs.build_wheel(tmp_path_factory.mktemp("wheel"))
    monkeypatch.setattr(jobs, "build_wheel", lambda dest: shutil.copy(built, dest / built.name) and dest / built.name)


def losses(history: list[dict]) -> list[tuple[int, float]]:
    return [(h["step"], round(h["loss"], 6)) for h in history if "loss" in h]


@pytest.mark.heavy
def test_twenty_random_preemptions_under_hub_faults_end_as_an_uninterrupted_run(
    hub, tmp_path, tiny_chatml, cached_wheel, monkeypatch
):
    monkeypatch.setattr(hub_mod, "RETRY_DELAY", 0.05)
    hub.jobs.warm_python(PRELOAD)  # jobs skip the imports, not the work: real processes, real signals
    recipe_path = chaos_recipe(tmp_path, tiny_chatml, max_steps=75, save_steps=SAVE_STEPS, volume=True)
    straight = train(load_recipe(str(recipe_path)), tmp_path / "straight", push=False)

    report = run_chaos(hub, recipe_path, kills=KILLS, seed=12)
    summary = report.summary(SAVE_STEPS)
    print("chaos:", json.dumps(summary))
    for life in report.lives:
        print(
            f"  {life.job_id[:8]} {life.stage:9} resumed={life.resumed!s:5} from {life.resumed_from:3} "
            f"trained {life.trained:3} "
            f"kill={life.kill} fault={life.fault}"
        )

    assert summary["kills_survived"] >= KILLS
    assert report.lives[-1].stage == "COMPLETED"
    assert summary["steps_redone_max"] <= SAVE_STEPS
    files = hub.files(REPO)
    expected, got = (
        load_file(straight.adapter_dir / "adapter_model.safetensors"),
        load(files["adapter_model.safetensors"]),
    )
    assert expected.keys() == got.keys()
    assert max((expected[k] - got[k]).abs().max().item() for k in expected) <= 1e-5
    assert losses(json.loads(files["loss.json"])) == losses(straight.loss_history)
    run = json.loads(files["run.json"])
    assert run["finished"] is True and run["global_step"] == 75
    assert json.loads(files["last-checkpoint/trainer_state.json"])["global_step"] == 75
    assert sum(1 for life in report.lives if life.resumed_from > 0) >= KILLS // 4  # jobs resumed, not restarted
    # The bucket kept the checkpoints between jobs (that is what made the resumes local).
    assert any(p.name.startswith("checkpoint-") for p in (hub.bucket_dir(BUCKET) / "tiny" / "checkpoints").iterdir())


SLEEPER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print('saving', flush=True), time.sleep({save}), print('saved'),"
    " sys.exit(143)))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize(("grace", "save", "expected"), [(2.0, 0.1, ["saving", "saved"]), (0.3, 5, ["saving"])])
def test_preemption_sends_sigterm_then_sigkill_after_the_grace(hub, hub_api, grace, save, expected):
    job = hub_api.run_job(image="python:3.12", command=["python", "-c", SLEEPER.format(save=save)])
    hub.wait_job_output(job.id, "ready")
    hub.preempt_job(job.id, grace)
    done = hub.wait_job(job.id, timeout=20)
    assert (done.stage, done.message) == ("ERROR", "Job was preempted: the machine running it was reclaimed")
    assert done.log_lines[-len(expected) :] == expected  # a save longer than the grace is cut off


def test_preemption_by_sigkill_alone_gives_no_chance_to_save(hub, hub_api):
    job = hub_api.run_job(image="python:3.12", command=["python", "-c", SLEEPER.format(save=0)])
    hub.wait_job_output(job.id, "ready")
    hub.preempt_job(job.id)
    done = hub.wait_job(job.id, timeout=20)
    assert done.stage == "ERROR" and "saving" not in done.log_lines


def test_a_bucket_volume_outlives_the_job_at_its_mount_path(hub, hub_api):
    from huggingface_hub import Volume

    script = "import os, sys; open(sys.argv[1], 'a').write('x'); print(open(sys.argv[1]).read(), os.environ['OUT'])"
    volume = Volume(type="bucket", source=f"{hub.user}/ckpt", mount_path="/mnt/ckpt")
    for expected in ("x", "xx"):
        job = hub_api.run_job(
            image="python:3.12",
            command=["python", "-c", script, "/mnt/ckpt/state.txt"],
            env={"OUT": "/mnt/ckpt/out"},
            volumes=[volume],
        )
        assert hub.wait_job(job.id).stage == "COMPLETED"
        assert hub.job_logs(job.id)[-1] == f"{expected} {hub.bucket_dir(f'{hub.user}/ckpt')}/out"
    other = Volume(type="bucket", source="someone-else/ckpt", mount_path="/mnt/ckpt")
    with pytest.raises(Exception, match="403"):
        hub_api.run_job(image="python:3.12", command=["python", "-c", "pass"], volumes=[other])
