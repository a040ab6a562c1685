"""Hugging Face Jobs: launch a recipe's training, watch it, relaunch it until the run is done.

    lorallama jobs run finetome --flavor t4-small --timeout 4h --until-done
    lorallama jobs status <job-id>
    lorallama jobs logs <job-id> --follow
    lorallama jobs cancel <job-id>

A job depends on the Hub alone: the model repo receives ``train.py`` (a PEP 723 script), ``watch.py`` (the watcher
a small CPU job runs to relaunch training until the run is done, ``launch_watcher``) and ``job/`` holding the
recipe, the lorallama wheel and any local data files. HF_TOKEN travels as a job secret, never as an argument. With
``job.checkpoint_volume`` a Storage Bucket is mounted read-write at ``/checkpoints`` and the run's output folder lives
there, so a relaunched job finds its local checkpoints.

Every job is labelled ``lorallama=<slug>`` and ``lorallama-repo=<namespace>--<name>`` (its model repo), so the jobs
of one run are found again by label (``running``), from the repo's name alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .. import hub
from ..errors import JobError
from ..names import rerun_command, wheel_name
from ..paths import RECIPES, WHEELS, checkout_root, job_files_root
from ..recipe import Recipe, build, parse_duration
from . import evaluation, knowledge
from .checkpoint_push import hub_checkpoint
from .estimate import gpus_of

log = logging.getLogger("lorallama")

JOB_SCRIPT = "train.py"  # in the checkout's train_jobs/: the PEP 723 entry point a job runs
WATCH_SCRIPT = "watch.py"  # in train_jobs/ too: the watcher job's entry point (relaunches until done)
VOLUME_MOUNT = "/checkpoints"  # where job.checkpoint_volume's bucket is mounted in the job
TERMINAL = {"COMPLETED", "ERROR", "CANCELED", "DELETED"}
ACTIVE = ("SCHEDULING", "RUNNING")
WATCHER_FLAVOR = "cpu-basic"  # the watcher only polls the Hub: the smallest flavor ($0.01/h on the Jobs price list)
REPRODUCIBLE_EPOCH = "315532800"  # 1980-01-01, the earliest zip date: the same source builds the same wheel bytes


def _job_files() -> Path:
    root = job_files_root()
    if root is None:
        raise JobError(
            "launching a job needs the lorallama checkout (it builds the wheel and uploads train_jobs/train.py): "
            "run from a clone of the project, or re-run an existing job from its model repo (see its model card)"
        )
    return root


def job_script(name: str = JOB_SCRIPT) -> Path:
    """``train_jobs/<name>`` of the checkout (or of the Space that carries the job files)."""
    return _job_files() / RECIPES / name


def build_wheel(dest: Path) -> Path:
    """The lorallama wheel the job installs: built from this checkout (no network needed, the same bytes for the
    same source), or the prebuilt one a Space that launches jobs carries in ``dist/``."""
    root = checkout_root()
    if root is None:
        prebuilt = _job_files() / WHEELS / wheel_name()
        if not prebuilt.is_file():
            raise JobError(f"no lorallama wheel at {prebuilt}: sync the Space again (lorallama sync builds it)")
        return Path(shutil.copy(prebuilt, Path(dest) / prebuilt.name))
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
        env={**os.environ, "SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH},
    )
    return next(Path(dest).glob("lorallama-*.whl"))


def bundle(recipe: Recipe, workdir: Path) -> dict[str, Path | bytes]:
    """Files for the model repo: the job and watcher scripts, the recipe (local data paths rewritten), the wheel,
    local data."""
    files: dict[str, Path | bytes] = {name: job_script(name) for name in (JOB_SCRIPT, WATCH_SCRIPT)}
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
    if recipe.eval is not None and (general := evaluation.general_source(recipe)) and Path(general).is_file():
        # The general chat set (the shipped one too: a job has no checkout) travels like the data.
        files[f"job/data/{Path(general).name}"] = Path(general)
        raw["eval"]["general_eval"] = f"data/{Path(general).name}"
    if recipe.eval is not None and (probe := knowledge.probe_source(recipe)):
        files[f"job/data/{Path(probe).name}"] = Path(probe)
        raw["eval"]["knowledge_probe"] = f"data/{Path(probe).name}"
    files["job/recipe.yaml"] = yaml.safe_dump(raw, sort_keys=False).encode()
    wheel = build_wheel(workdir)
    files[f"job/{wheel_name()}"] = wheel
    return files


def repo_label(repo: str) -> str:
    """A model repo as a label value: ``you/adapter`` → ``you--adapter`` (a repo name never holds ``--``)."""
    return repo.replace("/", "--")


def run_labels(recipe: Recipe, role: str = "train") -> dict[str, str]:
    """The labels of a run's jobs: its recipe, its model repo, and what the job does (``train`` or ``watch``)."""
    return {
        "lorallama": recipe.slug,
        "lorallama-repo": repo_label(recipe.hub.model_repo or ""),
        "lorallama-role": role,
    }


def launch(
    recipe: Recipe,
    flavor: str | None = None,
    timeout: str | None = None,
    restart: bool = False,
    labels: dict[str, str] | None = None,
    *,
    upload: bool = True,
    namespace: str | None = None,
) -> str:
    """Upload the job bundle to the model repo and start the job (labelled with ``run_labels`` and ``labels``) in
    ``namespace`` (default: the token's user); returns its id. ``upload=False`` relaunches the bundle the repo
    already holds (the watcher job, which has no checkout)."""
    from huggingface_hub import hf_hub_url

    repo = recipe.hub.model_repo
    if not repo:
        raise JobError(f"recipe {recipe.slug!r} has no hub.model_repo: the job needs a repo to push checkpoints to")
    token = hub.token()
    if not token:
        raise JobError("no Hugging Face token: set HF_TOKEN (a write token) in the environment")
    flavor = flavor or recipe.job.flavor
    timeout = timeout or recipe.job.timeout
    seconds = parse_duration(timeout)
    if upload:
        hub.ensure_repo(repo, private=recipe.hub.private)
        with tempfile.TemporaryDirectory() as tmp:
            files = bundle(recipe, Path(tmp))
            hub.upload_files(repo, files, f"Job bundle for {recipe.slug}: script, recipe, lorallama wheel")
    args = ["--repo", repo]
    # Leave the job ten minutes of its time limit to save and push (at least a tenth on short jobs).
    args += ["--time-budget", f"{max(seconds - 600, int(seconds * 0.9))}s"]
    if restart:
        args.append("--restart")
    args += ["--flavor", flavor]  # the run records what its time cost on this flavor
    if gpus_of(flavor) > 1:
        args += ["--gpus", str(gpus_of(flavor))]  # every GPU of the flavor trains, as one DDP worker each
    volumes = _checkpoint_volumes(recipe)
    if volumes:
        args += ["--output", f"{VOLUME_MOUNT}/{recipe.slug}"]
    job = hub.with_retries(
        lambda: hub.api().run_uv_job(
            script=hf_hub_url(repo, "train.py"),
            script_args=args,
            dependencies=[f"lorallama @ {hf_hub_url(repo, f'job/{wheel_name()}')}"],
            flavor=flavor,
            timeout=seconds,
            secrets={"HF_TOKEN": token},
            labels={**run_labels(recipe), **(labels or {})},
            volumes=volumes,
            namespace=namespace,
        ),
        "launching the job",
    )
    log.info("job %s launched on %s for %s (timeout %s)", job.id, flavor, repo, timeout)
    log.info("re-run from the Hub alone: %s", rerun_command(repo, flavor, timeout))
    return job.id


def _checkpoint_volumes(recipe: Recipe) -> list | None:
    """The Storage Bucket of ``job.checkpoint_volume`` as a read-write volume (huggingface_hub >= 1.8)."""
    if not recipe.job.checkpoint_volume:
        return None
    from huggingface_hub import Volume

    return [Volume(type="bucket", source=recipe.job.checkpoint_volume, mount_path=VOLUME_MOUNT)]


def stage(job_id: str) -> tuple[str, str | None]:
    info = hub.with_retries(lambda: hub.api().inspect_job(job_id=job_id), f"inspecting job {job_id}")
    return str(info.status.stage), info.status.message


@dataclass
class JobStatus:
    stage: str
    message: str | None
    repo: str | None  # the model repo the job trains into (its --repo argument)
    checkpoint_step: int | None  # the newest checkpoint on the Hub
    checkpoint_at: datetime | None  # when the commit that put it there was made

    def describe(self, now: datetime | None = None) -> str:
        """``<stage> (message); last checkpoint on the Hub: step N, T ago``."""
        out = self.stage + (f" ({self.message})" if self.message else "")
        if self.repo is None:
            return out
        if self.checkpoint_step is None:
            return f"{out}; no checkpoint on the Hub yet ({self.repo})"
        ago = ""
        if self.checkpoint_at is not None:
            seconds = ((now or datetime.now(timezone.utc)) - self.checkpoint_at).total_seconds()
            ago = f", {format_age(seconds)} ago"
        return f"{out}; last checkpoint on the Hub: step {self.checkpoint_step}{ago} ({self.repo})"


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def status(job_id: str) -> JobStatus:
    """The job's stage and where its run stands on the Hub (the newest checkpoint and its age)."""
    info = hub.with_retries(lambda: hub.api().inspect_job(job_id=job_id), f"inspecting job {job_id}")
    argv = [*(info.command or []), *(info.arguments or [])]  # run_uv_job puts the script's arguments in command
    repo = argv[argv.index("--repo") + 1] if "--repo" in argv[:-1] else None
    step, at = None, None
    if repo is not None:
        found = hub_checkpoint(repo)
        if found is not None:
            step, at = found
    return JobStatus(str(info.status.stage), info.status.message, repo, step, at)


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
    *,
    first_job: str | None = None,
    upload: bool = True,
    namespace: str | None = None,
) -> list[Attempt]:
    """Launch, watch, and relaunch after errors, timeouts or preemption until the run on the Hub is finished.

    A job canceled by a person is not relaunched. Attempts are bounded; waits between them grow. With
    ``first_job`` the first attempt is that job, already running, instead of a new launch (the watcher job);
    ``upload=False`` relaunches the bundle the repo holds.
    """
    attempts: list[Attempt] = []
    repo = recipe.hub.model_repo
    for n in range(1, max_attempts + 1):
        if n == 1 and first_job:
            job_id = first_job
        else:
            job_id = launch(recipe, flavor, timeout, upload=upload, namespace=namespace)
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


def recipe_in_repo(repo: str) -> Recipe:
    """The recipe a model repo's job bundle holds (``job/recipe.yaml``), aimed at that repo."""
    raw = hub.read_file(repo, "job/recipe.yaml")
    if raw is None:
        raise JobError(f"{repo} holds no job/recipe.yaml: launch the run first (lorallama jobs run <recipe>)")
    data = yaml.safe_load(raw) or {}
    data.setdefault("hub", {})["model_repo"] = repo
    return build(Recipe, data, "")


def watch(
    repo: str,
    first_job: str | None = None,
    flavor: str | None = None,
    timeout: str | None = None,
    max_attempts: int = 5,
    backoff: float = 30.0,
    namespace: str | None = None,
) -> list[Attempt]:
    """Relaunch the job bundle ``repo`` holds until its run is done, watching ``first_job`` first: what the
    watcher job runs (``train_jobs/watch.py``), with the run owner's token as its HF_TOKEN secret."""
    recipe = recipe_in_repo(repo)

    def on_launch(job_id: str) -> None:
        log.info("watching job %s of %s", job_id, repo)

    return run_until_done(
        recipe,
        flavor,
        timeout,
        max_attempts=max_attempts,
        backoff=backoff,
        on_launch=on_launch,
        first_job=first_job,
        upload=False,
        namespace=namespace,
    )


def launch_watcher(
    recipe: Recipe,
    first_job: str,
    flavor: str | None = None,
    timeout: str | None = None,
    max_attempts: int = 5,
    backoff: float = 30.0,
    namespace: str | None = None,
) -> str:
    """Start the watcher: a ``cpu-basic`` job that runs ``watch`` on the repo (``train_jobs/watch.py`` from the
    repo's bundle), so relaunching until done needs neither this process nor a browser. The token goes as its
    HF_TOKEN secret; its time limit covers every attempt it may make. Returns its id."""
    from huggingface_hub import hf_hub_url

    repo = recipe.hub.model_repo
    token = hub.token()
    if not repo or not token:
        raise JobError("the watcher needs the run's model repo and a token that can launch jobs")
    flavor = flavor or recipe.job.flavor
    timeout = timeout or recipe.job.timeout
    per_attempt = parse_duration(timeout) + backoff * 2 ** (max_attempts - 1) + 15 * 60
    args = ["--repo", repo, "--job", first_job, "--flavor", flavor, "--timeout", timeout]
    args += ["--max-attempts", str(max_attempts), "--backoff", f"{backoff:g}"]
    if namespace:
        args += ["--namespace", namespace]
    job = hub.with_retries(
        lambda: hub.api().run_uv_job(
            script=hf_hub_url(repo, WATCH_SCRIPT),
            script_args=args,
            flavor=WATCHER_FLAVOR,
            timeout=int(per_attempt * max_attempts),
            secrets={"HF_TOKEN": token},
            labels=run_labels(recipe, "watch"),
            namespace=namespace,
        ),
        "launching the watcher job",
    )
    log.info("watcher job %s launched on %s for %s", job.id, WATCHER_FLAVOR, repo)
    return job.id


def running(repo: str, namespace: str | None = None) -> list:
    """The jobs of ``repo``'s run that are scheduling or running (found by its ``lorallama-repo`` label)."""
    return hub.with_retries(
        lambda: list(
            hub.api().list_jobs(status=list(ACTIVE), labels={"lorallama-repo": repo_label(repo)}, namespace=namespace)
        ),
        f"listing the jobs of {repo}",
    )


def run_jobs(repo: str, namespace: str | None = None) -> list:
    """Every job of ``repo``'s run, newest first (found by label)."""
    found = hub.with_retries(
        lambda: list(hub.api().list_jobs(labels={"lorallama-repo": repo_label(repo)}, namespace=namespace)),
        f"listing the jobs of {repo}",
    )
    return sorted(found, key=lambda j: str(getattr(j, "created_at", "") or ""), reverse=True)


def logs(job_id: str, follow: bool = False, namespace: str | None = None, tail: int | None = None):
    """The job's log lines (streamed until it ends with ``follow``; the last ``tail`` only, when given)."""
    try:
        yield from hub.api().fetch_job_logs(job_id=job_id, follow=follow, namespace=namespace, tail=tail)
    except Exception as e:
        if not hub.is_hub_failure(e):
            raise
        raise hub.explain(e, f"reading the logs of job {job_id}") from e


def cancel(job_id: str) -> None:
    hub.with_retries(lambda: hub.api().cancel_job(job_id=job_id), f"canceling job {job_id}")
