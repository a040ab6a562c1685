"""Fast decoding: one static-cache step for the prompt and every new token, compiled where the hardware allows.

``generate`` with the dynamic cache spends most of a small model's token on Python and kernel launches (70 tokens/s
for the Llama-3.2-1B shape on an H200, 3.6% of what the memory bandwidth allows: docs/benchmarks.md). Here the
model runs through ``StaticStep``: the KV cache is a fixed set of tensors passed in and written in place, so a step
has the same shapes whatever the prompt length, and it can be compiled once and replayed as a CUDA graph.

Modes (``prepare(cm, mode)``; ``auto`` picks by hardware, ``LORALLAMA_DECODING`` overrides):

- ``aot`` (ZeroGPU, where ``torch.compile`` is not allowed): the step is exported with ``torch.export`` with the
  token count as a dynamic dimension and compiled ahead of time with AOTInductor (``spaces.aoti_compile``) inside
  ``@spaces.GPU`` at start-up. One compiled program serves prompts of every length and each decoding step, so no
  prompt compiles again; the decoding step is then captured in a CUDA graph in each GPU worker (``ahead_of_time``
  loads the package so that it can be).
- ``compile`` (dedicated GPUs, ``lorallama chat --ui``): the one-token step compiled with ``torch.compile`` (fixed
  shapes, compiled once at start-up) and captured in a CUDA graph; the prompt runs eagerly, so its length never
  compiles anything. float16 on a T4 (no bfloat16 there), bfloat16 elsewhere (``chat.load_model`` picks).
- ``eager``: the same step without compilation (the reference the compiled modes must match).
- ``off``: no decoder; ``chat.stream_ids`` uses ``generate`` with the dynamic cache. The ``auto`` choice on CPU,
  where the static cache is slower (docs/benchmarks.md).

When compilation fails the model falls back (``aot`` → ``generate``, ``compile`` → ``generate``) and says so once in
the log. Greedy answers are those of ``generate`` token for token (tests/test_decoding.py, tests/test_gpu_decoding.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import ahead_of_time

log = logging.getLogger("lorallama")

MODES = ("auto", "aot", "compile", "eager", "off")
ENV_MODE = "LORALLAMA_DECODING"
COMPILE_SECONDS = 1500  # the GPU time asked for compiling at start-up: the most a start-up call may ask for on
# ZeroGPU (huggingface.co/blog/zerogpu-aoti); it is start-up time, not a visitor's quota
_warned: set[str] = set()


def warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


@dataclass
class Timing:
    """What warm-up measured on the card that decodes: what a request's GPU time is computed from."""

    seconds_per_token: float
    prefill_seconds_per_token: float
    compile_seconds: float = 0.0
    device: str = ""


MEASURED: list[Timing] = []
"""Every warm-up's measurement in this process (what ``ui.request_seconds`` plans a request's GPU time with)."""


def zero_gpu() -> bool:
    try:
        from spaces.config import Config

        return bool(Config.zero_gpu)
    except Exception:
        return False


def choose_mode(mode: str | None = None) -> str:
    """``auto`` (or unset) → ``aot`` on ZeroGPU, ``compile`` on another CUDA GPU, ``off`` on CPU."""
    import torch

    mode = (mode or os.environ.get(ENV_MODE) or "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"{ENV_MODE}={mode!r}: use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    if zero_gpu():
        return "aot"
    return "compile" if torch.cuda.is_available() else "off"


# ---------------------------------------------------------------------------------------------------------------
# The step


def _kv_shape(model, max_len: int) -> tuple[int, int, int, int]:
    config = model.config.get_text_config()
    heads = config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 1, heads, max_len, head_dim


def _static_step_class():
    import torch
    from transformers import StaticCache

    class StaticStep(torch.nn.Module):
        """``(input_ids, start, keep, kv) → logits``: tokens at positions ``start…`` written into the cache ``kv``
        (two tensors per layer, changed in place), the logits of the token at index ``keep``."""

        def __init__(self, model, max_len: int):
            super().__init__()
            self.model = model
            self.cache = StaticCache(config=model.config, max_cache_len=max_len)
            _, heads, _, head_dim = _kv_shape(model, max_len)
            # Its own tensors are never used (each call brings the cache): "meta" allocates nothing.
            self.cache.early_initialization(1, heads, head_dim, model.dtype, torch.device("meta"))

        def forward(self, input_ids, start, keep, kv: list):
            for i, layer in enumerate(self.cache.layers):
                layer.keys, layer.values = kv[2 * i], kv[2 * i + 1]
                layer.device = kv[2 * i].device
                layer.cumulative_length = start[0].clone()  # where this call's tokens go (a copy: update adds to it)
            out = self.model(input_ids=input_ids, past_key_values=self.cache, use_cache=True, logits_to_keep=keep)
            return out.logits

    return StaticStep


# ---------------------------------------------------------------------------------------------------------------
# Choosing the next token (the order and arithmetic of transformers' logits processors)


def choose(logits, sampling, seen, generator):
    """The next token as a ``[1, 1]`` tensor: greedy at temperature 0, else sampled like ``generate`` samples."""
    import torch

    scores = logits.float().reshape(1, -1)
    if sampling.repetition_penalty != 1.0:
        picked = torch.gather(scores, 1, seen)
        picked = torch.where(picked < 0, picked * sampling.repetition_penalty, picked / sampling.repetition_penalty)
        scores = scores.scatter(1, seen, picked)
    if sampling.temperature <= 0:
        return scores.argmax(-1, keepdim=True)
    scores = scores / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(scores, min(sampling.top_k, scores.shape[-1]))[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if sampling.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        remove = sorted_scores.softmax(-1).cumsum(-1) <= (1 - sampling.top_p)
        remove[..., -1:] = False
        scores = scores.masked_fill(remove.scatter(1, order, remove), -float("inf"))
    return torch.multinomial(scores.softmax(-1), num_samples=1, generator=generator)


# ---------------------------------------------------------------------------------------------------------------
# The decoder


class Decoder:
    """A model's static-cache decoding in one of the modes above; one answer at a time (``try_lock``)."""

    def __init__(self, model, max_len: int, mode: str):
        self.model = model
        self.max_len = int(max_len)
        self.mode = mode
        self.step = _static_step_class()(model, self.max_len)
        self.eos = _eos_ids(model)
        self.timing: Timing | None = None
        self.compiled: Any = None
        """The ahead-of-time compiled step (``aot``) or the compiled one-token step (``compile``)."""
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}  # per process (a ZeroGPU worker is a fork): the cache, the graph
        self.graphs = True

    # The parts of a run ---------------------------------------------------------------------------------------

    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        return prompt_tokens >= 1 and prompt_tokens + max_new_tokens <= self.max_len

    def try_lock(self) -> bool:
        return self._lock.acquire(blocking=False)

    def unlock(self) -> None:
        self._lock.release()

    def _process_state(self) -> dict[str, Any]:
        import torch

        state = self._state
        if state.get("pid") != os.getpid():
            device = next(self.model.parameters()).device
            state.clear()
            state.update(
                pid=os.getpid(),
                device=device,
                kv=[
                    torch.zeros(_kv_shape(self.model, self.max_len), dtype=self.model.dtype, device=device)
                    for _ in range(2 * self.model.config.get_text_config().num_hidden_layers)
                ],
                token=torch.zeros((1, 1), dtype=torch.long, device=device),
                position=torch.zeros(1, dtype=torch.long, device=device),
                first=torch.zeros(1, dtype=torch.long, device=device),
                graph=None,
            )
        return state

    def _prefill(self, state, ids: Sequence[int]):
        import torch

        device = state["device"]
        prompt = torch.tensor([list(ids)], dtype=torch.long, device=device)
        start = torch.zeros(1, dtype=torch.long, device=device)
        keep = torch.tensor([len(ids) - 1], dtype=torch.long, device=device)
        fn = self.compiled if self.mode == "aot" else self.step
        return fn(prompt, start, keep, state["kv"])

    def _one_token_fn(self):
        return self.compiled if self.mode in ("aot", "compile") else self.step

    def _decode(self, state, token, position: int):
        state["position"].fill_(position)
        state["token"].copy_(token)
        graph = state["graph"]
        if graph is None and self.graphs and state["device"].type == "cuda" and self.mode != "eager":
            graph = state["graph"] = self._capture(state)
        if graph:
            graph[0].replay()
            return graph[1]
        return self._one_token_fn()(state["token"], state["position"], state["first"], state["kv"])

    def _capture(self, state):
        """The one-token step as a CUDA graph: one launch per token instead of hundreds (``False`` if it cannot)."""
        import torch

        fn = self._one_token_fn()
        args = (state["token"], state["position"], state["first"], state["kv"])
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn(*args)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = fn(*args)
            return graph, out
        except Exception as e:
            warn_once(f"graph-{self.mode}", "decoding without CUDA graphs (%s): %s", self.mode, e)
            return False

    # A whole answer --------------------------------------------------------------------------------------------

    def tokens(self, ids: Sequence[int], sampling, stop: threading.Event | None = None) -> Iterator[int]:
        """The answer's token ids, one at a time; stops after an end-of-turn token, ``stop`` or the budget."""
        import torch

        if not self.fits(len(ids), sampling.max_new_tokens):
            raise ValueError(f"{len(ids)} + {sampling.max_new_tokens} tokens do not fit the {self.max_len}-token cache")
        state = self._process_state()
        generator = None
        if sampling.temperature > 0:
            generator = torch.Generator(device=state["device"])
            generator.manual_seed(sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(4), "big"))
        seen = torch.tensor([list(ids)], dtype=torch.long, device=state["device"])
        with torch.inference_mode():
            logits = self._prefill(state, ids)
            for i in range(sampling.max_new_tokens):
                token = choose(logits, sampling, seen, generator)
                value = int(token)
                yield value
                if value in self.eos or (stop is not None and stop.is_set()) or i == sampling.max_new_tokens - 1:
                    return
                if sampling.repetition_penalty != 1.0:
                    seen = torch.cat([seen, token], dim=1)
                logits = self._decode(state, token, len(ids) + i)

    # Start-up ---------------------------------------------------------------------------------------------------

    def warm_up(self, prompt_tokens: int = 256, new_tokens: int = 48) -> Timing:
        """Compile and capture now (not on a visitor's first message) and measure the card's speed."""
        from .chat import Sampling

        prompt_tokens = max(2, min(prompt_tokens, self.max_len - new_tokens - 1))
        vocab = self.model.config.get_text_config().vocab_size
        ids = [(7 * i + 11) % (vocab - 1) + 1 for i in range(prompt_tokens)]
        greedy = Sampling(max_new_tokens=new_tokens, temperature=0.0)
        eos, self.eos = self.eos, set()  # every warm-up token is decoded, whatever the model says
        try:
            for _ in self.tokens(ids[:8], Sampling(max_new_tokens=4, temperature=0.0)):
                pass  # first run: compilation (compile mode), graph capture
            _sync()
            start = time.perf_counter()
            first = None
            for _ in self.tokens(ids, greedy):
                if first is None:
                    _sync()
                    first = time.perf_counter()
            _sync()
            end = time.perf_counter()
        finally:
            self.eos = eos
        per_token = (end - first) / max(1, new_tokens - 1)
        self.timing = Timing(per_token, (first - start) / prompt_tokens, device=_device_name())
        return self.timing


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def _eos_ids(model) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = model.config.eos_token_id
    return {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos]) if e is not None}


# ---------------------------------------------------------------------------------------------------------------
# Compiling


def export_step(decoder: Decoder):
    """The step as an ``ExportedProgram`` whose token count is dynamic (1 … max_len): prompts and new tokens alike."""
    import torch
    from torch.export import Dim

    state = decoder._process_state()
    device = state["device"]
    example = (
        torch.zeros((1, 8), dtype=torch.long, device=device),
        torch.zeros(1, dtype=torch.long, device=device),
        torch.tensor([7], dtype=torch.long, device=device),
        state["kv"],
    )
    tokens = Dim("tokens", min=1, max=decoder.max_len)
    with torch.no_grad():
        return torch.export.export(
            decoder.step, example, dynamic_shapes=({1: tokens}, None, None, [None] * len(state["kv"]))
        )


def _compile_aot(decoder: Decoder, with_spaces: bool | None = None) -> tuple[Any, Timing]:
    """Export, compile ahead of time and warm up; on ZeroGPU this runs inside ``@spaces.GPU`` (a GPU worker).

    ``with_spaces``: compile with ``spaces.aoti_compile`` (default: on ZeroGPU), as the Space does."""
    start = time.perf_counter()
    with_spaces = zero_gpu() if with_spaces is None else with_spaces
    decoder.compiled = ahead_of_time.compile_ahead(export_step(decoder), with_spaces=with_spaces)
    seconds = time.perf_counter() - start
    timing = decoder.warm_up()
    timing.compile_seconds = round(seconds, 1)
    return decoder.compiled, timing


_PENDING: dict[str, tuple[Any, Decoder]] = {}


def _compile_aot_in_worker(key: str) -> tuple[Any, Timing]:
    cm, decoder = _PENDING[key]
    result = _compile_aot(decoder)
    cm.decoder = decoder  # a worker that serves the next requests is this one: it keeps its cache and graph
    return result


def _compile_step(decoder: Decoder) -> None:
    import torch

    start = time.perf_counter()
    decoder.compiled = torch.compile(decoder.step, fullgraph=True, dynamic=False)
    decoder.warm_up()
    assert decoder.timing is not None
    decoder.timing.compile_seconds = round(time.perf_counter() - start, 1)


def prepare(cm, mode: str | None = None, max_len: int | None = None) -> Decoder | None:
    """Give ``cm`` (a ``chat.ChatModel``) its decoder, compiled and warmed now; ``None`` means ``generate``.

    ``max_len``: the longest prompt + answer it serves (default: the model's window, at most 4096 tokens).
    """
    chosen = choose_mode(mode)
    if chosen == "off" or hasattr(cm.model, "peft_config"):
        cm.decoder = None  # an adapter kept beside the base runs through PEFT's own forward: generate handles it
        return None
    from .chat import DEFAULT_CONTEXT_TOKENS

    max_len = int(max_len or min(cm.context_window, DEFAULT_CONTEXT_TOKENS))
    decoder = Decoder(cm.model, max_len, chosen)
    start = time.perf_counter()
    try:
        if chosen == "aot" and zero_gpu():
            import spaces

            # The platform compiles only inside a GPU call: one call at start-up, as long as compiling needs. The
            # worker is a fork of this process, so it finds the model by key instead of receiving it pickled.
            key = str(len(_PENDING))
            _PENDING[key] = (cm, decoder)
            compiled, timing = spaces.GPU(duration=COMPILE_SECONDS)(_compile_aot_in_worker)(key)
            decoder.compiled, decoder.timing = compiled, timing
        elif chosen == "aot":
            _compile_aot(decoder)
        elif chosen == "compile":
            _compile_step(decoder)
        else:
            decoder.warm_up()
    except Exception as e:
        warn_once(
            f"compile-{chosen}",
            "decoding falls back to generate() with the dynamic cache: %s decoding could not be set up (%s: %s)",
            chosen,
            type(e).__name__,
            str(e)[:500],
        )
        cm.decoder = None
        return None
    cm.decoder = decoder
    timing = decoder.timing
    if timing is not None:
        MEASURED.append(timing)
    log.info(
        "decoding: %s, %.0f tokens/s after %.1f s of start-up on %s",
        chosen,
        1 / timing.seconds_per_token if timing and timing.seconds_per_token else 0,
        time.perf_counter() - start,
        timing.device if timing else "?",
    )
    return decoder
