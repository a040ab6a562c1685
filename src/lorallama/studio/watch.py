"""Where a run stands, read from the Hub alone (so a reload, or another browser, sees the same): the stage of its
newest training job and of its watcher (found by label), the tail of the training job's log, and the loss curve
from the repo's ``last-checkpoint/trainer_state.json`` (``loss.json`` once the run is done)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .. import hub
from ..training import jobs

LOG_TAIL = 30


@dataclass
class Progress:
    repo: str
    stage: str  # what the page says: no run yet, training, relaunching, finished, stopped
    job_id: str | None = None
    job_stage: str | None = None
    watcher_id: str | None = None
    watcher_stage: str | None = None
    attempts: int = 0
    checkpoint_step: int | None = None
    finished: bool = False
    losses: list[tuple[int, float]] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"**{self.stage}**"]
        if self.job_id:
            parts.append(f"training job {self.job_id}: {self.job_stage} (attempt {self.attempts})")
        if self.watcher_id:
            parts.append(f"watcher job {self.watcher_id}: {self.watcher_stage}")
        if self.checkpoint_step is not None:
            parts.append(f"last checkpoint on the Hub: step {self.checkpoint_step}")
        return " · ".join(parts)


def _losses(raw: bytes | None, key: str | None = None) -> list[tuple[int, float]]:
    if not raw:
        return []
    data = json.loads(raw)
    history = data.get(key, []) if key else data
    return [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h and "step" in h]


def _role(job) -> str:
    return (getattr(job, "labels", None) or {}).get("lorallama-role", "train")


def progress(repo: str, token: str) -> Progress:
    """The run of ``repo`` as the Hub shows it now, read with ``token`` (the visitor's)."""
    namespace = repo.split("/", 1)[0]
    with hub.acting_for(token):
        found = jobs.run_jobs(repo, namespace=namespace)
        training = [j for j in found if _role(j) == "train"]
        watchers = [j for j in found if _role(j) == "watch"]
        run = hub.remote_run(repo)
        final = hub.read_file(repo, "loss.json") if run.finished else None
        state = None if final else hub.read_file(repo, f"{hub.CHECKPOINT_DIR}/trainer_state.json")
        out = Progress(repo, "no run yet", finished=run.finished, checkpoint_step=run.checkpoint_step)
        out.losses = _losses(final) if final else _losses(state, "log_history")
        if training:
            job = training[0]
            out.job_id, out.job_stage, out.attempts = job.id, str(job.status.stage), len(training)
            out.log_tail = list(jobs.logs(job.id, namespace=namespace, tail=LOG_TAIL))[-LOG_TAIL:]
        if watchers:
            out.watcher_id, out.watcher_stage = watchers[0].id, str(watchers[0].status.stage)
    active = {"SCHEDULING", "RUNNING"}
    if run.finished:
        out.stage = "finished: create your chat Space below"
    elif out.job_stage in active:
        out.stage = "training"
    elif out.watcher_stage in active:
        out.stage = "relaunching: the watcher starts the next training job"
    elif training or run.checkpoint_step is not None:
        out.stage = "stopped before the end: launch again with the same values to resume from the last checkpoint"
    return out


def latest_repo(token: str, namespace: str) -> str | None:
    """The repo of the visitor's newest studio run (from their jobs' labels), to show again after a reload."""
    with hub.acting_for(token):
        found = hub.with_retries(
            lambda: list(hub.api().list_jobs(labels={"lorallama-role": "train"}, namespace=namespace)),
            "listing your jobs",
        )
    found.sort(key=lambda j: str(j.created_at or ""), reverse=True)
    for job in found:
        label = (job.labels or {}).get("lorallama-repo")
        if label and "--" in label:
            return label.replace("--", "/", 1)
    return None
