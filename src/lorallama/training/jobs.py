"""Hugging Face Jobs: launch a recipe's training, watch it, relaunch it until the run is done.

    lorallama jobs run finetome --flavor t4-small --timeout 4h --until-done
    lorallama jobs status <job-id>
    lorallama jobs logs <job-id> --follow
    lorallama jobs cancel <job-id>

A job depends on the Hub alone: the model repo receives ``train.py`` (a PEP 723 script) and ``job/`` holding the
recipe, the lorallama wheel and any local data files. HF_TOKEN travels as a job secret, never as an argument.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import hub
from ..errors import JobError
from ..names import rerun_command, wheel_name
from ..paths import RECIPES, checkout_root
from ..recipe import Recipe, parse_duration

log = logging.getLogger("lorallama")

JOB_SCRIPT = "train.py"  # in the checkout's train_jobs/: the PEP 723 entry point a job runs
TERMINAL = {"COMPLETED", "ERROR", "CANCELED", "DELETED"}


def _checkout() -> Path:
    root = checkout_root()
    if root is None:
        raise JobError(
            "launching a job needs the lorallama checkout (it builds the wheel and uploads train_jobs/train.py): "
            "run from a clone of the project, or re-run an existing job from its model repo (see its model card)"
        )
    return root


def build_wheel(dest: Path) -> Path:
    """The lorallama wheel the job installs (built from this checkout, no network needed)."""
    root = _checkout()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dest),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    return next(dest.glob("lorallama-*.whl"))


def bundle(recipe: Recipe, workdir: Path) -> dict[str, Path | bytes]:
    """Files for the model repo: the job script, the recipe (local data paths rewritten), the wheel, local data."""
    files: dict[str, Path | bytes] = {"train.py": _checkout() / RECIPES / JOB_SCRIPT}
    raw = recipe.to_dict()
    for spec in (raw["data"], raw["data"].get("replay")):
        if not spec:
            continue
        local = Path(recipe.resolve_path(spec["source"]))
        if local.is_file():
            files[f"job/data/{local.name}"] = local
            spec["source"] = f"data/{local.name}"  # relative to job/recipe.yaml
        elif local.is_dir():
            for f in sorted(p for p in local.rglob("*") if p.is_file()):
                files[f"job/data/{local.name}/{f.relative_to(local)}"] = f
            spec["source"] = f"data/{local.name}"
    files["job/recipe.yaml"] = yaml.safe_dump(raw, sort_keys=False).encode()
    wheel = build_wheel(workdir)
    files[f"job/{wheel_name()}"] = wheel
    return files


def launch(recipe: Recipe, flavor: str | None = None, timeout: str | None = None, restart: bool = False) -> str:
    """Upload the job bundle to the model repo and start the job; returns its id."""
    from huggingface_hub import get_token, hf_hub_url

    repo = recipe.hub.model_repo
    if not repo:
        raise JobError(f"recipe {recipe.slug!r} has no hub.model_repo: the job needs a repo to push checkpoints to")
    token = get_token()
    if not token:
        raise JobError("no Hugging Face token: set HF_TOKEN (a write token) in the environment")
    flavor = flavor or recipe.job.flavor
    timeout = timeout or recipe.job.timeout
    seconds = parse_duration(timeout)
    hub.ensure_repo(repo, private=recipe.hub.private)
    with tempfile.TemporaryDirectory() as tmp:
        files = bundle(recipe, Path(tmp))
        hub.upload_files(repo, files, f"Job bundle for {recipe.slug}: script, recipe, lorallama wheel")
    args = ["--repo", repo]
    # Leave the job ten minutes of its time limit to save and push (at least a tenth on short jobs).
    args += ["--time-budget", f"{max(seconds - 600, int(seconds * 0.9))}s"]
    if restart:
        args.append("--restart")
    job = hub.with_retries(
        lambda: hub.api().run_uv_job(
            script=hf_hub_url(repo, "train.py"),
            script_args=args,
            dependencies=[f"lorallama @ {hf_hub_url(repo, f'job/{wheel_name()}')}"],
            flavor=flavor,
            timeout=seconds,
            secrets={"HF_TOKEN": token},
            labels={"lorallama": recipe.slug},
        ),
        "launching the job",
    )
    log.info("job %s launched on %s for %s (timeout %s)", job.id, flavor, repo, timeout)
    log.info("re-run from the Hub alone: %s", rerun_command(repo, flavor, timeout))
    return job.id


def stage(job_id: str) -> tuple[str, str | None]:
    info = hub.with_retries(lambda: hub.api().inspect_job(job_id=job_id), f"inspecting job {job_id}")
    return str(info.status.stage), info.status.message


def wait(job_id: str, poll: float = 5.0, on_log: Callable[[str], None] | None = None) -> tuple[str, str | None]:
    """Block until the job ends; stream its logs to ``on_log`` when given. Returns (stage, message)."""
    if on_log is not None:
        try:
            for line in hub.api().fetch_job_logs(job_id=job_id, follow=True):
                on_log(line)
        except Exception as e:  # a dropped log stream is not a failed job: fall back to polling
            log.warning("log stream ended (%s); polling the job instead", type(e).__name__)
    while True:
        current, message = stage(job_id)
        if current in TERMINAL:
            return current, message
        time.sleep(poll)


@dataclass
class Attempt:
    job_id: str
    stage: str
    message: str | None


def run_until_done(
    recipe: Recipe,
    flavor: str | None = None,
    timeout: str | None = None,
    max_attempts: int = 5,
    backoff: float = 30.0,
    poll: float = 5.0,
    on_launch: Callable[[str], None] | None = None,
    on_log: Callable[[str], None] | None = None,
) -> list[Attempt]:
    """Launch, watch, and relaunch after errors, timeouts or preemption until the run on the Hub is finished.

    A job canceled by a person is not relaunched. Attempts are bounded; waits between them grow.
    """
    attempts: list[Attempt] = []
    repo = recipe.hub.model_repo
    for n in range(1, max_attempts + 1):
        job_id = launch(recipe, flavor, timeout)
        if on_launch:
            on_launch(job_id)
        current, message = wait(job_id, poll=poll, on_log=on_log)
        attempts.append(Attempt(job_id, current, message))
        run = hub.remote_run(repo)
        log.info(
            "attempt %d: job %s ended %s; run %s", n, job_id, current, "finished" if run.finished else "unfinished"
        )
        if run.finished:
            return attempts
        if current == "CANCELED":
            raise JobError(
                f"job {job_id} was canceled; not relaunching. Resume later with `lorallama jobs run {recipe.slug}`"
            )
        if n < max_attempts:
            wait_s = backoff * 2 ** (n - 1)
            log.info("relaunching in %.0f s (resumes from step %s)", wait_s, run.checkpoint_step)
            time.sleep(wait_s)
    raise JobError(
        f"the run is still unfinished after {max_attempts} attempts ({', '.join(a.stage for a in attempts)}): "
        f"read the logs with `lorallama jobs logs {attempts[-1].job_id}` and relaunch with --until-done"
    )


def logs(job_id: str, follow: bool = False):
    """The job's log lines (streamed until it ends with ``follow``)."""
    try:
        yield from hub.api().fetch_job_logs(job_id=job_id, follow=follow)
    except Exception as e:
        if not hub.is_hub_failure(e):
            raise
        raise hub.explain(e, f"reading the logs of job {job_id}") from e


def cancel(job_id: str) -> None:
    hub.with_retries(lambda: hub.api().cancel_job(job_id=job_id), f"canceling job {job_id}")
