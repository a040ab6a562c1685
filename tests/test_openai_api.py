"""The OpenAI-compatible API of a chat Space, driven by the official ``openai`` client against a served app."""

from __future__ import annotations

import httpx
import openai
import pytest

from lorallama.serving import chat
from lorallama.serving.chat_app import build_chat_app
from lorallama.serving.config import ChatConfig
from support.apps import launched
from support.models import ATTACKS, greedy, succession


@pytest.fixture(scope="module")
def served(tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    succession(cm, scale=5.0)  # varied words with clear margins, and room for temperature to change them
    config = ChatConfig(slug="tiny", base=str(tiny_chatml), temperature=0.0, repetition_penalty=1.0, queue_size=4)
    with launched(build_chat_app(config, model=cm)) as url:
        client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="not-needed", max_retries=0, timeout=120)
        yield client, cm, url.rstrip("/")


def ask(client, content, **kwargs):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}], **kwargs)


def test_models_and_a_greedy_answer_encoded_like_the_page(served):
    client, cm, _ = served
    assert [m.id for m in client.models.list().data] == ["tiny"]
    for content in ["Hello there", ATTACKS["chatml"]]:  # typed control tokens stay text, as in the page
        reply = ask(client, content, max_tokens=24, temperature=0)
        expected = greedy(cm, [{"role": "user", "content": content}], 24)
        assert reply.choices[0].message.content == expected
        assert reply.choices[0].message.role == "assistant"
        ids = chat.encode_prompt(cm.tokenizer, [{"role": "user", "content": content}])
        assert reply.usage.prompt_tokens == len(ids)


def test_system_prompt_and_history_reach_the_model(served):
    client, cm, _ = served
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "Spain?"}]},
    ]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0)
    flat = [dict(m) for m in messages[:3]] + [{"role": "user", "content": "And Spain?"}]
    assert reply.choices[0].message.content == greedy(cm, flat, 16)
    assert reply.usage.prompt_tokens == len(chat.encode_prompt(cm.tokenizer, flat))


def test_streaming_sends_the_same_answer_in_pieces(served):
    client, _, _ = served
    whole = ask(client, "Tell me about the sea", max_tokens=30, temperature=0).choices[0].message.content
    chunks = list(ask(client, "Tell me about the sea", max_tokens=30, temperature=0, stream=True))
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 3 and "".join(texts) == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_max_tokens_bounds_the_answer(served):
    client, cm, _ = served
    reply = ask(client, "Hello there", max_tokens=5, temperature=0)
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == greedy(cm, [{"role": "user", "content": "Hello there"}], 5)
    assert 1 <= reply.usage.completion_tokens <= 6  # re-tokenizing the text may merge or split a token


def test_stop_sequences_cut_the_answer_streaming_or_not(served):
    client, _, _ = served
    whole = ask(client, "Tell me about the sea", max_tokens=40, temperature=0).choices[0].message.content
    words = whole.split()
    assert len(words) > 6, whole
    stop = " " + words[4]
    expected = whole[: whole.find(stop)]
    reply = ask(client, "Tell me about the sea", max_tokens=40, temperature=0, stop=[stop, "never-said"])
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop"
    chunks = list(ask(client, "Tell me about the sea", max_tokens=40, temperature=0, stop=stop, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == expected and stop not in streamed
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_temperature_samples_and_a_seed_repeats(served):
    client, _, _ = served
    greedy_text = ask(client, "Hello there", max_tokens=20, temperature=0).choices[0].message.content
    drawn = [
        ask(client, "Hello there", max_tokens=20, temperature=1.5, top_p=1.0, seed=s).choices[0].message.content
        for s in (1, 2, 3)
    ]
    assert any(d != greedy_text for d in drawn)
    again = ask(client, "Hello there", max_tokens=20, temperature=1.5, top_p=1.0, seed=2)
    assert again.choices[0].message.content == drawn[1]


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_bad_requests_get_a_clear_400(served, kwargs, param):
    client, _, _ = served
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", **kwargs)
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_unknown_model_and_broken_json(served):
    client, _, url = served
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "tiny" in caught.value.response.json()["error"]["message"]
    response = httpx.post(url + "/v1/chat/completions", content=b"{not json", timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    too_long = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "x" * 20_000}]},
        timeout=30,
    )
    assert too_long.status_code == 400 and "characters" in too_long.json()["error"]["message"]
