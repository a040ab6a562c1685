"""Compiled decoding on CUDA: each mode answers like ``generate`` greedy, and no prompt length compiles again.

Skipped without CUDA; on a GPU machine: ``pytest tests/test_gpu_decoding.py``.
"""

from __future__ import annotations

import pytest
import torch

from lorallama.serving import chat, decoding

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

PROMPTS = [
    [{"role": "user", "content": "hello there"}],
    [{"role": "user", "content": "What is the capital of France? " * 8}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Continue the sequence: 1, 1, 2, 3, 5, 8, 13, 21. " * 20},
    ],
]
GREEDY = chat.Sampling(max_new_tokens=48, temperature=0.0)


@pytest.fixture(scope="module")
def gpu_llama(tmp_path_factory):
    from support.tiny import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("gpu-decoding"), "chatml", hidden=256, layers=2)


def load(path, dtype=torch.float32) -> chat.ChatModel:
    cm = chat.load_model(str(path))
    assert cm.model.device.type == "cuda"
    cm.model.to(dtype)  # float32: the comparison with generate is exact, not up to bfloat16 rounding
    return cm


def answers(cm) -> list[str]:
    return ["".join(chat.stream_ids(cm, chat.encode_prompt(cm.tokenizer, m), GREEDY)) for m in PROMPTS]


@pytest.mark.parametrize("mode", ["eager", "compile", "aot", "aot-spaces"])
def test_decoding_answers_like_generate_and_compiles_once(mode, gpu_llama, monkeypatch):
    """``aot-spaces`` is a ZeroGPU Space's path: compiled by ``spaces.aoti_compile`` in a start-up GPU call, sent
    pickled to the Space and on to the GPU worker that serves the chat, which runs each request in a fresh copy of
    its ``contextvars`` context."""
    import contextvars
    import pickle

    import torch._dynamo

    spaces_path = mode == "aot-spaces"
    if spaces_path:
        pytest.importorskip("spaces")
        monkeypatch.setattr(decoding, "zero_gpu", lambda: True)  # spaces.GPU itself runs the call here (no platform)
        mode = "aot"
    expected = answers(load(gpu_llama))  # generate, dynamic cache
    lengths = {len(chat.encode_prompt(load(gpu_llama).tokenizer, m)) for m in PROMPTS}
    assert len(lengths) == len(PROMPTS)
    assert max(lengths) + GREEDY.max_new_tokens <= 1024  # every prompt fits the decoder: none falls back to generate
    cm = load(gpu_llama)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    decoder = decoding.prepare(cm, mode, max_len=1024)  # the longest prompt is 662 tokens
    assert decoder is not None and cm.decoder is decoder, "the mode fell back (see the log)"
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    loads = []
    if spaces_path:
        assert type(decoder.compiled.source).__name__ == "ZeroGPUCompiledModel"  # spaces.aoti_compile built it
        decoder.compiled = pickle.loads(pickle.dumps(decoder.compiled))  # to the Space, then to the chat's worker
        decoder._state.clear()  # that worker is another process: its own cache and graph
        real_load = torch._inductor.aoti_load_package
        monkeypatch.setattr(
            torch._inductor, "aoti_load_package", lambda *a, **k: (loads.append(k), real_load(*a, **k))[1]
        )
    compiled = decoder.compiled
    used = []
    tokens = decoder.tokens
    decoder.tokens = lambda *a, **k: (used.append(1), tokens(*a, **k))[1]
    if spaces_path:
        assert [contextvars.copy_context().run(answers, cm) for _ in range(2)] == [expected] * 2
        assert loads == [{"run_single_threaded": True}]  # once in the worker, not once per request
    else:
        assert answers(cm) == expected
    assert len(used) == len(PROMPTS) * (2 if spaces_path else 1)
    # No prompt length compiled anything: the same graphs, the same ahead-of-time program.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    if mode == "compile":
        assert graphs == 1  # the one-token step, compiled once at start-up
    assert decoder.compiled is compiled
    if mode != "eager":
        assert decoder._state["graph"], "the one-token step was not captured in a CUDA graph"
    assert decoder.timing.seconds_per_token > 0 and decoder.timing.device.startswith("NVIDIA")


def test_bfloat16_decoding_streams_the_same_answer_as_generate_mostly(gpu_llama):
    """In bfloat16 (the Spaces' dtype) the compiled step and generate round differently; answers agree in the main."""
    reference = load(gpu_llama, torch.bfloat16)
    cm = load(gpu_llama, torch.bfloat16)
    decoding.prepare(cm, "compile", max_len=1024)
    for messages in PROMPTS:
        ids = chat.encode_prompt(cm.tokenizer, messages)
        a = cm.tokenizer("".join(chat.stream_ids(reference, ids, GREEDY)), add_special_tokens=False)["input_ids"]
        b = cm.tokenizer("".join(chat.stream_ids(cm, ids, GREEDY)), add_special_tokens=False)["input_ids"]
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        assert same >= 8, (a, b)
