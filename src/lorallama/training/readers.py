"""Reading data files as a stream of rows, never all at once, with a position for every problem.

A file's rows come out one at a time, so a several-GB export is read in bounded memory: ``.jsonl`` line by line,
``.json`` arrays element by element (an incremental parser over the standard library's C decoder:
``JSONDecoder.raw_decode`` on a sliding buffer, which keeps exact positions and needs no new dependency — the
``datasets`` JSON loader parses a whole array in memory), Parquet row group by row group, CSV/TSV with the ``csv``
module. A bad row becomes a ``RawRow`` with an error (counted by the caller); a file that cannot be read at all
raises one ``DataError`` naming the file, the position, the reason and the fix. Nothing else escapes.

Encodings: UTF-8 with or without a byte-order mark, UTF-16 and UTF-32 with one. Anything else is an error that
names the encoding the file looks like.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

LOCAL_SUFFIXES = {
    ".jsonl": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "text",
}
CONVERSATION_KEYS = ("messages", "conversations", "conversation")
CHUNK = 1 << 20  # bytes read at a time
PROGRESS_BYTES = 32 << 20  # sources smaller than this read without a progress bar
WHOLE_JSON_LIMIT = 256 << 20  # a .json that is not a top-level array is parsed whole: only up to this size
_BOMS = (  # longest first: the UTF-32-LE mark starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_WS = re.compile(r"[ \t\n\r]*")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _why(e: BaseException) -> str:
    """A library's message on one line (pyarrow's span several)."""
    return " ".join(str(e).split()).rstrip(":")


@dataclass(slots=True)
class RawRow:
    index: int  # 0-based position among all rows read; reports show index + 1
    value: Any = None
    error: str | None = None  # set when the row could not be read (a reason of data.REASONS)
    where: str = ""  # file and line or element, for messages


# ---------------------------------------------------------------------------------------------------------------
# Where the data is


def looks_local(value: str) -> bool:
    p = Path(value)
    return value.startswith((".", "/", "~")) or p.suffix.lower() in LOCAL_SUFFIXES or value.count("/") > 1


def locate(value: str, folder: Path, key: str = "data.source") -> str:
    """A local source as an absolute path, or a Hub id unchanged.

    A relative path is read from ``folder`` (the recipe's; for a recipe given by slug that is the project's
    ``train_jobs/``) and from nowhere else: never the current folder, so a run cannot train on a stray file.
    """
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = Path(os.path.normpath(folder / value))
    if candidate.exists():
        return str(candidate)
    if not looks_local(value):
        return value  # namespace/name: a Hub dataset
    raise DataError(
        f"{key} {value} does not exist: tried {candidate} (a relative path is read from the recipe's folder "
        f"{folder}, never the current folder); put the file there or write an absolute path"
    )


def data_files(path: Path) -> tuple[list[Path], list[Path]]:
    """The data files of a file or folder, and the files of a folder that were left out."""
    if not path.is_dir():
        return [path], []
    files, other = [], []
    for p in sorted(path.rglob("*")):
        if p.name.startswith(".") or not (p.is_file() or p.is_symlink()):
            continue
        (files if p.suffix.lower() in LOCAL_SUFFIXES else other).append(p)
    return files, other


# ---------------------------------------------------------------------------------------------------------------
# Encodings


def sniff(path: Path) -> tuple[str, int]:
    """The file's codec and the length of its byte-order mark; UTF-8 without one."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec, len(bom)
    if head.count(0) > len(head) // 8:  # text in UTF-16/32 is full of NUL bytes; UTF-8 text has none
        raise not_utf8(path, head.index(0), "it holds NUL bytes")
    return "utf-8", 0


def guess_encoding(sample: bytes) -> str:
    try:
        from charset_normalizer import from_bytes  # comes with datasets (through requests)
    except ImportError:
        return "an unknown encoding"
    best = from_bytes(sample).best()
    return best.encoding if best is not None else "binary data (not text)"


def not_utf8(path: Path, offset: int, what: str = "") -> DataError:
    """The error for a file that is not in an encoding we read, naming the encoding it looks like."""
    with open(path, "rb") as fh:
        fh.seek(max(0, offset - 2048))
        sample = fh.read(65536)
        fh.seek(offset)
        byte = fh.read(1)
    found = guess_encoding(sample)
    if "binary" in found:
        fix = "point data.source at the data file itself"
    else:
        fix = f"convert it: iconv -f {found} -t utf-8 {path.name} > utf8-{path.name}"
    if not what:
        what = f"byte {byte[0]:#04x} cannot be decoded" if byte else "the text ends inside a character"
    return DataError(
        f"{path}: not UTF-8 (nor UTF-16/32 with a byte-order mark) at byte {offset}: {what}; "
        f"it looks like {found}: {fix}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Reading


def iter_rows(
    source: str, split: str = "train", notes: list[str] | None = None, progress: bool = True
) -> Iterator[RawRow]:
    """Every row of a local file or folder, or of a Hub dataset, in order."""
    notes = notes if notes is not None else []
    path = Path(source).expanduser()
    if not path.exists() and not looks_local(source):
        yield from _hub_rows(source, split)
        return
    if not path.exists() and not path.is_symlink():
        raise DataError(f"data file {path} does not exist: check data.source (relative paths are from the recipe)")
    files, other = data_files(path)
    if not files:
        held = ", ".join(p.name for p in other[:5]) + (" …" if len(other) > 5 else "") if other else "nothing"
        raise DataError(
            f"{path} holds no data files ({', '.join(LOCAL_SUFFIXES)}); it holds {held}: "
            "point data.source at the folder with the data, or convert the files"
        )
    if other:
        notes.append(f"{len(other)} file(s) in {path.name} with other suffixes left out (e.g. {other[0].name})")
    if path.is_file() and path.suffix.lower() not in LOCAL_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}")
    counter = itertools.count()
    bar = _bar(files, progress)
    try:
        for f in files:
            read = 0
            for row in read_file(f, counter, bar):
                read += 1
                yield row
            if read == 0:
                if len(files) == 1:
                    raise DataError(f"{f} holds no rows (the file is empty): point data.source at a file with data")
                notes.append(f"{f.name} holds no rows (empty): skipped")
    finally:
        if bar is not None:
            bar.close()


def _bar(files: list[Path], progress: bool):
    size = sum(f.stat().st_size for f in files if f.is_file())
    if not progress or size < PROGRESS_BYTES:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=size, unit="B", unit_scale=True, desc="reading data", leave=False)


def read_file(path: Path, counter, bar=None) -> Iterator[RawRow]:
    """The rows of one file; a file in which not one row is readable is an error, not a column of drops."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror}): fix the link or the permissions") from e
    if size == 0:
        return
    kind = LOCAL_SUFFIXES[path.suffix.lower()]
    reader = {"jsonl": _jsonl, "json": _json, "parquet": _parquet, "csv": _csv, "tsv": _csv, "text": _text}[kind]
    first_bad: RawRow | None = None
    good = 0
    try:
        for row in reader(path, counter, bar):
            if row.error is None:
                good += 1
            elif first_bad is None:
                first_bad = row
            yield row
    except OSError as e:
        raise DataError(f"{path} cannot be read ({_why(e)}): check the file and its permissions") from e
    if good == 0 and first_bad is not None:
        if first_bad.error == "invalid_utf8":
            raise not_utf8(path, 0, f"not one line of {path.name} is UTF-8 ({first_bad.where})")
        raise DataError(
            f"{path}: not one row is readable ({first_bad.where}: {first_bad.error.replace('_', ' ')}): "
            f"is it really {path.suffix} data? Fix the file or point data.source at the right one"
        )


def _jsonl(path: Path, counter, bar) -> Iterator[RawRow]:
    codec, bom = sniff(path)
    with open(path, "rb") as fh:
        fh.seek(bom)
        if codec != "utf-8":
            yield from _jsonl_text(path, fh, codec, counter, bar)
            return
        for lineno, line in enumerate(fh, 1):
            if bar is not None:
                bar.update(len(line))
            if not line.strip():
                continue
            where = f"{path.name} line {lineno}"
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                yield RawRow(next(counter), error="invalid_utf8", where=where)
                continue
            yield _parse_line(text, next(counter), where)


def _jsonl_text(path: Path, fh, codec: str, counter, bar) -> Iterator[RawRow]:
    """JSONL in UTF-16/32: decoded chunk by chunk (its newlines are not single bytes), then split into lines."""
    decoder = codecs.getincrementaldecoder(codec)("strict")
    rest, lineno = "", 0
    while True:
        start = fh.tell()
        data = fh.read(CHUNK)
        try:
            text = rest + decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            line = lineno + (rest + data[: e.start].decode(codec, errors="replace")).count("\n") + 1
            raise DataError(
                f"{path} byte {start + e.start} (line {line}): not valid {codec} ({e.reason}) "
                f"although the file starts with a {codec} byte-order mark: re-export it, or convert it to UTF-8 "
                "with iconv"
            ) from None
        if bar is not None:
            bar.update(len(data))
        lines = text.splitlines(keepends=True)
        rest = lines.pop() if data and lines and not lines[-1].endswith(("\n", "\r")) else ""
        for line in lines:
            lineno += 1
            if line.strip():
                yield _parse_line(line, next(counter), f"{path.name} line {lineno}")
        if not data:
            return


def _parse_line(text: str, index: int, where: str) -> RawRow:
    try:
        return RawRow(index, json.loads(text), where=where)
    except json.JSONDecodeError:
        return RawRow(index, error="invalid_json", where=where)
    except RecursionError:
        return RawRow(index, error="nested_too_deep", where=where)


class _Chars:
    """The decoded text of a file as a sliding buffer: ``buf[pos:]`` is what is left to parse."""

    def __init__(self, path: Path, bar):
        self.path, self.bar = path, bar
        self.codec, bom = sniff(path)
        self.fh = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.fh.seek(bom)
        self.decoder = codecs.getincrementaldecoder(self.codec)("strict")
        self.buf, self.pos, self.base, self.eof = "", 0, 0, False
        self.read_size = CHUNK

    def more(self, grow: bool = False) -> None:
        """Append the next chunk (double the chunk when one value spans many, so re-parsing stays linear)."""
        self.read_size = self.read_size * 2 if grow else CHUNK
        start = self.fh.tell()
        data = self.fh.read(self.read_size)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise not_utf8(self.path, start + e.start) from None
        if self.bar is not None:
            self.bar.update(len(data))
        self.eof = not data
        if self.pos:
            self.buf, self.base, self.pos = self.buf[self.pos :], self.base + self.pos, 0
        self.buf += text

    def skip_ws(self) -> bool:
        """Move past whitespace; False at the end of the file."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return True
            if self.eof:
                return False
            self.more()

    def at(self) -> int:
        return self.base + self.pos

    def close(self) -> None:
        self.fh.close()


def _json(path: Path, counter, bar) -> Iterator[RawRow]:
    chars = _Chars(path, bar)
    try:
        chars.more()
        if not chars.skip_ws():
            return  # only whitespace: an empty file
        if chars.buf[chars.pos] != "[":
            yield from _json_whole(path, chars, counter)
            return
        chars.pos += 1
        yield from _json_array(path, chars, counter)
    finally:
        chars.close()


def _json_array(path: Path, chars: _Chars, counter) -> Iterator[RawRow]:
    decoder = json.JSONDecoder()
    element = 0
    if not chars.skip_ws():
        raise _truncated(path, chars, element)
    if chars.buf[chars.pos] == "]":
        chars.pos += 1
    else:
        retries = 0  # reads for the current element: its buffer grows only when one value spans several chunks
        while True:
            element += 1
            where = f"{path.name} element {element}"
            try:
                value, end = decoder.raw_decode(chars.buf, chars.pos)
                if end == len(chars.buf) and not chars.eof and not isinstance(value, dict | list | str):
                    chars.more(grow=retries > 0)
                    retries += 1  # a number cut by the chunk edge
                    element -= 1
                    continue
                row = RawRow(next(counter), value, where=where)
            except json.JSONDecodeError as e:
                unterminated = e.msg.startswith("Unterminated string")
                if not chars.eof and (unterminated or e.pos >= len(chars.buf) - 8):  # cut by the chunk edge
                    chars.more(grow=retries > 0)
                    retries += 1
                    element -= 1
                    continue
                if unterminated or e.pos >= len(chars.buf.rstrip()):
                    raise _truncated(path, chars, element) from None
                raise DataError(
                    f"{path}: element {element} (character {chars.base + e.pos}) is not valid JSON: {e.msg}; fix it, "
                    "or convert the file to JSONL, where a bad line is dropped on its own"
                ) from None
            except RecursionError:
                end = _skip_value(chars.buf, chars.pos)
                if end is None:
                    if chars.eof:
                        raise _truncated(path, chars, element) from None
                    chars.more(grow=retries > 0)
                    retries += 1
                    element -= 1
                    continue
                row = RawRow(next(counter), error="nested_too_deep", where=where)
            chars.pos, retries = end, 0
            yield row
            if not chars.skip_ws():
                raise _truncated(path, chars, element)
            c = chars.buf[chars.pos]
            chars.pos += 1
            if c == "]":
                break
            if c != "," or not chars.skip_ws():
                if c != ",":
                    raise DataError(
                        f"{path}: after element {element} (character {chars.at() - 1}) comes {c!r} where ',' or ']' "
                        "belongs: fix the file (is a comma missing?)"
                    )
                raise _truncated(path, chars, element)
    if chars.skip_ws():
        raise DataError(
            f"{path}: text after the closing ']' of the array (character {chars.at()}): remove it, or convert the "
            "file to JSONL"
        )


def _truncated(path: Path, chars: _Chars, element: int) -> DataError:
    return DataError(
        f"{path}: the JSON array ends early, inside element {element} (character {chars.at()}): the file is truncated; "
        "download or export it again"
    )


def _skip_value(buf: str, pos: int) -> int | None:
    """The end of the array or object at ``pos`` (too deep for the decoder), or None when the buffer ends first."""
    depth = 0
    for m in _TOKEN.finditer(buf, pos):
        t = m.group()
        if t in "[{":
            depth += 1
        elif t in "]}":
            depth -= 1
            if depth == 0:
                return m.end()
    return None


def _json_whole(path: Path, chars: _Chars, counter) -> Iterator[RawRow]:
    """A .json that is not a top-level array: ``{"data": [...]}``, one conversation, or a mistake."""
    if path.stat().st_size > WHOLE_JSON_LIMIT:
        raise DataError(
            f"{path} is one JSON object of {path.stat().st_size >> 20} MB; only a top-level array is read in pieces: "
            f"convert it, e.g. jq -c '.data[]' {path.name} > {path.stem}.jsonl"
        )
    while not chars.eof:
        chars.more()
    try:
        value = json.loads(chars.buf[chars.pos :])
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg}): fix the file, or write one "
            "conversation per line as JSONL"
        ) from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read: fix the file") from None
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list)]
        if any(k in value for k in CONVERSATION_KEYS) or len(lists) != 1:
            yield RawRow(next(counter), value, where=path.name)
            return
        for i, item in enumerate(value[lists[0]], 1):
            yield RawRow(next(counter), item, where=f"{path.name} {lists[0]}[{i}]")
        return
    kind = {str: "a string", bool: "true/false", type(None): "null", int: "a number", float: "a number"}[type(value)]
    raise DataError(
        f'{path} holds {kind}, not rows: write a JSON array of conversations ([{{"conversations": […]}}, …]) '
        "or one conversation per line in a .jsonl file"
    )


def _parquet(path: Path, counter, bar) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fix = "the file is truncated or not Parquet: download or export it again"
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({_why(e)}): {fix}") from None
    done = 0
    for group in range(pf.metadata.num_row_groups):
        try:
            table = pf.read_row_group(group)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise DataError(
                f"{path}: row group {group} (rows from {done + 1}) cannot be read ({_why(e)}): {fix}"
            ) from None
        for batch in table.to_batches(max_chunksize=1000):
            for row in batch.to_pylist():
                done += 1
                yield RawRow(next(counter), row, where=f"{path.name} row {done}")
        if bar is not None:
            bar.update(pf.metadata.row_group(group).total_compressed_size)


def _csv(path: Path, counter, bar) -> Iterator[RawRow]:
    csv.field_size_limit(1 << 30)  # a conversation as JSON text is longer than csv's 128 kB default
    codec, bom = sniff(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding=codec, errors="strict", newline="") as fh:
        if bom:
            fh.read(1)  # the byte-order mark decodes to one U+FEFF
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return
            if len(set(header)) != len(header):
                raise DataError(f"{path} line 1: the header names a column twice ({header}): rename the columns")
            for row in reader:
                if not row:
                    continue
                where = f"{path.name} line {reader.line_num}"
                if len(row) != len(header):
                    yield RawRow(next(counter), error="csv_wrong_fields", where=where)
                    continue
                yield RawRow(next(counter), dict(zip(header, row, strict=True)), where=where)
        except csv.Error as e:
            raise DataError(
                f"{path} line {reader.line_num}: not valid {path.suffix[1:].upper()} ({_why(e)}): fix the quoting there (a "
                'field holding quotes, commas or newlines goes in "…" with its quotes doubled)'
            ) from None
        except UnicodeDecodeError as e:
            raise not_utf8(path, 0, f"line {reader.line_num + 1}: {e.reason}") from None
        if bar is not None:
            bar.update(path.stat().st_size)


def _text(path: Path, counter, bar) -> Iterator[RawRow]:
    codec, bom = sniff(path)
    data = path.read_bytes()[bom:]
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as e:
        raise not_utf8(path, bom + e.start) from None
    if bar is not None:
        bar.update(len(data))
    yield RawRow(next(counter), {"text": text}, where=path.name)


def _hub_rows(source: str, split: str) -> Iterator[RawRow]:
    import datasets

    try:
        ds = datasets.load_dataset(source, split=split)
    except Exception as e:  # offline, unknown id, wrong split: all end the same way for the user
        raise DataError(
            f"cannot load Hub dataset {source!r} (split {split!r}): {type(e).__name__}: {e}. Check the id and split, "
            "log in with HF_TOKEN for private data, or point data.source at a local .jsonl/.parquet file"
        ) from e
    for i, row in enumerate(ds):
        yield RawRow(i, row, where=f"{source} row {i + 1}")
