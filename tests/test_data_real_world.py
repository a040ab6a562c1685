"""Real-world chat exports: every valid conversation kept, obvious faults repaired and counted (with 1-based row
numbers), fields found per row, encodings, CSV/TSV cells holding JSON, streaming reads, and where a relative
``data.source`` is looked for."""

from __future__ import annotations

import collections
import json

import pytest

from lorallama import cli
from lorallama.errors import DataError
from lorallama.recipe import load_recipe
from lorallama.training import data as D
from lorallama.training import readers
from support.exports import real_world_rows, write_json_array, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def sample():
    return real_world_rows(3000, seed=11)


def qa(q: str, a: str, roles=("human", "gpt"), style="sharegpt") -> dict:
    if style == "sharegpt":
        return {"conversations": [{"from": roles[0], "value": q}, {"from": roles[1], "value": a}]}
    return {"messages": [{"role": roles[0], "content": q}, {"role": roles[1], "content": a}]}


def test_real_world_sample_keeps_every_valid_conversation(tmp_path, tok, template, sample):
    rows, expected = sample
    write_jsonl(tmp_path / "export.jsonl", rows)
    recipe = load_recipe(str(write_recipe(tmp_path, "someone/base", "export.jsonl")))
    report = D.prepare(recipe, tok, template).report

    valid = [i for i, e in enumerate(expected) if e.keep]
    assert report.total == len(rows) == 3000
    assert report.kept / len(valid) >= 0.99
    assert report.kept == len(valid)  # all of them, in fact
    reasons = collections.Counter(e.reason for e in expected if not e.keep)
    assert dict(report.dropped) == dict(reasons)
    repairs = collections.Counter(r for e in expected if e.keep for r in e.repairs)
    assert dict(report.repaired) == dict(repairs)
    assert report.repaired["leading_assistant_trimmed"] > 600  # the most common fault of split exports
    assert report.unknown_roles == {"narrator": reasons["unknown_role"]}
    # the first row numbers are 1-based positions of rows built with that fault
    for kind in repairs:
        built = [i + 1 for i, e in enumerate(expected) if e.keep and kind in e.repairs][: D.FIRST_ROWS]
        assert report.first_rows[kind] == built
    for reason in reasons:
        assert report.first_rows[reason] == [i + 1 for i, e in enumerate(expected) if e.reason == reason][:5]


def test_the_kept_rows_are_exactly_the_valid_ones(sample):
    rows, expected = sample
    items = list(
        D.iter_valid(
            [readers.RawRow(i, r) for i, r in enumerate(rows)], D.DataSpec(source="x"), D.DataReport("x"), False
        )
    )
    assert [it["index"] for it in items] == [i for i, e in enumerate(expected) if e.keep]
    for it in items:
        messages = it["messages"]
        body = messages[1:] if messages[0]["role"] == "system" else messages
        assert body[0]["role"] == "user" and all(m["content"].strip() for m in messages)
        assert not any(c in m["content"] for m in messages for c in "\x00\x07")


def test_leading_assistant_turns_are_trimmed_not_dropped():
    turns = [
        {"from": "system", "value": "Be kind."},
        {"from": "gpt", "value": "…and that is the end of the first part."},
        {"from": "bing", "value": "Shall I go on?"},
        {"from": "human", "value": "Yes, go on."},
        {"from": "chatgpt", "value": "Part two."},
    ]
    result = D.repair_turns(turns)
    assert result.problem is None and result.repairs == ("leading_assistant_trimmed",)
    assert result.messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Yes, go on."},
        {"role": "assistant", "content": "Part two."},
    ]


@pytest.mark.parametrize("user", ["human", "Human", "USER", "prompter"])
@pytest.mark.parametrize("assistant", ["gpt", "ChatGPT", "bing", "Bard", "model", "BOT", "assistant"])
def test_role_aliases_of_real_exports(user, assistant):
    messages, problem = D.normalise_turns(qa("Q", "A", roles=(user, assistant))["conversations"])
    assert problem is None and [m["role"] for m in messages] == ["user", "assistant"]


def test_unknown_roles_are_listed_with_counts(tmp_path, tok, template):
    rows = [qa(f"Q{i}", f"A{i}") for i in range(3)] + [qa("Q", "A", roles=("human", "Narrator"))] * 2
    rows += [qa("Qt", "At", roles=("tool", "gpt")), qa("Qn", "An", roles=(7, "gpt"))]
    write_jsonl(tmp_path / "d.jsonl", rows)
    report = D.prepare(load_recipe(str(write_recipe(tmp_path, "x/y", "d.jsonl"))), tok, template).report
    assert report.unknown_roles == {"narrator": 2, "tool": 1, "int": 1}
    assert report.dropped == {"unknown_role": 4}
    assert "  unknown roles seen: 'narrator' 2, 'tool' 1, 'int' 1" in report.format()


def test_conversation_field_is_found_per_row(tmp_path, tok, template):
    rows = [qa("Q0", "A0", roles=("user", "assistant"), style="openai")]
    rows += [qa(f"Q{i}", f"A{i}") for i in range(1, 10)]
    rows += [
        {"messages": None, **qa("Q10", "A10")},
        {"conversations": None, **qa("Q11", "A11", ("user", "assistant"), "openai")},
    ]
    write_jsonl(tmp_path / "mixed.jsonl", rows)
    report = D.prepare(load_recipe(str(write_recipe(tmp_path, "x/y", "mixed.jsonl"))), tok, template).report
    assert (report.total, report.kept, dict(report.dropped)) == (12, 12, {})


def test_parquet_with_a_null_messages_column(tmp_path, tok, template):
    import pyarrow as pa
    import pyarrow.parquet as pq

    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    msg = pa.struct([("role", pa.string()), ("content", pa.string())])
    rows = [{"messages": None, "conversations": qa(f"Q{i}", f"A{i}")["conversations"]} for i in range(8)]
    rows.append(
        {"messages": [{"role": "user", "content": "Q8"}, {"role": "assistant", "content": "A8"}], "conversations": None}
    )
    schema = pa.schema([("messages", pa.list_(msg)), ("conversations", pa.list_(turn))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "d.parquet")
    report = D.prepare(load_recipe(str(write_recipe(tmp_path, "x/y", "d.parquet"))), tok, template).report
    assert (report.total, report.kept) == (9, 9)


ROWS = [qa("Café au lait? ☕", "Oui — très bien. 日本語も。"), qa("Second", "Zweite: ß")]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-16-be", "utf-32-le"])
@pytest.mark.parametrize("bom", [True, False])
def test_json_array_encodings(tmp_path, encoding, bom):
    path = write_json_array(tmp_path / "d.json", ROWS, encoding=encoding, bom=bom)
    if encoding != "utf-8" and not bom:
        with pytest.raises(DataError, match=r"not UTF-8 \(nor UTF-16/32 with a byte-order mark\).*NUL bytes.*utf_"):
            D.load_rows(str(path))
        return
    assert [r.value for r in D.load_rows(str(path))] == ROWS


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])  # Python writes these with a BOM
def test_jsonl_with_a_byte_order_mark_keeps_its_first_row(tmp_path, encoding):
    path = tmp_path / "d.jsonl"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS).encode(encoding))
    rows = D.load_rows(str(path))
    assert [(r.value, r.error, r.where) for r in rows] == [
        (ROWS[0], None, "d.jsonl line 1"),
        (ROWS[1], None, "d.jsonl line 2"),
    ]


@pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".tsv", "\t")])
def test_csv_and_tsv_cells_holding_json_are_parsed(tmp_path, tok, template, suffix, sep):
    import csv

    path = tmp_path / f"d{suffix}"
    with open(path, "w", newline="", encoding="utf-8-sig") as fh:  # Excel writes a BOM
        w = csv.writer(fh, delimiter=sep)
        w.writerow(["id", "conversations", "score"])
        for i, row in enumerate(ROWS):
            w.writerow([i, json.dumps(row["conversations"], ensure_ascii=False), 4.5 - i])
        w.writerow([9, "[not json at all", 5])
    recipe = load_recipe(str(write_recipe(tmp_path, "x/y", path.name, min_score=4.0)))
    report = D.prepare(recipe, tok, template).report
    assert (report.total, report.kept) == (3, 1)
    assert report.repaired == {"json_text_parsed": 2} and report.first_rows["json_text_parsed"] == [1, 2]
    assert report.dropped == {"wrong_type": 1}
    assert report.filtered == {"score < 4.0": 1}  # the CSV's "3.5" read as a number


def test_finetome_column_types_and_score_threshold(tmp_path, tok, template):
    """FineTome-100k's parquet: conversations list<struct<from, value>>, source string, score float64."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    schema = pa.schema([("conversations", pa.list_(turn)), ("source", pa.string()), ("score", pa.float64())])
    scores = [5.21, 4.0, 3.99, None, 4.63, float("nan"), 3.05]
    rows = [{**qa(f"Q{i}", f"A{i}"), "source": "infini-instruct-top-500k", "score": s} for i, s in enumerate(scores)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "ft.parquet")
    report = D.prepare(
        load_recipe(str(write_recipe(tmp_path, "x/y", "ft.parquet", min_score=4.0))), tok, template
    ).report
    assert (report.kept, report.filtered) == (3, {"score < 4.0": 4})
    assert report.first_rows["score < 4.0"] == [3, 4, 6, 7]


def test_json_array_streams_across_chunk_edges(tmp_path, sample, monkeypatch):
    rows = sample[0][:300] + [1.5, 12345678901234567890, "text", None, True, [1, [2]], {"k": "ü" * 40}]
    path = write_json_array(tmp_path / "d.json", rows)
    monkeypatch.setattr(readers, "CHUNK", 7)  # every element, number and multi-byte character cut somewhere
    assert [r.value for r in D.load_rows(str(path))] == rows


def test_json_array_rows_come_before_the_file_is_read(tmp_path):
    """A streaming read: the first rows arrive, then the damage further on is reported."""
    body = json.dumps([qa(f"Q{i}", "A" * 2000) for i in range(2000)])
    (tmp_path / "d.json").write_text(body[: len(body) // 2], encoding="utf-8")
    rows = readers.iter_rows(str(tmp_path / "d.json"))
    first = [next(rows) for _ in range(10)]
    assert [r.value for r in first] == [qa(f"Q{i}", "A" * 2000) for i in range(10)]
    with pytest.raises(DataError, match=r"the JSON array ends early, inside element \d+"):
        list(rows)


def test_progress_bar_on_large_reads(tmp_path, capsys, monkeypatch):
    write_jsonl(tmp_path / "d.jsonl", ROWS * 50)
    monkeypatch.setattr(readers, "PROGRESS_BYTES", 0)
    assert len(D.load_rows(str(tmp_path / "d.jsonl"))) == 100
    assert "reading data" in capsys.readouterr().err


def test_relative_source_is_read_beside_the_recipe_only(tmp_path, monkeypatch, tok, template):
    recipes, cwd = tmp_path / "recipes", tmp_path / "work"
    recipes.mkdir()
    cwd.mkdir()
    write_jsonl(cwd / "chat.jsonl", [qa("from the current folder", "wrong file")])
    monkeypatch.chdir(cwd)
    recipe = load_recipe(str(write_recipe(recipes, "x/y", "chat.jsonl")))
    with pytest.raises(DataError) as info:
        D.prepare(recipe, tok, template)
    assert str(info.value) == (
        f"data.source chat.jsonl does not exist: tried {recipes / 'chat.jsonl'} (a relative path is read from the "
        f"recipe's folder {recipes}, never the current folder); put the file there or write an absolute path"
    )
    write_jsonl(recipes / "chat.jsonl", [qa("beside the recipe", "right file"), qa("and", "another")])
    assert D.prepare(recipe, tok, template).report.total == 2


def test_relative_replay_source_names_its_key(tmp_path, tok, template):
    (tmp_path / "book.txt").write_text("Some text. " * 20, encoding="utf-8")
    recipe = load_recipe(
        str(write_recipe(tmp_path, "x/y", "book.txt", format="text", replay={"source": "chat/missing.jsonl"}))
    )
    with pytest.raises(DataError, match=r"^data.replay.source chat/missing.jsonl does not exist: tried "):
        D.prepare(recipe, tok, template)


def test_hub_ids_still_go_to_the_hub(tmp_path):
    assert readers.locate("mlabonne/FineTome-100k", tmp_path) == "mlabonne/FineTome-100k"
    with pytest.raises(DataError, match="tried"):
        readers.locate("data/finetome.parquet", tmp_path)


def test_inspect_shows_repairs_unknown_roles_and_row_numbering(tmp_path, tiny_chatml, capsys):
    rows = [qa("Q0", "A0"), {"conversations": [{"from": "gpt", "value": "(cut)"}, *qa("Q1", "A1")["conversations"]]}]
    rows.append(qa("Q2", "A2", roles=("human", "narrator")))
    write_jsonl(tmp_path / "d.jsonl", rows)
    recipe = write_recipe(tmp_path, tiny_chatml, "d.jsonl")
    assert cli.main(["data", "inspect", str(recipe), "--png", str(tmp_path / "h.png")]) == 0
    out = capsys.readouterr().out
    assert "  rows read   3   (row numbers below count from 1, in reading order)" in out
    assert f"  repaired     1  leading_assistant_trimmed   {D.REPAIRS['leading_assistant_trimmed']} (row 2)" in out
    assert "  dropped      1  unknown_role" in out and "(row 3)" in out
    assert "  unknown roles seen: 'narrator' 1" in out
    assert "training examples: 2" in out


def test_model_card_data_section_shows_repairs(tmp_path, tok, template):
    from lorallama.publishing.cards import data_section

    rows = [
        {"conversations": [{"from": "bard", "value": "(cut)"}, *qa(f"Q{i}", f"A{i}")["conversations"]]}
        for i in range(7)
    ]
    rows.insert(3, {"conversations": []})
    write_jsonl(tmp_path / "d.jsonl", rows)
    recipe = load_recipe(str(write_recipe(tmp_path, "x/y", "d.jsonl")))
    report = D.prepare(recipe, tok, template).report
    text = data_section({"recipe": recipe.to_dict(), "data_report": report.to_dict()})
    assert "| repaired: leading_assistant_trimmed | 7 (rows 1, 2, 3, 5, 6…) |" in text
    assert "| dropped: wrong_type | 1 (row 4) |" in text
    assert "Row numbers count the rows of the source from 1, in reading order." in text
