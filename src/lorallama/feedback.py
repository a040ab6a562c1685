"""Feedback from a chat Space: likes, dislikes and edited answers, appended as JSONL to a Hub dataset.

A Space turns it on with the variable ``LORALLAMA_FEEDBACK_DATASET=<namespace>/<name>`` (and an ``HF_TOKEN`` secret
that may write there); unset, nothing is recorded. Rows go to ``data/feedback-<random>.jsonl`` in a local folder
that ``huggingface_hub.CommitScheduler`` commits to the dataset every few minutes (one file per running Space, so
replicas never write to the same file).

lorallama data from-feedback your-name/lorallama-feedback            # → runs/feedback/lorallama-feedback.jsonl
lorallama data from-feedback your-name/lorallama-feedback --output train_jobs/data/feedback.jsonl

turns the liked conversations, and the disliked ones whose answer someone corrected with an edit, into a ShareGPT
file (``{"conversations": [{"from": "human"|"gpt"|"system", "value": …}]}``) that a recipe can train on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("lorallama")

SCHEMA = 1
MAX_MESSAGES = 64  # a row keeps at most this many messages (the newest) …
MAX_CHARS = 16_000  # … of at most this many characters each: a row stays small whatever the page sends
KINDS = ("like", "dislike", "edit")
ROLE_NAMES = {"system": "system", "user": "human", "assistant": "gpt"}


class FeedbackError(RuntimeError):
    """Feedback that cannot be read or written; the message says what to do."""


def _clean_conversation(conversation: list[dict[str, Any]]) -> list[dict[str, str]]:
    from .chat import drop_notice, text_of

    out = []
    for message in conversation[-MAX_MESSAGES:]:
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLE_NAMES:
            continue
        text = text_of(message.get("content")).strip()
        if role == "assistant":
            text = drop_notice(text).strip()
        out.append({"role": role, "content": text[:MAX_CHARS]})
    return out


def conversation_key(session: str | None, before: list[dict[str, str]]) -> str:
    """Which answer a row is about: the session and everything said before that answer."""
    blob = json.dumps([session or "", before], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


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
        if kind not in KINDS:
            raise ValueError(f"unknown feedback kind {kind!r}: use one of {', '.join(KINDS)}")
        messages = _clean_conversation(conversation)
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("feedback must be about an answer: the conversation has to end with one")
        session_id = hashlib.sha256(session.encode()).hexdigest()[:16] if session else None
        row = {
            "schema": SCHEMA,
            "id": uuid.uuid4().hex,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kind": kind,
            "session": session_id,
            "key": conversation_key(session_id, messages[:-1]),
            "index": int(index),
            "conversation": messages,
            "source": self.source,
        }
        if kind == "edit":
            row["edited"] = (edited or "").strip()[:MAX_CHARS]
            row["previous"] = drop_notice_text(previous)
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


def drop_notice_text(text: Any) -> str:
    from .chat import drop_notice, text_of

    return drop_notice(text_of(text)).strip()[:MAX_CHARS]


def open_log(repo_id: str | None, **kwargs) -> FeedbackLog | None:
    """A ``FeedbackLog`` for ``repo_id``, or None when feedback is off (no repo named)."""
    repo_id = (repo_id or "").strip()
    if not repo_id:
        return None
    every = float(os.environ.get("LORALLAMA_FEEDBACK_EVERY", kwargs.pop("every_minutes", 5.0)))
    return FeedbackLog(repo_id, every_minutes=every, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Feedback → training data


@dataclass
class Conversion:
    rows: list[dict[str, Any]]
    """ShareGPT rows, ready to write."""
    liked: int = 0
    corrected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        return (
            f"{len(self.rows)} conversations: {self.liked} liked, {self.corrected} disliked and corrected by an edit; "
            f"skipped: {skipped}"
        )


def to_sharegpt(feedback_rows: list[dict[str, Any]]) -> Conversion:
    """Liked answers, and disliked answers someone corrected with an edit, as ShareGPT conversations.

    Rows are grouped by the answer they are about (``key``); the latest like/dislike wins. A liked answer keeps
    its conversation as it was liked; a disliked one is kept only with its newest edit in place of the answer.
    A dislike without an edit, or an edit without a dislike, teaches nothing certain and is skipped.
    """
    from .data import normalise_turns

    ratings: dict[str, dict[str, Any]] = {}
    edits: dict[str, dict[str, Any]] = {}
    for row in sorted(feedback_rows, key=lambda r: str(r.get("time", ""))):
        kind, key = row.get("kind"), row.get("key")
        if kind not in KINDS or not key or not isinstance(row.get("conversation"), list):
            continue
        (edits if kind == "edit" else ratings)[key] = row
    out = Conversion(rows=[])
    seen: set[str] = set()
    for key in sorted(set(ratings) | set(edits)):
        rating, edit = ratings.get(key), edits.get(key)
        if rating is not None and rating["kind"] == "like":
            conversation = rating["conversation"]
            counter = "liked"
        elif rating is not None and edit is not None and edit.get("edited"):
            conversation = edit["conversation"][:-1] + [{"role": "assistant", "content": edit["edited"]}]
            counter = "corrected"
        else:
            out.skip("disliked without a correction" if rating is not None else "edited without a dislike")
            continue
        turns = [
            {"from": ROLE_NAMES[m["role"]], "value": m["content"]} for m in conversation if m["role"] in ROLE_NAMES
        ]
        messages, problem = normalise_turns(turns)
        if messages is None or problem:
            out.skip(f"unusable conversation ({problem or 'bad turns'})")
            continue
        blob = json.dumps(turns, ensure_ascii=False)
        if blob in seen:
            out.skip("duplicate")
            continue
        seen.add(blob)
        out.rows.append({"conversations": turns})
        setattr(out, counter, getattr(out, counter) + 1)
    return out


def read_rows(source: str) -> list[dict[str, Any]]:
    """Feedback rows from a local ``.jsonl`` file or folder, or from a Hub dataset repo (its ``data/*.jsonl``)."""
    path = Path(source).expanduser()
    if path.exists():
        files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    else:
        if source.count("/") != 1 or source.startswith((".", "/", "~")):
            raise FeedbackError(
                f"{source} is neither a local file or folder nor a Hub dataset id (namespace/name): name the dataset "
                "the Space's LORALLAMA_FEEDBACK_DATASET variable points at"
            )
        from huggingface_hub.errors import RepositoryNotFoundError

        from . import hub

        try:
            folder = hub.with_retries(
                lambda: hub.api().snapshot_download(source, repo_type="dataset", allow_patterns=["data/*.jsonl"]),
                f"downloading feedback from {source}",
            )
        except RepositoryNotFoundError as e:
            raise FeedbackError(f"no dataset {source} on the Hub (or no access to it with this token): {e}") from e
        files = sorted(Path(folder).rglob("*.jsonl"))
    rows = []
    for file in files:
        for n, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d is not JSON (a row cut short?): skipped", file.name, n)
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def from_feedback(source: str, output: Path) -> Conversion:
    """Read the feedback of ``source`` and write the training conversations to ``output`` (JSONL)."""
    conversion = to_sharegpt(read_rows(source))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in conversion.rows), encoding="utf-8")
    os.replace(tmp, output)
    return conversion
