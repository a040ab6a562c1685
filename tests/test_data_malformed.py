"""Malformed input never ends in a traceback: each kind is a counted drop, or one line naming the file, the
position (line, element, row or byte), the reason and the fix — through ``lorallama data inspect`` as a user runs it,
and the same through ``train``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lorallama import cli
from support.exports import write_recipe

GOOD = {"conversations": [{"from": "human", "value": "Hello there"}, {"from": "gpt", "value": "Ahoy! Fair winds!"}]}


def good(i: int) -> dict:
    return {"conversations": [{"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]}


def jsonl(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def parquet_bytes(tmp: Path, rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp / "_source.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    data = path.read_bytes()
    path.unlink()
    return data


def garbage(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def inspect(tmp_path: Path, base: Path, source: str, capsys, *flags: str) -> tuple[int, str, str]:
    recipe = write_recipe(tmp_path, base, source)
    rc = cli.main(["data", "inspect", str(recipe), "--png", str(tmp_path / "h.png"), *flags])
    out, err = capsys.readouterr()
    return rc, out, err


BAD_ELEMENT = b"[" + json.dumps(good(0)).encode() + b', {"conversations": [}]'
# Each kind: the files to write (name → bytes; a name ending in / is a folder), the data.source, and what the
# one error line must hold (file, position, reason, fix).
ERRORS = {
    "json_number": ({"d.json": b"42\n"}, "d.json", ["d.json holds a number, not rows", "write a JSON array"]),
    "json_string": ({"d.json": b'"hello"'}, "d.json", ["d.json holds a string, not rows", ".jsonl file"]),
    "json_null": ({"d.json": b"null"}, "d.json", ["d.json holds null, not rows"]),
    "json_dict_without_rows": (
        {"d.json": b'{"version": 2, "name": "my export"}'},
        "d.json",
        ["no row of d.json has a conversation field 'auto'", "['name', 'version']", "set data.messages_field"],
    ),
    "json_truncated": (
        {"d.json": json.dumps([good(0), good(1), good(2)]).encode()[:-30]},
        "d.json",
        ["d.json: the JSON array ends early, inside element 3", "character", "truncated", "export it again"],
    ),
    "json_bad_element": (
        {"d.json": BAD_ELEMENT},
        "d.json",
        [f"d.json: element 2 (character {BAD_ELEMENT.rindex(b'}]')}) is not valid JSON", "convert the file to JSONL"],
    ),
    "json_missing_comma": (
        {"d.json": b"[" + json.dumps(good(0)).encode() + json.dumps(good(1)).encode() + b"]"},
        "d.json",
        ["after element 1 (character", "where ',' or ']' belongs", "is a comma missing"],
    ),
    "json_trailing_text": (
        {"d.json": json.dumps([good(0)]).encode() + b"\n]garbage"},
        "d.json",
        ["text after the closing ']' of the array (character", "remove it"],
    ),
    "json_syntax_error_object": (
        {"d.json": b'{"data": [1, 2,, 3]}'},
        "d.json",
        ["d.json: not valid JSON at line 1 column 16", "fix the file"],
    ),
    "empty_jsonl": ({"d.jsonl": b""}, "d.jsonl", ["d.jsonl holds no rows (the file is empty)"]),
    "empty_json": ({"d.json": b"  \n"}, "d.json", ["d.json holds no rows (the file is empty)"]),
    "empty_csv": ({"d.csv": b""}, "d.csv", ["d.csv holds no rows"]),
    "csv_header_only": ({"d.csv": b"conversations,score\n"}, "d.csv", ["d.csv holds no rows"]),
    "binary_jsonl": ({"d.jsonl": garbage(5000)}, "d.jsonl", ["d.jsonl: not UTF-8", "at byte", "binary data"]),
    "binary_as_parquet": (
        {"d.parquet": garbage(3000)},
        "d.parquet",
        ["d.parquet: not a readable Parquet file", "download or export it again"],
    ),
    "truncated_parquet": (
        {"d.parquet": "TRUNCATE"},
        "d.parquet",
        ["d.parquet: not a readable Parquet file", "truncated or not Parquet"],
    ),
    "corrupt_parquet_row_group": (
        {"d.parquet": "CORRUPT"},
        "d.parquet",
        ["d.parquet: row group 0 (rows from 1) cannot be read", "truncated or not Parquet"],
    ),
    "csv_unclosed_quote": (
        {"d.csv": b'conversations,score\n"[{""from"": ""human"", ""value"": ""hi""}]",4\n"[unclosed,5\n'},
        "d.csv",
        ["d.csv line 3: not valid CSV", "fix the quoting there"],
    ),
    "csv_bad_quoting": (
        {"d.csv": b'conversations,score\n"abc"def,4\n'},
        "d.csv",
        ["d.csv line 2: not valid CSV (',' expected after '\"')", "with its quotes doubled"],
    ),
    "csv_duplicate_header": (
        {"d.csv": b"text,text\na,b\n"},
        "d.csv",
        ["d.csv line 1: the header names a column twice"],
    ),
    "latin1_json": (
        {"d.json": json.dumps([good(0), {"conversations": "café"}], ensure_ascii=False).encode("latin-1")},
        "d.json",
        ["d.json: not UTF-8", "at byte", "byte 0xe9 cannot be decoded", "it looks like", "iconv -f"],
    ),
    "latin1_jsonl_whole_file": (
        {"d.jsonl": json.dumps({"conversations": "Caf\u00e9 cr\u00e8me?"}, ensure_ascii=False).encode("cp1252")},
        "d.jsonl",
        ["d.jsonl: not UTF-8", "not one line of d.jsonl is UTF-8 (d.jsonl line 1)", "iconv"],
    ),
    "utf16_without_bom": (
        {"d.jsonl": jsonl([good(0), good(1)]).decode().encode("utf-16-le")},
        "d.jsonl",
        ["d.jsonl: not UTF-8 (nor UTF-16/32 with a byte-order mark) at byte 1: it holds NUL bytes", "utf_16"],
    ),
    "utf16_bom_then_broken": (
        {"d.jsonl": b"\xff\xfe" + jsonl([good(0)]).decode().encode("utf-16-le") + b"\x00\xd8\n\x00"},
        "d.jsonl",
        [f"d.jsonl byte {2 + 2 * len(jsonl([good(0)]))} (line 2): not valid utf-16-le", "byte-order mark", "iconv"],
    ),
    "binary_txt": ({"d.txt": b"\x89PNG\r\n\x1a\n" + garbage(200)}, "d.txt", ["d.txt: not UTF-8", "at byte"]),
    "folder_without_data": (
        {"corpus/": b"", "corpus/readme.md": b"# notes", "corpus/img.png": b"\x89PNG"},
        "corpus",
        ["corpus holds no data files (.jsonl, .json, .parquet, .csv, .tsv, .txt); it holds img.png, readme.md"],
    ),
    "empty_folder": ({"corpus/": b""}, "corpus", ["corpus holds no data files", "it holds nothing"]),
    "missing_relative_source": (
        {},
        "data/chat.jsonl",
        ["data.source data/chat.jsonl does not exist: tried", "never the current folder", "write an absolute path"],
    ),
    "unsupported_suffix": ({"d.xml": b"<rows/>"}, "d.xml", ["d.xml: unsupported file type '.xml'; use one of"]),
    "broken_symlink": (
        {"corpus/": b"", "corpus/a.jsonl": jsonl([good(0)]), "corpus/b.jsonl": "LINK"},
        "corpus",
        ["b.jsonl cannot be read", "fix the link or the permissions"],
    ),
    "every_line_invalid_json": (
        {"d.jsonl": b"this is not json\nnor is this\n"},
        "d.jsonl",
        ["d.jsonl: not one row is readable (d.jsonl line 1: invalid json)", "is it really .jsonl data?"],
    ),
    "huge_json_object": ({"d.json": "HUGE"}, "d.json", ["only a top-level array is read in pieces", "jq -c"]),
}


def write(tmp_path: Path, files: dict, monkeypatch) -> None:
    for name, content in files.items():
        target = tmp_path / name
        if name.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        elif content == "LINK":
            target.symlink_to(tmp_path / "nowhere.jsonl")
        elif content == "TRUNCATE":
            target.write_bytes(parquet_bytes(tmp_path, [good(i) for i in range(6)])[:-200])
        elif content == "CORRUPT":
            data = bytearray(parquet_bytes(tmp_path, [good(i) for i in range(6)]))
            data[40:400] = garbage(360)  # the pages, not the footer: the file opens, a row group does not read
            target.write_bytes(bytes(data))
        elif content == "HUGE":
            from lorallama.training import readers

            monkeypatch.setattr(readers, "WHOLE_JSON_LIMIT", 100)
            target.write_bytes(json.dumps({"data": [good(i) for i in range(10)]}).encode())
        else:
            target.write_bytes(content)


@pytest.mark.parametrize("kind", list(ERRORS))
def test_malformed_input_is_one_line_naming_file_position_and_fix(tmp_path, tiny_chatml, capsys, monkeypatch, kind):
    files, source, parts = ERRORS[kind]
    write(tmp_path, files, monkeypatch)
    monkeypatch.chdir(tmp_path.parent)  # never read from the current folder
    rc, out, err = inspect(tmp_path, tiny_chatml, source, capsys)
    assert rc == 2, out + err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lorallama: error: "), err
    for part in parts:
        assert part in lines[0], lines[0]


# Each kind: the file, and the drops (reason: count) it must end with; the good rows around it are kept.
DEEP = b'{"conversations": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
DROPS = {
    "jsonl_deep_nesting": ({"d.jsonl": jsonl([good(0), DEEP, good(1)])}, "d.jsonl", {"nested_too_deep": 1}, 2),
    "json_array_deep_nesting": (
        {"d.json": b"[" + json.dumps(good(0)).encode() + b"," + b"[" * 100_000 + b"]" * 100_000 + b"]"},
        "d.json",
        {"nested_too_deep": 1},
        1,
    ),
    "json_rows_not_objects": (
        {"d.json": json.dumps([good(0), 1, "x", None, [1]]).encode()},
        "d.json",
        {"missing_field": 4},
        1,
    ),
    "conversation_is_text": (
        {"d.jsonl": jsonl([good(0), {"conversations": "Hello, how are you?"}, {"messages": "[not json"}])},
        "d.jsonl",
        {"wrong_type": 2},
        1,
    ),
    "turn_without_role": (
        {"d.jsonl": jsonl([good(0), {"conversations": [{"value": "who said this?"}, {"from": "gpt", "value": "x"}]}])},
        "d.jsonl",
        {"missing_field": 1},
        1,
    ),
    "null_and_number_content": (
        {
            "d.jsonl": jsonl(
                [good(0), {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": 4}]}]
            )
        },
        "d.jsonl",
        {"non_string_content": 1},
        1,
    ),
    "stray_invalid_utf8_line": (
        {"d.jsonl": jsonl([good(0), b'{"conversations": "caf\xe9"}', good(1)])},
        "d.jsonl",
        {"invalid_utf8": 1},
        2,
    ),
    "jsonl_line_is_a_list": ({"d.jsonl": jsonl([good(0), [good(1)], 17])}, "d.jsonl", {"missing_field": 2}, 1),
    "csv_ragged_row": (
        {
            "d.tsv": b'conversations\tscore\n[{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]\t4\nonly-one\n'
        },
        "d.tsv",
        {"csv_wrong_fields": 1},
        1,
    ),
    "schema_changes_half_way": (
        {
            "d.jsonl": jsonl(
                [good(0), good(1)]
                + [
                    {
                        "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
                        "conversations": None,
                    }
                ]
                + [{"conversations": {"from": "human", "value": "a dict, not a list"}}, {"dialog": []}]
            )
        },
        "d.jsonl",
        {"wrong_type": 1, "missing_field": 1},
        3,
    ),
    "folder_mixing_formats": (
        {
            "corpus/": b"",
            "corpus/a.jsonl": jsonl([good(0)]),
            "corpus/b.txt": b"a raw text document in a chat folder",
            "corpus/c.json": json.dumps([good(1)]).encode(),
            "corpus/d.csv": b'conversations\n"[{""from"": ""human"", ""value"": ""hi""}, {""from"": ""gpt"", ""value"": ""yo""}]"\n',
            "corpus/empty.jsonl": b"",
            "corpus/notes.md": b"ignored",
        },
        "corpus",
        {"missing_field": 1},
        3,
    ),
    "control_characters_everywhere": (
        {
            "d.jsonl": jsonl(
                [{"conversations": [{"from": "human", "value": "\x00\x01Hi\x1b"}, {"from": "gpt", "value": "Yo\x7f"}]}]
            )
        },
        "d.jsonl",
        {},
        1,
    ),
}


@pytest.mark.parametrize("kind", list(DROPS))
def test_malformed_rows_are_counted_drops(tmp_path, tiny_chatml, capsys, monkeypatch, kind):
    files, source, drops, kept = DROPS[kind]
    write(tmp_path, files, monkeypatch)
    rc, out, err = inspect(tmp_path, tiny_chatml, source, capsys)
    assert rc == 0, err
    assert "Traceback" not in err
    assert f"  rows kept   {kept}\n" in out
    for reason, count in drops.items():
        assert f"  dropped {count:>6}  {reason:<19}" in out, out
    assert out.count("  dropped ") == len(drops)


def test_train_stops_with_the_same_line_as_inspect(tmp_path, tiny_chatml, capsys):
    (tmp_path / "d.json").write_bytes(b"42")
    recipe = write_recipe(tmp_path, tiny_chatml, "d.json")
    assert cli.main(["data", "inspect", str(recipe)]) == 2
    inspected = capsys.readouterr().err
    assert cli.main(["train", str(recipe), "--max-steps", "1", "--output", str(tmp_path / "out"), "--no-push"]) == 2
    trained = capsys.readouterr().err
    assert inspected == trained and inspected.count("\n") == 1 and "d.json holds a number" in trained
    assert not (tmp_path / "out" / "adapter").exists()


def test_strict_names_the_flag_or_the_recipe_key(tmp_path, tiny_chatml, capsys):
    (tmp_path / "d.jsonl").write_bytes(jsonl([good(0), good(1), {"conversations": []}]))
    rc, _, err = inspect(tmp_path, tiny_chatml, "d.jsonl", capsys, "--strict")
    assert rc == 2
    assert err == (
        "lorallama: error: d.jsonl: row 3 (d.jsonl line 3) is bad: wrong_type (conversation is not a list of turns); "
        "fix that row, or turn strict mode off (the --strict flag) to drop and count bad rows instead\n"
    )
    recipe = write_recipe(tmp_path, tiny_chatml, "d.jsonl", strict=True)
    assert cli.main(["data", "inspect", str(recipe)]) == 2
    assert "turn strict mode off (data.strict: true in export.yaml)" in capsys.readouterr().err
    assert cli.main(["data", "inspect", str(recipe), "--set", "data.strict=false"]) == 0


def test_the_kinds_add_up():
    assert len(ERRORS) + len(DROPS) >= 25
