"""The quality judge: a score per conversation from a local model (or any function), cached by content hash.

A model judges without generating: the prompt (a user turn holding the conversation) is followed by the
probabilities of the next token being 1, 2, 3, 4 or 5, and the score is their expected value. That is one forward
pass, deterministic, and finer than a sampled digit. Scores are stored in SQLite under a hash of the judge, the
prompt and the conversation, so a second run over the same data loads no model at all.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DataError
from ..paths import cache_root
from ..recipe import JudgeSpec

log = logging.getLogger("lorallama")
Conversation = list[dict[str, str]]


def render(messages: Conversation) -> str:
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages)


class ScoreCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path)
            self.db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
        except sqlite3.DatabaseError as e:
            raise DataError(f"judge cache {path} cannot be used ({e}): delete it, or set data.judge.cache") from e
        self.path = path

    def get(self, keys: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for i in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            out.update(self.db.execute(f"SELECT key, score FROM scores WHERE key IN ({marks})", part).fetchall())
        return out

    def put(self, scores: dict[str, float]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", scores.items())

    def close(self) -> None:
        self.db.close()


class Judge:
    """Scores conversations; ``hits`` and ``misses`` count cache use for the report."""

    def __init__(self, spec: JudgeSpec) -> None:
        self.spec = spec
        self.name = spec.model or spec.function or ""
        self.cache = ScoreCache(Path(spec.cache).expanduser() if spec.cache else cache_root() / "judge.sqlite")
        self.hits = self.misses = 0
        self._score_fn: Callable[[list[Conversation]], list[float]] | None = None

    def key(self, messages: Conversation) -> str:
        blob = json.dumps([self.name, self.spec.prompt, self.spec.max_tokens, messages], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def scores(self, conversations: list[Conversation]) -> list[float]:
        keys = [self.key(c) for c in conversations]
        known = self.cache.get(keys)
        todo = [i for i, k in enumerate(keys) if k not in known]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = self._scorer()([conversations[i] for i in todo])
            if len(fresh) != len(todo):
                raise DataError(f"judge {self.name} returned {len(fresh)} scores for {len(todo)} conversations")
            new = {keys[i]: float(s) for i, s in zip(todo, fresh, strict=True)}
            self.cache.put(new)
            known.update(new)
        return [known[k] for k in keys]

    def _scorer(self) -> Callable[[list[Conversation]], list[float]]:
        if self._score_fn is None:
            self._score_fn = _function(self.spec.function) if self.spec.function else ModelJudge(self.spec)
        return self._score_fn

    def close(self) -> None:
        self.cache.close()


def _function(dotted: str) -> Callable[[list[Conversation]], list[float]]:
    module, _, name = dotted.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise DataError(f"data.judge.function {dotted}: cannot import it ({e}): check the module and the name") from e


class ModelJudge:
    """The expected rating 1-5 from the next-token distribution of a causal LM after the judging prompt."""

    def __init__(self, spec: JudgeSpec) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from .. import models

        self.spec = spec
        log.info("loading judge %s", spec.model)
        path = models.resolve_base(spec.model)
        self.tokenizer = models.load_tokenizer(spec.model)
        self.tokenizer.padding_side = "left"  # the next token is read at the last position of every row
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.digits = [self._digit_id(str(d)) for d in range(1, 6)]
        self.torch = torch

    def _digit_id(self, digit: str) -> int:
        ids = self.tokenizer.encode(digit, add_special_tokens=False)
        if len(ids) != 1:
            raise DataError(
                f"judge {self.spec.model}: its tokenizer splits the digit {digit} ({ids}); use another model"
            )
        return ids[0]

    def prompt_ids(self, messages: Conversation) -> list[int]:
        tok = self.tokenizer
        text = render(messages)
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) > self.spec.max_tokens:
            text = tok.decode(ids[: self.spec.max_tokens]) + " …"
        chat = [{"role": "user", "content": self.spec.prompt.format(conversation=text)}]
        out = tok.apply_chat_template(chat, tokenize=True, add_generation_prompt=True, return_dict=True)
        return list(out["input_ids"])

    def __call__(self, conversations: list[Conversation]) -> list[float]:
        torch = self.torch
        scores: list[float] = []
        weights = torch.arange(1, 6, dtype=torch.float32)
        for start in range(0, len(conversations), self.spec.batch_size):
            batch = [self.prompt_ids(c) for c in conversations[start : start + self.spec.batch_size]]
            enc = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt")
            with torch.no_grad():
                logits = self.model(**enc).logits[:, -1, :]
            probs = torch.softmax(logits[:, self.digits].float(), dim=-1)
            scores.extend((probs * weights).sum(-1).tolist())
        return scores
