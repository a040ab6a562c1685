"""The flagship: a run as Jobs, preempted 20 times at random moments under random Hub faults, ends exactly as an
uninterrupted run, and no preemption costs more than save_steps of work (bench/chaos.py runs 100)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from safetensors.torch import load, load_file

from lorallama import hub as hub_mod
from lorallama.recipe import load_recipe
from lorallama.training import jobs
from lorallama.training.run import train
from support.chaos import BUCKET, REPO, chaos_model, chaos_recipe, one_thread, prepare_jobs, run_chaos

KILLS = 20
SAVE_STEPS = 3


@pytest.fixture
def warm_jobs(hub):
    """Jobs forked from the warm interpreter: this process with a job's imports, forked before anything else runs."""
    prepare_jobs(hub)


@pytest.fixture
def cached_wheel(monkeypatch, tmp_path_factory):
    """Build the job's wheel once: every relaunch uploads the same bundle."""
    built = jobs.build_wheel(tmp_path_factory.mktemp("wheel"))
    monkeypatch.setattr(jobs, "build_wheel", lambda dest: Path(shutil.copy(built, dest)))


def losses(history: list[dict]) -> list[tuple[int, float]]:
    return [(h["step"], round(h["loss"], 6)) for h in history if "loss" in h]


@pytest.mark.slow  # tens of seconds: in `make test`, not in `make test-fast`
def test_twenty_random_preemptions_under_hub_faults_end_as_an_uninterrupted_run(
    hub, warm_jobs, cached_wheel, tmp_path, monkeypatch
):
    monkeypatch.setattr(hub_mod, "RETRY_DELAY", 0.05)  # this process's relaunch loop; the jobs keep the real backoff
    base = chaos_model(tmp_path / "tiny")
    recipe_path = chaos_recipe(tmp_path, base, max_steps=75, save_steps=SAVE_STEPS, volume=True)
    with one_thread(), ThreadPoolExecutor(1) as pool:
        # The uninterrupted reference (local, never touching the Hub) trains on the other core while the jobs run.
        reference = pool.submit(train, load_recipe(str(recipe_path)), tmp_path / "straight", push=False)
        report = run_chaos(hub, recipe_path, kills=KILLS, seed=12)
        straight = reference.result()
    summary = report.summary(SAVE_STEPS)
    print("chaos:", json.dumps(summary))
    for life in report.lives:
        print(
            f"  {life.job_id[:8]} {life.stage:9} resumed={life.resumed!s:5} from {life.resumed_from:3} "
            f"trained {life.trained:3} in {life.seconds:4.1f} s kill={life.kill} fault={life.fault}"
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


@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "warm"])
@pytest.mark.parametrize(("grace", "save", "expected"), [(2.0, 0.1, ["saving", "saved"]), (1.0, 5, ["saving"])])
def test_preemption_sends_sigterm_then_sigkill_after_the_grace(hub, hub_api, grace, save, expected, warm):
    if warm:
        hub.jobs.warm_python([])
    job = hub_api.run_job(image="python:3.12", command=["python", "-c", SLEEPER.format(save=save)])
    hub.wait_job_output(job.id, "ready")
    hub.preempt_job(job.id, grace)
    done = hub.wait_job(job.id, timeout=20)
    assert (done.stage, done.message) == ("ERROR", "Job was preempted: the machine running it was reclaimed")
    assert done.log_lines[-len(expected) :] == expected, done.log_lines  # a save longer than the grace is cut off


@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "warm"])
def test_preemption_by_sigkill_alone_gives_no_chance_to_save(hub, hub_api, warm):
    if warm:
        hub.jobs.warm_python([])
    job = hub_api.run_job(image="python:3.12", command=["python", "-c", SLEEPER.format(save=0)])
    hub.wait_job_output(job.id, "ready")
    hub.preempt_job(job.id)
    done = hub.wait_job(job.id, timeout=20)
    assert done.stage == "ERROR" and "saving" not in done.log_lines


FRESH = (
    "import logging, os, sys, warnings\n"
    "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
    "logging.info('logged')\n"
    "warnings.warn('warned')\n"
    "print(os.getcwd() == os.environ['HOME'].removesuffix('-home'), sorted(k for k in os.environ if k == 'ONLY'))\n"
    "from tqdm import tqdm\n"
    "print(sum(tqdm(range(3), file=sys.stdout)), flush=True)\n"
    "print(repr(sys.stdin.read()), flush=True)\n"
    "sys.exit(3)\n"
)


def test_a_warm_job_starts_as_a_fresh_interpreter(hub, hub_api, caplog):
    """Forked from this process (a test runner capturing logs and warnings, with tqdm's write lock made and taken),
    it still logs, warns, draws progress bars and exits as a fresh interpreter would, with its own working dir,
    environment and empty stdin."""
    from tqdm import tqdm

    lock = tqdm.get_lock()  # made before the fork: its semaphore would be shared with every job
    hub.jobs.warm_python([])
    with lock:  # as a job killed while drawing a bar would leave it
        job = hub_api.run_job(image="python:3.12", command=["python", "-c", FRESH], env={"ONLY": "x"})
        done = hub.wait_job(job.id, timeout=20)
    assert (done.stage, done.message) == ("ERROR", "Job failed with exit code: 3")
    lines = done.log_lines
    assert "logged" in lines and any("UserWarning: warned" in line for line in lines)
    assert lines[-2:] == ["3", "''"] and "True ['ONLY']" in lines


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
