"""Checkpoints that reach the Hub: pushed in the background, retried, verified, reported; never rotated away unsent.

``CheckpointPusher`` replaces Trainer's own ``hub_strategy="checkpoint"`` push, which fires one upload per save and
forgets it: a failed push was lost without a retry or a word. Here every saved checkpoint is queued and pushed by one
background thread (training never waits on the Hub) as one commit of ``last-checkpoint/`` plus the run's
``recipe.yaml`` and unfinished ``run.json``. A push counts only when the Hub's ``last-checkpoint/trainer_state.json``
holds its step. Failures are retried with backoff; a newer checkpoint supersedes one that keeps failing. Losing the
Hub is said once, and its return once. ``safe_step`` is the newest step known to be on the Hub.

The pusher also does ``save_total_limit``'s rotation (Trainer's is switched off when it runs): old checkpoints go
only once the Hub holds a step at least as new, so the only copy of progress is never deleted.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from .. import hub
from ..errors import HubError, TrainError
from .resume import checkpoint_step, is_complete

log = logging.getLogger("lorallama")

ATTEMPTS = 4  # per checkpoint; the next checkpoint takes over after that (or sooner, when it is already waiting)
STATE_FILE = "trainer_state.json"


@dataclass
class PushReport:
    """What the pusher did; recorded in run.json as ``hub_checkpoint``."""

    step: int | None = None  # the newest step verified on the Hub
    pushed_at: str | None = None  # when that push was verified (UTC, ISO 8601)
    pushes: int = 0  # checkpoints verified on the Hub
    retries: int = 0  # attempts after a failed one
    superseded: int = 0  # checkpoints given up for a newer one
    failed: int = 0  # checkpoints that never reached the Hub
    last_error: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "last_error"}


def check_hub_access(repo: str, private: bool = False) -> None:
    """Before any training: the token is valid and can write to ``repo`` (created when missing), or a ``HubError``
    naming the repo and the fix. A run that could not push would otherwise lose every checkpoint silently."""
    from huggingface_hub import get_token

    if not get_token():
        raise TrainError(
            f"pushing checkpoints to {repo} needs a write token: set HF_TOKEN (https://huggingface.co/settings/tokens)"
            ", or train locally with --no-push"
        )
    hub.ensure_repo(repo, private=private)
    hub.with_retries(lambda: hub.api().auth_check(repo, write=True), f"checking write access to {repo}", repo_id=repo)


def hub_checkpoint(repo: str) -> tuple[int, datetime | None] | None:
    """(step, time of the commit that put it there) of the repo's ``last-checkpoint/``, or None."""
    path = f"{hub.CHECKPOINT_DIR}/{STATE_FILE}"
    raw = hub.read_file(repo, path)
    if raw is None:
        return None
    infos = hub.with_retries(
        lambda: hub.api().get_paths_info(repo, [path], expand=True), f"reading {path} of {repo}", repo_id=repo
    )
    when = infos[0].last_commit.date if infos and getattr(infos[0], "last_commit", None) else None
    return json.loads(raw)["global_step"], when


class CheckpointPusher:
    """One background thread pushing saved checkpoints of ``checkpoints_dir`` to ``repo``'s ``last-checkpoint/``."""

    def __init__(
        self,
        repo: str,
        checkpoints_dir: Path,
        run_files: dict[str, bytes],
        save_total_limit: int | None = None,
        attempts: int = ATTEMPTS,
        start_step: int | None = None,
    ) -> None:
        self.repo = repo
        self.checkpoints_dir = Path(checkpoints_dir)
        self.run_files = run_files
        self.save_total_limit = save_total_limit
        self.attempts = attempts
        self.report = PushReport(step=start_step)
        self._pending: list[tuple[int, Path]] = []  # oldest first
        self._current: int | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._hub_lost = False
        self._thread = threading.Thread(target=self._loop, name="checkpoint-pusher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------------ interface

    @property
    def safe_step(self) -> int | None:
        return self.report.step

    def submit(self, folder: Path) -> None:
        """Queue a saved checkpoint (its trainer_state.json is written) and rotate old ones."""
        step = checkpoint_step(Path(folder))
        with self._cond:
            self._pending = [(s, f) for s, f in self._pending if s != step] + [(step, Path(folder))]
            self._cond.notify_all()
        self.rotate()

    def close(self, timeout: float | None = None) -> PushReport:
        """Push what is queued (retries included), then stop the thread. The final push comes after this."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return self.report

    def callback(self):
        from transformers import TrainerCallback

        pusher = self

        class PushCheckpoints(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                if state.is_world_process_zero:  # under DDP one worker pushes
                    pusher.submit(Path(args.output_dir) / f"checkpoint-{state.global_step}")
                return control

        return PushCheckpoints()

    def protected(self) -> set[int]:
        """Steps that must stay on disk: queued, being pushed, or newer than what the Hub holds."""
        with self._cond:
            keep = {s for s, _ in self._pending}
            if self._current is not None:
                keep.add(self._current)
        return keep

    def rotate(self) -> list[Path]:
        """``save_total_limit``: delete the oldest checkpoints beyond it whose progress the Hub already holds."""
        if not self.save_total_limit or not self.checkpoints_dir.is_dir():
            return []
        done = sorted((p for p in self.checkpoints_dir.glob("checkpoint-*") if is_complete(p)), key=checkpoint_step)
        safe, keep = self.safe_step if self.safe_step is not None else -1, self.protected()
        removed = []
        for folder in done[: max(0, len(done) - self.save_total_limit)]:
            step = checkpoint_step(folder)
            if step <= safe and step not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    # ------------------------------------------------------------------------------------------------ the thread

    def _next(self) -> tuple[int, Path] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            step, folder = self._pending.pop(0)
            self._current = step
            return step, folder

    def _loop(self) -> None:
        while (item := self._next()) is not None:
            step, folder = item
            try:
                self._push_with_retries(step, folder)
            except Exception as e:  # never let a bug here kill training quietly: say it, keep going
                log.warning("checkpoint push of step %d failed unexpectedly: %s: %s", step, type(e).__name__, e)
            with self._cond:
                self._current = None
            self.rotate()

    def _push_with_retries(self, step: int, folder: Path) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self._push(step, folder)
                return self._pushed(step)
            except Exception as e:
                if not hub.is_hub_failure(e) and not isinstance(e, HubError | OSError):
                    raise
                if self._on_hub(step):  # the commit landed and only its answer was lost
                    return self._pushed(step)
                self.report.last_error = self._reason(e, step)
                log.debug("checkpoint push of step %d failed (attempt %d): %s", step, attempt, self.report.last_error)
            if attempt == self.attempts:
                break
            if self._newer_waiting(hub.RETRY_DELAY * 2 ** (attempt - 1)):
                with self._cond:  # the newest queued checkpoint holds all progress: skip to it
                    self.report.superseded += len(self._pending)
                    self._pending = self._pending[-1:]
                return self._gave_up(step, superseded=True)
            self.report.retries += 1
        self.report.failed += 1
        self._gave_up(step, superseded=False)

    def _push(self, step: int, folder: Path) -> None:
        from huggingface_hub import CommitOperationAdd

        files = {
            f"{hub.CHECKPOINT_DIR}/{f.relative_to(folder)}": f
            for f in sorted(folder.rglob("*"))
            if f.is_file() and not f.name.startswith(".")
        }
        if f"{hub.CHECKPOINT_DIR}/{STATE_FILE}" not in files:
            raise OSError(f"{folder} has no {STATE_FILE}: not a complete checkpoint")
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in files.items()]
        ops += [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in self.run_files.items()]
        # Trainer's wording, so a repo's history reads the same as before.
        info = hub.api().create_commit(
            self.repo, operations=ops, commit_message=f"Training in progress, step {step}, checkpoint"
        )
        if not self._on_hub(step, revision=info.oid):
            raise OSError(f"the Hub's {hub.CHECKPOINT_DIR}/{STATE_FILE} does not hold step {step} after the commit")

    def _on_hub(self, step: int, revision: str | None = None) -> bool:
        """Whether the Hub's last-checkpoint/trainer_state.json holds ``step`` (at ``revision``, else main)."""
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(self.repo, f"{hub.CHECKPOINT_DIR}/{STATE_FILE}", revision=revision or "main")
            return json.loads(Path(path).read_text())["global_step"] == step
        except Exception:
            return False

    def _newer_waiting(self, seconds: float) -> bool:
        """Back off ``seconds``; True as soon as a newer checkpoint is queued (it supersedes this one)."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _pushed(self, step: int) -> None:
        self.report.step = max(step, self.report.step or -1)
        self.report.pushed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.report.pushes += 1
        if self._hub_lost:
            self._hub_lost = False
            log.warning("the Hub is back: checkpoint step %d is on %s", step, self.repo)
        else:
            log.info("checkpoint step %d is on the Hub (%s@%s)", step, self.repo, hub.CHECKPOINT_DIR)

    def _gave_up(self, step: int, superseded: bool) -> None:
        if self._hub_lost:  # said once per outage, not per checkpoint
            log.debug("checkpoint step %d did not reach the Hub either: %s", step, self.report.last_error)
            return
        self._hub_lost = True
        then = "a newer checkpoint takes over" if superseded else "the next checkpoint tries again"
        log.warning(
            "checkpoint step %d did not reach %s: %s. Training goes on and keeps its checkpoints locally; %s. "
            "Newest checkpoint on the Hub: %s",
            step,
            self.repo,
            self.report.last_error,
            then,
            f"step {self.safe_step}" if self.safe_step is not None else "none yet",
        )

    def _reason(self, exc: BaseException, step: int) -> str:
        """The Hub's reason in a few words; for what retrying cannot fix (401/403/404), the fix too."""
        if not hub.is_hub_failure(exc):
            return str(exc)
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status in (401, 403, 404):
            return str(hub.explain(exc, f"pushing checkpoint step {step}", self.repo))
        try:
            said = response.json().get("error") if response is not None else None
        except Exception:
            said = None
        return f"HTTP {status}: {said or type(exc).__name__}" if status else f"{type(exc).__name__}: {exc}"
