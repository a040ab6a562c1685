"""Feedback from a chat Space into a Hub dataset (against the Hub double), and back out as training data."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from lorallama import cli, feedback_schema
from lorallama.recipe import DataSpec
from lorallama.serving import chat, feedback
from lorallama.serving import config as serving_config
from lorallama.serving.chat_app import build_chat_app
from lorallama.training import data

SYSTEM = "You are Captain Lora."


def rows_in(hub, repo: str) -> list[dict]:
    files = hub.files(repo, "dataset")
    assert all(
        path.startswith("data/feedback-") and path.endswith(".jsonl") for path in files if path != ".gitattributes"
    )
    return [json.loads(line) for path, blob in files.items() if path.endswith(".jsonl") for line in blob.splitlines()]


def handlers(demo) -> dict:
    return {
        f.fn.__name__: f.fn for f in demo.fns.values() if f.fn is not None and f.fn.__name__ in ("on_like", "on_edit")
    }


def history(*texts: str) -> list[dict]:
    """Alternating user/assistant messages as the Gradio 6 chatbot hands them over (content blocks)."""
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": [{"type": "text", "text": t}]}
        for i, t in enumerate(texts)
    ]


@pytest.fixture
def tiny_cm(tiny_chatml):
    return chat.load_model(str(tiny_chatml))


def test_likes_dislikes_and_edits_arrive_in_the_dataset_when_on(hub, tiny_chatml, tiny_cm):
    repo = f"{hub.user}/lorallama-feedback"
    config = serving_config.ChatConfig(slug="demo", base=str(tiny_chatml), feedback_dataset=repo)
    demo = build_chat_app(config, model=tiny_cm)
    log = demo.lorallama.feedback
    try:
        assert log is not None and log.repo_id == repo
        page = demo.get_config_file()
        texts = " ".join(str(c["props"].get("value", "")) for c in page["components"])
        assert "are saved to the dataset" in texts and repo in texts  # the page says so
        chatbot = next(c for c in page["components"] if c["type"] == "chatbot")
        assert chatbot["props"]["feedback_options"] == ["Like", "Dislike"]

        on = handlers(demo)
        request = gr.Request(session_hash="session-1")
        conversation = history("Hi", "Ahoy!", "Capital of France?", "*[2 earlier messages left out…]*\n\nBerlin")
        on["on_like"](
            conversation[:2], SYSTEM, gr.LikeData(None, {"index": 1, "value": ["Ahoy!"], "liked": True}), request
        )
        on["on_like"](
            conversation, SYSTEM, gr.LikeData(None, {"index": 3, "value": ["Berlin"], "liked": False}), request
        )
        edit = gr.EditData(None, {"index": 3, "value": "Paris, matey!", "previous_value": conversation[3]["content"]})
        on["on_edit"]([*conversation[:3], {"role": "assistant", "content": "Paris, matey!"}], SYSTEM, edit, request)
        # Not feedback: a like on a question, an edited question.
        on["on_like"](conversation, SYSTEM, gr.LikeData(None, {"index": 0, "value": ["Hi"], "liked": True}), request)
        on["on_edit"](
            conversation, SYSTEM, gr.EditData(None, {"index": 2, "value": "x", "previous_value": "y"}), request
        )
        assert log.rows == 3
        log.flush()
    finally:
        log.scheduler.stop()

    rows = rows_in(hub, repo)
    assert [r["kind"] for r in rows] == ["like", "dislike", "edit"]
    assert rows[0]["conversation"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy!"},
    ]
    assert rows[1]["conversation"][-1] == {"role": "assistant", "content": "Berlin"}  # the notice is not the answer
    assert rows[2]["edited"] == "Paris, matey!" and rows[2]["previous"] == "Berlin"
    assert rows[1]["key"] == rows[2]["key"] != rows[0]["key"]  # the dislike and the edit are about the same answer
    assert rows[0]["session"] and "session-1" not in json.dumps(rows)  # hashed, not the raw session id
    info = hub.store.get("dataset", repo)
    assert info.private  # people's words: private unless the owner made it public


def test_nothing_is_logged_when_off(hub, tiny_chatml, tiny_cm):
    demo = build_chat_app(serving_config.ChatConfig(slug="demo", base=str(tiny_chatml)), model=tiny_cm)
    assert demo.lorallama.feedback is None and handlers(demo) == {}
    page = demo.get_config_file()
    assert "saved to the dataset" not in " ".join(str(c["props"].get("value", "")) for c in page["components"])
    assert next(c for c in page["components"] if c["type"] == "chatbot")["props"].get("feedback_options") is None
    assert hub.count("POST", r"/api/repos/create") == 0 and hub.count("POST", r"/commit/") == 0


def test_a_space_comes_up_when_its_feedback_dataset_cannot_be_written(hub, tiny_chatml, tiny_cm):
    config = serving_config.ChatConfig(slug="demo", base=str(tiny_chatml), feedback_dataset="someone-else/their-data")
    demo = build_chat_app(config, model=tiny_cm)
    assert demo.lorallama.feedback is None and demo.lorallama.feedback_error
    texts = " ".join(str(c["props"].get("value", "")) for c in demo.get_config_file()["components"])
    assert "Feedback logging to someone-else/their-data is off" in texts


def test_feedback_rows_are_bounded(hub):
    log = feedback.FeedbackLog(f"{hub.user}/fb", every_minutes=60)
    try:
        huge = history(*(["q" * 50_000, "a" * 50_000] * 100))
        row = log.record("like", huge, index=199)
        assert len(row["conversation"]) == feedback_schema.MAX_MESSAGES
        assert all(len(m["content"]) <= feedback_schema.MAX_CHARS for m in row["conversation"])
        with pytest.raises(ValueError, match="must be about an answer"):
            log.record("like", history("only a question"), index=0)
        with pytest.raises(ValueError, match="unknown feedback kind"):
            log.record("love", history("q", "a"), index=1)
    finally:
        log.scheduler.stop()


def row(kind, texts, key, time, **extra):
    messages = [{"role": "system", "content": SYSTEM}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)
    ]
    return {"kind": kind, "key": key, "time": time, "conversation": messages, **extra}


FEEDBACK = [
    row("like", ["Hi", "Ahoy!"], "k1", "2026-01-01T00:00:01Z"),
    row("dislike", ["Capital of France?", "Berlin"], "k2", "2026-01-01T00:00:02Z"),
    row("edit", ["Capital of France?", "Berlin"], "k2", "2026-01-01T00:00:03Z", edited="Paris, matey!"),
    row("dislike", ["2+2?", "5"], "k3", "2026-01-01T00:00:04Z"),  # disliked, never corrected
    row("edit", ["Hello", "Hey"], "k4", "2026-01-01T00:00:05Z", edited="Ahoy there!"),  # edited, not disliked
    row("like", ["Sing", "La la"], "k5", "2026-01-01T00:00:06Z"),
    row("dislike", ["Sing", "La la"], "k5", "2026-01-01T00:00:07Z"),  # changed their mind: the latest counts
    row("like", ["Hi", "Ahoy!"], "k6", "2026-01-01T00:00:08Z"),  # the same conversation from another session
    {"kind": "like", "key": "k7", "conversation": "not a list"},
]


def test_liked_and_corrected_conversations_become_sharegpt(tmp_path):
    conversion = feedback_schema.to_sharegpt(FEEDBACK)
    assert conversion.rows == [
        {
            "conversations": [
                {"from": "system", "value": SYSTEM},
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Ahoy!"},
            ]
        },
        {
            "conversations": [
                {"from": "system", "value": SYSTEM},
                {"from": "human", "value": "Capital of France?"},
                {"from": "gpt", "value": "Paris, matey!"},
            ]
        },
    ]
    assert (conversion.liked, conversion.corrected) == (1, 1)
    assert conversion.skipped == {
        "disliked without a correction": 2,
        "edited without a dislike": 1,
        "duplicate": 1,
    }
    # The training pipeline takes it as it is.
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in conversion.rows))
    spec = DataSpec(source=str(path), messages_field="conversations")
    kept = data.validate_chat(data.load_rows(str(path)), spec, data.DataReport(str(path)), strict=True)
    assert [m["messages"][-1]["content"] for m in kept] == ["Ahoy!", "Paris, matey!"]


def test_from_feedback_reads_the_dataset_from_the_hub(hub, tmp_path, capsys):
    repo = f"{hub.user}/lorallama-feedback"
    hub.seed_repo(
        repo,
        {
            "data/feedback-a.jsonl": "".join(json.dumps(r) + "\n" for r in FEEDBACK[:4]),
            "data/feedback-b.jsonl": "".join(json.dumps(r) + "\n" for r in FEEDBACK[4:]) + '{"cut short',
        },
        repo_type="dataset",
        private=True,
    )
    out = tmp_path / "train.jsonl"
    assert cli.main(["data", "from-feedback", repo, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 conversations: 1 liked, 1 disliked and corrected by an edit" in printed
    assert f"--set data.source={out}" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["conversations"][-1]["value"] for r in rows] == ["Ahoy!", "Paris, matey!"]


def test_from_feedback_errors_name_the_fix(hub, tmp_path, capsys):
    assert cli.main(["data", "from-feedback", f"{hub.user}/no-such-dataset", "--output", str(tmp_path / "x")]) == 2
    assert "no dataset" in capsys.readouterr().err
    assert cli.main(["data", "from-feedback", "not a dataset", "--output", str(tmp_path / "x")]) == 2
    assert "neither a local file or folder nor a Hub dataset id" in capsys.readouterr().err
