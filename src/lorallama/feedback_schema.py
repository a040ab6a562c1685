"""The feedback row: one owner for its schema, for the writer in the Spaces and for every reader.

A chat Space appends one JSON object a line (``serving.feedback.FeedbackLog``); ``lorallama data from-feedback``
turns rows into training data and ``lorallama data publish chat-feedback`` counts them. All three go through here:

    {"schema": 1, "id": …, "time": "…Z", "kind": "like" | "dislike" | "edit", "session": <hash> | null,
     "key": <which answer>, "index": <its position>, "conversation": [{"role", "content"}, …],
     "source": {…}, "edited": "…", "previous": "…"}        # edited/previous: kind "edit" only

The compare arena writes ``"kind": "vote"`` rows (``make_vote_row``): ``answers`` (model label → conversation),
``shown`` (the order on the page), ``winner`` (a label or "tie") and ``blind``; ``conversation`` is the winner's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conversations import drop_notice, normalise_turns, text_of
from .errors import FeedbackError

log = logging.getLogger("lorallama")

SCHEMA = 1
MAX_MESSAGES = 64  # a row keeps at most this many messages (the newest) …
MAX_CHARS = 16_000  # … of at most this many characters each: a row stays small whatever the page sends
KINDS = ("like", "dislike", "edit", "vote")
"""``vote``: the compare arena's verdict on one turn (``make_vote_row``); the others are about one chat answer."""
ROLE_NAMES = {"system": "system", "user": "human", "assistant": "gpt"}


def _clean_conversation(conversation: list[dict[str, Any]]) -> list[dict[str, str]]:
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


def make_row(
    kind: str,
    conversation: list[dict[str, Any]],
    *,
    index: int,
    session: str | None = None,
    edited: str | None = None,
    previous: str | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One feedback row. ``conversation`` runs up to and including the answer at ``index`` (its position in the
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
        "source": source or {},
    }
    if kind == "edit":
        row["edited"] = (edited or "").strip()[:MAX_CHARS]
        row["previous"] = drop_notice_text(previous)
    return row


def make_vote_row(
    answers: dict[str, list[dict[str, Any]]],
    *,
    winner: str,
    shown: list[str],
    blind: bool,
    session: str | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The compare arena's vote on its latest turn. ``answers``: each model's conversation (label → messages, the
    same questions), ``shown``: the labels in the order the page showed them (as A, B, C… when ``blind``),
    ``winner``: one of them or ``"tie"``. The row's ``conversation`` is the winner's (the first one's for a tie)."""
    if winner != "tie" and winner not in answers:
        raise ValueError(f"the winner {winner!r} is none of the models compared ({', '.join(answers)})")
    conversations = {label: _clean_conversation(messages) for label, messages in answers.items()}
    if not conversations or any(not c or c[-1]["role"] != "assistant" for c in conversations.values()):
        raise ValueError("a vote must be about answers: every model's conversation has to end with one")
    session_id = hashlib.sha256(session.encode()).hexdigest()[:16] if session else None
    kept = conversations[winner if winner != "tie" else shown[0]]
    return {
        "schema": SCHEMA,
        "id": uuid.uuid4().hex,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": "vote",
        "session": session_id,
        "key": conversation_key(session_id, kept[:-1]),
        "index": len(kept) - 1,
        "conversation": kept,
        "answers": conversations,
        "shown": list(shown),
        "winner": winner,
        "blind": bool(blind),
        "source": source or {},
    }


def row_problem(row: Any) -> str | None:
    """Why ``row`` is not a feedback row this project wrote (None when it is one)."""
    if not isinstance(row, dict):
        return "not_an_object"
    if row.get("kind") not in KINDS:
        return "unknown_kind"
    if not row.get("key") or not isinstance(row.get("conversation"), list):
        return "missing_field"
    if row["kind"] == "edit" and not isinstance(row.get("edited"), str):
        return "missing_field"
    if row["kind"] == "vote" and (not isinstance(row.get("answers"), dict) or not isinstance(row.get("winner"), str)):
        return "missing_field"
    return None


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Likes, dislikes, edits and arena votes among feedback rows (rows that are not feedback rows count as none)."""
    out = {"liked": 0, "disliked": 0, "edited": 0, "voted": 0}
    for row in rows:
        if row_problem(row) is None:
            out[{"like": "liked", "dislike": "disliked", "edit": "edited", "vote": "voted"}[row["kind"]]] += 1
    return out


def drop_notice_text(text: Any) -> str:
    return drop_notice(text_of(text)).strip()[:MAX_CHARS]


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
    ratings: dict[str, dict[str, Any]] = {}
    edits: dict[str, dict[str, Any]] = {}
    for row in sorted(feedback_rows, key=lambda r: str(r.get("time", ""))):
        kind, key = row.get("kind"), row.get("key")
        if kind not in KINDS or kind == "vote" or not key or not isinstance(row.get("conversation"), list):
            continue  # votes compare models; they are not a verdict on one answer
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
        from . import hub

        try:
            folder = hub.download_files(source, ["data/*.jsonl"], f"feedback from {source}", repo_type="dataset")
        except hub.HubError as e:
            if e.status in (401, 404):
                raise FeedbackError(
                    f"no dataset {source} on the Hub (or no access to it with this token): name the dataset the "
                    "Space's LORALLAMA_FEEDBACK_DATASET variable points at, and set HF_TOKEN if it is private"
                ) from e
            raise FeedbackError(str(e)) from e
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
