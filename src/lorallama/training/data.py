"""Training data: load, normalise, validate with a report, tokenise, chunk raw text, mix replay, shard.

Chat rows (ShareGPT ``conversations`` of ``{from, value}`` or OpenAI ``messages`` of ``{role, content}``) become
``messages`` with user/assistant/system roles. Bad rows are dropped and counted per reason, or in strict mode the
first one raises with its index. Everything ends as token ids plus an assistant mask, which TRL's ``SFTTrainer``
turns into labels (so the loss falls on assistant tokens only and the lengths in the report are the real ones).
"""

from __future__ import annotations

import collections
import json
import logging
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..conversations import CONTROL_CHARACTERS as _CONTROL
from ..conversations import normalise_turns
from ..errors import DataError
from ..recipe import DataSpec, Recipe, ReplaySpec

log = logging.getLogger("lorallama")

LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
# Why a row was dropped, in report order.
REASONS = {
    "invalid_json": "line is not valid JSON",
    "invalid_utf8": "text is not valid UTF-8",
    "missing_field": "row has no conversation field",
    "wrong_type": "conversation is not a list of turns",
    "unknown_role": "turn has a role other than system/user/assistant (human/gpt)",
    "non_string_content": "turn content is not text",
    "empty_content": "turn content is empty",
    "control_characters": "text holds control characters",
    "non_alternating": "turns do not alternate user/assistant (system only first)",
    "no_assistant_turn": "conversation has no assistant reply",
    "duplicate": "exact duplicate of an earlier row",
    "too_long": "longer than trainer.max_length tokens",
    "empty_text": "document is empty after cleaning",
}


@dataclass
class DataReport:
    source: str
    total: int = 0
    kept: int = 0
    dropped: collections.Counter = field(default_factory=collections.Counter)
    first_bad: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    token_lengths: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def drop(self, index: int, reason: str) -> None:
        self.dropped[reason] += 1
        self.first_bad.setdefault(reason, index)

    def to_dict(self) -> dict[str, Any]:
        lengths = sorted(self.token_lengths)
        stats = {}
        if lengths:
            stats = {
                "rows": len(lengths),
                "tokens": sum(lengths),
                "min": lengths[0],
                "median": lengths[len(lengths) // 2],
                "p95": lengths[min(len(lengths) - 1, int(len(lengths) * 0.95))],
                "max": lengths[-1],
            }
        return {
            "source": self.source,
            "total": self.total,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "first_bad_row": self.first_bad,
            "filtered": self.filtered,
            "token_stats": stats,
            "notes": self.notes,
        }

    def format(self) -> str:
        lines = [f"data: {self.source}", f"  rows read   {self.total}", f"  rows kept   {self.kept}"]
        for reason in REASONS:
            if self.dropped.get(reason):
                lines.append(
                    f"  dropped {self.dropped[reason]:>6}  {reason:<19} {REASONS[reason]} (first: row {self.first_bad[reason]})"
                )
        for name, count in self.filtered.items():
            lines.append(f"  filtered {count:>5}  {name}")
        stats = self.to_dict()["token_stats"]
        if stats:
            lines.append(
                "  tokens per example: min {min}, median {median}, p95 {p95}, max {max}; {tokens} in all".format(
                    **stats
                )
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset with input_ids and assistant_masks
    eval: dict[str, Any]  # name → Dataset (empty when no rows are held out)
    report: DataReport


# ---------------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class RawRow:
    index: int
    value: Any = None
    error: str | None = None  # set when the row could not even be read (invalid_json / invalid_utf8)


def _is_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix in LOCAL_SUFFIXES or Path(source).exists()


def load_rows(source: str, split: str = "train") -> list[RawRow]:
    """Rows of a local file/folder or a Hub dataset, as Python objects (bad lines kept as errors, not raised)."""
    if _is_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data file {path} does not exist: check data.source (relative paths are from the recipe)")
        files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES) if path.is_dir() else [path]
        if not files:
            raise DataError(f"{path} holds no {', '.join(LOCAL_SUFFIXES)} files")
        rows: list[RawRow] = []
        for f in files:
            rows.extend(_read_local(f, start=rows[-1].index + 1 if rows else 0))
        return rows
    return _read_hub(source, split)


def _read_local(path: Path, start: int) -> list[RawRow]:
    kind = LOCAL_SUFFIXES.get(path.suffix)
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}")
    if path.suffix == ".jsonl":
        rows = []
        with open(path, "rb") as fh:
            for i, line in enumerate(fh, start):
                if not line.strip():
                    continue
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    rows.append(RawRow(i, error="invalid_utf8"))
                    continue
                try:
                    rows.append(RawRow(i, json.loads(text)))
                except json.JSONDecodeError:
                    rows.append(RawRow(i, error="invalid_json"))
        return rows
    if path.suffix == ".txt":
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not UTF-8 ({e}): convert it with `iconv -t utf-8`") from e
        return [RawRow(start, {"text": text})]
    if path.suffix == ".json":
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path} is not a valid UTF-8 JSON file: {e}") from e
        if isinstance(value, dict):  # {"data": [...]} style
            lists = [v for v in value.values() if isinstance(v, list)]
            value = lists[0] if len(lists) == 1 else [value]
        return [RawRow(start + i, v) for i, v in enumerate(value)]
    import datasets

    ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    return [RawRow(start + i, row) for i, row in enumerate(ds)]


def _read_hub(source: str, split: str) -> list[RawRow]:
    import datasets

    try:
        ds = datasets.load_dataset(source, split=split)
    except Exception as e:  # offline, unknown id, wrong split: all end the same way for the user
        raise DataError(
            f"cannot load Hub dataset {source!r} (split {split!r}): {type(e).__name__}: {e}. Check the id and split, "
            "log in with HF_TOKEN for private data, or point data.source at a local .jsonl/.parquet file"
        ) from e
    return [RawRow(i, row) for i, row in enumerate(ds)]


def shard_rows(rows: list, index: int, count: int) -> list:
    """Contiguous shard ``index`` of ``count`` — the same split as ``datasets.Dataset.shard(contiguous=True)``."""
    size, extra = divmod(len(rows), count)
    start = index * size + min(index, extra)
    return rows[start : start + size + (1 if index < extra else 0)]


# ---------------------------------------------------------------------------------------------------------------
# Chat rows


def find_messages_field(row: Any, wanted: str) -> str | None:
    if not isinstance(row, dict):
        return None
    if wanted != "auto":
        return wanted if wanted in row else None
    return next((k for k in ("messages", "conversations", "conversation") if k in row), None)


def validate_chat(rows: list[RawRow], spec: DataSpec | ReplaySpec, report: DataReport, strict: bool) -> list[dict]:
    """Keep the good conversations as ``{"index", "messages"}``; count (or raise on) the bad ones."""
    wanted = spec.messages_field
    kept, seen = [], set()
    field_name = None
    for row in rows:
        reason = row.error
        messages = None
        if reason is None:
            field_name = field_name or find_messages_field(row.value, wanted)
            if field_name is None or not isinstance(row.value, dict) or field_name not in row.value:
                reason = "missing_field"
            else:
                messages, reason = normalise_turns(row.value[field_name])
        if reason is None and getattr(spec, "dedupe", True):
            key = json.dumps(messages, sort_keys=True, ensure_ascii=False)
            if key in seen:
                reason = "duplicate"
            seen.add(key)
        if reason is not None:
            _bad(report, row.index, reason, strict)
            continue
        kept.append({"index": row.index, "messages": messages, "row": row.value})
    if rows and not kept and report.dropped.get("missing_field") == len(rows):
        columns = sorted(rows[0].value) if isinstance(rows[0].value, dict) else []
        raise DataError(
            f"no row of {report.source} has a conversation field {wanted!r}; its columns are {columns}: "
            "set data.messages_field to the right column (or data.format: text for raw text)"
        )
    return kept


def _bad(report: DataReport, index: int, reason: str, strict: bool) -> None:
    if strict:
        raise DataError(
            f"{report.source}: row {index} is bad: {reason} ({REASONS[reason]}); fix it or unset data.strict"
        )
    report.drop(index, reason)


# ---------------------------------------------------------------------------------------------------------------
# Tokenising


def tokenize_chat(messages: list[dict], tokenizer, template: str | None) -> dict[str, list[int]]:
    """Token ids and the assistant mask (1 on assistant replies and their end-of-turn token)."""
    if template is None:  # whole-conversation loss
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        return {"input_ids": list(ids), "assistant_masks": [1] * len(ids)}
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, chat_template=template
    )
    return {"input_ids": list(out["input_ids"]), "assistant_masks": list(out["assistant_masks"])}


def clean_text(text: str, trim: list[str]) -> str:
    """Light cleaning: unify newlines, drop control characters and trailing spaces, cut boilerplate patterns."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text)
    for pattern in trim:
        text = re.sub(pattern, "", text, flags=re.MULTILINE)  # write (?s) in the pattern to span lines
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def chunk_documents(docs: list[str], tokenizer, block: int) -> list[list[int]]:
    """Tokenise documents, join them with EOS between, and cut the stream into blocks of at most ``block`` tokens.

    Nothing is thrown away: the last, shorter block is kept too.
    """
    if not docs:
        return []
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    return [stream[i : i + block] for i in range(0, len(stream), block)]


# ---------------------------------------------------------------------------------------------------------------
# The whole pipeline


def prepare(recipe: Recipe, tokenizer, template: str | None, strict: bool | None = None) -> PreparedData:
    """Recipe data → tokenised training (and eval) datasets plus the report."""
    spec = recipe.data
    strict = spec.strict if strict is None else strict
    source = recipe.resolve_path(spec.source)
    report = DataReport(source=spec.source)
    rows = load_rows(source, spec.split)
    report.total = len(rows)
    if spec.shard:
        i, n = spec.shard_index()
        rows = shard_rows(rows, i, n)
        report.filtered[f"outside shard {spec.shard}"] = report.total - len(rows)
    max_len = recipe.trainer.max_length
    if spec.format == "chat":
        examples = _prepare_chat(rows, spec, tokenizer, template, max_len, report, strict)
    else:
        examples = _prepare_text(rows, spec, tokenizer, max_len, report, strict)
    rng = random.Random(recipe.trainer.seed)
    rng.shuffle(examples)
    eval_sets = {}
    if spec.eval_rows:
        if spec.eval_rows >= len(examples):
            raise DataError(f"data.eval_rows = {spec.eval_rows} leaves no training rows (only {len(examples)} in all)")
        eval_sets["domain"], examples = examples[: spec.eval_rows], examples[spec.eval_rows :]
    if spec.format == "text" and spec.replay is not None:
        replay = _prepare_replay(recipe, spec.replay, tokenizer, template, max_len, report, strict)
        rng.shuffle(replay)
        if spec.eval_rows:
            eval_sets["chat"], replay = replay[: spec.eval_rows], replay[spec.eval_rows :]
        want = round(len(examples) * spec.replay.fraction / (1 - spec.replay.fraction))
        if want > len(replay):
            report.notes.append(f"replay wanted {want} chat rows, has {len(replay)}: using all")
        examples = examples + replay[:want]
        rng.shuffle(examples)
        report.notes.append(f"mixed {min(want, len(replay))} replay chat rows from {spec.replay.source}")
    if not examples:
        raise DataError(f"no usable training rows left in {spec.source}:\n{report.format()}")
    return PreparedData(_to_dataset(examples), {k: _to_dataset(v) for k, v in eval_sets.items()}, report)


def _prepare_chat(rows, spec: DataSpec, tokenizer, template, max_len, report, strict) -> list[dict]:
    kept = validate_chat(rows, spec, report, strict)
    if spec.min_score is not None:
        before = len(kept)
        kept = [k for k in kept if float(k["row"].get(spec.score_field) or 0) >= spec.min_score]
        report.filtered[f"{spec.score_field} < {spec.min_score}"] = before - len(kept)
    if spec.max_rows is not None and len(kept) > spec.max_rows:
        report.filtered[f"beyond max_rows {spec.max_rows}"] = len(kept) - spec.max_rows
        kept = kept[: spec.max_rows]
    examples = []
    for item in _progress(kept, "tokenising"):
        tokens = tokenize_chat(item["messages"], tokenizer, template)
        if len(tokens["input_ids"]) > max_len:
            _bad(report, item["index"], "too_long", strict)
            continue
        if not any(tokens["assistant_masks"]):
            _bad(report, item["index"], "no_assistant_turn", strict)
            continue
        report.token_lengths.append(len(tokens["input_ids"]))
        examples.append(tokens)
    report.kept = len(examples)
    return examples


def _prepare_text(rows, spec: DataSpec, tokenizer, max_len, report, strict) -> list[dict]:
    docs = []
    for row in rows:
        if row.error:
            _bad(report, row.index, row.error, strict)
            continue
        if not isinstance(row.value, dict) or spec.text_field not in row.value:
            columns = sorted(row.value) if isinstance(row.value, dict) else type(row.value).__name__
            raise DataError(
                f"{spec.source} row {row.index} has no text column {spec.text_field!r} (columns: {columns}): "
                "set data.text_field to the column that holds the text"
            )
        text = row.value[spec.text_field]
        if not isinstance(text, str):
            _bad(report, row.index, "non_string_content", strict)
            continue
        text = clean_text(text, spec.trim)
        if not text:
            _bad(report, row.index, "empty_text", strict)
            continue
        docs.append(text)
    if spec.max_rows is not None and len(docs) > spec.max_rows:
        report.filtered[f"beyond max_rows {spec.max_rows}"] = len(docs) - spec.max_rows
        docs = docs[: spec.max_rows]
    blocks = chunk_documents(docs, tokenizer, max_len)
    report.kept = len(docs)
    report.token_lengths = [len(b) for b in blocks]
    report.notes.append(f"{len(docs)} documents → {len(blocks)} blocks of ≤ {max_len} tokens")
    return [{"input_ids": b, "assistant_masks": [1] * len(b)} for b in blocks]


def _prepare_replay(recipe, replay: ReplaySpec, tokenizer, template, max_len, report, strict) -> list[dict]:
    sub = DataReport(source=replay.source)
    rows = load_rows(recipe.resolve_path(replay.source), replay.split)
    if replay.max_rows:
        rows = rows[: replay.max_rows]
    sub.total = len(rows)
    kept = _prepare_chat(rows, replay, tokenizer, template, max_len, sub, strict)
    report.notes.append(f"replay {replay.source}: {sub.kept} of {sub.total} rows usable {dict(sub.dropped) or ''}")
    return kept


def _to_dataset(examples: list[dict]):
    import datasets

    return datasets.Dataset.from_dict(
        {"input_ids": [e["input_ids"] for e in examples], "assistant_masks": [e["assistant_masks"] for e in examples]}
    )


def _progress(items, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="row", disable=len(items) < 2000, leave=False)


# ---------------------------------------------------------------------------------------------------------------
# Inspection


def length_histogram(lengths: list[int], png: Path | None, title: str, bins: int = 20) -> str:
    """A text histogram of token lengths (and the same as a PNG when ``png`` is given)."""
    if not lengths:
        return "(no rows)"
    lo, hi = min(lengths), max(lengths)
    width = max(1, -(-(hi - lo + 1) // bins))
    counts = collections.Counter((n - lo) // width for n in lengths)
    top = max(counts.values())
    lines = []
    for b in range(max(counts) + 1):
        start = lo + b * width
        bar = "█" * max(1 if counts[b] else 0, round(40 * counts[b] / top))
        lines.append(f"{start:>7}–{start + width - 1:<7} {counts[b]:>7} {bar}")
    if png is not None:
        from ..plots import plot_histogram

        plot_histogram(lengths, png, title, "tokens per training example", bins)
    return "\n".join(lines)
