"""Feedback from a chat Space: likes, dislikes and edited answers, appended as JSONL to a Hub dataset.

A Space turns it on with the variable ``LORALLAMA_FEEDBACK_DATASET=<namespace>/<name>`` (and an ``HF_TOKEN`` secret
that may write there); unset, nothing is recorded. Rows (``feedback_schema``) go to ``data/feedback-<random>.jsonl``
in a local folder that ``huggingface_hub.CommitScheduler`` commits to the dataset every few minutes (one file per
running Space, so replicas never write to the same file).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..feedback_schema import make_row

log = logging.getLogger("lorallama")


@dataclass
class FeedbackLog:
    """Append feedback rows to a local JSONL file that a ``CommitScheduler`` pushes to ``repo_id``."""

    repo_id: str
    every_minutes: float = 5.0
    folder: Path | None = None
    private: bool = True
    """Used only when the dataset does not exist yet: conversations are people's words, keep them private."""
    source: dict[str, Any] = field(default_factory=dict)
    """What produced the answers (Space, base, adapter), stored in every row."""

    def __post_init__(self) -> None:
        from huggingface_hub import CommitScheduler

        self.folder = Path(self.folder or tempfile.mkdtemp(prefix="lorallama-feedback-"))
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        self.file = self.folder / "data" / f"feedback-{uuid.uuid4().hex[:12]}.jsonl"
        self.scheduler = CommitScheduler(
            repo_id=self.repo_id,
            repo_type="dataset",
            folder_path=self.folder,
            every=self.every_minutes,
            private=self.private,
            allow_patterns=["data/*.jsonl"],
        )
        self.rows = 0

    def record(
        self,
        kind: str,
        conversation: list[dict[str, Any]],
        *,
        index: int,
        session: str | None = None,
        edited: str | None = None,
        previous: str | None = None,
    ) -> dict[str, Any]:
        """Append one row. ``conversation`` runs up to and including the answer at ``index`` (its position in the
        chat, counting the system prompt when there is one); ``edited`` is the corrected answer of an edit."""
        row = make_row(
            kind, conversation, index=index, session=session, edited=edited, previous=previous, source=self.source
        )
        return self.append(row)

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """Append a row made by ``feedback_schema`` (``make_row``, ``make_vote_row``)."""
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self.scheduler.lock, self.file.open("a", encoding="utf-8") as fh:  # never half a line in a commit
            fh.write(line)
        self.rows += 1
        return row

    def flush(self, timeout: float = 120) -> None:
        """Commit what is new now instead of at the next tick."""
        future = self.scheduler.trigger()
        if future is not None:
            future.result(timeout=timeout)

    def close(self) -> None:
        """Commit what is left and stop the schedule."""
        try:
            self.flush()
        finally:
            self.scheduler.stop()


def open_log(repo_id: str | None, **kwargs) -> FeedbackLog | None:
    """A ``FeedbackLog`` for ``repo_id``, or None when feedback is off (no repo named)."""
    repo_id = (repo_id or "").strip()
    if not repo_id:
        return None
    every = float(os.environ.get("LORALLAMA_FEEDBACK_EVERY", kwargs.pop("every_minutes", 5.0)))
    return FeedbackLog(repo_id, every_minutes=every, **kwargs)
