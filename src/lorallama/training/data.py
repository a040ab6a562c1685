"""Training data: read, repair, validate with a report, filter, tokenise, chunk raw text, mix replay, shard.

Rows stream from ``readers`` (a several-GB export never sits in memory at once) through the checks and filters
into an Arrow file of token ids and assistant masks on disk, which TRL's ``SFTTrainer`` reads memory-mapped (so the
loss falls on assistant tokens only and the lengths in the report are the real ones). Chat rows (ShareGPT
``conversations`` of ``{from, value}``, OpenAI ``messages`` of ``{role, content}``, found per row) become
``messages`` with user/assistant/system roles; obvious faults are repaired and counted, bad rows are dropped and
counted per reason with their first row numbers (1-based, in reading order), or in strict mode the first one
raises naming the file, the line and what turned strict mode on. Filters (score, language, near-duplicates, the
quality judge, max_rows, shard) are counted the same way.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import json
import logging
import random
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..conversations import CONTROL_CHARACTERS as _CONTROL
from ..conversations import REPAIRS, normalise_turns, repair_turns  # noqa: F401 (normalise_turns: re-exported)
from ..errors import DataError
from ..paths import recipes_dir
from ..recipe import DataSpec, Recipe, ReplaySpec
from .dedupe import ExactDuplicates, NearDuplicates
from .readers import CONVERSATION_KEYS, LOCAL_SUFFIXES, RawRow, iter_rows, locate  # noqa: F401 (re-exported)

log = logging.getLogger("lorallama")

FIRST_ROWS = 5  # row numbers kept per reason, repair and filter
# Why a row was dropped, in report order.
REASONS = {
    "invalid_json": "line is not valid JSON",
    "nested_too_deep": "JSON nested too deeply to read (a broken or hostile row)",
    "invalid_utf8": "text is not valid UTF-8",
    "csv_wrong_fields": "CSV/TSV row has another number of fields than the header",
    "missing_field": "row has no conversation field",
    "wrong_type": "conversation is not a list of turns",
    "unknown_role": "turn has a role that is no alias of system/user/assistant (see unknown roles)",
    "non_string_content": "turn content is not text",
    "empty_content": "turn content is empty",
    "non_alternating": "turns do not alternate user/assistant (system only first), even after repairs",
    "no_user_turn": "conversation has no user turn",
    "no_assistant_turn": "conversation has no assistant reply",
    "duplicate": "exact duplicate of an earlier row",
    "too_long": "longer than trainer.max_length tokens",
    "empty_text": "document is empty after cleaning",
}


def _first(rows: dict[str, list[int]], name: str, index: int) -> None:
    kept = rows.setdefault(name, [])
    if len(kept) < FIRST_ROWS:
        kept.append(index + 1)


def _rows_text(numbers: list[int], count: int) -> str:
    more = "…" if count > len(numbers) else ""
    return f"row{'s' if count > 1 else ''} {', '.join(map(str, numbers))}{more}"


@dataclass
class DataReport:
    """Counts of what happened to the rows. Row numbers are 1-based, in reading order over all files."""

    source: str
    total: int = 0
    kept: int = 0
    dropped: collections.Counter = field(default_factory=collections.Counter)
    repaired: collections.Counter = field(default_factory=collections.Counter)
    filtered: dict[str, int] = field(default_factory=dict)
    first_rows: dict[str, list[int]] = field(default_factory=dict)
    unknown_roles: collections.Counter = field(default_factory=collections.Counter)
    token_lengths: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def first_bad(self) -> dict[str, int]:
        """The first dropped row (1-based) of each reason."""
        return {r: self.first_rows[r][0] for r in self.dropped}

    def drop(self, index: int, reason: str) -> None:
        """Count row ``index`` (0-based) as dropped."""
        self.dropped[reason] += 1
        _first(self.first_rows, reason, index)

    def repair(self, index: int, kind: str) -> None:
        self.repaired[kind] += 1
        _first(self.first_rows, kind, index)

    def filter(self, index: int, name: str) -> None:
        self.filtered[name] = self.filtered.get(name, 0) + 1
        _first(self.first_rows, name, index)

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
            "repaired": dict(self.repaired),
            "filtered": self.filtered,
            "first_bad_row": self.first_bad,
            "first_rows": self.first_rows,
            "row_numbers": "1-based, in reading order",
            "unknown_roles": dict(self.unknown_roles.most_common(20)),
            "token_stats": stats,
            "notes": self.notes,
        }

    def format(self) -> str:
        lines = [
            f"data: {self.source}",
            f"  rows read   {self.total}   (row numbers below count from 1, in reading order)",
            f"  rows kept   {self.kept}",
        ]
        for kind in REPAIRS:
            if self.repaired.get(kind):
                n = self.repaired[kind]
                lines.append(f"  repaired {n:>5}  {kind:<27} {REPAIRS[kind]} ({_rows_text(self.first_rows[kind], n)})")
        for reason in REASONS:
            if self.dropped.get(reason):
                n = self.dropped[reason]
                lines.append(
                    f"  dropped {n:>6}  {reason:<19} {REASONS[reason]} ({_rows_text(self.first_rows[reason], n)})"
                )
        if self.unknown_roles:
            roles = ", ".join(f"{r!r} {n}" for r, n in self.unknown_roles.most_common(10))
            lines.append(f"  unknown roles seen: {roles} (rename them in the data to user, assistant or system)")
        for name, count in self.filtered.items():
            where = f" ({_rows_text(self.first_rows[name], count)})" if self.first_rows.get(name) else ""
            lines.append(f"  filtered {count:>5}  {name}{where}")
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


def load_rows(source: str, split: str = "train") -> list[RawRow]:
    """Every row of a local file/folder or a Hub dataset as a list (bad rows kept as errors, not raised)."""
    return list(iter_rows(source, split))


def source_path(recipe: Recipe, value: str, key: str = "data.source") -> str:
    """A recipe's data source: a relative path from the recipe's folder (or train_jobs/ without a file)."""
    folder = recipe.path.parent if recipe.path is not None else recipes_dir()
    return locate(value, folder, key)


def check_sources(recipe: Recipe) -> None:
    """Every local path the recipe's data names exists (Hub ids are checked when read): a wrong path is refused in
    a moment, before a tokenizer or a model is loaded, with the same message reading it would give."""
    source_path(recipe, recipe.data.source)
    if recipe.data.replay is not None:
        source_path(recipe, recipe.data.replay.source, "data.replay.source")


def shard_rows(rows: list, index: int, count: int) -> list:
    """Contiguous shard ``index`` of ``count`` — the same split as ``datasets.Dataset.shard(contiguous=True)``."""
    start, stop = shard_bounds(len(rows), index, count)
    return rows[start:stop]


def shard_bounds(length: int, index: int, count: int) -> tuple[int, int]:
    size, extra = divmod(length, count)
    start = index * size + min(index, extra)
    return start, start + size + (1 if index < extra else 0)


def _read(source: str, spec: DataSpec | ReplaySpec, report: DataReport) -> Iterator[RawRow]:
    """The rows of the source, counted into ``report.total``; one shard of them when ``data.shard`` is set."""
    shard = getattr(spec, "shard", None)
    if not shard:
        for row in iter_rows(source, spec.split, report.notes):
            report.total += 1
            yield row
        return
    i, n = spec.shard_index()
    total = sum(1 for _ in iter_rows(source, spec.split, progress=False))  # a shard needs the count first
    start, stop = shard_bounds(total, i, n)
    report.total = total
    report.filtered[f"outside shard {shard}"] = total - (stop - start)
    for row in iter_rows(source, spec.split, report.notes):
        if start <= row.index < stop:
            yield row


# ---------------------------------------------------------------------------------------------------------------
# Chat rows


def find_messages_field(row: Any, wanted: str) -> str | None:
    """The row's conversation column: ``wanted``, or with ``auto`` the first of messages/conversations/conversation
    that is present and not null (decided per row, so files mixing both styles work)."""
    if not isinstance(row, dict):
        return None
    keys = (wanted,) if wanted != "auto" else CONVERSATION_KEYS
    return next((k for k in keys if row.get(k) is not None), None)


def _turns_of(value: Any) -> tuple[Any, bool]:
    """A conversation held as JSON text (CSV/TSV cells, string columns) parsed; True when it was."""
    if isinstance(value, str) and value.lstrip().startswith(("[", "{")):
        try:
            return json.loads(value), True
        except (json.JSONDecodeError, RecursionError):
            return value, False
    return value, False


class Strict:
    """Strict mode and what turned it on, for the message that stops the run."""

    def __init__(self, on: bool, origin: str = "data.strict") -> None:
        self.on, self.origin = on, origin

    @classmethod
    def of(cls, value: bool | Strict) -> Strict:
        return value if isinstance(value, Strict) else cls(bool(value))


def _bad(report: DataReport, index: int, where: str, reason: str, strict: Strict) -> None:
    if strict.on:
        raise DataError(
            f"{report.source}: row {index + 1} ({where}) is bad: {reason} ({REASONS[reason]}); fix that row, or turn "
            f"strict mode off ({strict.origin}) to drop and count bad rows instead"
        )
    report.drop(index, reason)


def iter_valid(
    rows: Iterable[RawRow],
    spec: DataSpec | ReplaySpec,
    report: DataReport,
    strict: bool | Strict,
    keep_row: bool = False,
) -> Iterator[dict]:
    """The good conversations as ``{"index", "where", "messages"}`` (and ``"row"``); bad ones counted or raised."""
    strict = Strict.of(strict)
    wanted = spec.messages_field
    exact = ExactDuplicates() if getattr(spec, "dedupe", True) else None
    no_field = seen = 0
    columns: list[str] | None = None
    for row in rows:
        seen += 1
        reason, parsed, result = row.error, False, None
        if reason is None:
            name = find_messages_field(row.value, wanted)
            if name is None:
                reason = "missing_field"
                no_field += 1
                if columns is None and isinstance(row.value, dict):
                    columns = sorted(map(str, row.value))
            else:
                turns, parsed = _turns_of(row.value[name])
                result = repair_turns(turns)
                reason = result.problem
                roles = report.unknown_roles
                if reason == "unknown_role" and (len(roles) < 100 or result.unknown_role in roles):
                    roles[result.unknown_role] += 1  # bounded: a file of random role names stays small
        if reason is None and exact is not None and exact.seen_before(result.messages):
            reason = "duplicate"
        if reason is not None:
            _bad(report, row.index, row.where, reason, strict)
            continue
        for kind in ("json_text_parsed",) * parsed + result.repairs:
            report.repair(row.index, kind)
        item = {"index": row.index, "where": row.where, "messages": result.messages}
        if keep_row or getattr(spec, "min_score", None) is not None:
            item["row"] = row.value
        yield item
    if seen and no_field == seen:
        raise DataError(
            f"no row of {report.source} has a conversation field {wanted!r}; its columns are {columns or []}: "
            "set data.messages_field to the right column (or data.format: text for raw text)"
        )


def validate_chat(rows: list[RawRow], spec: DataSpec | ReplaySpec, report: DataReport, strict: bool) -> list[dict]:
    """Keep the good conversations as ``{"index", "messages", "row"}``; count (or raise on) the bad ones."""
    return list(iter_valid(rows, spec, report, strict, keep_row=True))


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
# Token ids on disk


_TEMP_DIRS: list[Path] = []


@atexit.register
def _remove_temp_dirs() -> None:
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


class TokenSink:
    """Examples written to an Arrow file in batches and read back memory-mapped: memory stays flat with size."""

    BATCH = 1000

    def __init__(self) -> None:
        import pyarrow as pa

        self.pa = pa
        folder = Path(tempfile.mkdtemp(prefix="lorallama-data-"))
        _TEMP_DIRS.append(folder)
        self.path = folder / "examples.arrow"
        self.schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("assistant_masks", pa.list_(pa.int8()))])
        self.writer = pa.ipc.new_stream(str(self.path), self.schema)
        self.ids: list[list[int]] = []
        self.masks: list[list[int]] = []

    def add(self, example: dict[str, list[int]]) -> None:
        self.ids.append(example["input_ids"])
        self.masks.append(example["assistant_masks"])
        if len(self.ids) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        pa = self.pa
        if self.ids:
            arrays = [pa.array(self.ids, type=pa.list_(pa.int32())), pa.array(self.masks, type=pa.list_(pa.int8()))]
            self.writer.write_batch(pa.record_batch(arrays, schema=self.schema))
        self.ids, self.masks = [], []

    def finish(self):
        import datasets

        self._flush()
        self.writer.close()
        return datasets.Dataset.from_file(str(self.path))


def example_lengths(dataset) -> list[int]:
    """Tokens per example, read column-wise (never the whole column as Python lists)."""
    import pyarrow.compute as pc

    out: list[int] = []
    for batch in dataset.with_format("arrow").iter(batch_size=10_000):
        out.extend(pc.list_value_length(batch["input_ids"]).to_pylist())
    return out


# ---------------------------------------------------------------------------------------------------------------
# The whole pipeline


def strict_of(recipe: Recipe, strict: bool | None) -> Strict:
    """``--strict`` (an explicit True or False) wins over the recipe's ``data.strict``; the message names which."""
    if strict is not None:
        return Strict(strict, "the --strict flag" if strict else "")
    where = recipe.path.name if recipe.path is not None else "the recipe"
    return Strict(recipe.data.strict, f"data.strict: true in {where}")


def prepare(recipe: Recipe, tokenizer, template: str | None, strict: bool | None = None) -> PreparedData:
    """Recipe data → tokenised training (and eval) datasets plus the report."""
    spec = recipe.data
    mode = strict_of(recipe, strict)
    source = source_path(recipe, spec.source)
    report = DataReport(source=spec.source)
    max_len = recipe.trainer.max_length
    sink = TokenSink()
    rows = _read(source, spec, report)
    if spec.format == "chat":
        _prepare_chat(rows, spec, tokenizer, template, max_len, report, mode, sink)
    else:
        _prepare_text(rows, spec, tokenizer, max_len, report, mode, sink)
    data = sink.finish()
    rng = random.Random(recipe.trainer.seed)
    order = list(range(len(data)))
    rng.shuffle(order)  # the same permutation shuffling the examples themselves would give
    eval_sets = {}
    if spec.eval_rows:
        if spec.eval_rows >= len(order):
            raise DataError(f"data.eval_rows = {spec.eval_rows} leaves no training rows (only {len(order)} in all)")
        eval_sets["domain"] = data.select(order[: spec.eval_rows], keep_in_memory=True)
        order = order[spec.eval_rows :]
    if spec.format == "text" and spec.replay is not None:
        import datasets

        replay = _prepare_replay(recipe, spec.replay, tokenizer, template, max_len, report, mode)
        rorder = list(range(len(replay)))
        rng.shuffle(rorder)
        if spec.eval_rows:
            eval_sets["chat"] = replay.select(rorder[: spec.eval_rows], keep_in_memory=True)
            rorder = rorder[spec.eval_rows :]
        want = round(len(order) * spec.replay.fraction / (1 - spec.replay.fraction))
        if want > len(rorder):
            report.notes.append(f"replay wanted {want} chat rows, has {len(rorder)}: using all")
        offset = len(data)
        order = order + [offset + i for i in rorder[:want]]
        rng.shuffle(order)
        data = datasets.concatenate_datasets([data, replay])
        report.notes.append(f"mixed {min(want, len(rorder))} replay chat rows from {spec.replay.source}")
    if not order:
        dropped = ", ".join(f"{r} {n} (first: row {report.first_bad[r]})" for r, n in report.dropped.most_common())
        filtered = ", ".join(f"{k} {n}" for k, n in report.filtered.items())
        raise DataError(
            f"no usable training rows left in {spec.source}: {report.total} read, dropped: {dropped or 'none'}"
            f"{'; filtered: ' + filtered if filtered else ''}. Fix the rows or the recipe's data keys "
            "(lorallama data inspect --set data.strict=false shows the report)"
        )
    return PreparedData(data.select(order, keep_in_memory=True), eval_sets, report)


def _score(value: Any) -> float:
    """A row's score as a number; missing, text or NaN count as 0 (so a score threshold filters them)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number else 0.0


def _language(messages: list[dict[str, str]]) -> str:
    import py3langid

    text = " ".join(m["content"] for m in messages if m["role"] != "system")[:2000]
    return py3langid.classify(text)[0]


def _filtered(items: Iterable[dict], spec, report: DataReport) -> Iterator[dict]:
    """Score, language and near-duplicate filters, in that order (cheapest first), each counted."""
    min_score = getattr(spec, "min_score", None)
    languages = set(getattr(spec, "language", None) or [])
    near = NearDuplicates(spec.near_duplicates) if getattr(spec, "near_duplicates", None) else None
    for item in items:
        if min_score is not None:
            row = item.pop("row")
            if _score(row.get(spec.score_field) if isinstance(row, dict) else None) < min_score:
                report.filter(item["index"], f"{spec.score_field} < {min_score}")
                continue
        if languages and _language(item["messages"]) not in languages:
            report.filter(item["index"], f"language not {'/'.join(sorted(languages))}")
            continue
        if near is not None and near.seen_before(item["messages"]):
            report.filter(item["index"], f"near-duplicate (similarity >= {spec.near_duplicates})")
            continue
        yield item


def _judged(items: Iterable[dict], spec, report: DataReport) -> Iterator[dict]:
    judge_spec = getattr(spec, "judge", None)
    if judge_spec is None:
        yield from items
        return
    from .judge import Judge

    judge = Judge(judge_spec)
    name = f"judge score < {judge_spec.threshold}"
    scores: list[float] = []
    try:
        batch: list[dict] = []
        for item in [*items, None]:
            if item is not None:
                batch.append(item)
                if len(batch) < 64 * judge_spec.batch_size:
                    continue
            for it, score in zip(batch, judge.scores([b["messages"] for b in batch]) if batch else [], strict=True):
                scores.append(score)
                if score < judge_spec.threshold:
                    report.filter(it["index"], name)
                else:
                    yield it
            batch = []
    finally:
        judge.close()
    if scores:
        mean = sum(scores) / len(scores)
        report.notes.append(
            f"judge {judge.name}: {len(scores)} conversations scored (mean {mean:.2f}), {judge.hits} from the cache "
            f"{judge.cache.path}"
        )


def _prepare_chat(rows, spec, tokenizer, template, max_len, report, strict: Strict, sink: TokenSink) -> None:
    items = _judged(_filtered(iter_valid(rows, spec, report, strict), spec, report), spec, report)
    limit = spec.max_rows
    taken = over = 0
    for item in items:
        if limit is not None and taken >= limit:
            over += 1  # still read to the end: the counts above cover the whole file
            continue
        taken += 1
        tokens = tokenize_chat(item["messages"], tokenizer, template)
        if len(tokens["input_ids"]) > max_len:
            _bad(report, item["index"], item["where"], "too_long", strict)
            continue
        if not any(tokens["assistant_masks"]):
            _bad(report, item["index"], item["where"], "no_assistant_turn", strict)
            continue
        report.token_lengths.append(len(tokens["input_ids"]))
        report.kept += 1
        sink.add(tokens)
    if over:
        report.filtered[f"beyond max_rows {limit}"] = over


def _prepare_text(rows, spec: DataSpec, tokenizer, max_len, report, strict: Strict, sink: TokenSink) -> None:
    docs = []
    for row in rows:
        if row.error:
            _bad(report, row.index, row.where, row.error, strict)
            continue
        if not isinstance(row.value, dict) or spec.text_field not in row.value:
            columns = sorted(row.value) if isinstance(row.value, dict) else type(row.value).__name__
            raise DataError(
                f"{spec.source} row {row.index + 1} ({row.where}) has no text column {spec.text_field!r} (columns: "
                f"{columns}): set data.text_field to the column that holds the text"
            )
        text = row.value[spec.text_field]
        if not isinstance(text, str):
            _bad(report, row.index, row.where, "non_string_content", strict)
            continue
        text = clean_text(text, spec.trim)
        if not text:
            _bad(report, row.index, row.where, "empty_text", strict)
            continue
        docs.append(text)
    if spec.max_rows is not None and len(docs) > spec.max_rows:
        report.filtered[f"beyond max_rows {spec.max_rows}"] = len(docs) - spec.max_rows
        docs = docs[: spec.max_rows]
    blocks = chunk_documents(docs, tokenizer, max_len)
    report.kept = len(docs)
    report.token_lengths = [len(b) for b in blocks]
    report.notes.append(f"{len(docs)} documents → {len(blocks)} blocks of ≤ {max_len} tokens")
    for b in blocks:
        sink.add({"input_ids": b, "assistant_masks": [1] * len(b)})


def _prepare_replay(recipe, replay: ReplaySpec, tokenizer, template, max_len, report, strict: Strict):
    sub = DataReport(source=replay.source)
    rows = _read(source_path(recipe, replay.source, "data.replay.source"), replay, sub)
    if replay.max_rows:
        rows = itertools.islice(rows, replay.max_rows)  # stop reading there
    sink = TokenSink()
    _prepare_chat(rows, replay, tokenizer, template, max_len, sub, strict, sink)
    report.notes.append(f"replay {replay.source}: {sub.kept} of {sub.total} rows usable {dict(sub.dropped) or ''}")
    return sink.finish()


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
