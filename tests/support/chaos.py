"""Preemption chaos: a run as Hugging Face Jobs, preempted at random moments under random Hub faults, relaunched by
`run_until_done` (what `jobs run --until-done` calls) until it finishes. Used by tests/test_chaos.py and bench/chaos.py.

Each launched job is preempted while kills remain: at a random moment of its life (during set-up and resume, or after
a random number of trained steps plus a random part of a step), by SIGKILL alone or SIGTERM then SIGKILL after a
random grace. Before each job
the Hub gets random faults: 5xx on commits, dropped connections (before or after the commit lands), slow uploads,
5xx on downloads. What each job did is read back from its log: the step it resumed from and the steps it trained.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .recipes import write_recipe

REPO = "tester/chaos"
BUCKET = "tester/chaos-checkpoints"
PRELOAD = [
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "safetensors.torch",
    "lorallama.cli",
    "lorallama.training.run",
]


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


def _logged_steps(job) -> int:
    return sum(len(_LOSS.findall(line)) for line in job.log_lines)


def _preempt_at_random(hub, life: Life, rng: random.Random, max_steps_before: int) -> None:
    """Kill during set-up, or after a random number of logged steps plus a random part of a step: counted in steps,
    not seconds, so the moments spread over saves and pushes however fast the machine is."""
    job = hub.job(life.job_id)
    while job.t_started is None and not job.done:
        time.sleep(0.01)
    if rng.random() < 0.25:  # during set-up: fetching the bundle, resuming, building the trainer
        time.sleep(rng.uniform(0.0, 1.5))
    else:
        target, seen, first = rng.randint(1, max_steps_before), 0, None
        while not job.done and seen < target:
            seen = _logged_steps(job)
            first = first or (time.monotonic() if seen else None)
            time.sleep(0.005)
        step_s = (time.monotonic() - first) / max(1, seen - 1) if first and seen > 1 else 0.05
        time.sleep(rng.uniform(0.0, 1.5 * step_s))
    grace = None if rng.random() < 0.5 else round(rng.uniform(0.1, 2.0), 2)
    life.kill = "SIGKILL" if grace is None else f"SIGTERM+{grace}s"
    hub.preempt_job(life.job_id, grace)


def run_chaos(
    hub, recipe_path: Path, *, kills: int, seed: int, max_steps_before: int = 6, timeout: str = "20m"
) -> ChaosReport:
    """Run the recipe as jobs until done, preempting the first ``kills`` jobs; the report of every job."""
    from lorallama.recipe import load_recipe
    from lorallama.training import jobs

    rng = random.Random(seed)
    recipe = load_recipe(str(recipe_path))
    report, threads = ChaosReport(), []
    started = time.monotonic()

    def on_launch(job_id: str) -> None:
        life = Life(job_id)
        report.lives.append(life)
        life.fault = random_fault(hub, rng)
        if sum(1 for life in report.lives if life.kill is not None) < kills:
            thread = threading.Thread(target=_preempt_at_random, args=(hub, life, rng, max_steps_before), daemon=True)
            life.kill = "pending"
            thread.start()
            threads.append(thread)

    jobs.run_until_done(
        recipe, "cpu-basic", timeout, max_attempts=kills + 10, backoff=0.0, poll=0.05, on_launch=on_launch
    )
    for thread in threads:
        thread.join(timeout=30)
    report.seconds = time.monotonic() - started
    for life in report.lives:
        job = hub.job(life.job_id)
        life.stage = job.stage
        if life.kill == "pending" or job.end_reason != "preempted":
            life.kill = None  # it finished before its moment came
        read_life(life, job.log_lines)
    report.commit_faults_hit = sum(
        1 for r in hub.requests if r.fault and "/commit/" in r.path and "latency" not in r.fault
    )
    report.checkpoint_commits = sum(1 for c in hub.commits(REPO) if c.title.endswith(", checkpoint"))
    return report
