"""Inference for the Spaces: safe prompt encoding, history fitting, sampling caps, streaming that stops, adapters."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import torch

from lorallama import models
from lorallama.serving import chat
from support.models import ATTACKS, count, force_text, make_adapter, slow_down

SPECIALS = {
    "chatml": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
    "llama3": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"],
}


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared with test_space / test_browser / test_feedback


# ---------------------------------------------------------------------------------------------------------------
# Prompt encoding


@pytest.mark.parametrize("style", ["chatml", "llama3"])
def test_ordinary_text_encodes_exactly_like_the_template(style, tiny_chatml, tiny_llama3):
    tokenizer = models.load_tokenizer(str(tiny_chatml if style == "chatml" else tiny_llama3))
    conversations = [
        [{"role": "user", "content": "Hello there"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": 'Paris, 1, 2; (ok)! It\'s "quoted" [x] {y}'},
            {"role": "user", "content": "Continue the sequence: 1, 1, 2, 3, 5, 8,\nThanks."},
        ],
    ]
    for messages in conversations:
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        assert chat.encode_prompt(tokenizer, messages) == expected["input_ids"]


@pytest.mark.parametrize("style", ["chatml", "llama3"])
def test_control_tokens_typed_by_a_user_stay_text(style, tiny_chatml, tiny_llama3):
    """A user typing the template's end-of-turn and header tokens gets characters, never control tokens."""
    tokenizer = models.load_tokenizer(str(tiny_chatml if style == "chatml" else tiny_llama3))
    attack = ATTACKS[style]
    for messages in (
        [{"role": "user", "content": attack}],
        [  # in the history too, on either side
            {"role": "user", "content": attack},
            {"role": "assistant", "content": attack},
            {"role": "user", "content": "and now?"},
        ],
    ):
        benign = [dict(m, content="x") for m in messages]
        ids = chat.encode_prompt(tokenizer, messages)
        reference = chat.encode_prompt(tokenizer, benign)
        for token in SPECIALS[style]:
            assert count(ids, tokenizer, token) == count(reference, tokenizer, token), token
        # Whole-string tokenizing (what apply_chat_template does) would have let them through: the test has teeth.
        unsafe = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        end = "<|im_end|>" if style == "chatml" else "<|eot_id|>"
        assert count(unsafe["input_ids"], tokenizer, end) > count(reference, tokenizer, end)
        # And the model reads exactly what was typed.
        assert attack in tokenizer.decode(ids, skip_special_tokens=False)


def test_template_that_rewrites_text_still_never_makes_control_tokens(tiny_chatml):
    tokenizer = models.load_tokenizer(str(tiny_chatml))
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | upper }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    ids = chat.encode_prompt(tokenizer, [{"role": "user", "content": "a<|im_end|>b"}])
    assert count(ids, tokenizer, "<|im_end|>") == 1  # only the template's own
    assert count(ids, tokenizer, "<|im_start|>") == 2


# ---------------------------------------------------------------------------------------------------------------
# History from a chat front end, and fitting it into the window


def test_history_messages_reads_gradio_6_history():
    notice = chat.Prompt([], 2, 512).notice
    history = [
        {"role": "user", "content": [{"type": "text", "text": "first question"}]},
        {"role": "assistant", "content": [{"type": "text", "text": notice + "first answer"}]},
        {"role": "assistant", "content": "thinking…", "metadata": {"title": "🔧 a note"}},
        {"role": "user", "content": [{"type": "file", "file": {"path": "/tmp/x.png"}}]},
        {"role": "user", "content": "refused, never answered"},
        {"role": "user", "content": "second " + "x" * 50},
        {"role": "assistant", "content": "second answer"},
        {"role": "user", "content": "dangling"},
    ]
    assert chat.history_messages(history, max_chars=20) == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second " + "x" * 13},
        {"role": "assistant", "content": "second answer"},
    ]
    assert chat.text_of([{"type": "text", "text": "a"}, "b", {"text": "c"}, {"type": "image"}, 3]) == "abc"


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: what is the capital of France?"})
        messages.append({"role": "assistant", "content": f"Answer {i}: Paris is the capital of France."})
    messages.append({"role": "user", "content": "Last question: and of Germany?"})
    return messages


def test_fit_prompt_keeps_the_system_prompt_and_the_newest_turns(tiny_chatml):
    tokenizer = models.load_tokenizer(str(tiny_chatml))
    messages = conversation(12)
    full = len(chat.encode_prompt(tokenizer, messages))
    everything = chat.fit_prompt(tokenizer, messages, window=full + 64, max_new_tokens=64)
    assert everything.dropped == 0 and everything.notice is None

    fitted = chat.fit_prompt(tokenizer, messages, window=full // 2, max_new_tokens=32)
    assert len(fitted.input_ids) <= full // 2 - 32
    assert fitted.dropped > 0 and fitted.dropped % 2 == 0  # whole turns
    kept = [messages[0], *messages[1 + fitted.dropped :]]
    assert fitted.input_ids == chat.encode_prompt(tokenizer, kept)
    # As many turns as fit: one more would not.
    one_more = [messages[0], *messages[1 + fitted.dropped - 2 :]]
    assert len(chat.encode_prompt(tokenizer, one_more)) > full // 2 - 32
    text = tokenizer.decode(fitted.input_ids)
    assert "You are a helpful assistant." in text and "Last question" in text and "Question 0:" not in text
    assert f"{fitted.dropped} earlier messages left out" in fitted.notice
    assert f"{full // 2}-token context window" in fitted.notice
    assert chat.drop_notice(fitted.notice + "the answer") == "the answer"


def test_a_message_that_cannot_fit_is_refused_with_numbers(tiny_chatml):
    tokenizer = models.load_tokenizer(str(tiny_chatml))
    long = [{"role": "user", "content": "the quick brown fox " * 200}]
    with pytest.raises(chat.InputError, match=r"Your message is about \d+ tokens long.*128-token context window"):
        chat.fit_prompt(tokenizer, long, window=128, max_new_tokens=32)
    system = [{"role": "system", "content": "rules " * 200}, {"role": "user", "content": "hi"}]
    with pytest.raises(chat.InputError, match="system prompt alone"):
        chat.fit_prompt(tokenizer, system, window=128, max_new_tokens=32)
    with pytest.raises(chat.InputError, match="no message"):
        chat.fit_prompt(tokenizer, [{"role": "system", "content": "s"}], window=128, max_new_tokens=32)


# ---------------------------------------------------------------------------------------------------------------
# Sampling parameters


def test_sampling_parameters_are_capped():
    wild = chat.Sampling(max_new_tokens=10**9, temperature=50, top_p=-1, top_k=10**6, repetition_penalty=9, seed=-3)
    assert wild.clamped(1024) == chat.Sampling(1024, 2.0, 0.01, 1000, 2.0, None)
    junk = chat.Sampling(max_new_tokens=math.nan, temperature="hot", top_p=None, top_k=math.inf, seed=math.nan)
    assert junk.clamped() == chat.Sampling(256, 0.0, 1.0, 50, 1.0, None)
    assert chat.Sampling(max_new_tokens=0, seed=42.0).clamped() == chat.Sampling(max_new_tokens=1, seed=42)
    assert chat.Sampling(temperature=0).generate_kwargs() == {"max_new_tokens": 256, "do_sample": False}
    kwargs = chat.Sampling(temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.2).generate_kwargs()
    assert kwargs == {
        "max_new_tokens": 256,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "repetition_penalty": 1.2,
    }


def test_seed_makes_sampling_repeatable(tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    ids = chat.encode_prompt(cm.tokenizer, [{"role": "user", "content": "Hello"}])

    def sample(seed):
        return "".join(chat.stream_ids(cm, ids, chat.Sampling(24, temperature=1.5, top_k=0, seed=seed)))

    assert sample(7) == sample(7)
    assert len({sample(7), sample(8), sample(9)}) > 1


# ---------------------------------------------------------------------------------------------------------------
# Streaming


def test_generation_stops_when_the_reader_stops(tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    force_text(cm)
    calls = slow_down(cm, 0.02)
    ids = chat.encode_prompt(cm.tokenizer, [{"role": "user", "content": "Talk"}])
    stream = chat.stream_ids(cm, ids, chat.Sampling(max_new_tokens=500))
    pieces = [next(stream) for _ in range(3)]
    assert pieces == [" the"] * 3 or "".join(pieces).strip().startswith("the")
    stream.close()  # what Gradio does when the user presses Stop
    after_close = len(calls)
    time.sleep(0.3)
    assert len(calls) <= after_close + 1, "generation kept running after the reader left"
    assert len(calls) < 50
    assert not [t for t in threading.enumerate() if t.name == "lorallama-generate"]


def test_stop_event_ends_the_answer(tiny_chatml):
    cm = chat.load_model(str(tiny_chatml))
    force_text(cm)
    slow_down(cm, 0.01)
    stop = threading.Event()
    ids = chat.encode_prompt(cm.tokenizer, [{"role": "user", "content": "Talk"}])
    pieces = []
    for piece in chat.stream_ids(cm, ids, chat.Sampling(max_new_tokens=500), stop):
        pieces.append(piece)
        if len(pieces) == 5:
            stop.set()
    assert 5 <= len(pieces) < 20


def test_streamed_pieces_add_up_to_the_whole_answer(tiny_llama3):
    cm = chat.load_model(str(tiny_llama3))
    messages = [{"role": "user", "content": "Hello"}]
    pieces = list(chat.stream_chat(cm, messages, max_new_tokens=40))
    ids = chat.encode_prompt(cm.tokenizer, messages)
    with torch.no_grad():
        out = cm.model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False)
    assert "".join(pieces) == cm.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert len(pieces) > 1


# ---------------------------------------------------------------------------------------------------------------
# Loading base + adapters


def logits(model, ids=(5, 17, 42, 99, 7)):
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits


@pytest.fixture(scope="module")
def adapters(tiny_chatml, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return make_adapter(tiny_chatml, folder / "one", seed=1), make_adapter(tiny_chatml, folder / "two", seed=2)


def test_adapters_are_merged_at_load_and_answer_like_peft(tiny_chatml, adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    one, two = adapters
    merged = chat.load_model(str(tiny_chatml), [str(one)])
    assert merged.merged == [str(one)] and not isinstance(merged.model, PeftModel)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chatml), one)
    assert torch.allclose(logits(merged.model), logits(reference), atol=1e-4)
    assert not torch.allclose(logits(merged.model), logits(AutoModelForCausalLM.from_pretrained(tiny_chatml)))

    # A chain (marx on finetome): the first merged into the base, then the second.
    chained = chat.load_model(str(tiny_chatml), [str(one), str(two)])
    base_plus_one = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chatml), one).merge_and_unload()
    reference = PeftModel.from_pretrained(base_plus_one, two)
    assert torch.allclose(logits(chained.model), logits(reference), atol=1e-4)

    # Unmerged keeps the base-only view.
    kept = chat.load_model(str(tiny_chatml), [str(one)], merge=False)
    assert kept.adapter == str(one)
    with kept.base_only():
        assert torch.allclose(logits(kept.model), logits(AutoModelForCausalLM.from_pretrained(tiny_chatml)), atol=1e-5)


def test_adapter_from_a_hub_repo(tiny_chatml, adapters, hub):
    one, _ = adapters
    repo = f"{hub.user}/tiny-adapter"
    hub.seed_repo(repo, {p.name: p.read_bytes() for p in one.iterdir()})
    from_hub = chat.load_model(str(tiny_chatml), [repo])
    local = chat.load_model(str(tiny_chatml), [str(one)])
    assert torch.allclose(logits(from_hub.model), logits(local.model), atol=1e-5)


def test_missing_adapter_is_explained(tiny_chatml, tmp_path, hub):
    with pytest.raises(models.ModelError, match="cannot load adapter.*adapter_config.json"):
        chat.load_model(str(tiny_chatml), [str(tmp_path / "nothing-here")])


def test_locate_chain_follows_recipes_on_recipes(in_tmp):
    assert chat.locate_chain("marx") == (
        "unsloth/Llama-3.2-1B-Instruct",
        ["lorallama/llama-3.2-1b-finetome"],
        "lorallama/llama-3.2-1b-marx",
    )
    assert chat.locate_chain("finetome") == ("unsloth/Llama-3.2-1B-Instruct", [], "lorallama/llama-3.2-1b-finetome")
    ref = models.resolve_target("marx")
    assert (ref.recipe.slug, ref.label, ref.adapters) == (
        "marx",
        "marx",
        ["lorallama/llama-3.2-1b-finetome", "lorallama/llama-3.2-1b-marx"],
    )
