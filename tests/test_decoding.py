"""Static-cache decoding on CPU: each mode answers like ``generate``; GPU time per request; the spent-quota message."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
import pytest
import torch

from lorallama.serving import ahead_of_time, chat, decoding, gpu_time, ui
from support.models import ATTACKS

PROMPTS = [
    [{"role": "user", "content": "Hello there"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France? " * 6},
        {"role": "assistant", "content": "Paris is the capital of France."},
        {"role": "user", "content": "Continue the sequence: 1, 1, 2, 3, 5, 8, 13, 21."},
    ],
    [{"role": "user", "content": ATTACKS["chatml"]}],
]


def fresh(path) -> chat.ChatModel:
    return chat.load_model(str(path))


def answers(cm, sampling, prompts=PROMPTS) -> list[str]:
    out = []
    for messages in prompts:
        ids = chat.encode_prompt(cm.tokenizer, messages)
        out.append("".join(chat.stream_ids(cm, ids, sampling)))
    return out


def reference(path, sampling, prompts=PROMPTS) -> list[str]:
    return answers(fresh(path), sampling, prompts)  # no decoder: transformers' generate, dynamic cache


GREEDY = chat.Sampling(max_new_tokens=40, temperature=0.0)


@pytest.mark.parametrize("style", ["chatml", "llama3"])
def test_eager_static_step_answers_like_generate(style, tiny_chatml, tiny_llama3):
    path = tiny_chatml if style == "chatml" else tiny_llama3
    expected = reference(path, GREEDY)
    cm = fresh(path)
    decoder = decoding.prepare(cm, "eager", max_len=256)
    assert cm.decoder is decoder and decoder.timing.seconds_per_token > 0
    used = []
    tokens = decoder.tokens
    decoder.tokens = lambda *a, **k: (used.append(1), tokens(*a, **k))[1]
    assert answers(cm, GREEDY) == expected
    assert len(used) == len(PROMPTS)  # every answer came from the static-cache step
    assert len({len(chat.encode_prompt(cm.tokenizer, m)) for m in PROMPTS}) == len(PROMPTS)


def test_seeded_sampling_draws_what_generate_draws(tiny_chatml):
    sampling = chat.Sampling(max_new_tokens=30, temperature=0.9, top_p=0.9, top_k=20, repetition_penalty=1.3, seed=7)
    expected = reference(tiny_chatml, sampling)
    cm = fresh(tiny_chatml)
    decoding.prepare(cm, "eager", max_len=256)
    assert answers(cm, sampling) == expected
    assert answers(cm, sampling) != answers(cm, GREEDY)


def test_too_long_busy_or_stopped(tiny_chatml):
    cm = fresh(tiny_chatml)
    expected = reference(tiny_chatml, GREEDY, PROMPTS[1:2])
    decoder = decoding.prepare(cm, "eager", max_len=150)  # the second prompt (127 tokens) + 40 do not fit
    ids = chat.encode_prompt(cm.tokenizer, PROMPTS[1])
    assert not decoder.fits(len(ids), 40)
    assert answers(cm, GREEDY, PROMPTS[1:2]) == expected  # generate answers instead
    short = chat.encode_prompt(cm.tokenizer, PROMPTS[0])
    first = list(decoder.tokens(short, chat.Sampling(max_new_tokens=10, temperature=0)))
    assert len(first) == 10
    k = next(i for i, token in enumerate(first) if i > 0 and token not in first[:i])  # a token not said before
    decoder.eos = {first[k]}  # as if it ended the turn
    assert list(decoder.tokens(short, chat.Sampling(max_new_tokens=10, temperature=0))) == first[: k + 1]
    assert decoder.try_lock()  # another answer is decoding: this one goes to generate and still streams
    try:
        assert "".join(chat.stream_ids(cm, short, chat.Sampling(max_new_tokens=5, temperature=0)))
    finally:
        decoder.unlock()


def test_failed_compilation_falls_back_and_says_so_once(tiny_chatml, monkeypatch, caplog):
    def broken(exported, with_spaces=False):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(ahead_of_time, "compile_ahead", broken)
    monkeypatch.setattr(decoding, "_warned", set())
    caplog.set_level(logging.WARNING, "lorallama")
    cm = fresh(tiny_chatml)
    assert decoding.prepare(cm, "aot", max_len=128) is None and cm.decoder is None
    assert decoding.prepare(cm, "aot", max_len=128) is None
    warnings = [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]
    assert len(warnings) == 1 and "no compiler here" in warnings[0]
    assert answers(cm, GREEDY, PROMPTS[:1]) == reference(tiny_chatml, GREEDY, PROMPTS[:1])


def test_a_compiled_program_whose_loader_crashes_costs_a_fallback_not_the_process(
    tiny_chatml, monkeypatch, caplog, tmp_path
):
    """Seen on an H200 with torch 2.11 (CUDA 13): aoti_load_package segfaults. The probe child dies instead."""
    import torch._inductor

    def fake_package(exported, path):
        Path(path).write_bytes(b"not a real program")
        return path, {}

    def in_process_load(package):
        raise AssertionError("a package that crashed its probe must not be loaded in the serving process")

    monkeypatch.setattr(decoding, "export_step", lambda decoder: None)
    monkeypatch.setattr(ahead_of_time, "build_package", fake_package)
    monkeypatch.setattr(torch._inductor, "aoti_load_package", in_process_load)
    monkeypatch.setattr(ahead_of_time, "LOAD_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    monkeypatch.setattr(decoding, "_warned", set())
    caplog.set_level(logging.WARNING, "lorallama")
    cm = fresh(tiny_chatml)
    assert decoding.prepare(cm, "aot", max_len=128) is None and cm.decoder is None
    warnings = [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]
    assert len(warnings) == 1 and "probe process (exit -11)" in warnings[0]
    assert answers(cm, GREEDY, PROMPTS[:1]) == reference(tiny_chatml, GREEDY, PROMPTS[:1])


def test_a_compiler_that_links_its_own_cxx_runtime_falls_back_before_loading(
    tiny_chatml, monkeypatch, caplog, tmp_path
):
    """Seen on an H200 host whose CXX linked libstdc++ statically: the loader crashed in std::regex. The library is
    refused from its headers, with the compiler named and the fix, and the probe process is not even needed."""
    import torch._inductor
    from torch._inductor.cpp_builder import get_cpp_compiler

    from support.native import STRING_SOURCE, build_library

    library = build_library(tmp_path, "step", STRING_SOURCE, "-static-libstdc++", "-static-libgcc")

    class Exported:
        example_inputs = ((), {})

        def module(self):
            return None

    def never(*args):
        raise AssertionError("a refused library must not be loaded or probed")

    monkeypatch.setattr(decoding, "export_step", lambda decoder: Exported())
    monkeypatch.setattr(torch._inductor, "aot_compile", lambda *a, **k: [str(library)])
    monkeypatch.setattr(ahead_of_time, "probe_load", never)
    monkeypatch.setattr(torch._inductor, "aoti_load_package", never)
    monkeypatch.setattr(decoding, "_warned", set())
    caplog.set_level(logging.WARNING, "lorallama")
    cm = fresh(tiny_chatml)
    assert decoding.prepare(cm, "aot", max_len=128) is None and cm.decoder is None
    warnings = [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]
    assert len(warnings) == 1
    assert "own copy of the C++ runtime" in warnings[0] and get_cpp_compiler() in warnings[0]
    assert "set CXX" in warnings[0]
    assert answers(cm, GREEDY, PROMPTS[:1]) == reference(tiny_chatml, GREEDY, PROMPTS[:1])


def test_mode_choice(monkeypatch):
    monkeypatch.delenv(decoding.ENV_MODE, raising=False)
    assert decoding.choose_mode() == ("compile" if torch.cuda.is_available() else "off")
    monkeypatch.setenv(decoding.ENV_MODE, "eager")
    assert decoding.choose_mode() == "eager"
    assert decoding.choose_mode("aot") == "aot"
    with pytest.raises(ValueError, match="LORALLAMA_DECODING"):
        decoding.choose_mode("fastest")


@pytest.mark.slow
def test_compiled_ahead_of_time_answers_like_generate_at_every_length(tiny_chatml, monkeypatch):
    """The ZeroGPU path on CPU: one exported program, compiled once by AOTInductor, for every prompt length, loaded
    once (the single-threaded runner a CUDA graph can capture), though each answer runs in a fresh ``contextvars``
    context as a ZeroGPU worker runs each request."""
    import contextvars

    import torch._inductor

    expected = reference(tiny_chatml, GREEDY)
    cm = fresh(tiny_chatml)
    loads, load = [], torch._inductor.aoti_load_package
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda *a, **k: (loads.append(k), load(*a, **k))[1])
    decoder = decoding.prepare(cm, "aot", max_len=256)
    assert decoder is not None and decoder.mode == "aot" and decoder.timing.compile_seconds > 0
    compiled = decoder.compiled
    assert [contextvars.copy_context().run(answers, cm, GREEDY, [p]) for p in PROMPTS] == [[e] for e in expected]
    assert decoder.compiled is compiled  # nothing compiled again for the other lengths
    assert loads == [{"run_single_threaded": True}]


@pytest.mark.slow
def test_compiled_step_answers_like_generate_without_recompiling(tiny_llama3):
    """The dedicated-GPU path on CPU: the one-token step compiled once; prompts of three lengths compile nothing."""
    import torch._dynamo

    expected = reference(tiny_llama3, GREEDY)
    cm = fresh(tiny_llama3)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    decoding.prepare(cm, "compile", max_len=256)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs == 1
    assert answers(cm, GREEDY) == expected
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


# ---------------------------------------------------------------------------------------------------------------
# GPU time asked for per request, and the spent-quota message


def test_duration_follows_the_request(monkeypatch):
    monkeypatch.setattr(
        decoding, "MEASURED", [decoding.Timing(seconds_per_token=0.02, prefill_seconds_per_token=0.001)]
    )
    ids = list(range(1000))
    # 2 s overhead + 1.5 × (1000 × 1 ms + 300 × 20 ms) = 12.5 → 13
    assert ui.request_seconds(ids, {"max_new_tokens": 300}) == 13
    assert ui.request_seconds(ids, {"max_new_tokens": 30}) == 5  # never under the minimum
    assert ui.request_seconds(ids, {"max_new_tokens": 9000}) == gpu_time.MAX_SECONDS
    jobs = [("a", ids, {"max_new_tokens": 100}), ("b", ids, {"max_new_tokens": 100})]  # the compare arena
    assert ui.request_seconds(jobs) == 2 + int(1.5 * (2 * 1.0 + 200 * 0.02) + 0.999)
    assert ui.request_seconds("model", ids, {"max_new_tokens": 300}) == 13  # the API's (model id, ids, sampling)
    decoding.MEASURED.append(decoding.Timing(seconds_per_token=0.04, prefill_seconds_per_token=0.001))
    assert ui.request_seconds(ids, {"max_new_tokens": 300}) == 22  # the slowest model decides: 2 + 1.5 × 13.0
    monkeypatch.setattr(decoding, "MEASURED", [])
    assert ui.request_seconds(ids, {"max_new_tokens": 300}) == 2 + int(1.5 * (1000 / 5000 + 300 / 40) + 0.999)


def test_gpu_size_variable(monkeypatch):
    monkeypatch.setenv(ui.GPU_SIZE_VARIABLE, "xlarge")
    assert ui.gpu_size() == "xlarge"
    monkeypatch.setenv(ui.GPU_SIZE_VARIABLE, "huge")
    with pytest.raises(ValueError, match="large or xlarge"):
        ui.gpu_size()


PLATFORM_MESSAGE = "You have exceeded your free ZeroGPU quota (120s requested vs. 44s left). Try again in 23:14:07. "


def test_quota_message_says_what_to_do():
    error = gr.Error(PLATFORM_MESSAGE, title="ZeroGPU quota exceeded")
    message = ui.quota_message(error)
    assert "120 s" in message and "44 s" in message and "23:14:07" in message
    assert ui.SIGN_IN_URL in message and "5 with a free account" in message
    assert ui.quota_message(gr.Error("Your message is empty")) is None


def test_a_spent_quota_reaches_the_page_as_that_message(tiny_chatml, monkeypatch):
    """The chat Space with the platform's GPU call refusing (as ZeroGPU does when the quota is spent)."""
    from gradio_client import Client

    from lorallama.serving.chat_app import build_chat_app
    from lorallama.serving.config import ChatConfig
    from support.apps import launched

    asked = []

    def platform_gpu(duration=None, size=None):
        def decorate(fn):
            def refuse(*args, **kwargs):
                asked.append(duration(*args, **kwargs))
                raise gr.Error(PLATFORM_MESSAGE, title="ZeroGPU quota exceeded", print_exception=False)
                yield  # a generator, like the function it stands for

            return refuse

        return decorate

    monkeypatch.setattr(ui.spaces, "GPU", platform_gpu)
    demo = build_chat_app(ChatConfig(slug="tiny", base=str(tiny_chatml)), model=fresh(tiny_chatml))
    with launched(demo) as url:
        client = Client(url, verbose=False)
        with pytest.raises(Exception) as caught:
            client.predict("Hello", "", 64, 0.0, 1.0, 1.0, 0, api_name="/chat")
    assert "used up" in str(caught.value) and ui.SIGN_IN_URL in str(caught.value)
    assert asked and 5 <= asked[0] <= gpu_time.MAX_SECONDS
