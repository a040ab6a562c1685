"""Preemption chaos: a run as Hugging Face Jobs, preempted at random moments under random Hub faults, relaunched by
`run_until_done` (what `jobs run --until-done` calls) until it finishes. Used by tests/test_chaos.py and bench/chaos.py.

Each launched job is preempted while kills remain: at a random moment of its life (during set-up and resume, or after
a random number of trained steps plus a random part of a step), by SIGKILL alone or SIGTERM then SIGKILL after a
random grace. Before each job
the Hub gets random faults: 5xx on commits, dropped connections (before or after the commit lands), slow uploads,
5xx on downloads. What each job did is read back from its log: the step it resumed from and the steps it trained.

Speed (the 20-kill test runs in `make test`): a one-layer tiny model (``chaos_model``); jobs forked from a warm
interpreter that has imported everything a training job imports (``PRELOAD``: this process, forked, see the Hub
double), each with one CPU thread (``JOB_THREADS``, and the reference run too, in ``one_thread``: on a 2-core
machine, two threads per tiny job only fight the test process and each other, and a step took 30 times longer). The
kill moments are counted in logged steps and in the set-up time measured so far, never in fixed seconds; the watcher
waits on the job's log rather than polling it, and follows each job's log as `jobs run --until-done` does.
"""

from __future__ import annotations

import contextlib
import random
import re
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .recipes import write_recipe

REPO = "tester/chaos"
BUCKET = "tester/chaos-checkpoints"
# What a training job imports (the job's image has them installed and warm): the lazy packages by the modules the
# job reaches, so a job spends its life on set-up, training and pushes, not imports.
PRELOAD = [
    "torch",
    "transformers",
    "transformers.trainer",
    "transformers.models.llama.modeling_llama",
    "trl",
    "trl.trainer.sft_trainer",
    "trl.chat_template_utils",
    "peft",
    "datasets",
    "safetensors.torch",
    "matplotlib.pyplot",  # the loss curve at the end
    "lorallama.cli",
    "lorallama.training.run",
    "lorallama.training.trainer",
    "lorallama.training.distributed",
    "lorallama.publishing.cards",
]
JOB_THREADS = 1  # CPU threads per job (and for the reference run): see the module docstring


def prepare_jobs(hub) -> None:
    """Jobs forked from the warm interpreter (this process once it has imported ``PRELOAD``), one CPU thread each.
    Call it first: the warm interpreter is a fork of this process as it is then."""
    hub.jobs.extra_env["OMP_NUM_THREADS"] = str(JOB_THREADS)
    hub.jobs.warm_python(PRELOAD)  # jobs skip the imports, not the work: real processes, real signals


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the uninterrupted reference with the threads a job gets, then give the process its threads back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(JOB_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def chaos_model(folder: Path) -> Path:
    """The tiny chat model, one layer deep: half the modules to build, save and load in every job's life."""
    from .tiny import make_tiny_llama

    return make_tiny_llama(folder, "chatml", layers=1)


def chaos_recipe(folder: Path, base: Path, *, max_steps: int, save_steps: int, volume: bool) -> Path:
    path = write_recipe(folder, base, save_steps=save_steps, logging_steps=1, max_steps=max_steps, save_total_limit=2)
    raw = yaml.safe_load(path.read_text())
    raw["hub"] = {"model_repo": REPO}
    if volume:
        raw["job"] = {"checkpoint_volume": BUCKET}
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass
class Life:
    """One job: how it ended and what it did."""

    job_id: str
    kill: str | None = None  # "SIGKILL" | "SIGTERM+<grace>s", when preempted
    fault: str | None = None
    stage: str | None = None
    resumed_from: int = 0
    resumed: bool = False  # it got as far as deciding where to resume
    trained: int = 0  # steps it logged
    seconds: float = 0.0  # from its start to its end
    failed_commits: int = 0  # its commits that met a fault and did not land (5xx, connection dropped before)
    retried: int = 0  # of those, the ones it followed with another commit (a retry, or a newer checkpoint's push)

    @property
    def reached(self) -> int:
        return self.resumed_from + self.trained


@dataclass
class ChaosReport:
    lives: list[Life] = field(default_factory=list)
    commit_faults_hit: int = 0
    checkpoint_commits: int = 0
    seconds: float = 0.0

    @property
    def kills(self) -> list[Life]:
        return [life for life in self.lives if life.kill and life.stage == "ERROR"]

    def redone(self, save_steps: int) -> list[int]:
        """Per preemption: steps the killed job had reached past where the next job that resumed started. A job
        killed before it chose where to resume lost no training of its own (0)."""
        out = []
        for i, killed in enumerate(self.lives):
            if not (killed.kill and killed.stage == "ERROR"):
                continue
            following = next((life for life in self.lives[i + 1 :] if life.resumed), None)
            if not killed.resumed or following is None:
                out.append(0)
            else:
                out.append(max(0, killed.reached - following.resumed_from))
        return out

    def summary(self, save_steps: int) -> dict:
        redone = self.redone(save_steps)
        return {
            "kills_survived": len(self.kills),
            "sigkill_alone": sum(1 for life in self.kills if life.kill == "SIGKILL"),
            "jobs": len(self.lives),
            "steps_redone_max": max(redone, default=0),
            "steps_redone_mean": round(sum(redone) / len(redone), 2) if redone else 0.0,
            "save_steps": save_steps,
            "pushes_failed": sum(life.failed_commits for life in self.lives),
            "pushes_retried": sum(life.retried for life in self.lives),
            "commit_faults_hit": self.commit_faults_hit,
            "checkpoint_commits": self.checkpoint_commits,
            "seconds": round(self.seconds, 1),
        }


_RESUME = re.compile(r"resume order: .*→ (.*)")
_LOSS = re.compile(r"\{'loss': ")  # a logged step (after tqdm's \r-separated bar updates on the same line)


def read_life(life: Life, lines: list[str]) -> None:
    for line in lines:
        if m := _RESUME.search(line):
            found = re.search(r"checkpoint-(\d+)|\(step (\d+)\)", m[1])
            life.resumed_from = int(next(g for g in found.groups() if g)) if found else 0
            life.resumed = True
        else:
            life.trained += len(_LOSS.findall(line))


def random_fault(hub, rng: random.Random) -> str | None:
    kind = rng.choice(["none", "5xx", "5xx", "drop", "drop-after", "slow", "read-5xx"])
    if kind == "5xx":
        n, status = rng.randint(1, 2), rng.choice([500, 502, 503])
        hub.fail_next(n, status, path=r"/commit/")
        return f"{n}x{status} on commit"
    if kind == "drop":
        hub.drop_next(1, path=r"/commit/")
        return "dropped commit"
    if kind == "drop-after":
        hub.drop_next(1, path=r"/commit/", after_processing=True)
        return "commit landed, answer dropped"
    if kind == "slow":
        seconds, n = round(rng.uniform(0.1, 0.5), 2), rng.randint(1, 4)
        hub.add_latency(seconds, path=r"/(preupload|commit)/", n=n)
        return f"{n} uploads {seconds}s slow"
    if kind == "read-5xx":
        hub.fail_next(1, 503, path=r"/resolve/")
        return "503 on a download"
    return None


class _Setup:
    """How long jobs take from start to their first logged step (set-up: fetch the bundle, resume, build the
    trainer), measured as they go; kills during set-up fall within it however fast or loaded the machine is."""

    def __init__(self, default: float = 1.5):
        self.default, self.seen = default, []

    def add(self, seconds: float) -> None:
        self.seen.append(seconds)

    @property
    def seconds(self) -> float:
        return statistics.median(self.seen) if self.seen else self.default


def _wait_for(job, ready) -> None:
    """Block until ``ready()`` holds or the job is over, woken by each log line and stage change (no polling)."""
    with job.cond:
        while not (job.done or ready()):
            job.cond.wait(timeout=0.5)


@dataclass
class KillPlan:
    """When and how one job dies, drawn when it is launched (so a seed gives the same plans)."""

    during_setup: bool  # a quarter: during set-up, else after `steps` logged steps
    steps: int
    fraction: float  # of the set-up time (0-1), or of a step after the `steps`-th (0-1.5)
    grace: float | None  # half: SIGTERM then SIGKILL after this; the other half None, SIGKILL alone

    @classmethod
    def draw(cls, rng: random.Random, max_steps_before: int) -> KillPlan:
        during_setup = rng.random() < 0.25
        steps, fraction = rng.randint(1, max_steps_before), rng.uniform(0.0, 1.0 if during_setup else 1.5)
        grace = None if rng.random() < 0.5 else round(rng.uniform(0.1, 2.0), 2)
        return cls(during_setup, steps, fraction, grace)


def _preempt_at_random(hub, life: Life, plan: KillPlan, setup: _Setup) -> None:
    """Kill during set-up, or after a random number of logged steps plus a random part of a step: counted in steps
    and in the measured set-up time, not in fixed seconds, so the moments spread over saves and pushes however fast
    the machine is."""
    job = hub.job(life.job_id)
    _wait_for(job, lambda: job.t_started is not None)
    target, grace = plan.steps, plan.grace
    if plan.during_setup:  # fetching the bundle, resuming, building the trainer
        time.sleep(plan.fraction * setup.seconds)
    else:
        counted, seen, first = 0, 0, None

        def reached() -> bool:
            nonlocal counted, seen, first
            lines = job.logs[counted:]
            counted += len(lines)
            seen += sum(len(_LOSS.findall(line)) for _, line in lines)
            if seen and first is None:
                first = time.monotonic()
                setup.add(first - job.t_started)
            return seen >= target

        _wait_for(job, reached)
        step_s = (time.monotonic() - first) / max(1, seen - 1) if first and seen > 1 else 0.05
        time.sleep(plan.fraction * step_s)
    life.kill = "SIGKILL" if grace is None else f"SIGTERM+{grace}s"
    hub.preempt_job(life.job_id, grace)


def _count_retried_pushes(hub, lives: list[Life]) -> None:
    """From the double's request log: each job's commits that failed to land, and how many it followed with another
    commit before it ended (retried, or superseded by a newer checkpoint; a kill can come first)."""
    commits = [r for r in hub.requests if r.method == "POST" and "/commit/" in r.path]
    for life in lives:
        job = hub.job(life.job_id)
        mine = [r for r in commits if job.t_started is not None and job.t_started <= r.at <= (job.t_finished or r.at)]
        for i, r in enumerate(mine):
            if r.fault == "drop" or (r.fault or "").startswith("status"):
                life.failed_commits += 1
                life.retried += any(later.at > r.at for later in mine[i + 1 :])


def run_chaos(
    hub, recipe_path: Path, *, kills: int, seed: int, max_steps_before: int = 6, timeout: str = "20m"
) -> ChaosReport:
    """Run the recipe as jobs until done, preempting the first ``kills`` jobs; the report of every job."""
    from lorallama.recipe import load_recipe
    from lorallama.training import jobs

    rng = random.Random(seed)
    recipe = load_recipe(str(recipe_path))
    report, threads, setup = ChaosReport(), [], _Setup()
    started = time.monotonic()

    def on_launch(job_id: str) -> None:
        life = Life(job_id)
        report.lives.append(life)
        life.fault = random_fault(hub, rng)
        if sum(1 for life in report.lives if life.kill is not None) < kills:
            plan = KillPlan.draw(rng, max_steps_before)
            thread = threading.Thread(target=_preempt_at_random, args=(hub, life, plan, setup), daemon=True)
            life.kill = "pending"
            thread.start()
            threads.append(thread)

    # As `jobs run --until-done` does: follow each job's log until it ends (here into nothing: the double keeps it).
    jobs.run_until_done(
        recipe,
        "cpu-basic",
        timeout,
        max_attempts=kills + 10,
        backoff=0.0,
        poll=0.05,
        on_launch=on_launch,
        on_log=lambda line: None,
    )
    for thread in threads:
        thread.join(timeout=30)
    report.seconds = time.monotonic() - started
    for life in report.lives:
        job = hub.job(life.job_id)
        life.stage = job.stage
        life.seconds = (job.t_finished or 0.0) - (job.t_started or job.t_finished or 0.0)
        if life.kill == "pending" or job.end_reason != "preempted":
            life.kill = None  # it finished before its moment came
        read_life(life, job.log_lines)
    report.commit_faults_hit = sum(
        1 for r in hub.requests if r.fault and "/commit/" in r.path and "latency" not in r.fault
    )
    _count_retried_pushes(hub, report.lives)
    report.checkpoint_commits = sum(1 for c in hub.commits(REPO) if c.title.endswith(", checkpoint"))
    return report
