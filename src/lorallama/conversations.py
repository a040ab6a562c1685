"""Conversations as every part of the project sees them: role names, turn checks, and the text of a message.

One place for the rules a chat row must meet, used by the training data pipeline, the feedback converter and the
chat front ends alike.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

# Role names as real exports spell them (matched case-insensitively): ShareGPT human/gpt, the scraped chatgpt/bing/
# bard of ShareGPT dumps, OpenAssistant's prompter, Gemini's model.
ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
}

# Control characters other than tab, newline and carriage return are noise from scraping or broken encodings.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_SUSPECT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")

# What ``repair_turns`` fixes instead of dropping the conversation, in report order.
REPAIRS = {
    "leading_assistant_trimmed": "started with the assistant (a conversation split mid-way): opening replies cut",
    "control_characters_stripped": "stray control characters taken out of the text",
    "empty_system_dropped": "an empty system prompt left out",
    "json_text_parsed": "the conversation was JSON text (a CSV/TSV or string column) and was parsed",
}


class Turns(NamedTuple):
    messages: list[dict[str, str]] | None
    problem: str | None  # why the conversation cannot be used, or None
    repairs: tuple[str, ...] = ()
    unknown_role: str | None = None  # the role name that made it unusable, for the report


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
    """ShareGPT/OpenAI turns → ``[{role, content}]`` (obvious faults repaired), or ``(None, reason)``."""
    result = repair_turns(turns)
    return result.messages, result.problem


def repair_turns(turns: Any) -> Turns:
    """ShareGPT ``{from, value}``, OpenAI ``{role, content}`` or OpenAssistant ``{role, text}`` turns → messages.

    Repairs what is obviously repairable (leading assistant turns, stray control characters, an empty system
    prompt) and names each repair; anything else makes the conversation unusable, with the reason.
    """
    if not isinstance(turns, list) or not turns:
        return Turns(None, "wrong_type")
    messages: list[dict[str, str]] = []
    repairs: list[str] = []
    for turn in turns:
        if not isinstance(turn, dict):
            return Turns(None, "wrong_type")
        role = turn.get("role", turn.get("from"))
        key = next((k for k in ("content", "value", "text") if k in turn), None)
        if role is None or key is None:
            return Turns(None, "missing_field")
        name = role.strip().lower() if isinstance(role, str) else None
        role = ROLE_ALIASES.get(name) if name is not None else None
        if role is None:
            return Turns(
                None, "unknown_role", unknown_role=(name or type(turn.get("role", turn.get("from"))).__name__)[:40]
            )
        content = turn[key]
        if isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
            content = "".join(str(b.get("text", "")) for b in content)  # OpenAI/Gradio text blocks
        if not isinstance(content, str):
            return Turns(None, "non_string_content")
        if _SUSPECT.search(content):  # one scan for both; most text has neither
            if _SURROGATES.search(content):  # lone surrogates: what a broken decode leaves behind
                return Turns(None, "invalid_utf8")
            content = CONTROL_CHARACTERS.sub("", content)
            if "control_characters_stripped" not in repairs:
                repairs.append("control_characters_stripped")
        if not content.strip():
            if role == "system" and not messages:
                repairs.append("empty_system_dropped")
                continue
            return Turns(None, "empty_content")
        messages.append({"role": role, "content": content})
    start = 1 if messages and messages[0]["role"] == "system" else 0
    lead = start
    while lead < len(messages) and messages[lead]["role"] == "assistant":
        lead += 1
    if lead > start:
        del messages[start:lead]
        repairs.append("leading_assistant_trimmed")
    return Turns(messages, _turn_order_problem(messages), tuple(repairs))


def _turn_order_problem(messages: list[dict[str, str]]) -> str | None:
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not body:
        return "no_user_turn"
    if any(m["role"] == "system" for m in body):
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
