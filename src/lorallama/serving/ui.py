"""What the chat and compare apps share: the GPU lock and ``spaces.GPU``, message checks, sampling, prompt fitting."""

from __future__ import annotations

import functools
import inspect
import os
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import spaces  # before torch touches CUDA: on ZeroGPU it stands in for the GPU between calls; a no-op elsewhere

from . import chat, decoding
from .gpu_time import request_seconds

EMPTY_MESSAGE = "Your message is empty: type something and send it again."
NO_ANSWER = "*(the model ended its turn without saying anything; try again or rephrase)*"

GPU_LOCK = threading.Lock()  # one generation per GPU (per process) at a time, whichever app asks


@dataclass
class AppState:
    """What a built app holds, for ``serve`` and for tests: its config, models, feedback log and counters."""

    config: Any
    models: dict[str, chat.ChatModel]
    feedback: Any = None
    feedback_error: str | None = None
    ui: Any = None
    """The app's ``gr.ChatInterface``, when it has one."""
    started: int = 0
    finished: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> int:
        return self.started - self.finished


# ---------------------------------------------------------------------------------------------------------------
# GPU time: asked for per request, and what a visitor sees when their quota is spent

GPU_SIZE_VARIABLE = "LORALLAMA_GPU_SIZE"
"""``large`` (default: half an RTX Pro 6000 Blackwell, 48 GB, quota counted 1×) or ``xlarge`` (the whole 96 GB card,
quota counted 2×). A 1B model needs half a card; ``xlarge`` is for bigger bases."""
QUOTA_TITLE = "GPU quota used up"
SIGN_IN_URL = "https://huggingface.co/login"
TIERS = "2 minutes a day without signing in, 5 with a free account, 40 with PRO or a Team plan, 60 with Enterprise"


def gpu_size() -> str | None:
    size = (os.environ.get(GPU_SIZE_VARIABLE) or "").strip().lower() or None
    if size not in (None, "large", "xlarge"):
        raise ValueError(f"{GPU_SIZE_VARIABLE}={size!r}: use large or xlarge")
    return size


def sign_in_url() -> str:
    """Hugging Face's sign-in page, back to this Space after (a signed-in visitor's quota is their account's)."""
    space = os.environ.get("SPACE_ID")
    return f"{SIGN_IN_URL}?next=%2Fspaces%2F{space.replace('/', '%2F')}" if space else SIGN_IN_URL


def sign_in_button():
    """On ZeroGPU, a button to sign in to Hugging Face, which raises the visitor's daily GPU time (elsewhere none)."""
    if not decoding.zero_gpu():
        return None
    return gr.Button("Sign in for more GPU time", link=sign_in_url(), size="sm", elem_id="lorallama-sign-in")


def quota_message(error: BaseException) -> str | None:
    """The visitor's words for ZeroGPU's "quota exceeded" error (``None`` for any other error)."""
    title = getattr(error, "title", None) or ""
    text = str(getattr(error, "message", None) or error)
    if "quota" not in title.lower() and "quota" not in text.lower():
        return None
    numbers = re.search(r"\((\d+)s requested vs\. (\d+)s left\)", text)
    wait = re.search(r"Try again in ([\d:]+)", text)
    parts = ["This Space's GPU time for you is used up for now"]
    if numbers:
        parts[0] += f" (this answer needs {numbers[1]} s, {numbers[2]} s are left)"
    parts[0] += "."
    if wait:
        parts.append(f"It comes back in {wait[1]}.")
    parts.append(
        f"Signing in to Hugging Face ({sign_in_url()}) raises the daily GPU time: {TIERS}. "
        "A shorter answer (fewer max new tokens) also needs less."
    )
    return " ".join(parts)


def gpu(duration: Any = None, size: str | None = None):
    """``spaces.GPU`` for a generator: on ZeroGPU it gets a GPU for its run, asking for ``duration`` seconds (default:
    ``request_seconds`` of its arguments) on a card of ``size`` (default ``LORALLAMA_GPU_SIZE``, else ``large``); a
    spent quota becomes one clear message (``QUOTA_TITLE``) instead of the platform's. A no-op anywhere else."""

    def decorate(fn):
        on_gpu = spaces.GPU(duration=duration or request_seconds, size=size or gpu_size())(fn)
        if on_gpu is fn:
            return fn

        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                result = on_gpu(*args, **kwargs)
                if inspect.isgenerator(result):
                    result = yield from result
                return result
            except gr.Error as e:
                message = quota_message(e)
                if message is None:
                    raise
                raise gr.Error(message, title=QUOTA_TITLE, print_exception=False) from None

        return run

    return decorate


def count(state: AppState, started: bool) -> None:
    with state.lock:
        if started:
            state.started += 1
        else:
            state.finished += 1


def user_error(message: str) -> gr.Error:
    """An error for the person chatting (our own words, no user text in it): a toast on the page, the message of
    the exception an API client gets."""
    return gr.Error(message, print_exception=False)


def check_message(text: str, limit: int, system_prompt: str | None) -> None:
    if not text.strip():
        raise user_error(EMPTY_MESSAGE)
    if len(text) > limit:
        raise user_error(
            f"Your message is {len(text):,} characters long; this Space takes messages of up to {limit:,} "
            "characters. Shorten it and send it again."
        )
    if system_prompt and len(system_prompt) > limit:
        raise user_error(
            f"The system prompt is {len(system_prompt):,} characters long; this Space takes up to {limit:,}. "
            "Shorten it and send your message again."
        )


def sampling_for(config, max_new_tokens, temperature, top_p, repetition_penalty, seed, window: int) -> chat.Sampling:
    sampling = chat.Sampling(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
    ).clamped(config.max_new_tokens_cap)
    sampling.max_new_tokens = max(1, min(sampling.max_new_tokens, window // 2))  # always room for the question
    return sampling


def window_for(config, cm: chat.ChatModel) -> int:
    return max(32, min(cm.context_window, int(config.context_tokens)))


def fit_or_refuse(config, cm, messages, sampling) -> chat.Prompt:
    try:
        return chat.fit_prompt(
            cm.tokenizer, messages, window=window_for(config, cm), max_new_tokens=sampling.max_new_tokens
        )
    except chat.InputError as e:
        raise user_error(str(e)) from None


def sampling_inputs(config, render: bool = True) -> list:
    return [
        gr.Slider(1, config.max_new_tokens_cap, config.max_new_tokens, step=1, label="Max new tokens", render=render),
        gr.Slider(0.0, 2.0, config.temperature, step=0.05, label="Temperature (0 = greedy)", render=render),
        gr.Slider(0.05, 1.0, config.top_p, step=0.05, label="Top-p", render=render),
        gr.Slider(1.0, 2.0, config.repetition_penalty, step=0.05, label="Repetition penalty", render=render),
        gr.Number(0, label="Seed (0 = random)", precision=0, minimum=0, render=render),
    ]


def session_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def with_system(system_prompt: str, history: Sequence[dict]) -> list[dict]:
    system = (system_prompt or "").strip()
    return ([{"role": "system", "content": system}] if system else []) + list(history)


def merge_streams(streams: Sequence[Iterator[str]], stops: Sequence[threading.Event]) -> Iterator[tuple[int, str]]:
    """Pieces of several streams as ``(stream index, piece)`` in the order they arrive, each read in its own thread."""
    pieces: queue.Queue = queue.Queue()
    done = object()

    def pump(i: int, stream: Iterator[str]) -> None:
        try:
            for piece in stream:
                pieces.put((i, piece))
        except BaseException as e:
            pieces.put((i, e))
        finally:
            pieces.put((i, done))

    threads = [threading.Thread(target=pump, args=(i, s), daemon=True) for i, s in enumerate(streams)]
    for t in threads:
        t.start()
    remaining = len(threads)
    try:
        while remaining:
            i, item = pieces.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for stop in stops:
            stop.set()
        for t in threads:
            t.join(timeout=120)
