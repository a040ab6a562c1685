"""Training data: loading, ShareGPT/OpenAI normalisation, the bad-row report (and strict mode), assistant masks,
raw-text cleaning and chunking, the replay mix, sharding and the report's rendering. Tiny tokenizers only."""

from __future__ import annotations

import collections
import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from lorallama import models
from lorallama.errors import DataError
from lorallama.recipe import load_recipe
from lorallama.training import chat_templates
from lorallama.training import data as D
from lorallama.training.data import DataReport

# ---------------------------------------------------------------------------------------------------------------
# Helpers


def sharegpt(q: str, a: str, system: str | None = None) -> dict:
    turns = [{"from": "system", "value": system}] if system else []
    return {"conversations": turns + [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}


def openai(q: str, a: str, system: str | None = None) -> dict:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": turns + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (dumped as JSON) or raw bytes (written as the line itself)."""
    with open(path, "wb") as fh:
        for row in rows:
            line = row if isinstance(row, bytes) else json.dumps(row).encode("utf-8")
            fh.write(line + b"\n")
    return path


def make_recipe(tmp_path: Path, data: dict, trainer: dict | None = None, name: str = "recipe"):
    raw = {"model": {"base": "someone/base"}, "data": data, "trainer": {"max_length": 256, **(trainer or {})}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_recipe(str(path))


def assistant_texts(tokenizer, dataset) -> list[str]:
    """Per example, the decoded tokens under the assistant mask."""
    out = []
    for ids, mask in zip(dataset["input_ids"], dataset["assistant_masks"], strict=True):
        out.append(tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m]))
    return out


def mask_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    runs, current = [], []
    for i, m in zip(ids, mask, strict=True):
        if m:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


# ---------------------------------------------------------------------------------------------------------------
# Loading


ROWS = [sharegpt("What is the capital of France?", "Paris."), sharegpt("Hello!", "Ahoy!")]


def test_load_jsonl(tmp_path):
    rows = D.load_rows(str(write_jsonl(tmp_path / "rows.jsonl", ROWS)))
    assert [(r.index, r.value, r.error) for r in rows] == [(0, ROWS[0], None), (1, ROWS[1], None)]


def test_load_json_list_and_data_mapping(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(ROWS))
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 2, "data": ROWS}))
    for name in ("list.json", "wrapped.json"):
        rows = D.load_rows(str(tmp_path / name))
        assert [(r.index, r.value) for r in rows] == [(0, ROWS[0]), (1, ROWS[1])]


def test_load_parquet_keeps_nested_turns(tmp_path):
    import datasets

    path = tmp_path / "rows.parquet"
    datasets.Dataset.from_list([{**r, "score": 4.5 - i} for i, r in enumerate(ROWS)]).to_parquet(str(path))
    rows = D.load_rows(str(path))
    assert [r.index for r in rows] == [0, 1]
    assert [r.value["conversations"] for r in rows] == [ROWS[0]["conversations"], ROWS[1]["conversations"]]
    assert [r.value["score"] for r in rows] == [4.5, 3.5]


def test_load_csv_text_column(tmp_path):
    path = tmp_path / "docs.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["title", "body"])
        w.writerow(["one", "First document, with a comma."])
        w.writerow(["two", "Second document.\nTwo lines."])
    rows = D.load_rows(str(path))
    assert [r.value for r in rows] == [
        {"title": "one", "body": "First document, with a comma."},
        {"title": "two", "body": "Second document.\nTwo lines."},
    ]


def test_load_txt_is_one_document_per_file(tmp_path):
    text = "Chapter 1.\n\nIt was a dark night.\nThe end.\n"
    (tmp_path / "book.txt").write_text(text, encoding="utf-8")
    rows = D.load_rows(str(tmp_path / "book.txt"))
    assert [(r.index, r.value) for r in rows] == [(0, {"text": text})]


def test_load_folder_reads_every_known_file_in_order(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", ROWS)
    (folder / "sub" / "b.json").write_text(json.dumps([sharegpt("Q3", "A3")]))
    (folder / "c.txt").write_text("plain text")
    (folder / "notes.md").write_text("ignored")
    rows = D.load_rows(str(folder))
    assert [(r.index, r.value) for r in rows] == [
        (0, ROWS[0]),
        (1, ROWS[1]),
        (2, {"text": "plain text"}),
        (3, sharegpt("Q3", "A3")),
    ]


def test_folder_row_indices_are_unique_with_blank_lines(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [ROWS[0], b"", ROWS[1]])
    write_jsonl(folder / "b.jsonl", [sharegpt("Q3", "A3")])
    indices = [r.index for r in D.load_rows(str(folder))]
    assert len(set(indices)) == len(indices) == 3


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as info:
        D.load_rows(str(path))
    assert str(info.value) == f"data file {path} does not exist: check data.source (relative paths are from the recipe)"


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "rows.xml"
    path.write_text("<rows/>")
    with pytest.raises(DataError) as info:
        D.load_rows(str(path))
    assert str(info.value) == (
        f"{path}: unsupported file type '.xml'; use one of .jsonl, .json, .parquet, .csv, .tsv, .txt"
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(
        DataError,
        match=r"empty holds no data files \(\.jsonl, \.json, \.parquet, \.csv, \.tsv, \.txt\); it holds readme\.md",
    ):
        D.load_rows(str(tmp_path / "empty"))


def test_unreachable_hub_id_suggests_a_local_file(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError) as info:
        D.load_rows("nobody/nothing", "train")
    msg = str(info.value)
    assert msg.startswith("cannot load Hub dataset 'nobody/nothing' (split 'train'): ")
    assert msg.endswith("or point data.source at a local .jsonl/.parquet file")


# ---------------------------------------------------------------------------------------------------------------
# Normalisation

EXPECTED = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def test_sharegpt_and_openai_normalise_to_the_same_messages():
    sg = sharegpt("What is the capital of France?", "Paris.", system="Be brief.")["conversations"]
    oa = openai("What is the capital of France?", "Paris.", system="Be brief.")["messages"]
    assert D.normalise_turns(sg) == (EXPECTED, None)
    assert D.normalise_turns(oa) == (EXPECTED, None)
    aliases = [{"from": "System", "value": "Be brief."}, {"role": "HUMAN", "content": EXPECTED[1]["content"]}]
    aliases.append({"from": "model", "value": "Paris."})
    assert D.normalise_turns(aliases) == (EXPECTED, None)


def test_text_block_content_is_joined():
    turns = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is the capital "}, {"type": "text", "text": "of France?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
    ]
    assert D.normalise_turns(turns) == (EXPECTED[1:], None)
    image = [{"role": "user", "content": [{"type": "image", "url": "x.png"}]}, {"role": "assistant", "content": "A"}]
    assert D.normalise_turns(image) == (None, "non_string_content")


@pytest.mark.parametrize("style", [sharegpt, openai])
def test_messages_field_is_found_automatically(tmp_path, tok, template, style):
    write_jsonl(tmp_path / "rows.jsonl", [style("What is the capital of France?", "Paris.", system="Be brief.")])
    prepared = D.prepare(make_recipe(tmp_path, {"source": "rows.jsonl"}), tok, template)
    expected = D.tokenize_chat(EXPECTED, tok, template)
    assert prepared.train["input_ids"] == [expected["input_ids"]]
    assert prepared.train["assistant_masks"] == [expected["assistant_masks"]]


def test_same_conversation_in_both_styles_is_a_duplicate(tmp_path):
    report = DataReport("x")
    spec = make_recipe(tmp_path, {"source": "a.jsonl", "messages_field": "conversations"}).data
    both = [D.RawRow(0, sharegpt("Q", "A")), D.RawRow(1, {"conversations": openai("Q", "A")["messages"]})]
    kept = D.validate_chat(both, spec, report, strict=False)
    assert [k["index"] for k in kept] == [0]
    assert report.dropped == {"duplicate": 1} and report.first_bad == {"duplicate": 2}  # 1-based


def test_wrong_messages_field_lists_the_real_columns(tmp_path, tok, template):
    write_jsonl(tmp_path / "rows.jsonl", [{**sharegpt(f"Q{i}", f"A{i}"), "id": i} for i in range(3)])
    recipe = make_recipe(tmp_path, {"source": "rows.jsonl", "messages_field": "dialog"})
    with pytest.raises(DataError) as info:
        D.prepare(recipe, tok, template)
    assert str(info.value) == (
        "no row of rows.jsonl has a conversation field 'dialog'; its columns are ['conversations', 'id']: "
        "set data.messages_field to the right column (or data.format: text for raw text)"
    )


# ---------------------------------------------------------------------------------------------------------------
# Bad rows: every reason, dropped and counted by default, raised in strict mode

LONG = " ".join(["The quick brown fox jumps over the lazy dog."] * 60)

BAD_ROWS = {
    "invalid_json": [b'{"conversations": [{"from": "human", "value": "unclosed"'],
    "invalid_utf8": [
        b'{"conversations": [{"from": "human", "value": "caf\xe9"}, {"from": "gpt", "value": "ok"}]}',
        sharegpt("lone \ud800 surrogate", "ok"),
    ],
    "missing_field": [{"id": 7, "text": "no conversation here"}, {"conversations": [{"from": "human"}]}],
    "wrong_type": [{"conversations": "Hello there"}, {"conversations": []}, {"conversations": ["Hello", "Hi"]}],
    "unknown_role": [{"conversations": [{"from": "narrator", "value": "Once"}, {"from": "gpt", "value": "upon"}]}],
    "non_string_content": [sharegpt("What is 6*7?", 42), sharegpt(None, "nothing asked")],  # type: ignore[arg-type]
    "empty_content": [sharegpt("Say nothing.", "   \n")],
    "nested_too_deep": [b'{"conversations": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"],
    "non_alternating": [
        {"conversations": [{"from": "human", "value": "One"}, {"from": "human", "value": "Two"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "system", "value": "Late"}]},
        {
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "A"},
                {"from": "gpt", "value": "B"},
            ]
        },
    ],
    "no_user_turn": [{"conversations": [{"from": "system", "value": "S"}, {"from": "gpt", "value": "I speak alone"}]}],
    "no_assistant_turn": [{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Alone"}]}],
    "duplicate": ["DUPLICATE"],  # replaced by a copy of the first good row
    "too_long": [sharegpt("Tell me a long story.", LONG)],
}


def good(i: int) -> dict:
    return sharegpt(f"Question {i}?", f"Answer {i}.")


def bad_file(tmp_path: Path, bad: object) -> Path:
    """Rows 0 and 1 good, row 2 bad, row 3 good."""
    bad = good(0) if bad == "DUPLICATE" else bad
    return write_jsonl(tmp_path / "rows.jsonl", [good(0), good(1), bad, good(3)])


CASES = [(reason, i, bad) for reason, rows in BAD_ROWS.items() for i, bad in enumerate(rows)]


@pytest.mark.parametrize(("reason", "variant", "bad"), CASES, ids=[f"{r}-{i}" for r, i, _ in CASES])
def test_bad_row_is_dropped_and_counted(tmp_path, tok, template, reason, variant, bad):
    bad_file(tmp_path, bad)
    prepared = D.prepare(make_recipe(tmp_path, {"source": "rows.jsonl"}), tok, template)
    report = prepared.report
    assert (report.total, report.kept) == (4, 3)
    assert report.dropped == {reason: 1}
    assert report.first_bad == {reason: 3}  # row numbers are 1-based
    assert sorted(assistant_texts(tok, prepared.train)) == [f"Answer {i}.<|im_end|>" for i in (0, 1, 3)]


@pytest.mark.parametrize(("reason", "variant", "bad"), CASES, ids=[f"{r}-{i}" for r, i, _ in CASES])
def test_bad_row_raises_in_strict_mode(tmp_path, tok, template, reason, variant, bad):
    bad_file(tmp_path, bad)
    recipe = make_recipe(tmp_path, {"source": "rows.jsonl", "strict": True})
    with pytest.raises(DataError) as info:
        D.prepare(recipe, tok, template)
    assert str(info.value) == (
        f"rows.jsonl: row 3 (rows.jsonl line 3) is bad: {reason} ({D.REASONS[reason]}); fix that row, or turn strict "
        "mode off (data.strict: true in recipe.yaml) to drop and count bad rows instead"
    )
    # the strict argument overrides the recipe
    assert D.prepare(recipe, tok, template, strict=False).report.dropped == {reason: 1}


def test_too_long_follows_trainer_max_length(tmp_path, tok, template):
    write_jsonl(tmp_path / "rows.jsonl", [good(0), sharegpt("Tell me a long story.", LONG)])
    lengths = [
        len(D.tokenize_chat(D.normalise_turns(r["conversations"])[0], tok, template)["input_ids"])
        for r in (good(0), sharegpt("Tell me a long story.", LONG))
    ]
    assert lengths[0] <= 256 < lengths[1]
    roomy = make_recipe(tmp_path, {"source": "rows.jsonl"}, {"max_length": lengths[1]})
    assert D.prepare(roomy, tok, template).report.kept == 2
    tight = make_recipe(tmp_path, {"source": "rows.jsonl"}, {"max_length": lengths[1] - 1})
    report = D.prepare(tight, tok, template).report
    assert (report.kept, report.dropped, report.first_bad) == (1, {"too_long": 1}, {"too_long": 2})


def test_mixed_file_report(tmp_path, tok, template):
    """Every chat reason at once: exact counts, first bad row of each, and the good rows intact."""
    lines: list = []
    expected_first: dict[str, int] = {}
    expected_rows: dict[str, list[int]] = collections.defaultdict(list)
    good_answers = []
    g = 0
    for reason, rows in BAD_ROWS.items():
        lines.append(good(g))
        good_answers.append(f"Answer {g}.<|im_end|>")
        g += 1
        for bad in rows:
            expected_first.setdefault(reason, len(lines) + 1)  # 1-based
            expected_rows[reason].append(len(lines) + 1)
            lines.append(good(0) if bad == "DUPLICATE" else bad)
    write_jsonl(tmp_path / "rows.jsonl", lines)
    prepared = D.prepare(make_recipe(tmp_path, {"source": "rows.jsonl"}), tok, template)
    report = prepared.report
    counts = {reason: len(rows) for reason, rows in BAD_ROWS.items()}
    assert report.total == len(lines) == g + sum(counts.values())
    assert report.kept == g == len(prepared.train)
    assert dict(report.dropped) == counts
    assert report.first_bad == expected_first
    assert sorted(assistant_texts(tok, prepared.train)) == sorted(good_answers)
    assert len(report.token_lengths) == g
    assert sorted(report.token_lengths) == sorted(len(ids) for ids in prepared.train["input_ids"])

    text = report.format()
    assert f"  rows read   {len(lines)}" in text and f"  rows kept   {g}" in text
    for reason, count in counts.items():
        numbers = ", ".join(str(n) for n in expected_rows[reason])
        line = f"  dropped {count:>6}  {reason:<19} {D.REASONS[reason]} (row{'s' * (count > 1)} {numbers})"
        assert line in text.splitlines()
    assert "empty_text" not in text
    lengths = sorted(report.token_lengths)
    assert f"tokens per example: min {lengths[0]}, median {lengths[len(lengths) // 2]}" in text
    assert f"max {lengths[-1]}; {sum(lengths)} in all" in text
    d = report.to_dict()
    assert d["dropped"] == counts and d["first_bad_row"] == expected_first and d["token_stats"]["rows"] == g


# ---------------------------------------------------------------------------------------------------------------
# Assistant-only masks

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant. Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "Continue the sequence: 1, 1, 2, 3, 5, 8"},
    {"role": "assistant", "content": "13, 21."},
]


@pytest.mark.parametrize(("fixture", "end"), [("tiny_chatml", "<|im_end|>"), ("tiny_llama3", "<|eot_id|>")])
def test_assistant_mask_covers_exactly_the_replies(request, tmp_path, fixture, end):
    tokenizer = models.load_tokenizer(str(request.getfixturevalue(fixture)))
    template = chat_templates.training_chat_template(tokenizer)
    replies = [m["content"] + end for m in CONVERSATION if m["role"] == "assistant"]

    tokens = D.tokenize_chat(CONVERSATION, tokenizer, template)
    ids, mask = tokens["input_ids"], tokens["assistant_masks"]
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    assert [tokenizer.decode(run) for run in mask_runs(ids, mask)] == replies
    assert tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "".join(replies)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    end_id = tokenizer.convert_tokens_to_ids(end)
    assert [run[-1] for run in mask_runs(ids, mask)] == [end_id, end_id]  # each reply learns to stop
    assert ids.count(end_id) == len(CONVERSATION)  # every turn ends with it; only the assistant ones are learnt

    # the same through prepare(), from a ShareGPT file
    turns = [
        {"from": {"user": "human", "assistant": "gpt"}.get(m["role"], m["role"]), "value": m["content"]}
        for m in CONVERSATION
    ]
    write_jsonl(tmp_path / "rows.jsonl", [{"conversations": turns}])
    prepared = D.prepare(make_recipe(tmp_path, {"source": "rows.jsonl"}), tokenizer, template)
    assert prepared.train["input_ids"] == [ids] and prepared.train["assistant_masks"] == [mask]


def test_without_a_template_the_whole_conversation_counts(tok):
    tokens = D.tokenize_chat(CONVERSATION, tok, None)
    assert set(tokens["assistant_masks"]) == {1}
    assert tok.decode(tokens["input_ids"]) == tok.apply_chat_template(CONVERSATION, tokenize=False)


# ---------------------------------------------------------------------------------------------------------------
# Raw text

DOCS = [
    "The quick brown fox jumps over the lazy dog. " * 5,
    "What is the capital of France?\nParis is the capital of France.\n\nCafé, naïve, 0123456789.",
    "x",
    "Ahoy! Mount Everest is the tallest mountain on Earth. Fair winds! " * 3,
]


def check_blocks(tok, docs: list[str], blocks: list[list[int]], block: int) -> None:
    assert blocks and all(len(b) <= block for b in blocks)
    assert all(len(b) == block for b in blocks[:-1])
    stream = [i for b in blocks for i in b]
    expected = []
    for d in docs:
        expected += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert stream == expected
    assert tok.decode(stream).split(tok.eos_token) == [*docs, ""]


@pytest.mark.parametrize("block", [16, 17, 64, 10_000])
def test_chunk_documents_keeps_every_token(tok, block):
    check_blocks(tok, DOCS, D.chunk_documents(DOCS, tok, block), block)


def test_text_data_that_is_all_empty(tmp_path, tok, template):
    assert D.chunk_documents([], tok, 16) == []
    write_jsonl(tmp_path / "docs.jsonl", [{"text": "  "}, {"text": "\n\n"}])
    with pytest.raises(DataError, match="no usable training rows"):
        D.prepare(make_recipe(tmp_path, {"source": "docs.jsonl", "format": "text"}), tok, template)


def test_clean_text():
    assert D.clean_text("a\r\nb\rc", []) == "a\nb\nc"
    assert D.clean_text("x\x00y\x07z\x1b\x7f!", []) == "xyz!"
    assert D.clean_text("keep\ttabs\tinside", []) == "keep\ttabs\tinside"
    assert D.clean_text("line   \nnext\t \nlast", []) == "line\nnext\nlast"
    assert D.clean_text("a\n\n\n\n\nb\n\n\nc\n\nd", []) == "a\n\nb\n\nc\n\nd"
    assert D.clean_text("  \n\n  padded  \n\n", []) == "padded"
    assert D.clean_text("Cafe\u0301", []) == "Caf\u00e9"  # NFC
    assert D.clean_text("Keep this. [footer 12] And this.", [r"\s*\[footer \d+\]"]) == "Keep this. And this."


TRIM_TEXT = (
    "Transcribed by Andy Blunden\n"
    "A spectre is haunting Europe.\n"
    "Source: marxists.org\n"
    "The history of all hitherto existing society is the history of class struggles.\n"
    "Copyleft: Marxists Internet Archive\n"
)


def test_trim_removes_only_the_boilerplate_lines(in_tmp):
    trim = load_recipe("marx").data.trim
    cleaned = D.clean_text(TRIM_TEXT, trim)
    assert [line for line in cleaned.splitlines() if line.strip()] == [
        "A spectre is haunting Europe.",
        "The history of all hitherto existing society is the history of class struggles.",
    ]
    assert D.clean_text("Keep\nSource: x\nkeep too", [r"^Source:.*$"]) == "Keep\n\nkeep too"


def test_prepare_text_chunks_cleaned_documents(tmp_path, tok, template):
    raw = [
        {"text": DOCS[0] + "   \r\n"},
        {"text": "  \n\n\t "},  # empty after cleaning
        {"text": DOCS[1].replace("\n", "\r\n") + "\x07"},
        {"text": DOCS[2]},
        {"text": 12345},
        {"text": "[footer 1] " + DOCS[3]},
    ]
    write_jsonl(tmp_path / "docs.jsonl", raw)
    recipe = make_recipe(
        tmp_path, {"source": "docs.jsonl", "format": "text", "trim": [r"\[footer \d+\] "]}, {"max_length": 16}
    )
    prepared = D.prepare(recipe, tok, template)
    cleaned = [D.clean_text(DOCS[0], []), DOCS[1], DOCS[2], DOCS[3].strip()]
    expected_blocks = D.chunk_documents(cleaned, tok, 16)
    check_blocks(tok, cleaned, expected_blocks, 16)

    train = prepared.train
    assert sorted(map(tuple, train["input_ids"])) == sorted(map(tuple, expected_blocks))
    assert sum(1 for ids in train["input_ids"] if len(ids) < 16) <= 1
    assert all(set(m) == {1} for m in train["assistant_masks"])
    report = prepared.report
    assert (report.total, report.kept) == (6, 4)
    assert report.dropped == {"empty_text": 1, "non_string_content": 1}
    assert report.first_bad == {"empty_text": 2, "non_string_content": 5}
    assert sorted(report.token_lengths) == sorted(len(b) for b in expected_blocks)
    assert report.notes == [f"4 documents → {len(expected_blocks)} blocks of ≤ 16 tokens"]


def test_prepare_text_from_txt_folder_and_max_rows(tmp_path, tok, template):
    (tmp_path / "works").mkdir()
    for i, doc in enumerate(DOCS):
        (tmp_path / "works" / f"{i:02d}.txt").write_text(doc, encoding="utf-8")
    recipe = make_recipe(tmp_path, {"source": "works", "format": "text", "max_rows": 3}, {"max_length": 32})
    prepared = D.prepare(recipe, tok, template)
    cleaned = [D.clean_text(d, []) for d in DOCS[:3]]
    assert sorted(map(tuple, prepared.train["input_ids"])) == sorted(map(tuple, D.chunk_documents(cleaned, tok, 32)))
    assert prepared.report.filtered == {"beyond max_rows 3": 1}
    assert prepared.report.kept == 3


def test_missing_text_column_names_text_field(tmp_path, tok, template):
    write_jsonl(tmp_path / "docs.jsonl", [{"body": "Some text."}])
    recipe = make_recipe(tmp_path, {"source": "docs.jsonl", "format": "text"})
    with pytest.raises(DataError) as info:
        D.prepare(recipe, tok, template)
    assert str(info.value) == (
        "docs.jsonl row 1 (docs.jsonl line 1) has no text column 'text' (columns: ['body']): "
        "set data.text_field to the column that holds the text"
    )
    recipe = make_recipe(tmp_path, {"source": "docs.jsonl", "format": "text", "text_field": "body"})
    assert D.prepare(recipe, tok, template).report.kept == 1


def test_text_mode_strict_raises_on_empty_document(tmp_path, tok, template):
    write_jsonl(tmp_path / "docs.jsonl", [{"text": "Fine."}, {"text": "\x00\x01 "}])
    recipe = make_recipe(tmp_path, {"source": "docs.jsonl", "format": "text", "strict": True})
    with pytest.raises(DataError) as info:
        D.prepare(recipe, tok, template)
    assert str(info.value) == (
        f"docs.jsonl: row 2 (docs.jsonl line 2) is bad: empty_text ({D.REASONS['empty_text']}); fix that row, or turn "
        "strict mode off (data.strict: true in recipe.yaml) to drop and count bad rows instead"
    )


# ---------------------------------------------------------------------------------------------------------------
# Replay mix and held-out eval sets


def replay_setup(tmp_path: Path, tok, n_chat: int, fraction: float, eval_rows: int = 0):
    """Text recipe (blocks of 32 tokens) with replay of ``n_chat`` chat rows; returns it and the block count."""
    (tmp_path / "works").mkdir()
    for i, doc in enumerate(DOCS):
        (tmp_path / "works" / f"{i}.txt").write_text(doc * 2, encoding="utf-8")
    write_jsonl(tmp_path / "chat.jsonl", [good(i) for i in range(n_chat)])
    data = {
        "source": "works",
        "format": "text",
        "eval_rows": eval_rows,
        "replay": {"source": "chat.jsonl", "fraction": fraction},
    }
    n_blocks = len(D.chunk_documents([D.clean_text(d * 2, []) for d in DOCS], tok, 128))
    return make_recipe(tmp_path, data, {"max_length": 128}), n_blocks


def test_replay_mix_has_the_requested_share(tmp_path, tok, template):
    recipe, n_text = replay_setup(tmp_path, tok, n_chat=60, fraction=0.25)
    prepared = D.prepare(recipe, tok, template)
    masks = prepared.train["assistant_masks"]
    replay_rows = [m for m in masks if 0 in m]
    text_rows = [m for m in masks if 0 not in m]
    want = round(n_text * 0.25 / 0.75)
    assert 0 < want <= 60
    assert (len(text_rows), len(replay_rows)) == (n_text, want)
    # replay rows learn only the assistant reply; text blocks learn everything
    for ids, mask in zip(prepared.train["input_ids"], masks, strict=True):
        if 0 in mask:
            runs = [tok.decode(r) for r in mask_runs(ids, mask)]
            assert len(runs) == 1 and re.fullmatch(r"Answer \d+\.<\|im_end\|>", runs[0])
            assert mask[0] == 0
    assert f"mixed {want} replay chat rows from chat.jsonl" in prepared.report.notes


def test_replay_short_of_rows_uses_all_and_says_so(tmp_path, tok, template):
    recipe, n_text = replay_setup(tmp_path, tok, n_chat=3, fraction=0.5)
    prepared = D.prepare(recipe, tok, template)
    assert sum(1 for m in prepared.train["assistant_masks"] if 0 in m) == 3
    assert f"replay wanted {n_text} chat rows, has 3: using all" in prepared.report.notes
    assert "mixed 3 replay chat rows from chat.jsonl" in prepared.report.notes


def test_eval_rows_hold_out_domain_and_chat_sets(tmp_path, tok, template):
    recipe, n_text = replay_setup(tmp_path, tok, n_chat=40, fraction=0.2, eval_rows=3)
    prepared = D.prepare(recipe, tok, template)
    assert set(prepared.eval) == {"domain", "chat"}
    assert len(prepared.eval["domain"]) == 3 and len(prepared.eval["chat"]) == 3
    assert all(0 not in m for m in prepared.eval["domain"]["assistant_masks"])
    assert all(0 in m for m in prepared.eval["chat"]["assistant_masks"])
    text_train = [m for m in prepared.train["assistant_masks"] if 0 not in m]
    assert len(text_train) == n_text - 3
    # no held-out example is trained on
    train = set(map(tuple, prepared.train["input_ids"]))
    assert not train & set(map(tuple, prepared.eval["chat"]["input_ids"]))


def test_eval_rows_for_chat_data(tmp_path, tok, template):
    write_jsonl(tmp_path / "rows.jsonl", [good(i) for i in range(10)])
    prepared = D.prepare(make_recipe(tmp_path, {"source": "rows.jsonl", "eval_rows": 4}), tok, template)
    assert list(prepared.eval) == ["domain"]
    assert (len(prepared.train), len(prepared.eval["domain"])) == (6, 4)
    answers = assistant_texts(tok, prepared.train) + assistant_texts(tok, prepared.eval["domain"])
    assert sorted(answers) == sorted(f"Answer {i}.<|im_end|>" for i in range(10))


@pytest.mark.parametrize("eval_rows", [10, 50])
def test_eval_rows_larger_than_the_data(tmp_path, tok, template, eval_rows):
    write_jsonl(tmp_path / "rows.jsonl", [good(i) for i in range(10)])
    recipe = make_recipe(tmp_path, {"source": "rows.jsonl", "eval_rows": eval_rows})
    with pytest.raises(DataError) as info:
        D.prepare(recipe, tok, template)
    assert str(info.value) == f"data.eval_rows = {eval_rows} leaves no training rows (only 10 in all)"


# ---------------------------------------------------------------------------------------------------------------
# Sharding and filters


@pytest.mark.parametrize(("length", "count"), [(10, 3), (10, 1), (7, 8), (100, 8), (0, 2), (9, 3), (17, 5)])
def test_shard_rows_matches_datasets_shard(length, count):
    import datasets

    rows = [{"i": k} for k in range(length)]
    shards = [D.shard_rows(rows, index, count) for index in range(count)]
    if length >= count:  # datasets refuses an empty shard (IndexError); ours is just empty
        ds = datasets.Dataset.from_list(rows)
        for index in range(count):
            assert shards[index] == ds.shard(count, index, contiguous=True).to_list()
    else:
        assert [len(s) for s in shards] == [1] * length + [0] * (count - length)
    assert [r for s in shards for r in s] == rows  # a partition: all rows, once, in order
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_prepare_with_a_shard_is_deterministic(tmp_path, tok, template):
    write_jsonl(tmp_path / "rows.jsonl", [good(i) for i in range(10)])
    recipe = make_recipe(tmp_path, {"source": "rows.jsonl", "shard": "1/3"})
    first, second = D.prepare(recipe, tok, template), D.prepare(recipe, tok, template)
    assert first.train["input_ids"] == second.train["input_ids"]
    assert sorted(assistant_texts(tok, first.train)) == [f"Answer {i}.<|im_end|>" for i in (4, 5, 6)]
    assert (first.report.total, first.report.kept) == (10, 3)
    assert first.report.filtered == {"outside shard 1/3": 7}
    assert "  filtered     7  outside shard 1/3" in first.report.format()


def test_min_score_and_max_rows_are_counted(tmp_path, tok, template):
    scores = [0.9, 0.1, None, 0.5, 0.7, 0.2, 0.95, 0.6]
    write_jsonl(tmp_path / "rows.jsonl", [{**good(i), "quality": s} for i, s in enumerate(scores)])
    recipe = make_recipe(tmp_path, {"source": "rows.jsonl", "min_score": 0.5, "score_field": "quality", "max_rows": 3})
    prepared = D.prepare(recipe, tok, template)
    # scores >= 0.5: rows 0, 3, 4, 6, 7 (None counts as 0); max_rows keeps the first three of those
    assert prepared.report.filtered == {"quality < 0.5": 3, "beyond max_rows 3": 2}
    assert sorted(assistant_texts(tok, prepared.train)) == [f"Answer {i}.<|im_end|>" for i in (0, 3, 4)]
    assert prepared.report.kept == 3
    text = prepared.report.format()
    assert "  filtered     3  quality < 0.5" in text and "  filtered     2  beyond max_rows 3" in text


# ---------------------------------------------------------------------------------------------------------------
# Report rendering


def test_report_format_lists_only_reasons_that_occurred():
    report = DataReport(source="x.jsonl", total=9, kept=5)
    for index, reason in [(3, "duplicate"), (1, "invalid_json"), (7, "duplicate"), (8, "too_long")]:
        report.drop(index, reason)
    report.notes.append("hello")
    lines = report.format().splitlines()
    assert lines[:3] == [
        "data: x.jsonl",
        "  rows read   9   (row numbers below count from 1, in reading order)",
        "  rows kept   5",
    ]
    # report order follows REASONS, not arrival order
    assert lines[3:6] == [
        f"  dropped      1  invalid_json        {D.REASONS['invalid_json']} (row 2)",
        f"  dropped      2  duplicate           {D.REASONS['duplicate']} (rows 4, 8)",
        f"  dropped      1  too_long            {D.REASONS['too_long']} (row 9)",
    ]
    assert lines[-1] == "  note: hello"
    for reason in set(D.REASONS) - {"invalid_json", "duplicate", "too_long"}:
        assert reason not in "\n".join(lines)
    assert report.to_dict()["token_stats"] == {}


def test_length_histogram_text_and_png(tmp_path):
    lengths = [5, 7, 7, 8, 20, 33, 34, 35, 90, 91, 200, 200, 201]
    png = tmp_path / "plots" / "lengths.png"
    text = D.length_histogram(lengths, png, "lengths")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    counts = []
    for line in text.splitlines():
        m = re.fullmatch(r"\s*(\d+)–(\d+)\s+(\d+) ?(█*)", line)
        assert m, line
        counts.append(int(m.group(3)))
        assert bool(m.group(4)) == (int(m.group(3)) > 0)
    assert sum(counts) == len(lengths)
    assert text.splitlines()[0].split()[0].startswith("5–")
    no_png = tmp_path / "none.png"
    assert D.length_histogram(lengths, None, "x") == text and not no_png.exists()
    assert D.length_histogram([], png, "x") == "(no rows)"
    assert collections.Counter(D.length_histogram([4, 4, 4], None, "x").split()) == collections.Counter(
        ["4–4", "3", "█" * 40]
    )
