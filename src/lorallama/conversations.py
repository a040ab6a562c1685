"""Conversations as every part of the project sees them: role names, turn checks, and the text of a message.

One place for the rules a chat row must meet, used by the training data pipeline, the feedback converter and the
chat front ends alike.
"""

from __future__ import annotations

import re
from typing import Any

ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
}

# Control characters other than tab, newline and carriage return are noise from scraping or broken encodings.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text_of(content: Any) -> str:
    """The text of a message's content: a string, Gradio 6 / OpenAI content blocks, or a ``{"text": …}`` dict."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        if content.get("type", "text") == "text" and isinstance(content.get("text"), str):
            return content["text"]
        if isinstance(content.get("content"), str | list):
            return text_of(content["content"])
        return ""
    if isinstance(content, list | tuple):
        return "".join(text_of(block) for block in content if isinstance(block, str | dict))
    return ""  # files, images, components: not text


def normalise_turns(turns: Any) -> tuple[list[dict[str, str]] | None, str | None]:
    """ShareGPT/OpenAI turns → ``[{role, content}]``, or ``(None, reason)`` for a bad conversation."""
    if not isinstance(turns, list) or not turns:
        return None, "wrong_type"
    messages = []
    for turn in turns:
        if not isinstance(turn, dict):
            return None, "wrong_type"
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role is None or ("content" not in turn and "value" not in turn):
            return None, "missing_field"
        role = ROLE_ALIASES.get(str(role).lower()) if isinstance(role, str) else None
        if role is None:
            return None, "unknown_role"
        if isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
            content = "".join(str(b.get("text", "")) for b in content)  # OpenAI/Gradio text blocks
        if not isinstance(content, str):
            return None, "non_string_content"
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: what a broken decode leaves behind
            return None, "invalid_utf8"
        if CONTROL_CHARACTERS.search(content):
            return None, "control_characters"
        if not content.strip():
            return None, "empty_content"
        messages.append({"role": role, "content": content})
    return messages, _turn_order_problem(messages)


def _turn_order_problem(messages: list[dict[str, str]]) -> str | None:
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if not body or any(m["role"] == "system" for m in body):
        return "non_alternating"
    for i, m in enumerate(body):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            return "non_alternating"
    if not any(m["role"] == "assistant" for m in body):
        return "no_assistant_turn"
    return None


# A note the chat front end puts at the start of an answer when older turns were left out. It is for the person
# reading, so it is taken out again before the conversation goes back to the model.
NOTICE_RE = re.compile(r"\A\*\[[^\]\n]*(?:left out|cut)[^\]\n]*\]\*\n\n")


def drop_notice(text: str) -> str:
    return NOTICE_RE.sub("", text, count=1)
