"""Chat exports shaped like the ones people bring: ShareGPT dumps and FineTome-style rows, faults included.

``real_world_rows(n, seed)`` builds rows from the patterns seen in public ShareGPT exports — roles as they come
(human, gpt, system, chatgpt, bing, bard, user, model, prompter, in any case), conversations split mid-way so they
start with the assistant, empty conversations, an empty system prompt, stray control characters, files mixing
OpenAI ``messages`` and ShareGPT ``conversations`` (and rows with a null column), FineTome's ``source`` and
``score`` columns — together with what each row should become. The expectation comes from how the row was built,
never from the code under test.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

WORDS = [
    "river",
    "mountain",
    "engine",
    "recipe",
    "theorem",
    "sonnet",
    "budget",
    "planet",
    "violin",
    "harbor",
    "lantern",
    "compiler",
    "glacier",
    "orchard",
    "protein",
    "ledger",
    "canyon",
    "quartz",
    "falcon",
    "meadow",
    "tariff",
    "galaxy",
    "puzzle",
    "ferment",
    "anchor",
]
USER_ROLES = ["human", "Human", "HUMAN", "user", "User", "prompter"]
ASSISTANT_ROLES = ["gpt", "GPT", "chatgpt", "ChatGPT", "bing", "bard", "Bard", "assistant", "model", "bot"]
SOURCES = ["infini-instruct-top-500k", "WebInstructSub_axolotl", "airoboros-3.2", "caseus_custom", "glaive-code-assist"]


@dataclass
class Expected:
    keep: bool  # a valid conversation (after the obvious repairs) that must be kept
    reason: str | None = None  # why it is dropped, when it is not valid
    repairs: tuple[str, ...] = ()
    pattern: str = ""


def _sentence(rng: random.Random, serial: int, length: int) -> str:
    words = [rng.choice(WORDS) for _ in range(length)]
    return f"{' '.join(words).capitalize()} #{serial}."  # the serial keeps every text unique


def _exchange(rng: random.Random, serial: int, turns: int) -> list[tuple[str, str]]:
    out = []
    for t in range(turns):
        out.append(("user", _sentence(rng, serial * 100 + t, rng.randint(4, 14))))
        out.append(("assistant", _sentence(rng, serial * 100 + 50 + t, rng.randint(8, 40))))
    return out


def _turns(rng: random.Random, pairs: list[tuple[str, str]], style: str) -> list[dict]:
    names = {"user": USER_ROLES, "assistant": ASSISTANT_ROLES, "system": ["system", "System"]}
    key_role, key_text = ("from", "value") if style == "sharegpt" else ("role", "content")
    out = []
    for role, text in pairs:
        name = rng.choice(names[role]) if role in names else role
        out.append({key_role: name, key_text: text})
    return out


def _row(rng: random.Random, turns: list[dict], style: str, serial: int) -> dict:
    row: dict = {}
    if style == "sharegpt":
        row["conversations"] = turns
        if rng.random() < 0.2:
            row["messages"] = None  # a parquet-style null column beside the real one
    else:
        row["messages"] = turns
    row["source"] = rng.choice(SOURCES)
    row["score"] = round(rng.uniform(3.0, 5.3), 6)
    row["id"] = f"conv-{serial}"
    return row


def real_world_rows(n: int, seed: int = 0) -> tuple[list[dict], list[Expected]]:
    rng = random.Random(seed)
    rows: list[dict] = []
    expected: list[Expected] = []
    valid_rows: list[dict] = []
    patterns = [
        ("plain", 40),
        ("system", 8),
        ("split_mid_way", 25),
        ("split_twice", 3),
        ("control_character", 3),
        ("empty_system", 3),
        ("trailing_user", 3),
        ("empty_conversation", 3),
        ("assistant_only", 2),
        ("unknown_role", 2),
        ("empty_turn", 2),
        ("double_user", 2),
        ("duplicate", 4),
    ]
    names, weights = zip(*patterns, strict=True)
    for serial in range(n):
        pattern = rng.choices(names, weights)[0]
        style = "sharegpt" if rng.random() < 0.7 else "openai"
        pairs = _exchange(rng, serial, rng.randint(1, 4))
        exp = Expected(True, pattern=pattern)
        if pattern == "system":
            pairs = [("system", "You are a helpful assistant. " + _sentence(rng, serial, 5)), *pairs]
        elif pattern == "split_mid_way":
            pairs = [("assistant", _sentence(rng, serial * 100 + 99, 12)), *pairs]
            exp.repairs = ("leading_assistant_trimmed",)
        elif pattern == "split_twice":
            pairs = [("assistant", _sentence(rng, serial * 100 + 98, 6)), ("assistant", "…"), *pairs]
            exp.repairs = ("leading_assistant_trimmed",)
        elif pattern == "control_character":
            role, text = pairs[1]
            pairs[1] = (role, text[:5] + "\x07" + text[5:] + "\x00")
            exp.repairs = ("control_characters_stripped",)
        elif pattern == "empty_system":
            pairs = [("system", ""), *pairs]
            exp.repairs = ("empty_system_dropped",)
        elif pattern == "trailing_user":
            pairs = [*pairs, ("user", _sentence(rng, serial * 100 + 97, 6))]
        elif pattern == "empty_conversation":
            pairs = []
            exp = Expected(False, "wrong_type", pattern=pattern)
        elif pattern == "assistant_only":
            pairs = [("assistant", _sentence(rng, serial, 10))]
            exp = Expected(False, "no_user_turn", pattern=pattern)
        elif pattern == "unknown_role":
            pairs = [pairs[0], ("narrator", "Meanwhile, elsewhere."), *pairs[1:]]
            exp = Expected(False, "unknown_role", pattern=pattern)
        elif pattern == "empty_turn":
            pairs[1] = (pairs[1][0], "   ")
            exp = Expected(False, "empty_content", pattern=pattern)
        elif pattern == "double_user":
            pairs = [pairs[0], *pairs]
            exp = Expected(False, "non_alternating", pattern=pattern)
        if pattern == "duplicate" and valid_rows:
            rows.append(json.loads(json.dumps(rng.choice(valid_rows))))
            expected.append(Expected(False, "duplicate", pattern=pattern))
            continue
        row = _row(rng, _turns(rng, pairs, style), style, serial)
        rows.append(row)
        expected.append(exp)
        if exp.keep:
            valid_rows.append(row)
    return rows, expected


def write_jsonl(path: Path, rows: list, bom: bool = False) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def write_json_array(path: Path, rows: list, encoding: str = "utf-8", bom: bool = False) -> Path:
    """A pretty-printed JSON array, as export tools write them."""
    text = json.dumps(rows, ensure_ascii=False, indent=1)
    marks = {
        "utf-8": b"\xef\xbb\xbf",
        "utf-16-le": b"\xff\xfe",
        "utf-16-be": b"\xfe\xff",
        "utf-32-le": b"\xff\xfe\x00\x00",
    }
    path.write_bytes((marks[encoding] if bom else b"") + text.encode(encoding))
    return path


def write_recipe(folder: Path, base: Path | str, source: str, max_length: int = 4096, **data) -> Path:
    """A chat recipe around ``base`` reading ``source`` (relative to the recipe's folder, as users write it)."""
    raw = {
        "slug": "export",
        "model": {"base": str(base)},
        "data": {"source": source, **data},
        "trainer": {"max_length": max_length},
    }
    path = folder / "export.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


JUDGE_CALLS: list[int] = []


def reply_length_judge(conversations: list[list[dict]]) -> list[float]:
    """A pluggable judge for tests (``data.judge.function: support.exports:reply_length_judge``): one point per
    four words of the assistant's replies, at most 5; it records how many conversations it was asked about."""
    JUDGE_CALLS.append(len(conversations))
    return [min(5.0, sum(len(m["content"].split()) for m in c if m["role"] == "assistant") / 4) for c in conversations]
